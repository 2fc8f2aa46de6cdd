//! Cross-shard transfers: two-phase commit across two Paxos groups (I1, I3, I10).
//!
//! A transfer `T` (id `t`) from account `A` on shard `d` (the coordinator, the debit shard) to
//! `B` on shard `c` (the participant) becomes four log entries, each an ordinary ledger
//! transfer between a user account and a system *bridge* account that has no balance limits:
//!
//! ```text
//! 1 prepare   shard d: leg(t)  A ──pending──► bridge(d→c)     funds reserved, limits checked
//! 2 vote      shard c: leg(t)  bridge(c←d) ──pending──► B     Ok = yes, a rejection = no
//! 3 decide    shard d: res(t)  post (yes) or void (no) leg(t) durable ⇒ the caller's answer
//! 4 finish    shard c: res(t)  post leg(t), or fence + void it
//! ```
//!
//! Every step is idempotent by id: a retry answers `Exists` (or, for a vote that failed, the
//! same failure or `IdAlreadyFailed`), so a vote never flips. The decision is unique because
//! post and void of `leg(t)` share the id `res(t)`: the first one logged wins, a later one
//! answers `ExistsWith…` and the driver reads the winner back. Each shard's own double entry
//! holds at every moment; while `T` is in flight its amount is pending on `A` and on `B`, and
//! the two bridges of a pair net to zero once every leg is resolved (I1 across shards).
//!
//! Legs carry no timeout: an expiring leg could release funds after the other side committed.
//! Instead a [`LegIndex`] in every replica's state machine tracks the legs not yet resolved,
//! and the cluster's resolver thread ([`resolver_run`]) drives every leg it sees unresolved on
//! two passes in a row to its end: a participant leg exists, so its vote was yes and the
//! coordinator decides commit (or already decided); a coordinator leg whose participant holds
//! no leg is aborted (presumed abort, the caller had lost its answer). A new leader on either
//! side therefore finishes what an old one started without any caller.
//!
//! The coordinator leg keeps `B` in its `user_data_128` (it needs nothing else to finish `T`);
//! the participant leg keeps the caller's `user_data_128`. `T` itself is never stored:
//! [`lookup_committed`] rebuilds it from the two legs once it committed.

pub mod protocol;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel;
use ledger_core::{
    Account, BATCH_EVENTS_MAX, CreateAccountResult, CreateTransferResult as R, Ledger, Query,
    QueryReply, SYSTEM_ID_MIN, TRANSFER_SIZE_BYTES, Transfer, TransferFlags,
};
use parking_lot::Mutex;

use crate::clock;
use crate::cluster::ClusterInner;
use crate::error::{Result, ShardError};
use crate::reply_cache::Reader;
use crate::router::Router;
use crate::shard::{self, Events, Results, Submission};
use crate::wire::Read;
use protocol::{
    Action, CallMachine, FinishMachine, Machine, Phase, RecoveryMachine, Reply, Resolver,
    ResolverTiming,
};

/// `leg(t)`: the id of both pending legs of user transfer `t` (one per shard).
pub const LEG_ID_MIN: u128 = SYSTEM_ID_MIN;
/// `res(t)`: the id of the post or void that resolves `leg(t)` on each shard.
pub const RESOLUTION_ID_MIN: u128 = 2 * SYSTEM_ID_MIN;
/// The `code` of every bridge account.
pub const BRIDGE_CODE: u16 = u16::MAX;
/// How often the resolver looks for unresolved legs.
pub const RESOLVER_INTERVAL: Duration = Duration::from_millis(500);
/// A participant leg (a yes vote) unresolved for this long is committed by the resolver: long
/// enough that live callers, whose steps take well under a second, rarely see it helping.
pub const RESOLVER_VOTE_AGE: Duration = Duration::from_secs(2);

/// The leg id of user transfer `t` (`t` below [`SYSTEM_ID_MIN`]).
pub fn leg_id(t: u128) -> u128 {
    debug_assert!(t < SYSTEM_ID_MIN);
    LEG_ID_MIN + t
}

/// The resolution id of user transfer `t`.
pub fn resolution_id(t: u128) -> u128 {
    debug_assert!(t < SYSTEM_ID_MIN);
    RESOLUTION_ID_MIN + t
}

fn is_leg_id(id: u128) -> bool {
    (LEG_ID_MIN..RESOLUTION_ID_MIN).contains(&id)
}

fn is_resolution_id(id: u128) -> bool {
    (RESOLUTION_ID_MIN..RESOLUTION_ID_MIN + SYSTEM_ID_MIN).contains(&id)
}

/// Whether a user event may not name this id (the system range, `u128::MAX` excepted: the
/// ledger rejects it with its own code).
pub fn is_reserved(id: u128) -> bool {
    id >= SYSTEM_ID_MIN && id != u128::MAX
}

