//! Bit flags of accounts, transfers and query filters.

macro_rules! flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[doc = $doc:literal])* const $flag:ident = $bit:literal, $with:ident;)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u16);

        impl $name {
            $($(#[doc = $doc])* pub const $flag: Self = Self(1 << $bit);)*
            /// Every defined flag; any other bit is reserved.
            pub const ALL: Self = Self(0 $(| (1 << $bit))*);

            /// No flag set.
            pub const fn empty() -> Self {
                Self(0)
            }
            /// The raw bits, reserved ones included.
            pub const fn bits(self) -> u16 {
                self.0
            }
            /// Flags from raw bits, keeping reserved bits (the ledger rejects them with a result
            /// code, so a decoder need not).
            pub const fn from_bits_retain(bits: u16) -> Self {
                Self(bits)
            }
            /// Whether every flag of `other` is set.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }
            /// Whether any bit outside [`Self::ALL`] is set.
            pub const fn has_reserved(self) -> bool {
                self.0 & !Self::ALL.0 != 0
            }
            /// `self` with the flags of `other` added.
            #[must_use]
            pub const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
            /// `self` without the flags of `other`.
            #[must_use]
            pub const fn difference(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }
            $(
                /// Whether this flag is set.
                pub const fn $with(self) -> bool {
                    self.contains(Self::$flag)
                }
            )*
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, other: Self) -> Self {
                self.union(other)
            }
        }
    };
}

flags! {
    /// Flags of an [`crate::Account`].
    pub struct AccountFlags {
        /// The account is linked with the next event of the batch: they succeed or fail together.
        const LINKED = 0, linked;
        /// `debits_pending` + `debits_posted` may never exceed `credits_posted` (no overdraft).
        const DEBITS_MUST_NOT_EXCEED_CREDITS = 1, debits_must_not_exceed_credits;
        /// `credits_pending` + `credits_posted` may never exceed `debits_posted`.
        const CREDITS_MUST_NOT_EXCEED_DEBITS = 2, credits_must_not_exceed_debits;
        /// The ledger keeps the account's balance after every transfer (`get_account_balances`).
        const HISTORY = 3, history;
        /// The account is closed: it takes no new transfer. Set by a pending closing transfer
        /// (cleared again when that transfer is voided or expires), or at creation.
        const CLOSED = 4, closed;
    }
}

flags! {
    /// Flags of a [`crate::Transfer`].
    pub struct TransferFlags {
        /// The transfer is linked with the next event of the batch: they succeed or fail together.
        const LINKED = 0, linked;
        /// Reserve the amount (`*_pending`) until posted, voided or expired.
        const PENDING = 1, pending;
        /// Post (part of) the pending transfer named by `pending_id`.
        const POST_PENDING_TRANSFER = 2, post_pending_transfer;
        /// Void the pending transfer named by `pending_id`, releasing its reservation.
        const VOID_PENDING_TRANSFER = 3, void_pending_transfer;
        /// Transfer at most what the debit account's balance allows (`amount` is the upper bound).
        const BALANCING_DEBIT = 4, balancing_debit;
        /// Transfer at most what the credit account's balance allows.
        const BALANCING_CREDIT = 5, balancing_credit;
        /// Close the debit account (the transfer must be pending; voiding it reopens the account).
        const CLOSING_DEBIT = 6, closing_debit;
        /// Close the credit account (the transfer must be pending; voiding it reopens the account).
        const CLOSING_CREDIT = 7, closing_credit;
    }
}

flags! {
    /// Flags of an [`crate::AccountFilter`].
    pub struct AccountFilterFlags {
        /// Include transfers where the account is the debit side.
        const DEBITS = 0, debits;
        /// Include transfers where the account is the credit side.
        const CREDITS = 1, credits;
        /// Newest first instead of oldest first.
        const REVERSED = 2, reversed;
    }
}
