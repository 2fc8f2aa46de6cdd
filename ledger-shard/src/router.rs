//! The shard router: an account lives on shard `account_id % shard_count`.

use ledger_core::Transfer;

/// Maps account ids to shards with the modulo rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Router {
    shard_count: usize,
}

/// Where a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Both accounts (or the one named) live on this shard.
    Shard(usize),
    /// The accounts live on two shards.
    Cross {
        /// The debit account's shard.
        debit_shard: usize,
        /// The credit account's shard.
        credit_shard: usize,
    },
    /// The transfer names no account (a post or void naming only its pending transfer): its
    /// shard is the pending transfer's.
    Unknown,
}

impl Router {
    /// A router over `shard_count` shards.
    ///
    /// # Panics
    ///
    /// If `shard_count` is zero (the configuration is validated before).
    pub fn new(shard_count: usize) -> Self {
        assert!(shard_count > 0);
        Self { shard_count }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The shard of an account id. Id 0 (invalid) goes to shard 0, which rejects it.
    pub fn shard_of(&self, account_id: u128) -> usize {
        // The remainder is below shard_count, a usize, so the narrowing is exact. An id that
        // fits in 64 bits (most) takes one machine division; a u128 one is a library call.
        match u64::try_from(account_id) {
            Ok(id) => (id % self.shard_count as u64) as usize,
            Err(_) => (account_id % self.shard_count as u128) as usize,
        }
    }

    /// The route of a transfer, by its debit and credit accounts.
    pub fn route(&self, transfer: &Transfer) -> Route {
        if self.shard_count == 1 {
            return Route::Shard(0);
        }
        match (transfer.debit_account_id, transfer.credit_account_id) {
            (0, 0) => Route::Unknown,
            (0, id) | (id, 0) => Route::Shard(self.shard_of(id)),
            (debit, credit) => {
                let debit_shard = self.shard_of(debit);
                let credit_shard = self.shard_of(credit);
                if debit_shard == credit_shard {
                    Route::Shard(debit_shard)
                } else {
                    Route::Cross {
                        debit_shard,
                        credit_shard,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_shard_takes_everything() {
        let router = Router::new(1);
        let transfer = Transfer::new(1, 7, 8, 1, 1, 1);
        assert_eq!(router.route(&transfer), Route::Shard(0));
        assert_eq!(router.shard_of(u128::MAX), 0);
    }

    #[test]
    fn routes_by_modulo() {
        let router = Router::new(4);
        assert_eq!(
            router.route(&Transfer::new(1, 5, 9, 1, 1, 1)),
            Route::Shard(1)
        );
        assert_eq!(
            router.route(&Transfer::new(1, 5, 6, 1, 1, 1)),
            Route::Cross {
                debit_shard: 1,
                credit_shard: 2
            }
        );
        assert_eq!(
            router.route(&Transfer::new(1, 0, 6, 1, 1, 1)),
            Route::Shard(2)
        );
        assert_eq!(
            router.route(&Transfer::new(1, 0, 0, 1, 1, 1)),
            Route::Unknown
        );
    }

    proptest! {
        #[test]
        fn shard_is_in_range_and_stable(
            id in any::<u128>(),
            small_id in any::<u64>(),
            shards in 1usize..64,
        ) {
            let router = Router::new(shards);
            for id in [id, u128::from(small_id)] {
                let shard = router.shard_of(id);
                prop_assert!(shard < shards);
                prop_assert_eq!(shard as u128, id % shards as u128);
            }
        }
    }
}
