//! The cross-shard protocol as a pure, deterministic core (sans-IO): no threads, clocks,
//! channels or shards, only inputs and outputs.
//!
//! A machine says what to do next as an [`Action`]: submit these transfers to these shards
//! ([`Action::Submit`], one batch per shard, tagged with its protocol [`Phase`]), look these ids
//! up on these shards ([`Action::Lookup`]), or it is done ([`Action::Done`], with its outcome).
//! The driver does it and hands the answers back as a [`Reply`] to `step`, which yields the next
//! action. Every batch is indexed by shard (`per_shard[s]` goes to shard `s`, an empty one is not
//! sent) and every answer is shaped the same way.
//!
//! - [`CallMachine`]: one call's prechecked cross-shard transfers, steps 1–3 (prepare, vote,
//!   decide, and reading back a decision someone else logged first); its [`CallOutcome`] holds
//!   the caller's results and the step-4 work.
//! - [`FinishMachine`]: step 4 for decided transfers (the cluster's finisher thread).
//! - [`Resolver`]: given each shard's unresolved legs at a time `now` (a [`Duration`] since any
//!   fixed origin), yields the [`Recovery`] work due; a [`RecoveryMachine`] drives one.
//! - [`missing_bridges`]: the bridge accounts a call needs that a driver has not created yet.
//!
//! ```
//! use ledger_core::{CreateTransferResult as R, Transfer};
//! use ledger_shard::Router;
//! use ledger_shard::crossshard_protocol::{Action, CallMachine, Cross, Machine, Phase, Reply};
//!
//! let router = Router::new(2);
//! // Account 1 lives on shard 1, account 2 on shard 0.
//! let cross = Cross::new(router, Transfer::new(7, 1, 2, 100, 1, 1));
//! let (mut call, action) = CallMachine::new(router, vec![cross]);
//! let Action::Submit { phase: Phase::Prepare, per_shard } = action else { panic!() };
//! assert_eq!(per_shard[1].len(), 1);
//! // Each answer is shaped like its batch: shard 1 logged the prepare, then the vote, ...
//! let ok = |shard: usize| {
//!     let mut answers = vec![Vec::new(); 2];
//!     answers[shard].push(R::Ok);
//!     Reply::Submitted(answers)
//! };
//! let Action::Submit { phase: Phase::Vote, .. } = call.step(ok(1))? else { panic!() };
//! let Action::Submit { phase: Phase::Decide, .. } = call.step(ok(0))? else { panic!() };
//! let Action::Done(outcome) = call.step(ok(1))? else { panic!() };
//! assert_eq!(outcome.results, [R::Ok]);
//! assert_eq!(outcome.finishes.len(), 1);
//! # Ok::<(), ledger_shard::ShardError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::time::Duration;

use ledger_core::{Account, CreateTransferResult as R, SYSTEM_ID_MIN, Transfer, TransferFlags};

use super::IdHasher;
use super::{
    APPLIED_ID_MIN, CHAIN_RECORD_DONE, CHAIN_RECORD_PENDING_CODE, acknowledgement, applied_event,
    applied_id, chain_abort, chain_bridge_id, chain_commit, chain_legs, chain_record,
    decision_deadline, expiry, is_chain_bridge, is_chain_record, is_expiring_decision,
    is_users_post_of_leg, names_one_shard,
};
use super::{
    BRIDGE_CODE, LEG_ID_MIN, RESOLVER_INTERVAL, RESOLVER_VOTE_AGE, bridge_id, bridge_ledger,
    bridge_peer, commit_event, coordinator_leg, decision_event, fence, is_existing,
    is_exists_with_different, is_pending_bridge, is_reserved, leg_id, leg_timeout, logged_decision,
    participant_leg, pending_bridge_id, protocol, resolution, resolution_id, vote_decision,
};
pub use super::{Cross, Decision};
use crate::error::Result;
use crate::router::Route;
use crate::router::Router;

/// The protocol step a submission carries (see `docs/crossshard.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Step 1: the coordinators' pending legs.
    Prepare,
    /// Step 2: the participants' pending legs (their votes).
    Vote,
    /// Step 3: the coordinators' decisions (post or void of their legs).
    Decide,
    /// Step 4: the participants apply the decisions (post, or fence and void); for a user's
    /// post or void of a cross-shard pending transfer, the participant applies it (`x(t)`).
    Finish,
    /// The coordinators acknowledge that the participants applied users' posts, or that a
    /// chain spanning shards ended everywhere (its records); neither stores anything.
    Acknowledge,
    /// A chain's coordinator logs the chain's records (`x(t)` of each event), before any leg.
    Record,
}

/// What a machine asks its driver to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<T> {
    /// Submit `per_shard[s]` to shard `s` as one `create_transfers` (nothing to a shard whose
    /// batch is empty), then answer [`Reply::Submitted`] with one result per transfer, in order.
    Submit {
        /// The protocol step these transfers are.
        phase: Phase,
        /// The transfers for each shard, indexed by shard.
        per_shard: Vec<Vec<Transfer>>,
    },
    /// Look up the transfers `per_shard[s]` on shard `s` (a linearizable read), then answer
    /// [`Reply::Found`] with the transfers found on each shard, in any order.
    Lookup {
        /// The ids to look up on each shard, indexed by shard.
        per_shard: Vec<Vec<u128>>,
    },
    /// The machine is done; nothing more to do.
    Done(T),
}

/// The driver's answer to an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The results of an [`Action::Submit`], indexed by shard like its batches.
    Submitted(Vec<Vec<R>>),
    /// The transfers an [`Action::Lookup`] found, indexed by shard.
    Found(Vec<Vec<Transfer>>),
}

/// A protocol machine: takes the answer to its last [`Action`] and yields the next.
pub trait Machine {
    /// What the machine ends with ([`Action::Done`]).
    type Outcome;

    /// Takes the answer to the last action and yields the next.
    ///
    /// # Errors
    ///
    /// [`crate::ShardError::InvalidRequest`] when an answer breaks the protocol: a wrong shape
    /// (not one result per event, a lookup's answer to a submission), a decision rejected for
    /// a reason other than an earlier decision or not found when read back, a commit's post
    /// refused at the participant; or when the machine is done already.
    fn step(&mut self, reply: Reply) -> Result<Action<Self::Outcome>>;
}

impl Cross {
    /// The cross-shard transfer `transfer`, its shards taken from `router`.
    pub fn new(router: Router, transfer: Transfer) -> Self {
        Self {
            transfer,
            debit_shard: router.shard_of(transfer.debit_account_id),
            credit_shard: router.shard_of(transfer.credit_account_id),
        }
    }
}

/// The bridge accounts `crosses` need that `known` does not hold, indexed by shard: create them
/// (`Ok` or `Exists`) before driving a [`CallMachine`] over `crosses`.
pub fn missing_bridges<'a>(
    router: Router,
    crosses: impl IntoIterator<Item = &'a Cross>,
    known: impl Fn(u128) -> bool,
) -> Vec<Vec<Account>> {
    let mut missing: Vec<Vec<Account>> = vec![Vec::new(); router.shard_count()];
    let mut wanted = HashSet::new();
    // A cross's bridges depend only on its ledger, its two shards and whether it is pending: a
    // call of thousands of transfers has few such kinds, and each is looked at once (the ids
    // of a kind seen before were all wanted or known then, so the answer is the same).
    let mut kinds = super::IdSet::default();
    for cross in crosses {
        let (ledger, d, c) = (cross.transfer.ledger, cross.debit_shard, cross.credit_shard);
        let pending = cross.transfer.flags.pending();
        // Shards are below SHARD_COUNT_MAX (16 bits), so the fields do not overlap.
        let kind = (u128::from(ledger) << 64) | ((d as u128) << 33) | ((c as u128) << 1);
        if !kinds.insert(kind | u128::from(pending)) {
            continue;
        }
        let mut ids = vec![
            (d, bridge_id(router, ledger, d, c)),
            (c, bridge_id(router, ledger, c, d)),
        ];
        if pending {
            // The pending bridges, and each shard's marker account.
            for (local, peer) in [(d, c), (c, d), (d, d), (c, c)] {
                ids.push((local, pending_bridge_id(router, ledger, local, peer)));
            }
        }
        for (local, id) in ids {
            if !known(id) && wanted.insert(id) {
                missing[local].push(Account::new(id, ledger, BRIDGE_CODE));
            }
        }
    }
    missing
}

/// The bridge accounts `chains` need that `known` does not hold, indexed by shard: each cross-
/// shard event's chain bridges, and on each coordinator its chain bridge and marker account.
pub fn missing_chain_bridges(
    router: Router,
    chains: &[Vec<Transfer>],
    known: impl Fn(u128) -> bool,
) -> Vec<Vec<Account>> {
    let mut missing: Vec<Vec<Account>> = vec![Vec::new(); router.shard_count()];
    let mut wanted = HashSet::new();
    for events in chains {
        let shape = ChainShape::new(router, events);
        let (k, head_ledger) = (shape.coordinator, shape.ledger);
        let mut ids = vec![
            (k, head_ledger, chain_bridge_id(router, head_ledger, k, k)),
            (k, head_ledger, pending_bridge_id(router, head_ledger, k, k)),
        ];
        for (event, member) in events.iter().zip(&shape.members) {
            let (d, c, ledger) = (member.debit_shard, member.credit_shard, event.ledger);
            if d != c {
                ids.push((d, ledger, chain_bridge_id(router, ledger, d, c)));
                ids.push((c, ledger, chain_bridge_id(router, ledger, c, d)));
            }
            if member.pending {
                // The commit markers, and a user's post's acknowledgement, need on each shard
                // the shard's chain bridge and marker account.
                for shard in [d, c] {
                    ids.push((shard, ledger, chain_bridge_id(router, ledger, shard, shard)));
                    ids.push((
                        shard,
                        ledger,
                        pending_bridge_id(router, ledger, shard, shard),
                    ));
                }
            }
        }
        for (local, ledger, id) in ids {
            if !known(id) && wanted.insert(id) {
                missing[local].push(Account::new(id, ledger, BRIDGE_CODE));
            }
        }
    }
    missing
}

// ---- batching helpers --------------------------------------------------------------------

/// A map keyed by ids, hashed by [`IdHasher`] (one multiply, where the default `SipHash` would
/// cost more than the work around it; ids need spread, not secrecy).
type IdKeyed<V> = HashMap<u128, V, BuildHasherDefault<IdHasher>>;

/// `event(item)` for every item, batched by `shard_of(item)`; with each batch, the positions in
/// `items` of its events (to put the answers back in order). Every batch is sized exactly up
/// front (a first pass counts them): batches of thousands of events never grow by copying.
fn scatter<T>(
    shard_count: usize,
    items: &[T],
    shard_of: impl Fn(&T) -> usize,
    event: impl Fn(&T) -> Transfer,
) -> (Vec<Vec<Transfer>>, Vec<Vec<usize>>) {
    let mut counts = vec![0_usize; shard_count];
    for item in items {
        counts[shard_of(item)] += 1;
    }
    let (mut per_shard, mut positions) = (batches(&counts), batches(&counts));
    for (index, item) in items.iter().enumerate() {
        let shard = shard_of(item);
        per_shard[shard].push(event(item));
        positions[shard].push(index);
    }
    (per_shard, positions)
}

/// Empty per-shard batches, each with room for exactly `counts[shard]` items.
fn batches<T>(counts: &[usize]) -> Vec<Vec<T>> {
    counts
        .iter()
        .map(|&count| Vec::with_capacity(count))
        .collect()
}

/// The answers to a [`scatter`]ed submission, back in the order of its items.
fn gather(positions: &[Vec<usize>], reply: Reply, count: usize) -> Result<Vec<R>> {
    let Reply::Submitted(answers) = reply else {
        return Err(protocol("a lookup's answer to a submission"));
    };
    if answers.len() != positions.len() {
        return Err(protocol("one answer per shard"));
    }
    let mut results = vec![R::Ok; count];
    for (positions, answers) in positions.iter().zip(answers) {
        if positions.len() != answers.len() {
            return Err(protocol("one result per event"));
        }
        for (&index, result) in positions.iter().zip(answers) {
            results[index] = result;
        }
    }
    Ok(results)
}

fn found(reply: Reply, shard_count: usize) -> Result<Vec<HashMap<u128, Transfer>>> {
    let Reply::Found(found) = reply else {
        return Err(protocol("a submission's answer to a lookup"));
    };
    if found.len() != shard_count {
        return Err(protocol("one answer per shard"));
    }
    Ok(found
        .into_iter()
        .map(|transfers| {
            transfers
                .into_iter()
                .map(|transfer| (transfer.id, transfer))
                .collect()
        })
        .collect())
}

// ---- step 3, shared by callers and the resolver ------------------------------------------

/// Logging proposed decisions at the coordinators; a decision logged before (by another driver
/// or the resolver) wins and is read back.
#[derive(Debug)]
struct Decide {
    /// Each cross with its decision: proposed, then as logged. Step 4's work as it stands
    /// (a caller hands it on whole, without copying).
    work: Vec<(Cross, Decision)>,
    positions: Vec<Vec<usize>>,
    /// Per coordinator shard, the crosses whose decision was logged by someone else.
    unknown: Vec<Vec<usize>>,
}

impl Decide {
    fn start(router: Router, work: Vec<(Cross, Decision)>) -> (Self, Phase, Vec<Vec<Transfer>>) {
        let (per_shard, positions) = scatter(
            router.shard_count(),
            &work,
            |(cross, _)| cross.debit_shard,
            |(cross, decision)| decision_event(router, cross, *decision),
        );
        let decide = Self {
            work,
            positions,
            unknown: Vec::new(),
        };
        (decide, Phase::Decide, per_shard)
    }

    /// The logging's answers; `Some(ids)` to look up when a decision was logged before.
    fn on_submitted(&mut self, reply: Reply) -> Result<Option<Vec<Vec<u128>>>> {
        let answers = gather(&self.positions, reply, self.work.len())?;
        let mut unknown: Vec<Vec<usize>> = vec![Vec::new(); self.positions.len()];
        for (index, &answer) in answers.iter().enumerate() {
            if answer.is_ok() || answer.is_exists() {
                continue;
            }
            if !is_exists_with_different(answer) {
                return Err(protocol(&format!(
                    "decision for transfer {}: {answer:?}",
                    self.work[index].0.transfer.id
                )));
            }
            unknown[self.work[index].0.debit_shard].push(index);
        }
        if unknown.iter().all(Vec::is_empty) {
            return Ok(None);
        }
        let ids = unknown
            .iter()
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|&index| resolution_id(self.work[index].0.transfer.id))
                    .collect()
            })
            .collect();
        self.unknown = unknown;
        Ok(Some(ids))
    }

    /// The decisions logged before, read back.
    fn on_found(&mut self, reply: Reply) -> Result<()> {
        let found = found(reply, self.positions.len())?;
        for (indexes, found) in self.unknown.iter().zip(found) {
            for &index in indexes {
                let (cross, decision) = &mut self.work[index];
                let id = resolution_id(cross.transfer.id);
                let logged = found
                    .get(&id)
                    .ok_or_else(|| protocol("a decision answered Exists… but is not found"))?;
                *decision = logged_decision(logged);
            }
        }
        Ok(())
    }
}

// ---- a caller's transfers: steps 1 to 3 ------------------------------------------------

/// What a [`CallMachine`] ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The caller's result for each transfer, in the order given.
    pub results: Vec<R>,
    /// Step 4: the durable decisions the participants have yet to apply (a [`FinishMachine`];
    /// should it never run, the [`Resolver`] finishes them).
    pub finishes: Vec<(Cross, Decision)>,
}

#[derive(Debug)]
enum CallStage {
    Preparing(Vec<Vec<usize>>),
    /// Reading back the coordinator legs of balancing transfers, whose amount the ledger
    /// clamped (the positions in `work`, per coordinator shard): the vote carries it.
    ReadingAmounts(Vec<Vec<usize>>),
    Voting(Vec<Vec<usize>>),
    /// Reading back the participant legs of pending transfers whose vote found a leg with
    /// another timeout (the positions in `work`, per participant shard).
    ReadingTimeouts(Vec<Vec<usize>>),
    Deciding(Decide),
    ReadingDecisions(Decide),
    Done,
}

/// Steps 1–3 of one call's prechecked cross-shard transfers (see the module's example).
///
/// The crosses are held with their decisions from the start, in the shape step 4 takes: the
/// ones that leave after step 1 are dropped in place and the rest handed on whole, so a call
/// of thousands of transfers copies them once (into the machine).
#[derive(Debug)]
pub struct CallMachine {
    router: Router,
    /// The crosses still in the protocol, in order, each with its decision (`Commit` until
    /// step 2 proposes one): every cross until step 1 answers, then the live ones.
    work: Vec<(Cross, Decision)>,
    /// How many crosses the call has.
    count: usize,
    stage: CallStage,
    /// Step 1's answer for each cross, a plain transfer's coordinator leg's `ExistsWith…`
    /// already read as the caller's (see [`CallMachine::on_prepared`]).
    prepared: Vec<R>,
    /// The positions among all crosses of those whose prepare held (`Ok` or `Exists`): of
    /// `work` after step 1.
    live: Vec<usize>,
    /// Step 2's answer for each live cross.
    votes: Vec<R>,
    /// The coordinator shard of the first live cross.
    first_live_coordinator: Option<usize>,
}

impl CallMachine {
    /// The machine for `crosses` (prechecked, their bridges created), with its first action:
    /// the prepares.
    pub fn new(
        router: Router,
        crosses: impl IntoIterator<Item = Cross>,
    ) -> (Self, Action<CallOutcome>) {
        let work: Vec<(Cross, Decision)> = crosses
            .into_iter()
            .map(|cross| (cross, Decision::Commit))
            .collect();
        let (per_shard, positions) = scatter(
            router.shard_count(),
            &work,
            |(cross, _)| cross.debit_shard,
            |(cross, _)| coordinator_leg(router, cross),
        );
        let machine = Self {
            router,
            count: work.len(),
            work,
            stage: CallStage::Preparing(positions),
            prepared: Vec::new(),
            live: Vec::new(),
            votes: Vec::new(),
            first_live_coordinator: None,
        };
        let action = Action::Submit {
            phase: Phase::Prepare,
            per_shard,
        };
        (machine, action)
    }

    /// The coordinator shard of the first transfer still in the protocol after step 1.
    pub fn first_live_coordinator(&self) -> Option<usize> {
        self.first_live_coordinator
    }

    /// The crosses, until step 1 answers (then the live ones).
    pub(crate) fn crosses(&self) -> impl Iterator<Item = &Cross> {
        self.work.iter().map(|(cross, _)| cross)
    }
}

impl Machine for CallMachine {
    type Outcome = CallOutcome;

    fn step(&mut self, reply: Reply) -> Result<Action<CallOutcome>> {
        match std::mem::replace(&mut self.stage, CallStage::Done) {
            CallStage::Preparing(positions) => {
                self.prepared = gather(&positions, reply, self.count)?;
                Ok(self.on_prepared())
            }
            CallStage::ReadingAmounts(indexes) => {
                // Each balancing cross votes with the amount its coordinator leg holds.
                let missing = "a prepare answered Ok or Exists but is not found";
                self.on_legs(&indexes, reply, missing, |transfer, leg| {
                    transfer.amount = leg.amount;
                })?;
                Ok(self.vote())
            }
            CallStage::Voting(positions) => {
                self.votes = gather(&positions, reply, self.live.len())?;
                let mut other_timeouts: Vec<Vec<usize>> = Vec::new();
                for (index, ((cross, decision), &vote)) in
                    self.work.iter_mut().zip(&self.votes).enumerate()
                {
                    *decision = vote_decision(vote);
                    if vote_answer(cross, vote) == R::ExistsWithDifferentTimeout {
                        other_timeouts.resize_with(self.router.shard_count(), Vec::new);
                        other_timeouts[cross.credit_shard].push(index);
                    }
                }
                if other_timeouts.is_empty() {
                    return Ok(self.decide());
                }
                // A retry with another timeout: the first attempt's leg holds the one to
                // commit with (as the resolver would).
                let per_shard = self.leg_ids(&other_timeouts);
                self.stage = CallStage::ReadingTimeouts(other_timeouts);
                Ok(Action::Lookup { per_shard })
            }
            CallStage::ReadingTimeouts(indexes) => {
                let missing = "a vote answered Exists… but is not found";
                self.on_legs(&indexes, reply, missing, |transfer, leg| {
                    transfer.timeout = leg_timeout(leg);
                })?;
                Ok(self.decide())
            }
            CallStage::Deciding(mut decide) => match decide.on_submitted(reply)? {
                Some(per_shard) => {
                    self.stage = CallStage::ReadingDecisions(decide);
                    Ok(Action::Lookup { per_shard })
                }
                None => Ok(Action::Done(self.outcome(decide.work))),
            },
            CallStage::ReadingDecisions(mut decide) => {
                decide.on_found(reply)?;
                Ok(Action::Done(self.outcome(decide.work)))
            }
            CallStage::Done => Err(protocol("a reply to a machine that is done")),
        }
    }
}

