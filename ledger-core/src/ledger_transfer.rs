//! `create_transfer`: the rules of one transfer event, checked in the precedence order of
//! [`CreateTransferResult`], and the state changes of an accepted one.

use std::cmp::Reverse;

use crate::hash::{INDEX_MAX, Probe, hash_id};
use crate::ledger::{
    AccountSlot, BalanceEntry, Ledger, NANOSECONDS_PER_SECOND, NONE, Status, StoredTransfer,
    TransferMeta, Undo, pending_deadline, release_pending,
};
use crate::resolution::{RESOLUTION_BIT, resolved_pending_id, stores_no_record};
use crate::store::Closing;
use crate::{
    AccountBalance, AccountFlags, CreateTransferResult, SYSTEM_ID_MIN, Transfer, TransferFlags,
};

use CreateTransferResult as R;

/// What `create_transfer` passes on to a post or void: the accounts pass 1 resolved, a pending
/// id already looked up with its index (if any), the event's index in its batch and the id's
/// vacant index slot.
struct PostOrVoid {
    accounts: [u32; 2],
    looked_up: Option<(u128, Option<u32>)>,
    event: u32,
    position: usize,
}

impl Ledger {
    /// Applies one transfer event at `timestamp`; `in_chain` says whether in-place changes
    /// must be logged for a rollback.
    #[inline]
    pub(crate) fn create_transfer(
        &mut self,
        transfer: &Transfer,
        (hash, [debit_index, credit_index], event): (u64, [u32; 2], u32),
        timestamp: u64,
        in_chain: bool,
    ) -> CreateTransferResult {
        if let Err(result) = create_transfer_validate_id(transfer) {
            return result;
        }
        let transfers = &self.transfers;
        let position = match self.transfer_index.find(hash, |i| {
            transfers.get(i as usize).transfer.id == transfer.id
        }) {
            Probe::Found(index) => {
                let existing = self.transfers.get(index as usize).transfer;
                return self.transfer_exists(transfer, &existing);
            }
            Probe::Vacant(position) => position,
        };
        // An id of the system resolutions' range may exist without an index slot: the post
        // of its pending transfer that stored no record (crate::resolution). The pending
        // transfer's index, looked up here, serves the post below too.
        let mut resolved = None;
        if let Some(pending_id) = resolved_pending_id(transfer.id) {
            let pending_index = self.transfer_index_of(pending_id);
            if let Some(node) = pending_index.and_then(|index| self.resolution_of_pending(index)) {
                return self.transfer_exists(transfer, &self.resolution_record(node));
            }
            resolved = Some((pending_id, pending_index));
        }
        if self.failed_index.len() != 0 {
            let failed_ids = &self.failed_ids;
            if self
                .failed_index
                .get(hash, |i| failed_ids[i as usize] == transfer.id)
                .is_some()
            {
                return R::IdAlreadyFailed;
            }
        }
        if flags_are_mutually_exclusive(transfer.flags) {
            return R::FlagsAreMutuallyExclusive;
        }
        let flags = transfer.flags;
        if flags.post_pending_transfer() || flags.void_pending_transfer() {
            let event = PostOrVoid {
                accounts: [debit_index, credit_index],
                looked_up: resolved,
                event,
                position,
            };
            return self.post_or_void_pending_transfer(transfer, event, timestamp, in_chain);
        }
        if let Err(result) = create_transfer_validate_fields(transfer) {
            return result;
        }
        if debit_index == NONE {
            return R::DebitAccountNotFound;
        }
        if credit_index == NONE {
            return R::CreditAccountNotFound;
        }
        let debit = self.accounts.get(debit_index as usize);
        let credit = self.accounts.get(credit_index as usize);
        let amount = match create_transfer_check_accounts(transfer, debit, credit, timestamp) {
            Ok(amount) => amount,
            Err(result) => return result,
        };
        let accounts = (debit_index, credit_index);
        self.create_transfer_apply(
            transfer, amount, timestamp, position, hash, accounts, in_chain,
        );
        R::Ok
    }

