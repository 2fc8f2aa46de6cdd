//! The driver: runs each replica of an in-process group on its own threads, with a
//! write-ahead log for durability, the in-process transport, and the wall clock turned into
//! ticks. This module alone owns threads, channels, files and the clock (STYLE §1).
//!
//! ```text
//!  ReplicaHandle::propose/read ──bounded──► requests ─┐
//!  peers (Transport) ─────────────bounded──► inbox ───┤   replica thread
//!  wall clock ─────────────────────────── ticks ──────┤   step / propose / read / tick
//!                                                     ▼
//!                                       Replica::ready() ── messages_now ──► Transport
//!                                             │        └─── replies ───────► blocked callers
//!                           persist jobs (bounded, in Ready::number order)
//!                                             ▼
//!                                       persist thread: append every queued Ready's hard state
//!                                       and entries, ONE write + ONE fdatasync for all of them,
//!                                       then send their messages_after_persist (I4)
//!                                             │
//!               durable ready number + doorbell ──► replica thread: Replica::advance (I2)
//! ```
//!
//! The replica thread never touches the disk: while one fsync is in flight it keeps stepping
//! messages and taking readies, and the persist thread takes every job queued meanwhile into
//! the next group commit. A failed write or fsync is never retried: the persist thread reports
//! it, the replica stops and is *poisoned* (its callers get that [`PaxosError::Storage`] error); a
//! restart recovers it from its files. No lock is held across I/O or across a blocking wait.

// The driver is where the wall clock is read and where callers block with deadlines.
#![allow(
    clippy::disallowed_methods,
    reason = "the driver is the one place that reads the clock"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam::channel::{self, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use ledger_wal::{FileStorage, Storage, WalOptions};
use parking_lot::{Mutex, RwLock};

use crate::ballot::ReplicaId;
use crate::config::{Config, REPLICA_COUNT_MAX};
use crate::error::{PaxosError, Result};
use crate::log_store::LogStore;
use crate::message::{Message, SlotEntry};
use crate::ready::{Envelope, HardState, Persisted, Ready, SnapshotData};
use crate::replica::Replica;
use crate::state_machine::StateMachine;
use crate::transport::{ChannelNetwork, ChannelTransport, Inbound, Transport};

/// Client requests queued for one replica thread; a full queue makes callers wait (up to their
/// timeout) instead of growing memory.
pub const REQUEST_QUEUE_COUNT_MAX: usize = 4_096;
/// Requests one replica has handed to its core and not answered yet; beyond it new requests
/// are answered [`PaxosError::Busy`].
pub const WAITER_COUNT_MAX: usize = 65_536;
/// Readies queued for the persist thread; a full queue makes the replica thread wait for the
/// disk (backpressure), which is the only place it ever waits on storage.
pub const PERSIST_QUEUE_READY_COUNT_MAX: usize = 256;
/// The most readies one group commit (one write and one fdatasync) takes.
pub const PERSIST_BATCH_READY_COUNT_MAX: usize = 256;
/// The most peer messages, and separately client requests, the replica thread takes from its
/// queues before it calls `ready()` (so a flood cannot starve ticks and persistence).
pub const DRAIN_COUNT_MAX: usize = 1_024;
/// After a stall (a paused process, a slow machine) at most this many missed ticks are replayed
/// at once; the rest of the stall is skipped.
pub const TICK_CATCH_UP_COUNT_MAX: u32 = 100;
/// How often the replica thread forgets requests whose callers gave up.
const WAITER_SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// The longest timeout honoured; longer ones are clamped (an `Instant` must not overflow).
const CALL_TIMEOUT_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a caller asks of a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestKind {
    Propose,
    Read,
}

/// A caller's request on its way to the replica thread, with the channel its answer goes to.
struct Request {
    kind: RequestKind,
    payload: Bytes,
    deadline: Instant,
    reply: Sender<Result<Bytes>>,
}

/// A request the core holds, waiting for its `Reply`.
struct Waiter {
    reply: Sender<Result<Bytes>>,
    deadline: Instant,
}

/// How a replica thread is told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    /// Stop at once: nothing queued for the disk is written, no message waiting for an fsync
    /// leaves. What the OS already has stays (that is all a process crash can promise).
    Crash,
    /// Stop taking requests, let the persist thread finish what is queued, then stop.
    Shutdown,
}

