//! Goal (I8, recovery table in docs/wal-format.md): damaged files — a bit flipped in any byte,
//! a 4 GiB length field, a zero-length or missing segment, a well-formed record in the wrong
//! place, an oversized file, a damaged snapshot — give a typed error or a truncated torn tail,
//! never a panic, never a damaged record returned, never an unbounded allocation.

use ledger_wal::{FaultStorage, Record, Storage, Wal, WalError, WalOptions};

const SEGMENT_HEADER_SIZE: u64 = 32;
const RECORD_HEADER_SIZE: u64 = 32;

fn options() -> WalOptions {
    WalOptions {
        segment_size_bytes_max: 1024,
        payload_size_bytes_max: 4096,
        ..WalOptions::default()
    }
}

fn payload(lsn: u64) -> Vec<u8> {
    vec![lsn as u8; (lsn * 13 % 70) as usize]
}

fn record_size(lsn: u64) -> u64 {
    (RECORD_HEADER_SIZE + payload(lsn).len() as u64).next_multiple_of(8)
}

fn segment_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.seg")
}

/// Writes lsns 1..=`count` in groups of `group` records (one sync each).
fn build_log(count: u64, group: u64) -> (FaultStorage, Vec<u64>) {
    let storage = FaultStorage::new(5);
    let (wal, _) = Wal::open(storage.clone(), options()).expect("open");
    for lsn in 1..=count {
        wal.append(1, &payload(lsn)).expect("append");
        if lsn % group == 0 || lsn == count {
            wal.sync().expect("sync");
        }
    }
    let segments = wal.segment_first_lsns();
    (storage, segments)
}

/// The offset of record `lsn` inside the segment that starts at `first_lsn`.
fn record_offset(first_lsn: u64, lsn: u64) -> u64 {
    SEGMENT_HEADER_SIZE + (first_lsn..lsn).map(record_size).sum::<u64>()
}

fn recover(storage: &FaultStorage) -> ledger_wal::Result<Vec<Record>> {
    Wal::open(storage.clone(), options()).map(|(_, recovery)| recovery.records)
}

fn assert_intact_prefix(records: &[Record]) {
    for (record, lsn) in records.iter().zip(1..) {
        assert_eq!((record.lsn, &record.payload), (lsn, &payload(lsn)));
    }
}

#[test]
fn a_bit_flipped_in_any_byte_of_any_segment_is_detected() {
    // 60 records in groups of 5: the last group commit (lsns 56..=60) is the only one whose
    // damage is indistinguishable from a torn write.
    let (storage, segments) = build_log(60, 5);
    assert!(segments.len() >= 4);
    let (mut corrupt_count, mut truncated_count) = (0, 0);
    for &first_lsn in &segments {
        let name = segment_name(first_lsn);
        let size = storage.len(&name).unwrap();
        for byte in 0..size {
            let damaged = storage.fork();
            assert!(damaged.flip_bit(&name, byte, (byte % 8) as u8));
            match recover(&damaged) {
                Ok(records) => {
                    assert_intact_prefix(&records);
                    assert!(
                        records.len() < 60,
                        "{name} byte {byte}: damage went unnoticed"
                    );
                    assert!(
                        records.len() >= 55,
                        "{name} byte {byte}: durable data dropped"
                    );
                    truncated_count += 1;
                }
                Err(WalError::Corrupt {
                    segment,
                    offset_bytes,
                    ..
                }) => {
                    assert_eq!(segment, name);
                    assert!(
                        offset_bytes <= byte,
                        "{name} byte {byte}: reported {offset_bytes}"
                    );
                    corrupt_count += 1;
                }
                Err(WalError::BadSegment { segment, .. }) => {
                    assert_eq!(segment, name);
                    assert!(byte < SEGMENT_HEADER_SIZE);
                    corrupt_count += 1;
                }
                Err(error) => panic!("{name} byte {byte}: unexpected {error}"),
            }
        }
    }
    // Only bytes of the last group commit (and of its segment's header, if that segment holds
    // nothing else) may be taken for a torn write; every other byte is reported as corruption.
    let last_segment = *segments.last().unwrap();
    let header = if last_segment >= 56 {
        SEGMENT_HEADER_SIZE
    } else {
        0
    };
    let last_commit_bytes = header + (56..=60).map(record_size).sum::<u64>();
    assert!(
        truncated_count <= last_commit_bytes,
        "{truncated_count} > {last_commit_bytes}"
    );
    assert!(corrupt_count > 3000, "{corrupt_count}");
}