    /// Books an accepted new transfer (single-phase or pending) and stores it, touching each
    /// account once (balances, flags and history list head together).
    #[inline]
    #[allow(
        clippy::too_many_arguments,
        reason = "the hot path passes what it already has"
    )]
    fn create_transfer_apply(
        &mut self,
        transfer: &Transfer,
        amount: u128,
        timestamp: u64,
        position: usize,
        hash: u64,
        (debit_index, credit_index): (u32, u32),
        in_chain: bool,
    ) {
        if in_chain {
            self.undo.push(Undo::Account(
                debit_index,
                *self.accounts.get(debit_index as usize),
            ));
            self.undo.push(Undo::Account(
                credit_index,
                *self.accounts.get(credit_index as usize),
            ));
        }
        let index = self.transfers.len();
        assert!(
            index < RESOLUTION_BIT as usize,
            "transfer count beyond 31-bit indices"
        );
        let index = index as u32;
        let flags = transfer.flags;
        let pending = flags.pending();
        let slot = self.accounts.get_mut(debit_index as usize);
        let (debit_previous, debit_history) =
            create_transfer_book(slot, amount, pending, true, flags.closing_debit(), index);
        let slot = self.accounts.get_mut(credit_index as usize);
        let (credit_previous, credit_history) =
            create_transfer_book(slot, amount, pending, false, flags.closing_credit(), index);
        let status = if pending {
            Status::Pending
        } else {
            Status::NotPending
        };
        self.transfers.push(StoredTransfer {
            transfer: Transfer {
                amount,
                timestamp,
                ..*transfer
            },
            meta: TransferMeta {
                debit_previous,
                credit_previous,
                resolution: NONE,
                status,
            },
        });
        self.transfer_index.insert_at(position, hash, index);
        if debit_history {
            self.store_balance(debit_index, index, timestamp);
        }
        if credit_history {
            self.store_balance(credit_index, index, timestamp);
        }
        if pending && transfer.timeout != 0 {
            let deadline = timestamp + u64::from(transfer.timeout) * NANOSECONDS_PER_SECOND;
            self.expiry_queue.push(Reverse((deadline, index)));
        }
    }

    /// Appends an accepted transfer: record, metadata, id index, history lists.
    #[inline]
    fn store_transfer(
        &mut self,
        stored: &Transfer,
        position: usize,
        hash: u64,
        debit_index: u32,
        credit_index: u32,
        status: Status,
    ) -> u32 {
        let index = self.transfers.len();
        assert!(
            index < RESOLUTION_BIT as usize,
            "transfer count beyond 31-bit indices"
        );
        let index = index as u32;
        let [debit_previous, credit_previous] =
            self.link_history([debit_index, credit_index], index);
        let meta = TransferMeta {
            debit_previous,
            credit_previous,
            resolution: NONE,
            status,
        };
        self.transfers.push(StoredTransfer {
            transfer: *stored,
            meta,
        });
        self.transfer_index.insert_at(position, hash, index);
        for account_index in [debit_index, credit_index] {
            if self.accounts.get(account_index as usize).flags.history() {
                self.store_balance(account_index, index, stored.timestamp);
            }
        }
        index
    }

    fn store_balance(&mut self, account_index: u32, transfer_index: u32, timestamp: u64) {
        let entry_index = self.balances.len();
        assert!(
            entry_index <= INDEX_MAX as usize,
            "balance history beyond u32 indices"
        );
        let slot: &mut AccountSlot = self.accounts.get_mut(account_index as usize);
        let account = &*slot;
        let balance = AccountBalance {
            debits_pending: account.debits_pending,
            debits_posted: account.debits_posted,
            credits_pending: account.credits_pending,
            credits_posted: account.credits_posted,
            timestamp,
        };
        let previous = std::mem::replace(&mut slot.balances_newest, entry_index as u32);
        self.balances.push(BalanceEntry {
            balance,
            account_index,
            transfer_index,
            previous,
        });
    }

    /// The post/void branch of the rules (see [`CreateTransferResult`]).
    fn post_or_void_pending_transfer(
        &mut self,
        transfer: &Transfer,
        PostOrVoid {
            accounts: resolved,
            looked_up,
            event,
            position,
        }: PostOrVoid,
        timestamp: u64,
        in_chain: bool,
    ) -> CreateTransferResult {
        if let Err(result) = post_or_void_validate_fields(transfer) {
            return result;
        }
        let pending_index = match looked_up {
            Some((pending_id, index)) if pending_id == transfer.pending_id => index,
            _ => self.transfer_index_of(transfer.pending_id),
        };
        let Some(pending_index) = pending_index else {
            // A post that stored no record exists, and is no pending transfer.
            if self.resolution_of_id(transfer.pending_id).is_some() {
                return R::PendingTransferNotPending;
            }
            return R::PendingTransferNotFound;
        };
        let pending = self.transfers.get(pending_index as usize).transfer;
        let status = self.transfers.get(pending_index as usize).meta.status;
        let amount = match post_or_void_check_pending(transfer, &pending, status, timestamp) {
            Ok(amount) => amount,
            Err(result) => return result,
        };
        let [debit_index, credit_index] =
            self.pending_account_indices(transfer, &pending, resolved);
        let post = transfer.flags.post_pending_transfer();
        // A post with a system id applies a decision the cluster took while the accounts were
        // open (a cross-shard commit): it must land even if an account closed since.
        if post && transfer.id < SYSTEM_ID_MIN {
            let debit = self.accounts.get(debit_index as usize);
            let credit = self.accounts.get(credit_index as usize);
            if debit.flags.closed() && !pending.flags.closing_debit() {
                return R::DebitAccountAlreadyClosed;
            }
            if credit.flags.closed() && !pending.flags.closing_credit() {
                return R::CreditAccountAlreadyClosed;
            }
        }
        if in_chain {
            self.undo.push(Undo::Account(
                debit_index,
                *self.accounts.get(debit_index as usize),
            ));
            self.undo.push(Undo::Account(
                credit_index,
                *self.accounts.get(credit_index as usize),
            ));
            self.undo.push(Undo::Status(pending_index, status));
        }
        self.post_or_void_apply(&pending, debit_index, credit_index, post.then_some(amount));
        let closing = Closing {
            event,
            position: None,
            pending_position: pending_index,
        };
        let accounts = [debit_index, credit_index];
        self.post_or_void_store(
            transfer, &pending, amount, timestamp, accounts, closing, position,
        );
        R::Ok
    }

    /// Stores an applied post or void of `pending` (`closing.pending_position`): as no record
    /// if it is a system resolution (`crate::resolution`), else at the vacant index slot
    /// `position`; and lists its closing.
    #[allow(
        clippy::too_many_arguments,
        reason = "the hot path passes what it already has"
    )]
    fn post_or_void_store(
        &mut self,
        transfer: &Transfer,
        pending: &Transfer,
        amount: u128,
        timestamp: u64,
        [debit_index, credit_index]: [u32; 2],
        mut closing: Closing,
        position: usize,
    ) {
        let pending_index = closing.pending_position;
        let post = transfer.flags.post_pending_transfer();
        let stored = Transfer {
            id: transfer.id,
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount,
            pending_id: transfer.pending_id,
            user_data_128: inherit(transfer.user_data_128, pending.user_data_128),
            user_data_64: inherit(transfer.user_data_64, pending.user_data_64),
            user_data_32: inherit(transfer.user_data_32, pending.user_data_32),
            timeout: 0,
            ledger: pending.ledger,
            code: pending.code,
            flags: transfer.flags,
            timestamp,
        };
        if post
            && stores_no_record(
                &stored,
                pending,
                self.accounts.get(debit_index as usize),
                self.accounts.get(credit_index as usize),
            )
        {
            let accounts = [debit_index, credit_index];
            self.store_resolution(pending_index, accounts, transfer.flags, timestamp);
            self.closings.push(closing);
            return;
        }
        self.transfers.get_mut(pending_index as usize).meta.status =
            if post { Status::Posted } else { Status::Voided };
        let hash = hash_id(transfer.id);
        let index = self.store_transfer(
            &stored,
            position,
            hash,
            debit_index,
            credit_index,
            Status::NotPending,
        );
        closing.position = Some(index);
        self.closings.push(closing);
    }

    /// The indices of `pending`'s two accounts for a post or void of it: an account the
    /// event names (checked equal to the pending transfer's) was already resolved, and
    /// prefetched, by pass 1 of `create_transfers` (`resolved`); one it leaves zero is looked
    /// up here.
    #[inline]
    fn pending_account_indices(
        &self,
        transfer: &Transfer,
        pending: &Transfer,
        resolved: [u32; 2],
    ) -> [u32; 2] {
        let index = |named: u128, resolved: u32, id: u128| {
            if named != 0 && resolved != NONE {
                debug_assert_eq!(self.accounts.get(resolved as usize).id, id);
                return resolved;
            }
            self.account_index_of(id).expect("pending accounts exist")
        };
        [
            index(
                transfer.debit_account_id,
                resolved[0],
                pending.debit_account_id,
            ),
            index(
                transfer.credit_account_id,
                resolved[1],
                pending.credit_account_id,
            ),
        ]
    }

    /// Releases the reservation and, for a post, books `posted_amount`.
    fn post_or_void_apply(
        &mut self,
        pending: &Transfer,
        debit_index: u32,
        credit_index: u32,
        posted_amount: Option<u128>,
    ) {
        let debit = self.accounts.get_mut(debit_index as usize);
        release_pending(debit, pending, true);
        if let Some(amount) = posted_amount {
            // I7: pending + posted never overflowed, and this moves at most the pending amount.
            debit.debits_posted = debit.debits_posted.checked_add(amount).expect("I7");
            // A posted closing transfer keeps the account closed.
            if pending.flags.closing_debit() {
                debit.flags = debit.flags.union(AccountFlags::CLOSED);
            }
        }
        let credit = self.accounts.get_mut(credit_index as usize);
        release_pending(credit, pending, false);
        if let Some(amount) = posted_amount {
            credit.credits_posted = credit.credits_posted.checked_add(amount).expect("I7");
            if pending.flags.closing_credit() {
                credit.flags = credit.flags.union(AccountFlags::CLOSED);
            }
        }
    }

    /// Compares a resubmitted transfer with the `existing` one (stored, or rebuilt for a post
    /// that stored no record).
    fn transfer_exists(&self, transfer: &Transfer, existing: &Transfer) -> CreateTransferResult {
        if transfer.flags != existing.flags {
            return R::ExistsWithDifferentFlags;
        }
        if transfer.pending_id != existing.pending_id {
            return R::ExistsWithDifferentPendingId;
        }
        if transfer.timeout != existing.timeout {
            return R::ExistsWithDifferentTimeout;
        }
        let flags = transfer.flags;
        if flags.post_pending_transfer() || flags.void_pending_transfer() {
            let pending_index = self
                .transfer_index_of(existing.pending_id)
                .expect("stored posts name a pending transfer");
            let pending_amount = self.transfers.get(pending_index as usize).transfer.amount;
            return resolving_transfer_exists(transfer, existing, pending_amount);
        }
        if transfer.debit_account_id != existing.debit_account_id {
            return R::ExistsWithDifferentDebitAccountId;
        }
        if transfer.credit_account_id != existing.credit_account_id {
            return R::ExistsWithDifferentCreditAccountId;
        }
        let balancing = flags.balancing_debit() || flags.balancing_credit();
        // A balancing transfer stores what it moved, at most what was asked.
        if (balancing && transfer.amount < existing.amount)
            || (!balancing && transfer.amount != existing.amount)
        {
            return R::ExistsWithDifferentAmount;
        }
        exists_compare_tail(transfer, existing, false)
    }
}

