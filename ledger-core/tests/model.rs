//! Model test: random batches (every flag, linked chains, pending/post/void, timeouts, bad ids,
//! overflowing amounts) go to the `Ledger` and to a deliberately naive reference ledger written
//! here from the documented rules (hash maps, whole-state clones for chain rollback, a full scan
//! for expiry). After every batch the results, every account, every transfer, the history
//! queries and the invariants must agree; at the end two fresh ledgers fed the same batches
//! give byte-identical snapshots (I5), and the snapshot round-trips.

#![allow(
    clippy::too_many_lines,
    reason = "the naive model spells every rule out in one place"
)]
#![allow(
    clippy::unwrap_used,
    reason = "the reference model indexes maps it just checked"
)]

use std::collections::{HashMap, HashSet};

use ledger_core::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult,
    CreateTransferResult as R, Ledger, Transfer, TransferFlags,
};
use proptest::prelude::*;
use proptest::sample::select;

const MAX: u128 = u128::MAX;
const SECOND_NS: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    None,
    Pending,
    Posted,
    Voided,
    Expired,
}

/// The naive reference ledger.
#[derive(Clone, Debug, Default)]
struct Model {
    accounts: HashMap<u128, Account>,
    account_order: Vec<u128>,
    transfers: HashMap<u128, (Transfer, Status)>,
    transfer_order: Vec<u128>,
    failed: HashSet<u128>,
    history: HashMap<u128, Vec<AccountBalance>>,
    last_timestamp: u64,
}

impl Model {
    /// Returns the batch's first timestamp after expiring what is due, or `None` if empty.
    fn begin(&mut self, event_count: usize, timestamp: u64) -> Option<u64> {
        if event_count == 0 {
            return None;
        }
        let base = timestamp.max(self.last_timestamp + 1);
        self.last_timestamp = base + event_count as u64 - 1;
        let due: Vec<u128> = self
            .transfers
            .values()
            .filter(|(t, status)| {
                *status == Status::Pending
                    && t.timeout > 0
                    && t.timestamp + u64::from(t.timeout) * SECOND_NS <= base
            })
            .map(|(t, _)| t.id)
            .collect();
        for id in due {
            let (t, status) = self.transfers.get_mut(&id).unwrap();
            *status = Status::Expired;
            let t = *t;
            self.release(&t);
        }
        Some(base)
    }

    /// How many stored posts are system resolutions, which the ledger keeps as no record: a
    /// post of the full amount of pending transfer `LEG + t` under the id `RES + t`, inheriting
    /// its user data, between two accounts without `HISTORY`.
    fn system_resolution_count(&self) -> usize {
        let history = |id: &u128| self.accounts[id].flags.history();
        self.transfers
            .values()
            .filter(|(post, _)| {
                let Some((pending, _)) = self.transfers.get(&post.pending_id) else {
                    return false;
                };
                post.flags.post_pending_transfer()
                    && (LEG..RES).contains(&post.pending_id)
                    && post.id == post.pending_id + LEG
                    && post.amount == pending.amount
                    && (post.user_data_128, post.user_data_64, post.user_data_32)
                        == (
                            pending.user_data_128,
                            pending.user_data_64,
                            pending.user_data_32,
                        )
                    && !history(&post.debit_account_id)
                    && !history(&post.credit_account_id)
            })
            .count()
    }

    fn release(&mut self, p: &Transfer) {
        let debit = self.accounts.get_mut(&p.debit_account_id).unwrap();
        debit.debits_pending -= p.amount;
        if p.flags.closing_debit() {
            debit.flags = debit.flags.difference(AccountFlags::CLOSED);
        }
        let credit = self.accounts.get_mut(&p.credit_account_id).unwrap();
        credit.credits_pending -= p.amount;
        if p.flags.closing_credit() {
            credit.flags = credit.flags.difference(AccountFlags::CLOSED);
        }
    }

