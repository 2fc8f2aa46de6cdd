//! Closing and balancing transfers across shards. A cross-shard `PENDING | CLOSING_DEBIT`
//! and/or `CLOSING_CREDIT` transfer closes its accounts by ledger-core's own rules on each leg
//! (the coordinator leg closes the debit account, the participant leg the credit account,
//! neither a bridge): a post keeps them closed, a void, an abort or an expiry reopens them,
//! and a transfer naming a closed account is refused with the ledger's code. A
//! `BALANCING_DEBIT` one moves at most the debit account's balance: the coordinator leg is
//! clamped by the ledger, and the participant leg carries what it holds.
#![allow(
    clippy::disallowed_methods,
    reason = "tests pace themselves by the wall clock"
)]
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ledger_core::{Account, AccountFlags, CreateTransferResult as R, Transfer, TransferFlags};
use ledger_shard::{Client, Cluster, ClusterConfig, CrossShardStep, ShardError};

const ACCOUNTS: u128 = 12;
const INITIAL: u128 = 1_000;
/// Funders `FUNDER` (shard 0) and `FUNDER + 1` (shard 1): ids route by `id % 2`.
const FUNDER: u128 = 1_000_000;
const CLOSING: TransferFlags = TransferFlags::CLOSING_DEBIT.union(TransferFlags::CLOSING_CREDIT);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ledger-xflags-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A two-shard cluster whose accounts 1..=ACCOUNTS (odd ids on shard 1, even on shard 0)
/// forbid overdraft and are funded with INITIAL each from their own shard's funder.
fn open(name: &str) -> (PathBuf, Cluster, Client) {
    let dir = temp_dir(name);
    let config = ClusterConfig::new(&dir)
        .shards(2)
        .request_timeout(Duration::from_secs(2));
    let cluster = Cluster::open(config).unwrap();
    let client = cluster.client();
    let mut accounts: Vec<Account> = (1..=ACCOUNTS)
        .map(|id| Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..Account::new(id, 1, 1)
        })
        .collect();
    accounts.extend([Account::new(FUNDER, 1, 1), Account::new(FUNDER + 1, 1, 1)]);
    let results = client.create_accounts(&accounts).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let funding: Vec<Transfer> = (1..=ACCOUNTS)
        .map(|id| Transfer::new(id, FUNDER + id % 2, id, INITIAL, 1, 1))
        .collect();
    let results = client.create_transfers(&funding).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    (dir, cluster, client)
}

fn finish(cluster: Cluster, client: &Client, dir: &PathBuf) {
    wait_resolved(&cluster, Duration::from_secs(15));
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let customers: i128 = client
        .lookup_accounts(&ids)
        .unwrap()
        .iter()
        .map(Account::balance_posted)
        .sum();
    assert_eq!(customers, i128::try_from(ACCOUNTS * INITIAL).unwrap());
    cluster
        .wait_replicas_identical(Duration::from_secs(30))
        .unwrap();
    cluster.check_invariants().unwrap();
    cluster.shutdown().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Waits until every leg of every cross-shard transfer is resolved.
fn wait_resolved(cluster: &Cluster, within: Duration) {
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

/// A pending transfer `debit → credit` with `flags` besides `PENDING`.
fn pending(id: u128, debit: u128, credit: u128, amount: u128, flags: TransferFlags) -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING.union(flags),
        ..Transfer::new(id, debit, credit, amount, 1, 1)
    }
}