/// What a replica publishes for its handles and for [`Group::leader`]; written only by its
/// replica thread (and by the group when it stops the replica).
#[derive(Debug, Default)]
struct Status {
    running: AtomicBool,
    leader: AtomicBool,
    ballot_round: AtomicU64,
    commit_slot: AtomicU64,
    applied_slot: AtomicU64,
    /// Why the replica stopped, if storage failed: later calls get this error.
    failure: Mutex<Option<PaxosError>>,
}

/// The state a replica's handles share with its threads and its group.
#[derive(Debug)]
struct HandleShared {
    index: ReplicaId,
    /// The running replica's request queue; `None` while it is stopped.
    requests: RwLock<Option<Sender<Request>>>,
    status: Status,
}

/// A replica's self-description, as last published by its replica thread.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// Whether its threads run.
    pub running: bool,
    /// Whether it believes it leads.
    pub leader: bool,
    /// The round of its current ballot.
    pub ballot_round: u64,
    /// Every slot below this one is known chosen.
    pub commit_slot: u64,
    /// Every slot below this one is applied to its state machine.
    pub applied_slot: u64,
    /// The storage failure that stopped it, if one did.
    pub failure: Option<PaxosError>,
}

/// A caller's way into one replica of a [`Group`]: `Clone + Send + Sync`, cheap to clone, and
/// valid across crashes and restarts of that replica.
///
/// Calls block the calling thread until the replica answers or the timeout passes; many
/// threads may call at once and their commands are batched into the same log entries.
#[derive(Clone, Debug)]
pub struct ReplicaHandle {
    shared: Arc<HandleShared>,
}

impl ReplicaHandle {
    fn new(index: ReplicaId) -> Self {
        let shared = HandleShared {
            index,
            requests: RwLock::new(None),
            status: Status::default(),
        };
        ReplicaHandle {
            shared: Arc::new(shared),
        }
    }

    /// The replica's index in its group.
    pub fn index(&self) -> ReplicaId {
        self.shared.index
    }

    /// Whether the replica's threads are running.
    pub fn is_running(&self) -> bool {
        self.shared.status.running.load(Ordering::Acquire)
    }

    /// Whether the replica believed itself the leader when it last published its status.
    pub fn is_leader(&self) -> bool {
        self.is_running() && self.shared.status.leader.load(Ordering::Acquire)
    }

    /// What the replica last published about itself (for monitoring and tests).
    pub fn status(&self) -> ReplicaStatus {
        let status = &self.shared.status;
        ReplicaStatus {
            running: self.is_running(),
            leader: self.is_leader(),
            ballot_round: status.ballot_round.load(Ordering::Acquire),
            commit_slot: status.commit_slot.load(Ordering::Acquire),
            applied_slot: status.applied_slot.load(Ordering::Acquire),
            failure: status.failure.lock().clone(),
        }
    }

    /// Proposes `command` and blocks until it is chosen by a majority, durable on it, and
    /// applied here; returns the state machine's reply.
    ///
    /// # Errors
    ///
    /// [`PaxosError::NotLeader`] with a hint where to go; [`PaxosError::Busy`] when queues are
    /// full; [`PaxosError::Timeout`] when `timeout` passes first (the command may still be
    /// chosen later: retry it with the same ledger ids, I3); [`PaxosError::NotChosen`] /
    /// [`PaxosError::OutcomeUnknown`] after a leader change; [`PaxosError::Shutdown`] when the
    /// replica is stopped or crashed (outcome unknown); [`PaxosError::Storage`] when the
    /// replica stopped after a storage failure.
    pub fn propose(&self, command: Bytes, timeout: Duration) -> Result<Bytes> {
        self.call(RequestKind::Propose, command, timeout)
    }

    /// Runs `query` against the state machine linearizably (a read-index round confirms the
    /// leadership first, I9) and returns its answer.
    ///
    /// # Errors
    ///
    /// As [`ReplicaHandle::propose`].
    pub fn read(&self, query: Bytes, timeout: Duration) -> Result<Bytes> {
        self.call(RequestKind::Read, query, timeout)
    }

