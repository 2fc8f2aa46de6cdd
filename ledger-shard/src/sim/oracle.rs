//! The cross-shard checks. Each shard has an *oracle*: the chosen log (every value any
//! replica applied, as the Paxos simulator records it) applied once more to a fresh
//! [`LedgerMachine`], so the checks see everything a shard committed, at once, even while
//! the replicas that applied it are down. From the oracles' applied results the [`Tracker`]
//! follows every cross-shard transfer:
//!
//! - **atomicity, as it happens**: a participant posts only a transfer its coordinator
//!   committed, never voids one it committed; a coordinator never both commits and aborts;
//! - **conservation**: per ledger, Σ over shards of the customers' posted balances plus the
//!   amounts committed at the coordinator and not yet posted at the participant equals what
//!   was funded;
//! - **resolution bound**: after the heal, every leg resolves within the bound of both its
//!   shards having leaders;
//! - users' pending transfers, posts and voids: a commit is a marker `res(t)` on both sides;
//!   a user's post logged at the coordinator is in flight until the participant's `x(t)`,
//!   which must be the same post or void; users' posts, expiries and chain records must be
//!   acknowledged within the bound; a committed pending transfer with a timeout (whoever
//!   logged its decision: its caller or the resolver) must be posted or voided (by its
//!   expiry) at its coordinator within the bound of its deadline (or of every shard having a
//!   leader, if later), and an expiry's void never applies before the deadline in the
//!   coordinator's ledger time;
//! - chains: a leg commits only after its coordinator's `res(head)` committed;
//! - at the end, on the replicas themselves: both legs posted or neither, every acknowledged
//!   transfer posted on both sides, no rejected transfer posted, nothing in flight; chains
//!   all or none; posts and voids answered `Ok` on both sides; no pending amount left.

use std::collections::{BTreeMap, BTreeSet};

use ledger_core::{Account, Command, CreateTransferResult as R, Reply, SYSTEM_ID_MIN, Transfer};
use ledger_paxos::StateMachine;
use ledger_paxos::sim::Simulator;

use crate::machine::LedgerMachine;
use crate::router::Router;
use crate::sim::world::{Kind, Planned};
use crate::wire::{self, ReplyStatus};

/// Balances here are far below `i128::MAX`.
fn signed(value: u128) -> i128 {
    i128::try_from(value).unwrap_or(i128::MAX)
}

fn leg_t(id: u128) -> Option<u128> {
    (SYSTEM_ID_MIN..2 * SYSTEM_ID_MIN)
        .contains(&id)
        .then(|| id - SYSTEM_ID_MIN)
}

fn resolution_t(id: u128) -> Option<u128> {
    (2 * SYSTEM_ID_MIN..3 * SYSTEM_ID_MIN)
        .contains(&id)
        .then(|| id - 2 * SYSTEM_ID_MIN)
}

/// `t` of `x(t)`: a participant's application of a user's post, a chain's record, or an
/// expiry's void at the coordinator.
fn applied_t(id: u128) -> Option<u128> {
    (id >= 3 * SYSTEM_ID_MIN).then(|| id - 3 * SYSTEM_ID_MIN)
}

/// One shard's chosen log, applied.
#[derive(Debug, Default)]
pub(crate) struct Oracle {
    machine: LedgerMachine,
    next_slot: u64,
}

impl Oracle {
    pub(crate) fn next_slot(&self) -> u64 {
        self.next_slot
    }

    pub(crate) fn machine(&self) -> &LedgerMachine {
        &self.machine
    }

    /// Applies the newly chosen entries of `group` and tracks their cross-shard effects;
    /// `true` if anything was applied.
    pub(crate) fn catch_up(
        &mut self,
        shard: usize,
        group: &Simulator<LedgerMachine>,
        now_us: u64,
        planned: &BTreeMap<u128, Planned>,
        tracker: &mut Tracker,
    ) -> Result<bool, String> {
        let mut applied = false;
        while let Some(entry) = group.chosen_entry(self.next_slot) {
            for command in entry.commands.iter() {
                let reply =
                    self.machine
                        .apply(self.next_slot, entry.timestamp_ns, &command.payload);
                tracker.observe(shard, &command.payload, &reply, now_us, planned)?;
            }
            self.next_slot += 1;
            applied = true;
        }
        Ok(applied)
    }
}

