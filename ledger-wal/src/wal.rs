//! `Wal`: appends, group commit, snapshots and compaction over a `Storage`.
//!
//! ```text
//!  append ─┐ (buffer lock: memcpy, assign lsn)          sync / append_and_wait
//!  append ─┼──► Buffer ──take all──► writer (one at a time; no buffer lock held during I/O)
//!  append ─┘                          seal crc chain ─► write ─► fdatasync ─► durable_lsn ─► wake
//! ```
//!
//! Locks: `buffer` is held only to copy a record in or to take the whole buffer out; `tail`
//! belongs to the active writer (and `compact`) and is held across I/O, which never blocks an
//! appender; `progress` holds the durable lsn, the writer token and the poison flag, and is
//! paired with a condvar so waiting appenders learn "durable up to lsn".

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::error::{Result, WalError};
use crate::record::{self, SEGMENT_HEADER_SIZE};
use crate::recovery::{self, Recovery};
use crate::snapshot;
use crate::{Lsn, Storage};

/// When the log makes written data durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// fdatasync after every group write: `durable_lsn` means on disk (the only safe choice).
    EveryWrite,
    /// Never fsync the log: `durable_lsn` means handed to the OS. For benchmarks of the CPU path
    /// and tests that never crash; it breaks I2 on power loss.
    NeverUnsafe,
}

/// Configuration of a `Wal`.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// A segment is sealed and a new one started before it would grow past this size (a single
    /// record larger than it gets a segment of its own).
    pub segment_size_bytes_max: u64,
    /// The largest payload `append` accepts; recovery rejects larger size fields.
    pub payload_size_bytes_max: u32,
    /// `append` fails with `BufferFull` when this many bytes wait for a sync.
    pub buffer_size_bytes_max: u64,
    /// The largest snapshot loaded at recovery.
    pub snapshot_size_bytes_max: u64,
    /// When to fsync.
    pub sync: SyncPolicy,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size_bytes_max: 64 * 1024 * 1024,
            payload_size_bytes_max: 16 * 1024 * 1024,
            buffer_size_bytes_max: 256 * 1024 * 1024,
            snapshot_size_bytes_max: 16 * 1024 * 1024 * 1024,
            sync: SyncPolicy::EveryWrite,
        }
    }
}

#[derive(Debug)]
struct Buffer {
    /// Record skeletons for lsns `first_lsn..lsn_next`, back to back.
    bytes: Vec<u8>,
    first_lsn: Lsn,
    lsn_next: Lsn,
}

/// The writer's view of the files. Held only by the active writer or `compact`.
#[derive(Debug)]
pub(crate) struct Tail {
    /// First lsns of the live segments, ascending; the last one is written to.
    pub(crate) segments: Vec<Lsn>,
    /// Length of the last segment in bytes (0: created, header not yet written).
    pub(crate) segment_size: u64,
    /// crc of the last record written (the next record's chain value).
    pub(crate) last_crc: u32,
    /// A spare buffer swapped with `Buffer::bytes`, so steady state allocates nothing.
    pub(crate) spare: Vec<u8>,
}

#[derive(Debug)]
struct Progress {
    durable_lsn: Lsn,
    writer_active: bool,
    poisoned: bool,
}

/// A segmented write-ahead log with group commit. `Send + Sync`: share it with `Arc`.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), ledger_wal::WalError> {
/// use ledger_wal::{FaultStorage, Wal, WalOptions};
/// let storage = FaultStorage::new(42);
/// let (wal, recovery) = Wal::open(storage.clone(), WalOptions::default())?;
/// assert!(recovery.records.is_empty());
/// let first = wal.append(1, b"accept slot 1")?;
/// let second = wal.append(1, b"accept slot 2")?;
/// assert_eq!(wal.sync()?, second); // one write + one fdatasync for both
/// wal.append(1, b"never synced")?;
/// storage.crash();
/// let (_wal, recovery) = Wal::open(storage, WalOptions::default())?;
/// let lsns: Vec<u64> = recovery.records.iter().map(|record| record.lsn).collect();
/// assert_eq!(lsns, vec![first, second]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Wal<S: Storage> {
    storage: S,
    options: WalOptions,
    buffer: Mutex<Buffer>,
    tail: Mutex<Tail>,
    progress: Mutex<Progress>,
    progress_changed: Condvar,
    poisoned: AtomicBool,
    /// Lsns of the snapshots on disk, ascending. The lock serializes snapshot writers.
    snapshots: Mutex<Vec<Lsn>>,
}

