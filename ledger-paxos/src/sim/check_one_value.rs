//! Invariant I4, one value per slot: every replica, at every time, applies the same entry at
//! a slot. The first application of a slot anywhere fixes its value.

use std::collections::{BTreeMap, HashMap};

use crate::ballot::ReplicaId;
use crate::message::Entry;

/// The chosen value of every slot seen applied so far.
#[derive(Debug, Default)]
pub struct ChosenValues {
    chosen: BTreeMap<u64, Entry>,
    /// `(origin, request_id)` → the slot its command was chosen at.
    command_slots: HashMap<(ReplicaId, u64), u64>,
}

impl ChosenValues {
    /// Records that `replica` applied `entry` at `slot`.
    ///
    /// # Errors
    ///
    /// A description of the violation if another value was applied at `slot` before, or a
    /// command was chosen at two slots.
    pub fn observe(&mut self, replica: ReplicaId, slot: u64, entry: &Entry) -> Result<(), String> {
        if let Some(chosen) = self.chosen.get(&slot) {
            if chosen != entry {
                return Err(format!(
                    "I4: replica {replica} applied a different value at slot {slot}: {entry:?} \
                     vs {chosen:?}"
                ));
            }
            return Ok(());
        }
        for command in entry.commands.iter() {
            let key = (command.origin, command.request_id);
            if let Some(other) = self.command_slots.insert(key, slot) {
                return Err(format!(
                    "I3: command {key:?} chosen at slots {other} and {slot}"
                ));
            }
        }
        self.chosen.insert(slot, entry.clone());
        Ok(())
    }

    /// The slot a command was chosen at, if any replica applied it.
    pub fn slot_of(&self, origin: ReplicaId, request_id: u64) -> Option<u64> {
        self.command_slots.get(&(origin, request_id)).copied()
    }

    /// The chosen entry of `slot`, if known.
    pub fn entry(&self, slot: u64) -> Option<&Entry> {
        self.chosen.get(&slot)
    }

    /// The number of slots known chosen.
    pub fn slot_count(&self) -> usize {
        self.chosen.len()
    }
}
