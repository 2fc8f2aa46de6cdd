//! Recovery: from the files in a storage to the newest valid snapshot plus the records after
//! it, following the table in `docs/wal-format.md`.
//!
//! ```text
//!  list files ─► remove snapshot temp files
//!      │
//!      ├─► snapshots, newest first ─► first whose header + payload crc pass (damaged: removed)
//!      │
//!      └─► segments by first lsn ─► skip those wholly covered by the snapshot
//!              │
//!              ├─ non-last segment: header, every record (crc, lsn, chain), next segment
//!              │  starts where it ends — any damage is an error (it was sealed durably)
//!              └─ last segment: damage with a durable record after it is corruption; damage
//!                 with nothing durable after it is a torn write: truncate (or remove the
//!                 segment if its header is torn) and continue
//! ```
//!
//! Invariant I8: the result is a prefix holding every fsynced record and nothing torn;
//! corruption before the tail is reported, never skipped.

use crate::error::{Result, WalError};
use crate::record::{self, RECORD_ALIGNMENT, Record, SEGMENT_HEADER_SIZE};
use crate::snapshot;
use crate::wal::{Tail, WalOptions};
use crate::{Lsn, Storage};

/// What `Wal::open` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The newest valid snapshot, as `(lsn, bytes)`: the state after applying every record up
    /// to and including `lsn`.
    pub snapshot: Option<(Lsn, Vec<u8>)>,
    /// Every record after the snapshot (or from lsn 1), in lsn order without gaps.
    pub records: Vec<Record>,
    /// The torn write cut from the end of the log, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Damaged snapshot files that were skipped (and removed).
    pub discarded_snapshots: Vec<String>,
}

/// A torn write found at the end of the log and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment it was in.
    pub segment: String,
    /// Where the torn bytes started (0: the whole segment was removed).
    pub offset_bytes: u64,
    /// How many bytes were discarded.
    pub discarded_bytes: u64,
}

/// Everything the `Wal` needs to start writing after recovery.
pub(crate) struct Recovered {
    pub(crate) recovery: Recovery,
    pub(crate) tail: Tail,
    pub(crate) lsn_next: Lsn,
    pub(crate) snapshot_lsns: Vec<Lsn>,
}

/// How a scan of one segment's records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanEnd {
    /// Every byte is a valid record in its place.
    Clean,
    /// The bytes at `offset` are not the record expected there (lsn `lsn_next`).
    Damaged { offset: usize, durable_after: bool },
}

/// The running state of a scan across segments.
struct Cursor {
    lsn_next: Lsn,
    last_crc: u32,
    snapshot_lsn: Lsn,
    payload_size_max: u32,
}

/// Recovers the log in `storage`.
pub(crate) fn recover<S: Storage>(storage: &S, options: &WalOptions) -> Result<Recovered> {
    let names = storage.list()?;
    let mut segments = Vec::new();
    let mut snapshot_lsns = Vec::new();
    for name in &names {
        if snapshot::is_snapshot_temp_name(name) {
            storage.remove(name)?;
        } else if let Some(lsn) = record::parse_segment_name(name) {
            segments.push(lsn);
        } else if let Some(lsn) = snapshot::parse_snapshot_name(name) {
            snapshot_lsns.push(lsn);
        }
    }
    segments.sort_unstable();
    snapshot_lsns.sort_unstable();
    let (snapshot, discarded_snapshots) = recover_snapshot(storage, options, &mut snapshot_lsns)?;
    let snapshot_lsn = snapshot.as_ref().map_or(0, |(lsn, _)| *lsn);
    // Segments wholly covered by the snapshot are not read: they may be leftovers of a
    // compaction a crash interrupted (any subset of them), or kept on purpose so an older
    // snapshot stays usable. They stay on disk for `compact` to remove.
    let mut covered_count = 0;
    while covered_count + 1 < segments.len() && segments[covered_count + 1] <= snapshot_lsn + 1 {
        covered_count += 1;
    }
    // The last covered segment is scanned anyway: it gives the chain value and, should every
    // later segment turn out torn and be removed, the segment the writer continues in.
    let covered_count = covered_count.saturating_sub(1);
    let (covered, segments) = segments.split_at(covered_count);
    let log_first_lsn = segments.first().copied().unwrap_or(snapshot_lsn + 1);
    if log_first_lsn > snapshot_lsn + 1 {
        return Err(WalError::SnapshotGap {
            snapshot_lsn,
            log_first_lsn,
        });
    }
    let mut cursor = Cursor {
        lsn_next: log_first_lsn,
        last_crc: 0,
        snapshot_lsn,
        payload_size_max: options.payload_size_bytes_max,
    };
    let mut records = Vec::new();
    let (mut tail, torn_tail) =
        recover_segments(storage, options, segments, &mut cursor, &mut records)?;
    tail.segments.splice(0..0, covered.iter().copied());
    let lsn_next = cursor.lsn_next.max(snapshot_lsn + 1);
    assert!(
        records
            .iter()
            .zip(snapshot_lsn + 1..)
            .all(|(record, lsn)| record.lsn == lsn)
    );
    assert_eq!(
        records.last().map_or(lsn_next, |record| record.lsn + 1),
        lsn_next
    );
    let recovery = Recovery {
        snapshot,
        records,
        torn_tail,
        discarded_snapshots,
    };
    Ok(Recovered {
        recovery,
        tail,
        lsn_next,
        snapshot_lsns,
    })
}