/// How many snapshots are kept: the newest, and one to fall back to if it is damaged.
const SNAPSHOTS_KEPT: usize = 2;

impl<S: Storage> Wal<S> {
    /// Opens the log in `storage`, recovering it (see `docs/wal-format.md`): the newest valid
    /// snapshot and every record after it; a torn tail is truncated.
    ///
    /// # Errors
    /// `Corrupt`, `BadSegment`, `MissingSegment`, `SnapshotGap`, `FileTooLarge` for damaged
    /// files; storage errors.
    ///
    /// # Panics
    /// If `options.segment_size_bytes_max` is not larger than a segment header (32 bytes).
    pub fn open(storage: S, options: WalOptions) -> Result<(Self, Recovery)> {
        assert!(options.segment_size_bytes_max > SEGMENT_HEADER_SIZE as u64);
        let recovered = recovery::recover(&storage, &options)?;
        let lsn_next = recovered.lsn_next;
        let wal = Wal {
            storage,
            options,
            buffer: Mutex::new(Buffer {
                bytes: Vec::new(),
                first_lsn: lsn_next,
                lsn_next,
            }),
            tail: Mutex::new(recovered.tail),
            progress: Mutex::new(Progress {
                durable_lsn: lsn_next - 1,
                writer_active: false,
                poisoned: false,
            }),
            progress_changed: Condvar::new(),
            poisoned: AtomicBool::new(false),
            snapshots: Mutex::new(recovered.snapshot_lsns),
        };
        Ok((wal, recovered.recovery))
    }