/// What the checks know of every cross-shard transfer, from the oracles.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    committed: BTreeSet<u128>,
    aborted: BTreeSet<u128>,
    participant_posted: BTreeSet<u128>,
    /// Chains by head: a member's leg posted (or committed pending) somewhere.
    chain_posted: BTreeSet<u128>,
    /// Per ledger: amounts posted at one side of a cross-shard transfer (its coordinator, or
    /// for a chain's event either side first) and not yet at the other.
    in_flight: BTreeMap<u32, i128>,
    /// `(shard, t)` → when the leg was applied.
    unresolved: BTreeMap<(usize, u128), u64>,
    /// Users' posts and voids (and expiries) of cross-shard pending transfers, by `t`, as
    /// their coordinators logged them: (void, amount).
    logged_posts: BTreeMap<u128, (bool, u128)>,
    /// Protocol records in a coordinator's index until acknowledged — users' posts (`p`),
    /// expiries and chain records (`x(t)`) — by `(shard, id)`: when applied.
    records: BTreeMap<(usize, u128), u64>,
    /// Users' pending transfers committed with a timeout (by their caller or the resolver)
    /// and not yet posted or voided at their coordinator, by `t`: when they expire, in
    /// simulated time (when the decision was chosen plus the timeout: no earlier than its
    /// deadline in the coordinator's ledger time, which follows the leaders' clocks).
    expiring: BTreeMap<u128, u64>,
}

impl Tracker {
    fn observe(
        &mut self,
        shard: usize,
        payload: &[u8],
        reply: &[u8],
        now_us: u64,
        planned: &BTreeMap<u128, Planned>,
    ) -> Result<(), String> {
        let Some((_, command)) = wire::decode_command_envelope(payload) else {
            return Ok(());
        };
        let Ok(Command::CreateTransfers(transfers)) = Command::decode(command) else {
            return Ok(());
        };
        let Some((ReplyStatus::Applied, body)) = wire::decode_reply_envelope(reply) else {
            return Ok(());
        };
        let Ok(Reply::CreateTransfers(results)) = Reply::decode(body) else {
            return Err(format!(
                "shard {shard}: transfers answered with the wrong kind"
            ));
        };
        for (transfer, result) in transfers.iter().zip(results) {
            if result.is_ok() {
                self.observe_ok(shard, transfer, now_us, planned)?;
            } else if (result == R::ExistsWithDifferentPendingId
                && resolution_t(transfer.pending_id).is_some())
                || (result == R::ExistsWithDifferentUserData32
                    && applied_t(transfer.id).is_some()
                    && transfer.user_data_32 == u32::MAX)
            {
                // A coordinator's acknowledgement of a user's post or expiry, or of a chain
                // record: out of its index.
                self.records.remove(&(shard, transfer.id));
            }
        }
        Ok(())
    }

