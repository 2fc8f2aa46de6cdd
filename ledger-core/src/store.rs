//! Stored transfers by *store position*: the order in which the ledger stored them.
//!
//! Every `Ok` event of [`Ledger::create_transfers`] stores exactly one transfer, after the
//! ones stored before it, except a *system resolution* (a full post of a pending transfer
//! `2^126 + t` under the id `2^127 + t`, see `resolution.rs`), which stores nothing: it turns
//! its pending transfer's status to [`TransferStatus::Posted`], and lookups by id rebuild its
//! record. A failed event stores nothing, and a linked chain that fails is rolled back whole
//! (its events answer `LinkedEventFailed`). So the `i`-th *storing* `Ok` event of a batch sits
//! at position `transfer_count() - stored_count + i`, where `stored_count` is the batch's number
//! of `Ok` results less its closings without a position ([`Ledger::last_batch_closings`]) and
//! `transfer_count()` is read after the batch. Expiry stores nothing: it only turns a pending
//! transfer's status to [`TransferStatus::Expired`].

use crate::Transfer;
use crate::ledger::{Ledger, Status};

/// The status of a stored transfer: only a pending transfer moves on from `Pending`, once, to
/// `Posted`, `Voided` or `Expired`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferStatus {
    /// Not a pending transfer (a plain transfer, or a post or void).
    NotPending,
    /// A pending transfer not posted, voided or expired yet.
    Pending,
    /// A pending transfer a later transfer posted.
    Posted,
    /// A pending transfer a later transfer voided.
    Voided,
    /// A pending transfer whose timeout passed.
    Expired,
}

impl From<Status> for TransferStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::NotPending => Self::NotPending,
            Status::Pending => Self::Pending,
            Status::Posted | Status::PostedByResolution => Self::Posted,
            Status::Voided => Self::Voided,
            Status::Expired => Self::Expired,
        }
    }
}

/// A post or void that the last [`Ledger::create_transfers`] applied (see
/// [`Ledger::last_batch_closings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closing {
    /// The event's index in its batch.
    pub event: u32,
    /// Its own store position; `None` for a system resolution, which stored no record.
    pub position: Option<u32>,
    /// The store position of the pending transfer it posted or voided.
    pub pending_position: u32,
}

impl Ledger {
    /// The transfer stored at `position` (0 for the first stored, up to
    /// [`Ledger::transfer_count`] excluded) and its current status; `None` beyond the store.
    /// Reading positions in ascending order reads the store sequentially.
    ///
    /// ```
    /// use ledger_core::{Account, Command, Ledger, Transfer, TransferFlags, TransferStatus};
    /// let mut ledger = Ledger::new();
    /// ledger.apply(&Command::CreateAccounts(vec![Account::new(1, 7, 1), Account::new(2, 7, 1)]), 1);
    /// let pending = Transfer { flags: TransferFlags::PENDING, ..Transfer::new(10, 1, 2, 5, 7, 1) };
    /// let post = Transfer {
    ///     pending_id: 10,
    ///     flags: TransferFlags::POST_PENDING_TRANSFER,
    ///     ..Transfer::new(11, 0, 0, 5, 0, 0)
    /// };
    /// // The failed event (account 3 does not exist) stores nothing.
    /// let failed = Transfer::new(12, 1, 3, 5, 7, 1);
    /// ledger.apply(&Command::CreateTransfers(vec![pending, failed, post]), 2);
    /// let (first, status) = ledger.transfer_at(0).unwrap();
    /// assert_eq!((first.id, status), (10, TransferStatus::Posted));
    /// assert_eq!(ledger.transfer_at(1).unwrap().0.id, 11);
    /// assert!(ledger.transfer_at(2).is_none());
    /// assert_eq!(ledger.transfer_position(11), Some(1));
    /// assert_eq!(ledger.transfer_position(12), None);
    /// ```
    #[inline]
    pub fn transfer_at(&self, position: usize) -> Option<(&Transfer, TransferStatus)> {
        if position >= self.transfers.len() {
            return None;
        }
        let stored = self.transfers.get(position);
        Some((&stored.transfer, stored.meta.status.into()))
    }

    /// The store position of transfer `id`, if the ledger stores it (see
    /// [`Ledger::transfer_at`]): `None` also for a system resolution, which has a record
    /// (`lookup_transfers` finds it) but no position.
    pub fn transfer_position(&self, id: u128) -> Option<usize> {
        self.transfer_index_of(id).map(|index| index as usize)
    }