    /// Buffers one record and returns its lsn. Nothing is written: the record becomes durable
    /// with the next `sync` (or `append_and_wait`) that covers it.
    ///
    /// # Errors
    /// `Poisoned`; `PayloadTooLarge`; `BufferFull` if too much waits for a sync.
    pub fn append(&self, kind: u8, payload: &[u8]) -> Result<Lsn> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        if payload.len() as u64 > u64::from(self.options.payload_size_bytes_max) {
            let limit_bytes = u64::from(self.options.payload_size_bytes_max);
            return Err(WalError::PayloadTooLarge {
                size_bytes: payload.len() as u64,
                limit_bytes,
            });
        }
        let mut buffer = self.buffer.lock();
        let size_bytes = buffer.bytes.len() as u64;
        if size_bytes + record::record_size(payload.len()) as u64
            > self.options.buffer_size_bytes_max
        {
            return Err(WalError::BufferFull { size_bytes });
        }
        let lsn = buffer.lsn_next;
        record::push_record(&mut buffer.bytes, kind, lsn, payload);
        buffer.lsn_next = lsn + 1;
        Ok(lsn)
    }

    /// Makes every record appended so far durable with one write and one fdatasync (per segment
    /// touched), and returns the durable lsn. If another thread's group commit is in flight it
    /// waits for it and then, if needed, commits the rest itself.
    ///
    /// # Errors
    /// `Poisoned` (now or earlier: a failed fsync is never retried); `DiskFull` (the records stay
    /// buffered, nothing durable is lost); storage errors (which poison).
    pub fn sync(&self) -> Result<Lsn> {
        let target = self.buffer.lock().lsn_next - 1;
        self.wait_durable(target)
    }

    /// Appends one record and returns once it is durable. Many threads calling this share one
    /// write and one fdatasync: the first to find no writer active becomes the writer and
    /// commits everything queued; the others wait for "durable up to lsn".
    ///
    /// # Errors
    /// As `append` and `sync`.
    pub fn append_and_wait(&self, kind: u8, payload: &[u8]) -> Result<Lsn> {
        let lsn = match self.append(kind, payload) {
            Err(WalError::BufferFull { .. }) => {
                self.sync()?;
                self.append(kind, payload)?
            }
            other => other?,
        };
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// The highest lsn known durable (0 before the first record).
    pub fn durable_lsn(&self) -> Lsn {
        self.progress.lock().durable_lsn
    }

    /// The lsn the next `append` will return.
    pub fn next_lsn(&self) -> Lsn {
        self.buffer.lock().lsn_next
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        self.progress.lock().poisoned = true;
        self.progress_changed.notify_all();
    }

    fn wait_durable(&self, target: Lsn) -> Result<Lsn> {
        loop {
            let mut progress = self.progress.lock();
            loop {
                if progress.poisoned {
                    return Err(WalError::Poisoned);
                }
                if progress.durable_lsn >= target {
                    return Ok(progress.durable_lsn);
                }
                if !progress.writer_active {
                    break;
                }
                self.progress_changed.wait(&mut progress);
            }
            progress.writer_active = true;
            drop(progress);
            let result = self.write_round();
            let mut progress = self.progress.lock();
            progress.writer_active = false;
            // The round took every record appended before this call, so on success the
            // target is durable.
            assert!(result.is_err() || progress.durable_lsn >= target);
            drop(progress);
            self.progress_changed.notify_all();
            result?;
        }
    }

    /// Publishes a new durable lsn and wakes the waiters.
    fn publish_durable(&self, durable_lsn: Lsn) {
        let mut progress = self.progress.lock();
        assert!(
            durable_lsn >= progress.durable_lsn,
            "durable lsn only moves forward"
        );
        progress.durable_lsn = durable_lsn;
        drop(progress);
        self.progress_changed.notify_all();
    }

    /// One group commit: takes the whole buffer and writes it, one chunk per segment touched.
    /// Runs only while this thread holds the writer token.
    fn write_round(&self) -> Result<()> {
        let mut tail = self.tail.lock();
        let mut batch = std::mem::take(&mut tail.spare);
        batch.clear();
        {
            let mut buffer = self.buffer.lock();
            std::mem::swap(&mut buffer.bytes, &mut batch);
            buffer.first_lsn = buffer.lsn_next;
        }
        let mut written = 0;
        let mut result = Ok(());
        while written < batch.len() {
            match self.write_round_chunk(&mut tail, &mut batch[written..]) {
                Ok(chunk_size) => written += chunk_size,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        if written < batch.len() {
            self.write_round_requeue(&batch[written..]);
        }
        assert!(written == batch.len() || result.is_err());
        tail.spare = batch;
        result
    }

    /// Puts records that could not be written back at the front of the buffer.
    fn write_round_requeue(&self, rest: &[u8]) {
        let mut buffer = self.buffer.lock();
        let mut bytes = Vec::with_capacity(rest.len() + buffer.bytes.len());
        bytes.extend_from_slice(rest);
        bytes.extend_from_slice(&buffer.bytes);
        buffer.bytes = bytes;
        buffer.first_lsn = record::buffered_record_lsn(rest);
    }

    /// Writes the records at the front of `records` that fit in the current segment (starting a
    /// new one if needed), fdatasyncs, publishes the new durable lsn and returns the bytes done.
    fn write_round_chunk(&self, tail: &mut Tail, records: &mut [u8]) -> Result<usize> {
        let first_lsn = record::buffered_record_lsn(records);
        let first_size = record::buffered_record_size(records) as u64;
        let segment_has_records = tail.segment_size > SEGMENT_HEADER_SIZE as u64;
        let full = tail.segment_size + first_size > self.options.segment_size_bytes_max;
        if tail.segments.is_empty() || (segment_has_records && full) {
            self.write_round_rotate(tail, first_lsn)?;
        }
        let segment = record::segment_name(*tail.segments.last().expect("a segment exists"));
        let header_size = if tail.segment_size == 0 {
            SEGMENT_HEADER_SIZE as u64
        } else {
            0
        };
        // Every record before this chunk is durable: the previous chunk was fsynced first.
        let synced_lsn = first_lsn - 1;
        let mut size = header_size + tail.segment_size;
        let mut chunk_end = 0;
        let mut last_crc = tail.last_crc;
        let mut last_lsn = first_lsn - 1;
        while chunk_end < records.len() {
            let record_size = record::buffered_record_size(&records[chunk_end..]);
            let has_records = size > SEGMENT_HEADER_SIZE as u64;
            if has_records && size + record_size as u64 > self.options.segment_size_bytes_max {
                break;
            }
            let sealed = &mut records[chunk_end..chunk_end + record_size];
            assert!(record_size >= record::RECORD_HEADER_SIZE);
            assert_eq!(
                record::buffered_record_lsn(sealed),
                last_lsn + 1,
                "lsns are consecutive"
            );
            last_lsn += 1;
            last_crc = record::seal_record(sealed, last_crc, synced_lsn);
            size += record_size as u64;
            chunk_end += record_size;
        }
        assert!(chunk_end > 0, "a chunk holds at least one record");
        let previous_size = tail.segment_size;
        let write = || -> std::io::Result<()> {
            if header_size > 0 {
                let header = record::encode_segment_header(first_lsn, tail.last_crc);
                self.storage.append(&segment, &header)?;
            }
            self.storage.append(&segment, &records[..chunk_end])
        };
        if let Err(error) = write() {
            return Err(self.write_round_undo(&segment, previous_size, error));
        }
        if self.options.sync == SyncPolicy::EveryWrite {
            if let Err(error) = self.storage.sync(&segment) {
                self.poison();
                return Err(WalError::Io(error));
            }
        }
        tail.segment_size = size;
        tail.last_crc = last_crc;
        self.publish_durable(last_lsn);
        Ok(chunk_end)
    }

    /// After a failed write: cut the segment back to `previous_size`. A full disk whose partial
    /// write was cut back cleanly is not fatal; anything else poisons the log.
    fn write_round_undo(
        &self,
        segment: &str,
        previous_size: u64,
        error: std::io::Error,
    ) -> WalError {
        let error = WalError::from_io(error);
        let undone = self.storage.truncate(segment, previous_size).is_ok();
        if undone && matches!(error, WalError::DiskFull) {
            return error;
        }
        self.poison();
        error
    }

    /// Starts the segment whose first record is `first_lsn`. The previous segment is already
    /// durable (each chunk is fsynced before the next), so a segment's successor exists on
    /// disk only once the segment is complete: recovery relies on this.
    fn write_round_rotate(&self, tail: &mut Tail, first_lsn: Lsn) -> Result<()> {
        let name = record::segment_name(first_lsn);
        if let Err(error) = self.storage.create(&name) {
            // Nothing was written; only a full disk leaves the log usable.
            let error = WalError::from_io(error);
            if !matches!(error, WalError::DiskFull) {
                self.poison();
            }
            return Err(error);
        }
        if let Err(error) = self.storage.sync_dir() {
            self.poison();
            return Err(WalError::Io(error));
        }
        tail.segments.push(first_lsn);
        tail.segment_size = 0;
        Ok(())
    }

    /// Writes a snapshot of the state machine covering every record up to `lsn` (temp file,
    /// fsync, rename, fsync directory), then keeps only the two newest snapshots.
    ///
    /// # Errors
    /// `SnapshotAhead` if `lsn` is not durable yet; `Poisoned`; `DiskFull`; storage errors
    /// (a failed fsync poisons the log).
    pub fn write_snapshot(&self, lsn: Lsn, bytes: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        let durable_lsn = self.durable_lsn();
        if lsn > durable_lsn {
            return Err(WalError::SnapshotAhead { lsn, durable_lsn });
        }
        let mut snapshots = self.snapshots.lock();
        match snapshot::write_snapshot(&self.storage, lsn, bytes) {
            Ok(()) => {}
            Err(WalError::DiskFull) => return Err(WalError::DiskFull),
            Err(error) => {
                self.poison();
                return Err(error);
            }
        }
        if !snapshots.contains(&lsn) {
            snapshots.push(lsn);
            snapshots.sort_unstable();
        }
        while snapshots.len() > SNAPSHOTS_KEPT {
            let oldest = snapshots.remove(0);
            self.storage.remove(&snapshot::snapshot_name(oldest))?;
        }
        Ok(())
    }

    /// The lsns of the snapshots on disk, ascending.
    pub fn snapshot_lsns(&self) -> Vec<Lsn> {
        self.snapshots.lock().clone()
    }

    /// Deletes the segments whose records all lie below `keep_from_lsn`. The segment being
    /// written is never deleted. Segments go oldest first, so a crash midway leaves a suffix.
    ///
    /// # Errors
    /// `CompactBeyondSnapshot` if a record below `keep_from_lsn` is not covered by the newest
    /// snapshot; `Poisoned`; storage errors (a failed directory fsync poisons).
    pub fn compact(&self, keep_from_lsn: Lsn) -> Result<()> {
        self.check_poisoned()?;
        let snapshot_lsn = self.snapshots.lock().last().copied().unwrap_or(0);
        if keep_from_lsn > snapshot_lsn + 1 {
            return Err(WalError::CompactBeyondSnapshot {
                keep_from_lsn,
                snapshot_lsn,
            });
        }
        let mut tail = self.tail.lock();
        let mut removed = 0;
        while tail.segments.len() > 1 && tail.segments[1] <= keep_from_lsn {
            let oldest = tail.segments.remove(0);
            removed += 1;
            self.storage.remove(&record::segment_name(oldest))?;
        }
        if removed > 0 {
            if let Err(error) = self.storage.sync_dir() {
                self.poison();
                return Err(WalError::Io(error));
            }
        }
        Ok(())
    }

    /// Checks the log's in-memory invariants (cheap; tests call it after every step).
    ///
    /// # Panics
    /// If an invariant does not hold: that is a bug in this crate.
    pub fn check_invariants(&self) {
        let tail = self.tail.lock();
        let buffer = self.buffer.lock();
        let progress = self.progress.lock();
        assert!(
            tail.segments.windows(2).all(|pair| pair[0] < pair[1]),
            "segments ascend"
        );
        assert!(buffer.first_lsn <= buffer.lsn_next);
        assert!(
            progress.durable_lsn < buffer.lsn_next,
            "nothing durable that was not appended"
        );
        if !progress.writer_active && !progress.poisoned {
            // With no write in flight, everything not buffered is durable (I8).
            assert_eq!(
                progress.durable_lsn + 1,
                buffer.first_lsn,
                "durable up to the buffer"
            );
            let mut offset = 0;
            for lsn in buffer.first_lsn..buffer.lsn_next {
                assert_eq!(record::buffered_record_lsn(&buffer.bytes[offset..]), lsn);
                offset += record::buffered_record_size(&buffer.bytes[offset..]);
            }
            assert_eq!(offset, buffer.bytes.len(), "the buffer holds whole records");
        }
        if let Some(&last) = tail.segments.last() {
            assert!(
                last <= buffer.first_lsn,
                "the last segment starts at or before the buffer"
            );
        }
        let snapshots = self.snapshots.lock();
        assert!(
            snapshots.windows(2).all(|pair| pair[0] < pair[1]),
            "snapshots ascend"
        );
        assert!(
            snapshots
                .last()
                .is_none_or(|&lsn| lsn <= progress.durable_lsn)
        );
    }

    /// The first lsns of the live segments, ascending (for tests and tools).
    pub fn segment_first_lsns(&self) -> Vec<Lsn> {
        self.tail.lock().segments.clone()
    }

    /// The storage this log writes to.
    pub fn storage(&self) -> &S {
        &self.storage
    }
}