/// The bridge account on shard `local` that books money to and from shard `peer` in `ledger`.
/// Its id is in the system range and routes to `local` (`id % shards == local`). With
/// `ledger == 0` (never a valid account) it is the fence account, which never exists.
pub fn bridge_id(router: Router, ledger: u32, local: usize, peer: usize) -> u128 {
    let shards = router.shard_count() as u128;
    let key = (u128::from(ledger) << 16) | peer as u128;
    (SYSTEM_ID_MIN / shards + 1 + key) * shards + local as u128
}

/// The peer shard a bridge account books for.
fn bridge_peer(router: Router, bridge: u128) -> usize {
    let shards = router.shard_count() as u128;
    let key = bridge / shards - (SYSTEM_ID_MIN / shards + 1);
    // The low 16 bits hold a shard index (below SHARD_COUNT_MAX).
    (key & 0xffff) as usize
}

// ---- the replicated index of unresolved legs --------------------------------------------

/// The legs one replica holds that are not resolved yet, kept by the state machine from the
/// results of every applied transfer (deterministic, part of the snapshot). Only the ids: the
/// legs themselves are in the ledger, which the reads and the snapshot consult (an index entry
/// is 16 bytes, not a 128-byte transfer; two set operations per leg sit on the apply path).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LegIndex {
    ids: HashSet<u128, BuildHasherDefault<IdHasher>>,
}

/// Hashes a u128 id by one multiply (ids are unique; the map needs spread, not secrecy).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u128(&mut self, id: u128) {
        // Truncations intended: both halves are folded in.
        let folded = (id as u64) ^ ((id >> 64) as u64).rotate_left(32);
        self.0 = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl LegIndex {
    /// Records the effect of one applied `create_transfers` batch.
    pub fn observe(&mut self, transfers: &[Transfer], results: &[R]) {
        for (transfer, result) in transfers.iter().zip(results) {
            if !result.is_ok() {
                continue;
            }
            if is_leg_id(transfer.id) {
                self.ids.insert(transfer.id);
            } else if is_resolution_id(transfer.id) {
                self.ids.remove(&transfer.pending_id);
            }
        }
    }

    /// Number of unresolved legs.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Up to [`BATCH_EVENTS_MAX`] unresolved legs of `ledger`, in no particular order, as they
    /// were submitted (timestamp zero). The read runs under the state machine's lock, so it
    /// copies no more than it returns.
    pub fn unresolved(&self, ledger: &Ledger) -> Vec<Transfer> {
        let ids: Vec<u128> = self
            .ids
            .iter()
            .take(BATCH_EVENTS_MAX as usize)
            .copied()
            .collect();
        let legs = ledger.lookup_transfers(&ids);
        assert_eq!(legs.len(), ids.len(), "unresolved legs are in the ledger");
        legs.into_iter().map(submitted_leg).collect()
    }

    /// Appends `count u64 | count × 128-byte transfer`: the legs as submitted, by id.
    pub fn encode(&self, ledger: &Ledger, out: &mut Vec<u8>) {
        // Sorted by id: identical indexes encode to identical bytes (I5).
        let mut ids: Vec<u128> = self.ids.iter().copied().collect();
        ids.sort_unstable();
        let legs = ledger.lookup_transfers(&ids);
        assert_eq!(legs.len(), ids.len(), "unresolved legs are in the ledger");
        out.extend_from_slice(&(legs.len() as u64).to_le_bytes());
        for leg in legs {
            out.extend_from_slice(&submitted_leg(leg).encode());
        }
    }

    /// Decodes an index from the front of `reader` against the `ledger` of the same snapshot;
    /// `None` on malformed bytes or a leg `ledger` does not hold as encoded (never allocates
    /// more than the bytes present can fill).
    pub(crate) fn decode(reader: &mut Reader<'_>, ledger: &Ledger) -> Option<Self> {
        let count = usize::try_from(reader.u64()?).ok()?;
        let bytes = reader.take(count.checked_mul(TRANSFER_SIZE_BYTES)?)?;
        let mut ids = HashSet::default();
        for chunk in bytes.chunks_exact(TRANSFER_SIZE_BYTES) {
            let transfer = Transfer::decode(chunk).ok()?;
            if !is_leg_id(transfer.id) || !ids.insert(transfer.id) {
                return None;
            }
            let stored = ledger.lookup_transfers(&[transfer.id]).pop()?;
            if submitted_leg(stored) != transfer {
                return None;
            }
        }
        Some(Self { ids })
    }
}

/// A leg as its driver submitted it: the ledger stamped its timestamp.
fn submitted_leg(stored: Transfer) -> Transfer {
    Transfer {
        timestamp: 0,
        ..stored
    }
}

// ---- the cluster side --------------------------------------------------------------------