    /// A user's post or void at its coordinator (`pending_id = leg(t)`), or an `x(t)`.
    fn observe_post(
        &mut self,
        shard: usize,
        transfer: &Transfer,
        now_us: u64,
        planned: &BTreeMap<u128, Planned>,
    ) -> Result<(), String> {
        let void = transfer.flags.void_pending_transfer();
        let post = transfer.flags.post_pending_transfer();
        if let Some(t) = leg_t(transfer.pending_id).filter(|_| transfer.id < SYSTEM_ID_MIN) {
            let plan = planned
                .get(&t)
                .ok_or_else(|| format!("shard {shard}: a post of unknown transfer {t}"))?;
            if plan.debit_shard == plan.credit_shard {
                // A same-shard event of a chain, posted where it lives.
                return Ok(());
            }
            self.logged(t, void, transfer.amount, plan)?;
            self.records.insert((shard, transfer.id), now_us);
            return Ok(());
        }
        let Some(t) = applied_t(transfer.id) else {
            return Ok(());
        };
        let plan = planned
            .get(&t)
            .ok_or_else(|| format!("shard {shard}: x({t}) of an unknown transfer"))?;
        if !post && !void {
            // A chain record.
            self.records.insert((shard, transfer.id), now_us);
        } else if shard == plan.credit_shard && plan.debit_shard != shard {
            let Some(&(logged_void, amount)) = self.logged_posts.get(&t) else {
                return Err(format!(
                    "atomicity: participant shard {shard} applied a post or void of pending \
                     transfer {t} that its coordinator (shard {}) never logged",
                    plan.debit_shard
                ));
            };
            if logged_void != void || (post && amount != transfer.amount) {
                return Err(format!(
                    "atomicity: participant shard {shard} applied {} of {} to pending transfer \
                     {t}, its coordinator (shard {}) logged {} of {amount}",
                    if void { "a void" } else { "a post" },
                    transfer.amount,
                    plan.debit_shard,
                    if logged_void { "a void" } else { "a post" },
                ));
            }
            if post {
                *self.in_flight.entry(plan.transfer.ledger).or_default() -= signed(amount);
            }
        } else if shard == plan.debit_shard && void {
            // An expiry, voided at the coordinator like a user's void.
            self.logged(t, true, 0, plan)?;
            self.records.insert((shard, transfer.id), now_us);
        } else {
            return Err(format!(
                "shard {shard} applied x({t}), which does not touch it as it does"
            ));
        }
        Ok(())
    }

    /// The coordinator of pending transfer `t` logged its (first) post or void.
    fn logged(&mut self, t: u128, void: bool, amount: u128, plan: &Planned) -> Result<(), String> {
        if self.logged_posts.contains_key(&t) {
            return Err(format!(
                "pending transfer {t} posted or voided twice at its coordinator"
            ));
        }
        self.logged_posts.insert(t, (void, amount));
        self.expiring.remove(&t);
        if !void {
            *self.in_flight.entry(plan.transfer.ledger).or_default() += signed(amount);
        }
        Ok(())
    }

    /// A resolution `res(t)` of an event of a chain spanning shards: its coordinator's
    /// `res(head)` decides; every other leg only follows the decision.
    fn observe_chain_resolution(
        &mut self,
        shard: usize,
        t: u128,
        head: u128,
        transfer: &Transfer,
        planned: &BTreeMap<u128, Planned>,
    ) -> Result<(), String> {
        let plan = &planned[&t];
        let coordinator = planned.get(&head).map_or(usize::MAX, |h| h.debit_shard);
        let commit = !transfer.flags.void_pending_transfer();
        if t == head && shard == coordinator {
            let posted = self.chain_posted.contains(&head);
            self.decide("chain", head, shard, commit, posted)?;
        } else if commit {
            if !self.committed.contains(&head) {
                return Err(format!(
                    "atomicity: shard {shard} committed event {t} of chain {head} before its \
                     coordinator (shard {coordinator}) did"
                ));
            }
            self.chain_posted.insert(head);
        } else if self.committed.contains(&head) {
            return Err(format!(
                "atomicity: shard {shard} voided event {t} of chain {head}, which its \
                 coordinator (shard {coordinator}) committed"
            ));
        }
        if transfer.flags.post_pending_transfer() && plan.debit_shard != plan.credit_shard {
            let flight = self.in_flight.entry(plan.transfer.ledger).or_default();
            if shard == plan.debit_shard {
                *flight += signed(plan.transfer.amount);
            } else {
                *flight -= signed(plan.transfer.amount);
            }
        }
        Ok(())
    }