/// Books `amount` on one side of an account, closes it if asked, and links transfer `index`
/// at the head of its history list. Returns the previous head and whether the account keeps
/// a balance history. Overflow was ruled out by `create_transfer_check_balances` (I7).
#[inline]
fn create_transfer_book(
    slot: &mut AccountSlot,
    amount: u128,
    pending: bool,
    debit_side: bool,
    closing: bool,
    index: u32,
) -> (u32, bool) {
    let balance = match (debit_side, pending) {
        (true, true) => &mut slot.debits_pending,
        (true, false) => &mut slot.debits_posted,
        (false, true) => &mut slot.credits_pending,
        (false, false) => &mut slot.credits_posted,
    };
    *balance += amount;
    if closing {
        slot.flags = slot.flags.union(AccountFlags::CLOSED);
    }
    (
        std::mem::replace(&mut slot.transfers_newest, index),
        slot.flags.history(),
    )
}

/// `value` unless zero, else `inherited` (posts and voids inherit unset fields).
fn inherit<T: Default + PartialEq>(value: T, inherited: T) -> T {
    if value == T::default() {
        inherited
    } else {
        value
    }
}

/// The amount a post or void moves; `None` if it cannot be one (`Exceeds…`/`…DifferentAmount`).
fn post_or_void_amount(transfer: &Transfer, pending_amount: u128) -> u128 {
    let flags = transfer.flags;
    if transfer.amount == u128::MAX || (flags.void_pending_transfer() && transfer.amount == 0) {
        pending_amount
    } else {
        transfer.amount
    }
}