    fn create_accounts(&mut self, events: &[Account], timestamp: u64) -> Vec<CreateAccountResult> {
        let Some(base) = self.begin(events.len(), timestamp) else {
            return Vec::new();
        };
        let mut results = Vec::new();
        let mut chain: Option<(usize, Model)> = None;
        let mut broken = false;
        for (i, a) in events.iter().enumerate() {
            if a.flags.linked() && chain.is_none() {
                chain = Some((i, self.clone()));
            }
            let result = if broken {
                CreateAccountResult::LinkedEventFailed
            } else if a.flags.linked() && i == events.len() - 1 {
                CreateAccountResult::LinkedEventChainOpen
            } else {
                self.create_account(a, base + i as u64)
            };
            results.push(result);
            if let Some((start, saved)) = &chain {
                if result != CreateAccountResult::Ok && !broken {
                    broken = true;
                    let last_timestamp = self.last_timestamp;
                    *self = saved.clone();
                    self.last_timestamp = last_timestamp;
                    for r in &mut results[*start..i] {
                        *r = CreateAccountResult::LinkedEventFailed;
                    }
                }
                if !a.flags.linked() {
                    chain = None;
                    broken = false;
                }
            }
        }
        results
    }

    fn create_account(&mut self, a: &Account, timestamp: u64) -> CreateAccountResult {
        use CreateAccountResult as C;
        if a.timestamp != 0 {
            return C::TimestampMustBeZero;
        }
        if a.reserved != 0 {
            return C::ReservedField;
        }
        if a.flags.bits() >= 1 << 5 {
            return C::ReservedFlag;
        }
        if a.id == 0 {
            return C::IdMustNotBeZero;
        }
        if a.id == MAX {
            return C::IdMustNotBeIntMax;
        }
        if let Some(e) = self.accounts.get(&a.id) {
            let closed = AccountFlags::CLOSED.bits();
            return if a.flags.bits() & !closed != e.flags.bits() & !closed {
                C::ExistsWithDifferentFlags
            } else if a.user_data_128 != e.user_data_128 {
                C::ExistsWithDifferentUserData128
            } else if a.user_data_64 != e.user_data_64 {
                C::ExistsWithDifferentUserData64
            } else if a.user_data_32 != e.user_data_32 {
                C::ExistsWithDifferentUserData32
            } else if a.ledger != e.ledger {
                C::ExistsWithDifferentLedger
            } else if a.code != e.code {
                C::ExistsWithDifferentCode
            } else {
                C::Exists
            };
        }
        let result = if a.flags.debits_must_not_exceed_credits()
            && a.flags.credits_must_not_exceed_debits()
        {
            C::FlagsAreMutuallyExclusive
        } else if a.debits_pending != 0 {
            C::DebitsPendingMustBeZero
        } else if a.debits_posted != 0 {
            C::DebitsPostedMustBeZero
        } else if a.credits_pending != 0 {
            C::CreditsPendingMustBeZero
        } else if a.credits_posted != 0 {
            C::CreditsPostedMustBeZero
        } else if a.ledger == 0 {
            C::LedgerMustNotBeZero
        } else if a.code == 0 {
            C::CodeMustNotBeZero
        } else {
            C::Ok
        };
        if result == C::Ok {
            self.accounts.insert(a.id, Account { timestamp, ..*a });
            self.account_order.push(a.id);
        }
        result
    }

    fn create_transfers(&mut self, events: &[Transfer], timestamp: u64) -> Vec<R> {
        let Some(base) = self.begin(events.len(), timestamp) else {
            return Vec::new();
        };
        let mut results = Vec::new();
        let mut chain: Option<(usize, Model)> = None;
        let mut broken = false;
        for (i, t) in events.iter().enumerate() {
            if t.flags.linked() && chain.is_none() {
                chain = Some((i, self.clone()));
            }
            let result = if broken {
                R::LinkedEventFailed
            } else if t.flags.linked() && i == events.len() - 1 {
                R::LinkedEventChainOpen
            } else {
                self.create_transfer(t, base + i as u64)
            };
            results.push(result);
            if let Some((start, saved)) = &chain {
                if result != R::Ok && !broken {
                    broken = true;
                    let (last_timestamp, failed) = (self.last_timestamp, self.failed.clone());
                    *self = saved.clone();
                    self.last_timestamp = last_timestamp;
                    self.failed = failed;
                    for r in &mut results[*start..i] {
                        *r = R::LinkedEventFailed;
                    }
                }
                if !t.flags.linked() {
                    chain = None;
                    broken = false;
                }
            }
            if is_transient(result) {
                self.failed.insert(t.id);
            }
        }
        results
    }