impl CallMachine {
    /// Step 3: logs the live crosses' decisions.
    fn decide(&mut self) -> Action<CallOutcome> {
        let work = std::mem::take(&mut self.work);
        let (decide, phase, per_shard) = Decide::start(self.router, work);
        self.stage = CallStage::Deciding(decide);
        Action::Submit { phase, per_shard }
    }

    /// After step 1: the votes of the live crosses, or done if none is.
    fn on_prepared(&mut self) -> Action<CallOutcome> {
        for (result, (cross, _)) in self.prepared.iter_mut().zip(&self.work) {
            // A plain transfer's coordinator leg holds B in user_data_128.
            if *result == R::ExistsWithDifferentUserData128 && !cross.transfer.flags.pending() {
                *result = R::ExistsWithDifferentCreditAccountId;
            }
        }
        let held = |result: &R| result.is_ok() || result.is_exists();
        let mut live = Vec::with_capacity(self.count);
        live.extend((0..self.count).filter(|&index| held(&self.prepared[index])));
        self.live = live;
        if self.live.len() < self.count {
            // Drop the others in place (`retain` visits every element once, in order).
            let mut prepared = self.prepared.iter();
            self.work.retain(|_| prepared.next().is_some_and(held));
        }
        self.first_live_coordinator = self.work.first().map(|(cross, _)| cross.debit_shard);
        if self.work.is_empty() {
            return Action::Done(self.outcome(Vec::new()));
        }
        // A balancing transfer's coordinator leg holds the amount the ledger clamped it to:
        // read it back before the vote (one more round, for balancing transfers only).
        let mut balancing: Vec<Vec<usize>> = Vec::new();
        for (index, (cross, _)) in self.work.iter().enumerate() {
            if cross.transfer.flags.balancing_debit() {
                balancing.resize_with(self.router.shard_count(), Vec::new);
                balancing[cross.debit_shard].push(index);
            }
        }
        if !balancing.is_empty() {
            let per_shard = self.leg_ids(&balancing);
            self.stage = CallStage::ReadingAmounts(balancing);
            return Action::Lookup { per_shard };
        }
        self.vote()
    }

    /// The ids `leg(t)` of the crosses at `indexes` (positions in `work`, per shard), to read.
    fn leg_ids(&self, indexes: &[Vec<usize>]) -> Vec<Vec<u128>> {
        indexes
            .iter()
            .map(|indexes| {
                indexes
                    .iter()
                    .map(|&index| leg_id(self.work[index].0.transfer.id))
                    .collect()
            })
            .collect()
    }

    /// Applies each leg read back for the crosses at `indexes` ([`CallMachine::leg_ids`]) to
    /// its cross's transfer; a leg not found is a protocol error (`missing`).
    fn on_legs(
        &mut self,
        indexes: &[Vec<usize>],
        reply: Reply,
        missing: &str,
        apply: impl Fn(&mut Transfer, &Transfer),
    ) -> Result<()> {
        let found = found(reply, self.router.shard_count())?;
        for (indexes, found) in indexes.iter().zip(found) {
            for &index in indexes {
                let transfer = &mut self.work[index].0.transfer;
                let leg = found
                    .get(&leg_id(transfer.id))
                    .ok_or_else(|| protocol(missing))?;
                apply(transfer, leg);
            }
        }
        Ok(())
    }

    /// Step 2: the votes of the live crosses.
    fn vote(&mut self) -> Action<CallOutcome> {
        let router = self.router;
        let (per_shard, positions) = scatter(
            router.shard_count(),
            &self.work,
            |(cross, _)| cross.credit_shard,
            |(cross, _)| participant_leg(router, cross),
        );
        self.stage = CallStage::Voting(positions);
        Action::Submit {
            phase: Phase::Vote,
            per_shard,
        }
    }

    /// The outcome given the live crosses as decided: the callers' results (from step 1's
    /// answers, which it takes: the machine is done), and the decided work handed on whole.
    fn outcome(&mut self, decided: Vec<(Cross, Decision)>) -> CallOutcome {
        let mut results = std::mem::take(&mut self.prepared);
        for ((&index, &vote), (cross, decision)) in self.live.iter().zip(&self.votes).zip(&decided)
        {
            let first_time = results[index].is_ok();
            results[index] = match *decision {
                Decision::Commit if is_exists_with_different(vote) => vote_answer(cross, vote),
                Decision::Commit if first_time => R::Ok,
                Decision::Commit => R::Exists,
                Decision::Abort(reason) if first_time => reason,
                Decision::Abort(reason) if reason.is_transient() => R::IdAlreadyFailed,
                Decision::Abort(reason) => reason,
            };
        }
        CallOutcome {
            results,
            finishes: decided,
        }
    }
}

/// The caller's answer for a participant's `ExistsWith…` vote: a user's pending transfer's
/// participant leg holds its timeout in `user_data_32` (see `participant_leg`), and every
/// field before it in ledger-core's order but the credit account is the coordinator leg's
/// too, already checked, so a leg differing there was logged with another timeout.
fn vote_answer(cross: &Cross, vote: R) -> R {
    if cross.transfer.flags.pending() && vote == R::ExistsWithDifferentUserData32 {
        R::ExistsWithDifferentTimeout
    } else {
        vote
    }
}

// ---- step 4 --------------------------------------------------------------------------------

/// Step 4 for decided transfers: post a committed leg at its participant; fence and void an
/// aborted one (the fence burns the leg id if the leg does not exist).
#[derive(Debug)]
pub struct FinishMachine {
    /// Per participant shard, the decision behind each submitted event.
    kinds: Vec<Vec<Decision>>,
    done: bool,
}

impl FinishMachine {
    /// The machine for `work`, with its one action: the finishes.
    pub fn new(router: Router, work: &[(Cross, Decision)]) -> (Self, Action<()>) {
        Self::batched(router, std::slice::from_ref(&work))
    }

    /// The machine for the work of several `calls` at once (in order), with its one action.
    /// The events go straight from the batches into exactly sized per-shard submissions.
    pub(crate) fn batched<W: AsRef<[(Cross, Decision)]>>(
        router: Router,
        calls: &[W],
    ) -> (Self, Action<()>) {
        let work = || calls.iter().flat_map(AsRef::as_ref);
        // An abort submits two events (the fence, then the void).
        let mut counts = vec![0_usize; router.shard_count()];
        for (cross, decision) in work() {
            counts[cross.credit_shard] += match decision {
                Decision::Commit => 1,
                Decision::Abort(_) => 2,
            };
        }
        let (mut per_shard, mut kinds) = (batches(&counts), batches(&counts));
        for &(cross, decision) in work() {
            let shard = cross.credit_shard;
            let t = cross.transfer.id;
            if let Decision::Abort(_) = decision {
                per_shard[shard].push(fence(router, t, shard));
                kinds[shard].push(decision);
            }
            per_shard[shard].push(match decision {
                Decision::Commit => commit_event(router, &cross),
                Decision::Abort(_) => resolution(t, decision),
            });
            kinds[shard].push(decision);
        }
        let action = Action::Submit {
            phase: Phase::Finish,
            per_shard,
        };
        (Self { kinds, done: false }, action)
    }
}

impl Machine for FinishMachine {
    type Outcome = ();

    fn step(&mut self, reply: Reply) -> Result<Action<()>> {
        if std::mem::replace(&mut self.done, true) {
            return Err(protocol("a reply to a machine that is done"));
        }
        let Reply::Submitted(answers) = reply else {
            return Err(protocol("a lookup's answer to a submission"));
        };
        if answers.len() != self.kinds.len() {
            return Err(protocol("one answer per shard"));
        }
        for (kinds, answers) in self.kinds.iter().zip(answers) {
            if kinds.len() != answers.len() {
                return Err(protocol("one result per event"));
            }
            for (&decision, answer) in kinds.iter().zip(answers) {
                // A commit's post must land; an abort's fence and void may find the leg
                // missing or burnt, which is the point.
                if decision == Decision::Commit && !(answer.is_ok() || answer.is_exists()) {
                    return Err(protocol(&format!("participant post: {answer:?}")));
                }
            }
        }
        Ok(Action::Done(()))
    }
}

// ---- the resolver --------------------------------------------------------------------------

/// The resolver's timing. [`Default`] is the cluster's, with the default request timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverTiming {
    /// How often a pass runs.
    pub interval: Duration,
    /// A participant leg (a yes vote) unresolved this long is committed.
    pub vote_age: Duration,
    /// A coordinator leg unresolved this long (its caller has given up) commits if the
    /// participant voted yes and is aborted otherwise; the cluster uses its request timeout.
    pub coordinator_age: Duration,
}

impl ResolverTiming {
    /// The cluster's timing for a request timeout of `request_timeout`.
    pub fn with_request_timeout(request_timeout: Duration) -> Self {
        Self {
            interval: RESOLVER_INTERVAL,
            vote_age: RESOLVER_VOTE_AGE,
            coordinator_age: request_timeout,
        }
    }
}

impl Default for ResolverTiming {
    fn default() -> Self {
        Self::with_request_timeout(crate::config::REQUEST_TIMEOUT_DEFAULT)
    }
}

/// Recovery work between one coordinator and one participant shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The coordinator.
    pub debit_shard: usize,
    /// The participant.
    pub credit_shard: usize,
    /// The user transfer ids `t` to drive to their end, ascending and unique; `true` marks one
    /// whose participant leg (a yes vote) was seen.
    pub transfers: Vec<(u128, bool)>,
    /// Among `transfers`, the users' pending transfers (their legs go through pending bridges:
    /// a commit keeps them pending), with their ledger.
    pub pending_ledgers: BTreeMap<u128, u32>,
    /// Among the pending transfers whose participant leg was seen, the timeout (seconds, 0 for
    /// none) that leg carries: the commit decision carries it, so the transfer expires. (Of
    /// the others, the participant leg that the recovery looks up tells the timeout.)
    pub pending_timeouts: BTreeMap<u128, u32>,
    /// Users' posts and voids of cross-shard pending transfers that the coordinator logged
    /// and the participant has yet to apply (as the coordinator logged them).
    pub posts: Vec<Transfer>,
    /// Linked chains spanning shards whose coordinator is `debit_shard` (then equal to
    /// `credit_shard`) and whose caller gave up, as its records describe them.
    pub chains: Vec<ChainShape>,
    /// Users' pending transfers whose timeout passed in the coordinator's ledger time (their
    /// commit decisions, which carry the timeout, as stored): the coordinator voids them, then
    /// as for `posts`.
    pub expiries: Vec<Transfer>,
    /// Whether `debit_shard` (then equal to `credit_shard`) is to log a *tick*, an event that
    /// fails and stores nothing, so that its ledger time catches up with its leader's clock:
    /// it holds an expiring decision whose deadline its ledger time has not reached, though
    /// the resolver's clock says it has (an idle shard's ledger time stands still), or whose
    /// ledger time the resolver has not yet seen move (it has just started).
    pub tick: bool,
}

/// One shard's answer to the resolver's read (`Read::Unresolved`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unresolved {
    /// The shard's ledger time: the timestamp of the last event it applied (nanoseconds).
    pub ledger_now: u64,
    /// Its unresolved index entries (legs, users' posts, chain records, expiring decisions).
    pub entries: Vec<Transfer>,
}

/// Chain records by coordinator and head: the records and their youngest age.
type ChainRecords = BTreeMap<(usize, u128), (Vec<Transfer>, Duration)>;

/// What one pass found due for a pair of shards.
#[derive(Debug, Default)]
struct Due {
    transfers: Vec<(u128, bool)>,
    pending_ledgers: BTreeMap<u128, u32>,
    pending_timeouts: BTreeMap<u128, u32>,
    posts: Vec<Transfer>,
    chains: Vec<ChainShape>,
    expiries: Vec<Transfer>,
    tick: bool,
}

/// The resolver's memory between passes: when each unresolved leg was first seen, each
/// shard's ledger time and since when it has read it unchanged, and the pairs of shards
/// whose recovery is still running.
///
/// Passes do not wait for the recoveries of earlier ones: a recovery that touches a shard
/// without a majority may run for several intervals, and the legs of every other pair must
/// still be seen (and age) on time. A pair whose recovery runs is left out of a pass's work
/// until the driver reports it ended ([`Resolver::recovery_started`],
/// [`Resolver::recovery_ended`]), so no two recoveries of one pair run at once.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    timing: ResolverTiming,
    /// Per shard, when each unresolved index entry there was first seen, by id (a pass looks
    /// up every entry of every shard: tens of thousands under load).
    first_seen: Vec<IdKeyed<Duration>>,
    /// Per shard: the ledger time last read, and when it was first read.
    clocks: Vec<Option<(u64, Duration)>>,
    running: BTreeSet<(usize, usize)>,
}

impl Resolver {
    /// Files one index entry seen `age` ago on `shard` under what is due: a chain record, an
    /// expiring decision, a user's post to apply, or a leg of a plain or pending transfer
    /// (the legs of chains are left to their records).
    fn pass_entry(
        &self,
        router: Router,
        (shard, leg, age): (usize, &Transfer, Duration),
        due: &mut BTreeMap<(usize, usize), Due>,
        records: &mut ChainRecords,
    ) {
        if is_chain_record(leg) {
            let entry = records
                .entry((shard, leg.user_data_128))
                .or_insert((Vec::new(), age));
            entry.0.push(*leg);
            entry.1 = entry.1.min(age);
            return;
        }
        if is_users_post_of_leg(leg) {
            // A user's post of a coordinator leg, for the participant to apply.
            if age >= self.timing.vote_age {
                let peer = bridge_peer(router, leg.credit_account_id);
                due.entry((shard, peer)).or_default().posts.push(*leg);
            }
            return;
        }
        let t = leg.id - LEG_ID_MIN;
        let chain_leg = (!is_reserved(leg.credit_account_id) && !is_reserved(leg.debit_account_id))
            || is_chain_bridge(router, leg.credit_account_id)
            || is_chain_bridge(router, leg.debit_account_id);
        if chain_leg {
            // A leg of a chain spanning shards: resolved from its chain's records.
            return;
        }
        let (bridge, pair, voted, age_due) = if is_reserved(leg.credit_account_id) {
            let bridge = leg.credit_account_id;
            let pair = (shard, bridge_peer(router, bridge));
            (bridge, pair, false, self.timing.coordinator_age)
        } else {
            let bridge = leg.debit_account_id;
            let pair = (bridge_peer(router, bridge), shard);
            (bridge, pair, true, self.timing.vote_age)
        };
        if age >= age_due {
            let due = due.entry(pair).or_default();
            due.transfers.push((t, voted));
            if is_pending_bridge(router, bridge) {
                due.pending_ledgers.insert(t, bridge_ledger(router, bridge));
                if voted {
                    due.pending_timeouts.insert(t, leg_timeout(leg));
                }
            }
        }
    }

    /// The chains whose records are old enough (their caller gave up), due at their
    /// coordinator.
    fn pass_chains(&self, records: ChainRecords, due: &mut BTreeMap<(usize, usize), Due>) {
        for ((shard, _), (mut records, age)) in records {
            if age >= self.timing.coordinator_age {
                records.sort_unstable_by_key(|record| record.user_data_32);
                // The records live on the coordinator (the first one seen may not be the
                // head's: a changed retry's records, see `ChainMachine::refusals`).
                let chain = ChainShape {
                    coordinator: shard,
                    ..chain_from_records(&records)
                };
                due.entry((shard, shard)).or_default().chains.push(chain);
            }
        }
    }

    /// A resolver that has seen nothing yet.
    pub fn new(timing: ResolverTiming) -> Self {
        Self {
            timing,
            first_seen: Vec::new(),
            clocks: Vec::new(),
            running: BTreeSet::new(),
        }
    }

    /// The driver started the recovery of the pair (`debit_shard`, `credit_shard`): later
    /// passes leave the pair out until [`Resolver::recovery_ended`].
    pub fn recovery_started(&mut self, debit_shard: usize, credit_shard: usize) {
        self.running.insert((debit_shard, credit_shard));
    }

    /// The recovery of the pair (`debit_shard`, `credit_shard`) ended (done, failed or out of
    /// time): the next pass yields the pair's work again if some is still due.
    pub fn recovery_ended(&mut self, debit_shard: usize, credit_shard: usize) {
        self.running.remove(&(debit_shard, credit_shard));
    }

    /// How many recoveries run: started, not yet ended.
    pub fn recoveries_running(&self) -> usize {
        self.running.len()
    }

    /// Its timing.
    pub fn timing(&self) -> ResolverTiming {
        self.timing
    }

    /// One shard's expiring decisions: those due by its ledger time are filed for their
    /// coordinator (this shard) to void; if none is due but one will be, a tick is filed
    /// when the ledger time may be stale past that one's deadline: the shard's ledger time,
    /// read unchanged since the resolver's time `since`, plus the time since then reaches the
    /// deadline, or the resolver has not read this shard before (after a restart, an idle
    /// shard's ledger time may be far behind its leader's clock).
    fn pass_expiring(
        &mut self,
        router: Router,
        (shard, read, now): (usize, &Unresolved, Duration),
        due: &mut BTreeMap<(usize, usize), Due>,
    ) {
        let ledger_now = read.ledger_now;
        let mut next_deadline: Option<u64> = None;
        let mut voided = false;
        for decision in read
            .entries
            .iter()
            .filter(|entry| is_expiring_decision(entry))
        {
            let deadline = decision_deadline(decision);
            if deadline <= ledger_now {
                // Expired in the shard's ledger time: its void applies after the deadline.
                let peer = bridge_peer(router, decision.debit_account_id);
                due.entry((shard, peer))
                    .or_default()
                    .expiries
                    .push(*decision);
                voided = true;
            } else {
                next_deadline = Some(next_deadline.map_or(deadline, |next| next.min(deadline)));
            }
        }
        let previous = self.clocks[shard];
        let since = match previous {
            Some((read_before, since)) if read_before == ledger_now => since,
            _ => now,
        };
        self.clocks[shard] = Some((ledger_now, since));
        let Some(next_deadline) = next_deadline.filter(|_| !voided) else {
            // Nothing waits, or a void is logged anyway (it moves the ledger time).
            return;
        };
        let stale = u64::try_from(now.saturating_sub(since).as_nanos()).unwrap_or(u64::MAX);
        if previous.is_none() || ledger_now.saturating_add(stale) >= next_deadline {
            due.entry((shard, shard)).or_default().tick = true;
        }
    }

