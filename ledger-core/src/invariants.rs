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