/// A step of the cross-shard protocol after which a test can make every caller's driver stop,
/// as if the calling process had died there (see [`crate::Cluster::stop_cross_shard_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrossShardStep {
    /// The coordinator logged its pending leg (funds reserved); no vote asked yet.
    Prepared = 1,
    /// The participant logged its vote; no decision yet.
    Voted = 2,
    /// The coordinator logged the decision; the participant has not applied it.
    Decided = 3,
}

/// Decided transfers whose participants have yet to apply the decision (step 4).
type Finishes = Vec<(Cross, Decision)>;

/// How many calls' step-4 work may wait for the finisher before callers wait for it.
const FINISHES_QUEUED_MAX: usize = 64;

/// What the cluster keeps for cross-shard transfers: the bridge accounts known to exist, the
/// queue of step-4 work for the finisher thread.
#[derive(Debug)]
pub(crate) struct CrossShard {
    bridges: Mutex<HashSet<u128>>,
    /// A [`CrossShardStep`] as u8 after which drivers stop (0: never).
    stop_after: AtomicU8,
    finishes: channel::Sender<Finishes>,
    finishes_queued: channel::Receiver<Finishes>,
}

impl Default for CrossShard {
    fn default() -> Self {
        let (finishes, finishes_queued) = channel::bounded(FINISHES_QUEUED_MAX);
        Self {
            bridges: Mutex::default(),
            stop_after: AtomicU8::default(),
            finishes,
            finishes_queued,
        }
    }
}

impl CrossShard {
    pub(crate) fn set_stop_after(&self, step: Option<CrossShardStep>) {
        self.stop_after
            .store(step.map_or(0, |step| step as u8), Ordering::SeqCst);
    }

    /// `Err(Timeout)` if the driver must stop after `step`: the caller loses its answer.
    fn checkpoint(&self, step: CrossShardStep, shard: usize) -> Result<()> {
        if self.stop_after.load(Ordering::SeqCst) == step as u8 {
            return Err(ShardError::Timeout { shard });
        }
        Ok(())
    }
}

/// One cross-shard transfer being driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cross {
    /// The user's view: id `t`, `A → B`.
    pub transfer: Transfer,
    /// The coordinator: the shard of `A`.
    pub debit_shard: usize,
    /// The participant: the shard of `B`.
    pub credit_shard: usize,
}

/// How a call splits: events answered by the client itself, cross-shard events, and the rest.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Results decided before submission (reserved ids and their chains).
    pub(crate) preset: Vec<Option<R>>,
    /// Indexes of the cross-shard transfers.
    pub(crate) cross: Vec<usize>,
    /// Indexes of the events for one shard each.
    pub(crate) local: Vec<usize>,
}

fn names_reserved_id(transfer: &Transfer) -> bool {
    [
        transfer.id,
        transfer.pending_id,
        transfer.debit_account_id,
        transfer.credit_account_id,
    ]
    .into_iter()
    .any(is_reserved)
}

/// The chains of a batch as index ranges (an unlinked event is a chain of one).
pub(crate) fn chains(linked: impl Fn(usize) -> bool, count: usize) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for index in 0..count {
        if !linked(index) {
            ranges.push(start..index + 1);
            start = index + 1;
        }
    }
    if start < count {
        ranges.push(start..count);
    }
    ranges
}

/// The results of a `create_accounts` call decided before submission (reserved ids fail with
/// their chain), and the indexes of the accounts to submit.
pub(crate) fn plan_accounts(
    accounts: &[Account],
) -> (Vec<Option<CreateAccountResult>>, Vec<usize>) {
    let mut preset = vec![None; accounts.len()];
    let mut submit = Vec::with_capacity(accounts.len());
    for chain in chains(|index| accounts[index].flags.linked(), accounts.len()) {
        match chain.clone().find(|&index| is_reserved(accounts[index].id)) {
            Some(bad) => {
                for index in chain {
                    preset[index] = Some(if index == bad {
                        CreateAccountResult::IdReservedForSystem
                    } else {
                        CreateAccountResult::LinkedEventFailed
                    });
                }
            }
            None => submit.extend(chain),
        }
    }
    (preset, submit)
}

/// Splits a `create_transfers` call (see [`Plan`]).
///
/// # Errors
///
/// [`ShardError::CrossShard`] for a cross-shard transfer that is linked, part of a chain, or
/// not a plain transfer (pending, post, void, balancing, closing): those are not built yet.
pub(crate) fn plan_transfers(router: Router, transfers: &[Transfer]) -> Result<Plan> {
    let mut plan = Plan {
        preset: vec![None; transfers.len()],
        ..Plan::default()
    };
    for chain in chains(|index| transfers[index].flags.linked(), transfers.len()) {
        if let Some(bad) = chain
            .clone()
            .find(|&index| names_reserved_id(&transfers[index]))
        {
            for index in chain {
                plan.preset[index] = Some(if index == bad {
                    R::IdReservedForSystem
                } else {
                    R::LinkedEventFailed
                });
            }
            continue;
        }
        for index in chain.clone() {
            let transfer = &transfers[index];
            let crate::router::Route::Cross {
                debit_shard,
                credit_shard,
            } = router.route(transfer)
            else {
                plan.local.push(index);
                continue;
            };
            if chain.len() > 1 || transfer.flags != TransferFlags::empty() {
                return Err(ShardError::CrossShard {
                    index,
                    debit_shard,
                    credit_shard,
                });
            }
            plan.cross.push(index);
        }
    }
    Ok(plan)
}