    fn call(&self, kind: RequestKind, payload: Bytes, timeout: Duration) -> Result<Bytes> {
        let deadline = Instant::now() + timeout.min(CALL_TIMEOUT_MAX);
        // Clone the sender and release the lock at once: the wait below holds no lock.
        let requests = self.shared.requests.read().clone();
        let Some(requests) = requests else {
            return Err(self.stopped_error());
        };
        let (reply, answer) = channel::bounded(1);
        let request = Request {
            kind,
            payload,
            deadline,
            reply,
        };
        match requests.send_deadline(request, deadline) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(PaxosError::Timeout),
            Err(SendTimeoutError::Disconnected(_)) => return Err(self.stopped_error()),
        }
        drop(requests);
        match answer.recv_deadline(deadline) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(PaxosError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(self.stopped_error()),
        }
    }

    fn stopped_error(&self) -> PaxosError {
        self.shared
            .status
            .failure
            .lock()
            .clone()
            .unwrap_or(PaxosError::Shutdown)
    }
}

/// One `Ready`'s persist work and the messages that wait for it.
struct PersistJob {
    ready_number: u64,
    hard_state: Option<HardState>,
    entries: Vec<SlotEntry>,
    snapshot: Option<SnapshotData>,
    messages: Vec<Envelope>,
}

/// What the persist thread reports to the replica thread. The replica thread learns of changes
/// through the doorbell channel, so neither thread ever blocks on the other's queue.
#[derive(Debug, Default)]
struct PersistProgress {
    /// Every `Ready` up to this number is durable and its messages left.
    durable_ready_number: AtomicU64,
    /// Set on a write or fsync failure; the persist thread has stopped.
    failure: Mutex<Option<PaxosError>>,
    /// Set by a crash: write nothing more, send nothing more.
    crashed: AtomicBool,
}

/// The persist thread: takes every job queued (up to [`PERSIST_BATCH_READY_COUNT_MAX`]),
/// persists them with one group commit, then lets their `messages_after_persist` leave (I4)
/// and reports the durable `Ready` number.
fn persist_run<St: Storage>(
    mut store: LogStore<St>,
    jobs: &Receiver<PersistJob>,
    progress: &PersistProgress,
    doorbell: &Sender<()>,
    transport: &ChannelTransport<Message>,
) {
    let mut batch = Vec::with_capacity(PERSIST_BATCH_READY_COUNT_MAX);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < PERSIST_BATCH_READY_COUNT_MAX {
            let Ok(job) = jobs.try_recv() else { break };
            batch.push(job);
        }
        if progress.crashed.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = persist_batch(&mut store, &batch) {
            // Never retried: after a failed fsync the page cache may have dropped the data.
            *progress.failure.lock() = Some(error);
            let _ = doorbell.try_send(());
            return;
        }
        if progress.crashed.load(Ordering::Acquire) {
            return;
        }
        let last = batch.last().map_or(0, |job| job.ready_number);
        for job in batch.drain(..) {
            for envelope in job.messages {
                transport.send(envelope.to, envelope.message);
            }
        }
        progress.durable_ready_number.store(last, Ordering::Release);
        // A full doorbell already holds a wake-up; the replica thread reads the number itself.
        let _ = doorbell.try_send(());
    }
}

/// Persists a batch of readies in `Ready::number` order with one log sync for all of their
/// entries: hard state (its own atomic metadata write), entries, snapshot (which syncs the
/// entries before it first).
fn persist_batch<St: Storage>(store: &mut LogStore<St>, batch: &[PersistJob]) -> Result<()> {
    let mut unsynced = false;
    for job in batch {
        if let Some(hard_state) = job.hard_state {
            store.write_hard_state(hard_state)?;
        }
        if !job.entries.is_empty() {
            store.append_entries(&job.entries)?;
            unsynced = true;
        }
        if let Some(snapshot) = &job.snapshot {
            store.write_snapshot(snapshot)?;
            unsynced = false;
        }
    }
    if unsynced {
        store.sync()?;
    }
    Ok(())
}

/// Turns the wall clock into ticks of the core.
#[derive(Debug)]
struct TickClock {
    interval: Duration,
    tick_next_at: Instant,
}

impl TickClock {
    fn new(interval: Duration, now: Instant) -> Self {
        assert!(!interval.is_zero(), "a tick lasts at least 1 ms");
        TickClock {
            interval,
            tick_next_at: now + interval,
        }
    }

    fn until_next_tick(&self, now: Instant) -> Duration {
        self.tick_next_at.saturating_duration_since(now)
    }

