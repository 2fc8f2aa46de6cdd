//! One shard on the client side: a submission queue drained by a few proposer threads, each of
//! which packs every waiting caller's events into one log entry and proposes it to the leader.
//!
//! ```text
//! callers ──► submissions (bounded) ──► proposer 1..k ──► leader.propose(entry) ──► replies
//!            (one per call)               pack ≤ 8,190 events of one kind,
//!                                         retry the same bytes (same nonce) until the deadline
//! ```
//!
//! With k proposers, k entries are in flight at once (pipelining), and while they wait for
//! their consensus round the next callers queue up and ride together in the next entry: 64
//! threads of single transfers cost about 64 / k events per round, not 64 rounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::{self, Receiver, Sender};
use ledger_core::{Account, Command, CreateAccountResult, CreateTransferResult, Reply, Transfer};
use ledger_paxos::PaxosError;

use crate::backend::Backend;
use crate::clock;
use crate::config::EVENTS_PER_CALL_MAX;
use crate::error::{Result, ShardError};
use crate::wire::{self, ReplyStatus};

/// How many calls may wait in one shard's queue before callers block.
pub const SUBMISSIONS_QUEUED_MAX: usize = 4096;
/// How long a proposer waits before asking again who leads, when no leader is known.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(2);

/// The events of one call for one shard.
#[derive(Debug)]
pub(crate) enum Events {
    Accounts(Vec<Account>),
    Transfers(Vec<Transfer>),
}

/// The per-event results of one call for one shard.
#[derive(Debug)]
pub(crate) enum Results {
    Accounts(Vec<CreateAccountResult>),
    Transfers(Vec<CreateTransferResult>),
}

impl Events {
    fn len(&self) -> usize {
        match self {
            Self::Accounts(events) => events.len(),
            Self::Transfers(events) => events.len(),
        }
    }

    fn same_kind(&self, other: &Self) -> bool {
        matches!(
            (self, other),
            (Self::Accounts(_), Self::Accounts(_)) | (Self::Transfers(_), Self::Transfers(_))
        )
    }

    /// Whether the last event opens a linked chain: packing another call after it would link
    /// the two callers' events, so such a call travels alone (and ledger-core rejects it).
    fn ends_open_chain(&self) -> bool {
        match self {
            Self::Accounts(events) => events.last().is_some_and(|a| a.flags.linked()),
            Self::Transfers(events) => events.last().is_some_and(|t| t.flags.linked()),
        }
    }
}

/// One caller's request to one shard.
pub(crate) struct Submission {
    pub(crate) events: Events,
    pub(crate) deadline: Instant,
    pub(crate) reply: Sender<Result<Results>>,
}

/// What the proposers of a shard share.
pub(crate) struct ShardContext {
    pub(crate) shard: usize,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) submissions: Receiver<Submission>,
    pub(crate) shutdown: Receiver<()>,
    pub(crate) attempt_timeout: Duration,
    /// The high 64 bits of every nonce: unique per cluster open.
    pub(crate) nonce_epoch: u64,
    pub(crate) nonce_counter: AtomicU64,
}

/// Starts `count` proposer threads for one shard.
pub(crate) fn spawn_proposers(
    context: &Arc<ShardContext>,
    count: usize,
) -> Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|index| {
            let context = Arc::clone(context);
            std::thread::Builder::new()
                .name(format!("shard-{}-proposer-{index}", context.shard))
                .spawn(move || proposer_run(&context))
                .map_err(ShardError::Io)
        })
        .collect()
}

fn proposer_run(context: &ShardContext) {
    let mut carried: Option<Submission> = None;
    loop {
        let first = match carried.take() {
            Some(submission) => submission,
            None => {
                crossbeam::select! {
                    recv(context.submissions) -> submission => match submission {
                        Ok(submission) => submission,
                        Err(_) => return,
                    },
                    recv(context.shutdown) -> _ => break,
                }
            }
        };
        let (batch, next) = proposer_pack(context, first);
        carried = next;
        let results = proposer_commit(context, &batch);
        proposer_deliver(batch, results);
    }
    // Shutting down: every queued caller learns it.
    while let Ok(submission) = context.submissions.try_recv() {
        let _ = submission.reply.send(Err(ShardError::Shutdown));
    }
}

