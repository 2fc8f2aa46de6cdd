//! ledger-wal: durable storage for paxos-ledger.
//!
//! A segmented write-ahead log with group commit, snapshots and crash recovery, reached only
//! through the [`Storage`] trait so tests and the Paxos simulator can inject faults
//! ([`FaultStorage`]: crashes that lose un-synced bytes, torn writes, bit flips, failing fsync,
//! a full disk).
//!
//! - [`Wal::append`] buffers a record; [`Wal::sync`] makes everything buffered durable with one
//!   write and one fdatasync and returns the durable lsn; [`Wal::append_and_wait`] lets many
//!   threads share one such group commit.
//! - [`Wal::open`] recovers: the newest valid snapshot and every record after it. A torn tail is
//!   truncated; damage before the tail is an error naming the segment and offset (I8).
//! - [`Wal::write_snapshot`] and [`Wal::compact`] bound the log; [`MetaFile`] holds small
//!   metadata (the promised ballot) that a crash leaves old or new.
//!
//! The byte format and the recovery table are in `docs/wal-format.md`.
//!
//! # Examples
//! ```
//! # fn main() -> Result<(), ledger_wal::WalError> {
//! use ledger_wal::{FaultStorage, PendingFate, Wal, WalOptions};
//! let storage = FaultStorage::new(1);
//! let (wal, _) = Wal::open(storage.clone(), WalOptions::default())?;
//! for slot in 0..10u64 {
//!     wal.append(1, &slot.to_le_bytes())?;
//! }
//! let durable = wal.sync()?;
//! wal.append(1, b"in flight")?;
//! storage.set_operation_budget(Some(1)); // the write happens, the fsync does not
//! assert!(wal.sync().is_err());
//! storage.crash_with(|_| PendingFate::Torn { keep_bytes: 20 });
//! let (wal, recovery) = Wal::open(storage, WalOptions::default())?;
//! assert_eq!(recovery.records.len() as u64, durable);
//! assert!(recovery.torn_tail.is_some());
//! assert_eq!(wal.next_lsn(), durable + 1);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;
mod fault;
mod meta;
mod record;
mod recovery;
mod snapshot;
mod storage;
mod wal;

pub use error::{Result, WalError};
pub use fault::{FaultStorage, PendingFate, PendingWrite};
pub use meta::{META_SIZE_BYTES_MAX, MetaFile};
pub use record::Record;
pub use recovery::{Recovery, TornTail};
pub use storage::{FileStorage, Storage};
pub use wal::{SyncPolicy, Wal, WalOptions};

/// A log sequence number: 1 for the first record ever appended, then +1 per record.
pub type Lsn = u64;
