//! The simulated cluster: replicas, network, disks, clients and faults on one seeded RNG and
//! one event queue ordered by (simulated time, sequence number).
//!
//! ```text
//!  event queue ─▶ Tick(r) ─────────▶ replica.tick()      ┐
//!              ─▶ Deliver(from, to) ▶ replica.step()     ├─▶ drive(r): ready() ─▶ checks
//!              ─▶ Client ──────────▶ propose() / read()  ┘      │ messages_now ─▶ network
//!              ─▶ PersistDone(r) ─▶ LogStore::persist on FaultStorage (maybe torn / failing)
//!                                   ─▶ messages_after_persist ─▶ network, advance()
//!              ─▶ Fault: crash / restart / power loss / pause / partition;  Heal
//! ```
//!
//! Every check runs after every step; the first violation ends the run with its description.

use std::collections::{BTreeMap, VecDeque};

use ledger_wal::FaultStorage;

use crate::ballot::ReplicaId;
use crate::config::Config;
use crate::log_store::LogStore;
use crate::message::Message;
use crate::ready::{Envelope, Persisted, Ready};
use crate::replica::Replica;
use crate::sim::check_applied_prefix::AppliedDigests;
use crate::sim::check_durability::{DurableMirror, check_ack_durable, check_reply_durable};
use crate::sim::check_liveness::{Pending, PendingRequests};
use crate::sim::check_one_value::ChosenValues;
use crate::sim::machine::{HashChain, SimStateMachine};
use crate::sim::network::{Fate, Network};
use crate::sim::rng::{Fnv, SimRng};
use crate::sim::swarm::FaultProfile;

/// The interval between fault decisions.
pub const FAULT_STEP_US: u64 = 100_000;

/// What one simulation run does.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed of every random choice.
    pub seed: u64,
    /// The faults and load.
    pub profile: FaultProfile,
    /// Faults happen before this time; at it, everything heals.
    pub heal_us: u64,
    /// The run ends this long after the heal.
    pub after_heal_us: u64,
    /// Clients stop this long before the end, so every request can be answered.
    pub drain_us: u64,
    /// A leader must commit within this long after the heal (I11).
    pub leader_bound_us: u64,
    /// Print every delivered message from this time on (for replaying a failing seed; set by
    /// the environment variable `SIM_VERBOSE_FROM_US`).
    pub verbose_from_us: Option<u64>,
    /// No built-in clients: the caller submits requests ([`Simulator::submit`],
    /// [`Simulator::submit_read`]) and collects their replies ([`Simulator::take_replies`]);
    /// reads are checked by the caller, not by [`SimStateMachine::check_read`].
    pub external_workload: bool,
    /// The first fault decision happens at this time (faults then come every
    /// [`FAULT_STEP_US`]).
    pub faults_from_us: u64,
    /// Adjusts each replica's configuration after [`sim_config`] (e.g. larger snapshot chunks
    /// for a state machine with big snapshots).
    pub config_hook: Option<fn(&mut Config)>,
}

impl SimOptions {
    /// A fault-free run of `replica_count` replicas (network and disk latency only), for
    /// measurements such as failover time; faults are then injected by hand.
    pub fn calm(seed: u64, replica_count: usize) -> Self {
        SimOptions {
            seed,
            profile: FaultProfile::calm(replica_count),
            heal_us: 3_600_000_000,
            after_heal_us: 0,
            drain_us: 0,
            leader_bound_us: 3_000_000,
            verbose_from_us: None,
            external_workload: false,
            faults_from_us: FAULT_STEP_US,
            config_hook: None,
        }
    }

    /// A run with the profile drawn from the seed (swarm testing).
    pub fn from_seed(seed: u64) -> Self {
        let mut random = SimRng::new(seed ^ 0x5EED_5EED_5EED_5EED);
        SimOptions {
            seed,
            profile: FaultProfile::draw(&mut random),
            heal_us: 5_000_000,
            after_heal_us: 4_000_000,
            drain_us: 2_000_000,
            leader_bound_us: 3_000_000,
            verbose_from_us: std::env::var("SIM_VERBOSE_FROM_US")
                .ok()
                .and_then(|v| v.parse().ok()),
            external_workload: false,
            faults_from_us: FAULT_STEP_US,
            config_hook: None,
        }
    }
}

