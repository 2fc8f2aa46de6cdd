//! The replica: one pure, deterministic Multi-Paxos participant (acceptor, proposer, learner).
//!
//! ```text
//!            tick() ──▶ on_election_timeout / heartbeat / accept retry / quorum check
//!   step(from, msg) ──▶ acceptor.rs: on_prepare, on_accept, on_commit, on_snapshot_chunk
//!                       proposer.rs: on_promise, on_accepted, on_commit_ack, on_nack, ...
//!  propose / read   ──▶ leader queues (bounded), batched into entries by ready()
//!                │
//!                ▼
//!   ready() ──▶ flush proposals into slots (pipelined window), apply chosen slots to S,
//!               answer clients, maybe snapshot ──▶ Ready (persist / send / reply)
//!   advance(Persisted) ──▶ the leader's own vote and a candidate's own promise count only
//!                          now, after its own fsync (I2, I4)
//! ```
//!
//! No clock, thread, file, channel or global randomness: time is `tick()` (plus an optional
//! `set_time_ns`), randomness is a PRNG seeded by the caller (I12).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::ballot::{Ballot, ReplicaId};
use crate::config::Config;
use crate::error::{PaxosError, Result};
use crate::message::{Entry, Message, SlotEntry};
use crate::ready::{Envelope, HardState, Persisted, Ready, Recovered, Reply, SnapshotData};
use crate::state_machine::StateMachine;

/// The largest snapshot a replica accepts from a peer (a bound on the receive buffer).
pub const SNAPSHOT_SIZE_BYTES_MAX: u64 = 1 << 32;

/// How far above the promiser's commit slot a `Promise` may report an accepted entry. A
/// leader accepts at most `pipeline_slots_max` slots beyond its commit slot, so a promise
/// reaching further is hostile or corrupt; the candidate ignores it rather than fill the
/// range with no-ops.
pub(crate) const PROMISE_SLOT_SPAN_MAX: u64 = 1 << 16;

/// The role of a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Accepts what the leader sends.
    Follower,
    /// Running phase 1 with the given ballot.
    Candidate,
    /// Running phase 2 with the given ballot.
    Leader,
}

/// A small deterministic PRNG (splitmix64) for election timeouts.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An accepted entry in the in-memory log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogSlot {
    pub(crate) ballot: Ballot,
    pub(crate) entry: Entry,
}

/// A slot the leader proposed in its ballot and that is not yet part of the commit prefix.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    /// Bit `i` set: replica `i` has the entry durable under the leader's ballot.
    pub(crate) votes: u32,
    pub(crate) chosen: bool,
    pub(crate) sent_tick: u64,
}

/// What the leader knows about one peer.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerProgress {
    pub(crate) commit_slot: u64,
    pub(crate) last_ack_tick: u64,
    pub(crate) read_round: u64,
    pub(crate) snapshot_next_offset_bytes: Option<u64>,
}

/// A linearizable read waiting for its read-index round (I9).
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    pub(crate) request_id: u64,
    pub(crate) query: Bytes,
    pub(crate) read_slot: u64,
    pub(crate) read_round: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct LeaderState {
    pub(crate) next_slot: u64,
    pub(crate) in_flight: BTreeMap<u64, InFlight>,
    /// Reads may be served once `commit_slot` reaches this: the leader's first own slots are
    /// chosen, so it knows every entry chosen before it (I9).
    pub(crate) ready_slot: u64,
    pub(crate) peers: Vec<PeerProgress>,
    pub(crate) read_round: u64,
    pub(crate) read_round_unsent: bool,
    /// The commit slot the last heartbeat carried; a peer below it misses entries.
    pub(crate) heartbeat_commit_slot: u64,
    pub(crate) heartbeat_elapsed_ticks: u64,
    pub(crate) quorum_check_elapsed_ticks: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct CandidateState {
    /// Bit `i` set: replica `i` promised (the own bit only after the own promise is durable).
    pub(crate) promises: u32,
    pub(crate) self_promise_requested: bool,
    /// The highest-ballot accepted entry per slot among the promises.
    pub(crate) accepted: BTreeMap<u64, LogSlot>,
    /// The highest commit slot a promise reported: every slot below is chosen, and the
    /// candidate may lead only once it holds all of them (promises omit chosen entries beyond
    /// `catch_up_slots_max`).
    pub(crate) chosen_floor: u64,
}

/// A snapshot being received from a peer.
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    pub(crate) slot: u64,
    /// The tick of the last chunk appended: a transfer silent for an election timeout is
    /// abandoned (its sender may be gone for good) and no longer blocks older snapshots.
    pub(crate) progress_tick: u64,
    pub(crate) last_timestamp_ns: u64,
    pub(crate) total_size_bytes: u64,
    pub(crate) bytes: Vec<u8>,
}