fn resolving_transfer_exists(
    transfer: &Transfer,
    existing: &Transfer,
    pending_amount: u128,
) -> CreateTransferResult {
    if transfer.debit_account_id != 0 && transfer.debit_account_id != existing.debit_account_id {
        return R::ExistsWithDifferentDebitAccountId;
    }
    if transfer.credit_account_id != 0 && transfer.credit_account_id != existing.credit_account_id {
        return R::ExistsWithDifferentCreditAccountId;
    }
    if post_or_void_amount(transfer, pending_amount) != existing.amount {
        return R::ExistsWithDifferentAmount;
    }
    exists_compare_tail(transfer, existing, true)
}

/// The user data, ledger and code comparisons; `inherits` skips zero fields of a post/void.
fn exists_compare_tail(
    transfer: &Transfer,
    existing: &Transfer,
    inherits: bool,
) -> CreateTransferResult {
    let differs_128 = |new: u128, old: u128| new != old && !(inherits && new == 0);
    let differs_64 = |new: u64, old: u64| new != old && !(inherits && new == 0);
    let differs_32 = |new: u32, old: u32| new != old && !(inherits && new == 0);
    if differs_128(transfer.user_data_128, existing.user_data_128) {
        return R::ExistsWithDifferentUserData128;
    }
    if differs_64(transfer.user_data_64, existing.user_data_64) {
        return R::ExistsWithDifferentUserData64;
    }
    if differs_32(transfer.user_data_32, existing.user_data_32) {
        return R::ExistsWithDifferentUserData32;
    }
    if differs_32(transfer.ledger, existing.ledger) {
        return R::ExistsWithDifferentLedger;
    }
    if transfer.code != existing.code && !(inherits && transfer.code == 0) {
        return R::ExistsWithDifferentCode;
    }
    R::Exists
}

