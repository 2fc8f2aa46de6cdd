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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel;
use ledger_core::{
    Account, BATCH_EVENTS_MAX, CreateAccountResult, CreateTransferResult as R, Query, QueryReply,
    SYSTEM_ID_MIN, TRANSFER_SIZE_BYTES, Transfer, TransferFlags,
};
use parking_lot::Mutex;

use crate::clock;
use crate::cluster::ClusterInner;
use crate::error::{Result, ShardError};
use crate::reply_cache::Reader;
use crate::router::Router;
use crate::shard::{self, Events, Results, Submission};
use crate::wire::Read;

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

/// `x(t)`: on the participant, the post or void of `leg(t)` that applies a user's post or void
/// of the cross-shard pending transfer `t`; on the coordinator, the acknowledgement that it did.
pub const APPLIED_ID_MIN: u128 = RESOLUTION_ID_MIN + SYSTEM_ID_MIN;

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

/// `x(t)` of user transfer `t`: defined for `t` below `SYSTEM_ID_MIN - 1` (`x(2^126 - 1)`
/// would be `u128::MAX`, so a cross-shard pending transfer may not take that id).
pub fn applied_id(t: u128) -> u128 {
    debug_assert!(t < SYSTEM_ID_MIN - 1);
    APPLIED_ID_MIN + t
}

fn is_applied_id(id: u128) -> bool {
    id >= APPLIED_ID_MIN && id != u128::MAX
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

/// The bit of a bridge's key that marks a *pending* bridge: the legs of a user's pending
/// transfer go through the pending bridges, so a leg names its kind (a resolver that finds it
/// knows whether committing means posting it or keeping it pending).
const PENDING_BRIDGE_BIT: u128 = 1 << 48;

/// The pending bridge on shard `local` for peer `peer` (see [`bridge_id`]); with
/// `peer == local` it is the shard's *marker* account, the credit side of the zero-amount
/// markers that record decisions without moving money.
pub fn pending_bridge_id(router: Router, ledger: u32, local: usize, peer: usize) -> u128 {
    bridge_id(router, ledger, local, peer) + PENDING_BRIDGE_BIT * router.shard_count() as u128
}

fn bridge_key(router: Router, bridge: u128) -> u128 {
    let shards = router.shard_count() as u128;
    bridge / shards - (SYSTEM_ID_MIN / shards + 1)
}

/// The peer shard a bridge account books for.
fn bridge_peer(router: Router, bridge: u128) -> usize {
    // The low 16 bits hold a shard index (below SHARD_COUNT_MAX).
    (bridge_key(router, bridge) & 0xffff) as usize
}

/// The ledger of a bridge account.
fn bridge_ledger(router: Router, bridge: u128) -> u32 {
    // Bits 16..48 hold the ledger.
    ((bridge_key(router, bridge) >> 16) & u128::from(u32::MAX)) as u32
}

/// Whether a bridge account is a pending bridge (see [`pending_bridge_id`]).
fn is_pending_bridge(router: Router, bridge: u128) -> bool {
    bridge_key(router, bridge) & PENDING_BRIDGE_BIT != 0
}

// ---- the replicated index of unresolved legs --------------------------------------------

/// The legs one replica holds that are not resolved yet, kept by the state machine from the
/// results of every applied transfer (deterministic, part of the snapshot). A hash map with a
/// multiplicative hash of the id: two map operations per cross-shard transfer and replica sit
/// on the apply path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LegIndex {
    legs: HashMap<u128, Transfer, BuildHasherDefault<IdHasher>>,
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
    /// Records the effect of one applied `create_transfers` batch:
    ///
    /// - a leg `leg(t)` created enters; the resolution `res(t)` (a post, a void or a marker)
    ///   removes it;
    /// - a user's post or void of a coordinator leg (a user id whose `pending_id` is `leg(t)`)
    ///   enters under the key `x(t)`: the participant has to apply it; `x(t)` logged (the
    ///   participant's application, or the coordinator's acknowledgement) removes it.
    pub fn observe(&mut self, transfers: &[Transfer], results: &[R]) {
        for (transfer, result) in transfers.iter().zip(results) {
            if !result.is_ok() {
                continue;
            }
            let id = transfer.id;
            if is_leg_id(id) {
                self.legs.insert(id, *transfer);
            } else if is_resolution_id(id) {
                self.legs.remove(&leg_id(id - RESOLUTION_ID_MIN));
            } else if is_applied_id(id) {
                self.legs.remove(&id);
            } else if let Some(key) = applied_key(transfer) {
                self.legs.insert(key, *transfer);
            }
        }
    }

    /// Number of unresolved legs.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// Up to [`BATCH_EVENTS_MAX`] unresolved legs, in no particular order (the read runs under
    /// the state machine's lock, so it copies no more than it returns).
    pub fn unresolved(&self) -> Vec<Transfer> {
        self.legs
            .values()
            .take(BATCH_EVENTS_MAX as usize)
            .copied()
            .collect()
    }

    /// Appends `count u64 | count × 128-byte transfer` (a user's post of a leg stands for its
    /// key `x(t)`, which its `pending_id` gives).
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Sorted by key: identical indexes encode to identical bytes (I5).
        let mut legs: Vec<(&u128, &Transfer)> = self.legs.iter().collect();
        legs.sort_unstable_by_key(|(key, _)| **key);
        out.extend_from_slice(&(legs.len() as u64).to_le_bytes());
        for (_, transfer) in legs {
            out.extend_from_slice(&transfer.encode());
        }
    }

    /// Decodes an index from the front of `reader`; `None` on malformed bytes (never allocates
    /// more than the bytes present can fill).
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Option<Self> {
        let count = usize::try_from(reader.u64()?).ok()?;
        let bytes = reader.take(count.checked_mul(TRANSFER_SIZE_BYTES)?)?;
        let mut legs = HashMap::default();
        for chunk in bytes.chunks_exact(TRANSFER_SIZE_BYTES) {
            let transfer = Transfer::decode(chunk).ok()?;
            let key = if is_leg_id(transfer.id) {
                transfer.id
            } else {
                applied_key(&transfer)?
            };
            if legs.insert(key, transfer).is_some() {
                return None;
            }
        }
        Some(Self { legs })
    }
}

