//! Log entries and the messages replicas exchange.
//!
//! One Paxos vocabulary (STYLE §3): `Prepare`/`Promise` are phase 1, `Accept`/`Accepted` are
//! phase 2, `Commit` is the leader's heartbeat carrying its commit slot (answered by
//! `CommitAck`), `Nack` rejects a stale ballot, and `SnapshotChunk`/`SnapshotAck` move a
//! snapshot to a replica whose missing entries were compacted away.
//!
//! Throughout, a *commit slot* `c` means "every slot below `c` is chosen".

use std::sync::Arc;

use bytes::Bytes;

use crate::ballot::{Ballot, ReplicaId};
use crate::error::{PaxosError, Result};

/// One client command inside a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Command {
    /// The replica the client submitted it to; only that replica answers it.
    pub origin: ReplicaId,
    /// The id the origin's driver gave the request.
    pub request_id: u64,
    /// The opaque command bytes handed to [`crate::StateMachine::apply`].
    pub payload: Bytes,
}

/// The value of one slot: a batch of client commands stamped with the leader's timestamp. An
/// entry without commands is a no-op (a new leader fills holes with them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The proposing leader's timestamp in nanoseconds. A leader stamps each new batch above
    /// every timestamp it has seen, but timestamps are NOT strictly increasing along the log:
    /// a no-op filling a hole reuses the previous entry's timestamp, and a new leader
    /// re-proposes older leaders' entries with their original stamps, so neighbouring slots
    /// may carry equal or decreasing timestamps.
    pub timestamp_ns: u64,
    /// The commands, applied in order. Shared so that sending an entry to every peer is cheap.
    pub commands: Arc<[Command]>,
}

/// The bytes one command adds to an encoded entry besides its payload.
pub const COMMAND_HEADER_SIZE_BYTES: usize = 1 + 8 + 4;
/// The bytes of an encoded entry's header.
pub const ENTRY_HEADER_SIZE_BYTES: usize = 8 + 4;

impl Entry {
    /// A no-op entry.
    pub fn noop(timestamp_ns: u64) -> Self {
        Entry {
            timestamp_ns,
            commands: Arc::from(Vec::new()),
        }
    }

    /// An entry carrying `commands`.
    pub fn new(timestamp_ns: u64, commands: Vec<Command>) -> Self {
        Entry {
            timestamp_ns,
            commands: Arc::from(commands),
        }
    }

    /// Whether this entry carries no command.
    pub fn is_noop(&self) -> bool {
        self.commands.is_empty()
    }

    /// The size of [`Entry::encode`]'s output.
    pub fn encoded_size_bytes(&self) -> usize {
        let payloads: usize = self.commands.iter().map(|c| c.payload.len()).sum();
        ENTRY_HEADER_SIZE_BYTES + self.commands.len() * COMMAND_HEADER_SIZE_BYTES + payloads
    }

    /// Appends the entry's little-endian encoding to `out`:
    /// `[timestamp_ns u64][count u32]`, then per command
    /// `[origin u8][request_id u64][len u32][payload]`.
    ///
    /// # Panics
    ///
    /// If the entry holds more than `u32::MAX` commands or a payload above `u32::MAX` bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.timestamp_ns.to_le_bytes());
        let count = u32::try_from(self.commands.len()).expect("entry command count fits u32");
        out.extend_from_slice(&count.to_le_bytes());
        for command in self.commands.iter() {
            out.push(command.origin);
            out.extend_from_slice(&command.request_id.to_le_bytes());
            let size = u32::try_from(command.payload.len()).expect("payload size fits u32");
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&command.payload);
        }
        assert_eq!(out.len() - start, self.encoded_size_bytes());
    }

    /// Decodes an entry written by [`Entry::encode`]; the whole of `bytes` must be consumed.
    ///
    /// # Errors
    ///
    /// [`PaxosError::Malformed`] if the bytes are truncated, have trailing garbage, or name more
    /// commands than they can hold. Never allocates more than `bytes.len()` suggests.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader { bytes, offset: 0 };
        let timestamp_ns = reader.u64()?;
        let count = reader.u32()? as usize;
        // Each command takes at least its header, so a hostile count cannot make us allocate
        // beyond what the buffer could hold.
        if count > reader.remaining() / COMMAND_HEADER_SIZE_BYTES {
            return Err(PaxosError::Malformed {
                what: "entry command count",
            });
        }
        let mut commands = Vec::with_capacity(count);
        for _ in 0..count {
            let origin = reader.u8()?;
            let request_id = reader.u64()?;
            let size = reader.u32()? as usize;
            let payload = Bytes::copy_from_slice(reader.take(size)?);
            commands.push(Command {
                origin,
                request_id,
                payload,
            });
        }
        if reader.remaining() != 0 {
            return Err(PaxosError::Malformed {
                what: "entry trailing bytes",
            });
        }
        Ok(Entry::new(timestamp_ns, commands))
    }
}

/// A bounds-checked little-endian reader.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    pub(crate) fn take(&mut self, size: usize) -> Result<&'a [u8]> {
        if size > self.remaining() {
            return Err(PaxosError::Malformed {
                what: "truncated bytes",
            });
        }
        let slice = &self.bytes[self.offset..self.offset + size];
        self.offset += size;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut buffer = [0_u8; 4];
        buffer.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(buffer))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut buffer = [0_u8; 8];
        buffer.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buffer))
    }
}

