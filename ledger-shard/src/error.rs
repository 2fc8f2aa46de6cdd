//! Errors of the cluster API.
//!
//! A business rejection (an overdraft, an unknown account, a duplicate id) is never an `Err`: it
//! is a per-event result code from ledger-core. `Err` is for the system: the shard has no
//! quorum, a call timed out, the disk failed, the cluster shut down, the configuration is wrong.
//!
//! Like openraft's `RaftError`, the enum keeps per-call errors, which a caller may simply retry
//! with the same ids (I3 makes that safe), apart from [`ShardError::Fatal`], after which the
//! named replica has stopped for good and needs an operator.

use std::path::PathBuf;

use ledger_core::CoreError;
use ledger_paxos::PaxosError;

/// The result type of ledger-shard.
pub type Result<T, E = ShardError> = std::result::Result<T, E>;

/// A system failure of a cluster call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// No replica of the shard could be confirmed as leader before the call's deadline: a
    /// majority is down or cut off. Retrying the same ids later is safe (I3).
    #[error("shard {shard}: no quorum (no leader confirmed before the deadline)")]
    NoQuorum {
        /// The shard that has no quorum.
        shard: usize,
    },
    /// A leader was reached but did not answer before the call's deadline. The events may or
    /// may not have been committed; retrying the same ids is safe and tells which (I3).
    #[error("shard {shard}: request timed out")]
    Timeout {
        /// The shard that did not answer in time.
        shard: usize,
    },
    /// An I/O error while opening the cluster's directories or its manifest.
    #[error("cluster i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster was shut down (or is shutting down); no more calls are served.
    #[error("cluster is shut down")]
    Shutdown,
    /// The configuration is invalid, or does not match the cluster found in the directory.
    #[error("invalid cluster configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A call's arguments are not acceptable as a whole (nothing was submitted).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The event at `index` spans shards in a way not supported yet: a cross-shard transfer
    /// that is `BALANCING_CREDIT`, a post or void of a cross-shard pending transfer inside a chain, or
    /// in a linked chain spanning shards an event that is not a plain or pending transfer (a
    /// closing one, a pending one with a timeout, or one whose credit account lives on the
    /// shard of the chain's first debit account). Plain and pending cross-shard transfers
    /// (`BALANCING_DEBIT` too, and pending ones also closing: `CLOSING_DEBIT`,
    /// `CLOSING_CREDIT`), posts and voids of the
    /// latter, and chains of plain and pending transfers spanning shards are supported, by
    /// two-phase commit. The whole call is rejected before anything is
    /// submitted: no event of the call was applied, none half-applied.
    #[error(
        "event {index} spans shards (debit on shard {debit_shard}, credit on shard \
         {credit_shard}) in a way not supported yet (balancing credit, or this \
         event in a chain spanning shards); nothing was submitted"
    )]
    CrossShard {
        /// The index of the offending event in the caller's batch.
        index: usize,
        /// The shard of the debit account.
        debit_shard: usize,
        /// The shard of the credit account.
        credit_shard: usize,
    },
    /// A reply from the replicated state machine could not be decoded. This is a bug or a
    /// version mismatch between replicas, never a business rejection.
    #[error("shard {shard}: undecodable reply: {source}")]
    Codec {
        /// The shard that answered.
        shard: usize,
        /// The decoding error.
        #[source]
        source: CoreError,
    },
    /// A replica stopped for good (its log is poisoned after a failed fsync, or corrupt), and
    /// the call's deadline passed while the client was retrying on the others. While a
    /// majority remains the others keep serving; the stopped replica needs an operator.
    #[error("shard {shard} replica {replica}: fatal: {source}")]
    Fatal {
        /// The shard of the stopped replica.
        shard: usize,
        /// The stopped replica.
        replica: usize,
        /// What stopped it.
        #[source]
        source: PaxosError,
    },
    /// An error from the consensus layer that is none of the above.
    #[error("consensus: {0}")]
    Paxos(#[from] PaxosError),
    /// The cluster directory holds something that is not a cluster of this version.
    #[error("bad cluster manifest {path}: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl ShardError {
    /// Whether retrying the same call (same ids) later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::NoQuorum { .. } | Self::Timeout { .. })
    }

    /// Whether a replica stopped for good.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal { .. })
    }
}
