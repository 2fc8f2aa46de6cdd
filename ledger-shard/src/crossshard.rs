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
//!
//! A user's pending `T` goes through *pending bridges* and commits by a zero-amount marker
//! `res(t)` that keeps both legs pending; the user's post or void `P` is logged by the
//! coordinator as `P` resolving `leg(t)`, applied by the participant under `x(t)` and
//! acknowledged without storage; a timeout rides on the participant leg (as data) and on the
//! decision, whoever logs it, and the resolver enforces it. A closing one closes `A` by its
//! coordinator leg and `B` by its participant leg; a `BALANCING_DEBIT` transfer's coordinator
//! leg is clamped by the ledger, and its caller reads the amount back for the vote.
//! A linked chain spanning shards logs *chain records* on its coordinator first, then one
//! linked part of pending legs per shard (through *chain bridges*), decides at the head's leg
//! and makes every other leg follow. The protocol's logic is the sans-IO core in [`protocol`];
//! `docs/crossshard.md` describes all of it.

pub mod protocol;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
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
    Action, CallMachine, ChainMachine, FinishMachine, LocateMachine, Machine, Phase,
    PostFinishMachine, PostMachine, RecoveryMachine, Reply, Resolver, ResolverTiming, Unresolved,
};
pub(crate) use protocol::{CrossPost, Located};

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
/// (or the expiry) of the cross-shard pending transfer `t`; on the coordinator, the expiry's
/// void; on a chain's coordinator, the chain record of event `t`.
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

/// The key a bridge's id encodes (0 for an id below the bridges: a user account).
fn bridge_key(router: Router, bridge: u128) -> u128 {
    let shards = router.shard_count() as u128;
    (bridge / shards).saturating_sub(SYSTEM_ID_MIN / shards + 1)
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

/// The bit of a bridge's key that marks a *chain* bridge: the cross-shard legs of a linked
/// chain spanning shards go through chain bridges, so the per-leg rules of the resolver leave
/// them alone (a chain's legs are resolved together, from its coordinator's chain record).
const CHAIN_BRIDGE_BIT: u128 = 1 << 49;

/// The chain bridge on shard `local` for peer `peer` (see [`bridge_id`]); with `peer == local`
/// it is the debit side of the shard's chain records.
pub fn chain_bridge_id(router: Router, ledger: u32, local: usize, peer: usize) -> u128 {
    bridge_id(router, ledger, local, peer) + CHAIN_BRIDGE_BIT * router.shard_count() as u128
}

/// Whether a bridge account is a chain bridge (see [`chain_bridge_id`]).
fn is_chain_bridge(router: Router, bridge: u128) -> bool {
    bridge_key(router, bridge) & CHAIN_BRIDGE_BIT != 0
}

/// The `user_data_32` that turns a chain record into its acknowledgement: resubmitted with it,
/// the record answers `ExistsWithDifferentUserData32`, which stores nothing and takes the
/// record out of the leg index (the chain is finished everywhere).
pub(crate) const CHAIN_RECORD_DONE: u32 = u32::MAX;

// ---- the replicated index of unresolved legs --------------------------------------------

/// A set of ids hashed by [`IdHasher`].
type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

/// The legs one replica holds that are not resolved yet, kept by the state machine from the
/// results of every applied transfer (deterministic, part of the snapshot). Only references:
/// the legs themselves are in the ledger, which the reads and the snapshot consult.
///
/// A leg `leg(t)` is unresolved until its resolution `res(t)` applies. Legs are created in
/// apply order, so the unresolved ones are kept as a bitset over ledger *store positions*
/// (see [`Ledger::transfer_at`]): a window of 64-bit words, one bit per stored transfer, from
/// the word of the oldest unresolved leg to the word of the newest. Creating a leg sets its
/// bit (its position follows from the batch's results). A resolution that posts or voids its
/// leg clears the bit at the position the ledger reports the post or void closed
/// ([`Ledger::last_batch_closings`]): no lookup by id, no read of the leg's 144-byte record.
/// Only a resolution that leaves its leg pending (a marker: a user's pending transfer
/// committed, rare) looks the leg's position up by id. Whether a leg is resolved never
/// depends on its status in the ledger (a user's post may close a leg before its marker).
/// Words emptied at either end of the window are dropped after every batch: legs resolve
/// roughly in creation order, so the window stays short; an old leg left unresolved holds it
/// open at one bit per transfer stored since. Users' posts and chain records (few) are
/// kept by id; expiring decisions by deadline (in ledger time).
#[derive(Debug, Default, Clone)]
pub(crate) struct LegIndex {
    /// Bit `p % 64` of word `p / 64 - first_word`: whether the transfer stored at position
    /// `p` is an unresolved leg. Neither end word is zero (empty when no leg is unresolved).
    words: VecDeque<u64>,
    /// `p / 64` of the positions `p` that `words[0]` covers.
    first_word: usize,
    /// How many bits `words` has set.
    legs_unresolved: usize,
    /// The users' posts and chain records not resolved yet.
    others: IdSet,
    /// The expiring decisions not resolved yet, by deadline ([`decision_deadline`], in the
    /// shard's ledger time) then id: the read takes the earliest first.
    expiring: BTreeSet<(u64, u128)>,
    /// The deadline of each decision in `expiring`, by id.
    deadlines: HashMap<u128, u64, BuildHasherDefault<IdHasher>>,
    /// The users' posts and voids among `others`, with the leg each resolves: only the post's
    /// own acknowledgement takes it out (see [`LegIndex::observe_classified`]).
    posts: HashMap<u128, u128, BuildHasherDefault<IdHasher>>,
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

/// What an event of a batch can do to the [`LegIndex`], from its fields alone (see
/// [`LegIndex::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// Nothing, whatever its result (a user's plain transfer, post or void of no leg).
    Nothing,
    /// A leg `leg(t)`.
    Leg,
    /// A resolution `res(t)` naming its own leg as pending id (a post or void of it, if it
    /// applied as one).
    OwnResolution,
    /// Another resolution `res(t)` (a marker).
    Resolution,
    /// A user's post of a leg, a chain record, or an acknowledgement of either.
    Other,
}

impl EventKind {
    /// The kind of `transfer`.
    fn of(transfer: &Transfer) -> Self {
        let id = transfer.id;
        if is_leg_id(id) {
            Self::Leg
        } else if is_resolution_id(id) {
            if transfer.pending_id == leg_id(id - RESOLUTION_ID_MIN) {
                Self::OwnResolution
            } else {
                Self::Resolution
            }
        } else if is_users_post_of_leg(transfer)
            || is_chain_record(transfer)
            || (is_applied_id(id) && transfer.user_data_32 == CHAIN_RECORD_DONE)
            || ((id < SYSTEM_ID_MIN || is_applied_id(id)) && is_resolution_id(transfer.pending_id))
        {
            Self::Other
        } else {
            Self::Nothing
        }
    }
}

impl LegIndex {
    /// [`LegIndex::classify`] then [`LegIndex::observe_classified`], for tests.
    #[cfg(test)]
    pub fn observe(&mut self, ledger: &Ledger, transfers: &[Transfer], results: &[R]) {
        let kinds = Self::classify(transfers);
        self.observe_classified(ledger, transfers, &kinds, results);
    }

    /// What [`LegIndex::observe_classified`] needs to know of each event of a batch, read
    /// before the batch is applied: right after decoding, its events are still in cache, while
    /// after applying (a batch of 8,190 is a MiB) they are not, and the index then reads only
    /// these bytes and the results (and the few events of kind `Other`).
    pub(crate) fn classify(transfers: &[Transfer]) -> Vec<EventKind> {
        transfers.iter().map(EventKind::of).collect()
    }

    /// Records the effect of one `create_transfers` batch just applied to `ledger`, given the
    /// kinds [`LegIndex::classify`] found in its `transfers` before they were applied:
    ///
    /// - a leg `leg(t)` created enters; the resolution `res(t)` (a post, a void or a marker)
    ///   removes it;
    /// - a user's post or void of a coordinator leg (a user id whose `pending_id` is `leg(t)`)
    ///   enters: the participant has to apply it; its acknowledgement (the post resubmitted
    ///   with `pending_id = res(t)`, answering `ExistsWithDifferentPendingId`) removes it;
    /// - a chain record `x(t)` enters; its acknowledgement (resubmitted with
    ///   `user_data_32 = CHAIN_RECORD_DONE`, answering `ExistsWithDifferentUserData32`) removes
    ///   it.
    ///
    /// Every entry is a transfer this shard's ledger stores.
    ///
    /// # Panics
    ///
    /// If `results` are not the results of `transfers` just applied to `ledger` (a leg is not
    /// where its `Ok` puts it in the store), or `kinds` not one per event.
    pub(crate) fn observe_classified(
        &mut self,
        ledger: &Ledger,
        transfers: &[Transfer],
        kinds: &[EventKind],
        results: &[R],
    ) {
        assert!(
            kinds.len() == transfers.len() && results.len() == transfers.len(),
            "one kind and one result per event"
        );
        // The batch's posts and voids, in event order: `closings[next]` is the first one not
        // before the event at hand. A system resolution (a post `res(t)` of `leg(t)`, mostly)
        // is the one Ok event that stores no record (its closing has no position).
        let closings = ledger.last_batch_closings();
        let unstored = closings
            .iter()
            .filter(|closing| closing.position.is_none())
            .count();
        // The i-th storing Ok event is stored right after those before it (ledger_core::store).
        let stored_count = results.iter().filter(|result| result.is_ok()).count() - unstored;
        let mut position = ledger
            .transfer_count()
            .checked_sub(stored_count)
            .expect("every storing Ok event is stored");
        let mut next = 0;
        let mut last_stored = None;
        for (event, (&kind, result)) in kinds.iter().zip(results).enumerate() {
            let ok = result.is_ok();
            let closing = closings
                .get(next)
                .filter(|closing| closing.event as usize == event)
                .copied();
            next += usize::from(closing.is_some());
            let stored = ok && closing.is_none_or(|closing| closing.position.is_some());
            let here = position;
            position += usize::from(stored);
            if stored {
                last_stored = Some(event);
            }
            match kind {
                EventKind::Leg if ok => {
                    // Checked for the last Ok event below (its record is cache-hot); for
                    // every leg in tests.
                    debug_assert!(
                        matches!(ledger.transfer_at(here), Some((stored, _)) if stored.id == transfers[event].id),
                        "a leg is stored where its Ok puts it"
                    );
                    self.list(here);
                }
                EventKind::OwnResolution if ok => match closing {
                    // It posted or voided its own leg, pending until now, so unresolved.
                    Some(closing) => {
                        let listed = self.unlist(closing.pending_position as usize);
                        debug_assert!(listed, "a leg its resolution closed was unresolved");
                    }
                    None => self.observe_resolution_rare(ledger, &transfers[event], here),
                },
                EventKind::Resolution if ok => {
                    self.observe_resolution_rare(ledger, &transfers[event], here);
                }
                EventKind::Other if ok => self.observe_other(&transfers[event]),
                EventKind::Other => self.observe_acknowledgement(&transfers[event], *result),
                // Events of no kind, and legs and resolutions that failed, change nothing.
                EventKind::Nothing
                | EventKind::Leg
                | EventKind::OwnResolution
                | EventKind::Resolution => {}
            }
        }
        assert!(
            position == ledger.transfer_count() && next == closings.len(),
            "every storing Ok event is stored, every closing is an Ok event"
        );
        if let Some(last) = last_stored.map(|event| transfers[event].id) {
            assert!(
                matches!(ledger.transfer_at(position - 1), Some((stored, _)) if stored.id == last),
                "the last Ok event is stored last"
            );
        }
        self.trim();
    }

    /// An `Ok` event of kind `Other`: a user's post of a leg or a chain record enters.
    fn observe_other(&mut self, transfer: &Transfer) {
        let id = transfer.id;
        if is_users_post_of_leg(transfer) {
            // Resolved (by its user or by expiry): no longer expiring.
            self.expiring_remove(transfer.pending_id - LEG_ID_MIN + RESOLUTION_ID_MIN);
            self.others.insert(id);
            self.posts.insert(id, transfer.pending_id);
        } else if is_chain_record(transfer) {
            self.others.insert(id);
        }
    }

    /// A failed event: the acknowledgement of a chain record or of a user's post takes it out.
    fn observe_acknowledgement(&mut self, transfer: &Transfer, result: R) {
        let id = transfer.id;
        if is_applied_id(id)
            && result == R::ExistsWithDifferentUserData32
            && transfer.user_data_32 == CHAIN_RECORD_DONE
        {
            // A chain record's acknowledgement (see CHAIN_RECORD_DONE).
            self.others.remove(&id);
        } else if (id < SYSTEM_ID_MIN || is_applied_id(id))
            && result == R::ExistsWithDifferentPendingId
            && is_resolution_id(transfer.pending_id)
        {
            // A user's post's acknowledgement (see `acknowledgement`): only the post as
            // logged, resubmitted, counts (a user's retry of its id as a post of another
            // transfer answers the same code, with another pending id).
            let acknowledged = leg_id(transfer.pending_id - RESOLUTION_ID_MIN);
            if self.posts.get(&id) == Some(&acknowledged) {
                self.posts.remove(&id);
                self.others.remove(&id);
            }
        }
    }

    /// A resolution `res(t)` applied that does not post or void its leg `leg(t)`: a marker
    /// (rare: a user's pending transfer committed), which leaves the leg pending.
    /// `position` is where it was just stored.
    fn observe_resolution_rare(&mut self, ledger: &Ledger, resolution: &Transfer, position: usize) {
        let leg = leg_id(resolution.id - RESOLUTION_ID_MIN);
        // Unresolved iff listed: only its resolution, applied once, resolves a leg.
        if let Some(leg_position) = ledger.transfer_position(leg) {
            self.unlist(leg_position);
        }
        if is_expiring_decision(resolution) {
            let stored = ledger
                .transfer_at(position)
                .expect("an applied decision is stored");
            self.expiring_insert(stored.0);
        }
    }

    /// An expiring decision, as stored (with the timestamp the shard gave it), enters.
    fn expiring_insert(&mut self, decision: &Transfer) {
        let deadline = decision_deadline(decision);
        self.deadlines.insert(decision.id, deadline);
        self.expiring.insert((deadline, decision.id));
    }

    /// The expiring decision `id`, if indexed, leaves (its pending transfer was posted or
    /// voided, by its user or by expiry).
    fn expiring_remove(&mut self, id: u128) {
        if let Some(deadline) = self.deadlines.remove(&id) {
            self.expiring.remove(&(deadline, id));
        }
    }

    /// Lists the leg stored at `position` as unresolved.
    fn list(&mut self, position: usize) {
        let word = position / 64;
        if self.words.is_empty() {
            self.first_word = word;
        }
        // Only a snapshot's legs come out of order.
        while word < self.first_word {
            self.words.push_front(0);
            self.first_word -= 1;
        }
        let slot = word - self.first_word;
        if slot >= self.words.len() {
            self.words.resize(slot + 1, 0);
        }
        let bit = 1 << (position % 64);
        if self.words[slot] & bit == 0 {
            self.words[slot] |= bit;
            self.legs_unresolved += 1;
        }
    }

    /// Takes the leg stored at `position` out (resolved); whether it was listed. The caller
    /// trims the window once its batch is done.
    fn unlist(&mut self, position: usize) -> bool {
        let word = (position / 64)
            .checked_sub(self.first_word)
            .and_then(|slot| self.words.get_mut(slot));
        let bit = 1 << (position % 64);
        match word {
            Some(word) if *word & bit != 0 => {
                *word &= !bit;
                self.legs_unresolved -= 1;
                true
            }
            _ => false,
        }
    }

    /// Drops the zero words at both ends of the window.
    fn trim(&mut self) {
        while self.words.front() == Some(&0) {
            self.words.pop_front();
            self.first_word += 1;
        }
        while self.words.back() == Some(&0) {
            self.words.pop_back();
        }
    }

    /// The store positions of the unresolved legs, ascending.
    fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(move |(slot, &word)| {
                let base = (self.first_word + slot) * 64;
                let mut rest = word;
                std::iter::from_fn(move || {
                    (rest != 0).then(|| {
                        let bit = rest.trailing_zeros() as usize;
                        rest &= rest - 1;
                        base + bit
                    })
                })
            })
    }

    /// The unresolved legs, oldest first, as stored.
    fn unresolved_legs<'l>(&'l self, ledger: &'l Ledger) -> impl Iterator<Item = &'l Transfer> {
        self.positions().map(move |position| {
            let (leg, _) = ledger
                .transfer_at(position)
                .expect("listed legs are in the ledger");
            leg
        })
    }

    /// Number of unresolved legs.
    pub fn len(&self) -> usize {
        self.legs_unresolved + self.others.len() + self.expiring.len()
    }

    /// Up to [`BATCH_EVENTS_MAX`] unresolved entries of `ledger`, as they were submitted
    /// (timestamp zero) except the expiring decisions, which keep the timestamp the shard gave
    /// them (their deadline counts from it): first the expiring decisions due by the ledger's
    /// time ([`Ledger::last_timestamp`]), earliest deadline first; then the users' posts and
    /// chain records (in no particular order); then the expiring decisions not due yet,
    /// earliest first (the resolver learns when the next one is due); then the legs, oldest
    /// first. With more entries than a read returns, each kind (legs, the rest) keeps half of
    /// it: the oldest legs never wait for younger ones, nor behind many expiring decisions not
    /// due yet (users' pending transfers with long timeouts), and those never wait behind a
    /// stream of legs; a decision due never waits behind later ones. The read runs under the
    /// state machine's lock, so it copies no more than it returns.
    pub fn unresolved(&self, ledger: &Ledger) -> Vec<Transfer> {
        let count_max = BATCH_EVENTS_MAX as usize;
        let others_max = count_max - self.legs_unresolved.min(count_max / 2);
        let now = ledger.last_timestamp();
        let due = self
            .expiring
            .iter()
            .take_while(|&&(deadline, _)| deadline <= now);
        let later = self
            .expiring
            .iter()
            .skip_while(|&&(deadline, _)| deadline <= now);
        let ids: Vec<u128> = due
            .map(|&(_, id)| id)
            .chain(self.others.iter().copied())
            .chain(later.map(|&(_, id)| id))
            .take(others_max)
            .collect();
        let mut entries = ledger.lookup_transfers(&ids);
        assert_eq!(
            entries.len(),
            ids.len(),
            "unresolved legs are in the ledger"
        );
        for entry in &mut entries {
            if !is_expiring_decision(entry) {
                *entry = submitted_leg(*entry);
            }
        }
        let legs_max = count_max - entries.len();
        entries.extend(
            self.unresolved_legs(ledger)
                .take(legs_max)
                .map(|leg| submitted_leg(*leg)),
        );
        entries
    }

    /// Appends `count u64 | count × 128-byte transfer`: the legs as submitted, by id.
    pub fn encode(&self, ledger: &Ledger, out: &mut Vec<u8>) {
        let mut legs: Vec<Transfer> = self.unresolved_legs(ledger).copied().collect();
        assert_eq!(legs.len(), self.legs_unresolved, "the count is exact");
        let ids: Vec<u128> = self
            .others
            .iter()
            .chain(self.deadlines.keys())
            .copied()
            .collect();
        let others = ledger.lookup_transfers(&ids);
        assert_eq!(others.len(), ids.len(), "unresolved legs are in the ledger");
        legs.extend(others);
        // Sorted by id: identical indexes encode to identical bytes (I5).
        legs.sort_unstable_by_key(|leg| leg.id);
        out.extend_from_slice(&(legs.len() as u64).to_le_bytes());
        for leg in legs {
            out.extend_from_slice(&submitted_leg(leg).encode());
        }
    }

    /// Decodes an index from the front of `reader` against the `ledger` of the same snapshot;
    /// `None` on malformed bytes or a leg `ledger` does not hold as encoded (never allocates
    /// more than the bytes present and `ledger`'s store can fill).
    pub(crate) fn decode(reader: &mut Reader<'_>, ledger: &Ledger) -> Option<Self> {
        let count = usize::try_from(reader.u64()?).ok()?;
        let bytes = reader.take(count.checked_mul(TRANSFER_SIZE_BYTES)?)?;
        let mut index = Self::default();
        let mut seen = IdSet::default();
        for chunk in bytes.chunks_exact(TRANSFER_SIZE_BYTES) {
            let transfer = Transfer::decode(chunk).ok()?;
            let known = is_leg_id(transfer.id)
                || is_chain_record(&transfer)
                || is_users_post_of_leg(&transfer)
                || is_expiring_decision(&transfer);
            if !known || !seen.insert(transfer.id) {
                return None;
            }
            let position = ledger.transfer_position(transfer.id)?;
            let (stored, _) = ledger.transfer_at(position)?;
            if submitted_leg(*stored) != transfer {
                return None;
            }
            if is_leg_id(transfer.id) {
                // Unresolved whatever its status (a user's post may have closed it).
                index.list(position);
            } else if is_expiring_decision(&transfer) {
                index.expiring_insert(stored);
            } else {
                index.others.insert(transfer.id);
                if is_users_post_of_leg(&transfer) {
                    index.posts.insert(transfer.id, transfer.pending_id);
                }
            }
        }
        Some(index)
    }
}