/// Counts of what happened in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Slots chosen (applied somewhere).
    pub chosen_slots: u64,
    /// Write requests acknowledged.
    pub acknowledged_writes: u64,
    /// Reads answered.
    pub answered_reads: u64,
    /// Requests answered with an error (not leader, not chosen, ...).
    pub failed_requests: u64,
    /// Single-replica crashes (including persist failures).
    pub crashes: u64,
    /// Power losses of every replica.
    pub power_losses: u64,
    /// Persists stopped by a torn write or a failed fsync.
    pub persist_failures: u64,
    /// Pauses.
    pub pauses: u64,
    /// Partitions drawn.
    pub partitions: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages dropped by loss or partitions.
    pub messages_dropped: u64,
    /// Torn persists stopped after the promise's write, in the entries or the snapshot.
    pub tears_past_promise: u64,
    /// Client requests sent, while two replicas believed they led, to the one of the higher
    /// index.
    pub requests_to_other_leader: u64,
    /// Bits flipped at rest.
    pub bit_flips: u64,
    /// Replicas whose recovery refused a flipped bit (they stay down).
    pub disk_losses: u64,
}

/// The answer to a request submitted with [`Simulator::submit`] or
/// [`Simulator::submit_read`] (external workload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalReply {
    /// The replica that answered (the one the request was submitted to).
    pub replica: usize,
    /// The id [`Simulator::submit`] returned.
    pub request_id: u64,
    /// The state machine's reply, or why the request failed.
    pub result: Result<bytes::Bytes, crate::PaxosError>,
}

#[derive(Debug)]
pub(crate) enum Event {
    Tick(usize),
    Deliver {
        from: ReplicaId,
        to: usize,
        message: Message,
    },
    PersistDone(usize),
    Client,
    Fault,
    Heal,
}

pub(crate) struct Node<M: SimStateMachine> {
    pub(crate) replica: Option<Replica<M>>,
    pub(crate) store: Option<LogStore<FaultStorage>>,
    pub(crate) storage: FaultStorage,
    pub(crate) incarnation: u64,
    pub(crate) paused_until_us: u64,
    pub(crate) disk_queue: VecDeque<Ready>,
    pub(crate) disk_free_us: u64,
    pub(crate) mirror: DurableMirror,
    pub(crate) applied_seen: u64,
    pub(crate) commit_seen: u64,
    /// A bit was flipped at rest since the last checked recovery.
    pub(crate) bit_flipped: bool,
    /// Recovery refused a flipped bit: the replica stays down for good.
    pub(crate) disk_lost: bool,
}

/// One simulation run over the state machine `M`. See the module docs.
pub struct Simulator<M: SimStateMachine = HashChain> {
    pub(crate) options: SimOptions,
    pub(crate) random: SimRng,
    pub(crate) now_us: u64,
    pub(crate) sequence: u64,
    pub(crate) queue: BTreeMap<(u64, u64), (Event, u64)>,
    pub(crate) nodes: Vec<Node<M>>,
    pub(crate) network: Network,
    pub(crate) chosen: ChosenValues,
    pub(crate) digests: AppliedDigests,
    pub(crate) pending: PendingRequests,
    pub(crate) acknowledged_slot_end: u64,
    pub(crate) request_id_next: u64,
    pub(crate) healed: bool,
    pub(crate) first_commit_after_heal_us: Option<u64>,
    pub(crate) commit_watch: Option<(u64, usize)>,
    pub(crate) commit_watch_hit_us: Option<u64>,
    pub(crate) trace: Fnv,
    /// Replies to external requests not taken yet.
    pub(crate) outbox: Vec<ExternalReply>,
    /// What happened so far.
    pub stats: SimStats,
}