    fn create_transfer(&mut self, t: &Transfer, timestamp: u64) -> R {
        if t.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if t.flags.bits() >= 1 << 8 {
            return R::ReservedFlag;
        }
        if t.id == 0 {
            return R::IdMustNotBeZero;
        }
        if t.id == MAX {
            return R::IdMustNotBeIntMax;
        }
        if let Some((e, _)) = self.transfers.get(&t.id) {
            return self.exists(t, e);
        }
        if self.failed.contains(&t.id) {
            return R::IdAlreadyFailed;
        }
        let f = t.flags;
        let phases = [
            f.pending(),
            f.post_pending_transfer(),
            f.void_pending_transfer(),
        ];
        let resolving = f.post_pending_transfer() || f.void_pending_transfer();
        let shaped =
            f.balancing_debit() || f.balancing_credit() || f.closing_debit() || f.closing_credit();
        if phases.iter().filter(|&&p| p).count() > 1 || (resolving && shaped) {
            return R::FlagsAreMutuallyExclusive;
        }
        if resolving {
            return self.post_or_void(t, timestamp);
        }
        self.single_or_pending(t, timestamp)
    }

    fn exists(&self, t: &Transfer, e: &Transfer) -> R {
        if t.flags != e.flags {
            return R::ExistsWithDifferentFlags;
        }
        if t.pending_id != e.pending_id {
            return R::ExistsWithDifferentPendingId;
        }
        if t.timeout != e.timeout {
            return R::ExistsWithDifferentTimeout;
        }
        let resolving = t.flags.post_pending_transfer() || t.flags.void_pending_transfer();
        // Zero means "inherit from the pending transfer" for posts and voids.
        let differs = |new: u128, old: u128| new != old && !(resolving && new == 0);
        if differs(t.debit_account_id, e.debit_account_id) {
            return R::ExistsWithDifferentDebitAccountId;
        }
        if differs(t.credit_account_id, e.credit_account_id) {
            return R::ExistsWithDifferentCreditAccountId;
        }
        let amount_differs = if resolving {
            let pending_amount = self.transfers[&e.pending_id].0.amount;
            let full = t.amount == MAX || (t.flags.void_pending_transfer() && t.amount == 0);
            (if full { pending_amount } else { t.amount }) != e.amount
        } else if t.flags.balancing_debit() || t.flags.balancing_credit() {
            t.amount < e.amount
        } else {
            t.amount != e.amount
        };
        if amount_differs {
            return R::ExistsWithDifferentAmount;
        }
        if differs(t.user_data_128, e.user_data_128) {
            return R::ExistsWithDifferentUserData128;
        }
        if differs(t.user_data_64.into(), e.user_data_64.into()) {
            return R::ExistsWithDifferentUserData64;
        }
        if differs(t.user_data_32.into(), e.user_data_32.into()) {
            return R::ExistsWithDifferentUserData32;
        }
        if differs(t.ledger.into(), e.ledger.into()) {
            return R::ExistsWithDifferentLedger;
        }
        if differs(t.code.into(), e.code.into()) {
            return R::ExistsWithDifferentCode;
        }
        R::Exists
    }