#[inline]
fn create_transfer_validate_id(transfer: &Transfer) -> Result<(), CreateTransferResult> {
    if transfer.timestamp != 0 {
        return Err(R::TimestampMustBeZero);
    }
    if transfer.flags.has_reserved() {
        return Err(R::ReservedFlag);
    }
    if transfer.id == 0 {
        return Err(R::IdMustNotBeZero);
    }
    if transfer.id == u128::MAX {
        return Err(R::IdMustNotBeIntMax);
    }
    Ok(())
}

#[inline]
fn flags_are_mutually_exclusive(flags: TransferFlags) -> bool {
    let phases = u8::from(flags.pending())
        + u8::from(flags.post_pending_transfer())
        + u8::from(flags.void_pending_transfer());
    let resolves = flags.post_pending_transfer() || flags.void_pending_transfer();
    let shapes = flags.balancing_debit()
        || flags.balancing_credit()
        || flags.closing_debit()
        || flags.closing_credit();
    phases > 1 || (resolves && shapes)
}

/// The field rules of a new (single-phase or pending) transfer.
#[inline]
fn create_transfer_validate_fields(transfer: &Transfer) -> Result<(), CreateTransferResult> {
    if transfer.debit_account_id == 0 {
        return Err(R::DebitAccountIdMustNotBeZero);
    }
    if transfer.debit_account_id == u128::MAX {
        return Err(R::DebitAccountIdMustNotBeIntMax);
    }
    if transfer.credit_account_id == 0 {
        return Err(R::CreditAccountIdMustNotBeZero);
    }
    if transfer.credit_account_id == u128::MAX {
        return Err(R::CreditAccountIdMustNotBeIntMax);
    }
    if transfer.debit_account_id == transfer.credit_account_id {
        return Err(R::AccountsMustBeDifferent);
    }
    if transfer.pending_id != 0 {
        return Err(R::PendingIdMustBeZero);
    }
    let flags = transfer.flags;
    if !flags.pending() && transfer.timeout != 0 {
        return Err(R::TimeoutReservedForPendingTransfer);
    }
    if !flags.pending() && (flags.closing_debit() || flags.closing_credit()) {
        return Err(R::ClosingTransferMustBePending);
    }
    if transfer.ledger == 0 {
        return Err(R::LedgerMustNotBeZero);
    }
    if transfer.code == 0 {
        return Err(R::CodeMustNotBeZero);
    }
    Ok(())
}

