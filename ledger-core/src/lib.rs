//! ledger-core: the domain of paxos-ledger.
//!
//! Accounts, transfers, their result codes, the fixed-size binary codec, and the pure ledger
//! state machine. No I/O, no clock, no randomness: the same inputs always give the same state
//! (I5, I12), which is what lets Paxos replicate it by replaying a log.
//!
//! - [`Account`] and [`Transfer`] are 128-byte little-endian records; [`Command`], [`Reply`],
//!   [`Query`] and [`QueryReply`] frame batches of them for a log entry or a read.
//! - [`Ledger`] applies batches: one [`CreateAccountResult`] / [`CreateTransferResult`] per
//!   event, in a documented precedence order; linked chains are atomic; ids are unique forever.
//! - [`Ledger::encode_snapshot`] / [`Ledger::decode_snapshot`] move the whole state; decoding
//!   hostile bytes returns an error and allocates no more than the input's size.
//!
//! ```
//! use ledger_core::{Account, Command, CreateTransferResult, Ledger, Reply, Transfer};
//! let mut ledger = Ledger::new();
//! let accounts = vec![Account::new(1, 700, 10), Account::new(2, 700, 10)];
//! ledger.apply(&Command::CreateAccounts(accounts), 1);
//! let command = Command::CreateTransfers(vec![Transfer::new(5, 1, 2, 250, 700, 1)]);
//! let mut bytes = Vec::new();
//! command.encode(&mut bytes); // what a Paxos entry carries
//! let reply = ledger.apply(&Command::decode(&bytes)?, 2);
//! assert_eq!(reply, Reply::CreateTransfers(vec![CreateTransferResult::Ok]));
//! assert_eq!(ledger.lookup_accounts(&[2])[0].credits_posted, 250);
//! ledger.check_invariants()?;
//! # Ok::<(), ledger_core::CoreError>(())
//! ```
#![deny(missing_docs)]

mod account;
mod chunked;
mod codec;
mod command;
mod error;
mod flags;
mod hash;
mod invariants;
mod ledger;
mod ledger_transfer;
mod prefetch;
mod query;
mod resolution;
mod result;
mod snapshot;
mod store;
mod transfer;

pub use account::{ACCOUNT_BALANCE_SIZE_BYTES, ACCOUNT_SIZE_BYTES, Account, AccountBalance};
pub use command::{
    ACCOUNT_FILTER_SIZE_BYTES, AccountFilter, BATCH_EVENTS_MAX, Command, Query, QueryReply, Reply,
};
pub use error::{CoreError, Result};
pub use flags::{AccountFilterFlags, AccountFlags, TransferFlags};
pub use invariants::InvariantViolation;
pub use ledger::{Ledger, MemoryUsage};
pub use result::{CreateAccountResult, CreateTransferResult};
pub use store::{Closing, TransferStatus};
pub use transfer::{TRANSFER_SIZE_BYTES, Transfer};

/// The lowest id of the range reserved for the system: account and transfer ids from here up
/// to `u128::MAX - 1` belong to the cluster (ledger-shard's cross-shard bridge accounts and the
/// legs of cross-shard transfers). The ledger applies them like any other id; the cluster's
/// client rejects user events naming them with `IdReservedForSystem`, so users can neither
/// collide with nor move the cluster's own money.
pub const SYSTEM_ID_MIN: u128 = 1 << 126;