/// Packs `first` and every queued call that fits into one batch; returns the batch and a
/// call that did not fit (it starts the next batch).
pub(crate) fn proposer_pack(
    context: &ShardContext,
    first: Submission,
) -> (Vec<Submission>, Option<Submission>) {
    let mut event_count = first.events.len();
    let mut open_chain = first.events.ends_open_chain();
    let mut batch = vec![first];
    while !open_chain {
        let Ok(next) = context.submissions.try_recv() else {
            break;
        };
        let fits = event_count + next.events.len() <= EVENTS_PER_CALL_MAX;
        if !fits || !next.events.same_kind(&batch[0].events) {
            return (batch, Some(next));
        }
        event_count += next.events.len();
        open_chain = next.events.ends_open_chain();
        batch.push(next);
    }
    (batch, None)
}

/// Proposes the batch as one entry and returns the per-event results of the whole entry.
fn proposer_commit(context: &ShardContext, batch: &[Submission]) -> Result<Results> {
    let command = batch_command(batch);
    let sequence = context.nonce_counter.fetch_add(1, Ordering::Relaxed);
    let nonce = (u128::from(context.nonce_epoch) << 64) | u128::from(sequence);
    let entry = wire::encode_command(nonce, &command);
    drop(command);
    let deadline = batch.iter().map(|submission| submission.deadline).min();
    let deadline = deadline.unwrap_or_else(clock::now);
    let reply = with_leader(context, deadline, |backend, leader, timeout| {
        backend.propose(leader, entry.clone(), timeout)
    })?;
    decode_results(context.shard, &reply)
}

fn batch_command(batch: &[Submission]) -> Command {
    let event_count = batch.iter().map(|submission| submission.events.len()).sum();
    match &batch[0].events {
        Events::Accounts(_) => {
            let mut accounts = Vec::with_capacity(event_count);
            for submission in batch {
                if let Events::Accounts(events) = &submission.events {
                    accounts.extend_from_slice(events);
                }
            }
            Command::CreateAccounts(accounts)
        }
        Events::Transfers(_) => {
            let mut transfers = Vec::with_capacity(event_count);
            for submission in batch {
                if let Events::Transfers(events) = &submission.events {
                    transfers.extend_from_slice(events);
                }
            }
            Command::CreateTransfers(transfers)
        }
    }
}

fn decode_results(shard: usize, reply: &[u8]) -> Result<Results> {
    let malformed = |reason: &str| ShardError::InvalidRequest {
        reason: format!("shard {shard}: the state machine rejected the entry: {reason}"),
    };
    let (status, body) = wire::decode_reply_envelope(reply).ok_or_else(|| malformed("reply"))?;
    if status == ReplyStatus::Malformed {
        return Err(malformed("malformed entry"));
    }
    match Reply::decode(body).map_err(|source| ShardError::Codec { shard, source })? {
        Reply::CreateAccounts(results) => Ok(Results::Accounts(results)),
        Reply::CreateTransfers(results) => Ok(Results::Transfers(results)),
        #[allow(unreachable_patterns)]
        _ => Err(malformed("unexpected reply kind")),
    }
}

/// Splits the entry's results back to the callers, in packing order.
fn proposer_deliver(batch: Vec<Submission>, results: Result<Results>) {
    let event_count: usize = batch.iter().map(|submission| submission.events.len()).sum();
    let results = results.and_then(|results| {
        let result_count = match &results {
            Results::Accounts(results) => results.len(),
            Results::Transfers(results) => results.len(),
        };
        if result_count == event_count {
            Ok(results)
        } else {
            Err(ShardError::InvalidRequest {
                reason: format!("{result_count} results for {event_count} events"),
            })
        }
    });
    match results {
        Err(error) => {
            let shared = Arc::new(error);
            for submission in batch {
                let _ = submission.reply.send(Err(share_error(&shared)));
            }
        }
        Ok(Results::Accounts(mut results)) => {
            for submission in batch.into_iter().rev() {
                let mine = results.split_off(results.len() - submission.events.len());
                let _ = submission.reply.send(Ok(Results::Accounts(mine)));
            }
        }
        Ok(Results::Transfers(mut results)) => {
            for submission in batch.into_iter().rev() {
                let mine = results.split_off(results.len() - submission.events.len());
                let _ = submission.reply.send(Ok(Results::Transfers(mine)));
            }
        }
    }
}

