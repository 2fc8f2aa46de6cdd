//! Errors of ledger-core: only decoding can fail. Business rejections are result codes
//! ([`crate::CreateTransferResult`]), never errors.

/// An error decoding bytes (a record, a command, a reply, a query or a snapshot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The input has the wrong length for what its header announces.
    #[error("{what}: expected {expected_bytes} bytes, got {actual_bytes}")]
    Length {
        /// What was being decoded.
        what: &'static str,
        /// The size the header or the record type requires.
        expected_bytes: usize,
        /// The size of the input.
        actual_bytes: usize,
    },
    /// A field holds a value this version does not know.
    #[error("{what}: invalid value {value}")]
    InvalidValue {
        /// The field.
        what: &'static str,
        /// The offending value.
        value: u64,
    },
    /// A batch holds more events than [`crate::BATCH_EVENTS_MAX`].
    #[error("batch of {event_count} events exceeds the maximum of {event_count_max}")]
    BatchTooLarge {
        /// Events announced by the header.
        event_count: u64,
        /// The limit.
        event_count_max: u32,
    },
    /// A snapshot's checksum does not match its bytes.
    #[error("snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The CRC32 stored in the snapshot.
        stored: u32,
        /// The CRC32 of the bytes.
        computed: u32,
    },
    /// A snapshot decoded but its content is inconsistent (duplicate ids, dangling references,
    /// broken invariants).
    #[error("snapshot is inconsistent: {0}")]
    Snapshot(&'static str),
    /// A decoded snapshot breaks a ledger invariant.
    #[error("snapshot breaks an invariant: {0}")]
    Invariant(#[from] crate::InvariantViolation),
}

/// The result type of ledger-core's decoders.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
