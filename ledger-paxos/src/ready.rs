//! What the core asks its driver to do, and what the driver tells it back.
//!
//! ```text
//!   driver                                  Replica (pure)
//!   ──────                                  ──────────────
//!   tick() / step() / propose() / read() ─▶ handlers update memory
//!   ready() ◀──────────────────────────────  Ready { number, hard_state, entries_to_persist,
//!     │                                             messages_now, messages_after_persist,
//!     │                                             replies, applied_slots, snapshot_to_persist }
//!     ├─ send messages_now at once
//!     ├─ write hard_state + entries_to_persist (+ snapshot), one fsync
//!     ├─ then send messages_after_persist        (I4: promise/accept durable before reply)
//!     └─ advance(Persisted { ready_number }) ──▶ the leader counts its own vote (I2)
//! ```

use bytes::Bytes;

use crate::ballot::{Ballot, ReplicaId};
use crate::error::PaxosError;
use crate::message::{Message, SlotEntry};

/// The durable acceptor state besides the log: the promised ballot (I4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The highest ballot promised; never accept or promise below it.
    pub promised: Ballot,
}

/// A message and its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The destination replica.
    pub to: ReplicaId,
    /// The message.
    pub message: Message,
}

/// The answer to one `propose` or `read` request of this replica's clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request id given to `propose` or `read`.
    pub request_id: u64,
    /// The state machine's reply, or why the request failed.
    pub result: Result<Bytes, PaxosError>,
}

/// A snapshot of the state machine covering every slot below `slot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    /// Every slot below this one is in the snapshot; the log may drop them.
    pub slot: u64,
    /// The highest entry timestamp the replica had seen when it took the snapshot: not
    /// necessarily the last covered entry's (timestamps are not monotonic along the log), and
    /// possibly one of an accepted entry above `slot`. A replica restored from the snapshot
    /// stamps new entries above it.
    pub last_timestamp_ns: u64,
    /// The state machine's snapshot bytes.
    pub bytes: Bytes,
}

/// What a replica recovered from durable storage, handed to `Replica::new`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The promised ballot.
    pub hard_state: HardState,
    /// The newest snapshot, if any.
    pub snapshot: Option<SnapshotData>,
    /// Accepted entries above the snapshot, one per slot (the highest-ballot copy).
    pub entries: Vec<SlotEntry>,
}

/// The work the driver must do now. Obtained from `Replica::ready`.
///
/// Order: send `messages_now` whenever; persist `hard_state`, `entries_to_persist` and
/// `snapshot_to_persist` (entries in order, after the hard state) and fsync; only then send
/// `messages_after_persist` and call `advance(Persisted { ready_number: number })`. Readies
/// must be persisted and advanced in `number` order. `replies` may be delivered at once: they
/// answer only entries a majority already holds durably.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The sequence number of this `Ready`, starting at 1.
    pub number: u64,
    /// The new promised ballot to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Accepted entries to append durably.
    pub entries_to_persist: Vec<SlotEntry>,
    /// Messages that may leave only after this `Ready`'s persist completed.
    pub messages_after_persist: Vec<Envelope>,
    /// Messages that may leave now.
    pub messages_now: Vec<Envelope>,
    /// Answers to this replica's clients.
    pub replies: Vec<Reply>,
    /// The slots applied to the state machine by this `ready()` (`start..end`; `0..0` when
    /// none was).
    pub applied_slots: std::ops::Range<u64>,
    /// A snapshot to persist; once it is durable the driver may drop log records below
    /// `slot`.
    pub snapshot_to_persist: Option<SnapshotData>,
}

impl Ready {
    /// Whether the driver has anything to persist for this `Ready`.
    pub fn has_persist_work(&self) -> bool {
        self.hard_state.is_some()
            || !self.entries_to_persist.is_empty()
            || self.snapshot_to_persist.is_some()
    }

    /// Whether the `Ready` holds no work at all.
    pub fn is_empty(&self) -> bool {
        !self.has_persist_work()
            && self.messages_after_persist.is_empty()
            && self.messages_now.is_empty()
            && self.replies.is_empty()
            && self.applied_slots.is_empty()
    }
}

/// The driver's report that everything in every `Ready` up to `ready_number` is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persisted {
    /// The last `Ready::number` whose persist work completed.
    pub ready_number: u64,
}
