//! Read-only queries of the [`Ledger`].

use crate::ledger::{Ledger, NONE};
use crate::{
    Account, AccountBalance, AccountFilter, BATCH_EVENTS_MAX, Query, QueryReply, Transfer,
};

impl Ledger {
    /// Answers a [`Query`].
    pub fn query(&self, query: &Query) -> QueryReply {
        match query {
            Query::LookupAccounts(ids) => QueryReply::Accounts(self.lookup_accounts(ids)),
            Query::LookupTransfers(ids) => QueryReply::Transfers(self.lookup_transfers(ids)),
            Query::GetAccountTransfers(filter) => {
                QueryReply::Transfers(self.get_account_transfers(filter))
            }
            Query::GetAccountBalances(filter) => {
                QueryReply::Balances(self.get_account_balances(filter))
            }
        }
    }

    /// The accounts with these ids that exist, in request order.
    pub fn lookup_accounts(&self, ids: &[u128]) -> Vec<Account> {
        ids.iter()
            .filter_map(|&id| self.account_index_of(id))
            .map(|index| {
                let user_data_32 = *self.account_user_data_32.get(index as usize);
                self.accounts.get(index as usize).account(user_data_32)
            })
            .collect()
    }

    /// The transfers with these ids that exist, in request order (a system resolution, which
    /// stored no record, as it would have been stored).
    pub fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        ids.iter()
            .filter_map(|&id| self.transfer_by_id(id))
            .collect()
    }

    /// Transfers of `filter.account_id` on the selected side(s) within the timestamp range,
    /// oldest first (newest first with `REVERSED`), at most `filter.limit` (capped at
    /// [`BATCH_EVENTS_MAX`]); system resolutions included, as they would have been stored.
    /// An invalid filter (no side, zero limit, unknown account, empty
    /// range) gives an empty answer.
    pub fn get_account_transfers(&self, filter: &AccountFilter) -> Vec<Transfer> {
        let Some(account_index) = self.query_account(filter) else {
            return Vec::new();
        };
        let newest_first = self
            .account_transfers_newest_first(account_index)
            .map(|transfer| {
                (
                    transfer.timestamp,
                    transfer.debit_account_id == filter.account_id,
                    transfer,
                )
            });
        query_select(filter, newest_first)
    }

    /// Balances of a `HISTORY` account after each of its transfers selected by `filter`
    /// (same rules as [`Self::get_account_transfers`]); empty for other accounts.
    pub fn get_account_balances(&self, filter: &AccountFilter) -> Vec<AccountBalance> {
        let Some(account_index) = self.query_account(filter) else {
            return Vec::new();
        };
        let slot = self.accounts.get(account_index as usize);
        if !slot.flags.history() {
            return Vec::new();
        }
        let mut entry_index = slot.balances_newest;
        let newest_first = std::iter::from_fn(move || {
            if entry_index == NONE {
                return None;
            }
            let entry = self.balances[entry_index as usize];
            entry_index = entry.previous;
            let transfer = &self.transfers.get(entry.transfer_index as usize).transfer;
            let debit = transfer.debit_account_id == filter.account_id;
            Some((entry.balance.timestamp, debit, entry.balance))
        });
        query_select(filter, newest_first)
    }

    /// The account a filter names, if the filter can select anything.
    fn query_account(&self, filter: &AccountFilter) -> Option<u32> {
        let flags = filter.flags;
        let range_empty = filter.timestamp_max != 0 && filter.timestamp_min > filter.timestamp_max;
        if filter.limit == 0 || !(flags.debits() || flags.credits()) || range_empty {
            return None;
        }
        self.account_index_of(filter.account_id)
    }

    /// An account's transfers, newest first, following the history list.
    fn account_transfers_newest_first(
        &self,
        account_index: u32,
    ) -> impl Iterator<Item = Transfer> + '_ {
        let account_id = self.accounts.get(account_index as usize).id;
        let mut value = self.accounts.get(account_index as usize).transfers_newest;
        std::iter::from_fn(move || {
            if value == NONE {
                return None;
            }
            let (transfer, previous) = self.history_entry(value, account_id);
            value = previous;
            Some(transfer)
        })
    }
}

/// Applies side, range, order and limit to (timestamp, is debit side, item) given newest first.
fn query_select<T>(
    filter: &AccountFilter,
    newest_first: impl Iterator<Item = (u64, bool, T)>,
) -> Vec<T> {
    let limit = filter.limit.min(BATCH_EVENTS_MAX) as usize;
    let timestamp_max = if filter.timestamp_max == 0 {
        u64::MAX
    } else {
        filter.timestamp_max
    };
    let reversed = filter.flags.reversed();
    // Oldest first keeps a window of the last `limit` items met (the oldest ones), so memory
    // stays bounded by the limit however long the history is.
    let mut selected = std::collections::VecDeque::with_capacity(limit.min(64));
    for (timestamp, debit, item) in newest_first {
        if timestamp > timestamp_max {
            continue;
        }
        if timestamp < filter.timestamp_min {
            break; // Lists are in timestamp order: everything further is older.
        }
        if (debit && filter.flags.debits()) || (!debit && filter.flags.credits()) {
            selected.push_back(item);
            if selected.len() > limit {
                selected.pop_front();
            }
            if reversed && selected.len() == limit {
                break;
            }
        }
    }
    if reversed {
        selected.into_iter().collect()
    } else {
        selected.into_iter().rev().collect()
    }
}