/// Work handed out in a `Ready` that counts only once persisted.
#[derive(Clone, Debug)]
pub(crate) struct Unpersisted {
    pub(crate) ready_number: u64,
    pub(crate) slots: Vec<(u64, Ballot)>,
    pub(crate) promised: Option<Ballot>,
    pub(crate) snapshot_slot: Option<u64>,
}

/// One Multi-Paxos replica over the state machine `S`. See the module docs for the data flow.
///
/// # Examples
///
/// A single-replica group elects itself and commits a proposal:
///
/// ```
/// use bytes::Bytes;
/// use ledger_paxos::{Config, Persisted, Recovered, Replica, StateMachine};
/// # #[derive(Default)] struct Counter(u64);
/// # impl StateMachine for Counter {
/// #     fn apply(&mut self, _: u64, _: u64, _: &[u8]) -> Bytes {
/// #         self.0 += 1;
/// #         Bytes::from(self.0.to_le_bytes().to_vec())
/// #     }
/// #     fn query(&self, _: &[u8]) -> Bytes { Bytes::from(self.0.to_le_bytes().to_vec()) }
/// #     fn encode_snapshot(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
/// #     fn restore_snapshot(&mut self, _: &[u8]) -> ledger_paxos::Result<()> { Ok(()) }
/// # }
/// let mut replica = Replica::new(Config::new(0, 1), Recovered::default(), Counter::default(), 7)?;
/// while !replica.is_leader() {
///     replica.tick();
///     let ready = replica.ready();
///     replica.advance(Persisted { ready_number: ready.number });
/// }
/// replica.propose(1, Bytes::from_static(b"+1"))?;
/// let mut replies = Vec::new();
/// for _ in 0..3 {
///     let ready = replica.ready();
///     replies.extend(ready.replies);
///     replica.advance(Persisted { ready_number: ready.number });
/// }
/// assert_eq!(replies.len(), 1);
/// assert_eq!(replies[0].request_id, 1);
/// # Ok::<(), ledger_paxos::PaxosError>(())
/// ```
pub struct Replica<S: StateMachine> {
    pub(crate) config: Config,
    pub(crate) state_machine: S,
    pub(crate) random: SplitMix,
    pub(crate) promised: Ballot,
    pub(crate) hard_state_dirty: bool,
    /// Accepted entries at slots `>= log_start_slot`.
    pub(crate) log: BTreeMap<u64, LogSlot>,
    /// Every slot below is compacted into `snapshot`.
    pub(crate) log_start_slot: u64,
    pub(crate) snapshot: Option<SnapshotData>,
    /// Every slot below is chosen (and its entry is in `log` or the snapshot).
    pub(crate) commit_slot: u64,
    /// Every slot below is applied to the state machine.
    pub(crate) applied_slot: u64,
    pub(crate) timestamp_max_ns: u64,
    pub(crate) role: Role,
    /// The ballot of the current candidacy or leadership.
    pub(crate) ballot: Ballot,
    pub(crate) leader: Option<LeaderState>,
    pub(crate) candidate: Option<CandidateState>,
    pub(crate) leader_hint: Option<ReplicaId>,
    pub(crate) round_max_seen: u64,
    pub(crate) tick_count: u64,
    pub(crate) now_ns: u64,
    pub(crate) election_elapsed_ticks: u64,
    pub(crate) election_timeout_ticks: u64,
    pub(crate) out: Ready,
    pub(crate) ready_number: u64,
    pub(crate) unpersisted: VecDeque<Unpersisted>,
    pub(crate) requests: VecDeque<(u64, Bytes)>,
    /// This replica's own proposals that got a slot, by slot.
    pub(crate) requests_in_slots: BTreeMap<u64, Vec<u64>>,
    pub(crate) reads: VecDeque<PendingRead>,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
}

