//! Goal: a failed fsync poisons the log for good (every later call is `Poisoned`, the fsync is
//! never retried, waiting threads are released), and a full disk gives `DiskFull` without
//! losing anything already durable and without poisoning, so a later sync succeeds.

use std::sync::Arc;

use ledger_wal::{FaultStorage, PendingFate, Wal, WalError, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        segment_size_bytes_max: 4096,
        ..WalOptions::default()
    }
}

fn recovered_lsns(storage: FaultStorage) -> Vec<u64> {
    let (_, recovery) = Wal::open(storage, options()).expect("recovery");
    recovery.records.iter().map(|record| record.lsn).collect()
}

#[test]
fn a_failed_fsync_poisons_every_later_call() {
    let storage = FaultStorage::new(1);
    let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
    for _ in 0..3 {
        wal.append(1, b"durable").unwrap();
    }
    assert_eq!(wal.sync().unwrap(), 3);
    wal.append(1, b"written, fsync fails").unwrap();
    storage.fail_next_sync();
    let syncs_before = storage.sync_count();
    assert!(matches!(wal.sync(), Err(WalError::Io(_))));
    assert_eq!(wal.durable_lsn(), 3);
    assert!(matches!(wal.append(1, b"x"), Err(WalError::Poisoned)));
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    assert!(matches!(
        wal.append_and_wait(1, b"x"),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(
        wal.write_snapshot(3, b"state"),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(wal.compact(1), Err(WalError::Poisoned)));
    assert_eq!(
        storage.sync_count(),
        syncs_before,
        "the failed fsync was never retried"
    );
    storage.crash();
    assert_eq!(recovered_lsns(storage), vec![1, 2, 3]);
}

#[test]
fn a_failed_directory_fsync_at_rotation_poisons() {
    let storage = FaultStorage::new(2);
    let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
    wal.append(1, b"first").unwrap();
    storage.fail_next_sync(); // the directory fsync after creating the first segment
    assert!(matches!(wal.sync(), Err(WalError::Io(_))));
    assert!(matches!(wal.append(1, b"x"), Err(WalError::Poisoned)));
    storage.crash();
    assert!(recovered_lsns(storage).is_empty());
}

#[test]
fn threads_waiting_on_a_failed_group_commit_are_all_released() {
    let storage = FaultStorage::new(3);
    let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
    wal.append_and_wait(1, b"durable").unwrap();
    storage.fail_next_sync();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| wal.append_and_wait(2, &[7; 64]).is_ok())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<bool> = threads
        .into_iter()
        .flat_map(|thread| thread.join().unwrap())
        .collect();
    let first_failure = results.iter().position(|ok| !ok);
    assert!(
        first_failure.is_some(),
        "the injected fsync failure was seen"
    );
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    let durable = wal.durable_lsn();
    drop(wal);
    storage.crash();
    let lsns = recovered_lsns(storage);
    assert!(lsns.len() as u64 >= durable);
    assert_eq!(lsns, (1..=lsns.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_full_disk_is_a_typed_error_that_loses_nothing_durable() {
    let storage = FaultStorage::new(4);
    let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
    for _ in 0..10 {
        wal.append(1, &[1; 100]).unwrap();
    }
    assert_eq!(wal.sync().unwrap(), 10);
    let used_bytes = storage
        .contents("wal-00000000000000000001.seg")
        .unwrap()
        .len() as u64;
    storage.set_disk_limit(Some(used_bytes + 300));
    for _ in 0..10 {
        wal.append(1, &[2; 100]).unwrap();
    }
    assert!(matches!(wal.sync(), Err(WalError::DiskFull)));
    assert_eq!(wal.durable_lsn(), 10);
    assert_eq!(
        storage
            .contents("wal-00000000000000000001.seg")
            .unwrap()
            .len() as u64,
        used_bytes
    );

    // A crash now, whatever reaches the disk of the cut-back write, keeps exactly lsns 1..=10.
    for fate in [
        PendingFate::Lost,
        PendingFate::Persisted,
        PendingFate::Torn { keep_bytes: 150 },
    ] {
        let crashed = storage.fork();
        crashed.crash_with(|_| fate);
        assert_eq!(
            recovered_lsns(crashed),
            (1..=10).collect::<Vec<_>>(),
            "{fate:?}"
        );
    }

    // Not poisoned: the records stay buffered and go out once there is room.
    wal.append(1, &[3; 100]).unwrap();
    storage.set_disk_limit(None);
    assert_eq!(wal.sync().unwrap(), 21);
    drop(wal);
    storage.crash();
    assert_eq!(recovered_lsns(storage), (1..=21).collect::<Vec<_>>());
}

#[test]
fn a_full_disk_during_a_snapshot_is_not_fatal() {
    let storage = FaultStorage::new(5);
    let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
    wal.append_and_wait(1, b"one").unwrap();
    storage.set_disk_limit(Some(200));
    assert!(matches!(
        wal.write_snapshot(1, &[9; 1000]),
        Err(WalError::DiskFull)
    ));
    storage.set_disk_limit(None);
    wal.write_snapshot(1, &[9; 1000]).unwrap();
    assert_eq!(wal.append_and_wait(1, b"two").unwrap(), 2);
}

#[test]
fn oversized_payloads_and_a_full_buffer_are_refused() {
    let storage = FaultStorage::new(6);
    let options = WalOptions {
        payload_size_bytes_max: 100,
        buffer_size_bytes_max: 1000,
        ..options()
    };
    let (wal, _) = Wal::open(storage, options).unwrap();
    assert!(matches!(
        wal.append(1, &[0; 101]),
        Err(WalError::PayloadTooLarge { .. })
    ));
    let mut appended = 0;
    while wal.append(1, &[0; 100]).is_ok() {
        appended += 1;
    }
    assert_eq!(appended, 7); // 7 × 136 bytes fit in 1000
    assert!(matches!(
        wal.append(1, &[0; 100]),
        Err(WalError::BufferFull { .. })
    ));
    // append_and_wait makes room by committing what is buffered.
    assert_eq!(wal.append_and_wait(1, &[0; 100]).unwrap(), 8);
    assert!(matches!(
        wal.write_snapshot(9, b"s"),
        Err(WalError::SnapshotAhead { .. })
    ));
}

/// A full disk right after a new segment was created leaves it empty; if compaction then
/// removes every older segment and the machine crashes, recovery drops the empty segment and
/// the log continues from the snapshot with a fresh segment.
#[test]
fn a_full_disk_at_rotation_then_compaction_then_crash_recovers() {
    let storage = FaultStorage::new(7);
    let small = WalOptions {
        segment_size_bytes_max: 450,
        ..options()
    };
    let (wal, _) = Wal::open(storage.clone(), small.clone()).unwrap();
    for _ in 0..3 {
        wal.append(1, &[1; 100]).unwrap();
    }
    assert_eq!(wal.sync().unwrap(), 3);
    wal.write_snapshot(3, b"state 3").unwrap();
    wal.append(1, &[2; 100]).unwrap();
    storage.set_disk_limit(Some(0));
    assert!(matches!(wal.sync(), Err(WalError::DiskFull)));
    assert_eq!(
        wal.segment_first_lsns(),
        vec![1, 4],
        "the new segment exists, empty"
    );
    wal.compact(4).unwrap();
    assert_eq!(wal.segment_first_lsns(), vec![4]);
    drop(wal);
    storage.crash();
    storage.set_disk_limit(None);
    let (wal, recovery) = Wal::open(storage.clone(), small.clone()).unwrap();
    assert_eq!(recovery.snapshot, Some((3, b"state 3".to_vec())));
    assert!(recovery.records.is_empty());
    assert_eq!(wal.append_and_wait(1, b"four").unwrap(), 4);
    drop(wal);
    storage.crash();
    let (_, recovery) = Wal::open(storage, small).unwrap();
    assert_eq!(
        recovery.records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![4]
    );
}