/// The replica configuration the simulator uses: the defaults (10 ms ticks, 50 ms heartbeat,
/// 150–300 ms election timeout) with small batches, windows and snapshots so that pipelining,
/// compaction and chunked snapshot transfer happen in short runs.
pub fn sim_config(replica_id: ReplicaId, replica_count: usize) -> Config {
    let mut config = Config::new(replica_id, replica_count);
    config.pipeline_slots_max = 8;
    config.batch_count_max = 16;
    config.batch_size_bytes_max = 512;
    config.request_queue_max = 256;
    config.read_queue_max = 64;
    config.snapshot_interval_slots = 32;
    config.snapshot_chunk_size_bytes_max = 64;
    config.catch_up_slots_max = 16;
    config
}

fn message_code(message: &Message) -> u64 {
    match message {
        Message::Prepare { .. } => 1,
        Message::Promise { .. } => 2,
        Message::Accept { slot, .. } => 3 | slot << 8,
        Message::Accepted { slot, .. } => 4 | slot << 8,
        Message::Commit { commit_slot, .. } => 5 | commit_slot << 8,
        Message::CommitAck { .. } => 6,
        Message::Nack { .. } => 7,
        Message::SnapshotChunk { offset_bytes, .. } => 8 | offset_bytes << 8,
        Message::SnapshotAck { .. } => 9,
    }
}

/// A one-line description of a message, without entry contents.
pub fn describe_message(message: &Message) -> String {
    match message {
        Message::Promise {
            ballot,
            accepted,
            commit_slot,
        } => format!(
            "Promise {{ ballot: {ballot}, accepted: {} entries, commit_slot: {commit_slot} }}",
            accepted.len()
        ),
        Message::Accept {
            ballot,
            slot,
            entry,
            commit_slot,
        } => format!(
            "Accept {{ ballot: {ballot}, slot: {slot}, commands: {}, commit_slot: {commit_slot} }}",
            entry.commands.len()
        ),
        Message::SnapshotChunk {
            snapshot_slot,
            offset_bytes,
            total_size_bytes,
            data,
            ..
        } => {
            format!(
                "SnapshotChunk {{ slot: {snapshot_slot}, offset: {offset_bytes}, size: {}, \
                 total: {total_size_bytes} }}",
                data.len()
            )
        }
        other => format!("{other:?}"),
    }
}

impl<M: SimStateMachine> Simulator<M> {
    /// Builds the cluster and starts every replica from an empty disk.
    ///
    /// # Errors
    ///
    /// A description if a replica cannot start.
    pub fn new(options: SimOptions) -> Result<Self, String> {
        let replica_count = options.profile.replica_count;
        let nodes = (0..replica_count)
            .map(|index| Node {
                replica: None,
                store: None,
                storage: FaultStorage::new(
                    options.seed.wrapping_mul(31).wrapping_add(index as u64),
                ),
                incarnation: 0,
                paused_until_us: 0,
                disk_queue: VecDeque::new(),
                disk_free_us: 0,
                mirror: DurableMirror::default(),
                applied_seen: 0,
                commit_seen: 0,
                bit_flipped: false,
                disk_lost: false,
            })
            .collect();
        let mut simulator = Simulator {
            random: SimRng::new(options.seed),
            network: Network::new(&options.profile),
            now_us: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            nodes,
            chosen: ChosenValues::default(),
            digests: AppliedDigests::default(),
            pending: PendingRequests::default(),
            acknowledged_slot_end: 0,
            request_id_next: 1,
            healed: false,
            first_commit_after_heal_us: None,
            commit_watch: None,
            commit_watch_hit_us: None,
            trace: Fnv::default(),
            outbox: Vec::new(),
            stats: SimStats::default(),
            options,
        };
        for index in 0..replica_count {
            simulator.restart(index)?;
        }
        if !simulator.options.external_workload {
            simulator.schedule(0, Event::Client, 0);
        }
        simulator.schedule(simulator.options.faults_from_us, Event::Fault, 0);
        simulator.schedule(simulator.options.heal_us, Event::Heal, 0);
        Ok(simulator)
    }

    /// The current simulated time.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// The hash of everything that happened so far (I12).
    pub fn trace_hash(&self) -> u64 {
        self.trace.0
    }