    /// One pass at time `now` (since any fixed origin, not decreasing between passes):
    /// `reads[s]` holds what shard `s` reported (`Read::Unresolved`: its unresolved entries
    /// and its ledger time), or `None` when it could not be read (what was known of it is
    /// kept). Yields the work due, one [`Recovery`] per coordinator and participant pair,
    /// ordered by the pair, except the pairs whose recovery still runs (their legs keep
    /// ageing); drive each with a [`RecoveryMachine`] (a failed one is retried by a later
    /// pass). An expiring decision is due once the shard's ledger time reached its deadline
    /// (the decision's timestamp plus its timeout): measured in ledger time, not from when
    /// this resolver first saw it, so a resolver restarted does not restart the timeout.
    pub fn pass(
        &mut self,
        router: Router,
        now: Duration,
        reads: &[Option<Unresolved>],
    ) -> Vec<Recovery> {
        let mut due: BTreeMap<(usize, usize), Due> = BTreeMap::new();
        let mut records: ChainRecords = BTreeMap::new();
        self.first_seen.resize_with(reads.len(), IdKeyed::default);
        self.clocks.resize(reads.len(), None);
        for (shard, read) in reads.iter().enumerate() {
            // A shard that could not be read keeps what was known of it.
            let Some(read) = read else { continue };
            self.pass_expiring(router, (shard, read, now), &mut due);
            let mut still = IdKeyed::with_capacity_and_hasher(
                read.entries.len(),
                BuildHasherDefault::default(),
            );
            for leg in read
                .entries
                .iter()
                .filter(|entry| !is_expiring_decision(entry))
            {
                let seen = *self.first_seen[shard].get(&leg.id).unwrap_or(&now);
                still.insert(leg.id, seen);
                let age = now.saturating_sub(seen);
                self.pass_entry(router, (shard, leg, age), &mut due, &mut records);
            }
            self.first_seen[shard] = still;
        }
        self.pass_chains(records, &mut due);
        due.into_iter()
            .filter(|(pair, _)| !self.running.contains(pair))
            .map(|((debit_shard, credit_shard), mut due)| {
                due.transfers.sort_unstable();
                due.transfers.dedup_by_key(|(t, _)| *t);
                Recovery {
                    debit_shard,
                    credit_shard,
                    transfers: due.transfers,
                    pending_ledgers: due.pending_ledgers,
                    pending_timeouts: due.pending_timeouts,
                    posts: due.posts,
                    chains: due.chains,
                    expiries: due.expiries,
                    tick: due.tick,
                }
            })
            .collect()
    }
}

#[derive(Debug)]
enum RecoveryStage {
    ReadingVotes,
    Deciding(Decide),
    ReadingDecisions(Decide),
    Finishing(FinishMachine),
    FinishingPosts(PostFinishMachine),
    EndingChains(ChainRecoveryMachine),
    /// Per coordinator, the expiries' positions.
    Expiring(Vec<Vec<usize>>),
    /// The tick submitted.
    Ticking,
    Done,
}

/// The tick: an event every ledger refuses (`IdMustNotBeZero`) without storing or burning
/// anything, logged only for the timestamp its entry gets: the shard's ledger time moves to its
/// leader's clock.
fn tick() -> Transfer {
    Transfer::default()
}

/// Where the answer to a tick on `shard` is.
fn ticking(shard_count: usize, shard: usize) -> Vec<Vec<usize>> {
    let mut positions = vec![Vec::new(); shard_count];
    positions[shard].push(0);
    positions
}

/// Drives one [`Recovery`] to its end: reads the participant's legs it has not seen, decides
/// (commit after a yes vote, presumed abort without one; a decision logged before wins), then
/// applies the decisions at the participant.
#[derive(Debug)]
pub struct RecoveryMachine {
    router: Router,
    recovery: Recovery,
    stage: RecoveryStage,
}

impl RecoveryMachine {
    /// The machine for `recovery`, with its first action.
    pub fn new(router: Router, recovery: Recovery) -> (Self, Action<()>) {
        let unknown: Vec<u128> = recovery
            .transfers
            .iter()
            .filter(|(_, voted)| !voted)
            .map(|(t, _)| leg_id(*t))
            .collect();
        let mut machine = Self {
            router,
            recovery,
            stage: RecoveryStage::ReadingVotes,
        };
        if machine.recovery.transfers.is_empty() {
            let action = machine.finish_posts();
            return (machine, action);
        }
        if unknown.is_empty() {
            let action = machine.decide(&HashMap::new());
            return (machine, action);
        }
        let mut per_shard = vec![Vec::new(); router.shard_count()];
        per_shard[machine.recovery.credit_shard] = unknown;
        (machine, Action::Lookup { per_shard })
    }
}

impl Machine for RecoveryMachine {
    type Outcome = ();

    fn step(&mut self, reply: Reply) -> Result<Action<()>> {
        match std::mem::replace(&mut self.stage, RecoveryStage::Done) {
            RecoveryStage::ReadingVotes => {
                let found = found(reply, self.router.shard_count())?;
                // Each vote found, with the timeout its leg carries (a pending transfer's).
                let voted: HashMap<u128, u32> = found[self.recovery.credit_shard]
                    .values()
                    .map(|leg| (leg.id - LEG_ID_MIN, leg_timeout(leg)))
                    .collect();
                Ok(self.decide(&voted))
            }
            RecoveryStage::Deciding(mut decide) => match decide.on_submitted(reply)? {
                Some(per_shard) => {
                    self.stage = RecoveryStage::ReadingDecisions(decide);
                    Ok(Action::Lookup { per_shard })
                }
                None => Ok(self.finish(&decide)),
            },
            RecoveryStage::ReadingDecisions(mut decide) => {
                decide.on_found(reply)?;
                Ok(self.finish(&decide))
            }
            RecoveryStage::Finishing(mut finish) => match finish.step(reply)? {
                Action::Done(()) => Ok(self.finish_posts()),
                action => {
                    self.stage = RecoveryStage::Finishing(finish);
                    Ok(action)
                }
            },
            RecoveryStage::FinishingPosts(mut finish) => match finish.step(reply)? {
                Action::Done(()) => Ok(self.end_chains()),
                action => {
                    self.stage = RecoveryStage::FinishingPosts(finish);
                    Ok(action)
                }
            },
            RecoveryStage::EndingChains(mut chains) => match chains.step(reply)? {
                Action::Done(()) => Ok(self.expire()),
                action => {
                    self.stage = RecoveryStage::EndingChains(chains);
                    Ok(action)
                }
            },
            RecoveryStage::Expiring(positions) => {
                let expiries = std::mem::take(&mut self.recovery.expiries);
                let answers = gather(&positions, reply, expiries.len())?;
                let mut logged = Vec::new();
                for (decision, answer) in expiries.iter().zip(answers) {
                    match answer {
                        _ if answer.is_ok() || answer.is_exists() => logged.push(expiry(decision)),
                        // Its user posted or voided it first.
                        R::PendingTransferAlreadyPosted | R::PendingTransferAlreadyVoided => {}
                        other => return Err(protocol(&format!("expiry: {other:?}"))),
                    }
                }
                if logged.is_empty() {
                    return Ok(Action::Done(()));
                }
                let (finish, action) = PostFinishMachine::new(self.router, logged);
                self.stage = RecoveryStage::FinishingPosts(finish);
                Ok(action)
            }
            RecoveryStage::Ticking => {
                let positions = ticking(self.router.shard_count(), self.recovery.debit_shard);
                match gather(&positions, reply, 1)?[..] {
                    [R::IdMustNotBeZero] => Ok(Action::Done(())),
                    ref other => Err(protocol(&format!("tick: {other:?}"))),
                }
            }
            RecoveryStage::Done => Err(protocol("a reply to a machine that is done")),
        }
    }
}

impl RecoveryMachine {
    /// Decides the transfers given the votes looked up (`t` and the timeout its participant
    /// leg carries): commit after a yes vote (seen or found), a pending transfer with the
    /// timeout from its participant leg; presumed abort otherwise.
    fn decide(&mut self, voted: &HashMap<u128, u32>) -> Action<()> {
        let (debit_shard, credit_shard) = (self.recovery.debit_shard, self.recovery.credit_shard);
        let work = self
            .recovery
            .transfers
            .iter()
            .map(|&(t, seen_vote)| {
                let pending = self.recovery.pending_ledgers.get(&t);
                // Only a pending transfer's leg carries a timeout (in a field a plain
                // transfer's leg gives the caller's user data).
                let timeout = voted
                    .get(&t)
                    .or_else(|| self.recovery.pending_timeouts.get(&t))
                    .filter(|_| pending.is_some());
                let cross = Cross {
                    transfer: Transfer {
                        id: t,
                        ledger: pending.copied().unwrap_or(0),
                        flags: if pending.is_some() {
                            TransferFlags::PENDING
                        } else {
                            TransferFlags::empty()
                        },
                        timeout: timeout.copied().unwrap_or(0),
                        ..Transfer::default()
                    },
                    debit_shard,
                    credit_shard,
                };
                let decision = if seen_vote || voted.contains_key(&t) {
                    Decision::Commit
                } else {
                    // Presumed abort: the caller gave up before the participant voted.
                    Decision::Abort(R::IdAlreadyFailed)
                };
                (cross, decision)
            })
            .collect();
        let (decide, phase, per_shard) = Decide::start(self.router, work);
        self.stage = RecoveryStage::Deciding(decide);
        Action::Submit { phase, per_shard }
    }

    fn finish(&mut self, decide: &Decide) -> Action<()> {
        let (finish, action) = FinishMachine::new(self.router, &decide.work);
        self.stage = RecoveryStage::Finishing(finish);
        action
    }

    /// After the transfers: the users' posts the participant has yet to apply, if any.
    fn finish_posts(&mut self) -> Action<()> {
        if self.recovery.posts.is_empty() {
            return self.end_chains();
        }
        let posts = std::mem::take(&mut self.recovery.posts);
        let (finish, action) = PostFinishMachine::new(self.router, posts);
        self.stage = RecoveryStage::FinishingPosts(finish);
        action
    }

    /// Last: the expired pending transfers, if any: the coordinators void their legs. Else the
    /// tick, if one is due.
    fn expire(&mut self) -> Action<()> {
        if self.recovery.expiries.is_empty() {
            if !self.recovery.tick {
                return Action::Done(());
            }
            let mut per_shard = vec![Vec::new(); self.router.shard_count()];
            per_shard[self.recovery.debit_shard].push(tick());
            self.stage = RecoveryStage::Ticking;
            // Like an acknowledgement, it stores nothing.
            return Action::Submit {
                phase: Phase::Acknowledge,
                per_shard,
            };
        }
        let (per_shard, positions) = scatter(
            self.router.shard_count(),
            &self.recovery.expiries,
            |decision| self.router.shard_of(decision.debit_account_id),
            expiry,
        );
        self.stage = RecoveryStage::Expiring(positions);
        Action::Submit {
            phase: Phase::Decide,
            per_shard,
        }
    }

    /// Then: the chains whose caller gave up, if any.
    fn end_chains(&mut self) -> Action<()> {
        if self.recovery.chains.is_empty() {
            return self.expire();
        }
        let chains = std::mem::take(&mut self.recovery.chains);
        let (machine, action) = ChainRecoveryMachine::new(self.router, chains);
        self.stage = RecoveryStage::EndingChains(machine);
        action
    }
}

// ---- users' posts and voids of cross-shard pending transfers ----------------------------

/// Where a user's post or void goes once its pending transfer is located
/// ([`LocateMachine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// To one shard, as this event: the caller's, or with a pending id chosen so that the
    /// shard answers the rejection one ledger would (`PendingTransferNotFound` for a
    /// cross-shard transfer not committed, `PendingTransferNotPending` for a plain one).
    Local {
        /// The shard.
        shard: usize,
        /// The event to submit there.
        event: Transfer,
    },
    /// Across shards: the pending transfer is a committed cross-shard pending transfer.
    Cross(CrossPost),
}

/// A user's post or void `P` (id `p`) of the cross-shard pending transfer `T` (id `t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossPost {
    /// What the coordinator logs: `P` itself resolving `leg(t)`, its credit account the
    /// coordinator's bridge (or the caller's, if it is not `B`, so the ledger says so).
    event: Transfer,
    /// The coordinator: the shard of `T`'s debit account.
    debit_shard: usize,
    /// The participant: the shard of `T`'s credit account.
    credit_shard: usize,
    /// Whether `T` was voided by its expiry when located (a post then answers
    /// `PendingTransferExpired`, not `PendingTransferAlreadyVoided`).
    expired: bool,
}

impl CrossPost {
    /// The shards of `T`'s debit and credit accounts.
    pub fn shards(&self) -> (usize, usize) {
        (self.debit_shard, self.credit_shard)
    }

    /// The event the coordinator logs.
    pub fn event(&self) -> Transfer {
        self.event
    }
}

/// Locates the pending transfers of users' posts and voids: one lookup of every shard for
/// `t`, `leg(t)` and `res(t)` of each; ends with one [`Located`] per post, in order.
#[derive(Debug)]
pub struct LocateMachine {
    router: Router,
    posts: Vec<Transfer>,
    done: bool,
}

impl LocateMachine {
    /// The machine for `posts` (events with a post or void flag), with its first action.
    pub fn new(router: Router, posts: Vec<Transfer>) -> (Self, Action<Vec<Located>>) {
        // A post naming two accounts of one shard asks that shard only.
        let mut per_shard: Vec<Vec<u128>> = vec![Vec::new(); router.shard_count()];
        for post in &posts {
            let t = post.pending_id;
            if t == 0 || t >= SYSTEM_ID_MIN || t == post.id {
                continue;
            }
            let shards = if names_one_shard(router, post) {
                let shard = router.shard_of(post.debit_account_id);
                shard..shard + 1
            } else {
                0..router.shard_count()
            };
            for shard in shards {
                per_shard[shard].extend([t, leg_id(t), resolution_id(t)]);
                if t < SYSTEM_ID_MIN - 1 {
                    // An expiry's void, on the coordinator.
                    per_shard[shard].push(applied_id(t));
                }
            }
        }
        for ids in &mut per_shard {
            ids.sort_unstable();
            ids.dedup();
        }
        let mut machine = Self {
            router,
            posts,
            done: false,
        };
        if per_shard.iter().all(Vec::is_empty) {
            // Nothing to look up: every post goes where it names.
            machine.done = true;
            let action = machine.located(&vec![HashMap::new(); router.shard_count()]);
            return (machine, action);
        }
        (machine, Action::Lookup { per_shard })
    }

    fn located(&self, per_shard: &[HashMap<u128, Transfer>]) -> Action<Vec<Located>> {
        Action::Done(
            self.posts
                .iter()
                .map(|post| locate_post(self.router, per_shard, post))
                .collect(),
        )
    }
}

impl Machine for LocateMachine {
    type Outcome = Vec<Located>;

    fn step(&mut self, reply: Reply) -> Result<Action<Vec<Located>>> {
        if std::mem::replace(&mut self.done, true) {
            return Err(protocol("a reply to a machine that is done"));
        }
        let found = found(reply, self.router.shard_count())?;
        Ok(self.located(&found))
    }
}

/// Where one post or void goes, given what every shard holds of its pending transfer.
fn locate_post(router: Router, per_shard: &[HashMap<u128, Transfer>], post: &Transfer) -> Located {
    let named_shard = match router.route(post) {
        Route::Shard(shard) => shard,
        Route::Cross { debit_shard, .. } => debit_shard,
        Route::Unknown => 0,
    };
    let t = post.pending_id;
    let local = |shard, pending_id| Located::Local {
        shard,
        event: Transfer {
            pending_id,
            ..*post
        },
    };
    // A post taking its pending transfer's id is the ledger's to refuse (the coordinator would
    // store it: its pending id there is `leg(t)`).
    if t == 0 || t >= SYSTEM_ID_MIN || t == post.id {
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
        // A same-shard event of a chain spanning shards: one leg between the caller's accounts.
        let chain_leg = per_shard.iter().position(|found| {
            found.get(&leg_id(t)).is_some_and(|leg| {
                !is_reserved(leg.debit_account_id) && !is_reserved(leg.credit_account_id)
            })
        });
        let Some(shard) = chain_leg else {
            return local(named_shard, t);
        };
        return match per_shard[shard].get(&resolution_id(t)) {
            // Committed plain: PendingTransferNotPending.
            Some(res) if res.flags.post_pending_transfer() => local(shard, resolution_id(t)),
            // Committed pending: the shard posts or voids its leg itself.
            Some(res) if !res.flags.void_pending_transfer() => local(shard, leg_id(t)),
            _ => local(shard, t),
        };
    };
    match per_shard[debit_shard].get(&resolution_id(t)) {
        // A plain transfer, committed: the shard answers PendingTransferNotPending.
        Some(res) if res.flags.post_pending_transfer() => local(debit_shard, resolution_id(t)),
        // A pending transfer, committed (its decision is a marker).
        Some(res) if !res.flags.void_pending_transfer() => {
            Located::Cross(cross_post(router, per_shard, post, (debit_shard, &leg)))
        }
        // Aborted, or not decided yet: the transfer does not exist (PendingTransferNotFound,
        // which burns the post's id as on one shard).
        _ => local(debit_shard, t),
    }
}

/// A post or void `post` of the committed cross-shard pending transfer whose coordinator
/// leg `leg` lives on `debit_shard`, as the coordinator logs it.
fn cross_post(
    router: Router,
    per_shard: &[HashMap<u128, Transfer>],
    post: &Transfer,
    (debit_shard, leg): (usize, &Transfer),
) -> CrossPost {
    let t = post.pending_id;
    let credit_shard = bridge_peer(router, leg.credit_account_id);
    let credit = per_shard[credit_shard]
        .get(&leg_id(t))
        .map_or(0, |leg| leg.credit_account_id);
    let named_credit = post.credit_account_id;
    CrossPost {
        event: Transfer {
            pending_id: leg_id(t),
            credit_account_id: if named_credit == 0 || named_credit == credit {
                leg.credit_account_id
            } else {
                named_credit
            },
            // Inherited from the coordinator leg, as the ledger would, but named: the
            // participant's `x(t)` inherits from its own leg, whose `user_data_32` holds the
            // timeout.
            user_data_32: if post.user_data_32 == 0 {
                leg.user_data_32
            } else {
                post.user_data_32
            },
            ..*post
        },
        debit_shard,
        credit_shard,
        expired: per_shard[debit_shard]
            .get(&applied_id(t))
            .is_some_and(|expiry| expiry.flags.void_pending_transfer()),
    }
}

/// What a [`PostMachine`] ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutcome {
    /// The caller's result for each post, in the order given.
    pub results: Vec<R>,
    /// The posts logged now, for a [`PostFinishMachine`] (should it never run, the
    /// [`Resolver`] finishes them from the coordinator's index).
    pub finishes: Vec<Transfer>,
}

/// Users' posts and voids of cross-shard pending transfers: each coordinator logs its posts
/// (the decision: the ledger checks `P` against `leg(t)` with its own rules, precedence and
/// idempotency); the results are the caller's. A post answered
/// `PendingTransferAlreadyVoided` whose `T` was not found expired when located may have lost
/// to the expiry since: the coordinator's `x(t)` is looked up, and if it is the expiry's void
/// the post answers `PendingTransferExpired`, as one ledger would.
#[derive(Debug)]
pub struct PostMachine {
    posts: Vec<CrossPost>,
    positions: Vec<Vec<usize>>,
    stage: PostStage,
}

#[derive(Debug)]
enum PostStage {
    Logging,
    /// The results, and the posts whose `x(t)` is looked up (indexes, per coordinator).
    ReadingExpiries(Vec<R>, Vec<Vec<usize>>),
    Done,
}

impl PostMachine {
    /// The machine for `posts`, with its first action: the coordinators' submissions.
    pub fn new(router: Router, posts: Vec<CrossPost>) -> (Self, Action<PostOutcome>) {
        let (per_shard, positions) = scatter(
            router.shard_count(),
            &posts,
            |post| post.debit_shard,
            |post| post.event,
        );
        let machine = Self {
            posts,
            positions,
            stage: PostStage::Logging,
        };
        let action = Action::Submit {
            phase: Phase::Decide,
            per_shard,
        };
        (machine, action)
    }

    /// `x(t)` of `post`'s pending transfer: at its coordinator, the expiry's void, if any.
    fn expiry_id(post: &CrossPost) -> u128 {
        applied_id(post.event.pending_id - LEG_ID_MIN)
    }