    fn observe_ok(
        &mut self,
        shard: usize,
        transfer: &Transfer,
        now_us: u64,
        planned: &BTreeMap<u128, Planned>,
    ) -> Result<(), String> {
        if let Some(t) = leg_t(transfer.id) {
            self.unresolved.insert((shard, t), now_us);
            return Ok(());
        }
        let Some(t) = resolution_t(transfer.id) else {
            return self.observe_post(shard, transfer, now_us, planned);
        };
        self.unresolved.remove(&(shard, t));
        let plan = planned
            .get(&t)
            .ok_or_else(|| format!("shard {shard}: a resolution of unknown transfer {t}"))?;
        if let Kind::Chain { head } = plan.kind {
            return self.observe_chain_resolution(shard, t, head, transfer, planned);
        }
        // A post commits a plain transfer, a marker (neither post nor void) a pending one.
        let commit = !transfer.flags.void_pending_transfer();
        let post = transfer.flags.post_pending_transfer();
        let amount = if post { plan.transfer.amount } else { 0 };
        let ledger = plan.transfer.ledger;
        if shard == plan.debit_shard {
            let posted = self.participant_posted.contains(&t);
            self.decide("transfer", t, shard, commit, posted)?;
            // A user's pending transfer committed (a marker) with a timeout, whoever logged
            // the decision (its caller, or the resolver for a caller that gave up): it must
            // expire. The timeout is the one the workload asked for, not what the decision
            // carries.
            let timeout_us = u64::from(plan.transfer.timeout).saturating_mul(1_000_000);
            let pending = plan.kind == Kind::Pending;
            if commit && !post && pending && timeout_us != 0 && !self.logged_posts.contains_key(&t)
            {
                self.expiring.insert(t, now_us + timeout_us);
            }
            *self.in_flight.entry(ledger).or_default() += signed(amount);
        } else if shard == plan.credit_shard {
            if commit {
                if !self.committed.contains(&t) {
                    return Err(format!(
                        "atomicity: participant shard {shard} posted transfer {t} before its \
                         coordinator (shard {}) committed it",
                        plan.debit_shard
                    ));
                }
                if !self.participant_posted.insert(t) {
                    return Err(format!(
                        "conservation: transfer {t} posted twice at its participant"
                    ));
                }
                *self.in_flight.entry(ledger).or_default() -= signed(amount);
            } else if self.committed.contains(&t) {
                return Err(format!(
                    "atomicity: participant shard {shard} voided transfer {t}, which its \
                     coordinator (shard {}) committed",
                    plan.debit_shard
                ));
            }
        } else {
            return Err(format!(
                "shard {shard} resolved transfer {t}, which does not touch it"
            ));
        }
        Ok(())
    }

    /// Records a coordinator's decision on `id` (a transfer, or a chain by its head): never
    /// both ways, never an abort after one of its legs was posted elsewhere (`posted`).
    fn decide(
        &mut self,
        what: &str,
        id: u128,
        shard: usize,
        commit: bool,
        posted: bool,
    ) -> Result<(), String> {
        if commit {
            if self.aborted.contains(&id) {
                return Err(format!("I10: {what} {id} committed after an abort"));
            }
            self.committed.insert(id);
        } else {
            if self.committed.contains(&id) {
                return Err(format!("I10: {what} {id} aborted after a commit"));
            }
            if posted {
                return Err(format!(
                    "atomicity: {what} {id} aborted at its coordinator (shard {shard}) after \
                     one of its legs was posted"
                ));
            }
            self.aborted.insert(id);
        }
        Ok(())
    }