/// Sends one batch of transfers to each shard that has some, then waits for all answers.
fn submit_transfers(
    inner: &ClusterInner,
    per_shard: Vec<Vec<Transfer>>,
    deadline: Instant,
) -> Result<Vec<Vec<R>>> {
    let mut waiting = Vec::new();
    for (shard, transfers) in per_shard.into_iter().enumerate() {
        if transfers.is_empty() {
            waiting.push(None);
            continue;
        }
        let count = transfers.len();
        let mut receivers = Vec::new();
        // A batch of at most BATCH_EVENTS_MAX events per submission.
        let mut transfers = transfers;
        while !transfers.is_empty() {
            let rest = transfers.split_off(transfers.len().min(BATCH_EVENTS_MAX as usize));
            let (reply, receiver) = channel::bounded(1);
            let submission = Submission {
                events: Events::Transfers(std::mem::replace(&mut transfers, rest)),
                deadline,
                reply,
            };
            send(inner, shard, submission)?;
            receivers.push(receiver);
        }
        waiting.push(Some((count, receivers)));
    }
    waiting
        .into_iter()
        .map(|entry| {
            let Some((count, receivers)) = entry else {
                return Ok(Vec::new());
            };
            let mut results = Vec::with_capacity(count);
            for receiver in receivers {
                let reply = crossbeam::select! {
                    recv(receiver) -> reply => reply.unwrap_or(Err(ShardError::Shutdown)),
                    recv(inner.shutdown) -> _ => Err(ShardError::Shutdown),
                };
                match reply? {
                    Results::Transfers(part) => results.extend(part),
                    Results::Accounts(_) => return Err(protocol("accounts reply to transfers")),
                }
            }
            Ok(results)
        })
        .collect()
}

fn send(inner: &ClusterInner, shard: usize, submission: Submission) -> Result<()> {
    let submissions = &inner.shards[shard].submissions;
    crossbeam::select! {
        send(submissions, submission) -> sent => sent.map_err(|_| ShardError::Shutdown),
        recv(inner.shutdown) -> _ => Err(ShardError::Shutdown),
    }
}

/// A linearizable read of one shard (I9).
fn read(inner: &ClusterInner, shard: usize, read: &Read, deadline: Instant) -> Result<QueryReply> {
    let context = &inner.shards[shard].context;
    let bytes = read.encode();
    let reply = shard::with_leader(context, deadline, |backend, leader, timeout| {
        backend.read(leader, bytes.clone(), timeout)
    })?;
    QueryReply::decode(&reply).map_err(|source| ShardError::Codec { shard, source })
}

/// The transfers with these ids on one shard (found ones).
fn lookup(
    inner: &ClusterInner,
    shard: usize,
    ids: &[u128],
    deadline: Instant,
) -> Result<Vec<Transfer>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(BATCH_EVENTS_MAX as usize) {
        match read(
            inner,
            shard,
            &Read::Ledger(Query::LookupTransfers(chunk.to_vec())),
            deadline,
        )? {
            QueryReply::Transfers(transfers) => found.extend(transfers),
            _ => return Err(protocol("lookup answered with the wrong kind")),
        }
    }
    Ok(found)
}

fn protocol(reason: &str) -> ShardError {
    ShardError::InvalidRequest {
        reason: format!("cross-shard protocol: {reason}"),
    }
}

/// Creates the bridge accounts these transfers need, once per cluster open.
fn ensure_bridges(inner: &ClusterInner, crosses: &[Cross], deadline: Instant) -> Result<()> {
    let missing = {
        let known = inner.crossshard.bridges.lock();
        protocol::missing_bridges(inner.router, crosses, |id| known.contains(&id))
    };
    if missing.iter().all(Vec::is_empty) {
        return Ok(());
    }
    let mut waiting = Vec::new();
    for (shard, accounts) in missing.into_iter().enumerate() {
        if accounts.is_empty() {
            continue;
        }
        let ids: Vec<u128> = accounts.iter().map(|account| account.id).collect();
        let (reply, receiver) = channel::bounded(1);
        let submission = Submission {
            events: Events::Accounts(accounts),
            deadline,
            reply,
        };
        send(inner, shard, submission)?;
        waiting.push((ids, receiver));
    }
    for (ids, receiver) in waiting {
        let reply = crossbeam::select! {
            recv(receiver) -> reply => reply.unwrap_or(Err(ShardError::Shutdown)),
            recv(inner.shutdown) -> _ => Err(ShardError::Shutdown),
        };
        let Results::Accounts(results) = reply? else {
            return Err(protocol("transfers reply to accounts"));
        };
        for (id, result) in ids.into_iter().zip(results) {
            if result != CreateAccountResult::Ok && result != CreateAccountResult::Exists {
                return Err(protocol(&format!("bridge account {id}: {result:?}")));
            }
            inner.crossshard.bridges.lock().insert(id);
        }
    }
    Ok(())
}