    fn done(&self, results: Vec<R>) -> Action<PostOutcome> {
        // A retry answering Exists leaves the finishing to the resolver: it works from the
        // post as logged, whose zero fields may differ from the retry's.
        let finishes = self
            .posts
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_ok())
            .map(|(post, _)| post.event)
            .collect();
        Action::Done(PostOutcome { results, finishes })
    }
}

impl Machine for PostMachine {
    type Outcome = PostOutcome;

    fn step(&mut self, reply: Reply) -> Result<Action<PostOutcome>> {
        match std::mem::replace(&mut self.stage, PostStage::Done) {
            PostStage::Logging => {
                let mut results = gather(&self.positions, reply, self.posts.len())?;
                let mut unknown: Vec<Vec<usize>> = vec![Vec::new(); self.positions.len()];
                for (index, (result, post)) in results.iter_mut().zip(&self.posts).enumerate() {
                    if *result == R::PendingTransferAlreadyVoided {
                        if post.expired {
                            *result = R::PendingTransferExpired;
                        } else {
                            unknown[post.debit_shard].push(index);
                        }
                    }
                }
                if unknown.iter().all(Vec::is_empty) {
                    return Ok(self.done(results));
                }
                let per_shard = unknown
                    .iter()
                    .map(|indexes| {
                        indexes
                            .iter()
                            .map(|&index| Self::expiry_id(&self.posts[index]))
                            .collect()
                    })
                    .collect();
                self.stage = PostStage::ReadingExpiries(results, unknown);
                Ok(Action::Lookup { per_shard })
            }
            PostStage::ReadingExpiries(mut results, unknown) => {
                let found = found(reply, self.positions.len())?;
                for (indexes, found) in unknown.iter().zip(found) {
                    for &index in indexes {
                        let expired = found
                            .get(&Self::expiry_id(&self.posts[index]))
                            .is_some_and(|expiry| expiry.flags.void_pending_transfer());
                        if expired {
                            results[index] = R::PendingTransferExpired;
                        }
                    }
                }
                Ok(self.done(results))
            }
            PostStage::Done => Err(protocol("a reply to a machine that is done")),
        }
    }
}

/// Applies posts logged by coordinators at their participants (`x(t)`, [`Phase::Finish`]),
/// then acknowledges them at the coordinators ([`Phase::Acknowledge`]: each post resubmitted
/// with `pending_id = res(t)`, answering `ExistsWithDifferentPendingId`), which takes them out
/// of the coordinator's index. Both idempotent.
#[derive(Debug)]
pub struct PostFinishMachine {
    router: Router,
    logged: Vec<Transfer>,
    positions: Vec<Vec<usize>>,
    acknowledging: bool,
    done: bool,
}

impl PostFinishMachine {
    /// The machine for `logged` (users' posts as their coordinators logged them).
    pub fn new(router: Router, logged: Vec<Transfer>) -> (Self, Action<()>) {
        let (per_shard, positions) = scatter(
            router.shard_count(),
            &logged,
            |post| bridge_peer(router, post.credit_account_id),
            applied_event,
        );
        let machine = Self {
            router,
            logged,
            positions,
            acknowledging: false,
            done: false,
        };
        let action = Action::Submit {
            phase: Phase::Finish,
            per_shard,
        };
        (machine, action)
    }
}

impl Machine for PostFinishMachine {
    type Outcome = ();

    fn step(&mut self, reply: Reply) -> Result<Action<()>> {
        if self.done {
            return Err(protocol("a reply to a machine that is done"));
        }
        for result in gather(&self.positions, reply, self.logged.len())? {
            // x(t) cannot fail: only the protocol touches a leg (see `applied_event`); the
            // acknowledgement answers `ExistsWithDifferentPendingId` (see `acknowledgement`).
            let expected = if self.acknowledging {
                result == R::ExistsWithDifferentPendingId
            } else {
                result.is_ok() || result.is_exists()
            };
            if !expected {
                self.done = true;
                return Err(protocol(&format!("applying a user's post: {result:?}")));
            }
        }
        if self.acknowledging {
            self.done = true;
            return Ok(Action::Done(()));
        }
        let router = self.router;
        let (per_shard, positions) = scatter(
            router.shard_count(),
            &self.logged,
            |post| router.shard_of(post.credit_account_id),
            acknowledgement,
        );
        self.positions = positions;
        self.acknowledging = true;
        Ok(Action::Submit {
            phase: Phase::Acknowledge,
            per_shard,
        })
    }
}

// ---- linked chains spanning shards --------------------------------------------------------

/// One event of a chain spanning shards: its id and the shards of its accounts (equal for a
/// same-shard event, which has one leg).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainMember {
    /// The event's id `t`.
    pub t: u128,
    /// The shard of its debit account.
    pub debit_shard: usize,
    /// The shard of its credit account.
    pub credit_shard: usize,
    /// The event's ledger.
    pub ledger: u32,
    /// Whether the event is a user's pending transfer (a commit keeps its legs pending).
    pub pending: bool,
}

impl ChainMember {
    /// The shards holding the member's legs, each with its peer (itself for a same-shard
    /// event): its debit shard first.
    fn shards(&self) -> Vec<(usize, usize)> {
        let (d, c) = (self.debit_shard, self.credit_shard);
        if d == c {
            vec![(d, d)]
        } else {
            vec![(d, c), (c, d)]
        }
    }

    /// The commit of its leg on `shard` (whose peer is `peer`).
    fn commit(&self, router: Router, (shard, peer): (usize, usize)) -> Transfer {
        chain_commit(router, (self.t, self.ledger, self.pending), (shard, peer))
    }
}

/// A linked chain spanning shards, as its coordinator's records describe it: every event
/// commits or none. The coordinator is the shard of the first event's debit account; the
/// chain's decision is the resolution `res(head)` of the first event's leg there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainShape {
    /// The first event's id.
    pub head: u128,
    /// The coordinator shard.
    pub coordinator: usize,
    /// The first event's ledger (the records' ledger).
    pub ledger: u32,
    /// The events, in chain order.
    pub members: Vec<ChainMember>,
}

/// A chain's shape from its coordinator's records (sorted by index).
fn chain_from_records(records: &[Transfer]) -> ChainShape {
    let first = records.first().copied().unwrap_or_default();
    // Shards are below SHARD_COUNT_MAX (16 bits); the ledger is the low 32 bits.
    let shard = |record: &Transfer, shift: u32| ((record.user_data_64 >> shift) & 0xffff) as usize;
    ChainShape {
        head: first.user_data_128,
        coordinator: shard(&first, 48),
        ledger: first.ledger,
        members: records
            .iter()
            .map(|record| ChainMember {
                t: record.id - APPLIED_ID_MIN,
                debit_shard: shard(record, 48),
                credit_shard: shard(record, 32),
                ledger: (record.user_data_64 & u64::from(u32::MAX)) as u32,
                pending: record.code == CHAIN_RECORD_PENDING_CODE,
            })
            .collect(),
    }
}

impl ChainShape {
    /// The shape of a chain of (prechecked, plain) events.
    pub fn new(router: Router, events: &[Transfer]) -> Self {
        let members: Vec<ChainMember> = events
            .iter()
            .map(|event| ChainMember {
                t: event.id,
                debit_shard: router.shard_of(event.debit_account_id),
                credit_shard: router.shard_of(event.credit_account_id),
                ledger: event.ledger,
                pending: event.flags.pending(),
            })
            .collect();
        Self {
            head: events.first().map_or(0, |event| event.id),
            coordinator: members.first().map_or(0, |member| member.debit_shard),
            ledger: events.first().map_or(0, |event| event.ledger),
            members,
        }
    }

    fn records(&self, router: Router) -> Vec<Transfer> {
        let chain = (self.head, self.coordinator, self.ledger);
        (0u32..)
            .zip(&self.members)
            .map(|(index, member)| {
                let legs = (
                    member.t,
                    member.debit_shard,
                    member.credit_shard,
                    member.ledger,
                    member.pending,
                );
                chain_record(router, chain, index, legs)
            })
            .collect()
    }
}

/// What the coordinator holds of a chain's head leg when the chain is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// The head's leg exists (its part was logged): an abort voids it.
    Held,
    /// The coordinator's part failed. A retry with changed fields may still log it (a
    /// failure that is a property of the events burns no id) after the other legs were
    /// voided: an abort fences the head's leg, as for [`Head::Unknown`].
    Failed,
    /// Not known to exist (the resolver, whose caller gave up): an abort fences it, so a late
    /// part can never create it.
    Unknown,
}

/// A chain's decision: commit, or abort with the failing event's code and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainDecision {
    /// Every event commits.
    Commit,
    /// No event commits; the event at `index` failed with `reason`.
    Abort {
        /// The failing event's code.
        reason: R,
        /// The failing event's index in the chain.
        index: u32,
    },
}

fn logged_chain_decision(resolution: &Transfer) -> ChainDecision {
    match logged_decision(resolution) {
        Decision::Commit => ChainDecision::Commit,
        Decision::Abort(reason) => ChainDecision::Abort {
            reason,
            index: resolution.user_data_32,
        },
    }
}

/// The end of chains, shared by callers and the resolver: the coordinators log the decisions
/// (a decision logged first wins and is read back), every other leg follows (post, or fence
/// and void), and the coordinators acknowledge their records.
#[derive(Debug)]
struct ChainEnd {
    router: Router,
    chains: Vec<ChainShape>,
    decisions: Vec<ChainDecision>,
    /// Events recorded under a head after its chain's records (a changed retry's, see
    /// `ChainMachine::refusals`): never in that chain, they are voided whatever it decided.
    orphans: HashSet<u128>,
    /// Per chain, whether this machine logged its commit (`Ok`, not `Exists`): the chain
    /// committed now, whatever earlier attempts left behind.
    committed_now: Vec<bool>,
    stage: ChainEndStage,
}

#[derive(Debug)]
enum ChainEndStage {
    /// Per shard, the chain of each decision event (fences are not answered for).
    Deciding(Vec<Vec<Option<usize>>>),
    ReadingDecisions(Vec<usize>),
    /// Per shard, whether each event is a commit's post (which must land).
    Finishing(Vec<Vec<bool>>),
    Acknowledging,
    Done,
}

impl ChainEnd {
    fn start(
        router: Router,
        chains: Vec<ChainShape>,
        proposed: Vec<(ChainDecision, Head)>,
    ) -> (Self, Action<Vec<ChainDecision>>) {
        let mut per_shard: Vec<Vec<Transfer>> = vec![Vec::new(); router.shard_count()];
        let mut tags: Vec<Vec<Option<usize>>> = vec![Vec::new(); router.shard_count()];
        let mut proposed = proposed;
        for (position, (chain, (decision, head))) in chains.iter().zip(&mut proposed).enumerate() {
            let shard = chain.coordinator;
            if chain
                .members
                .first()
                .is_some_and(|first| first.t != chain.head)
            {
                // Records without the head's: it was acknowledged, so its chain is decided
                // (logged, or burnt by an abort's fence and void). Nothing to log for it.
                continue;
            }
            let (decision, head) = (*decision, *head);
            match (decision, head) {
                (ChainDecision::Commit, _) => {
                    let first = &chain.members[0];
                    per_shard[shard].push(first.commit(router, first.shards()[0]));
                }
                (ChainDecision::Abort { reason, index }, _) => {
                    if head != Head::Held {
                        per_shard[shard].push(fence(router, chain.head, shard));
                        tags[shard].push(None);
                    }
                    per_shard[shard].push(chain_abort(chain.head, reason, index));
                }
            }
            tags[shard].push(Some(position));
        }
        let proposed = proposed.into_iter().map(|(decision, _)| decision).collect();
        let end = Self {
            router,
            committed_now: vec![false; chains.len()],
            chains,
            decisions: proposed,
            orphans: HashSet::new(),
            stage: ChainEndStage::Deciding(tags),
        };
        let action = Action::Submit {
            phase: Phase::Decide,
            per_shard,
        };
        (end, action)
    }

    fn step(&mut self, reply: Reply) -> Result<Action<Vec<ChainDecision>>> {
        match std::mem::replace(&mut self.stage, ChainEndStage::Done) {
            ChainEndStage::Deciding(tags) => self.on_decided(&tags, reply),
            ChainEndStage::ReadingDecisions(unknown) => {
                let found = found(reply, self.router.shard_count())?;
                for position in unknown {
                    let chain = &self.chains[position];
                    let logged = found[chain.coordinator]
                        .get(&resolution_id(chain.head))
                        .ok_or_else(|| protocol("a chain's decision is not found"))?;
                    self.decisions[position] = logged_chain_decision(logged);
                }
                Ok(self.finish())
            }
            ChainEndStage::Finishing(commits) => {
                let answers = submitted(reply, &commits)?;
                for (commits, answers) in commits.iter().zip(answers) {
                    for (&commit, answer) in commits.iter().zip(answers) {
                        if commit && !(answer.is_ok() || answer.is_exists()) {
                            return Err(protocol(&format!("chain post: {answer:?}")));
                        }
                    }
                }
                Ok(self.acknowledge())
            }
            ChainEndStage::Acknowledging => Ok(Action::Done(self.decisions.clone())),
            ChainEndStage::Done => Err(protocol("a reply to a machine that is done")),
        }
    }

    fn on_decided(
        &mut self,
        tags: &[Vec<Option<usize>>],
        reply: Reply,
    ) -> Result<Action<Vec<ChainDecision>>> {
        let answers = submitted(reply, tags)?;
        let mut unknown = vec![Vec::new(); self.router.shard_count()];
        let mut unknown_positions = Vec::new();
        for (tags, answers) in tags.iter().zip(answers) {
            for (&tag, answer) in tags.iter().zip(answers) {
                let Some(position) = tag else { continue };
                let chain = &self.chains[position];
                let aborting = matches!(self.decisions[position], ChainDecision::Abort { .. });
                if answer.is_ok() || answer.is_exists() {
                    self.committed_now[position] = !aborting && answer.is_ok();
                    continue;
                }
                if aborting && matches!(answer, R::PendingTransferNotFound | R::IdAlreadyFailed) {
                    // The fence burnt the head's leg (now or before): it can never exist, so
                    // the chain never commits.
                    continue;
                }
                if !aborting && answer == R::IdAlreadyFailed {
                    // A pending head's commit marker finds res(head) burnt: an abort fenced
                    // the head's leg first.
                    self.decisions[position] = ChainDecision::Abort {
                        reason: R::IdAlreadyFailed,
                        index: 0,
                    };
                    continue;
                }
                if !is_exists_with_different(answer) {
                    return Err(protocol(&format!("chain decision: {answer:?}")));
                }
                unknown[chain.coordinator].push(resolution_id(chain.head));
                unknown_positions.push(position);
            }
        }
        if unknown_positions.is_empty() {
            return Ok(self.finish());
        }
        self.stage = ChainEndStage::ReadingDecisions(unknown_positions);
        Ok(Action::Lookup { per_shard: unknown })
    }

    /// Every leg but the head's at the coordinator (the decision itself) follows it.
    fn finish(&mut self) -> Action<Vec<ChainDecision>> {
        let router = self.router;
        let mut per_shard: Vec<Vec<Transfer>> = vec![Vec::new(); router.shard_count()];
        let mut commits: Vec<Vec<bool>> = vec![Vec::new(); router.shard_count()];
        for (chain, decision) in self.chains.iter().zip(&self.decisions) {
            for member in &chain.members {
                for (shard, peer) in member.shards() {
                    if member.t == chain.head && shard == chain.coordinator {
                        continue;
                    }
                    match *decision {
                        ChainDecision::Commit if !self.orphans.contains(&member.t) => {
                            per_shard[shard].push(member.commit(router, (shard, peer)));
                            commits[shard].push(true);
                        }
                        ChainDecision::Commit | ChainDecision::Abort { .. } => {
                            let reason = match *decision {
                                ChainDecision::Abort { reason, .. } => reason,
                                ChainDecision::Commit => R::IdAlreadyFailed,
                            };
                            per_shard[shard].push(fence(router, member.t, shard));
                            per_shard[shard].push(resolution(member.t, Decision::Abort(reason)));
                            commits[shard].extend([false, false]);
                        }
                    }
                }
            }
        }
        self.stage = ChainEndStage::Finishing(commits);
        Action::Submit {
            phase: Phase::Finish,
            per_shard,
        }
    }

    /// The coordinators take the chains' records out of their indexes.
    fn acknowledge(&mut self) -> Action<Vec<ChainDecision>> {
        let mut per_shard: Vec<Vec<Transfer>> = vec![Vec::new(); self.router.shard_count()];
        for chain in &self.chains {
            per_shard[chain.coordinator].extend(chain.records(self.router).into_iter().map(
                |record| Transfer {
                    user_data_32: CHAIN_RECORD_DONE,
                    ..record
                },
            ));
        }
        self.stage = ChainEndStage::Acknowledging;
        Action::Submit {
            phase: Phase::Acknowledge,
            per_shard,
        }
    }
}

/// The answers of a submission shaped like `shape` (one per event, per shard).
fn submitted<T>(reply: Reply, shape: &[Vec<T>]) -> Result<Vec<Vec<R>>> {
    let Reply::Submitted(answers) = reply else {
        return Err(protocol("a lookup's answer to a submission"));
    };
    if answers.len() != shape.len()
        || answers
            .iter()
            .zip(shape)
            .any(|(answers, shape)| answers.len() != shape.len())
    {
        return Err(protocol("one result per event"));
    }
    Ok(answers)
}

/// How one shard's part of a chain answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartAnswer {
    /// Every leg created now.
    Created,
    /// The part exists from before (its first leg answered `Exists…`: a part is atomic).
    Held,
    /// The part failed (one leg with its own code, the others `LinkedEventFailed`).
    Failed,
}

fn part_answer(answers: &[R]) -> PartAnswer {
    match answers.first() {
        _ if answers.iter().all(|answer| answer.is_ok()) => PartAnswer::Created,
        Some(&first) if first.is_exists() || is_exists_with_different(first) => PartAnswer::Held,
        _ => PartAnswer::Failed,
    }
}

/// Runs one call's linked chains spanning shards: the coordinators log each chain's records
/// ([`Phase::Record`]), every shard logs its part of each chain as one linked chain of pending
/// legs ([`Phase::Prepare`]), then the decisions, the finish and the acknowledgements. Ends
/// with one result per event per chain, following ledger-core's linked semantics.
#[derive(Debug)]
pub struct ChainMachine {
    router: Router,
    chains: Vec<Vec<Transfer>>,
    shapes: Vec<ChainShape>,
    stage: ChainStage,
    /// Per chain, per event, the answers of its legs (debit shard first).
    answers: Vec<Vec<Vec<R>>>,
    /// Per chain, whether every part was created now.
    created: Vec<bool>,
    /// Events recorded later than their chain's head (see [`orphans`]).
    orphans: HashSet<u128>,
}

#[derive(Debug)]
enum ChainStage {
    Recording,
    /// A chain's records were partly logged before (see [`ChainMachine::refusals`]): its new
    /// members fenced and their records acknowledged, the call fails.
    Refusing,
    /// Per shard, the (chain, event) of each leg.
    Preparing(Vec<Vec<(usize, usize)>>),
    /// The proposed decisions, while the legs of chains whose parts were logged before (by
    /// this chain's caller or by another version of it) are read back.
    Verifying(Vec<(ChainDecision, Head)>),
    Ending(ChainEnd),
    Done,
}

impl ChainMachine {
    /// The machine for `chains` (each at least two prechecked plain events, spanning shards;
    /// their bridges created), with its first action: the coordinators' records.
    pub fn new(router: Router, chains: Vec<Vec<Transfer>>) -> (Self, Action<Vec<Vec<R>>>) {
        let shapes: Vec<ChainShape> = chains
            .iter()
            .map(|events| ChainShape::new(router, events))
            .collect();
        let mut per_shard: Vec<Vec<Transfer>> = vec![Vec::new(); router.shard_count()];
        for shape in &shapes {
            per_shard[shape.coordinator].extend(shape.records(router));
        }
        let machine = Self {
            router,
            chains,
            shapes,
            stage: ChainStage::Recording,
            answers: Vec::new(),
            created: Vec::new(),
            orphans: HashSet::new(),
        };
        let action = Action::Submit {
            phase: Phase::Record,
            per_shard,
        };
        (machine, action)
    }

