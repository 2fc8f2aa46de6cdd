//! The client machinery against in-process ledgers (no Paxos, no disk): batching, retries with
//! the same nonce, splitting across shards and merging results back in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ledger_core::{Account, AccountFlags, CreateTransferResult, Transfer, TransferFlags};

use super::*;
use crate::EVENTS_PER_CALL_MAX;
use crate::backend::local::LocalBackend;
use crate::shard::Events;

fn local_cluster(shard_count: usize) -> (Cluster, Vec<Arc<LocalBackend>>) {
    local_cluster_with_round(shard_count, Duration::ZERO)
}

fn local_cluster_with_round(
    shard_count: usize,
    round: Duration,
) -> (Cluster, Vec<Arc<LocalBackend>>) {
    let locals: Vec<_> = (0..shard_count)
        .map(|_| {
            Arc::new(LocalBackend {
                round,
                ..LocalBackend::default()
            })
        })
        .collect();
    let backends = locals
        .iter()
        .map(|local| Arc::clone(local) as Arc<dyn Backend>)
        .collect();
    let config = ClusterConfig::new("/unused").shards(shard_count);
    (
        Cluster::open_with_backends(config, backends).unwrap(),
        locals,
    )
}

fn accounts(ids: impl IntoIterator<Item = u128>) -> Vec<Account> {
    ids.into_iter().map(|id| Account::new(id, 1, 1)).collect()
}

#[test]
fn lost_reply_is_retried_with_same_nonce_and_reports_ok() {
    let (cluster, locals) = local_cluster(1);
    let client = cluster.client();
    client.create_accounts(&accounts([1, 2])).unwrap();
    let proposals_before = locals[0].proposals.load(Ordering::SeqCst);
    // The entry commits, but its reply is lost as in a failover: the client retries.
    locals[0].lose_replies.store(1, Ordering::SeqCst);
    let results = client
        .create_transfers(&[Transfer::new(9, 1, 2, 5, 1, 1)])
        .unwrap();
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    assert_eq!(
        locals[0].proposals.load(Ordering::SeqCst),
        proposals_before + 2
    );
    // Applied once (I3): the credit is 5, not 10.
    assert_eq!(client.lookup_accounts(&[2]).unwrap()[0].credits_posted, 5);
    // A genuine duplicate from the user is still a duplicate.
    let results = client
        .create_transfers(&[Transfer::new(9, 1, 2, 5, 1, 1)])
        .unwrap();
    assert!(results[0].is_exists());
    cluster.shutdown().unwrap();
}

#[test]
fn concurrent_callers_share_entries() {
    let (cluster, locals) = local_cluster_with_round(1, Duration::from_millis(1));
    let client = cluster.client();
    client.create_accounts(&accounts(1..=64)).unwrap();
    let before = locals[0].proposals.load(Ordering::SeqCst);
    let calls_per_thread = 50u128;
    std::thread::scope(|scope| {
        for thread in 0..64u128 {
            let client = client.clone();
            scope.spawn(move || {
                for call in 0..calls_per_thread {
                    let id = 1000 + thread * calls_per_thread + call;
                    let debit = thread + 1;
                    let credit = (thread + 1) % 64 + 1;
                    let transfer = Transfer::new(id, debit, credit, 1, 1, 1);
                    let results = client.create_transfers(&[transfer]).unwrap();
                    assert!(results[0].is_ok(), "{results:?}");
                }
            });
        }
    });
    let entries = locals[0].proposals.load(Ordering::SeqCst) - before;
    let calls = 64 * u64::try_from(calls_per_thread).unwrap();
    // While four proposers wait out their 1 ms rounds, the other callers queue up and ride
    // together in the next entries: on average at least 4 calls per entry.
    assert!(entries * 4 <= calls, "{entries} entries for {calls} calls");
    let moved: u128 = client
        .lookup_accounts(&(1..=64).collect::<Vec<_>>())
        .unwrap()
        .iter()
        .map(|account| account.credits_posted)
        .sum();
    assert_eq!(moved, 64 * calls_per_thread);
    cluster.shutdown().unwrap();
}

#[test]
fn cross_shard_transfer_is_rejected_before_anything_is_submitted() {
    let (cluster, locals) = local_cluster(2);
    let client = cluster.client();
    client.create_accounts(&accounts(1..=4)).unwrap();
    let before: Vec<u64> = locals
        .iter()
        .map(|l| l.proposals.load(Ordering::SeqCst))
        .collect();
    // Plain and pending cross-shard transfers commit by two-phase commit; a BALANCING_CREDIT
    // one is not built yet.
    let pending_across = Transfer {
        flags: TransferFlags::BALANCING_CREDIT,
        ..Transfer::new(11, 1, 2, 1, 1, 1)
    };
    let batch = [Transfer::new(10, 2, 4, 1, 1, 1), pending_across];
    let error = client.create_transfers(&batch).unwrap_err();
    assert!(matches!(
        error,
        ShardError::CrossShard {
            index: 1,
            debit_shard: 1,
            credit_shard: 0
        }
    ));
    let after: Vec<u64> = locals
        .iter()
        .map(|l| l.proposals.load(Ordering::SeqCst))
        .collect();
    assert_eq!(before, after);
    assert!(client.lookup_transfers(&[10, 11]).unwrap().is_empty());
    cluster.shutdown().unwrap();
}

