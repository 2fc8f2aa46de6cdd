//! Invariants I5 and I6, identical applied prefixes: two replicas that applied every slot
//! below `s` have the same state-machine digest, whether they got there slot by slot or by
//! installing a snapshot.

use std::collections::BTreeMap;

use crate::ballot::ReplicaId;

/// The digest of the state after applying every slot below each key.
#[derive(Debug, Default)]
pub struct AppliedDigests {
    by_applied_slot: BTreeMap<u64, u64>,
}

impl AppliedDigests {
    /// Records that `replica` has `digest` after applying every slot below `applied_slot`.
    ///
    /// # Errors
    ///
    /// A description of the violation if another replica had a different digest there.
    pub fn observe(
        &mut self,
        replica: ReplicaId,
        applied_slot: u64,
        digest: u64,
    ) -> Result<(), String> {
        match self.by_applied_slot.get(&applied_slot) {
            Some(expected) if *expected != digest => Err(format!(
                "I5: replica {replica} has digest {digest:#x} after slot {applied_slot}, another \
                 replica had {expected:#x}"
            )),
            Some(_) => Ok(()),
            None => {
                self.by_applied_slot.insert(applied_slot, digest);
                Ok(())
            }
        }
    }
}
