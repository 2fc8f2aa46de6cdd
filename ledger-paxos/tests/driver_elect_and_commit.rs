//! Three replicas on their own threads, real files and fsync: a leader is elected, commits
//! proposals, every replica applies the same log (I5, I6), a follower redirects with a hint, and
//! a read sees every acknowledged write (I9).

mod driver_support;

use bytes::Bytes;
use driver_support::{
    CALL_TIMEOUT, Registry, TempDir, command, open_group, read_from_leader, wait_for_leader,
    wait_until,
};
use ledger_paxos::PaxosError;

#[test]
fn three_replicas_elect_a_leader_commit_and_apply_the_same_log() {
    let dir = TempDir::new("elect");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(3), &registry);
    let leader = wait_for_leader(&group);
    let handle = group.replica(leader);
    let mut expected = Vec::new();
    for index in 0..20 {
        let command = command("c", index);
        let reply = handle.propose(command.clone(), CALL_TIMEOUT).unwrap();
        // The list machine answers the command's position: the log order is the apply order.
        assert_eq!(reply.as_ref(), (index as u64).to_le_bytes());
        expected.push(command);
    }
    assert_eq!(read_from_leader(&group), expected);
    // The followers learn the commit slot from the next Accept or heartbeat.
    for creation in 0..3 {
        wait_until("every replica applied the log", || {
            registry.commands(creation) == expected
        });
    }
    group.shutdown();
}

#[test]
fn a_follower_answers_not_leader_with_a_hint() {
    let dir = TempDir::new("hint");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(3), &registry);
    let leader = wait_for_leader(&group);
    // Commit once so that every follower has heard from the leader.
    group
        .replica(leader)
        .propose(Bytes::from_static(b"x"), CALL_TIMEOUT)
        .unwrap();
    let follower = (leader + 1) % 3;
    wait_until("the follower knows the leader", || {
        match group
            .replica(follower)
            .propose(Bytes::from_static(b"y"), CALL_TIMEOUT)
        {
            Err(PaxosError::NotLeader { leader_hint }) => leader_hint == Some(leader as u8),
            other => panic!("a follower must redirect, got {other:?}"),
        }
    });
    let read = group.replica(follower).read(Bytes::new(), CALL_TIMEOUT);
    assert!(
        matches!(read, Err(PaxosError::NotLeader { .. })),
        "{read:?}"
    );
    group.shutdown();
}

#[test]
fn calls_to_a_stopped_replica_fail_with_shutdown() {
    let dir = TempDir::new("stopped");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(3), &registry);
    group.crash(1);
    assert!(!group.replica(1).is_running());
    let result = group
        .replica(1)
        .propose(Bytes::from_static(b"x"), CALL_TIMEOUT);
    assert_eq!(result, Err(PaxosError::Shutdown));
    group.shutdown();
    let result = group.replica(0).read(Bytes::new(), CALL_TIMEOUT);
    assert_eq!(result, Err(PaxosError::Shutdown));
}
