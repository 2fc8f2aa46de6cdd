//! The whole group stops — gracefully or by crashing every replica at once — and reopens from
//! its directories: everything acknowledged is recovered, in the same order (I2, I8), and the
//! reopened group keeps committing.

mod driver_support;

use bytes::Bytes;
use driver_support::{Registry, TempDir, command, open_group, propose_to_leader, read_from_leader};

fn commit_some(group: &ledger_paxos::driver::Group, tag: &str, count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|index| {
            let command = command(tag, index);
            propose_to_leader(group, &command);
            command
        })
        .collect()
}

#[test]
fn whole_group_shutdown_and_reopen_recovers_everything_acknowledged() {
    let dir = TempDir::new("reopen");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(3), &registry);
    let mut all = commit_some(&group, "first", 25);
    group.shutdown();
    drop(group);

    let group = open_group(dir.replica_dirs(3), &registry);
    assert_eq!(read_from_leader(&group), all);
    all.extend(commit_some(&group, "second", 5));
    assert_eq!(read_from_leader(&group), all);
}

#[test]
fn crashing_every_replica_at_once_loses_nothing_acknowledged() {
    let dir = TempDir::new("power-loss");
    let registry = Registry::default();
    let group = open_group(dir.replica_dirs(3), &registry);
    let mut all = commit_some(&group, "first", 25);
    for index in 0..3 {
        group.crash(index);
    }
    for index in 0..3 {
        group.restart(index).unwrap();
    }
    assert_eq!(read_from_leader(&group), all);
    all.extend(commit_some(&group, "second", 5));
    group.shutdown();
    drop(group);

    let group = open_group(dir.replica_dirs(3), &registry);
    assert_eq!(read_from_leader(&group), all);
}