    /// A chain some of whose records were logged before and some now differs from the chain
    /// logged under its head (records are logged at once), which may have committed: its new
    /// members must never apply. `Some`: the fences of their legs and the acknowledgements of
    /// their records (out of the index), after which the call fails; `None`: go on.
    fn refusals(&self, answers: &[Vec<R>]) -> Option<Vec<Vec<Transfer>>> {
        let mut per_shard: Vec<Vec<Transfer>> = vec![Vec::new(); self.router.shard_count()];
        let mut offsets = vec![0; self.router.shard_count()];
        for shape in &self.shapes {
            let k = shape.coordinator;
            let count = shape.members.len();
            let mine = &answers[k][offsets[k]..offsets[k] + count];
            offsets[k] += count;
            if !(mine.iter().any(|answer| answer.is_ok()) && mine.iter().any(|a| a.is_exists())) {
                continue;
            }
            let records = shape.records(self.router);
            for ((member, record), answer) in shape.members.iter().zip(records).zip(mine) {
                if !answer.is_ok() {
                    continue;
                }
                for (shard, _) in member.shards() {
                    per_shard[shard].push(fence(self.router, member.t, shard));
                }
                per_shard[k].push(Transfer {
                    user_data_32: CHAIN_RECORD_DONE,
                    ..record
                });
            }
        }
        per_shard
            .iter()
            .any(|events| !events.is_empty())
            .then_some(per_shard)
    }

    /// The coordinator of the first chain (for the test checkpoints).
    pub fn first_coordinator(&self) -> Option<usize> {
        self.shapes.first().map(|shape| shape.coordinator)
    }

    fn prepare(&mut self) -> Action<Vec<Vec<R>>> {
        let router = self.router;
        let mut per_shard: Vec<Vec<Transfer>> = vec![Vec::new(); router.shard_count()];
        let mut tags: Vec<Vec<(usize, usize)>> = vec![Vec::new(); router.shard_count()];
        for (chain_index, events) in self.chains.iter().enumerate() {
            let start: Vec<usize> = per_shard.iter().map(Vec::len).collect();
            for (event_index, event) in events.iter().enumerate() {
                for (shard, leg) in chain_legs(router, event) {
                    per_shard[shard].push(leg);
                    tags[shard].push((chain_index, event_index));
                }
            }
            // Each shard's part of the chain is one linked chain in the ledger: all or none.
            for (shard, legs) in per_shard.iter_mut().enumerate() {
                let part = &mut legs[start[shard]..];
                let count = part.len();
                for (position, leg) in part.iter_mut().enumerate() {
                    if position + 1 < count {
                        leg.flags = leg.flags.union(TransferFlags::LINKED);
                    }
                }
            }
        }
        self.stage = ChainStage::Preparing(tags);
        Action::Submit {
            phase: Phase::Prepare,
            per_shard,
        }
    }

    fn on_prepared(
        &mut self,
        tags: &[Vec<(usize, usize)>],
        reply: Reply,
    ) -> Result<Action<Vec<Vec<R>>>> {
        let answers = submitted(reply, tags)?;
        self.answers = self
            .chains
            .iter()
            .map(|events| vec![Vec::new(); events.len()])
            .collect();
        let mut parts: Vec<BTreeMap<usize, Vec<R>>> = vec![BTreeMap::new(); self.chains.len()];
        for (shard, (tags, answers)) in tags.iter().zip(answers).enumerate() {
            for (&(chain, event), answer) in tags.iter().zip(answers) {
                self.answers[chain][event].push(answer);
                parts[chain].entry(shard).or_default().push(answer);
            }
        }
        let mut proposed = Vec::with_capacity(self.chains.len());
        for (chain, parts) in parts.iter().enumerate() {
            let kinds: Vec<PartAnswer> = parts.values().map(|part| part_answer(part)).collect();
            self.created
                .push(kinds.iter().all(|&kind| kind == PartAnswer::Created));
            let coordinator = self.shapes[chain].coordinator;
            let head = match parts.get(&coordinator).map(|part| part_answer(part)) {
                Some(PartAnswer::Failed) => Head::Failed,
                _ => Head::Held,
            };
            proposed.push(if kinds.contains(&PartAnswer::Failed) {
                let (index, reason) = self.failing_event(chain);
                (ChainDecision::Abort { reason, index }, head)
            } else {
                (ChainDecision::Commit, head)
            });
        }
        // A part logged before may be another version's (the same ids, other amounts or
        // accounts): a commit needs every leg to be this chain's, or an event's two legs
        // could differ (I1). Read them back.
        let mut per_shard: Vec<Vec<u128>> = vec![Vec::new(); self.router.shard_count()];
        for (chain, (decision, _)) in proposed.iter().enumerate() {
            if *decision == ChainDecision::Commit && !self.created[chain] {
                for (shard, leg) in self.chains[chain]
                    .iter()
                    .flat_map(|event| chain_legs(self.router, event))
                {
                    per_shard[shard].push(leg.id);
                }
                // And its records: one recorded later than the head's is not its chain's.
                let shape = &self.shapes[chain];
                let records = shape.members.iter().map(|member| applied_id(member.t));
                per_shard[shape.coordinator].extend(records);
            }
        }
        if per_shard.iter().any(|ids| !ids.is_empty()) {
            self.stage = ChainStage::Verifying(proposed);
            return Ok(Action::Lookup { per_shard });
        }
        Ok(self.end(proposed))
    }

    /// The legs read back: a chain any of whose legs is missing or differs from this call's
    /// aborts (with the code its retry answers, see [`Self::failing_event`]).
    fn on_verified(
        &mut self,
        mut proposed: Vec<(ChainDecision, Head)>,
        reply: Reply,
    ) -> Result<Action<Vec<Vec<R>>>> {
        let found = found(reply, self.router.shard_count())?;
        let unlinked = |leg: &Transfer| Transfer {
            flags: leg.flags.difference(TransferFlags::LINKED),
            timestamp: 0,
            ..*leg
        };
        for (chain, (decision, _)) in proposed.iter_mut().enumerate() {
            if *decision != ChainDecision::Commit || self.created[chain] {
                continue;
            }
            let ours = self.chains[chain]
                .iter()
                .flat_map(|event| chain_legs(self.router, event))
                .all(|(shard, leg)| {
                    found[shard]
                        .get(&leg.id)
                        .is_some_and(|logged| unlinked(logged) == unlinked(&leg))
                });
            let shape = &self.shapes[chain];
            let late = orphans(shape, &found[shape.coordinator]);
            if !ours || !late.is_empty() {
                let (index, reason) = self.failing_event(chain);
                *decision = ChainDecision::Abort { reason, index };
            }
            // Voided even if the head's chain committed.
            self.orphans.extend(late);
        }
        Ok(self.end(proposed))
    }

    fn end(&mut self, proposed: Vec<(ChainDecision, Head)>) -> Action<Vec<Vec<R>>> {
        let (mut end, action) = ChainEnd::start(self.router, self.shapes.clone(), proposed);
        end.orphans = std::mem::take(&mut self.orphans);
        self.stage = ChainStage::Ending(end);
        let decisions = &self.shapes;
        map_done(action, |_| vec![Vec::new(); decisions.len()])
    }

    /// The first event of `chain` whose legs answered a failure of their own (not `Ok`, not
    /// `LinkedEventFailed`), with that code (the debit shard's first); failing that, the first
    /// whose leg exists from before (`Exists…`: a retry). A leg left from an earlier attempt
    /// answers `Exists…` even when that attempt failed elsewhere, so a genuine failure wins.
    fn failing_event(&self, chain: usize) -> (u32, R) {
        let genuine =
            |answer: R| !answer.is_ok() && answer != R::LinkedEventFailed && !is_existing(answer);
        let first = |wanted: &dyn Fn(R) -> bool| {
            (0u32..)
                .zip(&self.answers[chain])
                .find_map(|(index, answers)| {
                    let code = answers.iter().copied().find(|&answer| wanted(answer))?;
                    Some((index, code))
                })
        };
        let Some((index, code)) = first(&genuine).or_else(|| first(&is_existing)) else {
            return (0, R::IdAlreadyFailed);
        };
        (index, self.event_code(chain, index as usize, code))
    }

    /// `code`, a leg's answer, as event `index` of `chain` answers it.
    fn event_code(&self, chain: usize, index: usize, code: R) -> R {
        let leg_count = self.answers[chain][index].len();
        let pending = self.chains[chain][index].flags.pending();
        match code {
            // A plain cross-shard event's coordinator leg holds B in user_data_128.
            R::ExistsWithDifferentUserData128 if leg_count == 2 && !pending => {
                R::ExistsWithDifferentCreditAccountId
            }
            other => other,
        }
    }

    /// The callers' answers. A chain this call committed answers `Ok` for every event, even
    /// when an earlier attempt had logged some of its parts exactly as this call has them;
    /// one committed before, or whose logged legs differ from this call's (a retry naming
    /// fewer events: `ExistsWith…`), answers as a retry on one ledger would.
    fn results(&self, decisions: &[ChainDecision], committed_now: &[bool]) -> Vec<Vec<R>> {
        let mut results = Vec::with_capacity(self.chains.len());
        for (chain, &decision) in decisions.iter().enumerate() {
            let count = self.chains[chain].len();
            let mut codes = vec![R::LinkedEventFailed; count];
            match decision {
                ChainDecision::Commit
                    if self.created[chain]
                        || (committed_now[chain]
                            && !self.answers[chain]
                                .iter()
                                .flatten()
                                .any(|&answer| is_exists_with_different(answer))) =>
                {
                    codes = vec![R::Ok; count];
                }
                ChainDecision::Commit if !committed_now[chain] => {
                    // Committed by another driver: a retry of a committed chain, which the
                    // ledger answers at its first event (it exists), with that event's code.
                    // Its legs may have answered `Ok`: this call logged them, and the
                    // resolver, reading them, logged the commit first (seed 309397). They
                    // are the committed legs all the same: `Exists`, never a later event's.
                    codes[0] = self.answers[chain][0]
                        .iter()
                        .copied()
                        .find(|&answer| is_existing(answer))
                        .map_or(R::Exists, |code| self.event_code(chain, 0, code));
                }
                ChainDecision::Commit => {
                    // Committed now, but a leg logged before differs from this call's (a
                    // retry naming fewer events): the first such event's code.
                    let (index, code) = self.failing_event(chain);
                    codes[index as usize] = code;
                }
                ChainDecision::Abort { reason, index } => {
                    let same = self.failing_event(chain) == (index, reason);
                    codes[(index as usize).min(count - 1)] = if same || !reason.is_transient() {
                        reason
                    } else {
                        R::IdAlreadyFailed
                    };
                }
            }
            results.push(codes);
        }
        results
    }
}

impl Machine for ChainMachine {
    type Outcome = Vec<Vec<R>>;

    fn step(&mut self, reply: Reply) -> Result<Action<Vec<Vec<R>>>> {
        match std::mem::replace(&mut self.stage, ChainStage::Done) {
            ChainStage::Recording => {
                let shape: Vec<Vec<()>> = {
                    let mut shape = vec![Vec::new(); self.router.shard_count()];
                    for chain in &self.shapes {
                        shape[chain.coordinator].extend(chain.members.iter().map(|_| ()));
                    }
                    shape
                };
                let answers = submitted(reply, &shape)?;
                for &answer in answers.iter().flatten() {
                    if !(answer.is_ok() || answer.is_exists()) {
                        return Err(protocol(&format!("chain record: {answer:?}")));
                    }
                }
                match self.refusals(&answers) {
                    Some(per_shard) => {
                        self.stage = ChainStage::Refusing;
                        Ok(Action::Submit {
                            phase: Phase::Acknowledge,
                            per_shard,
                        })
                    }
                    None => Ok(self.prepare()),
                }
            }
            ChainStage::Refusing => Err(protocol(
                "a chain differs from the chain logged under its first event",
            )),
            ChainStage::Preparing(tags) => self.on_prepared(&tags, reply),
            ChainStage::Verifying(proposed) => self.on_verified(proposed, reply),
            ChainStage::Ending(mut end) => {
                let action = end.step(reply)?;
                let committed_now = end.committed_now.clone();
                if !matches!(action, Action::Done(_)) {
                    self.stage = ChainStage::Ending(end);
                }
                Ok(map_done(action, |decisions| {
                    self.results(&decisions, &committed_now)
                }))
            }
            ChainStage::Done => Err(protocol("a reply to a machine that is done")),
        }
    }
}

/// Drives chains whose caller gave up to their end, from their coordinator's records: reads
/// every member's legs and the decision; commits if every part holds (every member's legs
/// exist), aborts otherwise (presumed abort); then the decision, finish and acknowledgements.
#[derive(Debug)]
pub struct ChainRecoveryMachine {
    router: Router,
    chains: Vec<ChainShape>,
    end: Option<ChainEnd>,
}

impl ChainRecoveryMachine {
    /// The machine for `chains`, with its first action: the lookups.
    pub fn new(router: Router, chains: Vec<ChainShape>) -> (Self, Action<()>) {
        let mut per_shard: Vec<Vec<u128>> = vec![Vec::new(); router.shard_count()];
        for chain in &chains {
            per_shard[chain.coordinator].push(resolution_id(chain.head));
            // Its records and the head's (see `orphans`).
            per_shard[chain.coordinator].push(applied_id(chain.head));
            let records = chain.members.iter().map(|member| applied_id(member.t));
            per_shard[chain.coordinator].extend(records);
            for member in &chain.members {
                for (shard, _) in member.shards() {
                    per_shard[shard].push(leg_id(member.t));
                }
            }
        }
        let machine = Self {
            router,
            chains,
            end: None,
        };
        (machine, Action::Lookup { per_shard })
    }
}

impl Machine for ChainRecoveryMachine {
    type Outcome = ();

    fn step(&mut self, reply: Reply) -> Result<Action<()>> {
        if let Some(end) = self.end.as_mut() {
            return Ok(map_done(end.step(reply)?, |_| ()));
        }
        let found = found(reply, self.router.shard_count())?;
        let proposed = self
            .chains
            .iter()
            .map(|chain| (recovered_decision(chain, &found), Head::Unknown))
            .collect();
        let (mut end, action) = ChainEnd::start(self.router, self.chains.clone(), proposed);
        end.orphans = self
            .chains
            .iter()
            .flat_map(|chain| orphans(chain, &found[chain.coordinator]))
            .collect();
        self.end = Some(end);
        Ok(map_done(action, |_| ()))
    }
}

/// The events of a chain recorded later than its head, by a changed retry (see
/// `ChainMachine::refusals`), as `coordinator` holds their records: a chain's records are
/// logged together, record `i` at the head's timestamp plus `i`. The others are events of the
/// head's chain (a retry naming fewer events acknowledges only its own records).
fn orphans(chain: &ChainShape, coordinator: &HashMap<u128, Transfer>) -> Vec<u128> {
    let head = coordinator.get(&applied_id(chain.head));
    chain
        .members
        .iter()
        .filter(|member| {
            let record = coordinator.get(&applied_id(member.t));
            let together = head.zip(record).is_some_and(|(head, record)| {
                record.timestamp.checked_sub(head.timestamp) == Some(u64::from(record.user_data_32))
            });
            !together
        })
        .map(|member| member.t)
        .collect()
}

/// The decision for a chain whose caller gave up: the one logged, else commit if every
/// member's legs exist (every part was logged), else abort (presumed abort).
fn recovered_decision(chain: &ChainShape, found: &[HashMap<u128, Transfer>]) -> ChainDecision {
    if let Some(logged) = found[chain.coordinator].get(&resolution_id(chain.head)) {
        return logged_chain_decision(logged);
    }
    if chain
        .members
        .first()
        .is_some_and(|first| first.t != chain.head)
    {
        // The head's record was acknowledged, so its chain is decided: not logged, the
        // decision was an abort that burnt it.
        return ChainDecision::Abort {
            reason: R::IdAlreadyFailed,
            index: 0,
        };
    }
    // Every leg exists, and an event's two legs are of one version of the chain (two callers
    // may have logged parts of the same ids with other amounts, I1).
    let held = chain.members.iter().all(|member| {
        let legs: Vec<Option<&Transfer>> = member
            .shards()
            .into_iter()
            .map(|(shard, _)| found[shard].get(&leg_id(member.t)))
            .collect();
        match legs[..] {
            [Some(_)] => true,
            [Some(coordinator), Some(participant)] => {
                coordinator.amount == participant.amount
                    && (member.pending
                        || coordinator.user_data_128 == participant.credit_account_id)
            }
            _ => false,
        }
    });
    if held {
        ChainDecision::Commit
    } else {
        ChainDecision::Abort {
            reason: R::IdAlreadyFailed,
            index: 0,
        }
    }
}

/// `action` with its outcome (if done) mapped by `f`.
fn map_done<A, B>(action: Action<A>, f: impl FnOnce(A) -> B) -> Action<B> {
    match action {
        Action::Done(outcome) => Action::Done(f(outcome)),
        Action::Submit { phase, per_shard } => Action::Submit { phase, per_shard },
        Action::Lookup { per_shard } => Action::Lookup { per_shard },
    }
}

#[cfg(test)]
mod tests {
    use ledger_core::SYSTEM_ID_MIN;

    use super::*;

    const SHARDS: usize = 2;

    fn router() -> Router {
        Router::new(SHARDS)
    }

    /// `t: A → B` with `A` on shard 1 (the coordinator) and `B` on shard 0.
    fn cross(t: u128) -> Cross {
        let cross = Cross::new(router(), Transfer::new(t, 2 * t + 1, 2 * t + 2, 10, 1, 1));
        assert_eq!((cross.debit_shard, cross.credit_shard), (1, 0));
        cross
    }

    /// The answer to a submission: `results` for `shard`, nothing for the others.
    fn submitted(shard: usize, results: &[R]) -> Reply {
        let mut answers = vec![Vec::new(); SHARDS];
        answers[shard] = results.to_vec();
        Reply::Submitted(answers)
    }

    fn submit<T: std::fmt::Debug>(action: Action<T>, phase: Phase) -> Vec<Vec<Transfer>> {
        match action {
            Action::Submit {
                phase: got,
                per_shard,
            } if got == phase => per_shard,
            other => panic!("expected a {phase:?} submission, got {other:?}"),
        }
    }

    fn done<T: std::fmt::Debug>(action: Action<T>) -> T {
        match action {
            Action::Done(outcome) => outcome,
            other => panic!("expected done, got {other:?}"),
        }
    }

    #[test]
    fn a_call_commits_in_three_steps_and_hands_over_the_finish() {
        let (t, router) = (cross(7), router());
        let (mut call, action) = CallMachine::new(router, vec![t]);
        let prepares = submit(action, Phase::Prepare);
        assert!(prepares[0].is_empty());
        assert_eq!(prepares[1], [coordinator_leg(router, &t)]);
        assert_eq!(prepares[1][0].id, leg_id(7));
        assert!(prepares[1][0].flags.pending());
        assert_eq!(prepares[1][0].user_data_128, t.transfer.credit_account_id);
        assert_eq!(call.first_live_coordinator(), None);

        let votes = submit(call.step(submitted(1, &[R::Ok])).unwrap(), Phase::Vote);
        assert_eq!(call.first_live_coordinator(), Some(1));
        assert_eq!(votes[0], [participant_leg(router, &t)]);
        assert!(votes[1].is_empty());

        let decisions = submit(call.step(submitted(0, &[R::Ok])).unwrap(), Phase::Decide);
        assert_eq!(decisions[1], [decision_event(router, &t, Decision::Commit)]);
        assert_eq!(decisions[1][0].id, resolution_id(7));
        assert_eq!(decisions[1][0].pending_id, leg_id(7));
        assert!(decisions[1][0].flags.post_pending_transfer());

        let outcome = done(call.step(submitted(1, &[R::Ok])).unwrap());
        assert_eq!(outcome.results, [R::Ok]);
        assert_eq!(outcome.finishes, [(t, Decision::Commit)]);
        assert!(call.step(submitted(1, &[R::Ok])).is_err(), "done");

        let (mut finish, action) = FinishMachine::new(router, &outcome.finishes);
        let posts = submit(action, Phase::Finish);
        assert_eq!(posts[0], [commit_event(router, &t)]);
        assert_eq!(
            (posts[0][0].id, posts[0][0].pending_id),
            (resolution_id(7), leg_id(7))
        );
        assert!(posts[1].is_empty());
        done(finish.step(submitted(0, &[R::Exists])).unwrap());
    }

