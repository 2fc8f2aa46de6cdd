//! The crate's error type.

use std::sync::Arc;

use ledger_wal::WalError;

use crate::ballot::ReplicaId;

/// Everything that can go wrong in ledger-paxos.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaxosError {
    /// This replica is not the leader; `leader_hint` names the replica it believes leads.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this replica last heard from, if any.
        leader_hint: Option<ReplicaId>,
    },
    /// The request queue is full (`Config::request_queue_max`); retry later.
    #[error("request queue full")]
    Busy,
    /// The request had been given a slot, but another leader chose a different value there, so
    /// it was not applied. Retrying with the same ledger ids is safe (I3).
    #[error("request not chosen at slot {slot}; safe to retry")]
    NotChosen {
        /// The slot the request had been proposed at.
        slot: u64,
    },
    /// This replica cannot tell whether the request was chosen: it stepped down as leader
    /// before the request's slot was known chosen (a new leader may still choose it), or it
    /// applied a snapshot that covers the slot. Retrying with the same ledger ids is safe (I3).
    #[error("outcome of the request at slot {slot} unknown; safe to retry")]
    OutcomeUnknown {
        /// The slot the request had been proposed at.
        slot: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// Which rule the configuration breaks.
        reason: &'static str,
    },
    /// Bytes read from storage or the network do not decode.
    #[error("malformed {what}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
    },
    /// The state machine rejected a snapshot.
    #[error("snapshot rejected: {reason}")]
    Snapshot {
        /// Why the snapshot was rejected.
        reason: &'static str,
    },
    /// The write-ahead log failed (I/O, full disk, poisoned by a failed fsync, corruption).
    /// After this the replica must stop: its durable state is uncertain.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The call did not complete in time (driver only).
    #[error("timed out")]
    Timeout,
    /// The replica or group is shut down or crashed (driver only).
    #[error("shut down")]
    Shutdown,
}

/// `Result` with [`PaxosError`].
pub type Result<T, E = PaxosError> = std::result::Result<T, E>;

/// A shared [`WalError`], so that [`PaxosError`] stays `Clone` and comparable (two storage
/// errors are equal when they are the same error).
#[derive(Clone, Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(pub Arc<WalError>);

impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StorageError {}

impl From<WalError> for PaxosError {
    fn from(error: WalError) -> Self {
        PaxosError::Storage(StorageError(Arc::new(error)))
    }
}

impl StorageError {
    /// The underlying log error.
    pub fn wal_error(&self) -> &WalError {
        &self.0
    }
}