/// The account rules of a new transfer; returns the amount to move (balancing clamps it).
#[inline]
fn create_transfer_check_accounts(
    transfer: &Transfer,
    debit: &AccountSlot,
    credit: &AccountSlot,
    timestamp: u64,
) -> Result<u128, CreateTransferResult> {
    if debit.ledger != credit.ledger {
        return Err(R::AccountsMustHaveTheSameLedger);
    }
    if transfer.ledger != debit.ledger {
        return Err(R::TransferMustHaveTheSameLedgerAsAccounts);
    }
    if debit.flags.closed() {
        return Err(R::DebitAccountAlreadyClosed);
    }
    if credit.flags.closed() {
        return Err(R::CreditAccountAlreadyClosed);
    }
    let mut amount = transfer.amount;
    if transfer.flags.balancing_debit() {
        let debits = debit.debits_posted.saturating_add(debit.debits_pending);
        amount = amount.min(debit.credits_posted.saturating_sub(debits));
    }
    if transfer.flags.balancing_credit() {
        let credits = credit.credits_posted.saturating_add(credit.credits_pending);
        amount = amount.min(credit.debits_posted.saturating_sub(credits));
    }
    create_transfer_check_balances(transfer, amount, debit, credit, timestamp)?;
    Ok(amount)
}

