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
//! - at the end, on the replicas themselves: both legs posted or neither, every acknowledged
//!   transfer posted on both sides, no rejected transfer posted, nothing in flight.

use std::collections::{BTreeMap, BTreeSet};

use ledger_core::{Account, Command, CreateTransferResult as R, Reply, SYSTEM_ID_MIN, Transfer};
use ledger_paxos::StateMachine;
use ledger_paxos::sim::Simulator;

use crate::machine::LedgerMachine;
use crate::sim::world::Planned;
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

/// One shard's chosen log, applied.
#[derive(Debug, Default)]
pub(crate) struct Oracle {
    machine: LedgerMachine,
    next_slot: u64,
}

impl Oracle {
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
    in_flight: BTreeMap<u32, u128>,
    /// `(shard, t)` → when the leg was applied.
    unresolved: BTreeMap<(usize, u128), u64>,
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
            return Ok(());
        };
        self.unresolved.remove(&(shard, t));
        let plan = planned
            .get(&t)
            .ok_or_else(|| format!("shard {shard}: a resolution of unknown transfer {t}"))?;
        let post = transfer.flags.post_pending_transfer();
        let amount = plan.transfer.amount;
        let ledger = plan.transfer.ledger;
        if shard == plan.debit_shard {
            if post {
                if self.aborted.contains(&t) {
                    return Err(format!("I10: transfer {t} committed after an abort"));
                }
                self.committed.insert(t);
                *self.in_flight.entry(ledger).or_default() += amount;
            } else {
                if self.committed.contains(&t) {
                    return Err(format!("I10: transfer {t} aborted after a commit"));
                }
                if self.participant_posted.contains(&t) {
                    return Err(format!(
                        "atomicity: transfer {t} aborted at its coordinator (shard {shard}) \
                         after its participant posted it"
                    ));
                }
                self.aborted.insert(t);
            }
        } else if shard == plan.credit_shard {
            if post {
                if !self.committed.contains(&t) {
                    return Err(format!(
                        "atomicity: participant shard {shard} posted transfer {t} before its \
                         coordinator (shard {}) committed it",
                        plan.debit_shard
                    ));
                }
                self.participant_posted.insert(t);
                let flight = self.in_flight.entry(ledger).or_default();
                *flight = flight.checked_sub(amount).ok_or_else(|| {
                    format!("conservation: transfer {t} posted twice at its participant")
                })?;
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
            let ids: Vec<u128> = customers
                .iter()
                .filter(|a| a.id % shards as u128 == shard as u128)
                .map(|a| a.id)
                .collect();
            let found = oracle
                .machine
                .probe()
                .with_ledger(|ledger| ledger.lookup_accounts(&ids));
            for account in found {
                let entry = sums.entry(account.ledger).or_default();
                entry.0 += signed(account.credits_posted) - signed(account.debits_posted);
            }
        }
        for account in customers {
            sums.entry(account.ledger).or_default().1 += signed(opening_balance);
        }
        for (ledger, (posted, funded)) in sums {
            let in_flight = signed(self.in_flight.get(&ledger).copied().unwrap_or(0));
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
                    "resolution: transfer {t}'s leg on shard {shard} (applied at {created_us}us) \
                     is unresolved at {now_us}us, {bound_us}us after both its shards ({} and {}) \
                     had leaders ({debit}us, {credit}us)",
                    plan.debit_shard, plan.credit_shard
                ));
            }
        }
        Ok(())
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
        for (&t, plan) in planned {
            let acknowledged = plan.answered.is_some_and(|r: R| r.is_ok() || r.is_exists());
            let rejected = plan
                .answered
                .is_some_and(|r: R| !(r.is_ok() || r.is_exists()));
            if plan.debit_shard == plan.credit_shard {
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
                continue;
            }
            let resolution = 2 * SYSTEM_ID_MIN + t;
            let at_coordinator = lookup(plan.debit_shard, resolution);
            let at_participant = lookup(plan.credit_shard, resolution);
            let coordinator_posted =
                at_coordinator.is_some_and(|r| r.flags.post_pending_transfer());
            let participant_posted =
                at_participant.is_some_and(|r| r.flags.post_pending_transfer());
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
            if acknowledged && !coordinator_posted {
                return Err(format!(
                    "lost: transfer {t} was answered {:?} but is not posted on both sides",
                    plan.answered
                ));
            }
            if rejected && coordinator_posted {
                return Err(format!(
                    "transfer {t} was answered {:?} but is posted",
                    plan.answered
                ));
            }
            if coordinator_posted {
                committed += 1;
            } else if at_coordinator.is_some() {
                aborted += 1;
            }
        }
        Ok((committed, aborted))
    }
}
