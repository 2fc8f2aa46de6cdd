//! Posts stored as no record: *system resolutions*.
//!
//! A post whose id is its pending transfer's id plus `2^126`, with the pending id in
//! `[2^126, 2^127)` (so the post's id in `[2^127, 2^127 + 2^126)`), that posts the full pending
//! amount and inherits the pending transfer's user data (each field zero or equal) is a
//! *system resolution*: a sharded cluster posts its cross-shard legs `2^126 + t` this way, under
//! `2^127 + t`, and these posts are half of a cross-shard transfer's events. The record such a
//! post would store is entirely determined by its pending transfer, its flags and its
//! timestamp, so unless one of the two accounts keeps a balance history (`HISTORY`, whose
//! entries point at a stored record) it stores none: the pending transfer's status becomes
//! [`Status::PostedByResolution`] and a 24-byte [`ResolutionPost`] (the pending transfer's
//! index, the post's flags and timestamp, its links in the accounts' history lists) is
//! appended to `Ledger::resolutions`. No id index slot, no 144-byte record.
//!
//! Nothing observable changes: a lookup by the post's id ([`Ledger::transfer_by_id`])
//! rebuilds the record as it would have been stored, a resubmission compares against it
//! (`Exists`, `ExistsWith…`), a post or void naming it as pending answers
//! `PendingTransferNotPending`, account histories list it at its timestamp, and snapshots
//! encode it as a stored record in timestamp order: the bytes, and so the digest, are those of
//! a ledger that stores every post, and decoding applies the same rule again. What differs is
//! only the store (see [`Ledger::transfer_at`]): such a post has no store position, and
//! [`Ledger::last_batch_closings`] says which `Ok` events stored nothing.
//!
//! History lists hold `u32` values: a store position, or [`RESOLUTION_BIT`] `|` the index of a
//! [`ResolutionPost`]. So at most `2^31 - 1` transfers are stored (and as many posts kept).

use crate::ledger::{AccountSlot, Ledger, Status};
use crate::{SYSTEM_ID_MIN, Transfer, TransferFlags};

/// The mark of a history-list value that names a [`ResolutionPost`], not a stored transfer.
pub(crate) const RESOLUTION_BIT: u32 = 1 << 31;

/// The first pending id a system resolution can post; the post's id is `pending id +`
/// [`RESOLUTION_OFFSET`].
const RESOLVED_ID_MIN: u128 = SYSTEM_ID_MIN;

/// What a system resolution's id adds to its pending transfer's id.
const RESOLUTION_OFFSET: u128 = SYSTEM_ID_MIN;

/// A post that stored no record; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResolutionPost {
    /// The store position of the pending transfer it posted.
    pub(crate) pending_index: u32,
    /// The debit account's previous (older) transfer, or `NONE`.
    pub(crate) debit_previous: u32,
    /// The credit account's previous (older) transfer, or `NONE`.
    pub(crate) credit_previous: u32,
    pub(crate) flags: TransferFlags,
    pub(crate) timestamp: u64,
}

const _: () = assert!(size_of::<ResolutionPost>() == 24);

/// The pending id a system resolution with this id would post (`None` outside the range).
#[inline]
pub(crate) fn resolved_pending_id(id: u128) -> Option<u128> {
    let pending_id = id.wrapping_sub(RESOLUTION_OFFSET);
    (id >= RESOLVED_ID_MIN + RESOLUTION_OFFSET
        && (RESOLVED_ID_MIN..RESOLVED_ID_MIN + SYSTEM_ID_MIN).contains(&pending_id))
    .then_some(pending_id)
}

/// Whether the post `stored` (as it would be stored) of `pending` stores no record, given its
/// two accounts: the rule of the module documentation. Snapshots decode by the same rule.
#[inline]
pub(crate) fn stores_no_record(
    stored: &Transfer,
    pending: &Transfer,
    debit: &AccountSlot,
    credit: &AccountSlot,
) -> bool {
    stored.flags.post_pending_transfer()
        && resolved_pending_id(stored.id) == Some(stored.pending_id)
        && stored.pending_id == pending.id
        && stored.amount == pending.amount
        && stored.user_data_128 == pending.user_data_128
        && stored.user_data_64 == pending.user_data_64
        && stored.user_data_32 == pending.user_data_32
        && !debit.flags.history()
        && !credit.flags.history()
}