#[test]
fn linked_chain_across_shards_with_a_balancing_event_is_rejected() {
    let (cluster, _) = local_cluster(2);
    let client = cluster.client();
    client.create_accounts(&accounts(1..=4)).unwrap();
    let mut first = Transfer::new(10, 2, 4, 1, 1, 1);
    first.flags = TransferFlags::LINKED;
    let mut balancing = Transfer::new(11, 1, 3, 1, 1, 1);
    balancing.flags = TransferFlags::BALANCING_DEBIT;
    let batch = [first, balancing];
    assert!(matches!(
        client.create_transfers(&batch),
        Err(ShardError::CrossShard { index: 1, .. })
    ));
    cluster.shutdown().unwrap();
}

#[test]
fn events_split_across_shards_come_back_in_order() {
    let (cluster, locals) = local_cluster(3);
    let client = cluster.client();
    let results = client
        .create_accounts(&accounts([1, 2, 3, 4, 0, 6]))
        .unwrap();
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 5);
    assert!(!results[4].is_ok(), "id 0 is rejected in its place");
    let batch = [
        Transfer::new(20, 1, 4, 7, 1, 1),
        Transfer::new(21, 3, 6, 8, 1, 1),
    ];
    assert!(
        client
            .create_transfers(&batch)
            .unwrap()
            .iter()
            .all(|result| result.is_ok())
    );
    let found = client.lookup_transfers(&[21, 99, 20]).unwrap();
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), vec![21, 20]);
    let found = client.lookup_accounts(&[6, 4, 5, 1]).unwrap();
    assert_eq!(
        found.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![6, 4, 1]
    );
    assert!(
        locals
            .iter()
            .all(|local| local.proposals.load(Ordering::SeqCst) >= 1)
    );
    cluster.shutdown().unwrap();
}

#[test]
fn open_chain_travels_alone() {
    let (sender, receiver) = channel::bounded(8);
    let (shutdown_sender, shutdown) = channel::bounded::<()>(0);
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::default());
    let config = ClusterConfig::new("/unused");
    let (_, mut context) = shard_context(&config, 0, backend, 1, &shutdown);
    Arc::get_mut(&mut context).unwrap().submissions = receiver;
    let submission = |flags: AccountFlags| {
        let mut account = Account::new(1, 1, 1);
        account.flags = flags;
        let (reply, _) = channel::bounded(1);
        Submission {
            events: Events::Accounts(vec![account]),
            deadline: clock::now(),
            reply,
        }
    };
    for flags in [
        AccountFlags::empty(),
        AccountFlags::LINKED,
        AccountFlags::empty(),
    ] {
        sender.send(submission(flags)).unwrap();
    }
    let first = context.submissions.recv().unwrap();
    let (batch, carried) = shard::proposer_pack(&context, first);
    // The second call ends with an open chain: nothing may be packed after it.
    assert_eq!(batch.len(), 2);
    assert!(carried.is_none());
    assert_eq!(context.submissions.len(), 1);
    drop(shutdown_sender);
}

#[test]
fn too_many_events_is_an_invalid_request() {
    let (cluster, _) = local_cluster(1);
    let too_many = accounts(1..=(EVENTS_PER_CALL_MAX as u128 + 1));
    let error = cluster.client().create_accounts(&too_many).unwrap_err();
    assert!(matches!(error, ShardError::InvalidRequest { .. }));
    cluster.shutdown().unwrap();
}

#[test]
fn calls_after_shutdown_fail_with_shutdown() {
    let (cluster, _) = local_cluster(1);
    let client = cluster.client();
    cluster.shutdown().unwrap();
    assert!(matches!(
        client.create_accounts(&accounts([1])),
        Err(ShardError::Shutdown)
    ));
    assert!(matches!(
        client.lookup_accounts(&[1]),
        Err(ShardError::Shutdown)
    ));
}

#[test]
fn manifest_pins_the_cluster_shape() {
    let dir = std::env::temp_dir().join(format!("ledger-shard-manifest-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let config = ClusterConfig::new(&dir).shards(2);
    assert_eq!(manifest_open(&config).unwrap(), 1);
    assert_eq!(
        manifest_open(&config).unwrap(),
        2,
        "every open gets a new nonce epoch"
    );
    let error = manifest_open(&ClusterConfig::new(&dir).shards(3)).unwrap_err();
    assert!(matches!(error, ShardError::InvalidConfig { .. }));
    fs::write(dir.join(MANIFEST_FILE_NAME), b"garbage").unwrap();
    assert!(matches!(
        manifest_open(&config),
        Err(ShardError::Manifest { .. })
    ));
    fs::remove_dir_all(&dir).unwrap();
}
