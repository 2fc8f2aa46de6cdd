//! Goal: group commit costs one write and one fdatasync per `sync`, however many records are
//! buffered, and a segment rotation costs one more of each plus a create and a directory fsync
//! (the previous segment is sealed before the next one exists).

use ledger_wal::{FaultStorage, Wal, WalOptions};

#[test]
fn one_sync_is_one_write_and_one_fdatasync_for_every_buffered_record() {
    let storage = FaultStorage::new(1);
    let options = WalOptions {
        segment_size_bytes_max: 1 << 20,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(storage.clone(), options).unwrap();
    wal.append(1, b"first").unwrap();
    wal.sync().unwrap(); // creates the segment: create, sync_dir, header, records, fdatasync
    for round in 1..=5u64 {
        let (operations, syncs) = (storage.operation_count(), storage.sync_count());
        for _ in 0..(round * 100) {
            wal.append(1, &[round as u8; 128]).unwrap();
        }
        assert_eq!(storage.operation_count(), operations, "append does no I/O");
        wal.sync().unwrap();
        assert_eq!(
            storage.operation_count() - operations,
            2,
            "one write + one fdatasync"
        );
        assert_eq!(storage.sync_count() - syncs, 1);
    }
    let (operations, syncs) = (storage.operation_count(), storage.sync_count());
    assert_eq!(wal.sync().unwrap(), 1 + 1500, "nothing buffered: no I/O");
    assert_eq!(
        (storage.operation_count(), storage.sync_count()),
        (operations, syncs)
    );
}

#[test]
fn a_rotation_seals_the_old_segment_before_creating_the_new_one() {
    let storage = FaultStorage::new(2);
    let options = WalOptions {
        segment_size_bytes_max: 1000,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(storage.clone(), options).unwrap();
    for _ in 0..10 {
        wal.append(1, &[7; 100]).unwrap(); // 136 bytes each: 7 fit in a segment after its header
    }
    wal.sync().unwrap();
    assert_eq!(wal.segment_first_lsns(), vec![1, 8]);
    // Segment 1: create, sync_dir, header, records, fdatasync; segment 8: the same again.
    assert_eq!(storage.operation_count(), 10);
    assert_eq!(storage.sync_count(), 4);
}

#[test]
fn wal_meta_and_storages_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Wal<FaultStorage>>();
    assert_send_sync::<Wal<ledger_wal::FileStorage>>();
    assert_send_sync::<ledger_wal::MetaFile<FaultStorage>>();
    assert_send_sync::<ledger_wal::WalError>();
}