/// A loaded snapshot: its lsn and bytes.
type Snapshot = (Lsn, Vec<u8>);

/// Picks the newest snapshot that passes its checks; removes damaged newer ones.
fn recover_snapshot<S: Storage>(
    storage: &S,
    options: &WalOptions,
    snapshot_lsns: &mut Vec<Lsn>,
) -> Result<(Option<Snapshot>, Vec<String>)> {
    let mut discarded = Vec::new();
    while let Some(&lsn) = snapshot_lsns.last() {
        let name = snapshot::snapshot_name(lsn);
        if let Some(bytes) =
            snapshot::read_snapshot(storage, &name, lsn, options.snapshot_size_bytes_max)?
        {
            return Ok((Some((lsn, bytes)), discarded));
        }
        storage.remove(&name)?;
        discarded.push(name);
        snapshot_lsns.pop();
    }
    Ok((None, discarded))
}

/// Scans every segment, returning the writer's tail state and the torn tail removed, if any.
fn recover_segments<S: Storage>(
    storage: &S,
    options: &WalOptions,
    segments: &[Lsn],
    cursor: &mut Cursor,
    records: &mut Vec<Record>,
) -> Result<(Tail, Option<TornTail>)> {
    let size_limit = options.segment_size_bytes_max
        + record::record_size(options.payload_size_bytes_max as usize) as u64
        + SEGMENT_HEADER_SIZE as u64;
    let mut tail = Tail {
        segments: Vec::new(),
        segment_size: 0,
        last_crc: 0,
        spare: Vec::new(),
    };
    let mut torn_tail = None;
    for (index, &first_lsn) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let name = record::segment_name(first_lsn);
        let bytes = recover_read_segment(storage, &name, size_limit)?;
        let header = record::decode_segment_header(&bytes);
        let header = header.and_then(|(header_lsn, previous_crc)| {
            if header_lsn == first_lsn {
                Ok(previous_crc)
            } else {
                Err("header names another lsn")
            }
        });
        let previous_crc = match header {
            Ok(previous_crc) => previous_crc,
            Err(reason) if !is_last => {
                return Err(WalError::BadSegment {
                    segment: name,
                    reason,
                });
            }
            Err(_) => {
                torn_tail = Some(recover_remove_torn_segment(
                    storage, &name, &bytes, first_lsn, cursor,
                )?);
                break;
            }
        };
        recover_check_segment_start(&name, first_lsn, previous_crc, index, cursor)?;
        let end = scan_segment(&bytes, cursor, records);
        tail.segments.push(first_lsn);
        tail.segment_size = bytes.len() as u64;
        if let ScanEnd::Damaged {
            offset,
            durable_after,
        } = end
        {
            if !is_last || durable_after {
                return Err(corrupt(name, offset as u64, cursor.lsn_next));
            }
            storage.truncate(&name, offset as u64)?;
            storage.sync(&name)?;
            tail.segment_size = offset as u64;
            let discarded_bytes = (bytes.len() - offset) as u64;
            torn_tail = Some(TornTail {
                segment: name,
                offset_bytes: offset as u64,
                discarded_bytes,
            });
        }
    }
    tail.last_crc = cursor.last_crc;
    Ok((tail, torn_tail))
}