/// The coordinator's pending leg: `A → bridge(d→c)`, `B` kept in `user_data_128`.
fn coordinator_leg(router: Router, cross: &Cross) -> Transfer {
    let t = &cross.transfer;
    Transfer {
        id: leg_id(t.id),
        credit_account_id: bridge_id(router, t.ledger, cross.debit_shard, cross.credit_shard),
        user_data_128: t.credit_account_id,
        flags: TransferFlags::PENDING,
        timestamp: 0,
        ..*t
    }
}

/// The participant's pending leg: `bridge(c←d) → B`, with the caller's user data.
fn participant_leg(router: Router, cross: &Cross) -> Transfer {
    let t = &cross.transfer;
    Transfer {
        id: leg_id(t.id),
        debit_account_id: bridge_id(router, t.ledger, cross.credit_shard, cross.debit_shard),
        flags: TransferFlags::PENDING,
        timestamp: 0,
        ..*t
    }
}

/// The post (commit) or void (abort, with the reason in `user_data_64`) of `leg(t)`.
fn resolution(t: u128, decision: Decision) -> Transfer {
    match decision {
        Decision::Commit => Transfer {
            pending_id: leg_id(t),
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(resolution_id(t), 0, 0, u128::MAX, 0, 0)
        },
        Decision::Abort(reason) => Transfer {
            pending_id: leg_id(t),
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            user_data_64: u64::from(reason.code()),
            ..Transfer::new(resolution_id(t), 0, 0, 0, 0, 0)
        },
    }
}

/// Burns `leg(t)` on the participant if it does not exist: a transfer between two accounts
/// that never exist fails with a transient result, so a late prepare can never create the
/// leg after an abort (it answers `IdAlreadyFailed`).
fn fence(router: Router, t: u128, participant: usize) -> Transfer {
    let never = bridge_id(router, 0, participant, participant);
    Transfer::new(
        leg_id(t),
        never,
        never + router.shard_count() as u128,
        1,
        1,
        1,
    )
}

/// The outcome of a cross-shard transfer, decided by the coordinator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Both legs are posted.
    Commit,
    /// Both legs are voided (or never created); the reason is the caller's result.
    Abort(R),
}

/// Runs the protocol for a call's cross-shard transfers; one result per transfer, in order.
pub(crate) fn execute(
    inner: &ClusterInner,
    transfers: &[Transfer],
    deadline: Instant,
) -> Result<Vec<R>> {
    let router = inner.router;
    let mut results: Vec<Option<R>> = transfers.iter().map(precheck).collect();
    let checked: Vec<usize> = (0..transfers.len())
        .filter(|&index| results[index].is_none())
        .collect();
    let crosses: Vec<Cross> = checked
        .iter()
        .map(|&index| {
            let transfer = &transfers[index];
            Cross {
                transfer: *transfer,
                debit_shard: router.shard_of(transfer.debit_account_id),
                credit_shard: router.shard_of(transfer.credit_account_id),
            }
        })
        .collect();
    for (index, result) in checked.iter().zip(drive(inner, &crosses, deadline)?) {
        results[*index] = Some(result);
    }
    Ok(results
        .into_iter()
        .map(|result| result.expect("every transfer has its result"))
        .collect())
}

/// The rules of a transfer's own fields that its legs would not enforce (in ledger-core's
/// precedence order): a leg copies the timestamp, timeout and ledger, and its id is derived.
fn precheck(transfer: &Transfer) -> Option<R> {
    if transfer.timestamp != 0 {
        Some(R::TimestampMustBeZero)
    } else if transfer.id == 0 {
        Some(R::IdMustNotBeZero)
    } else if transfer.id == u128::MAX {
        Some(R::IdMustNotBeIntMax)
    } else if transfer.pending_id != 0 {
        Some(R::PendingIdMustBeZero)
    } else if transfer.timeout != 0 {
        Some(R::TimeoutReservedForPendingTransfer)
    } else if transfer.ledger == 0 {
        Some(R::LedgerMustNotBeZero)
    } else {
        None
    }
}