    /// How many ticks are due at `now`, at most [`TICK_CATCH_UP_COUNT_MAX`].
    fn due(&mut self, now: Instant) -> u32 {
        let mut count = 0;
        while self.tick_next_at <= now {
            if count == TICK_CATCH_UP_COUNT_MAX {
                self.tick_next_at = now + self.interval;
                break;
            }
            self.tick_next_at += self.interval;
            count += 1;
        }
        count
    }
}

fn unix_time_ns() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

/// The replica thread's state: the core, its queues, and the callers waiting for it.
struct ReplicaLoop<S: StateMachine> {
    replica: Replica<S>,
    transport: ChannelTransport<Message>,
    inbox: Receiver<Inbound<Message>>,
    requests: Receiver<Request>,
    control: Receiver<Control>,
    doorbell: Receiver<()>,
    jobs: Sender<PersistJob>,
    progress: Arc<PersistProgress>,
    shared: Arc<HandleShared>,
    waiters: HashMap<u64, Waiter>,
    /// Ids start at the wall clock's nanoseconds so that a restarted replica never reuses an id
    /// a previous incarnation put into the log.
    request_id_next: u64,
    ticks: TickClock,
    waiter_sweep_at: Instant,
    /// The last `Ready` handed to the persist thread.
    ready_number_queued: u64,
    /// The last `Ready` the core was told is durable.
    ready_number_advanced: u64,
}

impl<S: StateMachine> ReplicaLoop<S> {
    fn run(mut self) {
        loop {
            let timeout = self.ticks.until_next_tick(Instant::now());
            crossbeam::select! {
                recv(self.control) -> control => {
                    self.on_control(control.unwrap_or(Control::Crash));
                    return;
                }
                recv(self.inbox) -> inbound => {
                    if let Ok(inbound) = inbound {
                        self.replica.step(inbound.from, inbound.message);
                    }
                }
                recv(self.requests) -> request => {
                    if let Ok(request) = request {
                        self.on_request(request);
                    }
                }
                recv(self.doorbell) -> _ => {}
                default(timeout) => {}
            }
            if let Err(error) = self.round() {
                self.on_failure(error);
                return;
            }
        }
    }

    /// Everything after a wake-up: take what else is queued, advance durability, tick, and
    /// hand the resulting `Ready` out.
    fn round(&mut self) -> Result<()> {
        self.drain();
        self.on_persisted()?;
        self.on_clock(Instant::now());
        self.on_ready()?;
        self.publish_status();
        Ok(())
    }

    fn publish_status(&self) {
        let status = &self.shared.status;
        status
            .leader
            .store(self.replica.is_leader(), Ordering::Release);
        status
            .ballot_round
            .store(self.replica.ballot().round, Ordering::Release);
        status
            .commit_slot
            .store(self.replica.commit_slot(), Ordering::Release);
        status
            .applied_slot
            .store(self.replica.applied_slot(), Ordering::Release);
    }

    fn drain(&mut self) {
        for _ in 0..DRAIN_COUNT_MAX {
            let Ok(inbound) = self.inbox.try_recv() else {
                break;
            };
            self.replica.step(inbound.from, inbound.message);
        }
        for _ in 0..DRAIN_COUNT_MAX {
            let Ok(request) = self.requests.try_recv() else {
                break;
            };
            self.on_request(request);
        }
    }

    fn on_request(&mut self, request: Request) {
        if request.deadline <= Instant::now() {
            return; // The caller has given up.
        }
        if self.waiters.len() >= WAITER_COUNT_MAX {
            let _ = request.reply.try_send(Err(PaxosError::Busy));
            return;
        }
        let request_id = self.request_id_next;
        self.request_id_next += 1;
        let accepted = match request.kind {
            RequestKind::Propose => self.replica.propose(request_id, request.payload),
            RequestKind::Read => self.replica.read(request_id, request.payload),
        };
        match accepted {
            Ok(()) => {
                let waiter = Waiter {
                    reply: request.reply,
                    deadline: request.deadline,
                };
                let previous = self.waiters.insert(request_id, waiter);
                assert!(previous.is_none(), "request ids are unique");
            }
            Err(error) => {
                let _ = request.reply.try_send(Err(error));
            }
        }
    }