/// Overflow and overdraft rules (I7), in precedence order.
#[inline]
fn create_transfer_check_balances(
    transfer: &Transfer,
    amount: u128,
    debit: &AccountSlot,
    credit: &AccountSlot,
    timestamp: u64,
) -> Result<(), CreateTransferResult> {
    let pending = transfer.flags.pending();
    if pending && debit.debits_pending.checked_add(amount).is_none() {
        return Err(R::OverflowsDebitsPending);
    }
    if pending && credit.credits_pending.checked_add(amount).is_none() {
        return Err(R::OverflowsCreditsPending);
    }
    if debit.debits_posted.checked_add(amount).is_none() {
        return Err(R::OverflowsDebitsPosted);
    }
    if credit.credits_posted.checked_add(amount).is_none() {
        return Err(R::OverflowsCreditsPosted);
    }
    // I7 keeps pending + posted within u128 for stored accounts.
    let debits = debit
        .debits_pending
        .checked_add(debit.debits_posted)
        .and_then(|d| d.checked_add(amount));
    let Some(debits) = debits else {
        return Err(R::OverflowsDebits);
    };
    let credits = credit
        .credits_pending
        .checked_add(credit.credits_posted)
        .and_then(|c| c.checked_add(amount));
    let Some(credits) = credits else {
        return Err(R::OverflowsCredits);
    };
    if pending
        && timestamp
            .checked_add(u64::from(transfer.timeout) * NANOSECONDS_PER_SECOND)
            .is_none()
    {
        return Err(R::OverflowsTimeout);
    }
    if debit.flags.debits_must_not_exceed_credits() && debits > debit.credits_posted {
        return Err(R::ExceedsCredits);
    }
    if credit.flags.credits_must_not_exceed_debits() && credits > credit.debits_posted {
        return Err(R::ExceedsDebits);
    }
    Ok(())
}

/// The field rules of a post or void before its pending transfer is looked up.
fn post_or_void_validate_fields(transfer: &Transfer) -> Result<(), CreateTransferResult> {
    if transfer.pending_id == 0 {
        return Err(R::PendingIdMustNotBeZero);
    }
    if transfer.pending_id == u128::MAX {
        return Err(R::PendingIdMustNotBeIntMax);
    }
    if transfer.pending_id == transfer.id {
        return Err(R::PendingIdMustBeDifferent);
    }
    if transfer.timeout != 0 {
        return Err(R::TimeoutReservedForPendingTransfer);
    }
    Ok(())
}

/// The rules against the pending transfer; returns the amount to post (or void).
fn post_or_void_check_pending(
    transfer: &Transfer,
    pending: &Transfer,
    status: Status,
    timestamp: u64,
) -> Result<u128, CreateTransferResult> {
    if !pending.flags.pending() {
        return Err(R::PendingTransferNotPending);
    }
    if transfer.debit_account_id != 0 && transfer.debit_account_id != pending.debit_account_id {
        return Err(R::PendingTransferHasDifferentDebitAccountId);
    }
    if transfer.credit_account_id != 0 && transfer.credit_account_id != pending.credit_account_id {
        return Err(R::PendingTransferHasDifferentCreditAccountId);
    }
    if transfer.ledger != 0 && transfer.ledger != pending.ledger {
        return Err(R::PendingTransferHasDifferentLedger);
    }
    if transfer.code != 0 && transfer.code != pending.code {
        return Err(R::PendingTransferHasDifferentCode);
    }
    let amount = post_or_void_amount(transfer, pending.amount);
    if amount > pending.amount {
        return Err(R::ExceedsPendingTransferAmount);
    }
    if transfer.flags.void_pending_transfer() && amount < pending.amount {
        return Err(R::PendingTransferHasDifferentAmount);
    }
    match status {
        Status::Posted | Status::PostedByResolution => {
            return Err(R::PendingTransferAlreadyPosted);
        }
        Status::Voided => return Err(R::PendingTransferAlreadyVoided),
        Status::Expired => return Err(R::PendingTransferExpired),
        Status::Pending => {}
        Status::NotPending => unreachable!("a pending transfer has a pending status"),
    }
    if pending_deadline(pending).is_some_and(|deadline| deadline <= timestamp) {
        return Err(R::PendingTransferExpired);
    }
    Ok(amount)
}

const _: () = assert!(NONE == u32::MAX);
