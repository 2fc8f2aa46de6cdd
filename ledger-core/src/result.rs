//! Per-event result codes. A business rejection is a result, never an `Err`.
//!
//! Variants are listed in precedence order: the ledger checks the rules from top to bottom and
//! the first rule an event breaks is its result. Transfers branch after
//! `FlagsAreMutuallyExclusive`: a post or void checks the `PendingId…`/`PendingTransfer…` rules
//! (plus `TimeoutReservedForPendingTransfer`, `ExceedsPendingTransferAmount` and the closed
//! account rules, in the order given on [`CreateTransferResult`]), any other transfer checks
//! the rules from `DebitAccountIdMustNotBeZero` to `ExceedsDebits`. Wire codes are the explicit
//! discriminants and never change meaning. `IdReservedForSystem` comes last and is the
//! cluster client's check, made before the ledger sees the event.

macro_rules! result_codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[doc = $doc:literal])* $variant:ident = $code:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[repr(u32)]
        pub enum $name {
            $($(#[doc = $doc])* $variant = $code,)*
        }

        impl $name {
            /// Every result, in precedence order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The stable wire code.
            pub const fn code(self) -> u32 {
                self as u32
            }

            /// The result with this wire code, if any.
            pub const fn from_code(code: u32) -> Option<Self> {
                match code {
                    $($code => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// Whether the event was applied.
            pub const fn is_ok(self) -> bool {
                matches!(self, Self::Ok)
            }

            /// Whether an identical event with this id was applied before (an idempotent retry).
            pub const fn is_exists(self) -> bool {
                matches!(self, Self::Exists)
            }
        }
    };
}

result_codes! {
    /// The result of one event of `create_accounts`, variants in precedence order.
    pub enum CreateAccountResult {
        /// The account was created.
        Ok = 0,
        /// Another event of this event's linked chain failed; this one was rolled back.
        LinkedEventFailed = 1,
        /// The batch ends with `LINKED` set: the chain is never closed.
        LinkedEventChainOpen = 2,
        /// `timestamp` must be zero: the ledger assigns it.
        TimestampMustBeZero = 3,
        /// `reserved` must be zero.
        ReservedField = 4,
        /// A flag bit outside [`crate::AccountFlags::ALL`] is set.
        ReservedFlag = 5,
        /// `id` must not be zero.
        IdMustNotBeZero = 6,
        /// `id` must not be `u128::MAX`.
        IdMustNotBeIntMax = 7,
        /// An account with this id exists with different flags (`CLOSED` is not compared).
        ExistsWithDifferentFlags = 8,
        /// An account with this id exists with a different `user_data_128`.
        ExistsWithDifferentUserData128 = 9,
        /// An account with this id exists with a different `user_data_64`.
        ExistsWithDifferentUserData64 = 10,
        /// An account with this id exists with a different `user_data_32`.
        ExistsWithDifferentUserData32 = 11,
        /// An account with this id exists with a different `ledger`.
        ExistsWithDifferentLedger = 12,
        /// An account with this id exists with a different `code`.
        ExistsWithDifferentCode = 13,
        /// This exact account exists: an idempotent retry.
        Exists = 14,
        /// `DEBITS_MUST_NOT_EXCEED_CREDITS` and `CREDITS_MUST_NOT_EXCEED_DEBITS` are both set.
        FlagsAreMutuallyExclusive = 15,
        /// A new account starts with zero `debits_pending`.
        DebitsPendingMustBeZero = 16,
        /// A new account starts with zero `debits_posted`.
        DebitsPostedMustBeZero = 17,
        /// A new account starts with zero `credits_pending`.
        CreditsPendingMustBeZero = 18,
        /// A new account starts with zero `credits_posted`.
        CreditsPostedMustBeZero = 19,
        /// `ledger` must not be zero.
        LedgerMustNotBeZero = 20,
        /// `code` must not be zero.
        CodeMustNotBeZero = 21,
        /// `id` lies in the range reserved for the system ([`crate::SYSTEM_ID_MIN`] and above):
        /// the cluster's own accounts (cross-shard bridges) live there. The ledger itself never
        /// returns this; the cluster's client does, for user events, before submitting them.
        IdReservedForSystem = 22,
    }
}

result_codes! {
    /// The result of one event of `create_transfers`, variants in precedence order (see the
    /// module documentation for the branch between new transfers and posts/voids).
    ///
    /// A post or void checks, after `FlagsAreMutuallyExclusive`: `PendingIdMustNotBeZero`,
    /// `PendingIdMustNotBeIntMax`, `PendingIdMustBeDifferent`,
    /// `TimeoutReservedForPendingTransfer`, `PendingTransferNotFound`,
    /// `PendingTransferNotPending`, `PendingTransferHasDifferentDebitAccountId`,
    /// `…CreditAccountId`, `…Ledger`, `…Code`, `ExceedsPendingTransferAmount`,
    /// `PendingTransferHasDifferentAmount`, `PendingTransferAlreadyPosted`,
    /// `PendingTransferAlreadyVoided`, `PendingTransferExpired`, then (posts only)
    /// `DebitAccountAlreadyClosed`, `CreditAccountAlreadyClosed`.
    pub enum CreateTransferResult {
        /// The transfer was applied.
        Ok = 0,
        /// Another event of this event's linked chain failed; this one was rolled back.
        LinkedEventFailed = 1,
        /// The batch ends with `LINKED` set: the chain is never closed.
        LinkedEventChainOpen = 2,
        /// `timestamp` must be zero: the ledger assigns it.
        TimestampMustBeZero = 3,
        /// A flag bit outside [`crate::TransferFlags::ALL`] is set.
        ReservedFlag = 4,
        /// `id` must not be zero.
        IdMustNotBeZero = 5,
        /// `id` must not be `u128::MAX`.
        IdMustNotBeIntMax = 6,
        /// A transfer with this id exists with different flags.
        ExistsWithDifferentFlags = 7,
        /// A transfer with this id exists with a different `pending_id`.
        ExistsWithDifferentPendingId = 8,
        /// A transfer with this id exists with a different `timeout`.
        ExistsWithDifferentTimeout = 9,
        /// A transfer with this id exists with a different `debit_account_id`.
        ExistsWithDifferentDebitAccountId = 10,
        /// A transfer with this id exists with a different `credit_account_id`.
        ExistsWithDifferentCreditAccountId = 11,
        /// A transfer with this id exists with a different `amount` (for a balancing transfer:
        /// a requested amount below the amount transferred).
        ExistsWithDifferentAmount = 12,
        /// A transfer with this id exists with a different `user_data_128`.
        ExistsWithDifferentUserData128 = 13,
        /// A transfer with this id exists with a different `user_data_64`.
        ExistsWithDifferentUserData64 = 14,
        /// A transfer with this id exists with a different `user_data_32`.
        ExistsWithDifferentUserData32 = 15,
        /// A transfer with this id exists with a different `ledger`.
        ExistsWithDifferentLedger = 16,
        /// A transfer with this id exists with a different `code`.
        ExistsWithDifferentCode = 17,
        /// This exact transfer exists: an idempotent retry.
        Exists = 18,
        /// A transfer with this id failed before with a transient result; the id stays burnt so
        /// a retry never flips the answer (I3). Retry with a new id.
        IdAlreadyFailed = 19,
        /// Flags that exclude each other: `PENDING`, `POST_PENDING_TRANSFER` and
        /// `VOID_PENDING_TRANSFER` pairwise, or `BALANCING_*` / `CLOSING_*` with a post or void.
        FlagsAreMutuallyExclusive = 20,
        /// `debit_account_id` must not be zero.
        DebitAccountIdMustNotBeZero = 21,
        /// `debit_account_id` must not be `u128::MAX`.
        DebitAccountIdMustNotBeIntMax = 22,
        /// `credit_account_id` must not be zero.
        CreditAccountIdMustNotBeZero = 23,
        /// `credit_account_id` must not be `u128::MAX`.
        CreditAccountIdMustNotBeIntMax = 24,
        /// The debit and credit accounts must differ.
        AccountsMustBeDifferent = 25,
        /// `pending_id` is only for posts and voids.
        PendingIdMustBeZero = 26,
        /// `timeout` is only for pending transfers.
        TimeoutReservedForPendingTransfer = 27,
        /// `CLOSING_DEBIT` / `CLOSING_CREDIT` need `PENDING`.
        ClosingTransferMustBePending = 28,
        /// `ledger` must not be zero.
        LedgerMustNotBeZero = 29,
        /// `code` must not be zero.
        CodeMustNotBeZero = 30,
        /// No account has `debit_account_id`.
        DebitAccountNotFound = 31,
        /// No account has `credit_account_id`.
        CreditAccountNotFound = 32,
        /// The two accounts belong to different ledgers.
        AccountsMustHaveTheSameLedger = 33,
        /// The transfer's ledger differs from its accounts' ledger.
        TransferMustHaveTheSameLedgerAsAccounts = 34,
        /// The debit account is closed.
        DebitAccountAlreadyClosed = 35,
        /// The credit account is closed.
        CreditAccountAlreadyClosed = 36,
        /// The debit account's `debits_pending` would overflow.
        OverflowsDebitsPending = 37,
        /// The credit account's `credits_pending` would overflow.
        OverflowsCreditsPending = 38,
        /// The debit account's `debits_posted` would overflow.
        OverflowsDebitsPosted = 39,
        /// The credit account's `credits_posted` would overflow.
        OverflowsCreditsPosted = 40,
        /// The debit account's `debits_pending + debits_posted` would overflow.
        OverflowsDebits = 41,
        /// The credit account's `credits_pending + credits_posted` would overflow.
        OverflowsCredits = 42,
        /// `timestamp + timeout` would overflow the u64 nanosecond clock.
        OverflowsTimeout = 43,
        /// The debit account has `DEBITS_MUST_NOT_EXCEED_CREDITS` and too little credit.
        ExceedsCredits = 44,
        /// The credit account has `CREDITS_MUST_NOT_EXCEED_DEBITS` and too little debit.
        ExceedsDebits = 45,
        /// A post or void needs a `pending_id`.
        PendingIdMustNotBeZero = 46,
        /// `pending_id` must not be `u128::MAX`.
        PendingIdMustNotBeIntMax = 47,
        /// `pending_id` must differ from `id`.
        PendingIdMustBeDifferent = 48,
        /// No transfer has `pending_id`.
        PendingTransferNotFound = 49,
        /// The transfer named by `pending_id` is not pending.
        PendingTransferNotPending = 50,
        /// A non-zero `debit_account_id` differs from the pending transfer's.
        PendingTransferHasDifferentDebitAccountId = 51,
        /// A non-zero `credit_account_id` differs from the pending transfer's.
        PendingTransferHasDifferentCreditAccountId = 52,
        /// A non-zero `ledger` differs from the pending transfer's.
        PendingTransferHasDifferentLedger = 53,
        /// A non-zero `code` differs from the pending transfer's.
        PendingTransferHasDifferentCode = 54,
        /// A post's amount exceeds the pending amount.
        ExceedsPendingTransferAmount = 55,
        /// A void's amount is neither 0, `u128::MAX`, nor the pending amount.
        PendingTransferHasDifferentAmount = 56,
        /// The pending transfer was already posted.
        PendingTransferAlreadyPosted = 57,
        /// The pending transfer was already voided.
        PendingTransferAlreadyVoided = 58,
        /// The pending transfer's timeout has passed (at this event's timestamp).
        PendingTransferExpired = 59,
        /// `id`, `pending_id`, `debit_account_id` or `credit_account_id` lies in the range
        /// reserved for the system ([`crate::SYSTEM_ID_MIN`] and above, except `u128::MAX`,
        /// which has its own codes): the cluster's cross-shard legs and bridge accounts live
        /// there. The ledger itself never returns this; the cluster's client does, for user
        /// events, before submitting them.
        IdReservedForSystem = 60,
    }
}

impl CreateTransferResult {
    /// Whether the result depends on ledger state that may change (an account that does not
    /// exist yet, a balance too low, ...), as opposed to a property of the event itself. A
    /// transient failure burns the transfer's id: a retry answers [`Self::IdAlreadyFailed`].
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Self::DebitAccountNotFound
                | Self::CreditAccountNotFound
                | Self::DebitAccountAlreadyClosed
                | Self::CreditAccountAlreadyClosed
                | Self::OverflowsDebitsPending
                | Self::OverflowsCreditsPending
                | Self::OverflowsDebitsPosted
                | Self::OverflowsCreditsPosted
                | Self::OverflowsDebits
                | Self::OverflowsCredits
                | Self::ExceedsCredits
                | Self::ExceedsDebits
                | Self::PendingTransferNotFound
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_round_trip() {
        for (index, &result) in CreateTransferResult::ALL.iter().enumerate() {
            assert_eq!(result.code() as usize, index);
            assert_eq!(CreateTransferResult::from_code(result.code()), Some(result));
        }
        for (index, &result) in CreateAccountResult::ALL.iter().enumerate() {
            assert_eq!(result.code() as usize, index);
            assert_eq!(CreateAccountResult::from_code(result.code()), Some(result));
        }
        assert_eq!(CreateTransferResult::from_code(61), None);
        assert_eq!(CreateAccountResult::from_code(23), None);
    }

    #[test]
    fn predicates() {
        assert!(CreateTransferResult::Ok.is_ok());
        assert!(!CreateTransferResult::Exists.is_ok());
        assert!(CreateTransferResult::Exists.is_exists());
        assert!(!CreateTransferResult::ExistsWithDifferentAmount.is_exists());
        assert!(CreateTransferResult::ExceedsCredits.is_transient());
        assert!(!CreateTransferResult::AccountsMustBeDifferent.is_transient());
        assert!(CreateAccountResult::Exists.is_exists());
        assert!(!CreateTransferResult::IdReservedForSystem.is_transient());
        assert_eq!(CreateTransferResult::IdReservedForSystem.code(), 60);
        assert_eq!(CreateAccountResult::IdReservedForSystem.code(), 22);
        assert!(crate::SYSTEM_ID_MIN.is_power_of_two());
    }
}