/// The key `x(t)` of a user's post or void of the coordinator leg `leg(t)`, if it is one.
fn applied_key(transfer: &Transfer) -> Option<u128> {
    if transfer.id >= SYSTEM_ID_MIN || !is_leg_id(transfer.pending_id) {
        return None;
    }
    let key = transfer.pending_id - LEG_ID_MIN + APPLIED_ID_MIN;
    is_applied_id(key).then_some(key)
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
#[derive(Debug, Clone, Copy)]
struct Cross {
    /// The user's view: id `t`, `A → B`.
    transfer: Transfer,
    debit_shard: usize,
    credit_shard: usize,
}

/// How a call splits: events answered by the client itself, cross-shard events, and the rest.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Results decided before submission (reserved ids and their chains).
    pub(crate) preset: Vec<Option<R>>,
    /// Indexes of the cross-shard transfers (plain or pending).
    pub(crate) cross: Vec<usize>,
    /// Indexes of the events for one shard each.
    pub(crate) local: Vec<usize>,
    /// Indexes of the posts and voids whose pending transfer must be located first: it may
    /// be a cross-shard one (see [`locate_posts`]).
    pub(crate) posts: Vec<usize>,
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
/// [`ShardError::CrossShard`] for what is not built across shards: a cross-shard transfer
/// that is linked or part of a chain, balancing or closing, or pending with a timeout.
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
            let flags = transfer.flags;
            if router.shard_count() > 1
                && (flags.post_pending_transfer() || flags.void_pending_transfer())
                && !names_one_shard(router, transfer)
            {
                plan.posts.push(index);
                continue;
            }
            let crate::router::Route::Cross {
                debit_shard,
                credit_shard,
            } = router.route(transfer)
            else {
                plan.local.push(index);
                continue;
            };
            let pending = flags == TransferFlags::PENDING;
            if chain.len() > 1
                || !(flags == TransferFlags::empty() || pending)
                || (pending && transfer.timeout != 0)
            {
                return Err(ShardError::CrossShard {
                    index,
                    debit_shard,
                    credit_shard,
                });
            }
            if pending && transfer.id == SYSTEM_ID_MIN - 1 {
                // Its x(t) would be u128::MAX.
                plan.preset[index] = Some(R::IdReservedForSystem);
                continue;
            }
            plan.cross.push(index);
        }
    }
    Ok(plan)
}

