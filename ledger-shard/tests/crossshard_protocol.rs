//! Cross-shard transfers end to end on real replicas: commit and abort, idempotent retries,
//! reserved ids, the caller's driver stopping after each protocol step while the leader of the
//! coordinator or of the participant crashes there, a shard without a majority blocking only
//! the transfers touching it, and recovery after the whole cluster restarts (I1, I3, I10);
//! users' pending transfers, chains, timeouts, and closing and balancing transfers across
//! shards.
#![allow(
    clippy::disallowed_methods,
    reason = "tests pace themselves by the wall clock"
)]
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ledger_core::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult as R, SYSTEM_ID_MIN, Transfer,
    TransferFlags,
};
use ledger_shard::{Client, Cluster, ClusterConfig, CrossShardStep, ShardError};

const ACCOUNTS: u128 = 12;
const INITIAL: u128 = 1_000;
const FUNDER: u128 = 1_000_000;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ledger-xshard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(dir: &PathBuf, shards: usize) -> ClusterConfig {
    ClusterConfig::new(dir)
        .shards(shards)
        .request_timeout(Duration::from_secs(2))
}

/// Accounts 1..=ACCOUNTS forbid overdraft; each is funded with INITIAL from funder
/// `FUNDER + id % shards` (on the account's own shard when `shards` divides FUNDER).
fn setup(client: &Client, shards: usize) {
    let mut accounts: Vec<Account> = (1..=ACCOUNTS)
        .map(|id| Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(id, 1, 1)
        })
        .collect();
    accounts.extend((0..shards as u128).map(|shard| Account::new(FUNDER + shard, 1, 1)));
    let results = client.create_accounts(&accounts).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let funding: Vec<Transfer> = (1..=ACCOUNTS)
        .map(|id| Transfer::new(id, FUNDER + id % shards as u128, id, INITIAL, 1, 1))
        .collect();
    let results = client.create_transfers(&funding).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

fn account(client: &Client, id: u128) -> Account {
    client.lookup_accounts(&[id]).unwrap()[0]
}

/// Money is conserved across shards while transfers are in flight: counting pending amounts,
/// the customers hold what was funded less at most `in_flight` (held by a bridge between a
/// coordinator's prepare and the participant's vote), and no customer is overdrawn.
fn assert_money_in_flight(client: &Client, shards: usize, in_flight: u128) {
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let accounts = client.lookup_accounts(&ids).unwrap();
    let _ = shards;
    let held: i128 = accounts
        .iter()
        .map(|a| {
            let credits = i128::try_from(a.credits_posted + a.credits_pending).unwrap();
            credits - i128::try_from(a.debits_posted + a.debits_pending).unwrap()
        })
        .sum();
    let total = i128::try_from(ACCOUNTS * INITIAL).unwrap();
    assert!(
        held <= total && held >= total - i128::try_from(in_flight).unwrap(),
        "{held}"
    );
    for account in &accounts {
        assert!(account.credits_posted >= account.debits_posted + account.debits_pending);
    }
}

/// Once every transfer is resolved, the customers hold exactly what was funded, posted.
fn assert_customer_money(client: &Client, shards: usize) {
    let ids: Vec<u128> = (1..=ACCOUNTS)
        .chain((0..shards as u128).map(|s| FUNDER + s))
        .collect();
    let accounts = client.lookup_accounts(&ids).unwrap();
    let customers: i128 = accounts
        .iter()
        .filter(|a| a.id <= ACCOUNTS)
        .map(Account::balance_posted)
        .sum();
    assert_eq!(customers, i128::try_from(ACCOUNTS * INITIAL).unwrap());
    for account in accounts.iter().filter(|a| a.id <= ACCOUNTS) {
        assert!(account.credits_posted >= account.debits_posted + account.debits_pending);
    }
}