    fn single_or_pending(&mut self, t: &Transfer, timestamp: u64) -> R {
        let f = t.flags;
        let checks = [
            (t.debit_account_id == 0, R::DebitAccountIdMustNotBeZero),
            (t.debit_account_id == MAX, R::DebitAccountIdMustNotBeIntMax),
            (t.credit_account_id == 0, R::CreditAccountIdMustNotBeZero),
            (
                t.credit_account_id == MAX,
                R::CreditAccountIdMustNotBeIntMax,
            ),
            (
                t.debit_account_id == t.credit_account_id,
                R::AccountsMustBeDifferent,
            ),
            (t.pending_id != 0, R::PendingIdMustBeZero),
            (
                !f.pending() && t.timeout != 0,
                R::TimeoutReservedForPendingTransfer,
            ),
            (
                !f.pending() && (f.closing_debit() || f.closing_credit()),
                R::ClosingTransferMustBePending,
            ),
            (t.ledger == 0, R::LedgerMustNotBeZero),
            (t.code == 0, R::CodeMustNotBeZero),
            (
                !self.accounts.contains_key(&t.debit_account_id),
                R::DebitAccountNotFound,
            ),
            (
                !self.accounts.contains_key(&t.credit_account_id),
                R::CreditAccountNotFound,
            ),
        ];
        if let Some(&(_, result)) = checks.iter().find(|(broken, _)| *broken) {
            return result;
        }
        let dr = self.accounts[&t.debit_account_id];
        let cr = self.accounts[&t.credit_account_id];
        let mut amount = t.amount;
        if f.balancing_debit() {
            amount = amount.min(
                dr.credits_posted
                    .saturating_sub(dr.debits_posted.saturating_add(dr.debits_pending)),
            );
        }
        if f.balancing_credit() {
            amount = amount.min(
                cr.debits_posted
                    .saturating_sub(cr.credits_posted.saturating_add(cr.credits_pending)),
            );
        }
        let over = |a: u128, b: u128| a.checked_add(b).is_none();
        let over3 =
            |a: u128, b: u128, c: u128| a.checked_add(b).and_then(|s| s.checked_add(c)).is_none();
        let checks = [
            (dr.ledger != cr.ledger, R::AccountsMustHaveTheSameLedger),
            (
                t.ledger != dr.ledger,
                R::TransferMustHaveTheSameLedgerAsAccounts,
            ),
            (dr.flags.closed(), R::DebitAccountAlreadyClosed),
            (cr.flags.closed(), R::CreditAccountAlreadyClosed),
            (
                f.pending() && over(dr.debits_pending, amount),
                R::OverflowsDebitsPending,
            ),
            (
                f.pending() && over(cr.credits_pending, amount),
                R::OverflowsCreditsPending,
            ),
            (over(dr.debits_posted, amount), R::OverflowsDebitsPosted),
            (over(cr.credits_posted, amount), R::OverflowsCreditsPosted),
            (
                over3(dr.debits_pending, dr.debits_posted, amount),
                R::OverflowsDebits,
            ),
            (
                over3(cr.credits_pending, cr.credits_posted, amount),
                R::OverflowsCredits,
            ),
            (
                f.pending()
                    && timestamp
                        .checked_add(u64::from(t.timeout) * SECOND_NS)
                        .is_none(),
                R::OverflowsTimeout,
            ),
        ];
        if let Some(&(_, result)) = checks.iter().find(|(broken, _)| *broken) {
            return result;
        }
        if dr.flags.debits_must_not_exceed_credits()
            && dr.debits_pending + dr.debits_posted + amount > dr.credits_posted
        {
            return R::ExceedsCredits;
        }
        if cr.flags.credits_must_not_exceed_debits()
            && cr.credits_pending + cr.credits_posted + amount > cr.debits_posted
        {
            return R::ExceedsDebits;
        }
        let dr = self.accounts.get_mut(&t.debit_account_id).unwrap();
        if f.pending() {
            dr.debits_pending += amount;
        } else {
            dr.debits_posted += amount;
        }
        if f.closing_debit() {
            dr.flags = dr.flags | AccountFlags::CLOSED;
        }
        let cr = self.accounts.get_mut(&t.credit_account_id).unwrap();
        if f.pending() {
            cr.credits_pending += amount;
        } else {
            cr.credits_posted += amount;
        }
        if f.closing_credit() {
            cr.flags = cr.flags | AccountFlags::CLOSED;
        }
        let status = if f.pending() {
            Status::Pending
        } else {
            Status::None
        };
        self.store(
            Transfer {
                amount,
                timestamp,
                ..*t
            },
            status,
        );
        R::Ok
    }

