//! The driver over ledger-wal's fault-injecting storage: a failed fsync stops (poisons) that
//! replica for good — its callers get the storage error, it is never retried, the others elect
//! a leader and go on, and a restart recovers it from what was durable; a follower whose fsync
//! failed never sends its vote, so nothing is acknowledged on it (I4); and a power loss of every
//! replica at once, dropping every byte not fsynced, keeps every acknowledged entry (I2).

mod driver_support;

use std::time::Duration;

use bytes::Bytes;
use driver_support::{
    CALL_TIMEOUT, Registry, command, propose_to_leader, read_from_leader, wait_for_leader,
    wait_until,
};
use ledger_paxos::driver::Group;
use ledger_paxos::{Config, PaxosError};
use ledger_wal::{FaultStorage, WalError, WalOptions};

fn open_faulty_group(storages: &[FaultStorage], registry: &Registry) -> Group {
    let handed_out = storages.to_vec();
    let open_storage = move |index: u8| {
        let storage = handed_out[usize::from(index)].clone();
        Ok((storage.clone(), storage))
    };
    let config = Config::new(0, storages.len());
    Group::open_with_storage(
        storages.len(),
        config,
        WalOptions::default(),
        open_storage,
        registry.factory(),
    )
    .expect("open the group")
}

#[test]
fn a_failed_fsync_poisons_the_replica_and_the_others_go_on() {
    let storages: Vec<FaultStorage> = (0..3).map(FaultStorage::new).collect();
    let registry = Registry::default();
    let group = open_faulty_group(&storages, &registry);
    let mut all: Vec<Bytes> = (0..5).map(|i| command("before", i)).collect();
    for command in &all {
        propose_to_leader(&group, command);
    }
    let leader = wait_for_leader(&group);
    storages[leader].fail_next_sync();
    let syncs_before = storages[leader].sync_count();
    let result = group
        .replica(leader)
        .propose(command("doomed", 0), CALL_TIMEOUT);
    // The two followers' Accepted votes are a majority without the leader's, so the command
    // may be chosen and acknowledged before the leader notices its own fsync failed.
    let doomed_acknowledged = match &result {
        Ok(_) => true,
        Err(PaxosError::Storage(error)) => {
            assert!(matches!(error.wal_error(), WalError::Io(_)), "{error}");
            false
        }
        Err(other) => panic!("expected success or the storage error, got {other}"),
    };

    // The replica stopped: no retry of the fsync, and its callers get the same failure.
    wait_until("the poisoned replica stops", || {
        !group.replica(leader).is_running()
    });
    let status = group.replica(leader).status();
    assert!(
        matches!(status.failure, Some(PaxosError::Storage(_))),
        "{status:?}"
    );
    let later = group
        .replica(leader)
        .read(Bytes::new(), Duration::from_millis(100));
    assert!(matches!(later, Err(PaxosError::Storage(_))), "{later:?}");
    assert!(
        storages[leader].sync_count() <= syncs_before + 1,
        "a failed fsync was retried"
    );

    // The two others elect a leader and keep committing.
    for index in 0..5 {
        let command = command("after", index);
        propose_to_leader(&group, &command);
        all.push(command);
    }
    assert_ne!(wait_for_leader(&group), leader);
    // A failed caller does not know whether the doomed command was chosen; an acknowledged one
    // must be in the log.
    let log: Vec<Bytes> = read_from_leader(&group);
    if doomed_acknowledged {
        assert!(
            log.iter().any(|c| c.as_ref() == b"doomed-0"),
            "acknowledged but lost"
        );
    }
    let without_doomed: Vec<Bytes> = log
        .into_iter()
        .filter(|c| c.as_ref() != b"doomed-0")
        .collect();
    assert_eq!(without_doomed, all);

    // A restart recovers the poisoned replica from what was durable, and it catches up.
    group.restart(leader).unwrap();
    assert_eq!(group.replica(leader).status().failure, None);
    let restarted = registry.created_count() - 1;
    wait_until("the restarted replica catches up", || {
        let applied: Vec<Bytes> = registry
            .commands(restarted)
            .into_iter()
            .filter(|c| c.as_ref() != b"doomed-0")
            .collect();
        applied == all
    });
    group.shutdown();
}

#[test]
fn power_loss_of_every_replica_keeps_every_acknowledged_entry() {
    let storages: Vec<FaultStorage> = (0..3).map(|seed| FaultStorage::new(seed + 10)).collect();
    let registry = Registry::default();
    let group = open_faulty_group(&storages, &registry);
    let acknowledged: Vec<Bytes> = (0..30).map(|i| command("acked", i)).collect();
    for command in &acknowledged {
        propose_to_leader(&group, command);
    }
    for (index, storage) in storages.iter().enumerate() {
        group.crash(index);
        storage.crash(); // Everything not fsynced is gone.
    }
    for index in 0..3 {
        group.restart(index).unwrap();
    }
    assert_eq!(read_from_leader(&group), acknowledged);
    group.shutdown();
}

#[test]
fn a_follower_whose_fsync_failed_never_votes_so_nothing_is_acknowledged_on_it() {
    let storages: Vec<FaultStorage> = (0..3).map(|seed| FaultStorage::new(seed + 20)).collect();
    let registry = Registry::default();
    let group = open_faulty_group(&storages, &registry);
    let before = command("before", 0);
    propose_to_leader(&group, &before);
    let leader = wait_for_leader(&group);
    let (down, failing) = ((leader + 1) % 3, (leader + 2) % 3);
    group.crash(down);
    storages[failing].fail_next_sync();
    // The only possible majority is the leader plus `failing`, whose Accepted may leave only
    // after its fsync (I4) — which fails. So the proposal must not be acknowledged.
    let result = group
        .replica(leader)
        .propose(command("unvoted", 0), Duration::from_secs(1));
    assert!(
        result.is_err(),
        "acknowledged without a durable majority: {result:?}"
    );
    wait_until("the failing follower stops", || {
        !group.replica(failing).is_running()
    });
    assert!(matches!(
        group.replica(failing).status().failure,
        Some(PaxosError::Storage(_))
    ));
    // With the crashed follower back there is a majority again.
    group.restart(down).unwrap();
    let after = command("after", 0);
    propose_to_leader(&group, &after);
    let log: Vec<Bytes> = read_from_leader(&group)
        .into_iter()
        .filter(|c| c.as_ref() != b"unvoted-0")
        .collect();
    assert_eq!(log, vec![before, after]);
    group.shutdown();
}
