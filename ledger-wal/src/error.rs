//! The crate's one error type and its `Result` alias.

use crate::Lsn;

/// The result of every fallible ledger-wal operation.
pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// Everything that can go wrong in ledger-wal.
///
/// Damaged files are reported with the file name and byte offset so an operator (or, later, a
/// repair from a peer) can act on them; they never cause a panic. See `docs/wal-format.md` for
/// the recovery table that decides which error a given state of the files produces.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O error from the storage, other than a full disk.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The disk is full. Nothing already durable was lost; the records that did not fit stay
    /// buffered and a later `sync` retries them once space was freed (e.g. by compaction).
    #[error("disk full")]
    DiskFull,
    /// An earlier fsync (or a write whose damage could not be undone) failed. The page cache may
    /// have dropped dirty pages, so the log can no longer tell what is durable: every later call
    /// fails with this error and the replica must stop and recover from the files.
    #[error("the log is poisoned by an earlier fsync or write failure")]
    Poisoned,
    /// A record is damaged (bad checksum, impossible length, wrong lsn or broken chain) and
    /// records known to be durable follow it: this is corruption, not a torn write.
    #[error("corrupt record in {segment} at byte {offset_bytes} (expected lsn {lsn})")]
    Corrupt {
        /// The segment file name.
        segment: String,
        /// Offset of the damaged record inside the segment.
        offset_bytes: u64,
        /// The lsn the record at that place should have had.
        lsn: Lsn,
    },
    /// A segment that is not the last one is empty or has a damaged header.
    #[error("segment {segment} is damaged: {reason}")]
    BadSegment {
        /// The segment file name.
        segment: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A segment is missing in the middle of the log: the next segment does not start where the
    /// previous one ended.
    #[error("segment missing before {segment}: expected lsn {expected_lsn}, found {found_lsn}")]
    MissingSegment {
        /// The segment found after the gap.
        segment: String,
        /// The lsn the next segment should have started with.
        expected_lsn: Lsn,
        /// The lsn it starts with.
        found_lsn: Lsn,
    },
    /// The log starts after lsn 1 but no valid snapshot covers the records before it.
    #[error(
        "log starts at lsn {log_first_lsn} but the newest usable snapshot is at {snapshot_lsn}"
    )]
    SnapshotGap {
        /// The lsn of the snapshot used (0 if none).
        snapshot_lsn: Lsn,
        /// The first lsn present in the log.
        log_first_lsn: Lsn,
    },
    /// A file is larger than any file this log writes (a damaged length or a foreign file);
    /// it is not read, so a hostile size cannot cause an unbounded allocation.
    #[error("file {file} is {size_bytes} bytes, more than the limit of {limit_bytes}")]
    FileTooLarge {
        /// The file name.
        file: String,
        /// Its size.
        size_bytes: u64,
        /// The largest size accepted.
        limit_bytes: u64,
    },
    /// The metadata file is damaged (a crash cannot cause this: it is written by rename).
    #[error("metadata file {file} is damaged: {reason}")]
    BadMeta {
        /// The file name.
        file: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A payload is larger than `WalOptions::payload_size_bytes_max`.
    #[error("payload of {size_bytes} bytes exceeds the limit of {limit_bytes}")]
    PayloadTooLarge {
        /// The payload size.
        size_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// More than `WalOptions::buffer_size_bytes_max` bytes are buffered: call `sync` first.
    #[error("append buffer full ({size_bytes} bytes buffered): sync first")]
    BufferFull {
        /// Bytes buffered.
        size_bytes: u64,
    },
    /// A snapshot was asked for an lsn that is not durable yet.
    #[error("snapshot at lsn {lsn} is ahead of the durable lsn {durable_lsn}")]
    SnapshotAhead {
        /// The snapshot's lsn.
        lsn: Lsn,
        /// The durable lsn.
        durable_lsn: Lsn,
    },
    /// `compact` was asked to drop records that no snapshot covers.
    #[error("cannot compact to lsn {keep_from_lsn}: newest snapshot is at {snapshot_lsn}")]
    CompactBeyondSnapshot {
        /// The requested first lsn to keep.
        keep_from_lsn: Lsn,
        /// The newest snapshot's lsn (0 if none).
        snapshot_lsn: Lsn,
    },
}

impl WalError {
    /// Maps an I/O error to `DiskFull` when the storage reports a full disk.
    pub(crate) fn from_io(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::StorageFull {
            WalError::DiskFull
        } else {
            WalError::Io(error)
        }
    }
}