impl Ledger {
    /// The record the post kept as [`ResolutionPost`] `node` would have stored.
    pub(crate) fn resolution_record(&self, node: u32) -> Transfer {
        let post = self.resolutions.get(node as usize);
        let pending = &self.transfers.get(post.pending_index as usize).transfer;
        Transfer {
            id: pending.id + RESOLUTION_OFFSET,
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount: pending.amount,
            pending_id: pending.id,
            user_data_128: pending.user_data_128,
            user_data_64: pending.user_data_64,
            user_data_32: pending.user_data_32,
            timeout: 0,
            ledger: pending.ledger,
            code: pending.code,
            flags: post.flags,
            timestamp: post.timestamp,
        }
    }

    /// The [`ResolutionPost`] of `pending_index` if a system resolution posted it.
    #[inline]
    pub(crate) fn resolution_of_pending(&self, pending_index: u32) -> Option<u32> {
        let meta = &self.transfers.get(pending_index as usize).meta;
        (meta.status == Status::PostedByResolution).then_some(meta.resolution)
    }

    /// The [`ResolutionPost`] of transfer `id`, if it is a post that stored no record.
    pub(crate) fn resolution_of_id(&self, id: u128) -> Option<u32> {
        let pending_index = self.transfer_index_of(resolved_pending_id(id)?)?;
        self.resolution_of_pending(pending_index)
    }

    /// Transfer `id` as stored, or as it would have been stored if it is a post that stored no
    /// record; `None` if the ledger has no such transfer.
    pub(crate) fn transfer_by_id(&self, id: u128) -> Option<Transfer> {
        match self.transfer_index_of(id) {
            Some(index) => Some(self.transfers.get(index as usize).transfer),
            None => self
                .resolution_of_id(id)
                .map(|node| self.resolution_record(node)),
        }
    }

    /// Keeps the post of `pending_index` (at `timestamp`, with `flags`) as a
    /// [`ResolutionPost`] at the head of both accounts' history lists, and marks the pending
    /// transfer posted by it. The caller checked [`stores_no_record`] and booked the amounts.
    pub(crate) fn store_resolution(
        &mut self,
        pending_index: u32,
        [debit_index, credit_index]: [u32; 2],
        flags: TransferFlags,
        timestamp: u64,
    ) {
        let node = self.resolutions.len();
        assert!(
            node < (RESOLUTION_BIT - 1) as usize,
            "system resolution count beyond 31-bit indices"
        );
        let node = node as u32;
        let value = RESOLUTION_BIT | node;
        let [debit_previous, credit_previous] =
            self.link_history([debit_index, credit_index], value);
        self.resolutions.push(ResolutionPost {
            pending_index,
            debit_previous,
            credit_previous,
            flags,
            timestamp,
        });
        let meta = &mut self.transfers.get_mut(pending_index as usize).meta;
        meta.status = Status::PostedByResolution;
        meta.resolution = node;
    }

