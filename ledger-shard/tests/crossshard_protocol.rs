//! Cross-shard transfers end to end on real replicas: commit and abort, idempotent retries,
//! reserved ids, the caller's driver stopping after each protocol step while the leader of the
//! coordinator or of the participant crashes there, a shard without a majority blocking only
//! the transfers touching it, and recovery after the whole cluster restarts (I1, I3, I10).
#![allow(
    clippy::disallowed_methods,
    reason = "tests pace themselves by the wall clock"
)]
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ledger_core::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult as R, SYSTEM_ID_MIN, Transfer,
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

/// Accounts 1..=ACCOUNTS forbid overdraft; each is funded with INITIAL from a funder on its
/// own shard (FUNDER + shard).
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
        flags: ledger_core::TransferFlags::LINKED,
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

/// The caller's driver stops after each step while a leader crashes there; the resolver (or
/// the caller's retry) finishes every transfer, atomically.
fn stop_after(step: CrossShardStep, crash_participant: bool) {
    let dir = temp_dir(&format!("stop-{}-{crash_participant}", step as u8));
    let cluster = Cluster::open(config(&dir, 2)).unwrap();
    let client = cluster.client();
    setup(&client, 2);
    cluster.stop_cross_shard_after(Some(step));
    // Odd → even: shard 1 coordinates, shard 0 participates.
    let batch: Vec<Transfer> = (0..5u128)
        .map(|i| Transfer::new(200 + i, 2 * i + 1, 2 * i + 2, 10 + i, 1, 1))
        .collect();
    let error = client.create_transfers(&batch).unwrap_err();
    assert!(matches!(error, ShardError::Timeout { .. }), "{error}");
    cluster.stop_cross_shard_after(None);
    let shard = usize::from(!crash_participant);
    let leader = cluster.leader(shard).unwrap();
    cluster.crash_replica(shard, leader).unwrap();
    // In flight: the amounts are pending on the debit side; money is conserved meanwhile.
    let pending: u128 = (0..5u128)
        .map(|i| account(&client, 2 * i + 1).debits_pending)
        .sum();
    assert!(pending <= 60, "{pending}");
    assert_money_in_flight(&client, 2, 60);
    // A prepared transfer nobody asks about again resolves through the resolver alone; with
    // a vote it commits, without one it aborts after the request timeout.
    wait_resolved(&cluster, Duration::from_secs(15));
    cluster.restart_replica(shard, leader).unwrap();
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