/// A leg as its driver submitted it: the ledger stamped its timestamp.
fn submitted_leg(stored: Transfer) -> Transfer {
    Transfer {
        timestamp: 0,
        ..stored
    }
}

/// Whether a transfer is a chain record (`x(t)` on a chain's coordinator, naming its head in
/// `user_data_128`; see [`chain_record`]).
fn is_chain_record(transfer: &Transfer) -> bool {
    is_applied_id(transfer.id) && transfer.pending_id == 0 && transfer.user_data_128 != 0
}

/// Whether a transfer is a user's post or void of a coordinator leg `leg(t)` through a bridge
/// (for its participant to apply); a post of a same-shard chain event's leg names no bridge.
fn is_users_post_of_leg(transfer: &Transfer) -> bool {
    (transfer.id < SYSTEM_ID_MIN || is_applied_id(transfer.id))
        && is_leg_id(transfer.pending_id)
        && is_reserved(transfer.credit_account_id)
}

/// Whether a transfer is the commit decision of a user's pending transfer with a timeout (a
/// marker `res(t)` carrying the timeout in `user_data_64`): the resolver voids it once expired.
fn is_expiring_decision(transfer: &Transfer) -> bool {
    is_resolution_id(transfer.id)
        && transfer.pending_id == 0
        && transfer.user_data_64 != 0
        && !transfer.flags.post_pending_transfer()
        && !transfer.flags.void_pending_transfer()
}

/// When the pending transfer committed by `decision` (an expiring marker, as stored) expires, in
/// its coordinator's ledger time: the decision's timestamp plus its timeout (`user_data_64`,
/// seconds), as ledger-core computes a pending transfer's deadline. Its expiry applies at a
/// later timestamp than one at or past the deadline, so never early.
pub(crate) fn decision_deadline(decision: &Transfer) -> u64 {
    decision
        .timestamp
        .saturating_add(decision.user_data_64.saturating_mul(NANOSECONDS_PER_SECOND))
}

/// Nanoseconds per second of a timeout (as ledger-core counts them).
const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;