/// Waits until every leg of every cross-shard transfer is resolved. A linearizable read of
/// every shard first makes sure each has applied what its log holds (after a reopen).
fn wait_resolved(cluster: &Cluster, within: Duration) {
    let client = cluster.client();
    let funders: Vec<u128> = (0..cluster.config().shard_count() as u128)
        .map(|s| FUNDER + s)
        .collect();
    client.lookup_accounts(&funders).unwrap();
    let deadline = Instant::now() + within;
    while cluster.unresolved_cross_shard_legs() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} legs still unresolved",
            cluster.unresolved_cross_shard_legs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(cluster: Cluster, dir: &PathBuf) {
    cluster
        .wait_replicas_identical(Duration::from_secs(30))
        .unwrap();
    cluster.check_invariants().unwrap();
    cluster.shutdown().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn commit_retry_and_lookup() {
    let dir = temp_dir("basic");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // 1 (shard 1) → 2 (shard 0): commits, both sides posted.
    let across = Transfer {
        user_data_128: 77,
        user_data_64: 6,
        ..Transfer::new(100, 1, 2, 300, 1, 9)
    };
    assert_eq!(client.create_transfers(&[across]).unwrap(), [R::Ok]);
    // The answer follows the durable decision; the participant applies it right after.
    assert_eq!(account(&client, 1).debits_posted, 300);
    wait_resolved(&cluster, Duration::from_secs(5));
    let (one, two) = (account(&client, 1), account(&client, 2));
    assert_eq!((one.debits_posted, one.debits_pending), (300, 0));
    assert_eq!(two.credits_posted, INITIAL + 300);
    // The retry is a duplicate; with another amount it says so precisely (I3).
    assert_eq!(client.create_transfers(&[across]).unwrap(), [R::Exists]);
    let changed = Transfer {
        amount: 5,
        ..across
    };
    assert_eq!(
        client.create_transfers(&[changed]).unwrap(),
        [R::ExistsWithDifferentAmount]
    );
    let other_credit = Transfer {
        credit_account_id: 4,
        ..across
    };
    assert_eq!(
        client.create_transfers(&[other_credit]).unwrap(),
        [R::ExistsWithDifferentCreditAccountId]
    );
    // The lookup rebuilds the caller's transfer from its legs.
    let found = client.lookup_transfers(&[100]).unwrap();
    assert_eq!(found.len(), 1);
    let found = found[0];
    assert_eq!(
        (
            found.debit_account_id,
            found.credit_account_id,
            found.amount
        ),
        (1, 2, 300)
    );
    assert_eq!(
        (found.user_data_128, found.user_data_64, found.code),
        (77, 6, 9)
    );
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

#[test]
fn rejections_and_reserved_ids() {
    let dir = temp_dir("reject");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // Rejected by the participant: the credit account does not exist; A's funds are released.
    let to_nowhere = Transfer::new(101, 1, 50, 10, 1, 1);
    assert_eq!(
        client.create_transfers(&[to_nowhere]).unwrap(),
        [R::CreditAccountNotFound]
    );
    assert_eq!(account(&client, 1).debits_pending, 0);
    assert_eq!(
        client.create_transfers(&[to_nowhere]).unwrap(),
        [R::IdAlreadyFailed]
    );
    assert!(client.lookup_transfers(&[101]).unwrap().is_empty());
    // Fields a leg would copy or derive are checked first: no timeout (a leg must never
    // expire), no zero id or ledger.
    let with_timeout = Transfer {
        timeout: 5,
        ..Transfer::new(109, 1, 2, 1, 1, 1)
    };
    let results = client
        .create_transfers(&[
            with_timeout,
            Transfer::new(0, 1, 2, 1, 1, 1),
            Transfer::new(110, 1, 2, 1, 0, 1),
            Transfer::new(111, 1, 2, 1, 1, 0),
        ])
        .unwrap();
    assert_eq!(
        results,
        [
            R::TimeoutReservedForPendingTransfer,
            R::IdMustNotBeZero,
            R::LedgerMustNotBeZero,
            R::CodeMustNotBeZero
        ]
    );
    assert_eq!(account(&client, 1).debits_pending, 0);
    // Rejected by the coordinator: too little money.
    let too_much = Transfer::new(102, 3, 4, INITIAL * 2, 1, 1);
    assert_eq!(
        client.create_transfers(&[too_much]).unwrap(),
        [R::ExceedsCredits]
    );
    // A batch mixing same-shard and cross-shard transfers answers in order.
    let mixed = [
        Transfer::new(103, 3, 5, 1, 1, 1),
        Transfer::new(104, 3, 4, 2, 1, 1),
        Transfer::new(105, 4, 6, 3, 1, 1),
        Transfer::new(106, 6, 7, 4, 1, 1),
    ];
    assert_eq!(client.create_transfers(&mixed).unwrap(), [R::Ok; 4]);
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

#[test]
fn reserved_ids_are_the_clusters() {
    let dir = temp_dir("reserved");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // Ids in the system range are the cluster's: rejected, their chain with them.
    let reserved = Transfer::new(SYSTEM_ID_MIN + 100, 1, 2, 1, 1, 1);
    let linked = Transfer {
        flags: TransferFlags::LINKED,
        ..Transfer::new(107, 2, 4, 1, 1, 1)
    };
    let results = client
        .create_transfers(&[
            linked,
            Transfer::new(108, 4, SYSTEM_ID_MIN + 1, 1, 1, 1),
            reserved,
        ])
        .unwrap();
    assert_eq!(
        results,
        [
            R::LinkedEventFailed,
            R::IdReservedForSystem,
            R::IdReservedForSystem
        ]
    );
    assert_eq!(
        client
            .create_accounts(&[Account::new(SYSTEM_ID_MIN + 4, 1, 1)])
            .unwrap(),
        [CreateAccountResult::IdReservedForSystem]
    );
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

/// Opens a 2-shard cluster and makes the caller's driver stop after `step` while it submits
/// `batch` (the call fails with `Timeout`, as if the caller had died there); crashes the leader
/// of `crash_shard`, runs `in_flight` on what is left, lets the resolver end everything alone
/// and restarts the replica.
fn interrupted(
    name: &str,
    step: CrossShardStep,
    batch: &[Transfer],
    crash_shard: usize,
    in_flight: impl FnOnce(&Client),
) -> (Cluster, Client, PathBuf) {
    let dir = temp_dir(&format!("{name}-{}-{crash_shard}", step as u8));
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    cluster.stop_cross_shard_after(Some(step));
    let error = client.create_transfers(batch).unwrap_err();
    assert!(matches!(error, ShardError::Timeout { .. }), "{error}");
    cluster.stop_cross_shard_after(None);
    let leader = cluster.leader(crash_shard).unwrap();
    cluster.crash_replica(crash_shard, leader).unwrap();
    in_flight(&client);
    wait_resolved(&cluster, Duration::from_secs(15));
    cluster.restart_replica(crash_shard, leader).unwrap();
    (cluster, client, dir)
}

/// The caller's driver stops after each step while a leader crashes there; the resolver (or
/// the caller's retry) finishes every transfer, atomically.
fn stop_after(step: CrossShardStep, crash_participant: bool) {
    // Odd → even: shard 1 coordinates, shard 0 participates.
    let batch: Vec<Transfer> = (0..5u128)
        .map(|i| Transfer::new(200 + i, 2 * i + 1, 2 * i + 2, 10 + i, 1, 1))
        .collect();
    // A prepared transfer nobody asks about again resolves through the resolver alone; with
    // a vote it commits, without one it aborts after the request timeout.
    let crash_shard = usize::from(!crash_participant);
    let (cluster, client, dir) = interrupted("stop", step, &batch, crash_shard, |client| {
        // In flight: the amounts are pending on the debit side; money is conserved meanwhile.
        let pending: u128 = (0..5u128)
            .map(|i| account(client, 2 * i + 1).debits_pending)
            .sum();
        assert!(pending <= 60, "{pending}");
        assert_money_in_flight(client, 2, 60);
    });
    let committed = step != CrossShardStep::Prepared;
    for (i, transfer) in (0..5u128).zip(&batch) {
        let (debit, credit) = (
            account(&client, transfer.debit_account_id),
            account(&client, transfer.credit_account_id),
        );
        let moved = if committed { 10 + i } else { 0 };
        assert_eq!(debit.debits_posted, moved, "transfer {}", transfer.id);
        assert_eq!(credit.credits_posted, INITIAL + moved);
        assert_eq!((debit.debits_pending, credit.credits_pending), (0, 0));
    }
    // The retry learns the outcome and never flips it (I3).
    let expected = if committed {
        R::Exists
    } else {
        R::IdAlreadyFailed
    };
    assert_eq!(client.create_transfers(&batch).unwrap(), [expected; 5]);
    assert_eq!(
        client
            .lookup_transfers(&batch.iter().map(|t| t.id).collect::<Vec<_>>())
            .unwrap()
            .len(),
        if committed { 5 } else { 0 }
    );
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

#[test]
fn coordinator_leader_crash_after_prepare() {
    stop_after(CrossShardStep::Prepared, false);
}

#[test]
fn participant_leader_crash_after_prepare() {
    stop_after(CrossShardStep::Prepared, true);
}

#[test]
fn coordinator_leader_crash_after_vote() {
    stop_after(CrossShardStep::Voted, false);
}

#[test]
fn participant_leader_crash_after_vote() {
    stop_after(CrossShardStep::Voted, true);
}

#[test]
fn coordinator_leader_crash_after_decision() {
    stop_after(CrossShardStep::Decided, false);
}

#[test]
fn participant_leader_crash_after_decision() {
    stop_after(CrossShardStep::Decided, true);
}

/// A shard without a majority blocks only the transfers touching it; the blocked ones finish
/// once it has a leader again, and the caller's retry reports the outcome.
#[test]
fn shard_without_majority_blocks_only_its_transfers() {
    let dir = temp_dir("quorum");
    let cluster = Cluster::open(config(&dir, 3)).unwrap();
    let client = cluster.client();
    setup(&client, 3);
    // With 3 shards the funding crosses shards (FUNDER + id % 3 lives on another shard than
    // id): its credits are posted by the finisher after the callers' Ok, and shard 2 must still
    // have its majority for that.
    wait_resolved(&cluster, Duration::from_secs(10));
    cluster.crash_replica(2, 0).unwrap();
    cluster.crash_replica(2, 1).unwrap();
    // 1 (shard 1) → 3 (shard 0) does not touch shard 2.
    assert_eq!(
        client
            .create_transfers(&[Transfer::new(300, 1, 3, 7, 1, 1)])
            .unwrap(),
        [R::Ok]
    );
    // 4 (shard 1) → 5 (shard 2): prepared on shard 1, the vote cannot be logged.
    let blocked = Transfer::new(301, 4, 5, 9, 1, 1);
    let error = client.create_transfers(&[blocked]).unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(account(&client, 4).debits_pending, 9);
    // Other shards keep serving meanwhile.
    assert_eq!(
        client
            .create_transfers(&[Transfer::new(302, 3, 7, 1, 1, 1)])
            .unwrap(),
        [R::Ok]
    );
    cluster.restart_replica(2, 0).unwrap();
    cluster.restart_replica(2, 1).unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    let result = loop {
        match client.create_transfers(&[blocked]) {
            Ok(results) => break results[0],
            Err(error) => assert!(error.is_transient() && Instant::now() < give_up),
        }
    };
    // The retry resumed the protocol (Exists: committed) unless the resolver had aborted the
    // abandoned prepare first (IdAlreadyFailed); either way both sides agree.
    wait_resolved(&cluster, Duration::from_secs(15));
    let moved = match result {
        R::Exists => 9,
        R::IdAlreadyFailed => 0,
        other => panic!("{other:?}"),
    };
    assert_eq!(account(&client, 4).debits_posted, moved);
    assert_eq!(account(&client, 5).credits_posted, INITIAL + moved);
    assert_eq!(account(&client, 4).debits_pending, 0);
    assert_customer_money(&client, 3);
    finish(cluster, &dir);
}

/// The resolver keeps finishing transfers between healthy shards while it cannot finish one
/// that touches a shard without a majority: recoveries do not wait for each other.
#[test]
fn resolver_is_not_held_up_by_a_shard_without_majority() {
    let dir = temp_dir("resolver-quorum");
    let cluster = Cluster::open(
        ClusterConfig::new(&dir)
            .shards(3)
            .request_timeout(Duration::from_secs(6)),
    )
    .unwrap();
    let client = cluster.client();
    setup(&client, 3);
    wait_resolved(&cluster, Duration::from_secs(10));
    // 3 (shard 0) → 5 (shard 2), abandoned after its prepare; then shard 2 loses its majority,
    // so the resolver's recovery of it (due after the request timeout) cannot end.
    cluster.stop_cross_shard_after(Some(CrossShardStep::Prepared));
    assert!(
        client
            .create_transfers(&[Transfer::new(500, 3, 5, 9, 1, 1)])
            .is_err()
    );
    cluster.crash_replica(2, 0).unwrap();
    cluster.crash_replica(2, 1).unwrap();
    // Past the request timeout the stuck recovery runs every pass (and, were the recoveries
    // run one after another, would hold each pass up for the 6 s request timeout).
    std::thread::sleep(Duration::from_secs(7));
    // 4 (shard 1) → 3 (shard 0), abandoned after the vote: the resolver commits it once the
    // vote is 2 s old, whatever shard 2 does.
    cluster.stop_cross_shard_after(Some(CrossShardStep::Voted));
    let credited_before = account(&client, 3).credits_posted;
    let started = Instant::now();
    assert!(
        client
            .create_transfers(&[Transfer::new(501, 4, 3, 7, 1, 1)])
            .is_err()
    );
    cluster.stop_cross_shard_after(None);
    // Both sides: the recovery logs the decision at the coordinator (4's shard) and only then
    // applies it at the participant (3's shard), so 4 posted does not yet mean 3 credited.
    loop {
        let debit = account(&client, 4);
        let credit = account(&client, 3);
        if debit.debits_posted == 7 && debit.debits_pending == 0 && credit.credits_pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "the transfer between healthy shards waited for the stuck one"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(account(&client, 3).credits_posted, credited_before + 7);
    assert_eq!(
        account(&client, 3).debits_pending,
        9,
        "still stuck on shard 2"
    );
    cluster.restart_replica(2, 0).unwrap();
    cluster.restart_replica(2, 1).unwrap();
    wait_resolved(&cluster, Duration::from_secs(20));
    assert_eq!(account(&client, 3).debits_pending, 0);
    assert_customer_money(&client, 3);
    finish(cluster, &dir);
}

/// Transfers left mid-protocol when the whole cluster stops are finished after it reopens.
#[test]
fn reopened_cluster_finishes_what_was_in_flight() {
    let dir = temp_dir("reopen");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    cluster.stop_cross_shard_after(Some(CrossShardStep::Decided));
    let batch = [Transfer::new(400, 1, 2, 50, 1, 1)];
    assert!(client.create_transfers(&batch).is_err());
    // The participant still holds its pending credit.
    assert_eq!(account(&client, 2).credits_pending, 50);
    cluster.shutdown().unwrap();
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(account(&client, 2).credits_posted, INITIAL + 50);
    assert_eq!(account(&client, 2).credits_pending, 0);
    assert_eq!(client.create_transfers(&batch).unwrap(), [R::Exists]);
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

// ---- users' pending transfers, posts and voids across shards ------------------------------

fn pending(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING,
        ..Transfer::new(id, debit, credit, amount, 1, 1)
    }
}

/// A post (or void) naming only its pending transfer and its amount.
fn resolve(id: u128, pending_id: u128, flags: TransferFlags, amount: u128) -> Transfer {
    Transfer {
        pending_id,
        flags,
        ..Transfer::new(id, 0, 0, amount, 0, 0)
    }
}

fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    resolve(id, pending_id, TransferFlags::POST_PENDING_TRANSFER, amount)
}

fn void(id: u128, pending_id: u128) -> Transfer {
    resolve(id, pending_id, TransferFlags::VOID_PENDING_TRANSFER, 0)
}

fn balances(client: &Client, id: u128) -> (u128, u128, u128, u128) {
    let a = account(client, id);
    (
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
    )
}

#[test]
fn pending_post_across_shards() {
    let dir = temp_dir("pending");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // 1 (shard 1) → 2 (shard 0), pending: it exists once the decision is logged, and its
    // amount is pending on both accounts, which stays so (it is no protocol work any more).
    let t1 = Transfer {
        user_data_128: 55,
        ..pending(500, 1, 2, 100)
    };
    assert_eq!(client.create_transfers(&[t1]).unwrap(), [R::Ok]);
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_eq!(balances(&client, 1), (100, 0, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 100, INITIAL));
    assert_money_in_flight(&client, 2, 0);
    let found = client.lookup_transfers(&[500]).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (
            found[0].debit_account_id,
            found[0].credit_account_id,
            found[0].amount,
            found[0].user_data_128,
            found[0].flags
        ),
        (1, 2, 100, 55, TransferFlags::PENDING)
    );
    assert_eq!(client.create_transfers(&[t1]).unwrap(), [R::Exists]);
    let other_data = Transfer {
        user_data_128: 56,
        ..t1
    };
    assert_eq!(
        client.create_transfers(&[other_data]).unwrap(),
        [R::ExistsWithDifferentUserData128]
    );
    // A partial post naming neither account: 60 moves, 40 is released, on both shards.
    let p1 = post(501, 500, 60);
    assert_eq!(client.create_transfers(&[p1]).unwrap(), [R::Ok]);
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_eq!(balances(&client, 1), (0, 60, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 0, INITIAL + 60));
    // Retries are idempotent; a second resolution of the same pending transfer is refused.
    assert_eq!(client.create_transfers(&[p1]).unwrap(), [R::Exists]);
    assert_eq!(
        client.create_transfers(&[post(501, 500, 61)]).unwrap(),
        [R::ExistsWithDifferentAmount]
    );
    assert_eq!(
        client
            .create_transfers(&[post(502, 500, 1), void(503, 500)])
            .unwrap(),
        [
            R::PendingTransferAlreadyPosted,
            R::PendingTransferAlreadyPosted
        ]
    );
    // The post reads back as the caller submitted it.
    let found = client.lookup_transfers(&[501]).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (
            found[0].pending_id,
            found[0].debit_account_id,
            found[0].credit_account_id,
            found[0].amount,
            found[0].user_data_128
        ),
        (500, 1, 2, 60, 55)
    );
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

#[test]
fn pending_void_and_rejections_across_shards() {
    let dir = temp_dir("pending-reject");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // A void naming both accounts releases everything; a post after it is refused.
    assert_eq!(
        client.create_transfers(&[pending(510, 3, 4, 50)]).unwrap(),
        [R::Ok]
    );
    let v2 = Transfer {
        debit_account_id: 3,
        credit_account_id: 4,
        ..void(511, 510)
    };
    assert_eq!(client.create_transfers(&[v2]).unwrap(), [R::Ok]);
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_eq!(balances(&client, 3), (0, 0, 0, INITIAL));
    assert_eq!(balances(&client, 4), (0, 0, 0, INITIAL));
    assert_eq!(
        client.create_transfers(&[post(512, 510, 1)]).unwrap(),
        [R::PendingTransferAlreadyVoided]
    );
    // Rejections follow ledger-core's rules and precedence.
    assert_eq!(
        client.create_transfers(&[pending(520, 5, 6, 30)]).unwrap(),
        [R::Ok]
    );
    let wrong_credit = Transfer {
        debit_account_id: 5,
        credit_account_id: 8,
        ..post(521, 520, 1)
    };
    let partial_void = resolve(523, 520, TransferFlags::VOID_PENDING_TRANSFER, 10);
    assert_eq!(
        client
            .create_transfers(&[wrong_credit, post(522, 520, 31), partial_void])
            .unwrap(),
        [
            R::PendingTransferHasDifferentCreditAccountId,
            R::ExceedsPendingTransferAmount,
            R::PendingTransferHasDifferentAmount
        ]
    );
    // A post naming only the debit account is located too.
    let by_debit = Transfer {
        debit_account_id: 5,
        ..post(524, 520, u128::MAX)
    };
    assert_eq!(client.create_transfers(&[by_debit]).unwrap(), [R::Ok]);
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_eq!(balances(&client, 5), (0, 30, 0, INITIAL));
    assert_eq!(balances(&client, 6), (0, 0, 0, INITIAL + 30));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

#[test]
fn posts_of_what_is_no_cross_shard_pending_transfer() {
    let dir = temp_dir("pending-none");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // A plain cross-shard transfer is not pending; an unknown one is not found (and burns
    // the id, as on one shard); a pending one its participant refused does not exist.
    assert_eq!(
        client
            .create_transfers(&[Transfer::new(530, 7, 8, 5, 1, 1)])
            .unwrap(),
        [R::Ok]
    );
    assert_eq!(
        client
            .create_transfers(&[post(531, 530, 5), post(532, 999, 5)])
            .unwrap(),
        [R::PendingTransferNotPending, R::PendingTransferNotFound]
    );
    assert_eq!(
        client.create_transfers(&[post(532, 999, 5)]).unwrap(),
        [R::IdAlreadyFailed]
    );
    assert_eq!(
        client.create_transfers(&[pending(540, 9, 50, 5)]).unwrap(),
        [R::CreditAccountNotFound]
    );
    assert_eq!(
        client.create_transfers(&[post(541, 540, 5)]).unwrap(),
        [R::PendingTransferNotFound]
    );
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

/// The caller's driver stops after each step of a pending transfer while a leader crashes;
/// the resolver finishes alone: committed transfers stay pending on both sides until the
/// user posts them, aborted ones release the debit account.
fn pending_stop_after(step: CrossShardStep, crash_participant: bool) {
    let batch: Vec<Transfer> = (0..5u128)
        .map(|i| pending(600 + i, 2 * i + 1, 2 * i + 2, 10 + i))
        .collect();
    let crash_shard = usize::from(!crash_participant);
    let (cluster, client, dir) = interrupted("pending-stop", step, &batch, crash_shard, |client| {
        assert_money_in_flight(client, 2, 60);
    });
    let committed = step != CrossShardStep::Prepared;
    for (i, transfer) in (0..5u128).zip(&batch) {
        let held = if committed { 10 + i } else { 0 };
        assert_eq!(
            balances(&client, transfer.debit_account_id),
            (held, 0, 0, INITIAL)
        );
        assert_eq!(
            balances(&client, transfer.credit_account_id),
            (0, 0, held, INITIAL)
        );
    }
    assert_money_in_flight(&client, 2, 0);
    let expected = if committed {
        R::Exists
    } else {
        R::IdAlreadyFailed
    };
    assert_eq!(client.create_transfers(&batch).unwrap(), [expected; 5]);
    // The user posts what committed: the money moves on both sides.
    let posts: Vec<Transfer> = batch
        .iter()
        .map(|t| post(t.id + 100, t.id, u128::MAX))
        .collect();
    let results = client.create_transfers(&posts).unwrap();
    let expected = if committed {
        R::Ok
    } else {
        R::PendingTransferNotFound
    };
    assert_eq!(results, [expected; 5]);
    wait_resolved(&cluster, Duration::from_secs(15));
    for (i, transfer) in (0..5u128).zip(&batch) {
        let moved = if committed { 10 + i } else { 0 };
        assert_eq!(
            balances(&client, transfer.debit_account_id),
            (0, moved, 0, INITIAL)
        );
        assert_eq!(
            balances(&client, transfer.credit_account_id),
            (0, 0, 0, INITIAL + moved)
        );
    }
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

#[test]
fn pending_coordinator_leader_crash_after_prepare() {
    pending_stop_after(CrossShardStep::Prepared, false);
}

#[test]
fn pending_participant_leader_crash_after_vote() {
    pending_stop_after(CrossShardStep::Voted, true);
}

#[test]
fn pending_coordinator_leader_crash_after_decision() {
    pending_stop_after(CrossShardStep::Decided, false);
}

#[test]
fn pending_participant_leader_crash_after_decision() {
    pending_stop_after(CrossShardStep::Decided, true);
}

/// The caller's driver stops once the coordinator logged a user's post (the decision) and the
/// participant's leader crashes: the resolver applies the post at the participant alone, and
/// a retry of the post answers `Exists`.
#[test]
fn post_finished_by_the_resolver() {
    let dir = temp_dir("post-stop");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    let batch: Vec<Transfer> = (0..4u128)
        .map(|i| pending(700 + i, 2 * i + 1, 2 * i + 2, 20))
        .collect();
    assert_eq!(client.create_transfers(&batch).unwrap(), [R::Ok; 4]);
    cluster.stop_cross_shard_after(Some(CrossShardStep::Decided));
    // Two partial posts and two voids.
    let resolutions = [
        post(710, 700, 5),
        void(711, 701),
        post(712, 702, 20),
        void(713, 703),
    ];
    let error = client.create_transfers(&resolutions).unwrap_err();
    assert!(matches!(error, ShardError::Timeout { .. }), "{error}");
    cluster.stop_cross_shard_after(None);
    // Decided at the coordinator (shard 1): the debit side is resolved, the credit side
    // still pending; money is conserved meanwhile.
    assert_eq!(balances(&client, 1), (0, 5, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 20, INITIAL));
    let leader = cluster.leader(0).unwrap();
    cluster.crash_replica(0, leader).unwrap();
    wait_resolved(&cluster, Duration::from_secs(15));
    cluster.restart_replica(0, leader).unwrap();
    let moved = [5, 0, 20, 0];
    for (i, amount) in (0..4u128).zip(moved) {
        assert_eq!(balances(&client, 2 * i + 1), (0, amount, 0, INITIAL));
        assert_eq!(balances(&client, 2 * i + 2), (0, 0, 0, INITIAL + amount));
    }
    assert_eq!(
        client.create_transfers(&resolutions).unwrap(),
        [R::Exists; 4]
    );
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

/// A credit account closed between the vote and the participant's post still receives the
/// committed transfer: the decision was taken while it was open, and the participant's post
/// (a system id) cannot be refused, or the bridges would never balance.
#[test]
fn credit_account_closed_after_the_vote_still_receives() {
    let dir = temp_dir("closed");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    cluster.stop_cross_shard_after(Some(CrossShardStep::Voted));
    assert!(
        client
            .create_transfers(&[Transfer::new(800, 1, 2, 25, 1, 1)])
            .is_err()
    );
    cluster.stop_cross_shard_after(None);
    // Account 2 (shard 0) closes: a pending closing transfer from shard 0's funder.
    let closing = Transfer {
        flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT,
        ..Transfer::new(801, FUNDER, 2, 1, 1, 1)
    };
    assert_eq!(client.create_transfers(&[closing]).unwrap(), [R::Ok]);
    assert!(account(&client, 2).flags.closed());
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(balances(&client, 2), (0, 0, 1, INITIAL + 25));
    assert_eq!(balances(&client, 1), (0, 25, 0, INITIAL));
    let void = Transfer {
        pending_id: 801,
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        ..Transfer::new(802, 0, 0, 0, 0, 0)
    };
    assert_eq!(client.create_transfers(&[void]).unwrap(), [R::Ok]);
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

// ---- linked chains spanning shards -------------------------------------------------------

/// `events` as one linked chain (`LINKED` on all but the last).
fn linked(events: &[Transfer]) -> Vec<Transfer> {
    let count = events.len();
    events
        .iter()
        .enumerate()
        .map(|(index, event)| Transfer {
            flags: if index + 1 < count {
                event.flags.union(TransferFlags::LINKED)
            } else {
                event.flags
            },
            ..*event
        })
        .collect()
}

const LEF: R = R::LinkedEventFailed;

#[test]
fn chain_spanning_shards_commits_whole() {
    let dir = temp_dir("chain");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // 1 → 2 crosses (shard 1 → 0), 3 → 5 stays on shard 1, 4 → 6 on shard 0.
    let chain = linked(&[
        Transfer::new(900, 1, 2, 10, 1, 1),
        Transfer::new(901, 3, 5, 20, 1, 1),
        Transfer::new(902, 4, 6, 30, 1, 1),
    ]);
    assert_eq!(client.create_transfers(&chain).unwrap(), [R::Ok; 3]);
    wait_resolved(&cluster, Duration::from_secs(5));
    for (debit, credit, amount) in [(1, 2, 10), (3, 5, 20), (4, 6, 30)] {
        assert_eq!(balances(&client, debit), (0, amount, 0, INITIAL));
        assert_eq!(balances(&client, credit), (0, 0, 0, INITIAL + amount));
    }
    let found = client.lookup_transfers(&[900, 901, 902]).unwrap();
    assert_eq!(
        found
            .iter()
            .map(|t| (t.id, t.debit_account_id, t.credit_account_id, t.amount))
            .collect::<Vec<_>>(),
        [(900, 1, 2, 10), (901, 3, 5, 20), (902, 4, 6, 30)]
    );
    // A retry is the ledger's: the first event exists, which fails the chain (I3).
    assert_eq!(
        client.create_transfers(&chain).unwrap(),
        [R::Exists, LEF, LEF]
    );
    // A chain spanning shards with a balancing event is not built.
    let balancing = Transfer {
        flags: TransferFlags::BALANCING_DEBIT,
        ..Transfer::new(904, 7, 8, 1, 1, 1)
    };
    let with_balancing = linked(&[Transfer::new(903, 7, 9, 1, 1, 1), balancing]);
    assert!(matches!(
        client.create_transfers(&with_balancing),
        Err(ShardError::CrossShard { index: 1, .. })
    ));
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

#[test]
fn chain_spanning_shards_fails_whole() {
    let dir = temp_dir("chain-fail");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // The coordinator of the second event refuses it (too little money): nothing applies.
    let overdraft = linked(&[
        Transfer::new(910, 1, 2, 10, 1, 1),
        Transfer::new(911, 3, 4, INITIAL + 1, 1, 1),
        Transfer::new(912, 5, 6, 10, 1, 1),
    ]);
    assert_eq!(
        client.create_transfers(&overdraft).unwrap(),
        [LEF, R::ExceedsCredits, LEF]
    );
    // The retry never flips: the abort burnt the head's leg on the coordinator.
    assert_eq!(
        client.create_transfers(&overdraft).unwrap(),
        [R::IdAlreadyFailed, LEF, LEF]
    );
    // A remote shard refuses: the credit account of a cross-shard event does not exist, or a
    // same-shard event on the other shard overdraws; the whole chain rolls back.
    let remote = linked(&[
        Transfer::new(920, 7, 8, 10, 1, 1),
        Transfer::new(921, 9, 50, 10, 1, 1),
    ]);
    assert_eq!(
        client.create_transfers(&remote).unwrap(),
        [LEF, R::CreditAccountNotFound]
    );
    let local_overdraft = linked(&[
        Transfer::new(930, 11, 12, 10, 1, 1),
        Transfer::new(931, 2, 4, INITIAL + 1, 1, 1),
    ]);
    assert_eq!(
        client.create_transfers(&local_overdraft).unwrap(),
        [LEF, R::ExceedsCredits]
    );
    // A field the legs would not check fails the chain before anything is submitted.
    let with_timeout = linked(&[
        Transfer::new(940, 1, 2, 10, 1, 1),
        Transfer {
            timeout: 5,
            ..Transfer::new(941, 3, 4, 10, 1, 1)
        },
    ]);
    assert_eq!(
        client.create_transfers(&with_timeout).unwrap(),
        [LEF, R::TimeoutReservedForPendingTransfer]
    );
    wait_resolved(&cluster, Duration::from_secs(5));
    for id in 1..=ACCOUNTS {
        assert_eq!(balances(&client, id), (0, 0, 0, INITIAL), "account {id}");
    }
    assert!(
        client
            .lookup_transfers(&[910, 911, 912, 920, 921, 930, 931, 940, 941])
            .unwrap()
            .is_empty()
    );
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

/// The caller's driver stops after the chain's records, its parts, or its decision, while a
/// leader crashes; the resolver ends the chain alone from the records: every event or none.
fn chain_stop_after(step: CrossShardStep, crash_shard: usize) {
    let chain = linked(&[
        Transfer::new(950, 1, 2, 10, 1, 1),
        Transfer::new(951, 3, 5, 20, 1, 1),
        Transfer::new(952, 4, 7, 30, 1, 1),
    ]);
    let (cluster, client, dir) = interrupted("chain-stop", step, &chain, crash_shard, |client| {
        if step != CrossShardStep::Prepared {
            // In flight, every amount is held on both of its accounts (pending, or posted
            // once the resolver ends the chain).
            for (debit, credit, amount) in [(1, 2, 10), (3, 5, 20), (4, 7, 30)] {
                let debit = balances(client, debit);
                let credit = balances(client, credit);
                assert_eq!(debit.0 + debit.1, amount);
                assert_eq!(credit.2 + credit.3, INITIAL + amount);
            }
        }
        assert_money_in_flight(client, 2, 0);
    });
    let committed = step != CrossShardStep::Prepared;
    for (debit, credit, amount) in [(1, 2, 10), (3, 5, 20), (4, 7, 30)] {
        let moved = if committed { amount } else { 0 };
        assert_eq!(balances(&client, debit), (0, moved, 0, INITIAL));
        assert_eq!(balances(&client, credit), (0, 0, 0, INITIAL + moved));
    }
    let expected = if committed {
        [R::Exists, LEF, LEF]
    } else {
        [R::IdAlreadyFailed, LEF, LEF]
    };
    assert_eq!(client.create_transfers(&chain).unwrap(), expected);
    assert_eq!(
        client.lookup_transfers(&[950, 951, 952]).unwrap().len(),
        if committed { 3 } else { 0 }
    );
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

#[test]
fn chain_coordinator_leader_crash_after_records() {
    chain_stop_after(CrossShardStep::Prepared, 1);
}

#[test]
fn chain_participant_leader_crash_after_parts() {
    chain_stop_after(CrossShardStep::Voted, 0);
}

#[test]
fn chain_coordinator_leader_crash_after_decision() {
    chain_stop_after(CrossShardStep::Decided, 1);
}

/// Pending events in a chain spanning shards: a commit keeps them pending on both sides; the
/// user then posts or voids each like any pending transfer.
#[test]
fn chain_with_pending_events_then_resolved() {
    let dir = temp_dir("chain-pending");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    // Coordinator: shard 1 (account 1). 3 → 4 crosses to shard 0, 5 → 7 stays on shard 1,
    // 6 → 8 on shard 0.
    let chain = linked(&[
        Transfer::new(960, 1, 2, 10, 1, 1),
        pending(961, 3, 4, 20),
        pending(962, 5, 7, 30),
        pending(963, 6, 8, 40),
    ]);
    assert_eq!(client.create_transfers(&chain).unwrap(), [R::Ok; 4]);
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_eq!(balances(&client, 2), (0, 0, 0, INITIAL + 10));
    for (debit, credit, amount) in [(3, 4, 20), (5, 7, 30), (6, 8, 40)] {
        assert_eq!(balances(&client, debit), (amount, 0, 0, INITIAL));
        assert_eq!(balances(&client, credit), (0, 0, amount, INITIAL));
    }
    let found = client.lookup_transfers(&[960, 961, 962, 963]).unwrap();
    assert_eq!(
        found.iter().map(|t| (t.id, t.flags)).collect::<Vec<_>>(),
        [
            (960, TransferFlags::empty()),
            (961, TransferFlags::PENDING),
            (962, TransferFlags::PENDING),
            (963, TransferFlags::PENDING)
        ]
    );
    // The user resolves them: a partial post across shards, a void on one shard, a post
    // naming both accounts of the other shard.
    let by_accounts = Transfer {
        debit_account_id: 6,
        credit_account_id: 8,
        ..post(966, 963, u128::MAX)
    };
    let resolutions = [post(964, 961, 15), void(965, 962), by_accounts];
    assert_eq!(client.create_transfers(&resolutions).unwrap(), [R::Ok; 3]);
    assert_eq!(
        client.create_transfers(&resolutions).unwrap(),
        [R::Exists; 3]
    );
    assert_eq!(
        client.create_transfers(&[post(967, 960, 1)]).unwrap(),
        [R::PendingTransferNotPending]
    );
    wait_resolved(&cluster, Duration::from_secs(5));
    for (debit, credit, moved) in [(3, 4, 15), (5, 7, 0), (6, 8, 40)] {
        assert_eq!(balances(&client, debit), (0, moved, 0, INITIAL));
        assert_eq!(balances(&client, credit), (0, 0, 0, INITIAL + moved));
    }
    // A pending event whose credit account lives on the chain's coordinator is refused.
    let colliding = linked(&[Transfer::new(970, 2, 4, 1, 1, 1), pending(971, 1, 6, 1)]);
    assert!(matches!(
        client.create_transfers(&colliding),
        Err(ShardError::CrossShard { index: 1, .. })
    ));
    // A chain with pending events failing on a remote shard leaves nothing pending.
    let failing = linked(&[pending(980, 9, 10, 5), Transfer::new(981, 11, 50, 5, 1, 1)]);
    assert_eq!(
        client.create_transfers(&failing).unwrap(),
        [LEF, R::CreditAccountNotFound]
    );
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_eq!(balances(&client, 9), (0, 0, 0, INITIAL));
    assert_eq!(balances(&client, 10), (0, 0, 0, INITIAL));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

/// A chain with pending events whose caller stops after the parts: the resolver commits it,
/// its pending events stay pending, and the user's posts then move the money.
#[test]
fn chain_with_pending_events_finished_by_the_resolver() {
    let chain = linked(&[pending(990, 1, 2, 10), pending(991, 3, 5, 20)]);
    let (cluster, client, dir) = interrupted(
        "chain-pending-stop",
        CrossShardStep::Voted,
        &chain,
        0,
        |client| {
            assert_money_in_flight(client, 2, 0);
        },
    );
    assert_eq!(balances(&client, 1), (10, 0, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 10, INITIAL));
    assert_eq!(balances(&client, 3), (20, 0, 0, INITIAL));
    assert_eq!(balances(&client, 5), (0, 0, 20, INITIAL));
    assert_eq!(client.create_transfers(&chain).unwrap(), [R::Exists, LEF]);
    let posts = [post(992, 990, u128::MAX), post(993, 991, 5)];
    assert_eq!(client.create_transfers(&posts).unwrap(), [R::Ok; 2]);
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_eq!(balances(&client, 1), (0, 10, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 0, INITIAL + 10));
    assert_eq!(balances(&client, 3), (0, 5, 0, INITIAL));
    assert_eq!(balances(&client, 5), (0, 0, 0, INITIAL + 5));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

/// A chain and a user's post left mid-protocol when the whole cluster stops are finished after
/// it reopens, from the replicated leg indexes alone.
#[test]
fn reopened_cluster_finishes_chains_and_posts() {
    let dir = temp_dir("reopen-chain");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    assert_eq!(
        client.create_transfers(&[pending(1000, 1, 2, 50)]).unwrap(),
        [R::Ok]
    );
    cluster.stop_cross_shard_after(Some(CrossShardStep::Voted));
    let chain = linked(&[Transfer::new(1001, 3, 4, 10, 1, 1), pending(1002, 5, 6, 20)]);
    assert!(client.create_transfers(&chain).is_err());
    cluster.stop_cross_shard_after(Some(CrossShardStep::Decided));
    assert!(client.create_transfers(&[post(1003, 1000, 30)]).is_err());
    cluster.shutdown().unwrap();
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(balances(&client, 1), (0, 30, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 0, INITIAL + 30));
    assert_eq!(balances(&client, 4), (0, 0, 0, INITIAL + 10));
    assert_eq!(balances(&client, 5), (20, 0, 0, INITIAL));
    assert_eq!(balances(&client, 6), (0, 0, 20, INITIAL));
    assert_eq!(client.create_transfers(&chain).unwrap(), [R::Exists, LEF]);
    assert_eq!(
        client.create_transfers(&[post(1003, 1000, 30)]).unwrap(),
        [R::Exists]
    );
    assert_eq!(
        client.create_transfers(&[void(1004, 1002)]).unwrap(),
        [R::Ok]
    );
    wait_resolved(&cluster, Duration::from_secs(5));
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

/// Pending transfers `first` (1 → 2, 40, timeout 2 s) and `first + 1` (3 → 4, 50, an
/// hour).
fn expiring_and_lasting(first: u128) -> [Transfer; 2] {
    let expiring = Transfer {
        timeout: 2,
        ..pending(first, 1, 2, 40)
    };
    let lasting = Transfer {
        timeout: 3_600,
        ..pending(first + 1, 3, 4, 50)
    };
    [expiring, lasting]
}

/// Pending transfer `expired` (1 → 2, 40) expired on both sides and the other (3 → 4) was
/// posted 20: the balances say so, and a post and a void of `expired` (ids `later`) answer
/// `PendingTransferExpired`.
fn assert_expired_and_posted(client: &Client, expired: u128, later: [u128; 2]) {
    assert_eq!(balances(client, 1), (0, 0, 0, INITIAL));
    assert_eq!(balances(client, 2), (0, 0, 0, INITIAL));
    assert_eq!(balances(client, 3), (0, 20, 0, INITIAL));
    assert_eq!(balances(client, 4), (0, 0, 0, INITIAL + 20));
    assert_eq!(
        client
            .create_transfers(&[post(later[0], expired, 1), void(later[1], expired)])
            .unwrap(),
        [R::PendingTransferExpired, R::PendingTransferExpired]
    );
}

/// A cross-shard pending transfer with a timeout: its legs never expire alone; the resolver
/// voids both once the timeout has passed in the coordinator's ledger time (the shard is idle
/// meanwhile: the resolver's ticks move that time), and a later post answers
/// `PendingTransferExpired`. One posted in time is not voided.
#[test]
fn pending_timeout_across_shards() {
    let dir = temp_dir("pending-timeout");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    let [expiring, lasting] = expiring_and_lasting(1100);
    assert_eq!(
        client.create_transfers(&[expiring, lasting]).unwrap(),
        [R::Ok; 2]
    );
    assert_eq!(balances(&client, 1), (40, 0, 0, INITIAL));
    let found = client.lookup_transfers(&[1100]).unwrap();
    assert_eq!(
        (found[0].flags, found[0].timeout),
        (TransferFlags::PENDING, 2)
    );
    // Posted in time: the money moves and nothing is left to expire.
    assert_eq!(
        client.create_transfers(&[post(1102, 1101, 20)]).unwrap(),
        [R::Ok]
    );
    // Expired: both sides released, by the resolver alone.
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_expired_and_posted(&client, 1100, [1103, 1104]);
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

/// A cross-shard pending transfer with a timeout whose caller stops after the vote: the
/// resolver commits it from its legs, and the decision it logs carries the timeout (the
/// participant leg holds it), so it expires like one its caller committed: both sides
/// released, a later post answers `PendingTransferExpired`. A retry with another timeout
/// answers `ExistsWithDifferentTimeout`, one ledger's code.
#[test]
fn pending_timeout_across_shards_committed_by_the_resolver() {
    let dir = temp_dir("pending-timeout-resolver");
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    let [expiring, lasting] = expiring_and_lasting(1200);
    cluster.stop_cross_shard_after(Some(CrossShardStep::Voted));
    let error = client.create_transfers(&[expiring, lasting]).unwrap_err();
    assert!(matches!(error, ShardError::Timeout { .. }), "{error}");
    cluster.stop_cross_shard_after(None);
    // Nobody asks again: the resolver commits both (a vote seen for 2 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let committed = loop {
        let found = client.lookup_transfers(&[1201]).unwrap();
        if let [transfer] = found[..] {
            break transfer;
        }
        assert!(Instant::now() < deadline, "the resolver never committed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (committed.flags, committed.timeout),
        (TransferFlags::PENDING, 3_600),
        "the resolver's decision carries the timeout"
    );
    assert_eq!(
        client.create_transfers(&[post(1202, 1201, 20)]).unwrap(),
        [R::Ok]
    );
    // The expiring one is voided on both sides, by the resolver alone.
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_expired_and_posted(&client, 1200, [1203, 1204]);
    // Retries: unchanged, `Exists`; with another timeout, as one ledger answers.
    let other_timeout = Transfer {
        timeout: 5,
        ..expiring
    };
    assert_eq!(
        client.create_transfers(&[expiring, lasting]).unwrap(),
        [R::Exists, R::Exists]
    );
    assert_eq!(
        client.create_transfers(&[other_timeout]).unwrap(),
        [R::ExistsWithDifferentTimeout]
    );
    assert_customer_money(&client, 2);
    finish(cluster, &dir);
}

// ---- closing and balancing transfers across shards ---------------------------------------

const CLOSING: TransferFlags = TransferFlags::CLOSING_DEBIT.union(TransferFlags::CLOSING_CREDIT);

/// A two-shard cluster set up as [`setup`] does (odd accounts on shard 1, even on shard 0).
fn open_two(name: &str) -> (PathBuf, Cluster, Client) {
    let dir = temp_dir(name);
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    (dir, cluster, client)
}

/// Waits until everything is resolved, checks the customers' money, then [`finish`].
fn finish_settled(cluster: Cluster, client: &Client, dir: &PathBuf) {
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_customer_money(client, 2);
    finish(cluster, dir);
}

/// A pending transfer `debit → credit` with `flags` besides `PENDING`.
fn pending_with(
    id: u128,
    debit: u128,
    credit: u128,
    amount: u128,
    flags: TransferFlags,
) -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING.union(flags),
        ..pending(id, debit, credit, amount)
    }
}

/// Whether each of `ids` is closed, in order.
fn closed(client: &Client, ids: &[u128]) -> Vec<bool> {
    client
        .lookup_accounts(ids)
        .unwrap()
        .iter()
        .map(|account| account.flags.closed())
        .collect()
}

/// Both flags: the commit closes both accounts, reads show `T` as submitted, retries answer
/// as one ledger would, transfers naming either account are refused, and the user's post
/// keeps both closed (no bridge ever closes: later transfers between the shards commit).
#[test]
fn closing_commit_then_post_keeps_both_closed() {
    let (dir, cluster, client) = open_two("flags-post");
    let t = pending_with(100, 1, 2, 30, CLOSING);
    assert_eq!(client.create_transfers(&[t]).unwrap(), [R::Ok]);
    assert_eq!(closed(&client, &[1, 2]), [true, true]);
    assert_eq!(balances(&client, 1), (30, 0, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 30, INITIAL));
    let found = client.lookup_transfers(&[100]).unwrap();
    assert_eq!(
        (found.len(), found[0].flags, found[0].amount),
        (1, TransferFlags::PENDING.union(CLOSING), 30)
    );
    // Retries: unchanged, Exists; with either closing flag missing, as one ledger answers.
    assert_eq!(client.create_transfers(&[t]).unwrap(), [R::Exists]);
    for flags in [TransferFlags::CLOSING_DEBIT, TransferFlags::CLOSING_CREDIT] {
        assert_eq!(
            client
                .create_transfers(&[pending_with(100, 1, 2, 30, flags)])
                .unwrap(),
            [R::ExistsWithDifferentFlags],
            "{flags:?}"
        );
    }
    // Closed accounts refuse new transfers, on either side of either shard pair.
    let results = client
        .create_transfers(&[
            Transfer::new(101, 3, 2, 1, 1, 1),
            Transfer::new(102, 1, 4, 1, 1, 1),
            Transfer::new(103, 2, 5, 1, 1, 1),
            Transfer::new(104, 6, 1, 1, 1, 1),
        ])
        .unwrap();
    assert_eq!(
        results,
        [
            R::CreditAccountAlreadyClosed,
            R::DebitAccountAlreadyClosed,
            R::DebitAccountAlreadyClosed,
            R::CreditAccountAlreadyClosed,
        ]
    );
    // The user's post lands in the accounts its pending transfer closed, and keeps them so.
    let post = resolve(105, 100, TransferFlags::POST_PENDING_TRANSFER, 20);
    assert_eq!(client.create_transfers(&[post]).unwrap(), [R::Ok]);
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(closed(&client, &[1, 2]), [true, true]);
    assert_eq!(balances(&client, 1), (0, 20, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 0, INITIAL + 20));
    // The bridges stayed open: the same shard pair still carries transfers.
    assert_eq!(
        client
            .create_transfers(&[Transfer::new(106, 3, 4, 5, 1, 1)])
            .unwrap(),
        [R::Ok]
    );
    finish_settled(cluster, &client, &dir);
}

/// `CLOSING_CREDIT` alone closes only the credit account (until voided); a closing transfer
/// that is not pending is answered as one ledger would, before any leg.
#[test]
fn closing_credit_alone_and_not_pending() {
    let (dir, cluster, client) = open_two("flags-credit");
    // Only CLOSING_CREDIT: the credit account closes, the debit account stays open.
    let t = pending_with(107, 5, 6, 10, TransferFlags::CLOSING_CREDIT);
    assert_eq!(client.create_transfers(&[t]).unwrap(), [R::Ok]);
    assert_eq!(closed(&client, &[5, 6]), [false, true]);
    assert_eq!(
        client.lookup_transfers(&[107]).unwrap()[0].flags,
        TransferFlags::PENDING.union(TransferFlags::CLOSING_CREDIT)
    );
    // Not pending: the ledger's code, before any leg.
    let plain_closing = Transfer {
        flags: TransferFlags::CLOSING_DEBIT,
        ..Transfer::new(108, 7, 8, 1, 1, 1)
    };
    assert_eq!(
        client.create_transfers(&[plain_closing]).unwrap(),
        [R::ClosingTransferMustBePending]
    );
    assert!(client.lookup_transfers(&[108]).unwrap().is_empty());
    assert_eq!(
        client
            .create_transfers(&[resolve(109, 107, TransferFlags::VOID_PENDING_TRANSFER, 0)])
            .unwrap(),
        [R::Ok]
    );
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(closed(&client, &[5, 6]), [false, false]);
    finish_settled(cluster, &client, &dir);
}

/// A void reopens both accounts; an abort (the credit account refuses: closed) reopens the
/// debit account its prepare had closed, and a transfer into a closed account is refused.
#[test]
fn closing_void_and_abort_reopen() {
    let (dir, cluster, client) = open_two("flags-void");
    let t = pending_with(200, 1, 2, 30, CLOSING);
    assert_eq!(client.create_transfers(&[t]).unwrap(), [R::Ok]);
    assert_eq!(closed(&client, &[1, 2]), [true, true]);
    let void = resolve(201, 200, TransferFlags::VOID_PENDING_TRANSFER, 0);
    assert_eq!(client.create_transfers(&[void]).unwrap(), [R::Ok]);
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(closed(&client, &[1, 2]), [false, false]);
    assert_eq!(balances(&client, 1), (0, 0, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 0, INITIAL));
    // Reopened: both take transfers again.
    assert_eq!(
        client
            .create_transfers(&[Transfer::new(202, 1, 2, 5, 1, 1)])
            .unwrap(),
        [R::Ok]
    );
    // Account 4 (shard 0) closes by a same-shard pending closing transfer.
    let close_4 = pending_with(203, FUNDER, 4, 1, TransferFlags::CLOSING_CREDIT);
    assert_eq!(client.create_transfers(&[close_4]).unwrap(), [R::Ok]);
    // 3 → 4 closing 3: the participant refuses, the abort's void reopens 3.
    let refused = pending_with(204, 3, 4, 10, TransferFlags::CLOSING_DEBIT);
    assert_eq!(
        client.create_transfers(&[refused]).unwrap(),
        [R::CreditAccountAlreadyClosed]
    );
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(closed(&client, &[3, 4]), [false, true]);
    assert_eq!(balances(&client, 3), (0, 0, 0, INITIAL));
    assert!(client.lookup_transfers(&[204]).unwrap().is_empty());
    // A closing transfer from a closed account: the coordinator refuses.
    let from_closed = pending_with(205, 4, 5, 1, TransferFlags::CLOSING_CREDIT);
    assert_eq!(
        client.create_transfers(&[from_closed]).unwrap(),
        [R::DebitAccountAlreadyClosed]
    );
    assert_eq!(closed(&client, &[5]), [false]);
    let reopen_4 = resolve(206, 203, TransferFlags::VOID_PENDING_TRANSFER, 0);
    assert_eq!(client.create_transfers(&[reopen_4]).unwrap(), [R::Ok]);
    assert_eq!(closed(&client, &[4]), [false]);
    finish_settled(cluster, &client, &dir);
}

/// A closing transfer with a timeout expires on both sides, reopening both accounts; one the
/// resolver commits (its caller stopped after the vote) closes both too, and a void reopens.
#[test]
fn closing_expiry_and_resolver_commit() {
    let (dir, cluster, client) = open_two("flags-expiry");
    let expiring = Transfer {
        timeout: 2,
        ..pending_with(300, 1, 2, 40, CLOSING)
    };
    assert_eq!(client.create_transfers(&[expiring]).unwrap(), [R::Ok]);
    assert_eq!(closed(&client, &[1, 2]), [true, true]);
    // The caller of the next one stops after the vote: the resolver commits it.
    let orphan = pending_with(301, 3, 4, 10, CLOSING);
    cluster.stop_cross_shard_after(Some(CrossShardStep::Voted));
    let error = client.create_transfers(&[orphan]).unwrap_err();
    assert!(matches!(error, ShardError::Timeout { .. }), "{error}");
    cluster.stop_cross_shard_after(None);
    wait_resolved(&cluster, Duration::from_secs(20));
    // Expired: both reopened, nothing moved; a post answers PendingTransferExpired.
    assert_eq!(closed(&client, &[1, 2]), [false, false]);
    assert_eq!(balances(&client, 1), (0, 0, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 0, INITIAL));
    assert_eq!(
        client
            .create_transfers(&[resolve(302, 300, TransferFlags::POST_PENDING_TRANSFER, 1)])
            .unwrap(),
        [R::PendingTransferExpired]
    );
    // Committed by the resolver: both closed, T read back with its flags; a retry Exists.
    assert_eq!(closed(&client, &[3, 4]), [true, true]);
    assert_eq!(
        client.lookup_transfers(&[301]).unwrap()[0].flags,
        TransferFlags::PENDING.union(CLOSING)
    );
    assert_eq!(client.create_transfers(&[orphan]).unwrap(), [R::Exists]);
    assert_eq!(
        client
            .create_transfers(&[resolve(303, 301, TransferFlags::VOID_PENDING_TRANSFER, 0)])
            .unwrap(),
        [R::Ok]
    );
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(closed(&client, &[3, 4]), [false, false]);
    finish_settled(cluster, &client, &dir);
}

// ---- balancing ---------------------------------------------------------------------------

/// A plain `BALANCING_DEBIT` transfer across shards moves what its debit account holds, at
/// most its amount, on both shards; lookup and retries answer as one ledger would; once the
/// account is empty, it moves nothing.
#[test]
fn balancing_debit_across_shards_moves_the_debit_balance() {
    let (dir, cluster, client) = open_two("flags-balancing");
    let t = Transfer {
        flags: TransferFlags::BALANCING_DEBIT,
        ..Transfer::new(400, 1, 2, 5_000, 1, 1)
    };
    assert_eq!(client.create_transfers(&[t]).unwrap(), [R::Ok]);
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(balances(&client, 1), (0, INITIAL, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 0, 2 * INITIAL));
    let found = client.lookup_transfers(&[400]).unwrap();
    assert_eq!(
        (found.len(), found[0].amount, found[0].flags),
        (1, INITIAL, TransferFlags::BALANCING_DEBIT)
    );
    // Retries: at least the amount moved, Exists; less, ExistsWithDifferentAmount.
    assert_eq!(client.create_transfers(&[t]).unwrap(), [R::Exists]);
    let less = Transfer {
        amount: INITIAL - 1,
        ..t
    };
    assert_eq!(
        client.create_transfers(&[less]).unwrap(),
        [R::ExistsWithDifferentAmount]
    );
    // Nothing left to move: Ok, amount 0 on both sides.
    let empty = Transfer { id: 401, ..t };
    assert_eq!(client.create_transfers(&[empty]).unwrap(), [R::Ok]);
    assert_eq!(client.lookup_transfers(&[401]).unwrap()[0].amount, 0);
    // Not more than asked: 3 → 4 moves 300 of its 1,000.
    let partial = Transfer {
        flags: TransferFlags::BALANCING_DEBIT,
        ..Transfer::new(402, 3, 4, 300, 1, 1)
    };
    assert_eq!(client.create_transfers(&[partial]).unwrap(), [R::Ok]);
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(balances(&client, 3), (0, 300, 0, INITIAL));
    assert_eq!(balances(&client, 4), (0, 0, 0, INITIAL + 300));
    // Refused by the participant (no such account): nothing moves, the reservation is gone.
    let refused = Transfer {
        flags: TransferFlags::BALANCING_DEBIT,
        ..Transfer::new(403, 5, 100, 50, 1, 1)
    };
    assert_eq!(
        client.create_transfers(&[refused]).unwrap(),
        [R::CreditAccountNotFound]
    );
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(balances(&client, 5), (0, 0, 0, INITIAL));
    finish_settled(cluster, &client, &dir);
}

/// A pending `BALANCING_DEBIT` transfer is clamped to what its debit account has available
/// (its balance less what other pending transfers hold), pending on both sides with that
/// amount until posted; one whose caller stopped after the vote is committed by the resolver
/// with the amount the legs hold.
#[test]
fn pending_balancing_debit_across_shards() {
    let (dir, cluster, client) = open_two("flags-balancing-pending");
    let held = pending_with(500, 1, 4, 400, TransferFlags::empty());
    let t = pending_with(501, 1, 2, 900, TransferFlags::BALANCING_DEBIT);
    assert_eq!(client.create_transfers(&[held, t]).unwrap(), [R::Ok, R::Ok]);
    assert_eq!(balances(&client, 1), (INITIAL, 0, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, INITIAL - 400, INITIAL));
    assert_eq!(
        client.lookup_transfers(&[501]).unwrap()[0].flags,
        TransferFlags::PENDING.union(TransferFlags::BALANCING_DEBIT)
    );
    let post = resolve(
        502,
        501,
        TransferFlags::POST_PENDING_TRANSFER,
        INITIAL - 400,
    );
    let void = resolve(503, 500, TransferFlags::VOID_PENDING_TRANSFER, 0);
    assert_eq!(
        client.create_transfers(&[post, void]).unwrap(),
        [R::Ok, R::Ok]
    );
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(balances(&client, 1), (0, INITIAL - 400, 0, INITIAL));
    assert_eq!(balances(&client, 2), (0, 0, 0, 2 * INITIAL - 400));
    // The caller stops after the vote: the resolver commits what the legs hold (3 has 1,000).
    let orphan = Transfer {
        flags: TransferFlags::BALANCING_DEBIT,
        ..Transfer::new(504, 3, 6, 2_000, 1, 1)
    };
    cluster.stop_cross_shard_after(Some(CrossShardStep::Voted));
    let error = client.create_transfers(&[orphan]).unwrap_err();
    assert!(matches!(error, ShardError::Timeout { .. }), "{error}");
    cluster.stop_cross_shard_after(None);
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(balances(&client, 3), (0, INITIAL, 0, INITIAL));
    assert_eq!(balances(&client, 6), (0, 0, 0, 2 * INITIAL));
    assert_eq!(client.create_transfers(&[orphan]).unwrap(), [R::Exists]);
    finish_settled(cluster, &client, &dir);
}