    /// A history-list value: the transfer it names (stored or rebuilt), and the next (older)
    /// value of the list of `account_id`.
    pub(crate) fn history_entry(&self, value: u32, account_id: u128) -> (Transfer, u32) {
        if value & RESOLUTION_BIT != 0 {
            let node = value & !RESOLUTION_BIT;
            let transfer = self.resolution_record(node);
            let post = self.resolutions.get(node as usize);
            let previous = if transfer.debit_account_id == account_id {
                post.debit_previous
            } else {
                post.credit_previous
            };
            return (transfer, previous);
        }
        let stored = self.transfers.get(value as usize);
        let previous = if stored.transfer.debit_account_id == account_id {
            stored.meta.debit_previous
        } else {
            stored.meta.credit_previous
        };
        (stored.transfer, previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Account, AccountFilter, AccountFlags, CreateTransferResult as R, TransferStatus};

    const LEG: u128 = SYSTEM_ID_MIN;

    /// Accounts 1 and 2, and 3 with a balance history.
    fn ledger() -> Ledger {
        let mut ledger = Ledger::new();
        let history = Account {
            flags: AccountFlags::HISTORY,
            ..Account::new(3, 7, 1)
        };
        let accounts = [Account::new(1, 7, 1), Account::new(2, 7, 1), history];
        assert!(
            ledger
                .create_accounts(&accounts, 1)
                .iter()
                .all(|r| r.is_ok())
        );
        ledger
    }

    fn pending(t: u128, credit: u128) -> Transfer {
        Transfer {
            flags: TransferFlags::PENDING,
            user_data_64: 9,
            ..Transfer::new(LEG + t, 1, credit, 50, 7, 1)
        }
    }

    fn post(t: u128) -> Transfer {
        Transfer {
            pending_id: LEG + t,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::new(LEG + LEG + t, 0, 0, u128::MAX, 0, 0)
        }
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one scenario, checked step by step")]
    fn a_system_resolution_stores_nothing_and_reads_back_as_stored() {
        let mut ledger = ledger();
        let batch = [pending(1, 2), pending(2, 3), pending(3, 2)];
        assert_eq!(ledger.create_transfers(&batch, 10), [R::Ok; 3]);
        // 1: stored nowhere; 2: its credit account keeps a history, so it stores a record;
        // 3: a partial post stores a record.
        let partial = Transfer {
            amount: 20,
            ..post(3)
        };
        let results = ledger.create_transfers(&[post(1), post(2), partial], 20);
        assert_eq!(results, [R::Ok; 3]);
        assert_eq!(ledger.transfer_count(), 5);
        assert_eq!(ledger.resolutions.len(), 1);
        assert_eq!(ledger.transfer_position(LEG + LEG + 1), None);
        assert_eq!(ledger.transfer_position(LEG + LEG + 2), Some(3));
        assert_eq!(
            ledger.transfer_at(0).map(|(_, s)| s),
            Some(TransferStatus::Posted)
        );
        let closings = ledger.last_batch_closings();
        assert_eq!(closings[0].position, None);
        assert_eq!(closings[1].position, Some(3));
        let expected = Transfer {
            id: LEG + LEG + 1,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 50,
            pending_id: LEG + 1,
            user_data_64: 9,
            ledger: 7,
            code: 1,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            timestamp: ledger.last_timestamp() - 2,
            ..Transfer::default()
        };
        assert_eq!(ledger.lookup_transfers(&[LEG + LEG + 1]), [expected]);
        // In both accounts' histories, newest first, at its timestamp.
        let reversed = AccountFilter {
            flags: crate::AccountFilterFlags::DEBITS
                | crate::AccountFilterFlags::CREDITS
                | crate::AccountFilterFlags::REVERSED,
            ..AccountFilter::new(2, 10)
        };
        let ids: Vec<u128> = ledger
            .get_account_transfers(&reversed)
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, [LEG + LEG + 3, LEG + LEG + 1, LEG + 3, LEG + 1]);
        // Resubmissions answer as if it were stored.
        let void = Transfer {
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            amount: 0,
            ..post(1)
        };
        let other_data = Transfer {
            user_data_128: 5,
            ..post(1)
        };
        let user_post = Transfer { id: 77, ..post(1) };
        let naming_it = Transfer {
            id: 78,
            pending_id: LEG + LEG + 1,
            ..post(1)
        };
        let results =
            ledger.create_transfers(&[post(1), void, other_data, user_post, naming_it], 30);
        let expected = [
            R::Exists,
            R::ExistsWithDifferentFlags,
            R::ExistsWithDifferentUserData128,
            R::PendingTransferAlreadyPosted,
            R::PendingTransferNotPending,
        ];
        assert_eq!(results, expected);
        // A snapshot holds it as a record; decoding keeps it as none.
        let bytes = ledger.encode_snapshot();
        let restored = Ledger::decode_snapshot(&bytes).unwrap();
        assert_eq!(restored.encode_snapshot(), bytes);
        assert_eq!(restored.transfer_count(), ledger.transfer_count());
        assert_eq!(restored.resolutions.len(), 1);
        assert_eq!(
            restored.get_account_transfers(&reversed),
            ledger.get_account_transfers(&reversed)
        );
    }

    #[test]
    fn a_failed_chain_rolls_a_system_resolution_back() {
        let mut ledger = ledger();
        assert_eq!(ledger.create_transfers(&[pending(1, 2)], 10), [R::Ok]);
        let before = ledger.lookup_accounts(&[1, 2]);
        let linked = Transfer {
            flags: TransferFlags::POST_PENDING_TRANSFER.union(TransferFlags::LINKED),
            ..post(1)
        };
        let missing_account = Transfer::new(5, 1, 99, 1, 7, 1);
        let results = ledger.create_transfers(&[linked, missing_account], 20);
        assert_eq!(results, [R::LinkedEventFailed, R::CreditAccountNotFound]);
        assert!(ledger.resolutions.len() == 0 && ledger.last_batch_closings().is_empty());
        assert_eq!(ledger.lookup_transfers(&[LEG + LEG + 1]), []);
        assert_eq!(
            ledger.transfer_at(0).map(|(_, s)| s),
            Some(TransferStatus::Pending)
        );
        // The balances are back; the post then applies, its linked flag kept.
        assert_eq!(ledger.lookup_accounts(&[1, 2]), before);
        assert_eq!(
            ledger.create_transfers(&[linked, Transfer::new(6, 1, 2, 1, 7, 1)], 30),
            [R::Ok, R::Ok]
        );
        assert_eq!(
            ledger.lookup_transfers(&[LEG + LEG + 1])[0].flags,
            linked.flags
        );
        assert_eq!(ledger.resolutions.len(), 1);
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
    fn a_snapshot_interleaves_resolutions_with_history_entries_expiry_and_a_failed_chain() {
        // Resolutions between stored transfers whose HISTORY balance entries must keep
        // pointing at the right snapshot index, a pending transfer that expires after a
        // resolution, and a chain that creates and resolves a leg then fails.
        let mut ledger = ledger();
        let expiring = Transfer {
            timeout: 1,
            ..pending(9, 2)
        };
        assert_eq!(
            ledger.create_transfers(&[pending(1, 2), pending(2, 2), expiring], 10),
            [R::Ok; 3]
        );
        let to_history = Transfer::new(50, 1, 3, 1, 7, 1);
        let to_history_2 = Transfer::new(51, 2, 3, 1, 7, 1);
        assert_eq!(
            ledger.create_transfers(&[post(1), to_history, post(2), to_history_2], 20),
            [R::Ok; 4]
        );
        assert_eq!(ledger.resolutions.len(), 2);
        let linked = |t: Transfer| Transfer {
            flags: t.flags.union(TransferFlags::LINKED),
            ..t
        };
        let chain = [
            linked(pending(3, 2)),
            linked(post(3)),
            Transfer::new(52, 1, 99, 1, 7, 1),
        ];
        assert_eq!(
            ledger.create_transfers(&chain, 30),
            [
                R::LinkedEventFailed,
                R::LinkedEventFailed,
                R::CreditAccountNotFound
            ]
        );
        assert_eq!(ledger.resolutions.len(), 2);
        assert_eq!(ledger.lookup_transfers(&[LEG + 3, LEG + LEG + 3]), []);
        // Past the deadline of 9 (1 s).
        let late = 10 + 2 * 1_000_000_000;
        assert_eq!(
            ledger.create_transfers(&[post(9), Transfer::new(53, 1, 3, 1, 7, 1)], late),
            [R::PendingTransferExpired, R::Ok]
        );
        let bytes = ledger.encode_snapshot();
        let restored = Ledger::decode_snapshot(&bytes).unwrap();
        assert_eq!(restored.encode_snapshot(), bytes);
        assert_eq!(restored.digest(), ledger.digest());
        assert_eq!(restored.resolutions.len(), 2);
        let all = |id| AccountFilter {
            flags: crate::AccountFilterFlags::DEBITS | crate::AccountFilterFlags::CREDITS,
            ..AccountFilter::new(id, 100)
        };
        for id in [1, 2, 3] {
            assert_eq!(
                restored.get_account_transfers(&all(id)),
                ledger.get_account_transfers(&all(id))
            );
            assert_eq!(
                restored.get_account_balances(&all(id)),
                ledger.get_account_balances(&all(id))
            );
        }
        assert_eq!(restored.get_account_balances(&all(3)).len(), 3);
        assert_eq!(
            restored.lookup_transfers(&[LEG + LEG + 1, LEG + LEG + 2, LEG + LEG + 9]),
            ledger.lookup_transfers(&[LEG + LEG + 1, LEG + LEG + 2])
        );
        // Retries after the restore answer alike on both.
        let retries = [post(1), post(9), Transfer { id: 80, ..post(2) }];
        let a = ledger.create_transfers(&retries, late + 10);
        let mut restored = restored;
        assert_eq!(restored.create_transfers(&retries, late + 10), a);
        assert_eq!(
            a,
            [
                R::Exists,
                R::PendingTransferExpired,
                R::PendingTransferAlreadyPosted
            ]
        );
    }

    #[test]
    fn only_ids_of_the_resolution_range_name_a_resolved_pending_id() {
        let t = 12_345_u128;
        assert_eq!(resolved_pending_id((2 << 126) + t), Some((1 << 126) + t));
        assert_eq!(
            resolved_pending_id((2 << 126) + (1 << 126) - 1),
            Some((2 << 126) - 1)
        );
        for id in [
            0,
            t,
            (1 << 126) + t,
            (3 << 126) + t,
            u128::MAX,
            (2 << 126) - 1,
        ] {
            assert_eq!(resolved_pending_id(id), None, "{id:#x}");
        }
    }
}
