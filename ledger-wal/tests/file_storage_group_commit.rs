//! Goal: on real files, many threads appending with `append_and_wait` share group commits, every
//! acknowledged record survives a reopen in lsn order, and segments rotate at the configured size.

use std::sync::Arc;

use ledger_wal::{FileStorage, Storage, Wal, WalOptions};

fn temp_directory(test: &str) -> std::path::PathBuf {
    let directory = std::env::temp_dir().join(format!("ledger-wal-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    directory
}

#[test]
fn many_threads_share_fsyncs_and_every_record_survives_reopen() {
    let directory = temp_directory("group-commit");
    let options = WalOptions {
        segment_size_bytes_max: 16 * 1024,
        ..WalOptions::default()
    };
    let (wal, recovery) =
        Wal::open(FileStorage::open(&directory).unwrap(), options.clone()).unwrap();
    assert!(recovery.records.is_empty());
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..4u8)
        .map(|thread| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for index in 0..100u32 {
                    let mut payload = vec![thread; 100];
                    payload[..4].copy_from_slice(&index.to_le_bytes());
                    let lsn = wal.append_and_wait(thread, &payload).unwrap();
                    assert!(wal.durable_lsn() >= lsn);
                    acknowledged.push((lsn, payload));
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acknowledged.sort();
    assert_eq!(wal.durable_lsn(), 400);
    assert!(wal.segment_first_lsns().len() > 1, "segments rotated");
    drop(wal);

    let storage = FileStorage::open(&directory).unwrap();
    let (wal, recovery) = Wal::open(storage, options).unwrap();
    assert_eq!(recovery.torn_tail, None);
    let recovered: Vec<_> = recovery
        .records
        .into_iter()
        .map(|r| (r.lsn, r.payload))
        .collect();
    assert_eq!(recovered, acknowledged);
    assert_eq!(wal.next_lsn(), 401);
    let names = wal.storage().list().unwrap();
    assert!(names.iter().all(|name| name.starts_with("wal-")));
    std::fs::remove_dir_all(&directory).unwrap();
}

/// On real files: a segment cut in the middle of its last record (a torn write) is truncated
/// back to the last whole record, and appends continue after it.
#[test]
fn a_torn_tail_on_real_files_is_truncated_and_appends_continue() {
    let directory = temp_directory("torn-tail");
    let options = WalOptions::default();
    let (wal, _) = Wal::open(FileStorage::open(&directory).unwrap(), options.clone()).unwrap();
    for index in 0..10u8 {
        wal.append(index, &[index; 100]).unwrap();
    }
    assert_eq!(wal.sync().unwrap(), 10);
    drop(wal);
    let segment = directory.join("wal-00000000000000000001.seg");
    let size = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(size - 50).unwrap();
    drop(file);

    let (wal, recovery) =
        Wal::open(FileStorage::open(&directory).unwrap(), options.clone()).unwrap();
    assert_eq!(recovery.records.len(), 9);
    let torn = recovery.torn_tail.unwrap();
    assert_eq!(torn.discarded_bytes, 136 - 50);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        torn.offset_bytes
    );
    assert_eq!(wal.append_and_wait(42, b"after the tear").unwrap(), 10);
    drop(wal);

    let (_, recovery) = Wal::open(FileStorage::open(&directory).unwrap(), options).unwrap();
    let last = recovery.records.last().unwrap();
    assert_eq!(
        (last.lsn, last.kind, last.payload.as_slice()),
        (10, 42, &b"after the tear"[..])
    );
    std::fs::remove_dir_all(&directory).unwrap();
}