#[test]
fn a_four_gib_length_field_is_corruption_in_the_middle_and_torn_at_the_tail() {
    let (storage, segments) = build_log(60, 5);
    // In the middle of the first segment: durable records follow.
    let damaged = storage.fork();
    let offset = record_offset(segments[0], 3);
    damaged.overwrite(&segment_name(segments[0]), offset, &u32::MAX.to_le_bytes());
    match recover(&damaged) {
        Err(WalError::Corrupt {
            offset_bytes, lsn, ..
        }) => {
            assert_eq!((offset_bytes, lsn), (offset, 3));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The very last record: nothing durable follows, so it is a torn write.
    let damaged = storage.fork();
    let last = *segments.last().unwrap();
    damaged.overwrite(
        &segment_name(last),
        record_offset(last, 60),
        &u32::MAX.to_le_bytes(),
    );
    let records = recover(&damaged).unwrap();
    assert_eq!(records.len(), 59);
    assert_intact_prefix(&records);
}

#[test]
fn zero_length_missing_and_renamed_segments_are_typed_errors() {
    let (storage, segments) = build_log(60, 5);
    let middle = segment_name(segments[1]);

    let damaged = storage.fork();
    damaged.create(&middle).unwrap();
    assert!(
        matches!(recover(&damaged), Err(WalError::BadSegment { segment, .. }) if segment == middle)
    );

    let damaged = storage.fork();
    damaged.remove(&middle).unwrap();
    match recover(&damaged) {
        Err(WalError::MissingSegment {
            expected_lsn,
            found_lsn,
            ..
        }) => {
            assert_eq!((expected_lsn, found_lsn), (segments[1], segments[2]));
        }
        other => panic!("expected MissingSegment, got {other:?}"),
    }

    let damaged = storage.fork();
    damaged
        .rename(&middle, &segment_name(segments[1] + 1))
        .unwrap();
    assert!(
        recover(&damaged).is_err(),
        "a renamed segment names another lsn in its header"
    );

    // A zero-length *last* segment is a crash right after its creation: removed.
    let damaged = storage.fork();
    let next = segment_name(61);
    damaged.create(&next).unwrap();
    let (wal, recovery) = Wal::open(damaged.clone(), options()).unwrap();
    assert_eq!(recovery.records.len(), 60);
    assert_eq!(recovery.torn_tail.unwrap().segment, next);
    assert_eq!(wal.next_lsn(), 61);
}

#[test]
fn a_well_formed_record_in_the_wrong_place_is_rejected() {
    let (storage, segments) = build_log(60, 5);
    let name = segment_name(segments[0]);
    // Copy record 2 (valid crc) over record 4's place: lsn and chain do not match there.
    let (from, to) = (record_offset(segments[0], 2), record_offset(segments[0], 4));
    let mut bytes = vec![0u8; record_size(2) as usize];
    storage.read_at(&name, from, &mut bytes).unwrap();
    let damaged = storage.fork();
    damaged.overwrite(&name, to, &bytes);
    assert!(matches!(
        recover(&damaged),
        Err(WalError::Corrupt { lsn: 4, .. })
    ));
}

#[test]
fn an_oversized_segment_file_is_refused_unread() {
    let (storage, segments) = build_log(10, 5);
    let damaged = storage.fork();
    let name = segment_name(segments[0]);
    damaged.overwrite(&name, 64 * 1024, b"x");
    assert!(matches!(recover(&damaged), Err(WalError::FileTooLarge { file, .. }) if file == name));
}

#[test]
fn garbage_files_never_panic() {
    let mut state = 0x1234_5678_u64;
    for size in [0usize, 1, 8, 31, 32, 33, 40, 64, 100, 1000, 3000] {
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            for name in [
                segment_name(1),
                "snap-00000000000000000003.snap".to_string(),
            ] {
                let storage = FaultStorage::new(1);
                storage.create(&name).unwrap();
                storage.overwrite(&name, 0, &bytes);
                // Any outcome but a panic is acceptable for random bytes; a segment of random
                // bytes with no valid record is a torn first segment.
                let _ = recover(&storage);
            }
        }
    }
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_previous_one() {
    let storage = FaultStorage::new(8);
    let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
    for lsn in 1..=40 {
        wal.append(1, &payload(lsn)).unwrap();
        if lsn % 4 == 0 {
            wal.sync().unwrap();
        }
        if lsn == 20 || lsn == 32 {
            wal.write_snapshot(lsn, format!("state {lsn}").as_bytes())
                .unwrap();
        }
    }
    // Compacting to the previous snapshot keeps the fallback usable.
    wal.compact(21).unwrap();
    assert!(matches!(
        wal.compact(34),
        Err(WalError::CompactBeyondSnapshot { .. })
    ));
    assert_eq!(wal.snapshot_lsns(), vec![20, 32]);
    drop(wal);

    let (_, recovery) = Wal::open(storage.fork(), options()).unwrap();
    assert_eq!(recovery.snapshot, Some((32, b"state 32".to_vec())));
    assert_eq!(recovery.records.first().map(|r| r.lsn), Some(33));

    storage.flip_bit("snap-00000000000000000032.snap", 45, 1);
    let (_, recovery) = Wal::open(storage.clone(), options()).unwrap();
    assert_eq!(recovery.snapshot, Some((20, b"state 20".to_vec())));
    assert_eq!(
        recovery.discarded_snapshots,
        vec!["snap-00000000000000000032.snap".to_string()]
    );
    let lsns: Vec<u64> = recovery.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (21..=40).collect::<Vec<_>>());

    // With no usable snapshot left, a compacted log cannot be replayed from lsn 1.
    storage.flip_bit("snap-00000000000000000020.snap", 3, 1);
    assert!(matches!(
        recover(&storage),
        Err(WalError::SnapshotGap {
            snapshot_lsn: 0,
            ..
        })
    ));
}
