//! Crashes on real files: when the leader crashes a new leader is elected and every entry
//! acknowledged before the crash is still there (I2, I11); the crashed replica restarts from its
//! directory and catches up with what was committed while it was down; crashes and restarts
//! under concurrent load lose no acknowledged command; five replicas survive two crashes, block
//! without a majority and resume when one returns.

mod driver_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use driver_support::{
    Registry, TempDir, command, open_group, propose_to_leader, read_from_leader, wait_for_leader,
    wait_until,
};
use parking_lot::Mutex;

#[test]
fn leader_crash_elects_a_new_leader_and_keeps_acknowledged_entries() {
    let dir = TempDir::new("failover");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(3), &registry);
    let acknowledged: Vec<Bytes> = (0..30).map(|i| command("before", i)).collect();
    for command in &acknowledged {
        propose_to_leader(&group, command);
    }
    let old_leader = wait_for_leader(&group);
    group.crash(old_leader);
    let new_leader = wait_for_leader(&group);
    assert_ne!(new_leader, old_leader);
    // Commands were acknowledged once each with no failure, so the log holds each once.
    assert_eq!(read_from_leader(&group), acknowledged);
    let mut all = acknowledged.clone();
    for index in 0..10 {
        let command = command("after", index);
        propose_to_leader(&group, &command);
        all.push(command);
    }
    assert_eq!(read_from_leader(&group), all);

    // The old leader restarts from its files and catches up (I6: same prefix, same order).
    group.restart(old_leader).unwrap();
    let restarted_creation = registry.created_count() - 1;
    wait_until("the restarted replica catches up", || {
        registry.commands(restarted_creation) == all
    });
    group.shutdown();
}

#[test]
fn a_crashed_follower_restarts_and_catches_up() {
    let dir = TempDir::new("catch-up");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(3), &registry);
    let leader = wait_for_leader(&group);
    let follower = (leader + 1) % 3;
    let mut all = Vec::new();
    for index in 0..10 {
        let command = command("up", index);
        propose_to_leader(&group, &command);
        all.push(command);
    }
    group.crash(follower);
    // A majority (leader + the other follower) keeps committing while it is down.
    for index in 0..40 {
        let command = command("down", index);
        propose_to_leader(&group, &command);
        all.push(command);
    }
    group.restart(follower).unwrap();
    let restarted_creation = registry.created_count() - 1;
    wait_until("the follower catches up", || {
        registry.commands(restarted_creation) == all
    });
    group.shutdown();
}

#[test]
fn crashes_under_concurrent_load_lose_no_acknowledged_command() {
    let dir = TempDir::new("load");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(3), &registry);
    let acknowledged = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        for worker in 0..4 {
            let (group, acknowledged, stop) = (&group, &acknowledged, &stop);
            scope.spawn(move || {
                let mut index = 0;
                while !stop.load(Ordering::Acquire) {
                    let command = command(&format!("w{worker}"), index);
                    propose_to_leader(group, &command);
                    acknowledged.lock().push(command);
                    index += 1;
                }
            });
        }
        for _round in 0..3 {
            let before = acknowledged.lock().len();
            wait_until("progress", || acknowledged.lock().len() >= before + 20);
            let leader = wait_for_leader(&group);
            group.crash(leader);
            wait_until("progress without the old leader", || {
                acknowledged.lock().len() >= before + 40
            });
            group.restart(leader).unwrap();
        }
        stop.store(true, Ordering::Release);
    });
    let log: HashSet<Bytes> = read_from_leader(&group).into_iter().collect();
    let acknowledged = acknowledged.into_inner();
    assert!(acknowledged.len() >= 120);
    let missing: Vec<_> = acknowledged.iter().filter(|c| !log.contains(*c)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    group.shutdown();
}

#[test]
fn five_replicas_survive_two_crashes_block_without_a_majority_and_resume() {
    let dir = TempDir::new("five");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(5), &registry);
    let mut all = Vec::new();
    let commit = |tag: &str, count: usize, all: &mut Vec<Bytes>| {
        for index in 0..count {
            let command = command(tag, index);
            propose_to_leader(&group, &command);
            all.push(command);
        }
    };
    commit("five", 5, &mut all);
    let leader = wait_for_leader(&group);
    let other = (leader + 1) % 5;
    group.crash(leader);
    group.crash(other);
    commit("three", 5, &mut all);
    assert_eq!(read_from_leader(&group), all);

    // A third crash leaves two of five: no majority, so nothing is acknowledged.
    let third = wait_for_leader(&group);
    group.crash(third);
    let survivors: Vec<usize> = (0..5).filter(|i| group.replica(*i).is_running()).collect();
    assert_eq!(survivors.len(), 2);
    for survivor in &survivors {
        let result = group
            .replica(*survivor)
            .propose(command("lost", 0), Duration::from_millis(500));
        assert!(
            result.is_err(),
            "acknowledged without a majority: {result:?}"
        );
    }
    // One replica back makes a majority of three again; everything acknowledged is there.
    group.restart(leader).unwrap();
    commit("back", 3, &mut all);
    let log: Vec<Bytes> = read_from_leader(&group)
        .into_iter()
        .filter(|c| c.as_ref() != b"lost-0")
        .collect();
    assert_eq!(log, all);
    group.shutdown();
}