/// An entry accepted at a slot under a ballot, as carried by a [`Message::Promise`] and as
/// persisted by a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotEntry {
    /// The slot.
    pub slot: u64,
    /// The ballot the entry was accepted under.
    pub ballot: Ballot,
    /// The entry.
    pub entry: Entry,
}

/// A message between two replicas of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Phase 1a: a candidate asks for a promise covering every slot from `commit_slot` up.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The candidate's commit slot: it knows every slot below it is chosen.
        commit_slot: u64,
    },
    /// Phase 1b: the promise not to accept below `ballot`, with every entry the promiser
    /// accepted at or above the candidate's commit slot. Sent only after the promise is durable.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// Accepted entries at or above the Prepare's commit slot, by slot.
        accepted: Vec<SlotEntry>,
        /// The promiser's own commit slot.
        commit_slot: u64,
    },
    /// Phase 2a: the leader asks to accept `entry` at `slot`; `commit_slot` piggybacks what is
    /// chosen.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: u64,
        /// The value.
        entry: Entry,
        /// The leader's commit slot.
        commit_slot: u64,
    },
    /// Phase 2b: the entry at `slot` is durable under `ballot`. Sent only after that persist.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
        /// The slot.
        slot: u64,
    },
    /// The leader's heartbeat: its commit slot, and the read-index round it wants confirmed.
    Commit {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit slot.
        commit_slot: u64,
        /// The leader's current read round (I9).
        read_round: u64,
    },
    /// The answer to a [`Message::Commit`]: still following `ballot`, and how far along.
    CommitAck {
        /// The ballot being followed.
        ballot: Ballot,
        /// The read round being confirmed.
        read_round: u64,
        /// The follower's commit slot, so the leader can send what it misses (catch-up).
        commit_slot: u64,
    },
    /// The recipient's ballot was stale: the sender has promised `ballot`.
    Nack {
        /// The higher ballot the sender promised.
        ballot: Ballot,
    },
    /// A piece of a snapshot covering every slot below `snapshot_slot`.
    SnapshotChunk {
        /// The sender's ballot (informational: snapshots hold only chosen state).
        ballot: Ballot,
        /// Every slot below this one is in the snapshot.
        snapshot_slot: u64,
        /// The timestamp of the last entry the snapshot covers.
        last_timestamp_ns: u64,
        /// Where `data` starts in the snapshot.
        offset_bytes: u64,
        /// The snapshot's total size.
        total_size_bytes: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Asks for the snapshot chunk starting at `next_offset_bytes`.
    SnapshotAck {
        /// The ballot the replica follows.
        ballot: Ballot,
        /// The snapshot being received.
        snapshot_slot: u64,
        /// The next byte wanted; equal to the total size once installed.
        next_offset_bytes: u64,
    },
}

impl Message {
    /// The ballot the message carries.
    pub fn ballot(&self) -> Ballot {
        match self {
            Message::Prepare { ballot, .. }
            | Message::Promise { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Commit { ballot, .. }
            | Message::CommitAck { ballot, .. }
            | Message::Nack { ballot }
            | Message::SnapshotChunk { ballot, .. }
            | Message::SnapshotAck { ballot, .. } => *ballot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry::new(
            42,
            vec![
                Command {
                    origin: 1,
                    request_id: 7,
                    payload: Bytes::from_static(b"abc"),
                },
                Command {
                    origin: 2,
                    request_id: 8,
                    payload: Bytes::new(),
                },
            ],
        )
    }

    #[test]
    fn entry_round_trips() {
        let entry = sample();
        let mut bytes = Vec::new();
        entry.encode(&mut bytes);
        assert_eq!(bytes.len(), entry.encoded_size_bytes());
        assert_eq!(Entry::decode(&bytes).unwrap(), entry);
        let noop = Entry::noop(5);
        bytes.clear();
        noop.encode(&mut bytes);
        assert!(Entry::decode(&bytes).unwrap().is_noop());
    }

    #[test]
    fn entry_decode_rejects_every_truncation_and_trailing_byte() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        bytes.push(0);
        assert!(Entry::decode(&bytes).is_err());
    }

    proptest::proptest! {
        #[test]
        fn entry_decode_of_any_bytes_never_panics(
            bytes in proptest::collection::vec(0_u8.., 0..256),
        ) {
            let _ = Entry::decode(&bytes);
        }

        #[test]
        fn entry_round_trips_for_any_commands(
            timestamp_ns: u64,
            commands in proptest::collection::vec(
                (0_u8.., 0_u64.., proptest::collection::vec(0_u8.., 0..40)),
                0..20,
            ),
        ) {
            let commands = commands
                .into_iter()
                .map(|(origin, request_id, payload)| {
                    Command { origin, request_id, payload: Bytes::from(payload) }
                })
                .collect();
            let entry = Entry::new(timestamp_ns, commands);
            let mut bytes = Vec::new();
            entry.encode(&mut bytes);
            proptest::prop_assert_eq!(Entry::decode(&bytes).unwrap(), entry);
        }
    }

    #[test]
    fn entry_decode_rejects_a_hostile_count_without_allocating() {
        let mut bytes = 1_u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Entry::decode(&bytes),
            Err(PaxosError::Malformed {
                what: "entry command count"
            })
        );
    }
}