/// Removes a last segment whose header did not survive: it is torn unless a durable record
/// follows (then the header was damaged after it was fsynced, which is corruption).
fn recover_remove_torn_segment<S: Storage>(
    storage: &S,
    name: &str,
    bytes: &[u8],
    first_lsn: Lsn,
    cursor: &Cursor,
) -> Result<TornTail> {
    if find_durable_after(
        bytes,
        SEGMENT_HEADER_SIZE,
        first_lsn,
        cursor.payload_size_max,
    ) {
        return Err(corrupt(name.to_string(), 0, first_lsn));
    }
    storage.remove(name)?;
    storage.sync_dir()?;
    let discarded_bytes = bytes.len() as u64;
    Ok(TornTail {
        segment: name.to_string(),
        offset_bytes: 0,
        discarded_bytes,
    })
}

/// Checks that a segment starts where the previous one ended, chain included.
fn recover_check_segment_start(
    name: &str,
    first_lsn: Lsn,
    previous_crc: u32,
    index: usize,
    cursor: &mut Cursor,
) -> Result<()> {
    if index == 0 {
        // The first live segment starts the chain (its predecessor may be compacted away).
        cursor.last_crc = previous_crc;
        return Ok(());
    }
    if first_lsn != cursor.lsn_next {
        return Err(WalError::MissingSegment {
            segment: name.to_string(),
            expected_lsn: cursor.lsn_next,
            found_lsn: first_lsn,
        });
    }
    if previous_crc != cursor.last_crc {
        return Err(corrupt(name.to_string(), 0, first_lsn));
    }
    Ok(())
}

fn corrupt(segment: String, offset_bytes: u64, lsn: Lsn) -> WalError {
    WalError::Corrupt {
        segment,
        offset_bytes,
        lsn,
    }
}

/// Reads a whole segment, refusing sizes this log never writes.
fn recover_read_segment<S: Storage>(storage: &S, name: &str, size_limit: u64) -> Result<Vec<u8>> {
    let size_bytes = storage.len(name)?;
    if size_bytes > size_limit {
        let file = name.to_string();
        return Err(WalError::FileTooLarge {
            file,
            size_bytes,
            limit_bytes: size_limit,
        });
    }
    let mut bytes = vec![0u8; size_bytes as usize];
    storage.read_at(name, 0, &mut bytes)?;
    Ok(bytes)
}

/// Scans the records of one segment (header already checked), appending those after the
/// snapshot to `records` and advancing `cursor`.
fn scan_segment(bytes: &[u8], cursor: &mut Cursor, records: &mut Vec<Record>) -> ScanEnd {
    let mut offset = SEGMENT_HEADER_SIZE;
    while offset < bytes.len() {
        let view = record::decode_record(bytes, offset, cursor.payload_size_max);
        let in_place =
            view.filter(|view| view.lsn == cursor.lsn_next && view.previous_crc == cursor.last_crc);
        let Some(view) = in_place else {
            let durable_after = find_durable_after(
                bytes,
                offset + RECORD_ALIGNMENT,
                cursor.lsn_next,
                cursor.payload_size_max,
            );
            return ScanEnd::Damaged {
                offset,
                durable_after,
            };
        };
        if view.lsn > cursor.snapshot_lsn {
            let payload = record::record_payload(bytes, offset, &view).to_vec();
            records.push(Record {
                lsn: view.lsn,
                kind: view.kind,
                payload,
            });
        }
        cursor.lsn_next += 1;
        cursor.last_crc = view.crc;
        offset += view.record_size;
    }
    ScanEnd::Clean
}

/// True if a valid record at or after `from` (at record alignment) says that lsn `lsn` was
/// already durable when it was written — then damage at `lsn` is corruption of durable data,
/// not a torn write.
fn find_durable_after(bytes: &[u8], from: usize, lsn: Lsn, payload_size_max: u32) -> bool {
    // A record after the damage has an lsn above it, but not by more than the records that fit
    // in the segment; its synced lsn is below its own lsn. Checking these before the crc keeps
    // the scan linear on hostile bytes (a crc per 8-byte offset would be quadratic).
    let lsn_max = lsn.saturating_add((bytes.len() / record::RECORD_HEADER_SIZE) as u64);
    let plausible = |(record_lsn, synced_lsn): (Lsn, Lsn)| {
        (lsn..=lsn_max).contains(&record_lsn) && (lsn..record_lsn).contains(&synced_lsn)
    };
    let mut offset = from.next_multiple_of(RECORD_ALIGNMENT);
    while offset < bytes.len() {
        if !record::peek_record_lsns(bytes, offset).is_some_and(plausible) {
            offset += RECORD_ALIGNMENT;
            continue;
        }
        if let Some(view) = record::decode_record(bytes, offset, payload_size_max) {
            if view.lsn >= lsn && view.synced_lsn >= lsn {
                return true;
            }
        }
        offset += RECORD_ALIGNMENT;
    }
    false
}