    /// Per ledger: Σ customers' posted balances (every shard, as chosen) + committed amounts
    /// not yet posted at their participant = what was funded.
    pub(crate) fn check_conservation(
        &self,
        oracles: &[Oracle],
        customers: &[Account],
        opening_balance: u128,
    ) -> Result<(), String> {
        let shards = oracles.len();
        let mut sums: BTreeMap<u32, (i128, i128)> = BTreeMap::new();
        for (shard, oracle) in oracles.iter().enumerate() {
            let found = shard_customers(&oracle.machine, customers, Router::new(shards), shard);
            for account in found {
                let entry = sums.entry(account.ledger).or_default();
                entry.0 += signed(account.credits_posted) - signed(account.debits_posted);
            }
        }
        for account in customers {
            sums.entry(account.ledger).or_default().1 += signed(opening_balance);
        }
        for (ledger, (posted, funded)) in sums {
            let in_flight = self.in_flight.get(&ledger).copied().unwrap_or(0);
            if posted + in_flight != funded {
                return Err(format!(
                    "conservation: ledger {ledger}: customers' posted balances {posted} + in \
                     flight {in_flight} != funded {funded}"
                ));
            }
        }
        Ok(())
    }

    /// After the heal: every leg resolves within `bound_us` of both its shards having leaders
    /// (or of its own creation, if later).
    pub(crate) fn check_resolution_bound(
        &self,
        now_us: u64,
        leader_since: &[Option<u64>],
        planned: &BTreeMap<u128, Planned>,
        bound_us: u64,
    ) -> Result<(), String> {
        for (&(shard, t), &created_us) in &self.unresolved {
            let Some(plan) = planned.get(&t) else {
                continue;
            };
            let (Some(debit), Some(credit)) = (
                leader_since[plan.debit_shard],
                leader_since[plan.credit_shard],
            ) else {
                continue;
            };
            let start_us = created_us.max(debit).max(credit);
            if now_us > start_us + bound_us {
                return Err(format!(
                    "resolution: transfer {t}'s leg ({:?}) on shard {shard} (applied at \
                     {created_us}us) \
                     is unresolved at {now_us}us, {bound_us}us after both its shards ({} and {}) \
                     had leaders ({debit}us, {credit}us)",
                    plan.kind, plan.debit_shard, plan.credit_shard
                ));
            }
        }
        let all_leaders = leader_since
            .iter()
            .try_fold(0, |latest: u64, since| since.map(|since| latest.max(since)));
        if let Some(all_leaders) = all_leaders {
            for (&(shard, id), &created_us) in &self.records {
                let start_us = created_us.max(all_leaders);
                if now_us > start_us + bound_us {
                    return Err(format!(
                        "resolution: protocol record {id:#x} on shard {shard} (a user's post, \
                         an expiry or a chain record, applied at {created_us}us) is not \
                         acknowledged at {now_us}us, {bound_us}us after every shard had a \
                         leader ({all_leaders}us)"
                    ));
                }
            }
            for (&t, &deadline_us) in &self.expiring {
                let start_us = deadline_us.max(all_leaders);
                if now_us > start_us + bound_us {
                    return Err(format!(
                        "expiry: pending transfer {t} (expiring at {deadline_us}us) is neither \
                         posted nor voided at {now_us}us, {bound_us}us after its deadline and \
                         every shard having a leader ({all_leaders}us)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// At the end, on the replicas: no expiry's void (`x(t)` at the coordinator) applied
    /// before its deadline in the coordinator's ledger time (the decision's timestamp plus
    /// the timeout), as a same-shard pending transfer's expiry never does.
    pub(crate) fn check_expiries_never_early(
        finals: &[&LedgerMachine],
        planned: &BTreeMap<u128, Planned>,
    ) -> Result<u64, String> {
        let mut expired = 0;
        for (&t, plan) in planned {
            let cross = plan.debit_shard != plan.credit_shard;
            if plan.kind != Kind::Pending || !cross || plan.transfer.timeout == 0 {
                continue;
            }
            let [decision, void] = [2 * SYSTEM_ID_MIN, 3 * SYSTEM_ID_MIN].map(|base| {
                finals[plan.debit_shard]
                    .probe()
                    .with_ledger(|ledger| ledger.lookup_transfers(&[base + t]).first().copied())
            });
            let (Some(decision), Some(void)) = (decision, void) else {
                continue;
            };
            // The deadline of the timeout asked for (the decision must carry it: one carrying
            // less would let its expiry come early).
            let deadline = crate::crossshard::decision_deadline(&Transfer {
                user_data_64: u64::from(plan.transfer.timeout),
                ..decision
            });
            if void.timestamp < deadline {
                return Err(format!(
                    "expiry: pending transfer {t} voided by its expiry at {} on shard {}, \
                     before its deadline {deadline} (ledger time)",
                    void.timestamp, plan.debit_shard
                ));
            }
            expired += 1;
        }
        Ok(expired)
    }

    /// Nothing is in flight and no leg is unresolved.
    pub(crate) fn check_nothing_in_flight(&self) -> Result<(), String> {
        if let Some(((shard, t), at)) = self.unresolved.iter().next() {
            return Err(format!(
                "I10: {} legs unresolved at the end, e.g. transfer {t} on shard {shard} (since \
                 {at}us)",
                self.unresolved.len()
            ));
        }
        if let Some(((shard, id), at)) = self.records.iter().next() {
            return Err(format!(
                "I10: {} protocol records unacknowledged at the end, e.g. {id:#x} on shard \
                 {shard} (since {at}us)",
                self.records.len()
            ));
        }
        if let Some((ledger, amount)) = self.in_flight.iter().find(|(_, amount)| **amount != 0) {
            return Err(format!(
                "conservation: ledger {ledger} ends with {amount} committed and never posted"
            ));
        }
        Ok(())
    }

    /// At the end, on one replica of each shard: both legs or neither, every acknowledged
    /// transfer posted on both sides, no rejected one posted. Returns (committed, aborted).
    pub(crate) fn check_final(
        &self,
        finals: &[&LedgerMachine],
        planned: &BTreeMap<u128, Planned>,
    ) -> Result<(u64, u64), String> {
        let lookup = |shard: usize, id: u128| -> Option<Transfer> {
            finals[shard]
                .probe()
                .with_ledger(|ledger| ledger.lookup_transfers(&[id]).first().copied())
        };
        let (mut committed, mut aborted) = (0, 0);
        let mut chains: BTreeMap<u128, Vec<(u128, bool)>> = BTreeMap::new();
        for (&t, plan) in planned {
            let acknowledged = plan.answered.is_some_and(|r: R| r.is_ok() || r.is_exists());
            match plan.kind {
                Kind::Plain | Kind::Pending => {}
                Kind::Chain { head } => {
                    let committed = chain_member_committed(&lookup, t, head, plan)?;
                    chains.entry(head).or_default().push((t, committed));
                    continue;
                }
                Kind::Post { t: pending } => {
                    Self::check_post_final(&lookup, t, pending, plan, planned)?;
                    continue;
                }
            }
            let rejected = plan
                .answered
                .is_some_and(|r: R| !(r.is_ok() || r.is_exists()));
            if plan.debit_shard == plan.credit_shard {
                check_local_final(&lookup, t, plan, acknowledged, rejected)?;
                continue;
            }
            let resolution = 2 * SYSTEM_ID_MIN + t;
            let at_coordinator = lookup(plan.debit_shard, resolution);
            let at_participant = lookup(plan.credit_shard, resolution);
            // Committed: a post (plain) or a marker (pending), not a void.
            let coordinator_posted =
                at_coordinator.is_some_and(|r| !r.flags.void_pending_transfer());
            let participant_posted =
                at_participant.is_some_and(|r| !r.flags.void_pending_transfer());
            if coordinator_posted != self.committed.contains(&t) {
                return Err(format!(
                    "I5: transfer {t}: the final replicas of shard {} disagree with its chosen \
                     log on the decision",
                    plan.debit_shard
                ));
            }
            if coordinator_posted != participant_posted {
                return Err(format!(
                    "atomicity: transfer {t} is posted at its {} only",
                    if coordinator_posted {
                        "coordinator"
                    } else {
                        "participant"
                    }
                ));
            }
            if (acknowledged && !coordinator_posted) || (rejected && coordinator_posted) {
                return Err(format!(
                    "{}: transfer {t} was answered {:?} but is {}posted on both sides",
                    if coordinator_posted { "answer" } else { "lost" },
                    plan.answered,
                    if coordinator_posted { "" } else { "not " }
                ));
            }
            if coordinator_posted {
                committed += 1;
            } else if at_coordinator.is_some() {
                aborted += 1;
            }
        }
        check_chains_final(&chains, planned)?;
        Ok((committed, aborted))
    }

    /// A user's post or void `p` of pending transfer `t` answered `Ok`: logged at the
    /// coordinator and applied the same at the participant (`x(t)`).
    fn check_post_final(
        lookup: &impl Fn(usize, u128) -> Option<Transfer>,
        p: u128,
        t: u128,
        plan: &Planned,
        planned: &BTreeMap<u128, Planned>,
    ) -> Result<(), String> {
        if plan.answered != Some(R::Ok) {
            return Ok(());
        }
        let Some(pending) = planned.get(&t) else {
            return Err(format!("post {p} of an unknown transfer {t}"));
        };
        if pending.debit_shard == pending.credit_shard {
            // A same-shard event of a chain: posted where it lives.
            if lookup(pending.debit_shard, p).is_none() {
                return Err(format!(
                    "lost: post {p} of {t} was answered Ok but is not found"
                ));
            }
            return Ok(());
        }
        let logged = lookup(pending.debit_shard, p);
        let applied = lookup(pending.credit_shard, 3 * SYSTEM_ID_MIN + t);
        let void = plan.transfer.flags.void_pending_transfer();
        let same = |found: Option<Transfer>| {
            found.is_some_and(|found| {
                found.flags.void_pending_transfer() == void
                    && (void || found.amount == plan.transfer.amount)
            })
        };
        if !same(logged) || !same(applied) {
            return Err(format!(
                "lost: {} {p} of pending transfer {t} was answered Ok, but its coordinator \
                 (shard {}) holds {logged:?} and its participant (shard {}) {applied:?}",
                if void { "void" } else { "post" },
                pending.debit_shard,
                pending.credit_shard
            ));
        }
        Ok(())
    }

    /// At the end no customer has a pending amount: every pending transfer the workload
    /// created was posted, voided or expired, on both sides.
    pub(crate) fn check_no_pending(
        finals: &[&LedgerMachine],
        customers: &[Account],
    ) -> Result<(), String> {
        let shards = finals.len();
        for (shard, machine) in finals.iter().enumerate() {
            let found = shard_customers(machine, customers, Router::new(shards), shard);
            if let Some(account) = found
                .iter()
                .find(|a| a.debits_pending != 0 || a.credits_pending != 0)
            {
                return Err(format!(
                    "pending: account {} on shard {shard} ends with debits_pending {} and \
                     credits_pending {}",
                    account.id, account.debits_pending, account.credits_pending
                ));
            }
        }
        Ok(())
    }

    /// At the end every customer account is closed iff a closing pending transfer naming it
    /// on its closing side was posted (a user's post `p` stored at its coordinator): a
    /// post keeps it closed, a void, an abort or an expiry reopens it. Returns how many
    /// accounts are closed.
    pub(crate) fn check_closed(
        finals: &[&LedgerMachine],
        customers: &[Account],
        planned: &BTreeMap<u128, Planned>,
    ) -> Result<u64, String> {
        let router = Router::new(finals.len());
        let mut expected = BTreeSet::new();
        for (&p, plan) in planned {
            let Kind::Post { t } = plan.kind else {
                continue;
            };
            let Some(pending) = planned.get(&t) else {
                continue;
            };
            let flags = pending.transfer.flags;
            if !(flags.closing_debit() || flags.closing_credit()) {
                continue;
            }
            let posted = finals[pending.debit_shard]
                .probe()
                .with_ledger(|ledger| ledger.lookup_transfers(&[p]).first().copied())
                .is_some_and(|found| found.flags.post_pending_transfer());
            if posted && flags.closing_debit() {
                expected.insert(pending.transfer.debit_account_id);
            }
            if posted && flags.closing_credit() {
                expected.insert(pending.transfer.credit_account_id);
            }
        }
        let mut closed = 0;
        for (shard, machine) in finals.iter().enumerate() {
            for account in shard_customers(machine, customers, router, shard) {
                if account.flags.closed() != expected.contains(&account.id) {
                    return Err(format!(
                        "closing: account {} on shard {shard} ends {}, but {} posted closing \
                         transfer names it",
                        account.id,
                        if account.flags.closed() {
                            "closed"
                        } else {
                            "open"
                        },
                        if account.flags.closed() { "no" } else { "a" }
                    ));
                }
                closed += u64::from(account.flags.closed());
            }
        }
        Ok(closed)
    }
}

/// Whether event `t` of chain `head` is committed (at its debit shard), and on both sides alike.
fn chain_member_committed(
    lookup: &impl Fn(usize, u128) -> Option<Transfer>,
    t: u128,
    head: u128,
    plan: &Planned,
) -> Result<bool, String> {
    let committed = lookup(plan.debit_shard, 2 * SYSTEM_ID_MIN + t)
        .is_some_and(|r| !r.flags.void_pending_transfer());
    if plan.debit_shard != plan.credit_shard {
        let other = lookup(plan.credit_shard, 2 * SYSTEM_ID_MIN + t)
            .is_some_and(|r| !r.flags.void_pending_transfer());
        if other != committed {
            return Err(format!(
                "atomicity: event {t} of chain {head} is committed at its {} only",
                if committed {
                    "debit shard"
                } else {
                    "credit shard"
                }
            ));
        }
    }
    Ok(committed)
}

/// Each chain all or none; answered `Ok`: all; rejected: none.
fn check_chains_final(
    chains: &BTreeMap<u128, Vec<(u128, bool)>>,
    planned: &BTreeMap<u128, Planned>,
) -> Result<(), String> {
    for (head, members) in chains {
        let all = members.iter().all(|(_, committed)| *committed);
        if !all && members.iter().any(|(_, committed)| *committed) {
            return Err(format!(
                "atomicity: chain {head} committed only some of its events: {members:?}"
            ));
        }
        let answered = planned.get(head).and_then(|plan| plan.answered);
        if answered == Some(R::Ok) && !all {
            return Err(format!(
                "lost: chain {head} was answered Ok but is not committed"
            ));
        }
        if answered.is_some_and(|r| !(r.is_ok() || r.is_exists())) && all {
            return Err(format!(
                "chain {head} was answered {answered:?} but is committed"
            ));
        }
    }
    Ok(())
}

/// A same-shard transfer: found iff acknowledged (not if rejected).
fn check_local_final(
    lookup: &impl Fn(usize, u128) -> Option<Transfer>,
    t: u128,
    plan: &Planned,
    acknowledged: bool,
    rejected: bool,
) -> Result<(), String> {
    let found = lookup(plan.debit_shard, t).is_some();
    if acknowledged && !found {
        return Err(format!(
            "lost: transfer {t} was acknowledged but is not found"
        ));
    }
    if rejected && found {
        return Err(format!(
            "transfer {t} was answered {:?} but is posted",
            plan.answered
        ));
    }
    Ok(())
}

/// The customers the router places on `shard`, as `machine`'s ledger holds them now.
fn shard_customers(
    machine: &LedgerMachine,
    customers: &[Account],
    router: Router,
    shard: usize,
) -> Vec<Account> {
    let ids: Vec<u128> = customers
        .iter()
        .map(|a| a.id)
        .filter(|&id| router.shard_of(id) == shard)
        .collect();
    machine
        .probe()
        .with_ledger(|ledger| ledger.lookup_accounts(&ids))
}