fn resolve(id: u128, pending_id: u128, flags: TransferFlags, amount: u128) -> Transfer {
    Transfer {
        pending_id,
        flags,
        ..Transfer::new(id, 0, 0, amount, 0, 0)
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

fn balances(client: &Client, id: u128) -> (u128, u128, u128, u128) {
    let a = client.lookup_accounts(&[id]).unwrap()[0];
    (
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
    )
}

/// Both flags: the commit closes both accounts, reads show `T` as submitted, retries answer
/// as one ledger would, transfers naming either account are refused, and the user's post
/// keeps both closed (no bridge ever closes: later transfers between the shards commit).
#[test]
fn closing_commit_then_post_keeps_both_closed() {
    let (dir, cluster, client) = open("post");
    let t = pending(100, 1, 2, 30, CLOSING);
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
                .create_transfers(&[pending(100, 1, 2, 30, flags)])
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
    finish(cluster, &client, &dir);
}

/// `CLOSING_CREDIT` alone closes only the credit account (until voided); a closing transfer
/// that is not pending is answered as one ledger would, before any leg.
#[test]
fn closing_credit_alone_and_not_pending() {
    let (dir, cluster, client) = open("credit");
    // Only CLOSING_CREDIT: the credit account closes, the debit account stays open.
    let t = pending(107, 5, 6, 10, TransferFlags::CLOSING_CREDIT);
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
    finish(cluster, &client, &dir);
}

/// A void reopens both accounts; an abort (the credit account refuses: closed) reopens the
/// debit account its prepare had closed, and a transfer into a closed account is refused.
#[test]
fn closing_void_and_abort_reopen() {
    let (dir, cluster, client) = open("void");
    let t = pending(200, 1, 2, 30, CLOSING);
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
    let close_4 = pending(203, FUNDER, 4, 1, TransferFlags::CLOSING_CREDIT);
    assert_eq!(client.create_transfers(&[close_4]).unwrap(), [R::Ok]);
    // 3 → 4 closing 3: the participant refuses, the abort's void reopens 3.
    let refused = pending(204, 3, 4, 10, TransferFlags::CLOSING_DEBIT);
    assert_eq!(
        client.create_transfers(&[refused]).unwrap(),
        [R::CreditAccountAlreadyClosed]
    );
    wait_resolved(&cluster, Duration::from_secs(15));
    assert_eq!(closed(&client, &[3, 4]), [false, true]);
    assert_eq!(balances(&client, 3), (0, 0, 0, INITIAL));
    assert!(client.lookup_transfers(&[204]).unwrap().is_empty());
    // A closing transfer from a closed account: the coordinator refuses.
    let from_closed = pending(205, 4, 5, 1, TransferFlags::CLOSING_CREDIT);
    assert_eq!(
        client.create_transfers(&[from_closed]).unwrap(),
        [R::DebitAccountAlreadyClosed]
    );
    assert_eq!(closed(&client, &[5]), [false]);
    let reopen_4 = resolve(206, 203, TransferFlags::VOID_PENDING_TRANSFER, 0);
    assert_eq!(client.create_transfers(&[reopen_4]).unwrap(), [R::Ok]);
    assert_eq!(closed(&client, &[4]), [false]);
    finish(cluster, &client, &dir);
}

/// A closing transfer with a timeout expires on both sides, reopening both accounts; one the
/// resolver commits (its caller stopped after the vote) closes both too, and a void reopens.
#[test]
fn closing_expiry_and_resolver_commit() {
    let (dir, cluster, client) = open("expiry");
    let expiring = Transfer {
        timeout: 2,
        ..pending(300, 1, 2, 40, CLOSING)
    };
    assert_eq!(client.create_transfers(&[expiring]).unwrap(), [R::Ok]);
    assert_eq!(closed(&client, &[1, 2]), [true, true]);
    // The caller of the next one stops after the vote: the resolver commits it.
    let orphan = pending(301, 3, 4, 10, CLOSING);
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
    finish(cluster, &client, &dir);
}

// ---- balancing ---------------------------------------------------------------------------

/// A plain `BALANCING_DEBIT` transfer across shards moves what its debit account holds, at
/// most its amount, on both shards; lookup and retries answer as one ledger would; once the
/// account is empty, it moves nothing.
#[test]
fn balancing_debit_across_shards_moves_the_debit_balance() {
    let (dir, cluster, client) = open("balancing");
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
    finish(cluster, &client, &dir);
}

/// A pending `BALANCING_DEBIT` transfer is clamped to what its debit account has available
/// (its balance less what other pending transfers hold), pending on both sides with that
/// amount until posted; one whose caller stopped after the vote is committed by the resolver
/// with the amount the legs hold.
#[test]
fn pending_balancing_debit_across_shards() {
    let (dir, cluster, client) = open("balancing-pending");
    let held = pending(500, 1, 4, 400, TransferFlags::empty());
    let t = pending(501, 1, 2, 900, TransferFlags::BALANCING_DEBIT);
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
    finish(cluster, &client, &dir);
}