/// Whether a post or void names two accounts on one shard: its pending transfer, if it
/// matches them, lives there (a cross-shard one would name accounts on two shards).
fn names_one_shard(router: Router, transfer: &Transfer) -> bool {
    transfer.debit_account_id != 0
        && transfer.credit_account_id != 0
        && router.shard_of(transfer.debit_account_id) == router.shard_of(transfer.credit_account_id)
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
    let router = inner.router;
    let mut missing: Vec<Vec<Account>> = vec![Vec::new(); inner.shards.len()];
    {
        let known = inner.crossshard.bridges.lock();
        let mut wanted = HashSet::new();
        for cross in crosses {
            let (ledger, d, c) = (cross.transfer.ledger, cross.debit_shard, cross.credit_shard);
            let mut ids = vec![
                (d, bridge_id(router, ledger, d, c)),
                (c, bridge_id(router, ledger, c, d)),
            ];
            if cross.transfer.flags.pending() {
                // The pending bridges, and each shard's marker account.
                for (local, peer) in [(d, c), (c, d), (d, d), (c, c)] {
                    ids.push((local, pending_bridge_id(router, ledger, local, peer)));
                }
            }
            for (local, id) in ids {
                if !known.contains(&id) && wanted.insert(id) {
                    missing[local].push(Account::new(id, ledger, BRIDGE_CODE));
                }
            }
        }
    }
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
enum Decision {
    Commit,
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

/// Runs steps 1 to 4 for prechecked cross-shard transfers; one result each, in order.
fn drive(inner: &ClusterInner, crosses: &[Cross], deadline: Instant) -> Result<Vec<R>> {
    let router = inner.router;
    ensure_bridges(inner, crosses, deadline)?;
    // 1. Prepare at the coordinators.
    let prepared = scatter(
        inner,
        crosses,
        |cross| cross.debit_shard,
        |cross| coordinator_leg(router, cross),
        deadline,
    )?;
    let mut results: Vec<Option<R>> = vec![None; crosses.len()];
    let mut live = Vec::new();
    for (index, &result) in prepared.iter().enumerate() {
        if result.is_ok() || result.is_exists() {
            live.push(index);
        } else {
            // The coordinator leg holds B in user_data_128.
            results[index] = Some(match result {
                R::ExistsWithDifferentUserData128 => R::ExistsWithDifferentCreditAccountId,
                other => other,
            });
        }
    }
    let live_crosses: Vec<Cross> = live.iter().map(|&index| crosses[index]).collect();
    let checkpoint = |step| match live_crosses.first() {
        Some(cross) => inner.crossshard.checkpoint(step, cross.debit_shard),
        None => Ok(()),
    };
    checkpoint(CrossShardStep::Prepared)?;
    // 2. Votes at the participants.
    let votes = scatter(
        inner,
        &live_crosses,
        |cross| cross.credit_shard,
        |cross| participant_leg(router, cross),
        deadline,
    )?;
    // 3. Decisions at the coordinators: durable before anyone applies them (I10).
    let proposed: Vec<Decision> = votes.iter().map(|&vote| vote_decision(vote)).collect();
    checkpoint(CrossShardStep::Voted)?;
    let decisions = decide(inner, &live_crosses, &proposed, deadline)?;
    checkpoint(CrossShardStep::Decided)?;
    // 4. Finish at the participants: the finisher thread does it, batched across calls; the
    // caller's answer needs only the durable decision. Should it fail, the resolver finishes.
    let work: Finishes = live_crosses
        .iter()
        .copied()
        .zip(decisions.iter().copied())
        .collect();
    if !work.is_empty() {
        crossbeam::select! {
            send(inner.crossshard.finishes, work) -> sent => sent.map_err(|_| ShardError::Shutdown)?,
            recv(inner.shutdown) -> _ => return Err(ShardError::Shutdown),
        }
    }
    for (position, &index) in live.iter().enumerate() {
        let vote = votes[position];
        let first_time = prepared[index].is_ok();
        results[index] = Some(match decisions[position] {
            Decision::Commit if is_exists_with_different(vote) => vote,
            Decision::Commit if first_time => R::Ok,
            Decision::Commit => R::Exists,
            Decision::Abort(reason) if first_time => reason,
            Decision::Abort(reason) if reason.is_transient() => R::IdAlreadyFailed,
            Decision::Abort(reason) => reason,
        });
    }
    Ok(results
        .into_iter()
        .map(|result| result.expect("every transfer has its result"))
        .collect())
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

/// Submits `event(cross)` to `shard_of(cross)` for every cross, all shards at once; returns
/// the results in the order of `crosses`.
fn scatter<T>(
    inner: &ClusterInner,
    crosses: &[T],
    shard_of: impl Fn(&T) -> usize,
    event: impl Fn(&T) -> Transfer,
    deadline: Instant,
) -> Result<Vec<R>> {
    let mut per_shard: Vec<Vec<Transfer>> = vec![Vec::new(); inner.shards.len()];
    let mut positions: Vec<Vec<usize>> = vec![Vec::new(); inner.shards.len()];
    for (index, cross) in crosses.iter().enumerate() {
        let shard = shard_of(cross);
        per_shard[shard].push(event(cross));
        positions[shard].push(index);
    }
    let answers = submit_transfers(inner, per_shard, deadline)?;
    let mut results = vec![R::Ok; crosses.len()];
    for (positions, answers) in positions.into_iter().zip(answers) {
        if positions.len() != answers.len() {
            return Err(protocol("one result per event"));
        }
        for (index, result) in positions.into_iter().zip(answers) {
            results[index] = result;
        }
    }
    Ok(results)
}

/// Logs the proposed decisions at the coordinators; a decision logged before (by another
/// driver or the resolver) wins and is read back.
fn decide(
    inner: &ClusterInner,
    crosses: &[Cross],
    proposed: &[Decision],
    deadline: Instant,
) -> Result<Vec<Decision>> {
    let pairs: Vec<(Cross, Decision)> = crosses
        .iter()
        .copied()
        .zip(proposed.iter().copied())
        .collect();
    let answers = scatter(
        inner,
        &pairs,
        |(cross, _)| cross.debit_shard,
        |(cross, decision)| resolution(cross.transfer.id, *decision),
        deadline,
    )?;
    let mut decisions = proposed.to_vec();
    let mut unknown: Vec<Vec<usize>> = vec![Vec::new(); inner.shards.len()];
    for (index, &answer) in answers.iter().enumerate() {
        if answer.is_ok() || answer.is_exists() {
            continue;
        }
        if !is_exists_with_different(answer) {
            return Err(protocol(&format!(
                "decision for transfer {}: {answer:?}",
                crosses[index].transfer.id
            )));
        }
        unknown[crosses[index].debit_shard].push(index);
    }
    for (shard, indexes) in unknown.into_iter().enumerate() {
        if indexes.is_empty() {
            continue;
        }
        let ids: Vec<u128> = indexes
            .iter()
            .map(|&index| resolution_id(crosses[index].transfer.id))
            .collect();
        let found: HashMap<u128, Transfer> = lookup(inner, shard, &ids, deadline)?
            .into_iter()
            .map(|transfer| (transfer.id, transfer))
            .collect();
        for (index, id) in indexes.into_iter().zip(ids) {
            let logged = found
                .get(&id)
                .ok_or_else(|| protocol("a decision answered Exists… but is not found"))?;
            decisions[index] = logged_decision(logged);
        }
    }
    Ok(decisions)
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

/// Applies the decisions at the participants: post a committed leg; fence and void an
/// aborted one (the fence burns the leg id if the leg does not exist, see [`fence`]).
fn finish(
    inner: &ClusterInner,
    crosses: &[Cross],
    decisions: &[Decision],
    deadline: Instant,
) -> Result<()> {
    let router = inner.router;
    let mut per_shard: Vec<Vec<Transfer>> = vec![Vec::new(); inner.shards.len()];
    let mut kinds: Vec<Vec<Decision>> = vec![Vec::new(); inner.shards.len()];
    for (cross, &decision) in crosses.iter().zip(decisions) {
        let shard = cross.credit_shard;
        let t = cross.transfer.id;
        if let Decision::Abort(_) = decision {
            per_shard[shard].push(fence(router, t, shard));
            kinds[shard].push(decision);
        }
        per_shard[shard].push(resolution(t, decision));
        kinds[shard].push(decision);
    }
    let answers = submit_transfers(inner, per_shard, deadline)?;
    for (kinds, answers) in kinds.into_iter().zip(answers) {
        for (decision, answer) in kinds.into_iter().zip(answers) {
            // A commit's post must land (the leg exists: the vote was yes); an abort's fence and
            // void may find the leg missing or burnt, which is the point.
            if decision == Decision::Commit && !(answer.is_ok() || answer.is_exists()) {
                return Err(protocol(&format!("participant post: {answer:?}")));
            }
        }
    }
    Ok(())
}

// ---- users' posts and voids of cross-shard pending transfers ----------------------------

/// Where a post or void goes once its pending transfer is located.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Located {
    /// To one shard, as this event: the caller's, or with a pending id chosen so that the
    /// shard answers the rejection a single ledger would (`PendingTransferNotFound` for a
    /// cross-shard transfer not committed, `PendingTransferNotPending` for a plain one).
    Local { shard: usize, event: Transfer },
    /// Across shards: the pending transfer is a committed cross-shard pending transfer.
    Cross(CrossPost),
}

/// A user's post or void `P` (id `p`) of the cross-shard pending transfer `T` (id `t`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrossPost {
    /// What the coordinator logs: `P` itself resolving `leg(t)` (its credit account the
    /// coordinator's bridge, or the caller's if it is not `B`, so the ledger says so).
    event: Transfer,
    /// The coordinator: the shard of `T`'s debit account.
    debit_shard: usize,
    /// The participant: the shard of `T`'s credit account.
    credit_shard: usize,
}

impl CrossPost {
    /// The shards of `T`'s debit and credit accounts.
    pub(crate) fn shards(&self) -> (usize, usize) {
        (self.debit_shard, self.credit_shard)
    }
}

/// Locates the pending transfers of posts and voids: one linearizable read of every shard
/// for `t`, `leg(t)` and `res(t)` of each; one destination per post, in order.
pub(crate) fn locate_posts(
    inner: &ClusterInner,
    posts: &[Transfer],
    deadline: Instant,
) -> Result<Vec<Located>> {
    let mut ids: Vec<u128> = posts
        .iter()
        .map(|post| post.pending_id)
        .filter(|&t| t != 0 && t < SYSTEM_ID_MIN)
        .flat_map(|t| [t, leg_id(t), resolution_id(t)])
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut per_shard: Vec<HashMap<u128, Transfer>> = Vec::with_capacity(inner.shards.len());
    for shard in 0..inner.shards.len() {
        let found = if ids.is_empty() {
            Vec::new()
        } else {
            lookup(inner, shard, &ids, deadline)?
        };
        per_shard.push(
            found
                .into_iter()
                .map(|transfer| (transfer.id, transfer))
                .collect(),
        );
    }
    Ok(posts
        .iter()
        .map(|post| locate_post(inner.router, &per_shard, post))
        .collect())
}

/// Where one post or void goes, given what every shard holds of its pending transfer.
fn locate_post(router: Router, per_shard: &[HashMap<u128, Transfer>], post: &Transfer) -> Located {
    let named_shard = match router.route(post) {
        crate::router::Route::Shard(shard) => shard,
        crate::router::Route::Cross { debit_shard, .. } => debit_shard,
        crate::router::Route::Unknown => 0,
    };
    let t = post.pending_id;
    let local = |shard, pending_id| Located::Local {
        shard,
        event: Transfer {
            pending_id,
            ..*post
        },
    };
    if t == 0 || t >= SYSTEM_ID_MIN {
        return local(named_shard, t);
    }
    if let Some(shard) = per_shard.iter().position(|found| found.contains_key(&t)) {
        return local(shard, t);
    }
    let coordinator = per_shard.iter().enumerate().find_map(|(shard, found)| {
        let leg = found
            .get(&leg_id(t))
            .filter(|leg| is_reserved(leg.credit_account_id))?;
        Some((shard, *leg))
    });
    let Some((debit_shard, leg)) = coordinator else {
        return local(named_shard, t);
    };
    match per_shard[debit_shard].get(&resolution_id(t)) {
        // A plain transfer, committed: the shard answers PendingTransferNotPending.
        Some(res) if res.flags.post_pending_transfer() => local(debit_shard, resolution_id(t)),
        // A pending transfer, committed (its decision is a marker).
        Some(res) if !res.flags.void_pending_transfer() => {
            let credit_shard = bridge_peer(router, leg.credit_account_id);
            let credit = per_shard[credit_shard]
                .get(&leg_id(t))
                .map_or(0, |leg| leg.credit_account_id);
            let named_credit = post.credit_account_id;
            Located::Cross(CrossPost {
                event: Transfer {
                    pending_id: leg_id(t),
                    credit_account_id: if named_credit == 0 || named_credit == credit {
                        leg.credit_account_id
                    } else {
                        named_credit
                    },
                    ..*post
                },
                debit_shard,
                credit_shard,
            })
        }
        // Aborted, or not decided yet: the transfer does not exist (PendingTransferNotFound,
        // which burns the post's id like on a single shard).
        _ => local(debit_shard, t),
    }
}

/// Runs users' posts and voids of cross-shard pending transfers: the coordinator logs each
/// (the decision: the ledger checks it against `leg(t)` with its own rules and precedence,
/// and keeps a retry idempotent), then the participants apply the logged ones and the
/// coordinators acknowledge. One result per post, in order; the answer follows the decision.
pub(crate) fn execute_posts(
    inner: &ClusterInner,
    posts: &[CrossPost],
    deadline: Instant,
) -> Result<Vec<R>> {
    let results = scatter(
        inner,
        posts,
        |post| post.debit_shard,
        |post| post.event,
        deadline,
    )?;
    if let Some(post) = posts.first() {
        inner
            .crossshard
            .checkpoint(CrossShardStep::Decided, post.debit_shard)?;
    }
    // A retry answering Exists leaves the finishing to the resolver: it works from the post as
    // logged, whose zero fields may differ from the retry's.
    let logged: Vec<Transfer> = posts
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|(post, _)| post.event)
        .collect();
    if !logged.is_empty() {
        // Should it fail, the coordinator's index keeps the posts for the resolver.
        let _ = finish_posts(inner, &logged, deadline);
    }
    Ok(results)
}

/// Applies posts logged by coordinators at their participants (`x(t)`), then acknowledges
/// them at the coordinators (`x(t)` there): both idempotent by id.
fn finish_posts(inner: &ClusterInner, logged: &[Transfer], deadline: Instant) -> Result<()> {
    let router = inner.router;
    let applied = scatter(
        inner,
        logged,
        |post| bridge_peer(router, post.credit_account_id),
        |post| applied_event(router, post),
        deadline,
    )?;
    let acknowledged = scatter(
        inner,
        logged,
        |post| router.shard_of(post.credit_account_id),
        |post| acknowledgement(router, post),
        deadline,
    )?;
    for result in applied.into_iter().chain(acknowledged) {
        if !(result.is_ok() || result.is_exists()) {
            return Err(protocol(&format!("applying a post: {result:?}")));
        }
    }
    Ok(())
}

/// The participant's `x(t)`: the same post or void of its own `leg(t)`. It cannot fail: only
/// the protocol touches a leg, the amounts are the coordinator leg's, and a post with a system
/// id lands even in an account closed since (ledger-core).
fn applied_event(router: Router, post: &Transfer) -> Transfer {
    let t = post.pending_id - LEG_ID_MIN;
    let bridge = post.credit_account_id;
    let (debit_shard, credit_shard) = (router.shard_of(bridge), bridge_peer(router, bridge));
    let ledger = bridge_ledger(router, bridge);
    Transfer {
        id: applied_id(t),
        debit_account_id: pending_bridge_id(router, ledger, credit_shard, debit_shard),
        credit_account_id: 0,
        pending_id: leg_id(t),
        timeout: 0,
        ledger: 0,
        code: 0,
        flags: if post.flags.post_pending_transfer() {
            TransferFlags::POST_PENDING_TRANSFER
        } else {
            TransferFlags::VOID_PENDING_TRANSFER
        },
        timestamp: 0,
        ..*post
    }
}

/// The coordinator's `x(t)`: a zero-amount marker saying the participant applied the post.
fn acknowledgement(router: Router, post: &Transfer) -> Transfer {
    let t = post.pending_id - LEG_ID_MIN;
    marker(router, post.credit_account_id, applied_id(t))
}

/// A zero-amount transfer `id` from the pending bridge `bridge` to its shard's marker account:
/// it records a decision without moving money, and never fails (bridges have no limits and
/// are never closed).
fn marker(router: Router, bridge: u128, id: u128) -> Transfer {
    let ledger = bridge_ledger(router, bridge);
    let local = router.shard_of(bridge);
    Transfer::new(
        id,
        bridge,
        pending_bridge_id(router, ledger, local, local),
        0,
        ledger,
        BRIDGE_CODE,
    )
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
        // Committed: the decision is a post (plain) or a marker (pending), not a void.
        let coordinator = per_shard.iter().find_map(|found| {
            let leg = found
                .get(&leg)
                .filter(|leg| is_reserved(leg.credit_account_id))?;
            let res = found
                .get(&res)
                .filter(|res| !res.flags.void_pending_transfer())?;
            Some((*leg, res.timestamp))
        });
        let Some((coordinator_leg, decided_at)) = coordinator else {
            continue;
        };
        let credit_shard = bridge_peer(router, coordinator_leg.credit_account_id);
        let Some(participant) = per_shard[credit_shard].get(&leg).copied() else {
            continue;
        };
        let pending = is_pending_bridge(router, coordinator_leg.credit_account_id);
        committed.insert(
            t,
            Transfer {
                id: t,
                credit_account_id: participant.credit_account_id,
                user_data_128: participant.user_data_128,
                flags: if pending {
                    TransferFlags::PENDING
                } else {
                    TransferFlags::empty()
                },
                timestamp: decided_at,
                ..coordinator_leg
            },
        );
    }
    Ok(committed)
}

