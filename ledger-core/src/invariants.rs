//! Invariant violations reported by `Ledger::check_invariants` (I1, I7 of docs/design.md).

/// A broken ledger invariant. Seeing one means a bug (or a forged snapshot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvariantViolation {
    /// I1: per ledger, Σ `debits_posted` = Σ `credits_posted`.
    #[error("I1: ledger {ledger}: posted debits and credits differ")]
    PostedUnbalanced {
        /// The ledger.
        ledger: u32,
    },
    /// I1: per ledger, Σ `debits_pending` = Σ `credits_pending`.
    #[error("I1: ledger {ledger}: pending debits and credits differ")]
    PendingUnbalanced {
        /// The ledger.
        ledger: u32,
    },
    /// I7: an account's pending + posted sum of one side overflows u128.
    #[error("I7: account {account_id}: balance overflows")]
    BalanceOverflow {
        /// The account.
        account_id: u128,
    },
    /// I7: an account with a no-overdraft flag went negative.
    #[error("I7: account {account_id}: forbidden negative balance")]
    ForbiddenNegativeBalance {
        /// The account.
        account_id: u128,
    },
    /// An account's pending amounts differ from the sum of its open pending transfers.
    #[error("account {account_id}: pending balance differs from its pending transfers")]
    PendingMismatch {
        /// The account.
        account_id: u128,
    },
}

/// A 192-bit running sum, wide enough for any number of u128 balances.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct WideSum {
    low: u128,
    high: u64,
}

impl WideSum {
    fn add(&mut self, value: u128) {
        let (low, carry) = self.low.overflowing_add(value);
        self.low = low;
        self.high += u64::from(carry);
    }
}

#[derive(Clone, Copy, Default)]
struct LedgerSums {
    debits_pending: WideSum,
    debits_posted: WideSum,
    credits_pending: WideSum,
    credits_posted: WideSum,
}

impl crate::Ledger {
    /// Checks I1 (per ledger, Σ `debits_posted` = Σ `credits_posted` and the same for pending)
    /// and I7 (no side of an account overflows; no forbidden negative balance), and that every
    /// account's pending amounts equal the sum of its open pending transfers. O(accounts +
    /// transfers); tests and the simulator call it after every batch.
    ///
    /// # Errors
    /// The first [`InvariantViolation`] found.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let mut sums: std::collections::BTreeMap<u32, LedgerSums> =
            std::collections::BTreeMap::new();
        for slot in self.accounts.iter() {
            let account = slot;
            check_account_bounds(account)?;
            let ledger_sums = sums.entry(account.ledger).or_default();
            ledger_sums.debits_pending.add(account.debits_pending);
            ledger_sums.debits_posted.add(account.debits_posted);
            ledger_sums.credits_pending.add(account.credits_pending);
            ledger_sums.credits_posted.add(account.credits_posted);
        }
        for (&ledger, ledger_sums) in &sums {
            if ledger_sums.debits_posted != ledger_sums.credits_posted {
                return Err(InvariantViolation::PostedUnbalanced { ledger });
            }
            if ledger_sums.debits_pending != ledger_sums.credits_pending {
                return Err(InvariantViolation::PendingUnbalanced { ledger });
            }
        }
        self.check_pending_matches_transfers()
    }

    /// Every account's `*_pending` equals the sum of the open pending transfers it is party to.
    fn check_pending_matches_transfers(&self) -> Result<(), InvariantViolation> {
        let mut pending = vec![(WideSum::default(), WideSum::default()); self.accounts.len()];
        for stored in self.transfers.iter() {
            let transfer = &stored.transfer;
            if stored.meta.status != crate::ledger::Status::Pending {
                continue;
            }
            for (id, debit_side) in [
                (transfer.debit_account_id, true),
                (transfer.credit_account_id, false),
            ] {
                let Some(index) = self.account_index_of(id) else {
                    return Err(InvariantViolation::PendingMismatch { account_id: id });
                };
                let sums = &mut pending[index as usize];
                if debit_side {
                    sums.0.add(transfer.amount);
                } else {
                    sums.1.add(transfer.amount);
                }
            }
        }
        for (slot, (debits, credits)) in self.accounts.iter().zip(pending) {
            let account = slot;
            let expected_debits = WideSum {
                low: account.debits_pending,
                high: 0,
            };
            let expected_credits = WideSum {
                low: account.credits_pending,
                high: 0,
            };
            if debits != expected_debits || credits != expected_credits {
                return Err(InvariantViolation::PendingMismatch {
                    account_id: account.id,
                });
            }
        }
        Ok(())
    }
}

/// I7 for one account.
fn check_account_bounds(account: &crate::ledger::AccountSlot) -> Result<(), InvariantViolation> {
    let account_id = account.id;
    let Some(debits) = account.debits_pending.checked_add(account.debits_posted) else {
        return Err(InvariantViolation::BalanceOverflow { account_id });
    };
    let Some(credits) = account.credits_pending.checked_add(account.credits_posted) else {
        return Err(InvariantViolation::BalanceOverflow { account_id });
    };
    if account.flags.debits_must_not_exceed_credits() && debits > account.credits_posted {
        return Err(InvariantViolation::ForbiddenNegativeBalance { account_id });
    }
    if account.flags.credits_must_not_exceed_debits() && credits > account.debits_posted {
        return Err(InvariantViolation::ForbiddenNegativeBalance { account_id });
    }
    Ok(())
}