    /// The posts and voids applied by the last [`Ledger::create_transfers`] (or `apply` of
    /// `CreateTransfers`), in event order: for each, its index in the batch, its own store
    /// position (`None` for a system resolution, the one kind of `Ok` event that stores no
    /// record) and the store position of the pending transfer it posted or voided. A caller
    /// following pending transfers learns which ones a batch closed without looking them up by
    /// id (nor reading their records), and which `Ok` events took no store position. Events of
    /// a linked chain that failed applied nothing and are not listed; another command leaves
    /// the list as it was.
    ///
    /// ```
    /// use ledger_core::{Account, Closing, Command, Ledger, Transfer, TransferFlags};
    /// let mut ledger = Ledger::new();
    /// ledger.apply(&Command::CreateAccounts(vec![Account::new(1, 7, 1), Account::new(2, 7, 1)]), 1);
    /// let pending = |id| Transfer { flags: TransferFlags::PENDING, ..Transfer::new(id, 1, 2, 5, 7, 1) };
    /// ledger.apply(&Command::CreateTransfers(vec![pending(10), pending(11)]), 2);
    /// let void = Transfer {
    ///     pending_id: 11,
    ///     flags: TransferFlags::VOID_PENDING_TRANSFER,
    ///     ..Transfer::new(12, 0, 0, 0, 0, 0)
    /// };
    /// ledger.apply(&Command::CreateTransfers(vec![Transfer::new(13, 1, 2, 1, 7, 1), void]), 3);
    /// // The void (event 1) is stored at position 3 and closed pending transfer 11 (position 1).
    /// let closing = Closing { event: 1, position: Some(3), pending_position: 1 };
    /// assert_eq!(ledger.last_batch_closings(), [closing]);
    /// ```
    pub fn last_batch_closings(&self) -> &[Closing] {
        &self.closings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Account, Command, CreateTransferResult as R, Reply, TransferFlags,
        ledger::NANOSECONDS_PER_SECOND,
    };

    fn ledger() -> Ledger {
        let mut ledger = Ledger::new();
        let accounts = vec![Account::new(1, 7, 1), Account::new(2, 7, 1)];
        ledger.apply(&Command::CreateAccounts(accounts), 1);
        ledger
    }

    fn apply(ledger: &mut Ledger, transfers: Vec<Transfer>, timestamp: u64) -> Vec<R> {
        let Reply::CreateTransfers(results) =
            ledger.apply(&Command::CreateTransfers(transfers), timestamp)
        else {
            panic!("transfers answer transfer results");
        };
        results
    }

    fn pending(id: u128, timeout: u32) -> Transfer {
        Transfer {
            flags: TransferFlags::PENDING,
            timeout,
            ..Transfer::new(id, 1, 2, 5, 7, 1)
        }
    }

    /// The ids at every position, in order.
    fn stored_ids(ledger: &Ledger) -> Vec<u128> {
        (0..ledger.transfer_count())
            .map(|position| ledger.transfer_at(position).unwrap().0.id)
            .collect()
    }

    #[test]
    fn ok_events_are_stored_in_order_and_a_failed_chain_leaves_no_gap() {
        let mut ledger = ledger();
        let linked = Transfer {
            flags: TransferFlags::LINKED,
            ..Transfer::new(3, 1, 2, 1, 7, 1)
        };
        let missing_account = Transfer::new(4, 1, 9, 1, 7, 1);
        let batch = vec![
            Transfer::new(1, 1, 2, 1, 7, 1),
            linked,
            missing_account,
            Transfer::new(5, 1, 2, 1, 7, 1),
        ];
        let results = apply(&mut ledger, batch, 10);
        assert_eq!(
            results,
            [R::Ok, R::LinkedEventFailed, R::CreditAccountNotFound, R::Ok]
        );
        assert_eq!(stored_ids(&ledger), [1, 5]);
        assert_eq!(ledger.transfer_position(5), Some(1));
        assert_eq!(ledger.transfer_position(3), None);
        assert!(ledger.transfer_at(2).is_none());
        assert!(ledger.transfer_at(usize::MAX).is_none());
    }

    #[test]
    fn a_post_and_a_void_change_their_pending_transfer_status_only() {
        let mut ledger = ledger();
        let resolve = |id, pending_id, flags| Transfer {
            pending_id,
            flags,
            ..Transfer::new(id, 0, 0, 0, 0, 0)
        };
        let batch = vec![
            pending(1, 0),
            pending(2, 0),
            Transfer::new(3, 1, 2, 1, 7, 1),
            resolve(4, 1, TransferFlags::POST_PENDING_TRANSFER),
            resolve(5, 2, TransferFlags::VOID_PENDING_TRANSFER),
        ];
        assert!(apply(&mut ledger, batch, 10).iter().all(|r| r.is_ok()));
        let statuses: Vec<_> = (0..5)
            .map(|position| ledger.transfer_at(position).unwrap().1)
            .collect();
        assert_eq!(
            statuses,
            [
                TransferStatus::Posted,
                TransferStatus::Voided,
                TransferStatus::NotPending,
                TransferStatus::NotPending,
                TransferStatus::NotPending
            ]
        );
        assert_eq!(stored_ids(&ledger), [1, 2, 3, 4, 5]);
    }