    /// Tells the core what became durable, or fails if the persist thread did.
    fn on_persisted(&mut self) -> Result<()> {
        if let Some(error) = self.progress.failure.lock().take() {
            return Err(error);
        }
        let durable = self.progress.durable_ready_number.load(Ordering::Acquire);
        assert!(
            durable <= self.ready_number_queued,
            "durable beyond what was queued"
        );
        if durable > self.ready_number_advanced {
            self.replica.advance(Persisted {
                ready_number: durable,
            });
            self.ready_number_advanced = durable;
        }
        Ok(())
    }

    fn on_clock(&mut self, now: Instant) {
        for _ in 0..self.ticks.due(now) {
            self.replica.tick();
        }
        self.replica.set_time_ns(unix_time_ns());
        if now >= self.waiter_sweep_at {
            self.waiters.retain(|_, waiter| waiter.deadline > now);
            self.waiter_sweep_at = now + WAITER_SWEEP_INTERVAL;
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        let mut ready = self.replica.ready();
        for envelope in ready.messages_now.drain(..) {
            self.transport.send(envelope.to, envelope.message);
        }
        for reply in ready.replies.drain(..) {
            if let Some(waiter) = self.waiters.remove(&reply.request_id) {
                // A caller that gave up dropped its receiver; nothing else can fail here.
                let _ = waiter.reply.try_send(reply.result);
            }
        }
        let persist_in_flight =
            self.ready_number_queued > self.progress.durable_ready_number.load(Ordering::Acquire);
        if !ready.has_persist_work() && !persist_in_flight {
            // Nothing to wait for: these messages depend on no pending write.
            for envelope in ready.messages_after_persist {
                self.transport.send(envelope.to, envelope.message);
            }
            return Ok(());
        }
        if !ready.has_persist_work() && ready.messages_after_persist.is_empty() {
            return Ok(());
        }
        self.on_ready_queue(ready)
    }

    /// Queues a `Ready`'s persist work (and its waiting messages, which must not overtake an
    /// earlier write still in flight) for the persist thread.
    fn on_ready_queue(&mut self, ready: Ready) -> Result<()> {
        assert!(
            ready.number > self.ready_number_queued,
            "readies are queued in order"
        );
        let job = PersistJob {
            ready_number: ready.number,
            hard_state: ready.hard_state,
            entries: ready.entries_to_persist,
            snapshot: ready.snapshot_to_persist,
            messages: ready.messages_after_persist,
        };
        self.ready_number_queued = ready.number;
        if self.jobs.send(job).is_err() {
            // The persist thread stopped: after a failure (reported below) or a crash.
            return Err(self
                .progress
                .failure
                .lock()
                .take()
                .unwrap_or(PaxosError::Shutdown));
        }
        Ok(())
    }

    fn on_control(self, control: Control) {
        match control {
            Control::Crash => self.progress.crashed.store(true, Ordering::Release),
            // Dropping `self.jobs` (with `self`) lets the persist thread finish its queue.
            Control::Shutdown => {}
        }
    }

    fn on_failure(self, error: PaxosError) {
        for (_, waiter) in self.waiters {
            let _ = waiter.reply.try_send(Err(error.clone()));
        }
        if error != PaxosError::Shutdown {
            *self.shared.status.failure.lock() = Some(error);
        }
    }
}

/// Marks a replica stopped when its replica thread ends, even by a panic.
struct StoppedOnDrop(Arc<HandleShared>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        *self.0.requests.write() = None;
        self.0.status.leader.store(false, Ordering::Release);
        self.0.status.running.store(false, Ordering::Release);
    }
}

/// A running replica's threads and the means to stop them.
struct Running {
    control: Sender<Control>,
    progress: Arc<PersistProgress>,
    replica_thread: JoinHandle<()>,
    persist_thread: JoinHandle<()>,
}

/// Where one replica of the group is in its life.
enum Lifecycle {
    Stopped,
    /// Being started or stopped by another caller.
    Changing,
    Running(Running),
}

/// Starts a replica of the group from its directory; captures the state machine factory so
/// that [`Group`] itself is not generic.
type Starter = dyn Fn(&ReplicaHandle) -> Result<Running> + Send + Sync;

