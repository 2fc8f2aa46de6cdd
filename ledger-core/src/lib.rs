//! ledger-core: the domain of paxos-ledger.
//!
//! Accounts, transfers, their result codes, the fixed-size binary codec, and the pure ledger
//! state machine. No I/O, no clock, no randomness: the same inputs always give the same state.
//!
//! ```
//! use ledger_core::{Account, Command, Transfer};
//! let command = Command::CreateAccounts(vec![Account::new(1, 700, 10)]);
//! let mut bytes = Vec::new();
//! command.encode(&mut bytes);
//! assert_eq!(Command::decode(&bytes)?, command);
//! # let _ = Transfer::new(1, 1, 2, 5, 700, 1);
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
mod result;
mod snapshot;
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
pub use transfer::{TRANSFER_SIZE_BYTES, Transfer};