    fn post_or_void(&mut self, t: &Transfer, timestamp: u64) -> R {
        let checks = [
            (t.pending_id == 0, R::PendingIdMustNotBeZero),
            (t.pending_id == MAX, R::PendingIdMustNotBeIntMax),
            (t.pending_id == t.id, R::PendingIdMustBeDifferent),
            (t.timeout != 0, R::TimeoutReservedForPendingTransfer),
            (
                !self.transfers.contains_key(&t.pending_id),
                R::PendingTransferNotFound,
            ),
        ];
        if let Some(&(_, result)) = checks.iter().find(|(broken, _)| *broken) {
            return result;
        }
        let (p, status) = self.transfers[&t.pending_id];
        let post = t.flags.post_pending_transfer();
        let full = t.amount == MAX || (!post && t.amount == 0);
        let amount = if full { p.amount } else { t.amount };
        let dr = self.accounts[&p.debit_account_id];
        let cr = self.accounts[&p.credit_account_id];
        let checks = [
            (!p.flags.pending(), R::PendingTransferNotPending),
            (
                t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id,
                R::PendingTransferHasDifferentDebitAccountId,
            ),
            (
                t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id,
                R::PendingTransferHasDifferentCreditAccountId,
            ),
            (
                t.ledger != 0 && t.ledger != p.ledger,
                R::PendingTransferHasDifferentLedger,
            ),
            (
                t.code != 0 && t.code != p.code,
                R::PendingTransferHasDifferentCode,
            ),
            (amount > p.amount, R::ExceedsPendingTransferAmount),
            (
                !post && amount < p.amount,
                R::PendingTransferHasDifferentAmount,
            ),
            (status == Status::Posted, R::PendingTransferAlreadyPosted),
            (status == Status::Voided, R::PendingTransferAlreadyVoided),
            (status == Status::Expired, R::PendingTransferExpired),
            (
                p.timeout > 0 && p.timestamp + u64::from(p.timeout) * SECOND_NS <= timestamp,
                R::PendingTransferExpired,
            ),
            // A post with a system id (a cluster's decision) lands even into a closed account.
            (
                post && t.id < LEG && dr.flags.closed() && !p.flags.closing_debit(),
                R::DebitAccountAlreadyClosed,
            ),
            (
                post && t.id < LEG && cr.flags.closed() && !p.flags.closing_credit(),
                R::CreditAccountAlreadyClosed,
            ),
        ];
        if let Some(&(_, result)) = checks.iter().find(|(broken, _)| *broken) {
            return result;
        }
        self.release(&p);
        if post {
            let dr = self.accounts.get_mut(&p.debit_account_id).unwrap();
            dr.debits_posted += amount;
            if p.flags.closing_debit() {
                dr.flags = dr.flags | AccountFlags::CLOSED;
            }
            let cr = self.accounts.get_mut(&p.credit_account_id).unwrap();
            cr.credits_posted += amount;
            if p.flags.closing_credit() {
                cr.flags = cr.flags | AccountFlags::CLOSED;
            }
        }
        self.transfers.get_mut(&p.id).unwrap().1 =
            if post { Status::Posted } else { Status::Voided };
        let or = |new: u128, old: u128| if new == 0 { old } else { new };
        let stored = Transfer {
            id: t.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: p.id,
            user_data_128: or(t.user_data_128, p.user_data_128),
            user_data_64: or(t.user_data_64.into(), p.user_data_64.into()) as u64,
            user_data_32: or(t.user_data_32.into(), p.user_data_32.into()) as u32,
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: t.flags,
            timestamp,
        };
        self.store(stored, Status::None);
        R::Ok
    }

    fn store(&mut self, t: Transfer, status: Status) {
        for id in [t.debit_account_id, t.credit_account_id] {
            let a = self.accounts[&id];
            if a.flags.history() {
                self.history.entry(id).or_default().push(AccountBalance {
                    debits_pending: a.debits_pending,
                    debits_posted: a.debits_posted,
                    credits_pending: a.credits_pending,
                    credits_posted: a.credits_posted,
                    timestamp: t.timestamp,
                });
            }
        }
        self.transfers.insert(t.id, (t, status));
        self.transfer_order.push(t.id);
    }

    /// The documented filter semantics, by brute force over all transfers.
    fn account_transfers(&self, filter: &AccountFilter) -> Vec<Transfer> {
        let valid = filter.limit > 0
            && (filter.flags.debits() || filter.flags.credits())
            && !(filter.timestamp_max != 0 && filter.timestamp_min > filter.timestamp_max)
            && self.accounts.contains_key(&filter.account_id);
        if !valid {
            return Vec::new();
        }
        let max = if filter.timestamp_max == 0 {
            u64::MAX
        } else {
            filter.timestamp_max
        };
        let mut all: Vec<Transfer> = self
            .transfer_order
            .iter()
            .map(|id| self.transfers[id].0)
            .filter(|t| t.timestamp >= filter.timestamp_min && t.timestamp <= max)
            .filter(|t| {
                (filter.flags.debits() && t.debit_account_id == filter.account_id)
                    || (filter.flags.credits() && t.credit_account_id == filter.account_id)
            })
            .collect();
        if filter.flags.reversed() {
            all.reverse();
        }
        all.truncate(filter.limit as usize);
        all
    }
}