/// One Paxos group of N replicas in this process, each on its own threads with its own
/// directory, connected by the in-process transport.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use bytes::Bytes;
/// use ledger_paxos::driver::Group;
/// use ledger_paxos::{Config, StateMachine};
/// # #[derive(Default)] struct Counter(u64);
/// # impl StateMachine for Counter {
/// #     fn apply(&mut self, _: u64, _: u64, _: &[u8]) -> Bytes { self.0 += 1; Bytes::from(self.0.to_le_bytes().to_vec()) }
/// #     fn query(&self, _: &[u8]) -> Bytes { Bytes::from(self.0.to_le_bytes().to_vec()) }
/// #     fn encode_snapshot(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
/// #     fn restore_snapshot(&mut self, _: &[u8]) -> ledger_paxos::Result<()> { Ok(()) }
/// # }
/// let dirs = (0..3).map(|i| std::env::temp_dir().join(format!("group-doc-{i}"))).collect();
/// let group = Group::open(dirs, Config::new(0, 3), Counter::default)?;
/// let leader = loop {
///     if let Some(leader) = group.leader() { break leader; }
///     std::thread::sleep(Duration::from_millis(10));
/// };
/// let reply = group.replica(leader).propose(Bytes::from_static(b"+1"), Duration::from_secs(5))?;
/// assert_eq!(reply.len(), 8);
/// group.shutdown();
/// # Ok::<(), ledger_paxos::PaxosError>(())
/// ```
pub struct Group {
    handles: Vec<ReplicaHandle>,
    lifecycles: Vec<Mutex<Lifecycle>>,
    network: Arc<ChannelNetwork<Message>>,
    starter: Box<Starter>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Group")
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// Opens a group of `dirs.len()` replicas, replica `i` recovering from `dirs[i]` (created
    /// if missing), and starts them. `config` is the template: each replica gets it with its
    /// own `replica_id` and `replica_count = dirs.len()`. The log is fsynced on every write
    /// (`SyncPolicy::EveryWrite`).
    ///
    /// # Errors
    ///
    /// [`PaxosError::InvalidConfig`] for a bad configuration or group size;
    /// [`PaxosError::Storage`] / [`PaxosError::Malformed`] when a directory cannot be opened or
    /// recovered (corruption is reported, never skipped, I8).
    pub fn open<S, F>(dirs: Vec<PathBuf>, config: Config, make_state_machine: F) -> Result<Self>
    where
        S: StateMachine,
        F: Fn() -> S + Send + Sync + 'static,
    {
        Self::open_with(dirs, config, WalOptions::default(), make_state_machine)
    }

