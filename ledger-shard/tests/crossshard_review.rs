//! Adversarial scenarios of the cross-shard protocol on real replicas: chains spanning shards
//! retried with changed fields (I1 across shards, I3).
#![allow(
    clippy::disallowed_methods,
    reason = "tests pace themselves by the wall clock"
)]
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ledger_core::{Account, CreateTransferResult as R, Transfer, TransferFlags};
use ledger_shard::{Client, Cluster, ClusterConfig};

/// A cluster of `shards` shards in a fresh directory, with accounts `1..=accounts` (ledger 1,
/// no limits): account `id` lives on shard `id % shards`.
fn open(name: &str, shards: usize, accounts: u128) -> (Cluster, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ledger-review-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = ClusterConfig::new(&dir)
        .shards(shards)
        .request_timeout(Duration::from_secs(2));
    let cluster = Cluster::open(config).unwrap();
    let created = cluster
        .client()
        .create_accounts(
            &(1..=accounts)
                .map(|id| Account::new(id, 1, 1))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    assert!(created.iter().all(|result| result.is_ok()), "{created:?}");
    (cluster, dir)
}

/// `events` as one linked chain.
fn chain(events: &[Transfer]) -> Vec<Transfer> {
    let last = events.len() - 1;
    (0..)
        .zip(events)
        .map(|(index, event)| Transfer {
            flags: if index < last {
                TransferFlags::LINKED
            } else {
                event.flags
            },
            ..*event
        })
        .collect()
}

/// Waits (up to 10 s) until every cross-shard leg, post and chain record is resolved.
fn settle(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.unresolved_cross_shard_legs() > 0 {
        assert!(Instant::now() < deadline, "legs left unresolved");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each account's `(debits_pending, debits_posted, credits_pending, credits_posted)`.
fn balances(client: &Client, ids: &[u128]) -> Vec<(u128, u128, u128, u128)> {
    client
        .lookup_accounts(ids)
        .unwrap()
        .iter()
        .map(|a| {
            (
                a.debits_pending,
                a.debits_posted,
                a.credits_pending,
                a.credits_posted,
            )
        })
        .collect()
}

fn close(cluster: Cluster, dir: &PathBuf) {
    cluster
        .wait_replicas_identical(Duration::from_secs(30))
        .unwrap();
    cluster.check_invariants().unwrap();
    cluster.shutdown().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A chain whose coordinator's part fails for a property of its event (code 0) is retried
/// with the code fixed. The first attempt voided the other shard's leg without deciding at
/// the coordinator, so the retry must not be able to commit there: all or nothing.
#[test]
fn chain_retried_after_its_coordinator_part_failed_stays_atomic() {
    let (cluster, dir) = open("coordinator-part", 2, 4);
    let client = cluster.client();
    // 1 → 3 on shard 1 (the coordinator), 2 → 4 on shard 0.
    let fixed = [
        Transfer::new(950, 1, 3, 10, 1, 1),
        Transfer::new(951, 2, 4, 10, 1, 1),
    ];
    let broken = [
        Transfer {
            code: 0,
            ..fixed[0]
        },
        fixed[1],
    ];
    assert_eq!(
        client.create_transfers(&chain(&broken)).unwrap(),
        [R::CodeMustNotBeZero, R::LinkedEventFailed]
    );
    let retry = client.create_transfers(&chain(&fixed));
    settle(&cluster);
    let moved = balances(&client, &[3, 4]);
    assert!(
        moved == [(0, 0, 0, 0); 2] || moved == [(0, 0, 0, 10); 2],
        "one event of the chain applied, the other not: {moved:?} (retry: {retry:?})"
    );
    if moved[0].3 == 0 {
        assert!(
            retry.as_ref().is_ok_and(|results| results[0] != R::Ok),
            "{retry:?}"
        );
    }
    close(cluster, &dir);
}

/// A committed chain retried with one more event (on a shard none of its legs touch): on one
/// ledger the retry fails at its first event and applies nothing; the added event must not
/// apply while the caller hears that it failed.
#[test]
fn committed_chain_retried_with_an_added_event_applies_nothing_more() {
    let (cluster, dir) = open("appended", 3, 6);
    let client = cluster.client();
    // 3 → 6 on shard 0 (the coordinator), 1 → 4 on shard 1; then 2 → 5 on shard 2.
    let committed = [
        Transfer::new(960, 3, 6, 10, 1, 1),
        Transfer::new(961, 1, 4, 10, 1, 1),
    ];
    assert_eq!(
        client.create_transfers(&chain(&committed)).unwrap(),
        [R::Ok, R::Ok]
    );
    let added = [
        committed[0],
        committed[1],
        Transfer::new(962, 2, 5, 10, 1, 1),
    ];
    // Twice: the first retry logs the added event's record, the second finds it.
    for _ in 0..2 {
        let retry = client.create_transfers(&chain(&added));
        settle(&cluster);
        let moved = balances(&client, &[2, 5]);
        assert_eq!(
            moved,
            [(0, 0, 0, 0); 2],
            "the added event applied (retry: {retry:?})"
        );
        assert!(
            retry.as_ref().map_or(true, |results| results[0] != R::Ok),
            "{retry:?}"
        );
    }
    assert_eq!(balances(&client, &[6])[0].3, 10);
    close(cluster, &dir);
}

/// A post whose id is its pending transfer's own id: one ledger refuses it (the id exists, or
/// `PendingIdMustBeDifferent`); across shards it must not resolve the pending transfer either.
#[test]
fn post_reusing_its_pending_transfers_id_is_refused() {
    let (cluster, dir) = open("post-own-id", 2, 4);
    let client = cluster.client();
    let pending = Transfer {
        flags: TransferFlags::PENDING,
        ..Transfer::new(970, 1, 2, 10, 1, 1)
    };
    assert_eq!(client.create_transfers(&[pending]).unwrap(), [R::Ok]);
    settle(&cluster);
    let post = |id| Transfer {
        pending_id: 970,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Transfer::new(id, 0, 0, 10, 0, 0)
    };
    let results = client.create_transfers(&[post(970)]).unwrap();
    assert_ne!(results, [R::Ok]);
    settle(&cluster);
    assert_eq!(balances(&client, &[1, 2]), [(10, 0, 0, 0), (0, 0, 10, 0)]);
    assert_eq!(client.create_transfers(&[post(971)]).unwrap(), [R::Ok]);
    settle(&cluster);
    assert_eq!(balances(&client, &[1, 2]), [(0, 10, 0, 0), (0, 0, 0, 10)]);
    close(cluster, &dir);
}

/// A chain interrupted after its parts, then retried naming only its first events: the retry
/// commits the chain and acknowledges its own records; the resolver then finds the last
/// event's record alone and must make it follow the commit (all or none).
#[test]
fn chain_retried_with_fewer_events_still_commits_whole() {
    let (cluster, dir) = open("fewer", 2, 6);
    let client = cluster.client();
    // 1 → 3 on shard 1 (the coordinator), 2 → 4 on shard 0, 5 → 6 across.
    let events = [
        Transfer::new(980, 1, 3, 10, 1, 1),
        Transfer::new(981, 2, 4, 10, 1, 1),
        Transfer::new(982, 5, 6, 10, 1, 1),
    ];
    cluster.stop_cross_shard_after(Some(ledger_shard::CrossShardStep::Voted));
    assert!(client.create_transfers(&chain(&events)).is_err());
    cluster.stop_cross_shard_after(None);
    let retry = client.create_transfers(&chain(&events[..2])).unwrap();
    // Its legs exist (with other flags: the part on shard 1 was longer).
    assert_eq!(retry, [R::ExistsWithDifferentFlags, R::LinkedEventFailed]);
    settle(&cluster);
    assert_eq!(
        balances(&client, &[3, 4, 6]),
        [(0, 0, 0, 10); 3],
        "every event of the chain posted"
    );
    close(cluster, &dir);
}