/// Runs steps 1 to 3 for prechecked cross-shard transfers and queues step 4; one result each,
/// in order.
fn drive(inner: &ClusterInner, crosses: &[Cross], deadline: Instant) -> Result<Vec<R>> {
    ensure_bridges(inner, crosses, deadline)?;
    let checkpoint = |machine: &CallMachine, step| match machine.first_live_coordinator() {
        Some(shard) => inner.crossshard.checkpoint(step, shard),
        None => Ok(()),
    };
    let (mut machine, action) = CallMachine::new(inner.router, crosses.to_vec());
    let before = |machine: &CallMachine, phase| match phase {
        Phase::Vote => checkpoint(machine, CrossShardStep::Prepared),
        Phase::Decide => checkpoint(machine, CrossShardStep::Voted),
        _ => Ok(()),
    };
    // Step 3's decisions are durable before anyone applies them (I10).
    let outcome = run(inner, &mut machine, action, before, deadline)?;
    checkpoint(&machine, CrossShardStep::Decided)?;
    // 4. Finish at the participants: the finisher thread does it, batched across calls; the
    // caller's answer needs only the durable decision. Should it fail, the resolver finishes.
    if !outcome.finishes.is_empty() {
        crossbeam::select! {
            send(inner.crossshard.finishes, outcome.finishes) -> sent => sent.map_err(|_| ShardError::Shutdown)?,
            recv(inner.shutdown) -> _ => return Err(ShardError::Shutdown),
        }
    }
    Ok(outcome.results)
}

/// Does a protocol machine's actions against the shards until it is done; `before` runs
/// before each submission (where a test may stop the driver).
fn run<M: Machine>(
    inner: &ClusterInner,
    machine: &mut M,
    mut action: Action<M::Outcome>,
    mut before: impl FnMut(&M, Phase) -> Result<()>,
    deadline: Instant,
) -> Result<M::Outcome> {
    loop {
        action = match action {
            Action::Submit { phase, per_shard } => {
                before(machine, phase)?;
                let answers = submit_transfers(inner, per_shard, deadline)?;
                machine.step(Reply::Submitted(answers))?
            }
            Action::Lookup { per_shard } => {
                let mut found = Vec::with_capacity(per_shard.len());
                for (shard, ids) in per_shard.iter().enumerate() {
                    found.push(if ids.is_empty() {
                        Vec::new()
                    } else {
                        lookup(inner, shard, ids, deadline)?
                    });
                }
                machine.step(Reply::Found(found))?
            }
            Action::Done(outcome) => return Ok(outcome),
        };
    }
}

/// A yes vote is the participant leg created now or before (`Exists`, or `ExistsWith…` when a
/// retry changed fields the coordinator leg does not hold: the original leg is the vote).
fn vote_decision(vote: R) -> Decision {
    if vote.is_ok() || vote.is_exists() || is_exists_with_different(vote) {
        Decision::Commit
    } else {
        Decision::Abort(vote)
    }
}

fn is_exists_with_different(result: R) -> bool {
    matches!(
        result,
        R::ExistsWithDifferentFlags
            | R::ExistsWithDifferentPendingId
            | R::ExistsWithDifferentTimeout
            | R::ExistsWithDifferentDebitAccountId
            | R::ExistsWithDifferentCreditAccountId
            | R::ExistsWithDifferentAmount
            | R::ExistsWithDifferentUserData128
            | R::ExistsWithDifferentUserData64
            | R::ExistsWithDifferentUserData32
            | R::ExistsWithDifferentLedger
            | R::ExistsWithDifferentCode
    )
}

/// The decision a logged resolution holds.
fn logged_decision(resolution: &Transfer) -> Decision {
    if resolution.flags.post_pending_transfer() {
        Decision::Commit
    } else {
        let reason = u32::try_from(resolution.user_data_64)
            .ok()
            .and_then(R::from_code)
            .unwrap_or(R::IdAlreadyFailed);
        Decision::Abort(reason)
    }
}

// ---- lookups -----------------------------------------------------------------------------

/// The committed cross-shard transfers among `ids`, rebuilt from their legs: the caller's
/// transfer as it was submitted, stamped with the time of the coordinator's decision.
pub(crate) fn lookup_committed(
    inner: &ClusterInner,
    ids: &[u128],
    deadline: Instant,
) -> Result<HashMap<u128, Transfer>> {
    let router = inner.router;
    let ids: Vec<u128> = ids
        .iter()
        .copied()
        .filter(|&id| id != 0 && id < SYSTEM_ID_MIN)
        .collect();
    let mut committed = HashMap::new();
    if ids.is_empty() || router.shard_count() == 1 {
        return Ok(committed);
    }
    let query: Vec<u128> = ids
        .iter()
        .flat_map(|&t| [leg_id(t), resolution_id(t)])
        .collect();
    let mut per_shard: Vec<HashMap<u128, Transfer>> = Vec::with_capacity(inner.shards.len());
    for shard in 0..inner.shards.len() {
        let found = lookup(inner, shard, &query, deadline)?;
        per_shard.push(
            found
                .into_iter()
                .map(|transfer| (transfer.id, transfer))
                .collect(),
        );
    }
    for t in ids {
        let (leg, res) = (leg_id(t), resolution_id(t));
        let coordinator = per_shard.iter().find_map(|found| {
            let leg = found
                .get(&leg)
                .filter(|leg| is_reserved(leg.credit_account_id))?;
            let res = found
                .get(&res)
                .filter(|res| res.flags.post_pending_transfer())?;
            Some((*leg, res.timestamp))
        });
        let Some((coordinator_leg, decided_at)) = coordinator else {
            continue;
        };
        let credit = coordinator_leg.user_data_128;
        let participant = per_shard[router.shard_of(credit)].get(&leg).copied();
        committed.insert(
            t,
            Transfer {
                id: t,
                credit_account_id: credit,
                user_data_128: participant.map_or(0, |leg| leg.user_data_128),
                flags: TransferFlags::empty(),
                timestamp: decided_at,
                ..coordinator_leg
            },
        );
    }
    Ok(committed)
}