    /// As [`Group::open`], with explicit log options.
    ///
    /// # Errors
    ///
    /// As [`Group::open`].
    pub fn open_with<S, F>(
        dirs: Vec<PathBuf>,
        config: Config,
        wal_options: WalOptions,
        make_state_machine: F,
    ) -> Result<Self>
    where
        S: StateMachine,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let replica_count = dirs.len();
        let open_storage = move |index: ReplicaId| {
            let dir = &dirs[usize::from(index)];
            std::fs::create_dir_all(dir).map_err(ledger_wal::WalError::from)?;
            let wal_storage = FileStorage::open(dir).map_err(ledger_wal::WalError::from)?;
            let meta_storage = FileStorage::open(dir).map_err(ledger_wal::WalError::from)?;
            Ok((wal_storage, meta_storage))
        };
        Self::open_with_storage(
            replica_count,
            config,
            wal_options,
            open_storage,
            make_state_machine,
        )
    }

    /// As [`Group::open_with`], on any [`Storage`]: `open_storage(i)` returns replica `i`'s
    /// two handles on its directory (log and metadata), at open and at every restart. With
    /// `ledger_wal::FaultStorage` a test can fail an fsync or drop what was not synced.
    ///
    /// # Errors
    ///
    /// As [`Group::open`], and whatever `open_storage` returns.
    pub fn open_with_storage<S, St, F, G>(
        replica_count: usize,
        config: Config,
        wal_options: WalOptions,
        open_storage: G,
        make_state_machine: F,
    ) -> Result<Self>
    where
        S: StateMachine,
        St: Storage,
        F: Fn() -> S + Send + Sync + 'static,
        G: Fn(ReplicaId) -> Result<(St, St)> + Send + Sync + 'static,
    {
        if replica_count == 0 || replica_count > REPLICA_COUNT_MAX {
            return Err(PaxosError::InvalidConfig {
                reason: "a group has 1..=31 replicas",
            });
        }
        let network = ChannelNetwork::new(replica_count);
        let handles: Vec<ReplicaHandle> = (0..replica_count)
            .map(|index| ReplicaHandle::new(index as ReplicaId))
            .collect();
        let starter_network = Arc::clone(&network);
        let starter = move |handle: &ReplicaHandle| {
            let mut replica_config = config.clone();
            replica_config.replica_id = handle.index();
            replica_config.replica_count = replica_count;
            let storages = open_storage(handle.index())?;
            let parts = (replica_config, wal_options.clone(), make_state_machine());
            start_replica(storages, parts, &starter_network, handle)
        };
        let group = Group {
            lifecycles: (0..replica_count)
                .map(|_| Mutex::new(Lifecycle::Stopped))
                .collect(),
            handles,
            network,
            starter: Box::new(starter),
        };
        for index in 0..replica_count {
            group.restart(index)?; // On an error `group` drops, stopping those started.
        }
        Ok(group)
    }

    /// The number of replicas.
    pub fn replica_count(&self) -> usize {
        self.handles.len()
    }

    /// The handle of replica `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`Group::replica_count`].
    pub fn replica(&self, index: usize) -> &ReplicaHandle {
        &self.handles[index]
    }

    /// The running replica that believes it leads with the highest ballot, if any. A belief,
    /// not a guarantee: a call to it may still answer [`PaxosError::NotLeader`].
    pub fn leader(&self) -> Option<usize> {
        self.handles
            .iter()
            .enumerate()
            .filter(|(_, handle)| handle.is_leader())
            .max_by_key(|(_, handle)| handle.shared.status.ballot_round.load(Ordering::Acquire))
            .map(|(index, _)| index)
    }

    /// How many messages the transport dropped (full or disconnected inboxes).
    pub fn dropped_message_count(&self) -> u64 {
        self.network.dropped_message_count()
    }

    /// How many messages the transport dropped because an inbox was full.
    pub fn overflow_message_count(&self) -> u64 {
        self.network.overflow_message_count()
    }

    /// Stops replica `index` abruptly, as a process crash would: nothing queued for its disk is
    /// written and no message waiting for an fsync leaves; what the OS already has stays.
    /// Its callers get [`PaxosError::Shutdown`]. Does nothing to a stopped replica.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`Group::replica_count`], or re-raises the panic of a replica
    /// thread that died of one (a bug).
    pub fn crash(&self, index: usize) {
        self.stop(index, Control::Crash);
    }

    /// Restarts replica `index` from its directory (recovery through the log store); a running
    /// replica is crashed first.
    ///
    /// # Errors
    ///
    /// As [`Group::open`]; [`PaxosError::Busy`] while another caller starts or stops it.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`Group::replica_count`].
    pub fn restart(&self, index: usize) -> Result<()> {
        self.stop(index, Control::Crash);
        {
            let mut lifecycle = self.lifecycles[index].lock();
            if !matches!(*lifecycle, Lifecycle::Stopped) {
                return Err(PaxosError::Busy);
            }
            *lifecycle = Lifecycle::Changing;
        }
        // Recovery reads files: no lock is held meanwhile.
        let started = (self.starter)(&self.handles[index]);
        let mut lifecycle = self.lifecycles[index].lock();
        match started {
            Ok(running) => {
                *lifecycle = Lifecycle::Running(running);
                Ok(())
            }
            Err(error) => {
                *lifecycle = Lifecycle::Stopped;
                Err(error)
            }
        }
    }

    /// Stops every replica gracefully: requests stop, queued writes are finished and synced.
    /// Waiting callers get [`PaxosError::Shutdown`].
    ///
    /// # Panics
    ///
    /// Re-raises the panic of a replica thread that died of one (a bug).
    pub fn shutdown(&self) {
        for index in 0..self.handles.len() {
            self.stop(index, Control::Shutdown);
        }
    }

    fn stop(&self, index: usize, control: Control) {
        let running = {
            let mut lifecycle = self.lifecycles[index].lock();
            match std::mem::replace(&mut *lifecycle, Lifecycle::Changing) {
                Lifecycle::Running(running) => running,
                other => {
                    *lifecycle = other;
                    return;
                }
            }
        };
        if control == Control::Crash {
            running.progress.crashed.store(true, Ordering::Release);
        }
        let _ = running.control.try_send(control);
        self.network.disconnect(index as ReplicaId);
        let replica_joined = running.replica_thread.join();
        let persist_joined = running.persist_thread.join();
        *self.lifecycles[index].lock() = Lifecycle::Stopped;
        for joined in [replica_joined, persist_joined] {
            if let Err(panic) = joined {
                if !thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Recovers replica `handle.index()` from its storage and starts its replica and persist
/// threads.
fn start_replica<S: StateMachine, St: Storage>(
    (wal_storage, meta_storage): (St, St),
    (config, wal_options, state_machine): (Config, WalOptions, S),
    network: &Arc<ChannelNetwork<Message>>,
    handle: &ReplicaHandle,
) -> Result<Running> {
    let index = handle.index();
    let (store, recovered) = LogStore::open(wal_storage, meta_storage, wal_options)?;
    let random_seed = unix_time_ns() ^ u64::from(index);
    let replica = Replica::new(config.clone(), recovered, state_machine, random_seed)?;
    let now = Instant::now();
    let (requests_sender, requests) = channel::bounded(REQUEST_QUEUE_COUNT_MAX);
    let (control_sender, control) = channel::bounded(1);
    let (jobs_sender, jobs) = channel::bounded(PERSIST_QUEUE_READY_COUNT_MAX);
    let (doorbell_sender, doorbell) = channel::bounded(1);
    let progress = Arc::new(PersistProgress::default());
    let transport = network.endpoint(index);
    let replica_loop = ReplicaLoop {
        replica,
        transport: transport.clone(),
        inbox: network.connect(index),
        requests,
        control,
        doorbell,
        jobs: jobs_sender,
        progress: Arc::clone(&progress),
        shared: Arc::clone(&handle.shared),
        waiters: HashMap::new(),
        request_id_next: unix_time_ns(),
        ticks: TickClock::new(Duration::from_millis(config.tick_interval_ms), now),
        waiter_sweep_at: now + WAITER_SWEEP_INTERVAL,
        ready_number_queued: 0,
        ready_number_advanced: 0,
    };
    let persist_progress = Arc::clone(&progress);
    let persist_thread = thread::Builder::new()
        .name(format!("paxos-persist-{index}"))
        .spawn(move || {
            persist_run(
                store,
                &jobs,
                &persist_progress,
                &doorbell_sender,
                &transport,
            );
        })
        .map_err(ledger_wal::WalError::from)?;
    *handle.shared.status.failure.lock() = None;
    handle.shared.status.running.store(true, Ordering::Release);
    *handle.shared.requests.write() = Some(requests_sender);
    let guard = StoppedOnDrop(Arc::clone(&handle.shared));
    let replica_thread = thread::Builder::new()
        .name(format!("paxos-replica-{index}"))
        .spawn(move || {
            let _guard = guard;
            replica_loop.run();
        })
        .map_err(ledger_wal::WalError::from)?;
    Ok(Running {
        control: control_sender,
        progress,
        replica_thread,
        persist_thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_clock_counts_elapsed_ticks_and_caps_a_stall() {
        let start = Instant::now();
        let interval = Duration::from_millis(10);
        let mut clock = TickClock::new(interval, start);
        assert_eq!(clock.due(start), 0);
        assert_eq!(clock.until_next_tick(start), interval);
        assert_eq!(clock.due(start + Duration::from_millis(35)), 3);
        assert_eq!(clock.due(start + Duration::from_millis(39)), 0);
        assert_eq!(
            clock.until_next_tick(start + Duration::from_millis(39)),
            Duration::from_millis(1)
        );
        // A long stall replays at most TICK_CATCH_UP_COUNT_MAX ticks, then resumes from now.
        let after_stall = start + Duration::from_secs(60);
        assert_eq!(clock.due(after_stall), TICK_CATCH_UP_COUNT_MAX);
        assert_eq!(clock.due(after_stall), 0);
        assert_eq!(clock.due(after_stall + interval), 1);
    }

    #[test]
    fn a_call_to_a_never_started_replica_fails_with_shutdown() {
        let handle = ReplicaHandle::new(0);
        assert!(!handle.is_running());
        assert!(!handle.is_leader());
        let result = handle.propose(Bytes::from_static(b"x"), Duration::from_secs(1));
        assert_eq!(result, Err(PaxosError::Shutdown));
    }
}