fn is_transient(result: R) -> bool {
    matches!(
        result,
        R::DebitAccountNotFound
            | R::CreditAccountNotFound
            | R::DebitAccountAlreadyClosed
            | R::CreditAccountAlreadyClosed
            | R::OverflowsDebitsPending
            | R::OverflowsCreditsPending
            | R::OverflowsDebitsPosted
            | R::OverflowsCreditsPosted
            | R::OverflowsDebits
            | R::OverflowsCredits
            | R::ExceedsCredits
            | R::ExceedsDebits
            | R::PendingTransferNotFound
    )
}

#[derive(Clone, Debug)]
enum Batch {
    Accounts(Vec<Account>, u64),
    Transfers(Vec<Transfer>, u64),
}

fn account_id() -> impl Strategy<Value = u128> {
    prop_oneof![20 => 1..=5_u128, 1 => Just(0), 1 => Just(MAX)]
}

/// The first id of the system range: pending transfers `LEG + t` and their posts `RES + t`
/// exercise the system resolutions, which store no record (the ledger must still answer as
/// the model, which stores every post).
const LEG: u128 = 1 << 126;
const RES: u128 = 2 << 126;

fn transfer_id() -> impl Strategy<Value = u128> {
    prop_oneof![
        20 => 1..=12_u128,
        4 => (1..=4_u128).prop_map(|t| LEG + t),
        4 => (1..=4_u128).prop_map(|t| RES + t),
        1 => Just(0),
        1 => Just(MAX)
    ]
}

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![10 => 0..=60_u128, 2 => Just(MAX), 2 => Just(MAX - 10), 1 => Just(MAX / 2)]
}

fn account() -> impl Strategy<Value = Account> {
    (
        account_id(),
        prop_oneof![12 => Just(1_u32), 1 => Just(2), 1 => Just(0)],
        prop_oneof![12 => Just(1_u16), 1 => Just(0)],
        prop_oneof![6 => 0..32_u16, 1 => 0..64_u16],
        select(vec![0_u128, 0, 0, 0, 0, 0, 1]),
        select(vec![0_u64, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        0..2_u64,
    )
        .prop_map(
            |(id, ledger, code, flags, balance, odd, user_data)| Account {
                flags: AccountFlags::from_bits_retain(flags),
                debits_posted: balance,
                timestamp: odd,
                reserved: u32::from(odd == 1 && balance == 1),
                user_data_64: user_data,
                ..Account::new(id, ledger, code)
            },
        )
}

fn transfer_flags() -> impl Strategy<Value = TransferFlags> {
    (
        select(vec![0_u16, 0, 0, 0, 1]),                            // linked
        select(vec![0_u16, 0, 0, 1 << 1, 1 << 1, 1 << 2, 1 << 3]),  // phase
        select(vec![0_u16, 0, 0, 0, 0, 0, 1 << 4, 1 << 5, 3 << 4]), // balancing
        select(vec![0_u16, 0, 0, 0, 0, 0, 0, 0, 1 << 6, 1 << 7]),   // closing
        select(
            vec![0_u16; 30]
                .into_iter()
                .chain([1 << 8, 1 << 2])
                .collect::<Vec<_>>(),
        ), // odd
    )
        .prop_map(|(a, b, c, d, e)| TransferFlags::from_bits_retain(a | b | c | d | e))
}

fn transfer() -> impl Strategy<Value = Transfer> {
    (
        transfer_id(),
        prop_oneof![10 => account_id(), 2 => Just(0_u128)],
        prop_oneof![10 => account_id(), 2 => Just(0_u128)],
        amount(),
        transfer_flags(),
        prop_oneof![
            1 => Just(0_u128),
            6 => 1..=12_u128,
            4 => (1..=4_u128).prop_map(|t| LEG + t),
            1 => (1..=12_u128).prop_map(|t| RES + t),
            1 => Just(MAX)
        ],
        select(vec![0_u32, 0, 0, 1, 2, u32::MAX]),
        prop_oneof![12 => Just(1_u32), 1 => Just(2), 2 => Just(0)],
        prop_oneof![12 => Just(1_u16), 2 => Just(0)],
        0..2_u128,
        select(vec![
            0_u64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7,
        ]),
    )
        .prop_map(|fields| {
            let (id, debit, credit, amount, flags, pending_id, timeout, ledger, code, data, odd) =
                fields;
            let mut transfer = Transfer {
                flags,
                pending_id,
                timeout,
                user_data_128: data,
                user_data_64: u64::from(id % 2 == 1) * data as u64,
                user_data_32: u32::from(id % 3 == 1) * data as u32,
                ..Transfer::new(id, debit, credit, amount, ledger, code)
            };
            // Mostly well-formed events, so that pending transfers get created and resolved
            // often; `odd` keeps some malformed ones (and a rare non-zero timestamp).
            if odd == 0 {
                if flags.post_pending_transfer() || flags.void_pending_transfer() {
                    transfer.debit_account_id = 0;
                    transfer.credit_account_id = 0;
                    transfer.ledger = 0;
                    transfer.code = 0;
                    transfer.timeout = 0;
                    transfer.amount = [0, MAX, amount % 40][data.wrapping_add(id) as usize % 3];
                    // Often the system resolution of a leg: its id is the leg's plus 2^126.
                    if (LEG..RES).contains(&pending_id) && (id % 4 != 3) {
                        transfer.id = pending_id + LEG;
                    }
                } else {
                    transfer.pending_id = 0;
                    if !flags.pending() {
                        transfer.timeout = 0;
                    }
                }
            } else if data == 1 && id % 5 == 0 {
                transfer.timestamp = odd;
            }
            transfer
        })
}
/// Timestamp steps: mostly sub-second (so timeouts of 1–2 s expire inside a run), sometimes
/// zero (the ledger must still advance), sometimes seconds.
fn step_ns() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..SECOND_NS / 2, 1 => Just(0), 1 => SECOND_NS..3 * SECOND_NS]
}