    #[test]
    fn a_rejected_prepare_ends_its_transfer_at_once() {
        let (mut call, action) = CallMachine::new(router(), vec![cross(1), cross(2), cross(3)]);
        assert_eq!(submit(action, Phase::Prepare)[1].len(), 3);
        // Only transfer 2 goes on; a retry with another B shows as the credit account.
        let prepared = [R::ExceedsCredits, R::Ok, R::ExistsWithDifferentUserData128];
        assert_eq!(call.first_live_coordinator(), None);
        let votes = submit(call.step(submitted(1, &prepared)).unwrap(), Phase::Vote);
        assert_eq!(call.first_live_coordinator(), Some(1));
        assert_eq!(
            votes[0].iter().map(|leg| leg.id).collect::<Vec<_>>(),
            [leg_id(2)]
        );
        submit(call.step(submitted(0, &[R::Ok])).unwrap(), Phase::Decide);
        let outcome = done(call.step(submitted(1, &[R::Ok])).unwrap());
        let expected = [
            R::ExceedsCredits,
            R::Ok,
            R::ExistsWithDifferentCreditAccountId,
        ];
        assert_eq!(outcome.results, expected);
        assert_eq!(outcome.finishes, [(cross(2), Decision::Commit)]);

        // Nothing prepared: no vote, no decision, nothing to finish.
        let (mut call, action) = CallMachine::new(router(), vec![cross(4)]);
        submit(action, Phase::Prepare);
        let outcome = done(call.step(submitted(1, &[R::ExceedsDebits])).unwrap());
        assert_eq!(outcome.results, [R::ExceedsDebits]);
        assert!(outcome.finishes.is_empty());
        assert_eq!(call.first_live_coordinator(), None);
    }

    #[test]
    fn a_no_vote_aborts_and_the_finish_fences_the_leg() {
        let router = router();
        let (mut call, action) = CallMachine::new(router, vec![cross(5)]);
        submit(action, Phase::Prepare);
        submit(call.step(submitted(1, &[R::Ok])).unwrap(), Phase::Vote);
        let reason = R::CreditAccountNotFound;
        let decisions = submit(call.step(submitted(0, &[reason])).unwrap(), Phase::Decide);
        let void = decisions[1][0];
        assert!(void.flags.void_pending_transfer());
        assert_eq!((void.id, void.pending_id), (resolution_id(5), leg_id(5)));
        assert_eq!(void.user_data_64, u64::from(reason.code()));
        let outcome = done(call.step(submitted(1, &[R::Ok])).unwrap());
        assert_eq!(outcome.results, [reason]);
        assert_eq!(outcome.finishes, [(cross(5), Decision::Abort(reason))]);

        let (mut finish, action) = FinishMachine::new(router, &outcome.finishes);
        let events = submit(action, Phase::Finish);
        assert_eq!(events[0], [fence(router, 5, 0), void]);
        // The fence and the void may find no leg: that is no error for an abort.
        let answers = [R::DebitAccountNotFound, R::PendingTransferNotFound];
        done(finish.step(submitted(0, &answers)).unwrap());
        // A commit whose post is refused is.
        let (mut finish, _) = FinishMachine::new(router, &[(cross(6), Decision::Commit)]);
        assert!(
            finish
                .step(submitted(0, &[R::PendingTransferNotFound]))
                .is_err()
        );
    }

    /// A `BALANCING_DEBIT` transfer's prepare is clamped by the ledger: the call reads its
    /// coordinator leg back (only its own: a plain transfer in the call is not read) and
    /// votes with the amount the leg holds; a leg not found is a protocol error.
    #[test]
    fn a_balancing_transfer_votes_with_the_amount_its_prepare_holds() {
        let router = router();
        let mut balancing = cross(3);
        balancing.transfer.flags = TransferFlags::BALANCING_DEBIT;
        let (mut call, action) = CallMachine::new(router, vec![balancing, cross(4)]);
        let prepares = submit(action, Phase::Prepare);
        assert!(prepares[1][0].flags.balancing_debit() && !prepares[1][1].flags.balancing_debit());
        let Action::Lookup { per_shard } = call.step(submitted(1, &[R::Ok, R::Ok])).unwrap() else {
            panic!("a balancing transfer's leg is read back before the vote");
        };
        assert_eq!(per_shard, [vec![], vec![leg_id(3)]]);
        let clamped = Transfer {
            amount: 4,
            ..prepares[1][0]
        };
        let votes = submit(
            call.step(Reply::Found(vec![vec![], vec![clamped]]))
                .unwrap(),
            Phase::Vote,
        );
        assert_eq!((votes[0][0].amount, votes[0][1].amount), (4, 10));
        assert!(!votes[0][0].flags.balancing_debit());
        // A prepare that held but is not found: the call fails.
        let (mut call, _) = CallMachine::new(router, vec![balancing]);
        call.step(submitted(1, &[R::Exists])).unwrap();
        assert!(call.step(Reply::Found(vec![vec![]; SHARDS])).is_err());
    }

    #[test]
    fn a_decision_logged_first_by_another_driver_wins() {
        let (mut call, action) = CallMachine::new(router(), vec![cross(8), cross(9)]);
        submit(action, Phase::Prepare);
        // Both are retries: the prepares exist, the votes too.
        let exists = [R::Exists, R::Exists];
        submit(call.step(submitted(1, &exists)).unwrap(), Phase::Vote);
        submit(call.step(submitted(0, &exists)).unwrap(), Phase::Decide);
        // 8's decision is logged as proposed; 9's commit finds a void logged before.
        let answers = [R::Exists, R::ExistsWithDifferentFlags];
        let Action::Lookup { per_shard } = call.step(submitted(1, &answers)).unwrap() else {
            panic!("the logged decision is read back");
        };
        assert_eq!(per_shard, [vec![], vec![resolution_id(9)]]);
        let logged = resolution(9, Decision::Abort(R::DebitAccountNotFound));
        let outcome = done(call.step(Reply::Found(vec![vec![], vec![logged]])).unwrap());
        // A retry answers the original failure; a transient one as IdAlreadyFailed.
        assert_eq!(outcome.results, [R::Exists, R::IdAlreadyFailed]);
        let abort = Decision::Abort(R::DebitAccountNotFound);
        assert_eq!(
            outcome.finishes,
            [(cross(8), Decision::Commit), (cross(9), abort)]
        );
    }

    #[test]
    fn a_decision_that_is_neither_logged_nor_found_is_a_protocol_error() {
        let (mut call, action) = CallMachine::new(router(), vec![cross(8)]);
        submit(action, Phase::Prepare);
        submit(call.step(submitted(1, &[R::Ok])).unwrap(), Phase::Vote);
        submit(call.step(submitted(0, &[R::Ok])).unwrap(), Phase::Decide);
        assert!(
            call.step(submitted(1, &[R::PendingTransferNotFound]))
                .is_err()
        );

        let (mut call, action) = CallMachine::new(router(), vec![cross(8)]);
        submit(action, Phase::Prepare);
        // Answers of the wrong shape.
        assert!(call.step(submitted(1, &[R::Ok, R::Ok])).is_err());
        let (mut call, _) = CallMachine::new(router(), vec![cross(8)]);
        assert!(call.step(Reply::Found(vec![vec![]; SHARDS])).is_err());
        let (mut call, _) = CallMachine::new(router(), vec![cross(8)]);
        submit(call.step(submitted(1, &[R::Ok])).unwrap(), Phase::Vote);
        submit(call.step(submitted(0, &[R::Ok])).unwrap(), Phase::Decide);
        call.step(submitted(1, &[R::ExistsWithDifferentFlags]))
            .unwrap();
        assert!(call.step(Reply::Found(vec![vec![]; SHARDS])).is_err());
    }

    /// The legs shard `s` holds for `cross`: the coordinator's on its debit shard, the
    /// participant's on its credit shard.
    fn legs(coordinator: &[Cross], participant: &[Cross]) -> Vec<Option<Vec<Transfer>>> {
        let router = router();
        let mut legs = vec![Some(Vec::new()); SHARDS];
        for cross in coordinator {
            legs[cross.debit_shard]
                .as_mut()
                .unwrap()
                .push(coordinator_leg(router, cross));
        }
        for cross in participant {
            legs[cross.credit_shard]
                .as_mut()
                .unwrap()
                .push(participant_leg(router, cross));
        }
        legs
    }

    /// Shards' reads of their unresolved entries, at ledger time zero.
    fn reads(legs: &[Option<Vec<Transfer>>]) -> Vec<Option<Unresolved>> {
        legs.iter()
            .map(|entries| {
                entries.clone().map(|entries| Unresolved {
                    ledger_now: 0,
                    entries,
                })
            })
            .collect()
    }

    fn timing() -> ResolverTiming {
        ResolverTiming {
            interval: Duration::from_millis(10),
            vote_age: Duration::from_millis(20),
            coordinator_age: Duration::from_millis(50),
        }
    }

    #[test]
    fn the_resolver_presumes_abort_for_an_old_leg_without_a_vote() {
        let router = router();
        let mut resolver = Resolver::new(timing());
        let at = Duration::from_millis;
        let held = legs(&[cross(3)], &[]);
        assert!(resolver.pass(router, at(0), &reads(&held)).is_empty());
        assert!(resolver.pass(router, at(49), &reads(&held)).is_empty());
        // Shard 1 unreadable: its leg keeps its age.
        let mut unreadable = held.clone();
        unreadable[1] = None;
        assert!(
            resolver
                .pass(router, at(50), &reads(&unreadable))
                .is_empty()
        );
        let due = resolver.pass(router, at(50), &reads(&held));
        let recovery = Recovery {
            debit_shard: 1,
            credit_shard: 0,
            transfers: vec![(3, false)],
            pending_ledgers: BTreeMap::new(),
            pending_timeouts: BTreeMap::new(),
            posts: Vec::new(),
            chains: Vec::new(),
            expiries: Vec::new(),
            tick: false,
        };
        assert_eq!(due, std::slice::from_ref(&recovery));

        let (mut machine, action) = RecoveryMachine::new(router, recovery);
        let Action::Lookup { per_shard } = action else {
            panic!("the participant's vote is looked up");
        };
        assert_eq!(per_shard, [vec![leg_id(3)], vec![]]);
        let decisions = submit(
            machine.step(Reply::Found(vec![vec![]; SHARDS])).unwrap(),
            Phase::Decide,
        );
        let abort = Decision::Abort(R::IdAlreadyFailed);
        assert_eq!(decisions[1], [resolution(3, abort)]);
        let events = submit(machine.step(submitted(1, &[R::Ok])).unwrap(), Phase::Finish);
        assert_eq!(events[0], [fence(router, 3, 0), resolution(3, abort)]);
        let answers = [R::CreditAccountNotFound, R::PendingTransferNotFound];
        done(machine.step(submitted(0, &answers)).unwrap());

        // Resolved legs are forgotten: seen again, a leg is young again.
        assert!(
            resolver
                .pass(router, at(60), &reads(&legs(&[], &[])))
                .is_empty()
        );
        assert!(resolver.pass(router, at(70), &reads(&held)).is_empty());
    }