    /// A post or void of pending transfer `pending_id`.
    fn close(id: u128, pending_id: u128, flags: TransferFlags) -> Transfer {
        Transfer {
            pending_id,
            flags,
            ..Transfer::new(id, 0, 0, 0, 0, 0)
        }
    }

    fn closed(event: u32, position: Option<u32>, pending_position: u32) -> Closing {
        Closing {
            event,
            position,
            pending_position,
        }
    }

    #[test]
    fn a_batch_lists_the_pending_transfers_its_posts_and_voids_closed() {
        let mut ledger = ledger();
        let (post, void) = (
            TransferFlags::POST_PENDING_TRANSFER,
            TransferFlags::VOID_PENDING_TRANSFER,
        );
        let batch = vec![pending(1, 0), pending(2, 0), pending(3, 0), pending(4, 0)];
        assert!(apply(&mut ledger, batch, 10).iter().all(|r| r.is_ok()));
        assert!(ledger.last_batch_closings().is_empty());
        let linked = |transfer: Transfer| Transfer {
            flags: transfer.flags.union(TransferFlags::LINKED),
            ..transfer
        };
        let batch = vec![
            close(5, 3, void),
            // Fails: 3 is voided already; stores nothing.
            close(6, 3, post),
            Transfer::new(7, 1, 2, 1, 7, 1),
            // A chain that fails after its void of 2 applied: rolled back, 2 stays pending.
            linked(close(8, 2, void)),
            Transfer::new(9, 1, 99, 1, 7, 1),
            close(10, 1, post),
        ];
        let results = apply(&mut ledger, batch, 20);
        let expected = [
            R::Ok,
            R::PendingTransferAlreadyVoided,
            R::Ok,
            R::LinkedEventFailed,
            R::CreditAccountNotFound,
            R::Ok,
        ];
        assert_eq!(results, expected);
        assert_eq!(stored_ids(&ledger), [1, 2, 3, 4, 5, 7, 10]);
        // Void 5 (event 0, position 4) closed 3 (position 2); post 10 (event 5, position 6)
        // closed 1 (0).
        assert_eq!(
            ledger.last_batch_closings(),
            [closed(0, Some(4), 2), closed(5, Some(6), 0)]
        );
        for closing in ledger.last_batch_closings() {
            let position = closing.position.unwrap() as usize;
            let (closing_transfer, _) = ledger.transfer_at(position).unwrap();
            let (pending, _) = ledger
                .transfer_at(closing.pending_position as usize)
                .unwrap();
            assert_eq!(closing_transfer.pending_id, pending.id);
        }
        // Accounts leave the list; every transfers batch replaces it, an empty one too.
        ledger.apply(&Command::CreateAccounts(vec![Account::new(3, 7, 1)]), 30);
        assert_eq!(ledger.last_batch_closings().len(), 2);
        assert_eq!(apply(&mut ledger, vec![close(11, 2, post)], 40), [R::Ok]);
        assert_eq!(ledger.last_batch_closings(), [closed(0, Some(7), 1)]);
        assert!(apply(&mut ledger, vec![], 50).is_empty());
        assert!(ledger.last_batch_closings().is_empty());
        // A snapshot does not carry the list.
        let restored = Ledger::decode_snapshot(&ledger.encode_snapshot()).unwrap();
        assert!(restored.last_batch_closings().is_empty());
        assert_eq!(restored.digest(), ledger.digest());
    }

    #[test]
    fn expiry_flips_the_status_and_stores_nothing() {
        let mut ledger = ledger();
        assert_eq!(apply(&mut ledger, vec![pending(1, 1)], 10), [R::Ok]);
        assert_eq!(ledger.transfer_at(0).unwrap().1, TransferStatus::Pending);
        let later = 10 + 2 * NANOSECONDS_PER_SECOND;
        assert_eq!(
            apply(&mut ledger, vec![Transfer::new(2, 1, 2, 1, 7, 1)], later),
            [R::Ok]
        );
        assert_eq!(ledger.transfer_at(0).unwrap().1, TransferStatus::Expired);
        assert_eq!(stored_ids(&ledger), [1, 2]);
    }
}