    /// The replica that is leader (the first one found), if any live one is.
    pub fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.replica.as_ref().is_some_and(Replica::is_leader))
    }

    /// Reports, from now on, the first time a leader other than `excluded` commits a slot.
    pub fn watch_commit(&mut self, excluded: usize) {
        self.commit_watch = Some((self.now_us, excluded));
        self.commit_watch_hit_us = None;
    }

    /// When the watched commit happened.
    pub fn watched_commit_us(&self) -> Option<u64> {
        self.commit_watch_hit_us
    }

    pub(crate) fn schedule(&mut self, at_us: u64, event: Event, incarnation: u64) {
        self.sequence += 1;
        self.queue
            .insert((at_us, self.sequence), (event, incarnation));
    }

    /// Processes events up to `until_us`.
    ///
    /// # Errors
    ///
    /// The first invariant violation.
    pub fn run_until(&mut self, until_us: u64) -> Result<(), String> {
        while let Some(entry) = self.queue.first_entry() {
            let (at_us, _) = *entry.key();
            if at_us > until_us {
                break;
            }
            let (event, incarnation) = entry.remove();
            self.now_us = at_us;
            self.handle(event, incarnation)?;
        }
        self.now_us = until_us;
        Ok(())
    }

    fn handle(&mut self, event: Event, incarnation: u64) -> Result<(), String> {
        match event {
            Event::Tick(index) => self.on_tick(index, incarnation),
            Event::Deliver { from, to, message } => self.on_deliver(from, to, message),
            Event::PersistDone(index) => self.on_persist_done(index, incarnation),
            Event::Client => self.on_client(),
            Event::Fault => self.on_fault(),
            Event::Heal => self.on_heal(),
        }
    }

    pub(crate) fn is_live(&self, index: usize) -> bool {
        self.nodes[index].replica.is_some()
    }

    fn on_tick(&mut self, index: usize, incarnation: u64) -> Result<(), String> {
        let node = &self.nodes[index];
        if node.incarnation != incarnation || node.replica.is_none() {
            return Ok(());
        }
        let tick_us = node
            .replica
            .as_ref()
            .expect("live")
            .config()
            .tick_interval_ms
            * 1_000;
        self.schedule(self.now_us + tick_us, Event::Tick(index), incarnation);
        if self.nodes[index].paused_until_us > self.now_us {
            return Ok(());
        }
        self.trace.word(self.now_us);
        self.trace.word(index as u64);
        let replica = self.nodes[index].replica.as_mut().expect("live");
        replica.tick();
        // Like the driver after its ticks: the replica's clock is the (simulated) system
        // clock, which ran on while the process was down or paused, so a restarted leader's
        // entry timestamps (its shard's ledger time) do not start over from zero.
        replica.set_time_ns(self.now_us.saturating_mul(1_000));
        self.drive(index)
    }

    fn on_deliver(&mut self, from: ReplicaId, to: usize, message: Message) -> Result<(), String> {
        if !self.is_live(to) {
            return Ok(());
        }
        let paused_until_us = self.nodes[to].paused_until_us;
        if paused_until_us > self.now_us {
            // A paused process hears nothing; the message waits in its socket buffer and is
            // read a little after the wake-up, so the replica first acts on stale beliefs.
            let at_us = paused_until_us + self.random.range(0, 20_000);
            self.schedule(at_us, Event::Deliver { from, to, message }, 0);
            return Ok(());
        }
        self.trace.word(self.now_us);
        self.trace
            .word(message_code(&message) ^ (u64::from(from) << 56) ^ (to as u64) << 48);
        if self
            .options
            .verbose_from_us
            .is_some_and(|from_us| self.now_us >= from_us)
        {
            eprintln!(
                "{}us {from}->{to} {}",
                self.now_us,
                describe_message(&message)
            );
        }
        self.nodes[to]
            .replica
            .as_mut()
            .expect("live")
            .step(from, message);
        self.drive(to)
    }

    /// Sends `envelope` through the simulated network, after checking that a `Promise` or
    /// `Accepted` leaves only once what it vouches for is durable at `from` (I4).
    fn send(&mut self, from: usize, envelope: Envelope) -> Result<(), String> {
        let node = &self.nodes[from];
        let commit_slot = node.replica.as_ref().map_or(0, Replica::commit_slot);
        check_reply_durable(&node.mirror, from, commit_slot, &envelope.message)?;
        self.stats.messages_sent += 1;
        let to = envelope.to as usize;
        match self
            .network
            .send(&mut self.random, &self.options.profile, from, to)
        {
            Fate::Dropped => self.stats.messages_dropped += 1,
            Fate::Delivered {
                delay_us,
                duplicate_delay_us,
            } => {
                let from_id = from as ReplicaId;
                if let Some(duplicate_delay_us) = duplicate_delay_us {
                    let message = envelope.message.clone();
                    let event = Event::Deliver {
                        from: from_id,
                        to,
                        message,
                    };
                    self.schedule(self.now_us + duplicate_delay_us, event, 0);
                }
                let event = Event::Deliver {
                    from: from_id,
                    to,
                    message: envelope.message,
                };
                self.schedule(self.now_us + delay_us, event, 0);
            }
        }
        Ok(())
    }

    /// Takes the replica's `Ready`, checks it, sends `messages_now` and queues the persist.
    fn drive(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        let replica = node.replica.as_mut().expect("drive a live replica");
        let ready = replica.ready();
        replica.check_invariants_full();
        self.drive_check_applied(index, &ready)?;
        self.drive_check_replies(index, &ready)?;
        for envelope in ready.messages_now.iter().cloned() {
            self.send(index, envelope)?;
        }
        let has_persist_work = ready.has_persist_work();
        if has_persist_work || !ready.messages_after_persist.is_empty() {
            let profile = &self.options.profile;
            let latency_us = if has_persist_work {
                self.random
                    .range(profile.fsync_min_us, profile.fsync_max_us)
            } else {
                0
            };
            let node = &mut self.nodes[index];
            let done_us = self.now_us.max(node.disk_free_us) + latency_us;
            node.disk_free_us = done_us;
            node.disk_queue.push_back(ready);
            let incarnation = node.incarnation;
            self.schedule(done_us, Event::PersistDone(index), incarnation);
        }
        Ok(())
    }

    /// One value per slot, identical prefixes, and leader-commit detection.
    fn drive_check_applied(&mut self, index: usize, ready: &Ready) -> Result<(), String> {
        let node = &mut self.nodes[index];
        let replica = node.replica.as_ref().expect("live");
        let id = index as ReplicaId;
        for slot in ready.applied_slots.clone() {
            let (_, entry) = replica
                .log_entry(slot)
                .expect("an applied slot is still logged");
            let first = self.chosen.entry(slot).is_none();
            self.chosen.observe(id, slot, entry)?;
            if first {
                self.stats.chosen_slots += 1;
            }
        }
        if replica.applied_slot() != node.applied_seen {
            node.applied_seen = replica.applied_slot();
            let digest = replica.state_machine().state_digest();
            self.digests.observe(id, replica.applied_slot(), digest)?;
        }
        if replica.is_leader() && replica.commit_slot() > node.commit_seen {
            if self.healed && self.first_commit_after_heal_us.is_none() {
                self.first_commit_after_heal_us = Some(self.now_us);
            }
            if let Some((since_us, excluded)) = self.commit_watch {
                let hit = self.commit_watch_hit_us.is_none() && index != excluded;
                if hit && self.now_us >= since_us {
                    self.commit_watch_hit_us = Some(self.now_us);
                }
            }
        }
        node.commit_seen = replica.commit_slot();
        Ok(())
    }

    /// Every answer was owed; an acknowledged write is chosen and durable on a majority; a
    /// read saw every write acknowledged before it began.
    fn drive_check_replies(&mut self, index: usize, ready: &Ready) -> Result<(), String> {
        let id = index as ReplicaId;
        for reply in &ready.replies {
            self.trace
                .word(reply.request_id ^ u64::from(reply.result.is_ok()) << 63);
            let pending = self.pending.answered(id, reply.request_id)?;
            if self.options.external_workload {
                self.outbox.push(ExternalReply {
                    replica: index,
                    request_id: reply.request_id,
                    result: reply.result.clone(),
                });
            }
            let Ok(bytes) = &reply.result else {
                self.stats.failed_requests += 1;
                continue;
            };
            if pending.is_read {
                if !self.options.external_workload {
                    M::check_read(reply.request_id, bytes, pending.acknowledged_slot_end)?;
                }
                self.stats.answered_reads += 1;
                continue;
            }
            let slot = self.chosen.slot_of(id, reply.request_id).ok_or_else(|| {
                format!(
                    "I2: request {} acknowledged but never chosen",
                    reply.request_id
                )
            })?;
            let entry = self.chosen.entry(slot).expect("chosen slot has an entry");
            let mirrors: Vec<&DurableMirror> = self.nodes.iter().map(|n| &n.mirror).collect();
            check_ack_durable(&mirrors, slot, entry, reply.request_id)?;
            self.acknowledged_slot_end = self.acknowledged_slot_end.max(slot + 1);
            self.stats.acknowledged_writes += 1;
        }
        Ok(())
    }

    fn on_persist_done(&mut self, index: usize, incarnation: u64) -> Result<(), String> {
        let node = &mut self.nodes[index];
        if node.incarnation != incarnation || node.replica.is_none() {
            return Ok(());
        }
        if node.paused_until_us > self.now_us {
            let at_us = node.paused_until_us;
            self.schedule(at_us, Event::PersistDone(index), incarnation);
            return Ok(());
        }
        let ready = node.disk_queue.pop_front().expect("a persist was queued");
        let mut tear_past_promise = false;
        if !self.healed && ready.has_persist_work() {
            let profile = &self.options.profile;
            if self.random.chance(profile.torn_write_permille) {
                // Stop the machine at a random storage operation of the whole persist, so
                // tears hit the entry records and the snapshot as well as the promise.
                let budget = self.random.range(0, persist_operation_estimate(&ready) - 1);
                tear_past_promise =
                    ready.hard_state.is_some() && budget >= PROMISE_WRITE_OPERATIONS;
                self.nodes[index].storage.set_operation_budget(Some(budget));
            } else if self.random.chance(profile.fsync_error_permille) {
                self.nodes[index].storage.fail_next_sync();
            }
        }
        let node = &mut self.nodes[index];
        let persisted = node.store.as_mut().expect("live").persist(&ready);
        node.storage.set_operation_budget(None);
        if persisted.is_err() {
            self.stats.persist_failures += 1;
            self.stats.tears_past_promise += u64::from(tear_past_promise);
            self.crash(index);
            return Ok(());
        }
        node.mirror.record_persist(&ready);
        let number = ready.number;
        for envelope in ready.messages_after_persist {
            self.send(index, envelope)?;
        }
        let replica = self.nodes[index].replica.as_mut().expect("live");
        replica.advance(Persisted {
            ready_number: number,
        });
        self.drive(index)
    }

    fn on_client(&mut self) -> Result<(), String> {
        let end_us = self.options.heal_us + self.options.after_heal_us;
        let interval_us = self.options.profile.client_interval_us;
        if self.now_us + self.options.drain_us < end_us {
            let next_us = self.now_us + self.random.range(interval_us / 2, interval_us * 3 / 2);
            self.schedule(next_us, Event::Client, 0);
        }
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|index| {
                self.is_live(*index) && self.nodes[*index].paused_until_us <= self.now_us
            })
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        // Clients pick any replica believing it leads (two may, with different ballots),
        // else any live one.
        let leaders: Vec<usize> = live
            .iter()
            .copied()
            .filter(|index| {
                self.nodes[*index]
                    .replica
                    .as_ref()
                    .is_some_and(Replica::is_leader)
            })
            .collect();
        let choices = if leaders.is_empty() { &live } else { &leaders };
        let target = choices[self.random.index(choices.len())];
        if leaders.len() >= 2 && target != leaders[0] {
            self.stats.requests_to_other_leader += 1;
        }
        let request_id = self.request_id_next;
        self.request_id_next += 1;
        let is_read = self.random.chance(self.options.profile.read_permille);
        let replica = self.nodes[target].replica.as_mut().expect("live");
        let result = if is_read {
            replica.read(request_id, M::read_query(&mut self.random))
        } else {
            replica.propose(
                request_id,
                M::write_command(&mut self.random, request_id, target),
            )
        };
        if result.is_err() {
            self.stats.failed_requests += 1;
            return Ok(());
        }
        let acknowledged_slot_end = self.acknowledged_slot_end;
        let pending = Pending {
            submitted_us: self.now_us,
            is_read,
            acknowledged_slot_end,
        };
        self.pending
            .submitted(target as ReplicaId, request_id, pending);
        self.drive(target)
    }

    /// Runs the whole scenario: faults until the heal, then the liveness phase, then the
    /// final checks.
    ///
    /// # Errors
    ///
    /// The first invariant violation.
    pub fn run(&mut self) -> Result<(), String> {
        let end_us = self.options.heal_us + self.options.after_heal_us;
        self.run_until(end_us)?;
        crate::sim::check_liveness::check_leader_after_heal(
            self.options.heal_us,
            self.first_commit_after_heal_us,
            self.options.leader_bound_us,
        )?;
        self.check_end()
    }

    /// The end-of-run checks after the drain: every request a live replica accepted was
    /// answered, and every replica applied the same prefix, holding every acknowledged write.
    ///
    /// # Errors
    ///
    /// The first violation.
    pub fn check_end(&mut self) -> Result<(), String> {
        self.pending.check_all_answered(self.options.heal_us)?;
        self.check_converged()
    }

    /// The time of the next queued event, if any.
    pub fn next_event_us(&self) -> Option<u64> {
        self.queue.keys().next().map(|(at_us, _)| *at_us)
    }

    /// The number of replicas.
    pub fn replica_count(&self) -> usize {
        self.nodes.len()
    }

    /// Whether `replica` runs and is not paused.
    pub fn is_reachable(&self, replica: usize) -> bool {
        self.is_live(replica) && self.nodes[replica].paused_until_us <= self.now_us
    }

    /// Whether `replica` runs and believes it leads (two may, with different ballots).
    pub fn is_leader(&self, replica: usize) -> bool {
        self.nodes[replica]
            .replica
            .as_ref()
            .is_some_and(Replica::is_leader)
    }

    /// The state machine of `replica`, if it runs.
    pub fn state_machine(&self, replica: usize) -> Option<&M> {
        self.nodes[replica]
            .replica
            .as_ref()
            .map(Replica::state_machine)
    }

    /// The slot below which `replica` applied everything, if it runs.
    pub fn applied_slot(&self, replica: usize) -> Option<u64> {
        self.nodes[replica]
            .replica
            .as_ref()
            .map(Replica::applied_slot)
    }

    /// The value chosen at `slot`, once some replica applied it (and the simulator saw it).
    pub fn chosen_entry(&self, slot: u64) -> Option<&crate::Entry> {
        self.chosen.entry(slot)
    }

    /// Mixes `word` into the trace hash (for a caller driving an external workload).
    pub fn trace_word(&mut self, word: u64) {
        self.trace.word(word);
    }

    /// Submits a write to `replica` (external workload) at the current time; its reply comes
    /// through [`Simulator::take_replies`] unless the replica crashes first. The inner result
    /// is the request id, or why the replica refused it: [`crate::PaxosError::Shutdown`] if it
    /// is down or paused, else what [`Replica::propose`] answers (not leader, busy).
    ///
    /// # Errors
    ///
    /// An invariant violation found while the replica handled the request (the run is over).
    pub fn submit(
        &mut self,
        replica: usize,
        command: bytes::Bytes,
    ) -> Result<Result<u64, crate::PaxosError>, String> {
        self.submit_request(replica, command, false)
    }

    /// Submits a linearizable read to `replica` (external workload), like
    /// [`Simulator::submit`].
    ///
    /// # Errors
    ///
    /// As [`Simulator::submit`].
    pub fn submit_read(
        &mut self,
        replica: usize,
        query: bytes::Bytes,
    ) -> Result<Result<u64, crate::PaxosError>, String> {
        self.submit_request(replica, query, true)
    }

    fn submit_request(
        &mut self,
        target: usize,
        bytes: bytes::Bytes,
        is_read: bool,
    ) -> Result<Result<u64, crate::PaxosError>, String> {
        if !self.is_reachable(target) {
            return Ok(Err(crate::PaxosError::Shutdown));
        }
        let request_id = self.request_id_next;
        self.request_id_next += 1;
        self.trace.word(request_id ^ (target as u64) << 56);
        let replica = self.nodes[target].replica.as_mut().expect("live");
        let submitted = if is_read {
            replica.read(request_id, bytes)
        } else {
            replica.propose(request_id, bytes)
        };
        if let Err(refused) = submitted {
            return Ok(Err(refused));
        }
        let pending = Pending {
            submitted_us: self.now_us,
            is_read,
            acknowledged_slot_end: self.acknowledged_slot_end,
        };
        self.pending
            .submitted(target as ReplicaId, request_id, pending);
        self.drive(target)?;
        Ok(Ok(request_id))
    }

    /// The replies to external requests since the last call.
    pub fn take_replies(&mut self) -> Vec<ExternalReply> {
        std::mem::take(&mut self.outbox)
    }

    /// One line per replica: role, ballots, slots and queues (printed for failing seeds).
    pub fn describe_replicas(&self) -> String {
        let mut lines = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let line = match &node.replica {
                None => format!("replica {index}: down"),
                Some(r) => format!(
                    "replica {index}: {:?} ballot={} promised={} leader_hint={:?} commit={} \
                     applied={} log_start={} queued={} slotted={} reads={} paused_until={}us",
                    r.role(),
                    r.ballot(),
                    r.promised(),
                    r.leader_hint(),
                    r.commit_slot(),
                    r.applied_slot(),
                    r.log_start_slot(),
                    r.queued_request_count(),
                    r.slotted_request_count(),
                    r.pending_read_count(),
                    node.paused_until_us,
                ),
            };
            lines.push(line);
        }
        lines.join("\n")
    }

    /// After the drain every replica applied the same prefix.
    fn check_converged(&mut self) -> Result<(), String> {
        let mut applied = Vec::new();
        for node in self.nodes.iter().filter(|node| !node.disk_lost) {
            let replica = node
                .replica
                .as_ref()
                .expect("every replica runs after the heal");
            replica.check_invariants_full();
            applied.push(replica.applied_slot());
            self.trace.word(replica.applied_slot());
            self.trace.word(replica.state_machine().state_digest());
        }
        let max = applied.iter().copied().max().unwrap_or(0);
        if applied.iter().any(|slot| *slot != max) {
            return Err(format!(
                "I11: replicas did not converge after the drain: applied {applied:?}"
            ));
        }
        if max < self.acknowledged_slot_end {
            return Err(format!(
                "I2: an acknowledged write at slot {} is not in the final log (applied {max})",
                self.acknowledged_slot_end - 1
            ));
        }
        Ok(())
    }
}

/// The storage operations of the promise's atomic replace.
const PROMISE_WRITE_OPERATIONS: u64 = 5;

/// About how many storage operations `LogStore::persist` runs for `ready` (the promise's
/// atomic replace: create, write, sync, rename, directory sync; the entries: one write and one
/// sync; a snapshot: a sync, its file's atomic replace and compaction); at least 1.
fn persist_operation_estimate(ready: &Ready) -> u64 {
    let hard_state = if ready.hard_state.is_some() {
        PROMISE_WRITE_OPERATIONS
    } else {
        0
    };
    let entries = if ready.entries_to_persist.is_empty() {
        0
    } else {
        2
    };
    let snapshot = if ready.snapshot_to_persist.is_some() {
        8
    } else {
        0
    };
    (hard_state + entries + snapshot).max(1)
}