fn batch() -> impl Strategy<Value = Batch> {
    prop_oneof![
        1 => (prop::collection::vec(account(), 0..5), step_ns())
            .prop_map(|(accounts, step)| Batch::Accounts(accounts, step)),
        3 => (prop::collection::vec(transfer(), 0..9), step_ns())
            .prop_map(|(transfers, step)| Batch::Transfers(transfers, step)),
    ]
}

fn setup_batch() -> Batch {
    // Seed a few valid accounts so most transfers get past "account not found".
    let flags = [
        AccountFlags::empty(),
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS | AccountFlags::HISTORY,
        AccountFlags::HISTORY,
    ];
    let accounts = (1..=4)
        .map(|id| Account {
            flags: flags[id as usize - 1],
            ..Account::new(id, 1, 1)
        })
        .collect();
    Batch::Accounts(accounts, 0)
}

/// Applies `batch` to both, then compares everything observable.
fn apply_and_compare(
    ledger: &mut Ledger,
    model: &mut Model,
    batch: &Batch,
    clock: &mut u64,
) -> Result<(), TestCaseError> {
    match batch {
        Batch::Accounts(accounts, step) => {
            *clock += step;
            let expected = model.create_accounts(accounts, *clock);
            prop_assert_eq!(
                ledger.create_accounts(accounts, *clock),
                expected,
                "accounts {:?}",
                accounts
            );
        }
        Batch::Transfers(transfers, step) => {
            *clock += step;
            let expected = model.create_transfers(transfers, *clock);
            prop_assert_eq!(
                ledger.create_transfers(transfers, *clock),
                expected,
                "transfers {:?}",
                transfers
            );
        }
    }
    prop_assert_eq!(ledger.check_invariants(), Ok(()));
    prop_assert_eq!(ledger.last_timestamp(), model.last_timestamp);
    let account_ids: Vec<u128> = model.account_order.clone();
    let expected: Vec<Account> = account_ids.iter().map(|id| model.accounts[id]).collect();
    prop_assert_eq!(ledger.lookup_accounts(&account_ids), expected);
    prop_assert_eq!(ledger.account_count(), model.account_order.len());
    let transfer_ids: Vec<u128> = model.transfer_order.clone();
    let expected: Vec<Transfer> = transfer_ids
        .iter()
        .map(|id| model.transfers[id].0)
        .collect();
    prop_assert_eq!(ledger.lookup_transfers(&transfer_ids), expected);
    prop_assert_eq!(
        ledger.transfer_count(),
        model.transfer_order.len() - model.system_resolution_count()
    );
    compare_queries(ledger, model)
}

