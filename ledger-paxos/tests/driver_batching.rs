//! Many threads propose at once through one leader: every proposal is acknowledged exactly
//! once, all replicas apply the same log, and the proposals share log entries (batching) — the
//! entry count is below the proposal count. With the default pipeline (32 slots) a request that
//! finds a free slot is proposed at once, so batching there depends on timing; with a pipeline of
//! one slot and 8 callers, requests must queue behind the slot in flight and share entries.

mod driver_support;

use std::collections::HashSet;
use std::thread;

use driver_support::{
    CALL_TIMEOUT, Registry, TempDir, command, open_group_with, wait_for_leader, wait_until,
};
use ledger_paxos::Config;

const THREAD_COUNT: usize = 8;
const PROPOSALS_PER_THREAD: usize = 100;

#[test]
fn proposals_from_many_threads_are_batched_into_shared_entries() {
    let dir = TempDir::new("batching");
    let registry = Registry::default();
    let mut config = Config::new(0, 3);
    config.pipeline_slots_max = 1;
    let group = open_group_with(dir.replica_dirs(3), config, &registry);
    let leader = wait_for_leader(&group);
    let handle = group.replica(leader).clone();
    let positions: Vec<u64> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREAD_COUNT)
            .map(|thread_index| {
                let handle = handle.clone();
                scope.spawn(move || {
                    (0..PROPOSALS_PER_THREAD)
                        .map(|index| {
                            let command = command(&format!("t{thread_index}"), index);
                            let reply = handle.propose(command, CALL_TIMEOUT).unwrap();
                            u64::from_le_bytes(reply.as_ref().try_into().unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let total = THREAD_COUNT * PROPOSALS_PER_THREAD;
    // Every acknowledgement names a distinct position in the log.
    let distinct: HashSet<u64> = positions.iter().copied().collect();
    assert_eq!(distinct.len(), total);
    assert!(positions.iter().all(|&position| position < total as u64));

    let leader_creation = leader; // No restarts: creation order is replica order.
    let applied = registry.commands(leader_creation);
    assert_eq!(applied.len(), total);
    let expected: HashSet<_> = (0..THREAD_COUNT)
        .flat_map(|t| (0..PROPOSALS_PER_THREAD).map(move |i| command(&format!("t{t}"), i)))
        .collect();
    assert_eq!(applied.iter().cloned().collect::<HashSet<_>>(), expected);
    for creation in 0..3 {
        wait_until("followers apply the same log", || {
            registry.commands(creation) == applied
        });
    }
    let slots = registry.slots(leader_creation);
    assert!(
        slots.len() < total * 3 / 4,
        "{total} proposals from {THREAD_COUNT} threads took {} entries: no batching",
        slots.len()
    );
    group.shutdown();
}