impl<S: StateMachine> Replica<S> {
    /// Builds a replica from what it recovered from storage. `random_seed` seeds its election
    /// timeouts; give each replica a different one.
    ///
    /// # Errors
    ///
    /// [`PaxosError::InvalidConfig`] for a bad configuration, [`PaxosError::Snapshot`] if the
    /// state machine rejects the recovered snapshot.
    pub fn new(
        config: Config,
        recovered: Recovered,
        mut state_machine: S,
        random_seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        let mut log_start_slot = 0;
        let mut timestamp_max_ns = 0;
        if let Some(snapshot) = &recovered.snapshot {
            state_machine.restore_snapshot(&snapshot.bytes)?;
            log_start_slot = snapshot.slot;
            timestamp_max_ns = snapshot.last_timestamp_ns;
        }
        let mut log = BTreeMap::new();
        for slot_entry in recovered.entries {
            if slot_entry.slot < log_start_slot {
                continue;
            }
            timestamp_max_ns = timestamp_max_ns.max(slot_entry.entry.timestamp_ns);
            let slot = LogSlot {
                ballot: slot_entry.ballot,
                entry: slot_entry.entry,
            };
            log.insert(slot_entry.slot, slot);
        }
        let promised = recovered.hard_state.promised;
        let seed = random_seed ^ (u64::from(config.replica_id) << 56);
        let mut replica = Replica {
            random: SplitMix(seed),
            promised,
            hard_state_dirty: false,
            log,
            log_start_slot,
            snapshot: recovered.snapshot,
            commit_slot: log_start_slot,
            applied_slot: log_start_slot,
            timestamp_max_ns,
            role: Role::Follower,
            ballot: promised,
            leader: None,
            candidate: None,
            leader_hint: None,
            round_max_seen: promised.round,
            tick_count: 0,
            now_ns: 0,
            election_elapsed_ticks: 0,
            election_timeout_ticks: 0,
            out: Ready::default(),
            ready_number: 0,
            unpersisted: VecDeque::new(),
            requests: VecDeque::new(),
            requests_in_slots: BTreeMap::new(),
            reads: VecDeque::new(),
            incoming_snapshot: None,
            config,
            state_machine,
        };
        replica.reset_election_timer();
        replica.check_invariants();
        Ok(replica)
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.config.replica_id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this replica is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The leader this replica believes in (itself when leading).
    pub fn leader_hint(&self) -> Option<ReplicaId> {
        self.leader_hint
    }

    /// The highest promised ballot.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// The ballot of the current candidacy or leadership (the promised one when following).
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// Every slot below is known chosen.
    pub fn commit_slot(&self) -> u64 {
        self.commit_slot
    }

    /// Every slot below is applied to the state machine.
    pub fn applied_slot(&self) -> u64 {
        self.applied_slot
    }

    /// Every slot below was compacted into the snapshot.
    pub fn log_start_slot(&self) -> u64 {
        self.log_start_slot
    }

    /// The accepted entry at `slot` and its ballot, if still in the log.
    pub fn log_entry(&self, slot: u64) -> Option<(Ballot, &Entry)> {
        self.log
            .get(&slot)
            .map(|log_slot| (log_slot.ballot, &log_slot.entry))
    }

    /// The state machine.
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }

    /// The number of client requests queued at this leader and not yet in a slot.
    pub fn queued_request_count(&self) -> usize {
        self.requests.len()
    }

    /// The number of this replica's requests that got a slot and are not yet answered.
    pub fn slotted_request_count(&self) -> usize {
        self.requests_in_slots.values().map(Vec::len).sum()
    }

