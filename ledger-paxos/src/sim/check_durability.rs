//! Invariants I2, I4 and I8, durability: what a replica fsynced survives its crash, and no
//! request is acknowledged before a majority fsynced the entry that carries it (RPO = 0).

use std::collections::BTreeMap;

use crate::ballot::Ballot;
use crate::message::{Entry, Message};
use crate::ready::{Ready, Recovered};

/// What one replica has made durable, as far as the simulator saw persists complete.
#[derive(Clone, Debug, Default)]
pub struct DurableMirror {
    /// The last durable promise.
    pub promised: Ballot,
    /// The durable accepted entries at or above `snapshot_slot`.
    pub entries: BTreeMap<u64, (Ballot, Entry)>,
    /// Every slot below is in a durable snapshot.
    pub snapshot_slot: u64,
}

impl DurableMirror {
    /// Records a `Ready` whose persist completed.
    pub fn record_persist(&mut self, ready: &Ready) {
        if let Some(hard_state) = ready.hard_state {
            self.promised = hard_state.promised;
        }
        for slot_entry in &ready.entries_to_persist {
            let value = (slot_entry.ballot, slot_entry.entry.clone());
            self.entries.insert(slot_entry.slot, value);
        }
        if let Some(snapshot) = &ready.snapshot_to_persist {
            if snapshot.slot > self.snapshot_slot {
                self.snapshot_slot = snapshot.slot;
                self.entries = self.entries.split_off(&snapshot.slot);
            }
        }
    }

    /// Whether `entry` is durable at `slot` here (in the log, or under a durable snapshot).
    pub fn holds(&self, slot: u64, entry: &Entry) -> bool {
        slot < self.snapshot_slot || self.entries.get(&slot).is_some_and(|(_, e)| e == entry)
    }

    /// Checks a recovery against the mirror: the promise, the snapshot and every fsynced entry
    /// (or a higher-ballot replacement) came back. Then the mirror becomes the recovery.
    ///
    /// # Errors
    ///
    /// A description of what was lost.
    pub fn check_recovered(&mut self, recovered: &Recovered) -> Result<(), String> {
        if recovered.hard_state.promised < self.promised {
            return Err(format!(
                "I4: promise {} lost, recovered {}",
                self.promised, recovered.hard_state.promised
            ));
        }
        let snapshot_slot = recovered.snapshot.as_ref().map_or(0, |s| s.slot);
        if snapshot_slot < self.snapshot_slot {
            return Err(format!(
                "I8: snapshot at {} lost, recovered {snapshot_slot}",
                self.snapshot_slot
            ));
        }
        let recovered_entries: BTreeMap<u64, (Ballot, &Entry)> = recovered
            .entries
            .iter()
            .map(|e| (e.slot, (e.ballot, &e.entry)))
            .collect();
        for (slot, (ballot, _)) in self.entries.range(snapshot_slot..) {
            let survived = recovered_entries
                .get(slot)
                .is_some_and(|(b, _)| b >= ballot);
            if !survived {
                return Err(format!(
                    "I2/I8: fsynced entry at slot {slot} ballot {ballot} lost"
                ));
            }
        }
        self.promised = recovered.hard_state.promised;
        self.snapshot_slot = snapshot_slot;
        self.entries = recovered
            .entries
            .iter()
            .map(|e| (e.slot, (e.ballot, e.entry.clone())))
            .collect();
        Ok(())
    }
}

/// Checks that a majority holds `entry` at `slot` durably when a request in it is answered.
///
/// # Errors
///
/// A description of the violation.
pub fn check_ack_durable(
    mirrors: &[&DurableMirror],
    slot: u64,
    entry: &Entry,
    request_id: u64,
) -> Result<(), String> {
    let holders = mirrors
        .iter()
        .filter(|mirror| mirror.holds(slot, entry))
        .count();
    let majority = mirrors.len() / 2 + 1;
    if holders < majority {
        return Err(format!(
            "I2: request {request_id} acknowledged at slot {slot} with only {holders} durable \
             copies (majority {majority})"
        ));
    }
    Ok(())
}

/// Checks, as `replica`'s reply leaves, that what the reply vouches for is durable there (I4):
/// a `Promise` of `b` needs the promise of `b` and every accepted entry it reports on disk; an
/// `Accepted` of `b` at `s` needs the promise of `b` and slot `s` on disk at a ballot of at
/// least `b` (or, for a slot below the replica's `commit_slot`, whose chosen value it holds
/// and votes for again without rewriting it, at any ballot), or `s` under a durable snapshot.
///
/// # Errors
///
/// A description of the reply that left too early.
pub fn check_reply_durable(
    mirror: &DurableMirror,
    replica: usize,
    commit_slot: u64,
    message: &Message,
) -> Result<(), String> {
    let (ballot, slots): (Ballot, Vec<(u64, Ballot)>) = match message {
        Message::Promise {
            ballot, accepted, ..
        } => (
            *ballot,
            accepted.iter().map(|e| (e.slot, e.ballot)).collect(),
        ),
        Message::Accepted { ballot, slot } => {
            let floor = if *slot < commit_slot {
                Ballot::ZERO
            } else {
                *ballot
            };
            (*ballot, vec![(*slot, floor)])
        }
        _ => return Ok(()),
    };
    if mirror.promised < ballot {
        return Err(format!(
            "I4: replica {replica} sent {message:?} before its promise of {ballot} was durable \
             (durable promise {})",
            mirror.promised
        ));
    }
    for (slot, floor) in slots {
        let durable = slot < mirror.snapshot_slot
            || mirror.entries.get(&slot).is_some_and(|(b, _)| *b >= floor);
        if !durable {
            return Err(format!(
                "I4: replica {replica} vouched for slot {slot} at ballot {floor} in a reply \
                 to ballot {ballot} before the entry was durable"
            ));
        }
    }
    Ok(())
}