fn compare_queries(ledger: &Ledger, model: &Model) -> Result<(), TestCaseError> {
    let middle = model.last_timestamp / 2;
    for &id in &model.account_order {
        let both = AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS;
        let filters = [
            AccountFilter::new(id, 1000),
            AccountFilter {
                limit: 2,
                ..AccountFilter::new(id, 0)
            },
            AccountFilter {
                flags: AccountFilterFlags::DEBITS | AccountFilterFlags::REVERSED,
                ..AccountFilter::new(id, 2)
            },
            AccountFilter {
                flags: AccountFilterFlags::CREDITS,
                timestamp_min: middle,
                ..AccountFilter::new(id, 3)
            },
            AccountFilter {
                flags: both | AccountFilterFlags::REVERSED,
                timestamp_max: middle,
                ..AccountFilter::new(id, 2)
            },
            AccountFilter {
                flags: AccountFilterFlags::empty(),
                ..AccountFilter::new(id, 5)
            },
        ];
        for filter in &filters {
            prop_assert_eq!(
                ledger.get_account_transfers(filter),
                model.account_transfers(filter),
                "{:?}",
                filter
            );
        }
        let history = ledger.get_account_balances(&AccountFilter::new(id, 1000));
        prop_assert_eq!(history, model.history.get(&id).cloned().unwrap_or_default());
    }
    Ok(())
}

fn apply_only(ledger: &mut Ledger, batch: &Batch, clock: &mut u64) {
    match batch {
        Batch::Accounts(accounts, step) => {
            *clock += step;
            ledger.create_accounts(accounts, *clock);
        }
        Batch::Transfers(transfers, step) => {
            *clock += step;
            ledger.create_transfers(transfers, *clock);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn ledger_matches_the_naive_model(batches in prop::collection::vec(batch(), 1..24)) {
        let mut ledger = Ledger::new();
        let mut model = Model::default();
        let mut clock = SECOND_NS;
        let all: Vec<Batch> = std::iter::once(setup_batch()).chain(batches).collect();
        for batch in &all {
            apply_and_compare(&mut ledger, &mut model, batch, &mut clock)?;
        }
        // I5: a second fresh ledger fed the same batches is byte-identical.
        let mut twin = Ledger::new();
        let mut clock = SECOND_NS;
        for batch in &all {
            apply_only(&mut twin, batch, &mut clock);
        }
        let snapshot = ledger.encode_snapshot();
        prop_assert_eq!(&twin.encode_snapshot(), &snapshot);
        prop_assert_eq!(twin.digest(), ledger.digest());
        // The snapshot round-trips, and the restored ledger behaves the same from here on.
        let mut restored = Ledger::decode_snapshot(&snapshot).unwrap();
        prop_assert_eq!(&restored.encode_snapshot(), &snapshot);
        let probe = [
            Transfer::new(1_000, 1, 2, 1, 1, 1),
            Transfer {
                timeout: 1,
                flags: TransferFlags::PENDING,
                ..Transfer::new(1_001, 2, 1, 1, 1, 1)
            },
        ];
        let later = clock + 10 * SECOND_NS;
        let expected = ledger.create_transfers(&probe, later);
        prop_assert_eq!(restored.create_transfers(&probe, later), expected);
        prop_assert_eq!(restored.encode_snapshot(), ledger.encode_snapshot());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Batches longer than the ledger's internal chunk of 512 events, so chains and lookups
    /// cross chunk boundaries.
    #[test]
    fn large_batches_match_the_naive_model(
        first in prop::collection::vec(transfer(), 1000..1300),
        second in prop::collection::vec(transfer(), 500..700),
    ) {
        let mut ledger = Ledger::new();
        let mut model = Model::default();
        let mut clock = SECOND_NS;
        let batches =
            [setup_batch(), Batch::Transfers(first, 1), Batch::Transfers(second, SECOND_NS)];
        for batch in &batches {
            apply_and_compare(&mut ledger, &mut model, batch, &mut clock)?;
        }
    }
}
