//! The callers' side of a replica: [`ReplicaHandle`] (blocking `propose` / `read` with
//! deadlines) and the state it shares with the replica's threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::{self, RecvTimeoutError, SendTimeoutError, Sender};
use parking_lot::{Mutex, RwLock};

use crate::ballot::ReplicaId;
use crate::error::{PaxosError, Result};

/// The longest timeout honoured; longer ones are clamped (an `Instant` must not overflow).
const CALL_TIMEOUT_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a caller asks of a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RequestKind {
    Propose,
    Read,
}

/// A caller's request on its way to the replica thread, with the channel its answer goes to.
pub(super) struct Request {
    pub(super) kind: RequestKind,
    pub(super) payload: Bytes,
    pub(super) deadline: Instant,
    pub(super) reply: Sender<Result<Bytes>>,
}

/// A request the core holds, waiting for its `Reply`.
pub(super) struct Waiter {
    pub(super) reply: Sender<Result<Bytes>>,
    pub(super) deadline: Instant,
}

/// How a replica thread is told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Control {
    /// Stop at once: nothing queued for the disk is written, no message waiting for an fsync
    /// leaves. What the OS already has stays (that is all a process crash can promise).
    Crash,
    /// Stop taking requests, let the persist thread finish what is queued, then stop.
    Shutdown,
}

/// What a replica publishes for its handles and for
/// [`Group::leader`](super::Group::leader); written only by its replica thread (and by the
/// group when it stops the replica).
#[derive(Debug, Default)]
pub(super) struct Status {
    pub(super) running: AtomicBool,
    pub(super) leader: AtomicBool,
    pub(super) ballot_round: AtomicU64,
    pub(super) commit_slot: AtomicU64,
    pub(super) applied_slot: AtomicU64,
    /// Why the replica stopped, if storage failed: later calls get this error.
    pub(super) failure: Mutex<Option<PaxosError>>,
}

/// The state a replica's handles share with its threads and its group.
#[derive(Debug)]
pub(super) struct HandleShared {
    pub(super) index: ReplicaId,
    /// The running replica's request queue; `None` while it is stopped.
    pub(super) requests: RwLock<Option<Sender<Request>>>,
    pub(super) status: Status,
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

/// A caller's way into one replica of a [`Group`](super::Group): `Clone + Send + Sync`, cheap
/// to clone, and valid across crashes and restarts of that replica.
///
/// Calls block the calling thread until the replica answers or the timeout passes; many
/// threads may call at once and their commands are batched into the same log entries.
#[derive(Clone, Debug)]
pub struct ReplicaHandle {
    pub(super) shared: Arc<HandleShared>,
}

impl ReplicaHandle {
    pub(super) fn new(index: ReplicaId) -> Self {
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
