//! The state machine a Paxos group replicates.

use bytes::Bytes;

use crate::error::Result;

/// A deterministic state machine: applying the same commands in the same order to two fresh
/// instances gives identical states and identical replies (I5).
pub trait StateMachine: Send + 'static {
    /// Applies one client command of a chosen entry; `timestamp_ns` is the entry's leader
    /// timestamp. Returns the reply for the client.
    fn apply(&mut self, slot: u64, timestamp_ns: u64, command: &[u8]) -> Bytes;

    /// Answers a read once a read-index round confirmed leadership (linearizable, I9).
    fn query(&self, query: &[u8]) -> Bytes;

    /// The full state; identical histories give identical bytes.
    fn encode_snapshot(&self) -> Vec<u8>;

    /// Replaces the state with a snapshot made by [`StateMachine::encode_snapshot`].
    ///
    /// # Errors
    ///
    /// A [`crate::PaxosError::Snapshot`] if the bytes are not a valid snapshot; the state is
    /// then unchanged.
    fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<()>;
}