    #[test]
    fn a_running_recovery_holds_up_only_its_own_pair() {
        // Seed 20574 of the cluster simulator: a pass's recoveries towards a shard without a
        // leader ran for four intervals, and no pass ran meanwhile, so a leg on two healthy
        // shards was first seen (and began to age) only after them. Passes now run beside
        // the recoveries; a pair whose recovery runs is left out, its legs still ageing.
        let router = router();
        let mut resolver = Resolver::new(timing());
        let at = Duration::from_millis;
        let reverse = |t: u128| {
            let cross = Cross::new(router, Transfer::new(t, 2 * t + 2, 2 * t + 1, 10, 1, 1));
            assert_eq!((cross.debit_shard, cross.credit_shard), (0, 1));
            cross
        };
        let first = legs(&[cross(3), reverse(4)], &[]);
        assert!(resolver.pass(router, at(0), &reads(&first)).is_empty());
        let due = resolver.pass(router, at(50), &reads(&first));
        let pairs: Vec<_> = due
            .iter()
            .map(|r| (r.debit_shard, r.credit_shard))
            .collect();
        assert_eq!(pairs, [(0, 1), (1, 0)]);
        resolver.recovery_started(due[1].debit_shard, due[1].credit_shard);
        // Pair (1, 0) runs (its participant has no leader): a pass yields only (0, 1) and a
        // new leg of (1, 0) is seen and ages all the same.
        let second = legs(&[cross(3), cross(5), reverse(4)], &[]);
        let due = resolver.pass(router, at(60), &reads(&second));
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].debit_shard, due[0].transfers.clone()),
            (0, vec![(4, false)])
        );
        assert!(
            resolver
                .pass(router, at(110), &reads(&legs(&[cross(3), cross(5)], &[])))
                .is_empty()
        );
        resolver.recovery_ended(1, 0);
        let due = resolver.pass(router, at(110), &reads(&legs(&[cross(3), cross(5)], &[])));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].debit_shard, due[0].credit_shard), (1, 0));
        assert_eq!(due[0].transfers, [(3, false), (5, false)]);
    }

    #[test]
    fn the_resolver_commits_after_a_vote() {
        let router = router();
        let mut resolver = Resolver::new(timing());
        let at = Duration::from_millis;
        // Transfer 4 voted (seen at its participant); 5's vote is found by the lookup.
        let held = legs(&[cross(4), cross(5)], &[cross(4)]);
        assert!(resolver.pass(router, at(0), &reads(&held)).is_empty());
        let due = resolver.pass(router, at(20), &reads(&held));
        assert_eq!(due[0].transfers, [(4, true)]);
        let due = resolver.pass(router, at(50), &reads(&held));
        let recovery = Recovery {
            debit_shard: 1,
            credit_shard: 0,
            transfers: vec![(4, false), (5, false)],
            pending_ledgers: BTreeMap::new(),
            pending_timeouts: BTreeMap::new(),
            posts: Vec::new(),
            chains: Vec::new(),
            expiries: Vec::new(),
            tick: false,
        };
        assert_eq!(due, std::slice::from_ref(&recovery));

        let (mut machine, action) = RecoveryMachine::new(router, recovery);
        assert!(matches!(action, Action::Lookup { .. }));
        let vote = participant_leg(router, &cross(5));
        let found = Reply::Found(vec![vec![vote], vec![]]);
        let decisions = submit(machine.step(found).unwrap(), Phase::Decide);
        let abort = Decision::Abort(R::IdAlreadyFailed);
        assert_eq!(
            decisions[1],
            [resolution(4, abort), resolution(5, Decision::Commit)]
        );
        // 4's abort loses to the commit a caller logged first.
        let action = machine
            .step(submitted(1, &[R::ExistsWithDifferentFlags, R::Ok]))
            .unwrap();
        let Action::Lookup { per_shard } = action else {
            panic!("the logged decision is read back");
        };
        assert_eq!(per_shard[1], [resolution_id(4)]);
        let logged = resolution(4, Decision::Commit);
        let events = submit(
            machine
                .step(Reply::Found(vec![vec![], vec![logged]]))
                .unwrap(),
            Phase::Finish,
        );
        assert_eq!(
            events[0],
            [
                resolution(4, Decision::Commit),
                resolution(5, Decision::Commit)
            ]
        );
        done(machine.step(submitted(0, &[R::Ok, R::Exists])).unwrap());

        // A seen vote alone needs no lookup: the decision is submitted at once.
        let recovery = Recovery {
            debit_shard: 1,
            credit_shard: 0,
            transfers: vec![(4, true)],
            pending_ledgers: BTreeMap::new(),
            pending_timeouts: BTreeMap::new(),
            posts: Vec::new(),
            chains: Vec::new(),
            expiries: Vec::new(),
            tick: false,
        };
        let (_, action) = RecoveryMachine::new(router, recovery);
        let decisions = submit(action, Phase::Decide);
        assert_eq!(decisions[1], [resolution(4, Decision::Commit)]);
    }

    #[test]
    fn missing_bridges_names_each_side_once_and_skips_known_ones() {
        let router = router();
        let missing = missing_bridges(router, &[cross(1), cross(2)], |_| false);
        let ids = |shard: usize| missing[shard].iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(1), [bridge_id(router, 1, 1, 0)]);
        assert_eq!(ids(0), [bridge_id(router, 1, 0, 1)]);
        assert!(missing[0][0].id >= SYSTEM_ID_MIN && missing[0][0].code == BRIDGE_CODE);
        let known = bridge_id(router, 1, 1, 0);
        let missing = missing_bridges(router, &[cross(1)], |id| id == known);
        assert!(missing[1].is_empty() && missing[0].len() == 1);
    }

    #[test]
    fn missing_bridges_tells_apart_ledgers_directions_and_pending_transfers() {
        let router = router();
        let mut other_ledger = cross(3);
        other_ledger.transfer.ledger = 2;
        let mut reversed = cross(4);
        std::mem::swap(
            &mut reversed.transfer.debit_account_id,
            &mut reversed.transfer.credit_account_id,
        );
        reversed = Cross::new(router, reversed.transfer);
        assert_eq!((reversed.debit_shard, reversed.credit_shard), (0, 1));
        let crosses = [
            cross(1),
            cross(2),
            pending_cross(5),
            other_ledger,
            pending_cross(6),
            reversed,
        ];
        let missing = missing_bridges(router, &crosses, |_| false);
        let ids = |shard: usize| missing[shard].iter().map(|a| a.id).collect::<Vec<_>>();
        // Each id once, in the order the crosses first need it: the plain bridges of ledger 1,
        // then the pending bridges and marker accounts, then ledger 2's plain bridges (the
        // reversed cross needs no other: a pair's two bridges serve both directions).
        for (local, peer) in [(1, 0), (0, 1)] {
            let expected = [
                bridge_id(router, 1, local, peer),
                pending_bridge_id(router, 1, local, peer),
                pending_bridge_id(router, 1, local, local),
                bridge_id(router, 2, local, peer),
            ];
            assert_eq!(ids(local), expected);
        }
        // With every bridge known, nothing is missing.
        let all: Vec<u128> = missing.iter().flatten().map(|account| account.id).collect();
        let missing = missing_bridges(router, &crosses, |id| all.contains(&id));
        assert!(missing.iter().all(Vec::is_empty));
    }

    /// A user's pending `t: A → B` (A on shard 1, B on shard 0).
    fn pending_cross(t: u128) -> Cross {
        let mut cross = cross(t);
        cross.transfer.flags = TransferFlags::PENDING;
        cross
    }

    #[test]
    fn a_pending_transfer_commits_by_markers_and_stays_pending() {
        let (t, router) = (pending_cross(7), router());
        let (mut call, action) = CallMachine::new(router, vec![t]);
        let prepares = submit(action, Phase::Prepare);
        let leg = prepares[1][0];
        assert!(is_pending_bridge(router, leg.credit_account_id));
        assert_eq!(leg.user_data_128, t.transfer.user_data_128, "the caller's");
        let votes = submit(call.step(submitted(1, &[R::Ok])).unwrap(), Phase::Vote);
        assert!(is_pending_bridge(router, votes[0][0].debit_account_id));
        let decisions = submit(call.step(submitted(0, &[R::Ok])).unwrap(), Phase::Decide);
        let marker = decisions[1][0];
        assert_eq!(
            (marker.id, marker.amount, marker.pending_id),
            (resolution_id(7), 0, 0)
        );
        assert!(!marker.flags.post_pending_transfer() && !marker.flags.void_pending_transfer());
        let outcome = done(call.step(submitted(1, &[R::Ok])).unwrap());
        assert_eq!(outcome.results, [R::Ok]);
        let (mut finish, action) = FinishMachine::new(router, &outcome.finishes);
        let events = submit(action, Phase::Finish);
        assert_eq!(events[0].len(), 1);
        assert_eq!(events[0][0].id, resolution_id(7));
        assert_eq!(router.shard_of(events[0][0].debit_account_id), 0);
        assert_eq!(events[0][0].amount, 0);
        done(finish.step(submitted(0, &[R::Ok])).unwrap());

        // The coordinator leg of a pending transfer keeps the caller's user data: a retry
        // with other user data says so (not "another credit account").
        let (mut call, action) = CallMachine::new(router, vec![t]);
        submit(action, Phase::Prepare);
        let outcome = done(
            call.step(submitted(1, &[R::ExistsWithDifferentUserData128]))
                .unwrap(),
        );
        assert_eq!(outcome.results, [R::ExistsWithDifferentUserData128]);
    }

    #[test]
    fn a_users_post_is_located_logged_applied_and_acknowledged() {
        let router = router();
        let t = pending_cross(7);
        let coordinator = coordinator_leg(router, &t);
        let participant = participant_leg(router, &t);
        let decided = decision_event(router, &t, Decision::Commit);
        let post = Transfer {
            pending_id: 7,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(20, 0, 0, 4, 0, 0)
        };
        let unknown = Transfer {
            pending_id: 8,
            ..post
        };
        let (mut locate, action) = LocateMachine::new(router, vec![post, unknown]);
        let Action::Lookup { per_shard } = action else {
            panic!("every shard is asked");
        };
        assert_eq!(per_shard[0], per_shard[1]);
        assert!(per_shard[0].contains(&leg_id(7)) && per_shard[0].contains(&resolution_id(8)));
        let found = Reply::Found(vec![vec![participant], vec![coordinator, decided]]);
        let located = done(locate.step(found).unwrap());
        let Located::Cross(cross_post) = located[0] else {
            panic!("a cross-shard pending transfer: {:?}", located[0]);
        };
        assert_eq!(cross_post.shards(), (1, 0));
        assert_eq!(cross_post.event().pending_id, leg_id(7));
        assert_eq!(
            cross_post.event().credit_account_id,
            coordinator.credit_account_id
        );
        assert_eq!(
            located[1],
            Located::Local {
                shard: 0,
                event: unknown
            }
        );

        let (mut posts, action) = PostMachine::new(router, vec![cross_post]);
        let logged = submit(action, Phase::Decide);
        assert_eq!(logged[1], [cross_post.event()]);
        let outcome = done(posts.step(submitted(1, &[R::Ok])).unwrap());
        assert_eq!(outcome.results, [R::Ok]);
        assert_eq!(outcome.finishes, [cross_post.event()]);
        let (mut finish, action) = PostFinishMachine::new(router, outcome.finishes);
        let applied = submit(action, Phase::Finish);
        assert_eq!(applied[0][0].id, applied_id(7));
        assert_eq!(applied[0][0].amount, 4);
        let acknowledged = submit(
            finish.step(submitted(0, &[R::Ok])).unwrap(),
            Phase::Acknowledge,
        );
        assert_eq!(acknowledged[1][0].id, 20, "the post itself, resubmitted");
        assert_eq!(acknowledged[1][0].pending_id, resolution_id(7));
        done(
            finish
                .step(submitted(1, &[R::ExistsWithDifferentPendingId]))
                .unwrap(),
        );

        // A retry answering Exists hands nothing over (the resolver works from the log).
        let (mut posts, _) = PostMachine::new(router, vec![cross_post]);
        let outcome = done(posts.step(submitted(1, &[R::Exists])).unwrap());
        assert!(outcome.finishes.is_empty());
    }

    /// Locates a user's post or void `post` of the committed pending transfer `t` (on shards
    /// 1 → 0), with the coordinator's expiry of it if `expiry` is given.
    fn locate_cross(t: &Cross, post: Transfer, expiry: Option<Transfer>) -> CrossPost {
        let router = router();
        let (mut locate, _) = LocateMachine::new(router, vec![post]);
        let mut coordinator = vec![
            coordinator_leg(router, t),
            decision_event(router, t, Decision::Commit),
        ];
        coordinator.extend(expiry);
        let found = Reply::Found(vec![vec![participant_leg(router, t)], coordinator]);
        match done(locate.step(found).unwrap())[..] {
            [Located::Cross(cross_post)] => cross_post,
            ref other => panic!("a cross-shard pending transfer: {other:?}"),
        }
    }

    #[test]
    fn a_located_post_names_the_callers_user_data_the_participant_leg_does_not_hold() {
        // The participant leg holds the timeout in user_data_32: the post names the caller's
        // (the coordinator leg's), so x(t) carries the same as the post logged at the
        // coordinator, which inherits it there.
        let t = expiring_cross(7, 3);
        let post = Transfer {
            pending_id: 7,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(20, 0, 0, 4, 0, 0)
        };
        let located = locate_cross(&t, post, None);
        assert_eq!(located.event().user_data_32, 99);
        assert_eq!(applied_event(&located.event()).user_data_32, 99);
        // One the caller names is kept.
        let named = Transfer {
            user_data_32: 5,
            ..post
        };
        assert_eq!(locate_cross(&t, named, None).event().user_data_32, 5);
    }

    #[test]
    fn a_post_losing_to_the_expiry_answers_expired() {
        let router = router();
        let t = expiring_cross(7, 1);
        let void = Transfer {
            pending_id: 7,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Transfer::new(20, 0, 0, 0, 0, 0)
        };
        // Located before the expiry, logged after it: the coordinator answers that the leg
        // is voided already; the expiry's void (x(t) there) is read back.
        let located = locate_cross(&t, void, None);
        assert!(!located.expired);
        let (mut posts, action) = PostMachine::new(router, vec![located]);
        submit(action, Phase::Decide);
        let action = posts
            .step(submitted(1, &[R::PendingTransferAlreadyVoided]))
            .unwrap();
        let Action::Lookup { per_shard } = action else {
            panic!("the expiry is looked up");
        };
        assert_eq!(per_shard, [vec![], vec![applied_id(7)]]);
        let decision = decision_event(router, &t, Decision::Commit);
        let found = Reply::Found(vec![vec![], vec![expiry(&decision)]]);
        let outcome = done(posts.step(found).unwrap());
        assert_eq!(outcome.results, [R::PendingTransferExpired]);
        assert!(outcome.finishes.is_empty());
        // Voided by a user's void (stored under its own id): no x(t), the code stands.
        let (mut posts, _) = PostMachine::new(router, vec![located]);
        posts
            .step(submitted(1, &[R::PendingTransferAlreadyVoided]))
            .unwrap();
        let outcome = done(posts.step(Reply::Found(vec![vec![]; SHARDS])).unwrap());
        assert_eq!(outcome.results, [R::PendingTransferAlreadyVoided]);
        // Found expired when located: no read.
        let expired = locate_cross(&t, void, Some(expiry(&decision)));
        assert!(expired.expired);
        let (mut posts, _) = PostMachine::new(router, vec![expired]);
        let outcome = done(
            posts
                .step(submitted(1, &[R::PendingTransferAlreadyVoided]))
                .unwrap(),
        );
        assert_eq!(outcome.results, [R::PendingTransferExpired]);
    }

    #[test]
    fn the_resolver_applies_a_logged_post() {
        let router = router();
        // User post 20 of pending transfer 7, as its coordinator (shard 1) logged it.
        let leg = coordinator_leg(router, &pending_cross(7));
        let logged = Transfer {
            pending_id: leg_id(7),
            credit_account_id: leg.credit_account_id,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Transfer::new(20, 0, 0, 0, 0, 0)
        };
        let mut resolver = Resolver::new(timing());
        let index = vec![Some(vec![]), Some(vec![logged])];
        let at = Duration::from_millis;
        assert!(resolver.pass(router, at(0), &reads(&index)).is_empty());
        let due = resolver.pass(router, at(20), &reads(&index));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].posts, [logged]);
        let (mut machine, action) = RecoveryMachine::new(router, due[0].clone());
        let applied = submit(action, Phase::Finish);
        assert_eq!(applied[0], [applied_event(&logged)]);
        assert!(applied[0][0].flags.void_pending_transfer());
        let acknowledged = submit(
            machine.step(submitted(0, &[R::Exists])).unwrap(),
            Phase::Acknowledge,
        );
        assert_eq!(acknowledged[1], [acknowledgement(&logged)]);
        // Anything but ExistsWithDifferentPendingId is a protocol error.
        assert!(machine.step(submitted(1, &[R::Exists])).is_err());
    }

    /// A chain: 1 → 2 (shards 1 → 0), 3 → 5 (shard 1), 4 → 6 (shard 0).
    fn chain() -> Vec<Transfer> {
        vec![
            Transfer::new(30, 1, 2, 10, 1, 1),
            Transfer::new(31, 3, 5, 10, 1, 1),
            Transfer::new(32, 4, 6, 10, 1, 1),
        ]
    }

    #[test]
    fn a_chain_records_prepares_decides_finishes_and_acknowledges() {
        let router = router();
        let (mut machine, action) = ChainMachine::new(router, vec![chain()]);
        assert_eq!(machine.first_coordinator(), Some(1));
        let records = submit(action, Phase::Record);
        assert_eq!(records[1].len(), 3);
        assert!(records[1].iter().all(is_chain_record));
        let parts = submit(
            machine.step(submitted(1, &[R::Ok; 3])).unwrap(),
            Phase::Prepare,
        );
        // Shard 1: 30's coordinator leg, 31's leg; shard 0: 30's participant leg, 32's leg.
        assert_eq!(
            parts[1].iter().map(|leg| leg.id).collect::<Vec<_>>(),
            [leg_id(30), leg_id(31)]
        );
        assert!(parts[1][0].flags.linked() && !parts[1][1].flags.linked());
        assert!(is_chain_bridge(router, parts[1][0].credit_account_id));
        assert!(parts[0][0].flags.linked() && !parts[0][1].flags.linked());
        let answers = Reply::Submitted(vec![vec![R::Ok; 2], vec![R::Ok; 2]]);
        let decisions = submit(machine.step(answers).unwrap(), Phase::Decide);
        assert_eq!(decisions[1], [resolution(30, Decision::Commit)]);
        let finish = submit(machine.step(submitted(1, &[R::Ok])).unwrap(), Phase::Finish);
        assert_eq!(finish[1], [resolution(31, Decision::Commit)]);
        assert_eq!(
            finish[0],
            [
                resolution(30, Decision::Commit),
                resolution(32, Decision::Commit)
            ]
        );
        let answers = Reply::Submitted(vec![vec![R::Ok; 2], vec![R::Ok]]);
        let acks = submit(machine.step(answers).unwrap(), Phase::Acknowledge);
        assert!(
            acks[1]
                .iter()
                .all(|ack| ack.user_data_32 == CHAIN_RECORD_DONE)
        );
        let done_answers = submitted(1, &[R::ExistsWithDifferentUserData32; 3]);
        assert_eq!(done(machine.step(done_answers).unwrap()), [vec![R::Ok; 3]]);
    }

    #[test]
    fn a_chain_failing_on_a_remote_shard_aborts_whole() {
        let router = router();
        let (mut machine, action) = ChainMachine::new(router, vec![chain()]);
        submit(action, Phase::Record);
        submit(
            machine.step(submitted(1, &[R::Ok; 3])).unwrap(),
            Phase::Prepare,
        );
        // Shard 0 refuses 32 (its second leg there): its part fails whole.
        let answers = Reply::Submitted(vec![
            vec![R::LinkedEventFailed, R::ExceedsCredits],
            vec![R::Ok; 2],
        ]);
        let decisions = submit(machine.step(answers).unwrap(), Phase::Decide);
        let abort = chain_abort(30, R::ExceedsCredits, 2);
        assert_eq!(decisions[1], [abort]);
        let finish = submit(machine.step(submitted(1, &[R::Ok])).unwrap(), Phase::Finish);
        let void = |t| resolution(t, Decision::Abort(R::ExceedsCredits));
        assert_eq!(finish[1], [fence(router, 31, 1), void(31)]);
        assert_eq!(
            finish[0],
            [
                fence(router, 30, 0),
                void(30),
                fence(router, 32, 0),
                void(32)
            ]
        );
        let answers = Reply::Submitted(vec![vec![R::Ok; 4], vec![R::Ok; 2]]);
        submit(machine.step(answers).unwrap(), Phase::Acknowledge);
        let results = done(
            machine
                .step(submitted(1, &[R::ExistsWithDifferentUserData32; 3]))
                .unwrap(),
        );
        assert_eq!(
            results,
            [vec![
                R::LinkedEventFailed,
                R::LinkedEventFailed,
                R::ExceedsCredits
            ]]
        );
    }

    #[test]
    fn the_resolver_ends_a_chain_from_its_records_and_leaves_its_legs_alone() {
        let router = router();
        let shape = ChainShape::new(router, &chain());
        let records = shape.records(router);
        let mut index = vec![Some(Vec::new()), Some(records.clone())];
        // Chain legs on both shards: no per-leg rule applies to them.
        for (shard, leg) in chain().iter().flat_map(|event| chain_legs(router, event)) {
            index[shard].as_mut().unwrap().push(leg);
        }
        let mut resolver = Resolver::new(timing());
        let at = Duration::from_millis;
        assert!(resolver.pass(router, at(0), &reads(&index)).is_empty());
        assert!(resolver.pass(router, at(20), &reads(&index)).is_empty());
        let due = resolver.pass(router, at(50), &reads(&index));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].debit_shard, due[0].credit_shard), (1, 1));
        assert!(due[0].transfers.is_empty());
        assert_eq!(due[0].chains, std::slice::from_ref(&shape));
        // Every leg exists and nothing was decided: commit.
        let (mut machine, action) = RecoveryMachine::new(router, due[0].clone());
        let Action::Lookup { per_shard } = action else {
            panic!("the legs and the decision are read");
        };
        assert!(per_shard[1].contains(&resolution_id(30)));
        let found: Vec<Vec<Transfer>> = index
            .iter()
            .map(|legs| legs.clone().unwrap_or_default())
            .collect();
        let decisions = submit(machine.step(Reply::Found(found)).unwrap(), Phase::Decide);
        assert_eq!(decisions[1], [resolution(30, Decision::Commit)]);
        // Missing a leg: presumed abort, the head fenced first.
        let (mut machine, _) = ChainRecoveryMachine::new(router, vec![shape]);
        let decisions = submit(
            machine
                .step(Reply::Found(vec![Vec::new(); SHARDS]))
                .unwrap(),
            Phase::Decide,
        );
        assert_eq!(
            decisions[1],
            [fence(router, 30, 1), chain_abort(30, R::IdAlreadyFailed, 0)]
        );
    }

    /// The records of `chain()` and what the resolver finds due when only the third one is
    /// left on the coordinator (shard 1).
    fn third_record_alone() -> (Vec<Transfer>, Vec<Recovery>) {
        let router = router();
        let records = ChainShape::new(router, &chain()).records(router);
        let index = vec![Some(Vec::new()), Some(vec![records[2]])];
        let mut resolver = Resolver::new(timing());
        let at = Duration::from_millis;
        assert!(resolver.pass(router, at(0), &reads(&index)).is_empty());
        let due = resolver.pass(router, at(50), &reads(&index));
        (records, due)
    }

    #[test]
    fn the_resolver_ends_a_partial_set_of_records_on_their_coordinator() {
        // Only the third event's record (its debit account on shard 0) is left on the chain's
        // coordinator, shard 1: a changed retry's, whose caller died before refusing it.
        let router = router();
        let (records, due) = third_record_alone();
        assert_eq!((due[0].debit_shard, due[0].credit_shard), (1, 1));
        assert_eq!(due[0].chains[0].coordinator, 1);
        assert_eq!(due[0].chains[0].head, 30);
        // The chain of 30 committed; the record's event has no leg. Nothing is logged for 30;
        // 32's leg is fenced and voided (never posted); the record is acknowledged.
        let (mut machine, action) = RecoveryMachine::new(router, due[0].clone());
        let Action::Lookup { per_shard } = action else {
            panic!("the legs and the decision are read");
        };
        assert_eq!(per_shard[0], [leg_id(32)]);
        let mut found = vec![Vec::new(); SHARDS];
        found[1].push(resolution(30, Decision::Commit));
        let finish = submit(machine.step(Reply::Found(found)).unwrap(), Phase::Decide);
        assert!(finish.iter().all(Vec::is_empty));
        let finish = submit(
            machine
                .step(Reply::Submitted(vec![Vec::new(); SHARDS]))
                .unwrap(),
            Phase::Finish,
        );
        let void = resolution(32, Decision::Abort(R::IdAlreadyFailed));
        assert_eq!(finish[0], [fence(router, 32, 0), void]);
        let answers = Reply::Submitted(vec![
            vec![R::DebitAccountNotFound, R::PendingTransferNotFound],
            Vec::new(),
        ]);
        let acks = submit(machine.step(answers).unwrap(), Phase::Acknowledge);
        assert_eq!(acks[1].len(), 1);
        assert_eq!(acks[1][0].id, records[2].id);
        done(
            machine
                .step(submitted(1, &[R::ExistsWithDifferentUserData32]))
                .unwrap(),
        );
    }

    #[test]
    fn the_resolver_makes_a_record_logged_with_its_heads_follow_the_chain() {
        // Logged with the head's record (a retry naming fewer events acknowledged the rest):
        // 32 follows the chain's commit; with no decision logged (burnt), it is voided.
        let router = router();
        let (records, due) = third_record_alone();
        let void = resolution(32, Decision::Abort(R::IdAlreadyFailed));
        let stored = |record: Transfer, timestamp| Transfer {
            timestamp,
            ..record
        };
        let mut found = vec![Vec::new(); SHARDS];
        found[1].extend([
            resolution(30, Decision::Commit),
            stored(records[0], 100),
            stored(records[2], 102),
        ]);
        let (mut machine, _) = RecoveryMachine::new(router, due[0].clone());
        submit(machine.step(Reply::Found(found)).unwrap(), Phase::Decide);
        let finish = submit(
            machine
                .step(Reply::Submitted(vec![Vec::new(); SHARDS]))
                .unwrap(),
            Phase::Finish,
        );
        assert_eq!(finish[0], [resolution(32, Decision::Commit)]);
        let (mut machine, _) = RecoveryMachine::new(router, due[0].clone());
        submit(
            machine
                .step(Reply::Found(vec![Vec::new(); SHARDS]))
                .unwrap(),
            Phase::Decide,
        );
        let finish = submit(
            machine
                .step(Reply::Submitted(vec![Vec::new(); SHARDS]))
                .unwrap(),
            Phase::Finish,
        );
        assert_eq!(finish[0], [fence(router, 32, 0), void]);
    }

    /// A chain of `events` whose records (on shard 1) existed: its parts are being logged.
    fn retried_chain(events: Vec<Transfer>) -> ChainMachine {
        let (mut machine, action) = ChainMachine::new(router(), vec![events]);
        submit(action, Phase::Record);
        submit(
            machine.step(submitted(1, &[R::Exists; 3])).unwrap(),
            Phase::Prepare,
        );
        machine
    }

    #[test]
    fn a_chain_never_commits_legs_of_two_versions_of_one_event() {
        // Version X of the chain (30 of 10) logged its part on shard 0 and died; version Y,
        // the same ids with 30 of 20, logs its part on shard 1 (the coordinator) and finds
        // X's on shard 0: 30's two legs differ.
        let router = router();
        let y: Vec<Transfer> = chain()
            .into_iter()
            .map(|event| Transfer {
                amount: if event.id == 30 { 20 } else { event.amount },
                ..event
            })
            .collect();
        let mut machine = retried_chain(y);
        let answers = Reply::Submitted(vec![
            vec![R::ExistsWithDifferentAmount, R::LinkedEventFailed],
            vec![R::Ok, R::Ok],
        ]);
        // Its parts were not all created now: the legs are read back before any commit.
        let Action::Lookup { per_shard } = machine.step(answers).unwrap() else {
            panic!("the legs are read back");
        };
        assert_eq!(per_shard[0], [leg_id(30), leg_id(32)]);
        let mut found = vec![Vec::new(); SHARDS];
        for (shard, leg) in chain().iter().flat_map(|event| chain_legs(router, event)) {
            let amount = if leg.id == leg_id(30) && shard == 1 {
                20
            } else {
                leg.amount
            };
            found[shard].push(Transfer { amount, ..leg });
        }
        let decisions = submit(
            machine.step(Reply::Found(found.clone())).unwrap(),
            Phase::Decide,
        );
        assert_eq!(
            decisions[1],
            [chain_abort(30, R::ExistsWithDifferentAmount, 0)],
            "A would be debited 20 at the coordinator, B credited 10 at the participant"
        );
        // The resolver, both callers dead: every leg exists, 30's differ.
        let shape = ChainShape::new(router, &chain());
        let (mut machine, _) = ChainRecoveryMachine::new(router, vec![shape]);
        let decisions = submit(machine.step(Reply::Found(found)).unwrap(), Phase::Decide);
        assert_ne!(decisions[1], [resolution(30, Decision::Commit)]);
    }

    #[test]
    fn a_retried_chain_commits_only_its_own_recorded_events() {
        let router = router();
        // The same legs all of one version (this call's): the commit goes on.
        let mut machine = retried_chain(chain());
        let answers = Reply::Submitted(vec![
            vec![R::Exists, R::LinkedEventFailed],
            vec![R::Ok, R::Ok],
        ]);
        let Action::Lookup { .. } = machine.step(answers).unwrap() else {
            panic!("the legs are read back");
        };
        let legs = chain()
            .iter()
            .flat_map(|event| chain_legs(router, event))
            .fold(vec![Vec::new(); SHARDS], |mut legs, (shard, leg)| {
                legs[shard].push(leg);
                legs
            });
        // Its records, logged together (one recorded later would be voided, see `orphans`).
        let mut logged = legs;
        let records = ChainShape::new(router, &chain()).records(router);
        logged[1].extend((100..).zip(records).map(|(timestamp, record)| Transfer {
            timestamp,
            ..record
        }));
        let decisions = submit(
            machine.step(Reply::Found(logged.clone())).unwrap(),
            Phase::Decide,
        );
        assert_eq!(decisions[1], [resolution(30, Decision::Commit)]);
        // The third recorded later: the chain aborts; if it committed before, 32 is voided.
        logged[1].last_mut().unwrap().timestamp = 500;
        let mut machine = retried_chain(chain());
        let answers = Reply::Submitted(vec![
            vec![R::Exists, R::LinkedEventFailed],
            vec![R::Ok, R::Ok],
        ]);
        machine.step(answers).unwrap();
        let decisions = submit(machine.step(Reply::Found(logged)).unwrap(), Phase::Decide);
        assert_eq!(decisions[1], [chain_abort(30, R::Exists, 0)]);
        let answer = submitted(1, &[R::ExistsWithDifferentFlags]);
        let Action::Lookup { .. } = machine.step(answer).unwrap() else {
            panic!("the decision logged first is read back");
        };
        let mut decision = vec![Vec::new(); SHARDS];
        decision[1].push(resolution(30, Decision::Commit));
        let finish = submit(machine.step(Reply::Found(decision)).unwrap(), Phase::Finish);
        assert_eq!(finish[1], [resolution(31, Decision::Commit)]);
        let void = resolution(32, Decision::Abort(R::IdAlreadyFailed));
        assert_eq!(
            finish[0],
            [resolution(30, Decision::Commit), fence(router, 32, 0), void]
        );
    }

    #[test]
    fn a_retry_whose_legs_the_resolver_committed_answers_exists_on_the_first_event() {
        // Seed 309397: a first attempt logged the second event's part (shard 0) and died; its
        // retry logs the head's part (shard 1, the coordinator) now, but the resolver reads
        // every leg and logs the commit first. The chain committed: `Exists` on the head, as
        // one ledger answers a retry of a committed chain, not `[LinkedEventFailed, Exists]`.
        let router = router();
        let events = vec![
            Transfer::new(40, 3, 5, 10, 1, 1),
            Transfer::new(41, 4, 6, 10, 1, 1),
        ];
        let (mut machine, action) = ChainMachine::new(router, vec![events.clone()]);
        submit(action, Phase::Record);
        submit(
            machine.step(submitted(1, &[R::Exists; 2])).unwrap(),
            Phase::Prepare,
        );
        let answers = Reply::Submitted(vec![vec![R::Exists], vec![R::Ok]]);
        let Action::Lookup { .. } = machine.step(answers).unwrap() else {
            panic!("the legs are read back");
        };
        let mut logged = vec![Vec::new(); SHARDS];
        for (shard, leg) in events.iter().flat_map(|event| chain_legs(router, event)) {
            logged[shard].push(leg);
        }
        let records = ChainShape::new(router, &events).records(router);
        logged[1].extend((100..).zip(records).map(|(timestamp, record)| Transfer {
            timestamp,
            ..record
        }));
        let decisions = submit(machine.step(Reply::Found(logged)).unwrap(), Phase::Decide);
        assert_eq!(decisions[1], [resolution(40, Decision::Commit)]);
        // The resolver's commit was logged first.
        let finish = submit(
            machine.step(submitted(1, &[R::Exists])).unwrap(),
            Phase::Finish,
        );
        assert_eq!(finish[0], [resolution(41, Decision::Commit)]);
        let answers = Reply::Submitted(vec![vec![R::Exists], Vec::new()]);
        submit(machine.step(answers).unwrap(), Phase::Acknowledge);
        let done_answers = submitted(1, &[R::ExistsWithDifferentUserData32; 2]);
        assert_eq!(
            done(machine.step(done_answers).unwrap()),
            [vec![R::Exists, R::LinkedEventFailed]]
        );
    }

    /// A user's pending `t` with `timeout` seconds and the caller's `user_data_32` set.
    fn expiring_cross(t: u128, timeout: u32) -> Cross {
        let mut cross = pending_cross(t);
        cross.transfer.timeout = timeout;
        cross.transfer.user_data_32 = 99;
        cross
    }

    /// The commit decision in a Decide submission to shard 1 (the coordinator), asserting
    /// it is the expiring marker of `cross`.
    fn expiring_decision_of(decisions: &[Vec<Transfer>], cross: &Cross) -> Transfer {
        assert!(decisions[0].is_empty());
        let [decision] = decisions[1][..] else {
            panic!("one decision: {decisions:?}");
        };
        assert_eq!(decision, decision_event(router(), cross, Decision::Commit));
        assert!(is_expiring_decision(&decision));
        decision
    }

    /// The one recovery a fresh resolver finds due for `held`, first seen at 0 and read again
    /// `after_ms` later.
    fn recovery_due(held: &[Option<Vec<Transfer>>], after_ms: u64) -> Recovery {
        let mut resolver = Resolver::new(timing());
        let at = Duration::from_millis;
        assert!(resolver.pass(router(), at(0), &reads(held)).is_empty());
        let mut due = resolver.pass(router(), at(after_ms), &reads(held));
        assert_eq!(due.len(), 1);
        due.remove(0)
    }

    /// Given `action`, the lookup of `voted`'s participant leg (on shard 0), answers it with
    /// that leg and returns the commit decision `machine` then submits (the expiring marker of
    /// `voted`).
    fn decided_after_reading_the_vote<M: Machine>(
        machine: &mut M,
        action: Action<M::Outcome>,
        voted: &Cross,
    ) -> Transfer
    where
        M::Outcome: std::fmt::Debug,
    {
        let Action::Lookup { per_shard } = action else {
            panic!("the vote's leg is read: {action:?}");
        };
        assert_eq!(per_shard, [vec![leg_id(voted.transfer.id)], vec![]]);
        let vote = participant_leg(router(), voted);
        let found = Reply::Found(vec![vec![vote], vec![]]);
        let decisions = submit(machine.step(found).unwrap(), Phase::Decide);
        expiring_decision_of(&decisions, voted)
    }

    #[test]
    fn a_pending_transfers_timeout_rides_on_its_participant_leg_only() {
        let router = router();
        let t = expiring_cross(7, 3);
        let (coordinator, participant) = (coordinator_leg(router, &t), participant_leg(router, &t));
        // Neither leg expires by itself; the coordinator leg keeps the caller's user data
        // (a user's post inherits it there), the participant leg holds the timeout.
        assert_eq!((coordinator.timeout, participant.timeout), (0, 0));
        assert_eq!(coordinator.user_data_32, 99);
        assert_eq!(leg_timeout(&participant), 3);
        // A plain transfer's participant leg keeps the caller's user data.
        let plain = Cross {
            transfer: Transfer {
                user_data_32: 99,
                ..cross(7).transfer
            },
            ..cross(7)
        };
        assert_eq!(participant_leg(router, &plain).user_data_32, 99);
    }

    #[test]
    fn the_resolver_commits_a_seen_vote_with_the_timeout_its_leg_carries() {
        // The caller of pending transfer 4 (timeout 3 s) died after the vote: the resolver
        // sees the participant leg and commits from it alone (no lookup).
        let router = router();
        let t = expiring_cross(4, 3);
        let due = recovery_due(&legs(&[], &[t]), 20);
        assert_eq!(due.transfers, [(4, true)]);
        assert_eq!(due.pending_timeouts, BTreeMap::from([(4, 3)]));
        let (mut machine, action) = RecoveryMachine::new(router, due);
        let decision = expiring_decision_of(&submit(action, Phase::Decide), &t);
        assert_eq!(
            decision.user_data_64, 3,
            "the decision carries the leg's timeout"
        );
        // Then the participant's marker, as for a caller's decision.
        let finish = submit(machine.step(submitted(1, &[R::Ok])).unwrap(), Phase::Finish);
        assert_eq!(finish[0], [commit_event(router, &t)]);
        done(machine.step(submitted(0, &[R::Ok])).unwrap());
        // Without a timeout, the decision carries none (it never expires).
        let forever = expiring_cross(4, 0);
        let due = recovery_due(&legs(&[], &[forever]), 20);
        let (_, action) = RecoveryMachine::new(router, due);
        let decisions = submit(action, Phase::Decide);
        assert_eq!(
            decisions[1],
            [decision_event(router, &forever, Decision::Commit)]
        );
        assert!(!is_expiring_decision(&decisions[1][0]));
    }

    #[test]
    fn the_resolver_commits_an_old_coordinator_leg_with_the_timeout_of_the_vote_it_finds() {
        // The caller of pending transfer 5 (timeout 7 s) gave up after the vote; the resolver
        // sees only the coordinator leg (the participant's read came later), so it looks the
        // vote up and commits with the timeout the vote's leg carries.
        let router = router();
        let t = expiring_cross(5, 7);
        let due = recovery_due(&legs(&[t], &[]), 50);
        assert_eq!(due.transfers, [(5, false)]);
        assert!(
            due.pending_timeouts.is_empty(),
            "the coordinator leg holds none"
        );
        let (mut machine, action) = RecoveryMachine::new(router, due.clone());
        let decision = decided_after_reading_the_vote(&mut machine, action, &t);
        assert_eq!(
            decision.user_data_64, 7,
            "the decision carries the vote's timeout"
        );
        // No vote found: presumed abort, as for any transfer.
        let (mut machine, _) = RecoveryMachine::new(router, due);
        let decisions = submit(
            machine.step(Reply::Found(vec![vec![]; SHARDS])).unwrap(),
            Phase::Decide,
        );
        assert!(decisions[1][0].flags.void_pending_transfer());
    }

    #[test]
    fn a_retry_with_another_timeout_commits_with_the_first_and_says_so() {
        // The first attempt (timeout 5 s) died after the vote; its retry asks for 2 s. The
        // vote answers that the leg differs in the field holding the timeout: the retry reads
        // the leg, commits with the first attempt's timeout (as the resolver would) and
        // answers as one ledger would.
        let router = router();
        let (first, retry) = (expiring_cross(7, 5), expiring_cross(7, 2));
        let (mut call, action) = CallMachine::new(router, vec![retry]);
        submit(action, Phase::Prepare);
        submit(call.step(submitted(1, &[R::Exists])).unwrap(), Phase::Vote);
        let action = call
            .step(submitted(0, &[R::ExistsWithDifferentUserData32]))
            .unwrap();
        let decision = decided_after_reading_the_vote(&mut call, action, &first);
        assert_eq!(decision.user_data_64, 5);
        let outcome = done(call.step(submitted(1, &[R::Ok])).unwrap());
        assert_eq!(outcome.results, [R::ExistsWithDifferentTimeout]);
        assert_eq!(outcome.finishes.len(), 1);
        // A vote's leg that answered Exists… must be found.
        let (mut call, action) = CallMachine::new(router, vec![retry]);
        submit(action, Phase::Prepare);
        call.step(submitted(1, &[R::Exists])).unwrap();
        call.step(submitted(0, &[R::ExistsWithDifferentUserData32]))
            .unwrap();
        assert!(call.step(Reply::Found(vec![vec![]; SHARDS])).is_err());
        // The same timeout: Exists, no read.
        let (mut call, action) = CallMachine::new(router, vec![first]);
        submit(action, Phase::Prepare);
        call.step(submitted(1, &[R::Exists])).unwrap();
        let decisions = submit(
            call.step(submitted(0, &[R::Exists])).unwrap(),
            Phase::Decide,
        );
        expiring_decision_of(&decisions, &first);
        let outcome = done(call.step(submitted(1, &[R::Exists])).unwrap());
        assert_eq!(outcome.results, [R::Exists]);
    }

    #[test]
    fn the_resolver_voids_an_expired_pending_transfer() {
        let router = router();
        let mut t = pending_cross(7);
        t.transfer.timeout = 1;
        let decision = decision_event(router, &t, Decision::Commit);
        assert_eq!(decision.user_data_64, 1, "the decision carries the timeout");
        assert!(is_expiring_decision(&decision));
        // Decided at 5 s of shard 1's ledger time: it expires at 6 s of that time.
        let decision = Transfer {
            timestamp: 5 * SECOND,
            ..decision
        };
        let mut resolver = Resolver::new(timing());
        let at = Duration::from_millis;
        let shard_at = |ledger_now| {
            vec![
                Some(Unresolved::default()),
                Some(read(ledger_now, decision)),
            ]
        };
        // First read: the shard's ledger time may be stale (it could be idle since): a tick.
        assert_eq!(
            ticks(&resolver.pass(router, at(0), &shard_at(5_500 * MILLI))),
            [1]
        );
        // It moved: not stale. Read unchanged for 90 ms, it is still 100 ms short.
        assert!(
            resolver
                .pass(router, at(10), &shard_at(5_900 * MILLI))
                .is_empty()
        );
        assert!(
            resolver
                .pass(router, at(100), &shard_at(5_900 * MILLI))
                .is_empty()
        );
        // Unchanged for 100 ms: it may have reached the deadline, a tick moves it.
        let due = resolver.pass(router, at(110), &shard_at(5_900 * MILLI));
        assert_eq!(ticks(&due), [1]);
        assert!(due[0].expiries.is_empty());
        // A nanosecond short in ledger time (whatever the resolver's clock says): not yet.
        let due = resolver.pass(router, at(5_000), &shard_at(6 * SECOND - 1));
        assert!(due.iter().all(|recovery| recovery.expiries.is_empty()));
        let due = resolver.pass(router, at(5_010), &shard_at(6 * SECOND));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].debit_shard, due[0].credit_shard), (1, 0));
        assert_eq!(due[0].expiries, [decision]);
        assert!(!due[0].tick, "the void moves the ledger time");
        let (mut machine, action) = RecoveryMachine::new(router, due[0].clone());
        let voids = submit(action, Phase::Decide);
        let void = expiry(&decision);
        assert_eq!(voids[1], [void]);
        assert_eq!((void.id, void.pending_id), (applied_id(7), leg_id(7)));
        // Logged: the participant applies it, the coordinator acknowledges.
        let applied = submit(machine.step(submitted(1, &[R::Ok])).unwrap(), Phase::Finish);
        assert_eq!(applied[0], [applied_event(&void)]);
        submit(
            machine.step(submitted(0, &[R::Ok])).unwrap(),
            Phase::Acknowledge,
        );
        done(
            machine
                .step(submitted(1, &[R::ExistsWithDifferentPendingId]))
                .unwrap(),
        );
        // Its user resolved it first: nothing more to do.
        let (mut machine, _) = RecoveryMachine::new(router, due[0].clone());
        let answer = submitted(1, &[R::PendingTransferAlreadyPosted]);
        done(machine.step(answer).unwrap());
    }

    const SECOND: u64 = 1_000_000_000;
    const MILLI: u64 = 1_000_000;

    /// A shard's read at ledger time `ledger_now` holding `decision`.
    fn read(ledger_now: u64, decision: Transfer) -> Unresolved {
        Unresolved {
            ledger_now,
            entries: vec![decision],
        }
    }

    /// The shards the recoveries tick.
    fn ticks(due: &[Recovery]) -> Vec<usize> {
        due.iter()
            .filter(|recovery| recovery.tick)
            .inspect(|recovery| assert_eq!(recovery.debit_shard, recovery.credit_shard))
            .map(|recovery| recovery.debit_shard)
            .collect()
    }

    #[test]
    fn a_tick_logs_an_event_that_stores_nothing() {
        let router = router();
        let recovery = Recovery {
            debit_shard: 1,
            credit_shard: 1,
            transfers: Vec::new(),
            pending_ledgers: BTreeMap::new(),
            pending_timeouts: BTreeMap::new(),
            posts: Vec::new(),
            chains: Vec::new(),
            expiries: Vec::new(),
            tick: true,
        };
        let (mut machine, action) = RecoveryMachine::new(router, recovery.clone());
        let ticks = submit(action, Phase::Acknowledge);
        assert_eq!(ticks, [vec![], vec![tick()]]);
        done(machine.step(submitted(1, &[R::IdMustNotBeZero])).unwrap());
        // Anything else is no tick's answer.
        let (mut machine, _) = RecoveryMachine::new(router, recovery);
        assert!(machine.step(submitted(1, &[R::Ok])).is_err());
    }

    #[test]
    fn a_restarted_resolver_does_not_restart_the_timeout() {
        // A pending transfer decided at 5 s of its coordinator's ledger time with a timeout
        // of 10 s; the resolver restarts at 20 s (its own clock starts at zero again).
        let router = router();
        let mut t = pending_cross(7);
        t.transfer.timeout = 10;
        let decision = Transfer {
            timestamp: 5 * SECOND,
            ..decision_event(router, &t, Decision::Commit)
        };
        let shard_at = |ledger_now| {
            vec![
                Some(Unresolved::default()),
                Some(read(ledger_now, decision)),
            ]
        };
        // The shard applied entries since the deadline: voided on the first pass.
        let due = Resolver::new(timing()).pass(router, Duration::ZERO, &shard_at(20 * SECOND));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].expiries, [decision]);
        // Idle since before the deadline: the first pass ticks at once (it does not wait for
        // a timeout of its own), and the pass after the tick voids it.
        let mut resolver = Resolver::new(timing());
        let due = resolver.pass(router, Duration::ZERO, &shard_at(6 * SECOND));
        assert_eq!(ticks(&due), [1]);
        assert!(due[0].expiries.is_empty());
        let due = resolver.pass(router, Duration::from_millis(10), &shard_at(20 * SECOND));
        assert_eq!(due[0].expiries, [decision]);
    }
}