/// The expiry of a user's pending transfer whose decision is `decision` (an expiring marker):
/// the coordinator voids its leg under `x(t)`, like a user's void; the participant then
/// applies it and the coordinator acknowledges, as for a user's post.
fn expiry(decision: &Transfer) -> Transfer {
    let t = decision.id - RESOLUTION_ID_MIN;
    Transfer {
        pending_id: leg_id(t),
        // The coordinator's pending bridge, as a user's post carries it.
        credit_account_id: decision.debit_account_id,
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        ..Transfer::new(applied_id(t), 0, 0, 0, 0, 0)
    }
}

// ---- the cluster side --------------------------------------------------------------------

/// A step of the cross-shard protocol after which a test can make every caller's driver stop,
/// as if the calling process had died there (see [`crate::Cluster::stop_cross_shard_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrossShardStep {
    /// The coordinator logged its pending leg (funds reserved); no vote asked yet. For a
    /// linked chain spanning shards: its coordinator logged the chain's records; no leg yet.
    Prepared = 1,
    /// The participant logged its vote; no decision yet. For a chain: every shard logged its
    /// part; no decision yet.
    Voted = 2,
    /// The coordinator logged the decision; the participant has not applied it. For a user's
    /// post or void of a cross-shard pending transfer: the coordinator logged it; the
    /// participant has not applied it. For a chain: the decision is logged; no other leg
    /// follows it yet.
    Decided = 3,
}

/// Decided transfers whose participants have yet to apply the decision (step 4).
type Finishes = Vec<(Cross, Decision)>;