/// A copy of a batch-wide error for each caller (errors are not `Clone`: lower errors wrap
/// `std::io::Error`).
fn share_error(error: &ShardError) -> ShardError {
    match error {
        ShardError::NoQuorum { shard } => ShardError::NoQuorum { shard: *shard },
        ShardError::Timeout { shard } => ShardError::Timeout { shard: *shard },
        ShardError::Shutdown => ShardError::Shutdown,
        other => ShardError::InvalidRequest {
            reason: other.to_string(),
        },
    }
}

/// Runs `attempt` against the shard's leader until it succeeds or `deadline` passes,
/// following leader changes. Each attempt carries the same bytes, so a retry of a write that
/// had committed is recognised by its nonce (I3).
pub(crate) fn with_leader(
    context: &ShardContext,
    deadline: Instant,
    attempt: impl Fn(&dyn Backend, usize, Duration) -> std::result::Result<Bytes, PaxosError>,
) -> Result<Bytes> {
    let mut saw_leader = false;
    let mut hinted: Option<usize> = None;
    let mut fatal: Option<(usize, PaxosError)> = None;
    loop {
        if let Err(channel::TryRecvError::Disconnected) = context.shutdown.try_recv() {
            return Err(ShardError::Shutdown);
        }
        let now = clock::now();
        if now >= deadline {
            if let Some((replica, source)) = fatal {
                return Err(ShardError::Fatal {
                    shard: context.shard,
                    replica,
                    source,
                });
            }
            return Err(if saw_leader {
                ShardError::Timeout {
                    shard: context.shard,
                }
            } else {
                ShardError::NoQuorum {
                    shard: context.shard,
                }
            });
        }
        let Some(leader) = hinted.take().or_else(|| context.backend.leader()) else {
            pause(context, LEADER_POLL_INTERVAL)?;
            continue;
        };
        let timeout = context.attempt_timeout.min(deadline - now);
        match attempt(context.backend.as_ref(), leader, timeout) {
            Ok(reply) => return Ok(reply),
            Err(PaxosError::NotLeader {
                leader_hint: Some(hint),
            }) if usize::from(hint) != leader => {
                hinted = Some(usize::from(hint));
            }
            // Not chosen, or unknown after a snapshot: the same bytes again are safe (I3).
            Err(PaxosError::NotChosen { .. } | PaxosError::OutcomeUnknown { .. }) => {
                saw_leader = true;
            }
            // No leader yet, a full queue, a crashed replica, a lost reply: wait, ask again.
            Err(
                PaxosError::NotLeader { .. }
                | PaxosError::Busy
                | PaxosError::Timeout
                | PaxosError::Shutdown,
            ) => {
                saw_leader |= leader_answered(context, leader);
                pause(context, LEADER_POLL_INTERVAL)?;
            }
            // That replica stopped for good; another one takes over while a majority lives.
            Err(error @ PaxosError::Storage(_)) => {
                fatal = Some((leader, error));
                pause(context, LEADER_POLL_INTERVAL)?;
            }
            Err(error) => return Err(ShardError::Paxos(error)),
        }
    }
}

/// Whether `leader` is still the leader the group reports (the attempt reached a live leader).
fn leader_answered(context: &ShardContext, leader: usize) -> bool {
    context.backend.leader() == Some(leader)
}

/// Waits `duration` unless the cluster shuts down first.
fn pause(context: &ShardContext, duration: Duration) -> Result<()> {
    match context.shutdown.recv_timeout(duration) {
        Err(channel::RecvTimeoutError::Timeout) => Ok(()),
        Ok(()) | Err(channel::RecvTimeoutError::Disconnected) => Err(ShardError::Shutdown),
    }
}