    /// The number of reads waiting for their read-index round.
    pub fn pending_read_count(&self) -> usize {
        self.reads.len()
    }

    /// Moves logical time forward by one tick (`config.tick_interval_ms`).
    pub fn tick(&mut self) {
        self.tick_count += 1;
        self.now_ns = self
            .now_ns
            .saturating_add(self.config.tick_interval_ms * 1_000_000);
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::Candidate => {
                self.election_elapsed_ticks += 1;
                if self.election_elapsed_ticks >= self.election_timeout_ticks {
                    self.on_election_timeout();
                }
            }
        }
    }

    /// Raises the replica's notion of the current time (the driver's clock, in nanoseconds);
    /// it never goes backwards. Only the leader's entry timestamps use it.
    pub fn set_time_ns(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
    }

    /// Handles one message from peer `from`. Messages from outside the group are dropped.
    pub fn step(&mut self, from: ReplicaId, message: Message) {
        if from as usize >= self.config.replica_count || from == self.id() {
            return;
        }
        let owned = matches!(
            message,
            Message::Prepare { .. } | Message::Accept { .. } | Message::Commit { .. }
        );
        if owned && message.ballot().replica != from {
            return;
        }
        match message {
            Message::Prepare {
                ballot,
                commit_slot,
            } => self.on_prepare(from, ballot, commit_slot),
            Message::Promise {
                ballot,
                accepted,
                commit_slot,
            } => {
                self.on_promise(from, ballot, accepted, commit_slot);
            }
            Message::Accept {
                ballot,
                slot,
                entry,
                commit_slot,
            } => {
                self.on_accept(from, ballot, slot, entry, commit_slot);
            }
            Message::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot),
            Message::Commit {
                ballot,
                commit_slot,
                read_round,
            } => {
                self.on_commit(from, ballot, commit_slot, read_round);
            }
            Message::CommitAck {
                ballot,
                read_round,
                commit_slot,
            } => {
                self.on_commit_ack(from, ballot, read_round, commit_slot);
            }
            Message::Nack { ballot } => self.on_nack(ballot),
            Message::SnapshotChunk { .. } => self.on_snapshot_chunk(from, message),
            Message::SnapshotAck {
                ballot,
                snapshot_slot,
                next_offset_bytes,
            } => {
                self.on_snapshot_ack(from, ballot, snapshot_slot, next_offset_bytes);
            }
        }
        self.check_invariants();
    }

    /// Queues a client command at the leader; its reply comes in a later `Ready`.
    ///
    /// # Errors
    ///
    /// [`PaxosError::NotLeader`] on a non-leader, [`PaxosError::Busy`] when the queue holds
    /// `config.request_queue_max` requests.
    pub fn propose(&mut self, request_id: u64, command: Bytes) -> Result<()> {
        if self.role != Role::Leader {
            return Err(PaxosError::NotLeader {
                leader_hint: self.leader_hint,
            });
        }
        if self.requests.len() >= self.config.request_queue_max {
            return Err(PaxosError::Busy);
        }
        self.requests.push_back((request_id, command));
        Ok(())
    }

    /// Queues a linearizable read at the leader (read-index, I9); its reply comes in a later
    /// `Ready`, after a majority confirmed the leadership and the read slot is applied.
    ///
    /// # Errors
    ///
    /// [`PaxosError::NotLeader`] on a non-leader, [`PaxosError::Busy`] when
    /// `config.read_queue_max` reads wait.
    pub fn read(&mut self, request_id: u64, query: Bytes) -> Result<()> {
        if self.role != Role::Leader {
            return Err(PaxosError::NotLeader {
                leader_hint: self.leader_hint,
            });
        }
        if self.reads.len() >= self.config.read_queue_max {
            return Err(PaxosError::Busy);
        }
        self.read_enqueue(request_id, query);
        Ok(())
    }

    /// Collects the work for the driver: proposes queued requests, applies chosen slots,
    /// answers clients, and maybe takes a snapshot. See [`Ready`] for the driver's duties.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_proposals();
            self.flush_read_round();
        }
        let applied_start = self.applied_slot;
        self.apply_chosen();
        if self.applied_slot > applied_start {
            self.out.applied_slots = applied_start..self.applied_slot;
        }
        if self.role == Role::Leader {
            self.serve_reads();
        }
        self.maybe_snapshot();
        if self.hard_state_dirty {
            self.hard_state_dirty = false;
            self.out.hard_state = Some(HardState {
                promised: self.promised,
            });
        }
        self.ready_number += 1;
        let mut ready = std::mem::take(&mut self.out);
        ready.number = self.ready_number;
        let slots: Vec<(u64, Ballot)> = ready
            .entries_to_persist
            .iter()
            .map(|e| (e.slot, e.ballot))
            .collect();
        let promised = ready.hard_state.map(|hard_state| hard_state.promised);
        let snapshot_slot = ready.snapshot_to_persist.as_ref().map(|s| s.slot);
        if !slots.is_empty() || promised.is_some() || snapshot_slot.is_some() {
            let ready_number = ready.number;
            self.unpersisted.push_back(Unpersisted {
                ready_number,
                slots,
                promised,
                snapshot_slot,
            });
        }
        self.check_invariants();
        ready
    }

    /// Tells the core that every `Ready` up to `persisted.ready_number` is durable. The
    /// leader's own votes and a candidate's own promise count from now on (I2, I4).
    ///
    /// # Panics
    ///
    /// If `persisted.ready_number` names a `Ready` not handed out yet (a driver bug).
    pub fn advance(&mut self, persisted: Persisted) {
        assert!(
            persisted.ready_number <= self.ready_number,
            "advance beyond the last ready"
        );
        while let Some(front) = self.unpersisted.front() {
            if front.ready_number > persisted.ready_number {
                break;
            }
            let done = self.unpersisted.pop_front().expect("front exists");
            for (slot, ballot) in done.slots {
                if self.role == Role::Leader && ballot == self.ballot {
                    self.record_vote(self.id(), slot);
                }
            }
            if let Some(promised) = done.promised {
                self.advance_own_promise(promised);
            }
            if let Some(slot) = done.snapshot_slot {
                self.compact_log(slot);
            }
        }
        self.check_invariants();
    }

    pub(crate) fn send_now(&mut self, to: ReplicaId, message: Message) {
        self.out.messages_now.push(Envelope { to, message });
    }

    pub(crate) fn send_after_persist(&mut self, to: ReplicaId, message: Message) {
        self.out
            .messages_after_persist
            .push(Envelope { to, message });
    }

    pub(crate) fn peers(&self) -> impl Iterator<Item = ReplicaId> + use<S> {
        let me = self.id();
        let count = self.config.replica_count as u8;
        (0..count).filter(move |peer| *peer != me)
    }

    pub(crate) fn reset_election_timer(&mut self) {
        let min = self.config.election_timeout_min_ticks;
        let span = self.config.election_timeout_max_ticks - min + 1;
        self.election_elapsed_ticks = 0;
        self.election_timeout_ticks = min + self.random.next_u64() % span;
    }

    /// Raises the promised ballot; the new value is persisted with the next `Ready` (I4).
    pub(crate) fn promise(&mut self, ballot: Ballot) {
        assert!(ballot >= self.promised, "promised ballots only grow");
        if ballot > self.promised {
            self.promised = ballot;
            self.hard_state_dirty = true;
        }
        self.round_max_seen = self.round_max_seen.max(ballot.round);
    }

    /// Adopts `entry` at `slot == commit_slot` as chosen: a promiser reported it below its
    /// commit slot, and a log below the commit slot holds only chosen values (I4). It is
    /// written with the ballot it was accepted at (possibly above our promise: the value is
    /// chosen, so any ballot reports it correctly), unless the log holds it already.
    pub(crate) fn log_chosen(&mut self, slot: u64, ballot: Ballot, entry: Entry) {
        assert_eq!(
            slot, self.commit_slot,
            "chosen entries are adopted in order"
        );
        let held = self
            .log
            .get(&slot)
            .is_some_and(|current| current.entry == entry);
        if !held {
            self.timestamp_max_ns = self.timestamp_max_ns.max(entry.timestamp_ns);
            self.out.entries_to_persist.push(SlotEntry {
                slot,
                ballot,
                entry: entry.clone(),
            });
            self.log.insert(slot, LogSlot { ballot, entry });
        }
        self.commit_slot += 1;
    }

    /// Appends an accepted entry to the log and to the next `Ready`'s persist work.
    pub(crate) fn log_accept(&mut self, slot: u64, ballot: Ballot, entry: Entry) {
        assert!(slot >= self.commit_slot, "chosen slots are never rewritten");
        assert!(
            ballot <= self.promised,
            "never accept above the promise without raising it"
        );
        self.timestamp_max_ns = self.timestamp_max_ns.max(entry.timestamp_ns);
        self.out.entries_to_persist.push(SlotEntry {
            slot,
            ballot,
            entry: entry.clone(),
        });
        self.log.insert(slot, LogSlot { ballot, entry });
    }

    /// A timestamp for a new entry: the driver's time, but above every entry seen (I12).
    pub(crate) fn stamp(&mut self) -> u64 {
        let timestamp = self.now_ns.max(self.timestamp_max_ns.saturating_add(1));
        self.timestamp_max_ns = timestamp;
        timestamp
    }

    /// Becomes a follower of `leader_hint`; a leader fails its queued requests and reads, and
    /// answers its slotted requests that are not known chosen (`answer_unknown_slots`).
    pub(crate) fn become_follower(&mut self, leader_hint: Option<ReplicaId>) {
        if self.role == Role::Leader {
            self.answer_unknown_slots();
            let error = PaxosError::NotLeader { leader_hint };
            for (request_id, _) in std::mem::take(&mut self.requests) {
                self.out.replies.push(Reply {
                    request_id,
                    result: Err(error.clone()),
                });
            }
            for read in std::mem::take(&mut self.reads) {
                let request_id = read.request_id;
                self.out.replies.push(Reply {
                    request_id,
                    result: Err(error.clone()),
                });
            }
        }
        self.role = Role::Follower;
        self.leader = None;
        self.candidate = None;
        self.ballot = self.promised;
        self.leader_hint = leader_hint;
        self.reset_election_timer();
    }

    /// A deposed leader answers `OutcomeUnknown { slot }` at once for every request it put in
    /// a slot not known chosen (at or above the commit slot, not voted by a majority): the new
    /// leader may never propose at that slot (it may not know the entry, and an idle group
    /// proposes nothing more), so waiting for the slot to apply could wait for ever. The
    /// request may still be chosen, by a new leader re-proposing it; retrying with the same
    /// ledger ids is safe (I3). The requests leave `requests_in_slots`, so applying the slot
    /// later answers nothing more. Requests in slots known chosen stay: they hold this
    /// leader's entry, which every later leader re-proposes, and are answered when applied.
    fn answer_unknown_slots(&mut self) {
        let leader = self.leader.as_ref().expect("only a leader steps down");
        let unknown: Vec<u64> = self
            .requests_in_slots
            .range(self.commit_slot..)
            .map(|(slot, _)| *slot)
            .filter(|slot| !leader.in_flight.get(slot).is_some_and(|f| f.chosen))
            .collect();
        for slot in unknown {
            let request_ids = self.requests_in_slots.remove(&slot).unwrap_or_default();
            for request_id in request_ids {
                let result = Err(PaxosError::OutcomeUnknown { slot });
                self.out.replies.push(Reply { request_id, result });
            }
        }
    }

    /// Applies every chosen, unapplied slot in slot order (I6) and answers own requests.
    fn apply_chosen(&mut self) {
        while self.applied_slot < self.commit_slot {
            let slot = self.applied_slot;
            let entry = self
                .log
                .get(&slot)
                .expect("chosen slots are in the log")
                .entry
                .clone();
            let waiting = self.requests_in_slots.remove(&slot).unwrap_or_default();
            // The chosen value is either this replica's own entry for the slot, whose commands
            // are in the order of `waiting`, or another leader's that holds none of them (a
            // defensive case: a leader that steps down keeps only slots known chosen, which
            // hold its own entry).
            let mut answered_count = 0;
            for command in entry.commands.iter() {
                let reply = self
                    .state_machine
                    .apply(slot, entry.timestamp_ns, &command.payload);
                let mine = command.origin == self.id()
                    && waiting.get(answered_count) == Some(&command.request_id);
                if mine {
                    answered_count += 1;
                    let request_id = command.request_id;
                    self.out.replies.push(Reply {
                        request_id,
                        result: Ok(reply),
                    });
                }
            }
            for request_id in waiting.into_iter().skip(answered_count) {
                let result = Err(PaxosError::NotChosen { slot });
                self.out.replies.push(Reply { request_id, result });
            }
            self.timestamp_max_ns = self.timestamp_max_ns.max(entry.timestamp_ns);
            self.applied_slot += 1;
        }
    }

    fn maybe_snapshot(&mut self) {
        let pending = self.unpersisted.iter().any(|u| u.snapshot_slot.is_some());
        let due = self.applied_slot - self.log_start_slot >= self.config.snapshot_interval_slots;
        if pending || !due || self.out.snapshot_to_persist.is_some() {
            return;
        }
        let snapshot = SnapshotData {
            slot: self.applied_slot,
            last_timestamp_ns: self.timestamp_max_ns,
            bytes: Bytes::from(self.state_machine.encode_snapshot()),
        };
        self.out.snapshot_to_persist = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
    }

    /// Drops log entries below a durable snapshot's slot.
    fn compact_log(&mut self, slot: u64) {
        if slot <= self.log_start_slot {
            return;
        }
        assert!(
            slot <= self.applied_slot,
            "only applied slots are compacted"
        );
        self.log = self.log.split_off(&slot);
        self.log_start_slot = slot;
    }

    /// Installs a snapshot received from a peer: every slot below `snapshot.slot` is chosen.
    pub(crate) fn install_snapshot(&mut self, snapshot: SnapshotData) -> Result<()> {
        assert!(
            snapshot.slot > self.commit_slot,
            "only a snapshot ahead is installed"
        );
        self.state_machine.restore_snapshot(&snapshot.bytes)?;
        let slot = snapshot.slot;
        let mut kept = self.requests_in_slots.split_off(&slot);
        std::mem::swap(&mut kept, &mut self.requests_in_slots);
        for (covered_slot, request_ids) in kept {
            for request_id in request_ids {
                let result = Err(PaxosError::OutcomeUnknown { slot: covered_slot });
                self.out.replies.push(Reply { request_id, result });
            }
        }
        self.log = self.log.split_off(&slot);
        self.log_start_slot = slot;
        self.commit_slot = slot;
        self.applied_slot = slot;
        self.timestamp_max_ns = self.timestamp_max_ns.max(snapshot.last_timestamp_ns);
        self.out.snapshot_to_persist = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// Cheap structural invariants, checked after every step, ready and advance.
    pub(crate) fn check_invariants(&self) {
        assert!(self.log_start_slot <= self.applied_slot);
        assert!(self.applied_slot <= self.commit_slot);
        assert!(self.ballot <= self.promised || self.role == Role::Candidate);
        assert_eq!(self.role == Role::Leader, self.leader.is_some());
        assert_eq!(self.role == Role::Candidate, self.candidate.is_some());
        if let Some(leader) = &self.leader {
            assert_eq!(
                self.ballot, self.promised,
                "a leader holds its own ballot's promise"
            );
            assert!(leader.next_slot >= self.commit_slot);
        }
        if let Some((first, _)) = self.log.first_key_value() {
            assert!(*first >= self.log_start_slot);
        }
    }

    /// The O(n) check: every slot from the snapshot up to the commit slot is in the log.
    /// Used by tests and the simulator.
    ///
    /// # Panics
    ///
    /// If an invariant is broken (a bug).
    pub fn check_invariants_full(&self) {
        self.check_invariants();
        for slot in self.applied_slot..self.commit_slot {
            assert!(
                self.log.contains_key(&slot),
                "chosen slot {slot} missing from the log"
            );
        }
    }
}