// ---- the resolver ------------------------------------------------------------------------

/// The unresolved legs one shard holds (a linearizable read of its leader's index).
fn unresolved(inner: &ClusterInner, shard: usize, deadline: Instant) -> Result<Vec<Transfer>> {
    match read(inner, shard, &Read::Unresolved, deadline)? {
        QueryReply::Transfers(legs) => Ok(legs),
        _ => Err(protocol("unresolved legs answered with the wrong kind")),
    }
}

/// The resolver thread: every [`RESOLVER_INTERVAL`] it reads each shard's unresolved legs and
/// drives the old ones to their end ([`Resolver`], with the request timeout as the age of a
/// coordinator leg whose caller has given up). A shard without a leader is skipped until it
/// has one again (I10, I11).
pub(crate) fn resolver_run(inner: &ClusterInner) {
    let timing = ResolverTiming::with_request_timeout(inner.config.request_timeout);
    let mut resolver = Resolver::new(timing);
    let origin = clock::now();
    loop {
        match inner.shutdown.recv_timeout(timing.interval) {
            Err(channel::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(channel::RecvTimeoutError::Disconnected) => return,
        }
        let now = clock::now();
        let legs: Vec<Option<Vec<Transfer>>> = (0..inner.shards.len())
            .map(|shard| unresolved(inner, shard, now + timing.interval).ok())
            .collect();
        for recovery in resolver.pass(inner.router, now.duration_since(origin), &legs) {
            let deadline = clock::now() + inner.config.request_timeout;
            let (mut machine, action) = RecoveryMachine::new(inner.router, recovery);
            // Errors (a shard without quorum, shutdown) leave the legs for a later pass.
            let _ = run(inner, &mut machine, action, |_, _| Ok(()), deadline);
        }
    }
}

/// The finisher thread: applies queued decisions at the participants (step 4), everything
/// queued at once. A failure (a participant without quorum) leaves the legs to the resolver.
pub(crate) fn finisher_run(inner: &ClusterInner) {
    loop {
        let mut work = crossbeam::select! {
            recv(inner.crossshard.finishes_queued) -> work => match work {
                Ok(work) => work,
                Err(_) => return,
            },
            recv(inner.shutdown) -> _ => return,
        };
        while work.len() < 4 * BATCH_EVENTS_MAX as usize {
            let Ok(more) = inner.crossshard.finishes_queued.try_recv() else {
                break;
            };
            work.extend(more);
        }
        let deadline = clock::now() + inner.config.request_timeout;
        let (mut machine, action) = FinishMachine::new(inner.router, &work);
        let _ = run(inner, &mut machine, action, |_, _| Ok(()), deadline);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn system_ids_stay_in_their_ranges() {
        for t in [1, 2, SYSTEM_ID_MIN - 1] {
            assert!(is_leg_id(leg_id(t)) && !is_resolution_id(leg_id(t)));
            assert!(is_resolution_id(resolution_id(t)) && !is_leg_id(resolution_id(t)));
            assert!(resolution_id(t) < u128::MAX && is_reserved(leg_id(t)));
        }
        assert!(!is_reserved(SYSTEM_ID_MIN - 1) && !is_reserved(u128::MAX));
    }

    proptest! {
        #[test]
        fn bridges_route_home_and_name_their_peer(
            shards in 2usize..=1024, ledger in any::<u32>(), local in 0usize..1024, peer in 0usize..1024,
        ) {
            let (local, peer) = (local % shards, peer % shards);
            let router = Router::new(shards);
            let id = bridge_id(router, ledger, local, peer);
            prop_assert!(is_reserved(id));
            prop_assert_eq!(router.shard_of(id), local);
            prop_assert_eq!(bridge_peer(router, id), peer);
            prop_assert_ne!(id, bridge_id(router, ledger.wrapping_add(1), local, peer));
        }

        #[test]
        fn leg_index_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let (ledger, _) = ledger_with_legs();
            let mut reader = Reader::new(&bytes);
            if let Some(index) = LegIndex::decode(&mut reader, &ledger) {
                let mut out = Vec::new();
                index.encode(&ledger, &mut out);
                prop_assert_eq!(LegIndex::decode(&mut Reader::new(&out), &ledger), Some(index));
            }
        }
    }

    /// Applies `transfers` to `ledger` and shows the results to `index`.
    fn apply(ledger: &mut Ledger, index: &mut LegIndex, transfers: &[Transfer]) -> Vec<R> {
        let command = ledger_core::Command::CreateTransfers(transfers.to_vec());
        let ledger_core::Reply::CreateTransfers(results) = ledger.apply(&command, 1_000) else {
            panic!("transfers answer transfer results");
        };
        index.observe(transfers, &results);
        results
    }

    /// A ledger holding the coordinator legs of transfers 1 and 2 (3's failed), and its index.
    fn ledger_with_legs() -> (Ledger, LegIndex) {
        let (mut ledger, mut index) = (Ledger::new(), LegIndex::default());
        let accounts = vec![Account::new(1, 1, 1), Account::new(SYSTEM_ID_MIN + 5, 1, 1)];
        ledger.apply(&ledger_core::Command::CreateAccounts(accounts), 1);
        let leg = |t, ledger| Transfer {
            flags: TransferFlags::PENDING,
            ..Transfer::new(leg_id(t), 1, SYSTEM_ID_MIN + 5, 10, ledger, 1)
        };
        let results = apply(&mut ledger, &mut index, &[leg(1, 1), leg(2, 1), leg(3, 2)]);
        assert_eq!(
            results,
            [R::Ok, R::Ok, R::TransferMustHaveTheSameLedgerAsAccounts]
        );
        (ledger, index)
    }

    #[test]
    fn leg_index_follows_prepares_and_resolutions() {
        let (mut ledger, mut index) = ledger_with_legs();
        assert_eq!(index.len(), 2);
        let mut two = Vec::new();
        index.encode(&ledger, &mut two);
        // A user transfer and a failed resolution change nothing; a logged one removes.
        let post = resolution(1, Decision::Commit);
        let void = resolution(3, Decision::Abort(R::CreditAccountNotFound));
        let user = Transfer::new(9, 1, SYSTEM_ID_MIN + 5, 1, 1, 1);
        let results = apply(&mut ledger, &mut index, &[user, post, post, void]);
        let expected = [R::Ok, R::Ok, R::Exists, R::PendingTransferNotFound];
        assert_eq!(results, expected);
        let unresolved = index.unresolved(&ledger);
        assert_eq!(
            unresolved.iter().map(|t| t.id).collect::<Vec<_>>(),
            [leg_id(2)]
        );
        // As submitted: the ledger's timestamp is not part of the leg.
        assert_eq!(unresolved[0].timestamp, 0);
        let mut bytes = Vec::new();
        index.encode(&ledger, &mut bytes);
        let decoded = LegIndex::decode(&mut Reader::new(&bytes), &ledger).unwrap();
        assert_eq!(decoded, index);
        assert!(LegIndex::decode(&mut Reader::new(&bytes[..bytes.len() - 1]), &ledger).is_none());
        // Legs the ledger does not hold, or holds otherwise, are refused.
        assert!(LegIndex::decode(&mut Reader::new(&bytes), &Ledger::new()).is_none());
        let mut altered = bytes.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(LegIndex::decode(&mut Reader::new(&altered), &ledger).is_none());
        assert_eq!(
            LegIndex::decode(&mut Reader::new(&two), &ledger)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            logged_decision(&void),
            Decision::Abort(R::CreditAccountNotFound)
        );
        assert_eq!(logged_decision(&post), Decision::Commit);
    }

    #[test]
    fn plan_splits_and_refuses_what_is_not_built() {
        let router = Router::new(2);
        let plain = Transfer::new(1, 1, 2, 5, 1, 1);
        let local = Transfer::new(2, 1, 3, 5, 1, 1);
        let plan = plan_transfers(router, &[plain, local]).unwrap();
        assert_eq!((plan.cross, plan.local), (vec![0], vec![1]));
        let pending = Transfer {
            flags: TransferFlags::PENDING,
            ..plain
        };
        assert!(matches!(
            plan_transfers(router, &[local, pending]),
            Err(ShardError::CrossShard { index: 1, .. })
        ));
        let linked = Transfer {
            flags: TransferFlags::LINKED,
            ..local
        };
        assert!(plan_transfers(router, &[linked, plain]).is_err());
        let (preset, submit) =
            plan_accounts(&[Account::new(SYSTEM_ID_MIN, 1, 1), Account::new(4, 1, 1)]);
        assert_eq!(submit, [1]);
        assert_eq!(preset[0], Some(CreateAccountResult::IdReservedForSystem));
    }
}