/// How many calls' step-4 work may wait for the finisher before callers wait for it. Small:
/// every decided transfer waiting here keeps two legs pending and indexed, and a long queue
/// only defers work (at 64 calls of 8,190 transfers the all-cross bench needed 1.5–3 s after
/// the run to drain it and spent 10–15 % more CPU per transfer than at 8; BENCHMARKS.md).
const FINISHES_QUEUED_MAX: usize = 8;

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
    /// Indexes of the cross-shard transfers (plain or pending).
    pub(crate) cross: Vec<usize>,
    /// Indexes of the events for one shard each.
    pub(crate) local: Vec<usize>,
    /// Indexes of the posts and voids whose pending transfer must be located first: it may
    /// be a cross-shard one (see [`locate_posts`]).
    pub(crate) posts: Vec<usize>,
    /// Linked chains spanning shards (index ranges), run by [`execute_chains`].
    pub(crate) chains: Vec<std::ops::Range<usize>>,
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
/// that is `BALANCING_CREDIT`, and in a linked chain spanning shards an event the chain
/// protocol does not take (see `plan_chain`). A cross-shard transfer alone may be plain or
/// pending, `BALANCING_DEBIT`, and if pending closing (`CLOSING_DEBIT` and/or
/// `CLOSING_CREDIT`; see [`CROSS_SHAPE`]).
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
        if chain.len() > 1 && spans_shards(router, &transfers[chain.clone()]) {
            plan_chain(router, transfers, chain, &mut plan)?;
            continue;
        }
        for index in chain.clone() {
            let transfer = &transfers[index];
            let flags = transfer.flags;
            if router.shard_count() > 1
                && (flags.post_pending_transfer() || flags.void_pending_transfer())
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
            let pending = flags.pending();
            if chain.len() > 1 || !CROSS_SHAPE.contains(flags) {
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

/// The flags a cross-shard transfer outside a chain may carry: none, `PENDING`, and with it
/// `CLOSING_DEBIT` and `CLOSING_CREDIT` (a closing one without `PENDING` is answered
/// `ClosingTransferMustBePending` by [`precheck`]), and `BALANCING_DEBIT`. The coordinator leg
/// carries the `CLOSING_DEBIT` and the `BALANCING_DEBIT` (the ledger clamps its amount to `A`'s
/// balance; the caller reads it back for the vote), the participant leg the `CLOSING_CREDIT`:
/// each closes its own user account by ledger-core's rules, never a bridge.
/// `BALANCING_CREDIT` is refused (the participant would clamp after the coordinator reserved).
const CROSS_SHAPE: TransferFlags = TransferFlags::PENDING
    .union(COORDINATOR_LEG_KEEPS)
    .union(PARTICIPANT_LEG_KEEPS);

/// Whether a linked chain's events live on more than one shard.
fn spans_shards(router: Router, events: &[Transfer]) -> bool {
    let mut shards = events.iter().flat_map(|event| {
        [event.debit_account_id, event.credit_account_id]
            .into_iter()
            .filter(|&id| id != 0)
            .map(|id| router.shard_of(id))
    });
    let first = shards.next();
    shards.any(|shard| Some(shard) != first)
}

/// Plans a linked chain spanning shards: its events must be plain (or it is refused with
/// [`ShardError::CrossShard`]); one failing the checks its legs would not make fails the chain
/// before submission; otherwise it is run by [`execute_chains`].
fn plan_chain(
    router: Router,
    transfers: &[Transfer],
    chain: std::ops::Range<usize>,
    plan: &mut Plan,
) -> Result<()> {
    let shape = TransferFlags::LINKED.union(TransferFlags::PENDING);
    let coordinator = router.shard_of(transfers[chain.start].debit_account_id);
    for index in chain.clone() {
        let transfer = &transfers[index];
        let (d, c) = (
            router.shard_of(transfer.debit_account_id),
            router.shard_of(transfer.credit_account_id),
        );
        // A pending event's participant applies its user's post under x(t), which on the
        // coordinator is the event's chain record: such an event is refused.
        let pending = transfer.flags.pending();
        let colliding = pending && d != c && c == coordinator;
        let expiring = pending && transfer.timeout != 0;
        if expiring
            || colliding
            || (!shape.contains(transfer.flags) && !transfer.flags.has_reserved())
        {
            return Err(ShardError::CrossShard {
                index,
                debit_shard: router.shard_of(transfer.debit_account_id),
                credit_shard: router.shard_of(transfer.credit_account_id),
            });
        }
    }
    if let Some((bad, code)) = chain
        .clone()
        .find_map(|index| chain_precheck(&transfers[index]).map(|code| (index, code)))
    {
        for index in chain {
            plan.preset[index] = Some(if index == bad {
                code
            } else {
                R::LinkedEventFailed
            });
        }
        return Ok(());
    }
    plan.chains.push(chain);
    Ok(())
}

/// The rules of a chain event's own fields that its legs would not enforce, in ledger-core's
/// precedence order: [`precheck`]'s, and a leg's flags are its own (`PENDING`) and the event's
/// chain record `x(t)` must be a valid id.
fn chain_precheck(transfer: &Transfer) -> Option<R> {
    if transfer.timestamp == 0 && transfer.flags.has_reserved() {
        return Some(R::ReservedFlag);
    }
    match precheck(transfer) {
        early @ Some(R::TimestampMustBeZero | R::IdMustNotBeZero | R::IdMustNotBeIntMax) => early,
        // Its chain record x(t) would be u128::MAX.
        _ if transfer.id == SYSTEM_ID_MIN - 1 => Some(R::IdReservedForSystem),
        other => other,
    }
}

/// Whether a post or void names two accounts on one shard: its pending transfer, if it
/// matches them, lives there (a cross-shard one would name accounts on two shards), so only
/// that shard is asked where it is.
pub(crate) fn names_one_shard(router: Router, transfer: &Transfer) -> bool {
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
    let reply = read_bytes(inner, shard, read, deadline)?;
    QueryReply::decode(&reply).map_err(|source| ShardError::Codec { shard, source })
}

/// A linearizable read of one shard, its answer undecoded.
fn read_bytes(
    inner: &ClusterInner,
    shard: usize,
    read: &Read,
    deadline: Instant,
) -> Result<bytes::Bytes> {
    let context = &inner.shards[shard].context;
    let bytes = read.encode();
    shard::with_leader(context, deadline, |backend, leader, timeout| {
        backend.read(leader, bytes.clone(), timeout)
    })
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
fn ensure_bridges<'a>(
    inner: &ClusterInner,
    crosses: impl IntoIterator<Item = &'a Cross>,
    deadline: Instant,
) -> Result<()> {
    let missing = {
        let known = inner.crossshard.bridges.lock();
        protocol::missing_bridges(inner.router, crosses, |id| known.contains(&id))
    };
    create_bridges(inner, missing, deadline)
}

/// Creates bridge accounts (`Ok` or `Exists`), `missing[s]` on shard `s`, and remembers them.
fn create_bridges(
    inner: &ClusterInner,
    missing: Vec<Vec<Account>>,
    deadline: Instant,
) -> Result<()> {
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

/// The coordinator's pending leg: `A → bridge(d→c)`, `B` kept in `user_data_128`. A user's
/// pending transfer goes through the pending bridge and keeps the caller's `user_data_128`
/// (a user's post inherits it; `B` is read from the participant's leg).
fn coordinator_leg(router: Router, cross: &Cross) -> Transfer {
    let t = &cross.transfer;
    let (d, c) = (cross.debit_shard, cross.credit_shard);
    if t.flags.pending() {
        return Transfer {
            id: leg_id(t.id),
            credit_account_id: pending_bridge_id(router, t.ledger, d, c),
            flags: coordinator_leg_flags(t.flags),
            // Legs never expire by themselves: the decision carries the timeout.
            timeout: 0,
            timestamp: 0,
            ..*t
        };
    }
    Transfer {
        id: leg_id(t.id),
        credit_account_id: bridge_id(router, t.ledger, d, c),
        user_data_128: t.credit_account_id,
        flags: coordinator_leg_flags(t.flags),
        timestamp: 0,
        ..*t
    }
}

/// Of `T`'s flags, those its coordinator leg carries: they act on `A` (it closes `A`, a bridge
/// never closing, and is clamped to `A`'s balance, as `T` would be).
const COORDINATOR_LEG_KEEPS: TransferFlags =
    TransferFlags::CLOSING_DEBIT.union(TransferFlags::BALANCING_DEBIT);

/// Of a user's pending `T`'s flags, those its participant leg carries: it closes `B`.
const PARTICIPANT_LEG_KEEPS: TransferFlags = TransferFlags::CLOSING_CREDIT;

/// The flags of `flags` that are in `kept`.
const fn keep(flags: TransferFlags, kept: TransferFlags) -> TransferFlags {
    TransferFlags::from_bits_retain(flags.bits() & kept.bits())
}

/// A coordinator leg's flags: `PENDING` and [`COORDINATOR_LEG_KEEPS`] of `T`'s.
fn coordinator_leg_flags(flags: TransferFlags) -> TransferFlags {
    TransferFlags::PENDING.union(keep(flags, COORDINATOR_LEG_KEEPS))
}

/// The participant's pending leg: `bridge(c←d) → B`, with the caller's user data. A user's
/// pending transfer's leg holds its timeout (seconds, 0 for none) in `user_data_32` instead
/// (see [`leg_timeout`]).
fn participant_leg(router: Router, cross: &Cross) -> Transfer {
    let t = &cross.transfer;
    let (d, c) = (cross.debit_shard, cross.credit_shard);
    let pending = t.flags.pending();
    Transfer {
        id: leg_id(t.id),
        debit_account_id: if pending {
            pending_bridge_id(router, t.ledger, c, d)
        } else {
            bridge_id(router, t.ledger, c, d)
        },
        // A pending one closes B (a bridge never closes), as T would.
        flags: if pending {
            TransferFlags::PENDING.union(keep(t.flags, PARTICIPANT_LEG_KEEPS))
        } else {
            TransferFlags::PENDING
        },
        // A pending one's timeout, never in `timeout`: a leg must not expire by itself.
        user_data_32: if pending { t.timeout } else { t.user_data_32 },
        timeout: 0,
        timestamp: 0,
        ..*t
    }
}

/// The timeout (seconds) of the user's pending transfer whose participant leg (through a
/// pending bridge) is `leg`: the leg carries it in `user_data_32`, so whoever commits the
/// transfer (its caller, or the resolver from the legs it finds) logs a decision carrying
/// it, and the transfer expires. The field is free: every reader of the caller's user data
/// takes it from the coordinator leg, which keeps all of it (a user's post inherits it
/// there), and no rule of the ledger reads a leg's `user_data_32`.
pub(crate) fn leg_timeout(leg: &Transfer) -> u32 {
    leg.user_data_32
}

/// The coordinator's decision for `cross` (step 3), under the id `res(t)`: a post of its leg
/// (commit) or a void (abort); a user's pending transfer commits by a marker instead, which
/// leaves both legs pending (`T` now exists, pending, until the user posts or voids it).
fn decision_event(router: Router, cross: &Cross, decision: Decision) -> Transfer {
    let t = &cross.transfer;
    if t.flags.pending() && decision == Decision::Commit {
        let bridge = pending_bridge_id(router, t.ledger, cross.debit_shard, cross.credit_shard);
        // The timeout (seconds) rides on the decision: the resolver voids both legs after it.
        return Transfer {
            user_data_64: u64::from(t.timeout),
            ..marker(router, bridge, resolution_id(t.id))
        };
    }
    if decision == Decision::Commit && names_accounts(router, cross) {
        return resolution_of(&coordinator_leg(router, cross), decision);
    }
    resolution(t.id, decision)
}

/// The participant's application of a commit (step 4): a post of its leg, or for a user's
/// pending transfer a marker that says the leg is decided (it leaves the resolver's index).
fn commit_event(router: Router, cross: &Cross) -> Transfer {
    let t = &cross.transfer;
    if t.flags.pending() {
        let bridge = pending_bridge_id(router, t.ledger, cross.credit_shard, cross.debit_shard);
        return marker(router, bridge, resolution_id(t.id));
    }
    if names_accounts(router, cross) {
        return resolution_of(&participant_leg(router, cross), Decision::Commit);
    }
    resolution(t.id, Decision::Commit)
}

/// Whether `cross` is the caller's whole transfer, so its legs' accounts are known: a
/// recovery rebuilds a `Cross` from what it found and leaves unknown fields zero.
fn names_accounts(router: Router, cross: &Cross) -> bool {
    let t = &cross.transfer;
    t.debit_account_id != 0
        && t.credit_account_id != 0
        && t.ledger != 0
        && router.shard_of(t.debit_account_id) == cross.debit_shard
        && router.shard_of(t.credit_account_id) == cross.credit_shard
}

/// [`resolution`] of `leg`, naming its two accounts: equivalent for the ledger (it checks
/// them against the leg's, and a resubmission naming none still answers `Exists`), but the
/// ledger then finds the accounts in the batch's first pass, prefetched, instead of looking
/// them up one by one (the hot path: a caller's commit and the participant's post).
fn resolution_of(leg: &Transfer, decision: Decision) -> Transfer {
    Transfer {
        debit_account_id: leg.debit_account_id,
        credit_account_id: leg.credit_account_id,
        ..resolution(leg.id - LEG_ID_MIN, decision)
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

/// The legs of one event of a linked chain spanning shards, with their shards: a same-shard
/// event is one pending leg `A → B`; a cross-shard one a coordinator leg `A → chain
/// bridge(d→c)` (`B` in `user_data_128`) and a participant leg `chain bridge(c←d) → B`.
fn chain_legs(router: Router, event: &Transfer) -> Vec<(usize, Transfer)> {
    let d = router.shard_of(event.debit_account_id);
    let c = router.shard_of(event.credit_account_id);
    let leg = Transfer {
        id: leg_id(event.id),
        flags: TransferFlags::PENDING,
        timestamp: 0,
        ..*event
    };
    if d == c {
        return vec![(d, leg)];
    }
    vec![
        (
            d,
            Transfer {
                credit_account_id: chain_bridge_id(router, event.ledger, d, c),
                // A user's pending event keeps the caller's (a post inherits it).
                user_data_128: if event.flags.pending() {
                    event.user_data_128
                } else {
                    event.credit_account_id
                },
                ..leg
            },
        ),
        (
            c,
            Transfer {
                debit_account_id: chain_bridge_id(router, event.ledger, c, d),
                ..leg
            },
        ),
    ]
}

/// The `code` of a chain record whose event is a user's pending transfer (a commit keeps its
/// legs pending); a plain event's record has [`BRIDGE_CODE`].
pub(crate) const CHAIN_RECORD_PENDING_CODE: u16 = BRIDGE_CODE - 1;

/// The chain record of member `index` (user transfer `t` in `member_ledger`, legs on
/// `debit_shard` and `credit_shard`, pending or not) of the chain whose head is `head`, logged
/// on the chain's coordinator `coordinator` before any leg: a zero-amount `x(t)` from the
/// coordinator's chain bridge to its marker account, in `ledger` (the head's). Its
/// `user_data_64` is `debit_shard << 48 | credit_shard << 32 | member_ledger`.
fn chain_record(
    router: Router,
    (head, coordinator, ledger): (u128, usize, u32),
    index: u32,
    (t, debit_shard, credit_shard, member_ledger, pending): (u128, usize, usize, u32, bool),
) -> Transfer {
    Transfer {
        user_data_128: head,
        user_data_64: ((debit_shard as u64) << 48)
            | ((credit_shard as u64) << 32)
            | u64::from(member_ledger),
        user_data_32: index,
        ..Transfer::new(
            applied_id(t),
            chain_bridge_id(router, ledger, coordinator, coordinator),
            pending_bridge_id(router, ledger, coordinator, coordinator),
            0,
            ledger,
            if pending {
                CHAIN_RECORD_PENDING_CODE
            } else {
                BRIDGE_CODE
            },
        )
    }
}

/// The commit of a chain member's leg on `shard`: a post, or for a user's pending transfer a
/// marker `res(t)` (from the leg's chain bridge, or the shard's own chain bridge for a
/// same-shard event, to the marker account) that leaves the leg pending.
fn chain_commit(
    router: Router,
    (t, ledger, pending): (u128, u32, bool),
    (shard, peer): (usize, usize),
) -> Transfer {
    if pending {
        marker(
            router,
            chain_bridge_id(router, ledger, shard, peer),
            resolution_id(t),
        )
    } else {
        resolution(t, Decision::Commit)
    }
}

/// A chain's abort at its coordinator: the void of the head's leg, with the reason in
/// `user_data_64` and the failing event's index in `user_data_32`.
fn chain_abort(head: u128, reason: R, index: u32) -> Transfer {
    Transfer {
        user_data_32: index,
        ..resolution(head, Decision::Abort(reason))
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

/// Runs the protocol for a call's cross-shard transfers, `transfers[index]` for each of
/// `indexes`; one result per index, in order.
pub(crate) fn execute(
    inner: &ClusterInner,
    transfers: &[Transfer],
    indexes: &[usize],
    deadline: Instant,
) -> Result<Vec<R>> {
    let router = inner.router;
    let mut results: Vec<Option<R>> = indexes
        .iter()
        .map(|&index| precheck(&transfers[index]))
        .collect();
    let mut checked: Vec<usize> = Vec::with_capacity(indexes.len());
    checked.extend((0..indexes.len()).filter(|&position| results[position].is_none()));
    // Built straight into the machine (no list of them before).
    let crosses = checked.iter().map(|&position| {
        let transfer = &transfers[indexes[position]];
        Cross {
            transfer: *transfer,
            debit_shard: router.shard_of(transfer.debit_account_id),
            credit_shard: router.shard_of(transfer.credit_account_id),
        }
    });
    for (position, result) in checked.iter().zip(drive(inner, crosses, deadline)?) {
        results[*position] = Some(result);
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
    } else if transfer.timeout != 0 && !transfer.flags.pending() {
        Some(R::TimeoutReservedForPendingTransfer)
    } else if !transfer.flags.pending()
        && (transfer.flags.closing_debit() || transfer.flags.closing_credit())
    {
        // Its legs are pending whatever it is: the ledger would not see it.
        Some(R::ClosingTransferMustBePending)
    } else if transfer.ledger == 0 {
        Some(R::LedgerMustNotBeZero)
    } else {
        None
    }
}

/// Runs steps 1 to 3 for prechecked cross-shard transfers and queues step 4; one result each,
/// in order.
fn drive(
    inner: &ClusterInner,
    crosses: impl IntoIterator<Item = Cross>,
    deadline: Instant,
) -> Result<Vec<R>> {
    let (mut machine, action) = CallMachine::new(inner.router, crosses);
    // Nothing is submitted before the bridges exist.
    ensure_bridges(inner, machine.crosses(), deadline)?;
    let checkpoint = |machine: &CallMachine, step| match machine.first_live_coordinator() {
        Some(shard) => inner.crossshard.checkpoint(step, shard),
        None => Ok(()),
    };
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
    if vote.is_ok() || is_existing(vote) {
        Decision::Commit
    } else {
        Decision::Abort(vote)
    }
}

/// Whether `result` says the event exists from before (`Exists` or `ExistsWith…`).
fn is_existing(result: R) -> bool {
    result.is_exists() || is_exists_with_different(result)
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
    // A void aborts; a post (a plain transfer) or a marker (a user's pending one) commits.
    if resolution.flags.void_pending_transfer() {
        let reason = u32::try_from(resolution.user_data_64)
            .ok()
            .and_then(R::from_code)
            .unwrap_or(R::IdAlreadyFailed);
        Decision::Abort(reason)
    } else {
        Decision::Commit
    }
}

// ---- users' posts and voids of cross-shard pending transfers ----------------------------

/// Locates the pending transfers of users' posts and voids (see [`LocateMachine`]).
pub(crate) fn locate_posts(
    inner: &ClusterInner,
    posts: &[Transfer],
    deadline: Instant,
) -> Result<Vec<Located>> {
    let (mut machine, action) = LocateMachine::new(inner.router, posts.to_vec());
    run(inner, &mut machine, action, |_, _| Ok(()), deadline)
}

/// Runs a call's linked chains spanning shards (see [`ChainMachine`]): one result per event
/// per chain, in order. The test checkpoints of `Cluster::stop_cross_shard_after`: `Prepared`
/// stops after the coordinators' records, `Voted` after the parts, `Decided` after the
/// decisions.
pub(crate) fn execute_chains(
    inner: &ClusterInner,
    chains: Vec<Vec<Transfer>>,
    deadline: Instant,
) -> Result<Vec<Vec<R>>> {
    let missing = {
        let known = inner.crossshard.bridges.lock();
        protocol::missing_chain_bridges(inner.router, &chains, |id| known.contains(&id))
    };
    create_bridges(inner, missing, deadline)?;
    let (mut machine, action) = ChainMachine::new(inner.router, chains);
    let before = |machine: &ChainMachine, phase| {
        let step = match phase {
            Phase::Prepare => CrossShardStep::Prepared,
            Phase::Decide => CrossShardStep::Voted,
            Phase::Finish => CrossShardStep::Decided,
            _ => return Ok(()),
        };
        match machine.first_coordinator() {
            Some(shard) => inner.crossshard.checkpoint(step, shard),
            None => Ok(()),
        }
    };
    run(inner, &mut machine, action, before, deadline)
}

/// Runs users' posts and voids of cross-shard pending transfers (see [`PostMachine`]): one
/// result per post, in order, once the coordinators logged them; then the participants apply
/// the logged ones and the coordinators acknowledge ([`PostFinishMachine`]). Should that fail,
/// the resolver finishes from the coordinators' indexes.
pub(crate) fn execute_posts(
    inner: &ClusterInner,
    posts: &[CrossPost],
    deadline: Instant,
) -> Result<Vec<R>> {
    let (mut machine, action) = PostMachine::new(inner.router, posts.to_vec());
    let outcome = run(inner, &mut machine, action, |_, _| Ok(()), deadline)?;
    if let Some(post) = posts.first() {
        inner
            .crossshard
            .checkpoint(CrossShardStep::Decided, post.shards().0)?;
    }
    if !outcome.finishes.is_empty() {
        let (mut machine, action) = PostFinishMachine::new(inner.router, outcome.finishes);
        let _ = run(inner, &mut machine, action, |_, _| Ok(()), deadline);
    }
    Ok(outcome.results)
}

/// The participant's `x(t)`: the same post or void of its own `leg(t)`. It cannot fail: only
/// the protocol touches a leg, the amounts are the coordinator leg's, and a post with a system
/// id lands even in an account closed since (ledger-core).
fn applied_event(post: &Transfer) -> Transfer {
    let t = post.pending_id - LEG_ID_MIN;
    Transfer {
        id: applied_id(t),
        // Inherited: the participant leg's bridge (a pending or a chain bridge).
        debit_account_id: 0,
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

/// The coordinator's acknowledgement that the participant applied the post: the post as
/// logged, resubmitted with `pending_id = res(t)`. It answers `ExistsWithDifferentPendingId`,
/// which stores nothing (no id is taken: on a chain's coordinator `x(t)` is a chain record)
/// and takes the post out of the coordinator's leg index.
fn acknowledgement(post: &Transfer) -> Transfer {
    Transfer {
        pending_id: resolution_id(post.pending_id - LEG_ID_MIN),
        ..*post
    }
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
            Some((*leg, *res))
        });
        let Some((coordinator_leg, decision)) = coordinator else {
            if let Some(local) = committed_chain_member(&per_shard, t) {
                committed.insert(t, local);
            }
            continue;
        };
        let credit_shard = bridge_peer(router, coordinator_leg.credit_account_id);
        let Some(participant) = per_shard[credit_shard].get(&leg).copied() else {
            continue;
        };
        // Pending iff committed by a marker (a user's pending transfer, alone or in a chain),
        // which carries its timeout.
        let pending = !decision.flags.post_pending_transfer();
        let timeout = if pending {
            u32::try_from(decision.user_data_64).unwrap_or(0)
        } else {
            0
        };
        committed.insert(
            t,
            Transfer {
                id: t,
                credit_account_id: participant.credit_account_id,
                user_data_128: participant.user_data_128,
                flags: committed_flags(pending, &coordinator_leg, &participant),
                timeout,
                timestamp: decision.timestamp,
                ..coordinator_leg
            },
        );
    }
    Ok(committed)
}

/// The flags of a committed cross-shard transfer as its caller gave them, from its legs:
/// `PENDING` if it committed by a marker, each leg's closing flag, and the coordinator leg's
/// `BALANCING_DEBIT`.
fn committed_flags(pending: bool, coordinator: &Transfer, participant: &Transfer) -> TransferFlags {
    let flags = if pending {
        TransferFlags::PENDING
    } else {
        TransferFlags::empty()
    };
    flags
        .union(keep(coordinator.flags, COORDINATOR_LEG_KEEPS))
        .union(keep(participant.flags, PARTICIPANT_LEG_KEEPS))
}

/// A same-shard event `t` of a chain spanning shards, committed: one leg, posted.
fn committed_chain_member(per_shard: &[HashMap<u128, Transfer>], t: u128) -> Option<Transfer> {
    per_shard.iter().find_map(|found| {
        let leg = found.get(&leg_id(t)).filter(|leg| {
            !is_reserved(leg.debit_account_id) && !is_reserved(leg.credit_account_id)
        })?;
        let res = found
            .get(&resolution_id(t))
            .filter(|res| !res.flags.void_pending_transfer())?;
        let pending = !res.flags.post_pending_transfer();
        Some(Transfer {
            id: t,
            flags: if pending {
                TransferFlags::PENDING
            } else {
                TransferFlags::empty()
            },
            timestamp: res.timestamp,
            ..*leg
        })
    })
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
    for transfer in found.values_mut() {
        if transfer.id >= SYSTEM_ID_MIN || !is_leg_id(transfer.pending_id) {
            continue;
        }
        if is_reserved(transfer.credit_account_id) {
            let participant = bridge_peer(router, transfer.credit_account_id);
            wanted[participant].push(transfer.pending_id);
        } else {
            // A post of a same-shard pending event of a chain: its accounts are the caller's.
            transfer.pending_id -= LEG_ID_MIN;
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

/// The unresolved legs one shard holds and its ledger time (a linearizable read of its
/// leader's index).
fn unresolved(inner: &ClusterInner, shard: usize, deadline: Instant) -> Result<Unresolved> {
    let reply = read_bytes(inner, shard, &Read::Unresolved, deadline)?;
    let (ledger_now, entries) = crate::wire::decode_unresolved(&reply)
        .ok_or_else(|| protocol("unresolved legs answered with the wrong kind"))?;
    Ok(Unresolved {
        ledger_now,
        entries,
    })
}

/// The resolver thread: every [`RESOLVER_INTERVAL`] it reads each shard's unresolved legs and
/// drives the old ones to their end ([`Resolver`], with the request timeout as the age of a
/// coordinator leg whose caller has given up). A shard without a leader is skipped until it
/// has one again (I10, I11). Passes do not wait for earlier passes' recoveries: a recovery
/// stuck on a shard without a leader holds up only its own pair of shards (issue item 4).
pub(crate) fn resolver_run(inner: &ClusterInner) {
    let timing = ResolverTiming::with_request_timeout(inner.config.request_timeout);
    let mut resolver = Resolver::new(timing);
    let origin = clock::now();
    let (ended, ended_pairs) = channel::unbounded::<(usize, usize)>();
    std::thread::scope(|scope| {
        loop {
            match inner.shutdown.recv_timeout(timing.interval) {
                Err(channel::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(channel::RecvTimeoutError::Disconnected) => return,
            }
            for (debit_shard, credit_shard) in ended_pairs.try_iter() {
                resolver.recovery_ended(debit_shard, credit_shard);
            }
            let now = clock::now();
            let reads: Vec<Option<Unresolved>> = (0..inner.shards.len())
                .map(|shard| unresolved(inner, shard, now + timing.interval).ok())
                .collect();
            let recoveries = resolver.pass(inner.router, now.duration_since(origin), &reads);
            // Each recovery runs for at most RECOVERY_PASSES intervals, at most
            // RECOVERIES_PARALLEL at once (the others are due again at the next pass).
            let deadline = clock::now()
                + (timing.interval * RECOVERY_PASSES).min(inner.config.request_timeout);
            for recovery in recoveries {
                if resolver.recoveries_running() >= RECOVERIES_PARALLEL {
                    break;
                }
                let pair = (recovery.debit_shard, recovery.credit_shard);
                resolver.recovery_started(pair.0, pair.1);
                let ended = ended.clone();
                scope.spawn(move || {
                    let (mut machine, action) = RecoveryMachine::new(inner.router, recovery);
                    // Errors (a shard without quorum, shutdown) leave the work for a later
                    // pass.
                    let _ = run(inner, &mut machine, action, |_, _| Ok(()), deadline);
                    let _ = ended.send(pair);
                });
            }
        }
    });
}

/// How many resolver intervals one recovery may take before it is left to a later pass.
const RECOVERY_PASSES: u32 = 4;

/// How many recoveries run at once (across passes).
pub(crate) const RECOVERIES_PARALLEL: usize = 16;

/// The finisher thread: applies queued decisions at the participants (step 4), everything
/// queued at once. A failure (a participant without quorum) leaves the legs to the resolver.
pub(crate) fn finisher_run(inner: &ClusterInner) {
    // The calls' work as queued (not joined into one list: the machine reads each in place).
    let mut batches: Vec<Finishes> = Vec::with_capacity(FINISHES_QUEUED_MAX + 1);
    loop {
        let work = crossbeam::select! {
            recv(inner.crossshard.finishes_queued) -> work => match work {
                Ok(work) => work,
                Err(_) => return,
            },
            recv(inner.shutdown) -> _ => return,
        };
        let mut count = work.len();
        batches.push(work);
        while count < 4 * BATCH_EVENTS_MAX as usize {
            let Ok(more) = inner.crossshard.finishes_queued.try_recv() else {
                break;
            };
            count += more.len();
            batches.push(more);
        }
        let deadline = clock::now() + inner.config.request_timeout;
        let (mut machine, action) = FinishMachine::batched(inner.router, &batches);
        let _ = run(inner, &mut machine, action, |_, _| Ok(()), deadline);
        batches.clear();
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
                let again = LegIndex::decode(&mut Reader::new(&out), &ledger);
                prop_assert!(again.is_some_and(|again| same(&again, &index, &ledger)));
            }
        }
    }

    /// Applies `transfers` to `ledger` and shows the results to `index`.
    fn apply(ledger: &mut Ledger, index: &mut LegIndex, transfers: &[Transfer]) -> Vec<R> {
        let command = ledger_core::Command::CreateTransfers(transfers.to_vec());
        let ledger_core::Reply::CreateTransfers(results) = ledger.apply(&command, 1_000) else {
            panic!("transfers answer transfer results");
        };
        index.observe(ledger, transfers, &results);
        results
    }

    /// Whether two indexes of `ledger` hold the same entries (same count, same snapshot).
    fn same(a: &LegIndex, b: &LegIndex, ledger: &Ledger) -> bool {
        let (mut a_bytes, mut b_bytes) = (Vec::new(), Vec::new());
        a.encode(ledger, &mut a_bytes);
        b.encode(ledger, &mut b_bytes);
        a.len() == b.len() && a_bytes == b_bytes
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
        assert!(same(&decoded, &index, &ledger));
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
    fn leg_index_counts_positions_past_resolutions_that_store_no_record() {
        // Posts res(t) of legs store no record: the legs after them in the batch still land
        // where the index lists them, and a resolution's void (which stores one) follows.
        let (mut ledger, mut index) = ledger_with_legs();
        let leg = |t| Transfer {
            flags: TransferFlags::PENDING,
            ..Transfer::new(leg_id(t), 1, SYSTEM_ID_MIN + 5, 10, 1, 1)
        };
        let batch = [
            resolution(1, Decision::Commit),
            leg(4),
            resolution(2, Decision::Commit),
            leg(5),
            resolution(4, Decision::Abort(R::CreditAccountNotFound)),
            leg(6),
        ];
        let count_before = ledger.transfer_count();
        let results = apply(&mut ledger, &mut index, &batch);
        assert!(results.iter().all(|result| result.is_ok()), "{results:?}");
        // Four records: three legs and the void; the two posts stored none.
        assert_eq!(ledger.transfer_count(), count_before + 4);
        assert_eq!(ledger.transfer_position(resolution_id(1)), None);
        let posts = ledger.lookup_transfers(&[resolution_id(1), resolution_id(2)]);
        assert_eq!(
            posts.len(),
            2,
            "a post that stored no record is still found"
        );
        let unresolved: Vec<u128> = index.unresolved(&ledger).iter().map(|t| t.id).collect();
        assert_eq!(unresolved, [leg_id(5), leg_id(6)]);
        // The snapshot of the index reads its legs back at their positions.
        let mut bytes = Vec::new();
        index.encode(&ledger, &mut bytes);
        let decoded = LegIndex::decode(&mut Reader::new(&bytes), &ledger).unwrap();
        assert!(same(&decoded, &index, &ledger));
        // A retried post answers as the stored record would have.
        let retry = resolution(1, Decision::Commit);
        assert_eq!(apply(&mut ledger, &mut index, &[retry]), [R::Exists]);
        let void = resolution(2, Decision::Abort(R::CreditAccountNotFound));
        assert_eq!(
            apply(&mut ledger, &mut index, &[void]),
            [R::ExistsWithDifferentFlags]
        );
        assert_eq!(index.len(), 2);
    }

    /// A user's pending transfer 7 of 10 from account 1 (shard 1) to account 2 (shard 0).
    fn pending_seven() -> Cross {
        Cross {
            transfer: Transfer {
                flags: TransferFlags::PENDING,
                ..Transfer::new(7, 1, 2, 10, 1, 1)
            },
            debit_shard: 1,
            credit_shard: 0,
        }
    }

    /// The coordinator's ledger of [`pending_seven`] (shard 1 of 2) holding its leg, an empty
    /// index that saw it, and the leg.
    fn pending_seven_coordinator() -> (Ledger, LegIndex, Transfer) {
        let router = Router::new(2);
        let leg = coordinator_leg(router, &pending_seven());
        let (mut ledger, mut index) = (Ledger::new(), LegIndex::default());
        let accounts = vec![
            Account::new(1, 1, 1),
            Account::new(leg.credit_account_id, 1, 1),
            Account::new(pending_bridge_id(router, 1, 1, 1), 1, 1),
        ];
        ledger.apply(&ledger_core::Command::CreateAccounts(accounts), 1);
        assert_eq!(apply(&mut ledger, &mut index, &[leg]), [R::Ok]);
        (ledger, index, leg)
    }

    #[test]
    fn leg_index_keeps_users_posts_until_acknowledged() {
        let router = Router::new(2);
        let cross = pending_seven();
        let leg = coordinator_leg(router, &cross);
        assert!(is_pending_bridge(router, leg.credit_account_id));
        assert_eq!(bridge_ledger(router, leg.credit_account_id), 1);
        assert_eq!(bridge_peer(router, leg.credit_account_id), 0);
        let commit = decision_event(router, &cross, Decision::Commit);
        assert_eq!((commit.id, commit.amount), (resolution_id(7), 0));
        assert_eq!(logged_decision(&commit), Decision::Commit);
        let (mut ledger, mut index, stored_leg) = pending_seven_coordinator();
        assert_eq!(stored_leg, leg);
        assert_eq!(index.len(), 1);
        assert_eq!(apply(&mut ledger, &mut index, &[commit]), [R::Ok]);
        assert_eq!(
            index.len(),
            0,
            "a decided pending transfer is no protocol work"
        );
        // The user's post of leg(7) enters under x(7) until the coordinator acknowledges it.
        let post = Transfer {
            pending_id: leg_id(7),
            credit_account_id: leg.credit_account_id,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(8, 0, 0, 4, 0, 0)
        };
        assert_eq!(apply(&mut ledger, &mut index, &[post]), [R::Ok]);
        assert_eq!(index.len(), 1, "the post waits for its acknowledgement");
        let applied = applied_event(&post);
        assert_eq!((applied.id, applied.pending_id), (applied_id(7), leg_id(7)));
        assert_eq!(
            applied.debit_account_id, 0,
            "inherited from the participant's leg"
        );
        assert!(applied.flags.post_pending_transfer() && applied.amount == 4);
        // The acknowledgement, resubmitting the post with res(t) as pending id, answers
        // ExistsWithDifferentPendingId and removes it.
        let acknowledgement = acknowledgement(&post);
        assert_eq!(acknowledgement.pending_id, resolution_id(7));
        index.observe(&ledger, &[acknowledgement], &[R::PendingIdMustBeZero]);
        assert_eq!(index.len(), 1, "only the expected answer counts");
        assert_eq!(
            apply(&mut ledger, &mut index, &[acknowledgement]),
            [R::ExistsWithDifferentPendingId]
        );
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn leg_index_snapshot_reads_users_posts_back_from_the_ledger() {
        let router = Router::new(2);
        let cross = pending_seven();
        let leg = coordinator_leg(router, &cross);
        let (mut ledger, mut index) = (Ledger::new(), LegIndex::default());
        let accounts = vec![
            Account::new(1, 1, 1),
            Account::new(leg.credit_account_id, 1, 1),
        ];
        ledger.apply(&ledger_core::Command::CreateAccounts(accounts), 1);
        let post = Transfer {
            pending_id: leg_id(7),
            credit_account_id: leg.credit_account_id,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(8, 0, 0, 4, 0, 0)
        };
        assert_eq!(apply(&mut ledger, &mut index, &[leg, post]), [R::Ok, R::Ok]);
        // The leg (no decision logged here) and the post waiting for its acknowledgement.
        assert_eq!(index.len(), 2);
        let mut bytes = Vec::new();
        index.encode(&ledger, &mut bytes);
        let decoded = LegIndex::decode(&mut Reader::new(&bytes), &ledger).unwrap();
        assert!(same(&decoded, &index, &ledger));
        assert_eq!(decoded.len(), 2);
    }

    #[test]
    fn a_users_retry_naming_another_transfer_does_not_acknowledge_a_post() {
        // P (id 8) of the cross-shard pending transfer 7 is logged on the coordinator and
        // waits there for its participant. The user retries id 8 as a post of the plain
        // cross-shard transfer 9: located, it goes to the same coordinator with pending id
        // res(9) and answers ExistsWithDifferentPendingId, like an acknowledgement.
        let router = Router::new(2);
        let bridge = pending_bridge_id(router, 1, 1, 0);
        let post = Transfer {
            pending_id: leg_id(7),
            credit_account_id: bridge,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(8, 0, 0, 4, 0, 0)
        };
        let (mut ledger, mut index, _) = pending_seven_coordinator();
        let decision = decision_event(router, &pending_seven(), Decision::Commit);
        let results = apply(&mut ledger, &mut index, &[decision, post]);
        assert_eq!(results, [R::Ok, R::Ok]);
        let retry = Transfer {
            pending_id: resolution_id(9),
            credit_account_id: 0,
            ..post
        };
        let results = apply(&mut ledger, &mut index, &[retry]);
        assert_eq!(results, [R::ExistsWithDifferentPendingId]);
        assert_eq!(index.len(), 1, "the participant has yet to apply P");
        let results = apply(&mut ledger, &mut index, &[acknowledgement(&post)]);
        assert_eq!(results, [R::ExistsWithDifferentPendingId]);
        assert_eq!(index.len(), 0);
    }

    /// The leg index as specified, by id (how it was kept before store positions): the
    /// reference the index is checked against.
    #[derive(Default)]
    struct LegModel {
        ids: std::collections::BTreeSet<u128>,
        posts: HashMap<u128, u128>,
    }

    impl LegModel {
        fn observe(&mut self, transfers: &[Transfer], results: &[R]) {
            for (transfer, &result) in transfers.iter().zip(results) {
                let id = transfer.id;
                let ok = result == R::Ok;
                if ok && is_leg_id(id) {
                    self.ids.insert(id);
                } else if ok && is_resolution_id(id) {
                    self.ids.remove(&leg_id(id - RESOLUTION_ID_MIN));
                    if is_expiring_decision(transfer) {
                        self.ids.insert(id);
                    }
                } else if ok && is_users_post_of_leg(transfer) {
                    self.ids
                        .remove(&resolution_id(transfer.pending_id - LEG_ID_MIN));
                    self.ids.insert(id);
                    self.posts.insert(id, transfer.pending_id);
                } else if ok && is_chain_record(transfer) {
                    self.ids.insert(id);
                } else if result == R::ExistsWithDifferentPendingId
                    && is_resolution_id(transfer.pending_id)
                    && self.posts.get(&id) == Some(&leg_id(transfer.pending_id - RESOLUTION_ID_MIN))
                {
                    self.posts.remove(&id);
                    self.ids.remove(&id);
                } else if result == R::ExistsWithDifferentUserData32
                    && is_applied_id(id)
                    && transfer.user_data_32 == CHAIN_RECORD_DONE
                {
                    self.ids.remove(&id);
                }
            }
        }

        /// The snapshot bytes of the entries (sorted by id, as submitted).
        fn encode(&self, ledger: &Ledger) -> Vec<u8> {
            let ids: Vec<u128> = self.ids.iter().copied().collect();
            let legs = ledger.lookup_transfers(&ids);
            assert_eq!(legs.len(), ids.len());
            let mut out = (legs.len() as u64).to_le_bytes().to_vec();
            for leg in legs {
                out.extend_from_slice(&submitted_leg(leg).encode());
            }
            out
        }
    }

    /// Accounts of the leg index scenarios (ledger 1): a user, a bridge, a marker account.
    const USER: u128 = 1;
    const BRIDGE: u128 = SYSTEM_ID_MIN + 5;
    const MARKS: u128 = SYSTEM_ID_MIN + 6;

    fn ledger_for_scenarios() -> Ledger {
        let mut ledger = Ledger::new();
        let accounts = [USER, BRIDGE, MARKS].map(|id| Account::new(id, 1, 1));
        ledger.apply(&ledger_core::Command::CreateAccounts(accounts.to_vec()), 1);
        ledger
    }

    /// The event `kind` of user transfer `t` in the scenarios.
    fn scenario_event(kind: u8, t: u128) -> Transfer {
        let leg = Transfer {
            flags: TransferFlags::PENDING,
            ..Transfer::new(leg_id(t), USER, BRIDGE, 10, 1, 1)
        };
        let marker = Transfer::new(resolution_id(t), BRIDGE, MARKS, 0, 1, 1);
        let users_post = |id, flags, amount| Transfer {
            pending_id: leg_id(t),
            credit_account_id: BRIDGE,
            flags,
            ..Transfer::new(id, 0, 0, amount, 0, 0)
        };
        let chain_record = Transfer {
            user_data_128: 1,
            ..Transfer::new(applied_id(t), BRIDGE, MARKS, 0, 1, 1)
        };
        match kind % 13 {
            0 => leg,
            1 => Transfer { timeout: 1, ..leg },
            2 => resolution(t, Decision::Commit),
            3 => resolution(t, Decision::Abort(R::CreditAccountNotFound)),
            4 => marker,
            5 => Transfer {
                user_data_64: 3,
                ..marker
            },
            6 => users_post(100 + t, TransferFlags::POST_PENDING_TRANSFER, 10),
            7 => users_post(200 + t, TransferFlags::VOID_PENDING_TRANSFER, 0),
            8 => acknowledgement(&users_post(
                100 + t,
                TransferFlags::POST_PENDING_TRANSFER,
                10,
            )),
            9 => acknowledgement(&users_post(
                200 + t,
                TransferFlags::VOID_PENDING_TRANSFER,
                0,
            )),
            10 => chain_record,
            11 => Transfer {
                user_data_32: CHAIN_RECORD_DONE,
                ..chain_record
            },
            _ => fence(Router::new(2), t, 0),
        }
    }

    /// Applies `transfers` at `timestamp`, to the index and to the model.
    fn apply_scenario(
        ledger: &mut Ledger,
        (index, model): (&mut LegIndex, &mut LegModel),
        transfers: &[Transfer],
        timestamp: u64,
    ) -> Vec<R> {
        let command = ledger_core::Command::CreateTransfers(transfers.to_vec());
        let ledger_core::Reply::CreateTransfers(results) = ledger.apply(&command, timestamp) else {
            panic!("transfers answer transfer results");
        };
        index.observe(ledger, transfers, &results);
        model.observe(transfers, &results);
        results
    }

    /// The index and the model agree on the count, the unresolved entries and the snapshot.
    fn assert_agrees(index: &LegIndex, model: &LegModel, ledger: &Ledger) {
        assert_eq!(index.len(), model.ids.len());
        let mut bytes = Vec::new();
        index.encode(ledger, &mut bytes);
        assert_eq!(
            bytes,
            model.encode(ledger),
            "the snapshot bytes are the model's"
        );
        let mut unresolved: Vec<u128> = index.unresolved(ledger).iter().map(|t| t.id).collect();
        unresolved.sort_unstable();
        assert_eq!(unresolved, model.ids.iter().copied().collect::<Vec<_>>());
        assert_window(index, model, ledger);
    }

    /// The index's bitset holds exactly the positions of the model's legs, in a window from
    /// the oldest one's word to the newest one's.
    fn assert_window(index: &LegIndex, model: &LegModel, ledger: &Ledger) {
        let mut positions: Vec<usize> = model
            .ids
            .iter()
            .filter(|&&id| is_leg_id(id))
            .map(|&id| ledger.transfer_position(id).unwrap())
            .collect();
        positions.sort_unstable();
        assert_eq!(index.positions().collect::<Vec<_>>(), positions);
        assert_eq!(index.legs_unresolved, positions.len());
        if let (Some(oldest), Some(newest)) = (positions.first(), positions.last()) {
            assert_eq!(index.first_word, oldest / 64);
            assert_eq!(index.words.len(), newest / 64 - oldest / 64 + 1);
        } else {
            assert!(index.words.is_empty());
        }
    }

    proptest! {
        #[test]
        fn leg_index_agrees_with_the_model(
            batches in proptest::collection::vec(
                (
                    proptest::collection::vec((any::<u8>(), 1_u128..6), 1..8),
                    0_u8..8,
                    0_u64..3,
                ),
                1..24,
            ),
        ) {
            let mut ledger = ledger_for_scenarios();
            let (mut index, mut model) = (LegIndex::default(), LegModel::default());
            let mut timestamp = 10;
            for (events, shape, seconds) in batches {
                let mut transfers: Vec<Transfer> = events
                    .iter()
                    .map(|&(kind, t)| scenario_event(kind, t))
                    .collect();
                // Shapes: 1 a linked chain, 2 a linked chain ending with a failing event
                // (rolled back whole); 3 applied twice (retries); 4 restores from a snapshot
                // after.
                if shape == 1 || shape == 2 {
                    for transfer in &mut transfers {
                        transfer.flags = transfer.flags.union(TransferFlags::LINKED);
                    }
                    if shape == 2 {
                        transfers.push(Transfer::new(1_000, USER, 99, 1, 1, 1));
                    } else if let Some(last) = transfers.last_mut() {
                        last.flags = last.flags.difference(TransferFlags::LINKED);
                    }
                }
                timestamp += seconds * 1_000_000_000;
                let results =
                    apply_scenario(&mut ledger, (&mut index, &mut model), &transfers, timestamp);
                if shape == 2 {
                    prop_assert!(results.iter().all(|result| !result.is_ok()));
                }
                if shape == 3 {
                    assert_agrees(&index, &model, &ledger);
                    apply_scenario(&mut ledger, (&mut index, &mut model), &transfers, timestamp);
                }
                if shape == 4 {
                    let mut bytes = Vec::new();
                    index.encode(&ledger, &mut bytes);
                    index = LegIndex::decode(&mut Reader::new(&bytes), &ledger).unwrap();
                }
                assert_agrees(&index, &model, &ledger);
            }
        }
    }

    #[test]
    fn events_are_classified_by_what_they_can_do_to_the_leg_index() {
        use EventKind::{Leg, Nothing, Other, OwnResolution, Resolution};
        let kinds: Vec<EventKind> = (0..13)
            .map(|kind| EventKind::of(&scenario_event(kind, 4)))
            .collect();
        let expected = [
            Leg,
            Leg,
            OwnResolution,
            OwnResolution,
            Resolution,
            Resolution,
            Other,
            Other,
            Other,
            Other,
            Other,
            Other,
            Leg,
        ];
        assert_eq!(kinds, expected);
        // A resolution naming another leg is no post or void of its own.
        let foreign = Transfer {
            pending_id: leg_id(5),
            ..scenario_event(2, 4)
        };
        assert_eq!(EventKind::of(&foreign), Resolution);
        // Users' plain transfers, posts and voids of user transfers do nothing.
        let plain = Transfer::new(9, USER, BRIDGE, 1, 1, 1);
        let users_post = Transfer {
            pending_id: 8,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(10, 0, 0, 0, 0, 0)
        };
        assert_eq!(LegIndex::classify(&[plain, users_post]), [Nothing, Nothing]);
    }

    #[test]
    fn leg_index_markers_and_early_users_posts() {
        let mut ledger = ledger_for_scenarios();
        let (mut index, mut model) = (LegIndex::default(), LegModel::default());
        let [leg, marker, post] = [0, 4, 6].map(|kind| scenario_event(kind, 1));
        let [leg_2, marker_2, post_2] = [0, 4, 6].map(|kind| scenario_event(kind, 2));
        let [leg_3, marker_3] = [0, 4].map(|kind| scenario_event(kind, 3));
        let batch = [leg, leg_2, marker_3, leg_3, marker, post, post_2];
        let results = apply_scenario(&mut ledger, (&mut index, &mut model), &batch, 10);
        assert!(results.iter().all(|result| result.is_ok()));
        // Leg 1: marked, then posted by its user: resolved. Leg 2: posted by its user before
        // its marker (a participant applying P before the decision): still unresolved. Leg 3:
        // its marker came first, so it stays unresolved (an entry only its resolution removes).
        let position = |t| ledger.transfer_position(leg_id(t)).unwrap();
        let [position_2, position_3] = [2, 3].map(position);
        assert_eq!(
            index.positions().collect::<Vec<_>>(),
            [position_2, position_3]
        );
        assert_agrees(&index, &model, &ledger);
        let results = apply_scenario(
            &mut ledger,
            (&mut index, &mut model),
            &[marker_2, marker_3],
            20,
        );
        assert_eq!(results, [R::Ok, R::Exists]);
        assert_eq!(
            index.positions().collect::<Vec<_>>(),
            [position_3],
            "the marker resolves the leg its user closed"
        );
        assert_agrees(&index, &model, &ledger);
    }

    #[test]
    fn leg_index_window_follows_the_unresolved_legs() {
        let mut ledger = ledger_for_scenarios();
        let (mut index, mut model) = (LegIndex::default(), LegModel::default());
        let per_batch = u128::from(BATCH_EVENTS_MAX) / 2;
        let straggler = |t: u128| t % 100 == 0;
        for batch in 0..10_u128 {
            // Every leg but one in a hundred is resolved in its batch, half posted, half voided;
            // the stragglers of the batch before resolve now, but leg(100) stays unresolved.
            let ts = (batch * per_batch + 1)..((batch + 1) * per_batch + 1);
            let mut transfers: Vec<Transfer> = ts.clone().map(|t| scenario_event(0, t)).collect();
            let resolved = ts.clone().filter(|&t| !straggler(t));
            let late = (batch.max(1) - 1) * per_batch + 1..ts.start;
            let late = late.filter(|&t| straggler(t) && t != 100);
            transfers.extend(
                resolved
                    .chain(late)
                    .map(|t| scenario_event(2 + (t % 2) as u8, t)),
            );
            let timestamp = 10 + batch as u64;
            let results =
                apply_scenario(&mut ledger, (&mut index, &mut model), &transfers, timestamp);
            assert!(results.iter().all(|result| result.is_ok()));
            // The window runs from leg(100) to this batch's last straggler.
            assert_agrees(&index, &model, &ledger);
            let stragglers = ts.filter(|&t| straggler(t)).count();
            assert_eq!(index.len(), 1 + stragglers - usize::from(batch == 0));
        }
        let mut bytes = Vec::new();
        index.encode(&ledger, &mut bytes);
        let decoded = LegIndex::decode(&mut Reader::new(&bytes), &ledger).unwrap();
        assert!(same(&decoded, &index, &ledger));
        assert_window(&decoded, &model, &ledger);
        // With leg(100) resolved, the window starts at the last batch's first straggler.
        let results = apply_scenario(
            &mut ledger,
            (&mut index, &mut model),
            &[scenario_event(2, 100)],
            20,
        );
        assert_eq!(results, [R::Ok]);
        assert_agrees(&index, &model, &ledger);
        let last_batch = 9 * per_batch + 1..=10 * per_batch;
        let first_straggler = last_batch.clone().find(|&t| straggler(t)).unwrap();
        let oldest = ledger.transfer_position(leg_id(first_straggler)).unwrap();
        assert_eq!(index.first_word, oldest / 64);
        assert!(index.words.len() <= 2 * per_batch as usize / 64 + 1);
        // Resolving the rest empties the window.
        let rest: Vec<Transfer> = last_batch
            .filter(|&t| straggler(t))
            .map(|t| scenario_event(3, t))
            .collect();
        let results = apply_scenario(&mut ledger, (&mut index, &mut model), &rest, 30);
        assert!(results.iter().all(|result| result.is_ok()));
        assert_eq!((index.len(), index.words.len()), (0, 0));
        assert_agrees(&index, &model, &ledger);
    }

    /// A scenario ledger, its index and the index's model after `batches`, each applied `Ok`.
    fn index_after_batches(batches: &[&[Transfer]]) -> (Ledger, LegIndex, LegModel) {
        let mut ledger = ledger_for_scenarios();
        let (mut index, mut model) = (LegIndex::default(), LegModel::default());
        for batch in batches {
            let results = apply_scenario(&mut ledger, (&mut index, &mut model), batch, 10);
            assert!(results.iter().all(|result| result.is_ok()));
        }
        (ledger, index, model)
    }

    #[test]
    fn leg_index_reads_the_other_entries_then_the_oldest_legs() {
        let count_max = BATCH_EVENTS_MAX as usize;
        let legs: Vec<Transfer> = (1..=8_200).map(|t| scenario_event(0, t)).collect();
        // Leg 1 decided with a timeout (its decision waits to expire); leg 2 posted by its
        // user before any decision (the post waits for its acknowledgement, the leg stays).
        let others = [scenario_event(5, 1), scenario_event(6, 2)];
        let (ledger, index, _) = index_after_batches(&[&legs, &others]);
        assert_eq!(index.len(), 8_199 + 2);
        let read = index.unresolved(&ledger);
        assert_eq!(read.len(), count_max);
        let mut first: Vec<u128> = read[..2].iter().map(|entry| entry.id).collect();
        first.sort_unstable();
        assert_eq!(first, [102, resolution_id(1)]);
        let legs_read: Vec<u128> = read[2..].iter().map(|entry| entry.id).collect();
        let oldest: Vec<u128> = (2..).take(count_max - 2).map(leg_id).collect();
        assert_eq!(legs_read, oldest);
    }

    #[test]
    fn leg_index_reads_the_oldest_legs_past_many_expiring_decisions() {
        let count_max = BATCH_EVENTS_MAX as usize;
        // 9,000 legs; the first 8,500 decided with a timeout (users' pending transfers whose
        // decisions wait to expire), the last 500 undecided.
        let legs: Vec<Transfer> = (1..=9_000).map(|t| scenario_event(0, t)).collect();
        let decisions: Vec<Transfer> = (1..=8_500).map(|t| scenario_event(5, t)).collect();
        let (mut ledger, mut index, mut model) = index_after_batches(&[&legs, &decisions]);
        assert_eq!(index.len(), 8_500 + 500);
        let read = index.unresolved(&ledger);
        assert_eq!(read.len(), count_max);
        let undecided: Vec<u128> = (8_501..=9_000).map(leg_id).collect();
        let legs_read: Vec<u128> = read
            .iter()
            .map(|entry| entry.id)
            .filter(|&id| is_leg_id(id))
            .collect();
        assert_eq!(legs_read, undecided, "every undecided leg is read");
        assert!(read[..count_max - 500].iter().all(is_expiring_decision));

        // With more legs than half a read, the decisions still get the other half.
        let more: Vec<Transfer> = (9_001..=20_000).map(|t| scenario_event(0, t)).collect();
        let results = apply_scenario(&mut ledger, (&mut index, &mut model), &more, 10);
        assert!(results.iter().all(|result| result.is_ok()));
        let read = index.unresolved(&ledger);
        let decisions_read = read
            .iter()
            .filter(|entry| is_expiring_decision(entry))
            .count();
        assert_eq!(decisions_read, count_max - count_max / 2);
        assert_eq!(
            read[decisions_read].id,
            leg_id(8_501),
            "the oldest leg first"
        );
    }

    /// The expiries a fresh resolver finds due on shard 0 (of 2), which read `entries` at
    /// `ledger_now` (no tick: the voids move the ledger time).
    fn resolver_first_pass(ledger_now: u64, entries: Vec<Transfer>) -> Vec<Transfer> {
        let read = protocol::Unresolved {
            ledger_now,
            entries,
        };
        let reads = [Some(read), Some(protocol::Unresolved::default())];
        let router = Router::new(2);
        let due = Resolver::new(ResolverTiming::default()).pass(router, Duration::ZERO, &reads);
        assert!(due.iter().all(|recovery| !recovery.tick));
        due.into_iter().flat_map(|due| due.expiries).collect()
    }

    #[test]
    fn leg_index_reads_expiring_decisions_by_deadline_and_the_resolver_voids_them_on_time() {
        // 20,000 users' pending transfers decided with a timeout of an hour, then 10 with one
        // of a second; 5,000 legs undecided, so the decisions get half a read (4,095). Read in
        // hash order, the short ones would most likely be left out, and wait for long ones
        // to expire first.
        let count_max = BATCH_EVENTS_MAX as usize;
        let decision = |t, seconds| Transfer {
            user_data_64: seconds,
            ..scenario_event(5, t)
        };
        let legs: Vec<Transfer> = (1..=25_010).map(|t| scenario_event(0, t)).collect();
        let long: Vec<Transfer> = (1..=20_000).map(|t| decision(t, 3_600)).collect();
        let short: Vec<Transfer> = (20_001..=20_010).map(|t| decision(t, 1)).collect();
        let (mut ledger, mut index, mut model) = index_after_batches(&[&legs, &long, &short]);
        assert_eq!(index.len(), 20_010 + 5_000);
        let stored = |decisions: &[Transfer]| -> Vec<Transfer> {
            ledger.lookup_transfers(&decisions.iter().map(|d| d.id).collect::<Vec<_>>())
        };
        let short_stored = stored(&short);
        // Not due yet in the shard's ledger time: read after the posts and records (none
        // here), still earliest first.
        let read = index.unresolved(&ledger);
        assert_eq!(
            read[..10],
            short_stored[..],
            "the earliest deadlines first, as stored"
        );
        // Two seconds later in ledger time (a tick applied), they are due.
        let tick = [Transfer::default()];
        let results = apply_scenario(&mut ledger, (&mut index, &mut model), &tick, 2_000_000_000);
        assert_eq!(results, [R::IdMustNotBeZero]);
        let ledger_now = ledger.last_timestamp();
        let read = index.unresolved(&ledger);
        assert_eq!(read.len(), count_max);
        let decisions: Vec<&Transfer> = read.iter().filter(|e| is_expiring_decision(e)).collect();
        assert_eq!(decisions.len(), count_max - count_max / 2);
        assert!(
            decisions
                .windows(2)
                .all(|pair| decision_deadline(pair[0]) < decision_deadline(pair[1])),
            "in deadline order"
        );
        assert_eq!(read[..10], short_stored[..]);
        assert_eq!(
            read[decisions.len()].id,
            leg_id(20_011),
            "then the oldest legs"
        );

        // The resolver, on its first pass, voids exactly the short ones.
        let expiries = resolver_first_pass(ledger_now, read);
        assert_eq!(expiries, short_stored);
        let voids: Vec<Transfer> = expiries.iter().map(expiry).collect();
        let results = apply_scenario(&mut ledger, (&mut index, &mut model), &voids, ledger_now);
        assert!(results.iter().all(|result| result.is_ok()));
        let voided = ledger.lookup_transfers(&voids.iter().map(|v| v.id).collect::<Vec<_>>());
        assert!(
            voided
                .iter()
                .zip(&short_stored)
                .all(|(void, decision)| void.timestamp >= decision_deadline(decision)),
            "never early"
        );
        // The short decisions left the index (their voids wait for the participant); the
        // snapshot keeps the deadline order.
        assert_eq!(index.len(), 20_000 + 10 + 5_000);
        let read = index.unresolved(&ledger);
        assert!(
            read.iter()
                .all(|entry| !short.iter().any(|d| d.id == entry.id))
        );
        let mut bytes = Vec::new();
        index.encode(&ledger, &mut bytes);
        let decoded = LegIndex::decode(&mut Reader::new(&bytes), &ledger).unwrap();
        assert_eq!(decoded.unresolved(&ledger), read);
        assert_eq!(index.len(), model.ids.len());
    }

    #[test]
    fn leg_index_refuses_a_snapshot_entry_that_is_no_leg_or_a_duplicate() {
        let (ledger, index) = ledger_with_legs();
        let mut bytes = Vec::new();
        index.encode(&ledger, &mut bytes);
        let leg = &bytes[8..8 + TRANSFER_SIZE_BYTES];
        let mut duplicate = 2_u64.to_le_bytes().to_vec();
        duplicate.extend_from_slice(leg);
        duplicate.extend_from_slice(leg);
        assert!(LegIndex::decode(&mut Reader::new(&duplicate), &ledger).is_none());
        let user = Transfer::new(9, 1, SYSTEM_ID_MIN + 5, 1, 1, 1);
        let mut not_a_leg = 1_u64.to_le_bytes().to_vec();
        not_a_leg.extend_from_slice(&user.encode());
        assert!(LegIndex::decode(&mut Reader::new(&not_a_leg), &ledger).is_none());
        let huge = u64::MAX.to_le_bytes();
        assert!(LegIndex::decode(&mut Reader::new(&huge), &ledger).is_none());
    }

    #[test]
    fn plan_splits_and_refuses_what_is_not_built() {
        let router = Router::new(2);
        let plain = Transfer::new(1, 1, 2, 5, 1, 1);
        let local = Transfer::new(2, 1, 3, 5, 1, 1);
        let plan = plan_transfers(router, &[plain, local]).unwrap();
        assert_eq!((plan.cross, plan.local), (vec![0], vec![1]));
        // A pending transfer crosses, with a timeout too; a BALANCING_DEBIT one too, a
        // BALANCING_CREDIT one does not (yet).
        let pending = Transfer {
            flags: TransferFlags::PENDING,
            ..plain
        };
        let plan = plan_transfers(router, &[local, pending]).unwrap();
        assert_eq!((plan.cross, plan.local), (vec![1], vec![0]));
        let expiring = Transfer {
            timeout: 5,
            ..pending
        };
        assert_eq!(plan_transfers(router, &[expiring]).unwrap().cross, [0]);
        assert_eq!(precheck(&expiring), None);
        let balancing = Transfer {
            flags: TransferFlags::BALANCING_DEBIT,
            ..plain
        };
        assert_eq!(plan_transfers(router, &[balancing]).unwrap().cross, [0]);
        let cross = Cross {
            transfer: balancing,
            debit_shard: 1,
            credit_shard: 0,
        };
        // Only the coordinator leg is clamped (to A's balance): the participant's takes its
        // amount from it.
        assert!(coordinator_leg(router, &cross).flags.balancing_debit());
        assert!(!participant_leg(router, &cross).flags.balancing_debit());
        let balancing_credit = Transfer {
            flags: TransferFlags::BALANCING_CREDIT,
            ..plain
        };
        assert!(plan_transfers(router, &[balancing_credit]).is_err());
        // Its x(t) would be u128::MAX: that one id is refused for a cross-shard pending one.
        let last = Transfer {
            id: SYSTEM_ID_MIN - 1,
            ..pending
        };
        let plan = plan_transfers(router, &[last]).unwrap();
        assert_eq!(plan.preset[0], Some(R::IdReservedForSystem));
        // Posts and voids are located first (only on their shard if they name two accounts
        // of one shard).
        let post = |debit, credit| Transfer {
            pending_id: 1,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(7, debit, credit, 0, 0, 0)
        };
        let plan =
            plan_transfers(router, &[post(0, 0), post(1, 3), post(1, 2), post(1, 0)]).unwrap();
        assert_eq!((plan.posts, plan.local), (vec![0, 1, 2, 3], vec![]));
        let (preset, submit) =
            plan_accounts(&[Account::new(SYSTEM_ID_MIN, 1, 1), Account::new(4, 1, 1)]);
        assert_eq!(submit, [1]);
        assert_eq!(preset[0], Some(CreateAccountResult::IdReservedForSystem));
    }

    #[test]
    fn plan_takes_closing_pending_transfers_across_shards() {
        let router = Router::new(2);
        let plain = Transfer::new(1, 1, 2, 5, 1, 1);
        let pending = Transfer {
            flags: TransferFlags::PENDING,
            ..plain
        };
        // A closing one crosses if pending, each leg closing its own user account only; a
        // closing one that is not pending is answered as the ledger would, before any leg.
        let closing = Transfer {
            flags: TransferFlags::PENDING
                .union(TransferFlags::CLOSING_DEBIT)
                .union(TransferFlags::CLOSING_CREDIT),
            ..plain
        };
        assert_eq!(plan_transfers(router, &[closing]).unwrap().cross, [0]);
        assert_eq!(precheck(&closing), None);
        let cross = Cross {
            transfer: closing,
            debit_shard: 1,
            credit_shard: 0,
        };
        let closes = |leg: Transfer| (leg.flags.closing_debit(), leg.flags.closing_credit());
        assert_eq!(closes(coordinator_leg(router, &cross)), (true, false));
        assert_eq!(closes(participant_leg(router, &cross)), (false, true));
        assert_eq!(
            closes(coordinator_leg(
                router,
                &Cross {
                    transfer: pending,
                    ..cross
                }
            )),
            (false, false)
        );
        let not_pending = Transfer {
            flags: TransferFlags::CLOSING_CREDIT,
            ..plain
        };
        assert_eq!(plan_transfers(router, &[not_pending]).unwrap().cross, [0]);
        assert_eq!(
            precheck(&not_pending),
            Some(R::ClosingTransferMustBePending)
        );
        assert_eq!(
            precheck(&Transfer {
                ledger: 0,
                ..not_pending
            }),
            Some(R::ClosingTransferMustBePending)
        );
    }

    #[test]
    fn plan_runs_chains_spanning_shards_whole() {
        let router = Router::new(2);
        let plain = Transfer::new(1, 1, 2, 5, 1, 1);
        let local = Transfer::new(2, 1, 3, 5, 1, 1);
        let pending = Transfer {
            flags: TransferFlags::PENDING,
            ..plain
        };
        let balancing = Transfer {
            flags: TransferFlags::BALANCING_DEBIT,
            ..plain
        };
        // A chain spanning shards is run as a whole; with a balancing event it is refused;
        // one failing a field its legs would not check fails before submission.
        let linked = Transfer {
            flags: TransferFlags::LINKED,
            ..local
        };
        let plan = plan_transfers(router, &[linked, plain, local]).unwrap();
        assert_eq!(plan.chains.len(), 1);
        assert_eq!((plan.chains[0].clone(), plan.local), (0..2, vec![2]));
        // A pending event may be in a chain, unless its credit account lives on the chain's
        // coordinator (its user's post would collide with its chain record there).
        assert_eq!(
            plan_transfers(router, &[linked, pending])
                .unwrap()
                .chains
                .len(),
            1
        );
        let on_shard_0 = Transfer {
            flags: TransferFlags::LINKED,
            ..Transfer::new(3, 2, 4, 5, 1, 1)
        };
        assert!(plan_transfers(router, &[on_shard_0, pending]).is_err());
        assert!(plan_transfers(router, &[linked, balancing]).is_err());
        let expiring_plain = Transfer {
            timeout: 1,
            ..plain
        };
        let plan = plan_transfers(router, &[linked, expiring_plain]).unwrap();
        assert!(plan.chains.is_empty());
        assert_eq!(
            plan.preset,
            [
                Some(R::LinkedEventFailed),
                Some(R::TimeoutReservedForPendingTransfer)
            ]
        );
    }
}