/// Shows users' posts and voids of cross-shard pending transfers as they submitted them: the
/// coordinator stores `P` resolving `leg(t)` with its bridge as credit account; the caller
/// sees `pending_id = t` and `T`'s credit account (read from the participant's leg).
pub(crate) fn present_posts(
    inner: &ClusterInner,
    found: &mut HashMap<u128, Transfer>,
    deadline: Instant,
) -> Result<()> {
    let router = inner.router;
    let mut wanted: Vec<Vec<u128>> = vec![Vec::new(); inner.shards.len()];
    for transfer in found.values() {
        if transfer.id < SYSTEM_ID_MIN && is_leg_id(transfer.pending_id) {
            let participant = bridge_peer(router, transfer.credit_account_id);
            wanted[participant].push(transfer.pending_id);
        }
    }
    let mut credits: HashMap<u128, u128> = HashMap::new();
    for (shard, legs) in wanted.into_iter().enumerate() {
        if !legs.is_empty() {
            credits.extend(
                lookup(inner, shard, &legs, deadline)?
                    .into_iter()
                    .map(|leg| (leg.id, leg.credit_account_id)),
            );
        }
    }
    for transfer in found.values_mut() {
        if let Some(&credit) = credits.get(&transfer.pending_id) {
            transfer.credit_account_id = credit;
            transfer.pending_id -= LEG_ID_MIN;
        }
    }
    Ok(())
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
/// drives the old ones to their end. A participant leg (a yes vote) seen for
/// [`RESOLVER_VOTE_AGE`] is committed (or follows the decision already logged); a coordinator leg older than the
/// request timeout, when its caller has given up, commits if the participant voted yes and is
/// aborted otherwise. A shard without a leader is skipped until it has one again (I10, I11).
pub(crate) fn resolver_run(inner: &ClusterInner) {
    let mut first_seen: HashMap<(usize, u128), Instant> = HashMap::new();
    loop {
        match inner.shutdown.recv_timeout(RESOLVER_INTERVAL) {
            Err(channel::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(channel::RecvTimeoutError::Disconnected) => return,
        }
        let now = clock::now();
        let mut still: HashMap<(usize, u128), Instant> = HashMap::new();
        let mut due: BTreeMap<(usize, usize), Vec<(u128, bool)>> = BTreeMap::new();
        for shard in 0..inner.shards.len() {
            let Ok(legs) = unresolved(inner, shard, now + RESOLVER_INTERVAL) else {
                // Keep what we knew of a shard we could not read.
                still.extend(first_seen.iter().filter(|((s, _), _)| *s == shard));
                continue;
            };
            for leg in legs {
                let seen = *first_seen.get(&(shard, leg.id)).unwrap_or(&now);
                still.insert((shard, leg.id), seen);
                let age = now.saturating_duration_since(seen);
                let t = leg.id - LEG_ID_MIN;
                if is_reserved(leg.credit_account_id) {
                    let peer = bridge_peer(inner.router, leg.credit_account_id);
                    if age >= inner.config.request_timeout {
                        due.entry((shard, peer)).or_default().push((t, false));
                    }
                } else if age >= RESOLVER_VOTE_AGE {
                    let peer = bridge_peer(inner.router, leg.debit_account_id);
                    due.entry((peer, shard)).or_default().push((t, true));
                }
            }
        }
        first_seen = still;
        for ((debit_shard, credit_shard), ts) in due {
            // Errors (a shard without quorum, shutdown) leave the legs for a later pass.
            let _ = recover(inner, debit_shard, credit_shard, &ts);
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
        let (crosses, decisions): (Vec<Cross>, Vec<Decision>) = work.into_iter().unzip();
        let deadline = clock::now() + inner.config.request_timeout;
        let _ = finish(inner, &crosses, &decisions, deadline);
    }
}

/// Drives the transfers `ts` between coordinator `debit_shard` and participant
/// `credit_shard` to their end; `true` marks a transfer whose participant leg was seen.
fn recover(
    inner: &ClusterInner,
    debit_shard: usize,
    credit_shard: usize,
    ts: &[(u128, bool)],
) -> Result<()> {
    let deadline = clock::now() + inner.config.request_timeout;
    let mut ts = ts.to_vec();
    ts.sort_unstable();
    ts.dedup_by_key(|(t, _)| *t);
    let unknown: Vec<u128> = ts
        .iter()
        .filter(|(_, voted)| !voted)
        .map(|(t, _)| leg_id(*t))
        .collect();
    let voted: HashSet<u128> = if unknown.is_empty() {
        HashSet::new()
    } else {
        lookup(inner, credit_shard, &unknown, deadline)?
            .into_iter()
            .map(|leg| leg.id - LEG_ID_MIN)
            .collect()
    };
    let crosses: Vec<Cross> = ts
        .iter()
        .map(|&(t, _)| Cross {
            transfer: Transfer {
                id: t,
                ..Transfer::default()
            },
            debit_shard,
            credit_shard,
        })
        .collect();
    let proposed: Vec<Decision> = ts
        .iter()
        .map(|&(t, seen_vote)| {
            if seen_vote || voted.contains(&t) {
                Decision::Commit
            } else {
                // Presumed abort: the caller gave up before the participant voted.
                Decision::Abort(R::IdAlreadyFailed)
            }
        })
        .collect();
    let decisions = decide(inner, &crosses, &proposed, deadline)?;
    finish(inner, &crosses, &decisions, deadline)
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
            let mut reader = Reader::new(&bytes);
            if let Some(index) = LegIndex::decode(&mut reader) {
                let mut out = Vec::new();
                index.encode(&mut out);
                prop_assert_eq!(LegIndex::decode(&mut Reader::new(&out)), Some(index));
            }
        }
    }

    #[test]
    fn leg_index_follows_prepares_and_resolutions() {
        let mut index = LegIndex::default();
        let leg = |t| Transfer {
            flags: TransferFlags::PENDING,
            ..Transfer::new(leg_id(t), 1, SYSTEM_ID_MIN + 5, 10, 1, 1)
        };
        index.observe(
            &[leg(1), leg(2), leg(3)],
            &[R::Ok, R::Ok, R::ExceedsCredits],
        );
        assert_eq!(index.len(), 2);
        // A user transfer and a failed resolution change nothing; a logged one removes.
        let post = resolution(1, Decision::Commit);
        let void = resolution(2, Decision::Abort(R::CreditAccountNotFound));
        index.observe(
            &[Transfer::new(9, 1, 2, 1, 1, 1), post, void],
            &[R::Ok, R::Ok, R::Exists],
        );
        assert_eq!(
            index.unresolved().iter().map(|t| t.id).collect::<Vec<_>>(),
            [leg_id(2)]
        );
        let mut bytes = Vec::new();
        index.encode(&mut bytes);
        let decoded = LegIndex::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(decoded, index);
        assert!(LegIndex::decode(&mut Reader::new(&bytes[..bytes.len() - 1])).is_none());
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
