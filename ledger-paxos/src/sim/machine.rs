//! The simulator's state machine: a hash chain over every applied command. Two replicas that
//! applied the same commands in the same order have the same digest (I5), and a read returns
//! the last applied command slot so reads can be checked for linearizability (I9).

use bytes::Bytes;

use crate::error::{PaxosError, Result};
use crate::sim::check_linearizable::check_read;
use crate::sim::rng::{Fnv, SimRng};
use crate::state_machine::StateMachine;

/// What the simulator needs from a state machine besides [`StateMachine`]: a digest of its
/// state (checked across replicas, I5) and a client workload whose reads it can check (I9).
/// Implement it to run another state machine (e.g. the ledger) under the simulator's faults.
pub trait SimStateMachine: StateMachine + Default {
    /// A digest of the whole state: equal states give equal digests.
    fn state_digest(&self) -> u64;

    /// The command of write request `request_id`, submitted at replica `target`.
    fn write_command(random: &mut SimRng, request_id: u64, target: usize) -> Bytes;

    /// The query of a read request.
    fn read_query(random: &mut SimRng) -> Bytes;

    /// Checks a read's reply: it must reflect every write acknowledged before the read began,
    /// the last of which was chosen at a slot below `acknowledged_slot_end`.
    ///
    /// # Errors
    ///
    /// A description of the violation.
    fn check_read(
        request_id: u64,
        reply: &[u8],
        acknowledged_slot_end: u64,
    ) -> std::result::Result<(), String>;
}

impl SimStateMachine for HashChain {
    fn state_digest(&self) -> u64 {
        self.digest
    }

    fn write_command(_random: &mut SimRng, request_id: u64, target: usize) -> Bytes {
        let mut payload = request_id.to_le_bytes().to_vec();
        payload.extend_from_slice(&(target as u64).to_le_bytes());
        Bytes::from(payload)
    }

    fn read_query(_random: &mut SimRng) -> Bytes {
        Bytes::new()
    }

    fn check_read(
        request_id: u64,
        reply: &[u8],
        acknowledged_slot_end: u64,
    ) -> std::result::Result<(), String> {
        check_read(request_id, reply, acknowledged_slot_end)
    }
}

/// How many recent command digests the state keeps (it pads snapshots so that they are sent in
/// several chunks).
pub const HISTORY_COUNT_MAX: usize = 32;

/// A state machine whose state is a digest of everything applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HashChain {
    /// The chained digest of every applied command and its slot.
    pub digest: u64,
    /// How many commands were applied.
    pub command_count: u64,
    /// One past the slot of the last applied command (0 if none).
    pub command_slot_end: u64,
    /// The digests of the last `HISTORY_COUNT_MAX` commands.
    pub history: Vec<u64>,
}

impl StateMachine for HashChain {
    fn apply(&mut self, slot: u64, timestamp_ns: u64, command: &[u8]) -> Bytes {
        let mut hash = Fnv(self.digest);
        hash.word(slot);
        hash.word(timestamp_ns);
        hash.bytes(command);
        self.digest = hash.0;
        self.command_count += 1;
        self.command_slot_end = slot + 1;
        if self.history.len() == HISTORY_COUNT_MAX {
            self.history.remove(0);
        }
        self.history.push(self.digest);
        Bytes::copy_from_slice(&self.command_count.to_le_bytes())
    }

    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&self.command_slot_end.to_le_bytes())
    }

    fn encode_snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24 + 8 * self.history.len());
        bytes.extend_from_slice(&self.digest.to_le_bytes());
        bytes.extend_from_slice(&self.command_count.to_le_bytes());
        bytes.extend_from_slice(&self.command_slot_end.to_le_bytes());
        for digest in &self.history {
            bytes.extend_from_slice(&digest.to_le_bytes());
        }
        bytes
    }

    fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<()> {
        let well_formed = bytes.len() >= 24
            && bytes.len() % 8 == 0
            && (bytes.len() - 24) / 8 <= HISTORY_COUNT_MAX;
        if !well_formed {
            return Err(PaxosError::Snapshot {
                reason: "hash chain snapshot size",
            });
        }
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("8 bytes")))
            .collect();
        *self = HashChain {
            digest: words[0],
            command_count: words[1],
            command_slot_end: words[2],
            history: words[3..].to_vec(),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_bad_sizes_are_rejected() {
        let mut machine = HashChain::default();
        for slot in 0..40 {
            machine.apply(slot, slot * 10, b"command");
        }
        let mut restored = HashChain::default();
        restored
            .restore_snapshot(&machine.encode_snapshot())
            .unwrap();
        assert_eq!(restored, machine);
        assert!(restored.restore_snapshot(&[0; 23]).is_err());
        assert_eq!(restored, machine);
        assert_eq!(
            machine.query(b""),
            Bytes::copy_from_slice(&40_u64.to_le_bytes())
        );
    }
}
