//! paxos-ledger: a replicated double-entry ledger that cannot lose money.
//!
//! Accounts and double-entry transfers, replicated by Multi-Paxos across three (or five)
//! replicas, durable on a majority before anything is acknowledged (RPO = 0), with automatic
//! leader failover, sharded by account id. This crate re-exports the public API of the
//! workspace's crates.
//!
//! # Examples
//!
//! One shard of three replicas in this process (the README's usage, run as a doctest):
//!
//! ```
//! use paxos_ledger::{
//!     Account, AccountFlags, Cluster, ClusterConfig, CreateTransferResult, Transfer,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("paxos-ledger-doctest-{}", std::process::id()));
//! let cluster = Cluster::open(ClusterConfig::new(&dir).replicas(3).shards(1))?;
//! let client = cluster.client(); // Clone + Send + Sync; share it between threads
//!
//! let mut alice = Account::new(1, 840, 1); // id, ledger (e.g. a currency), code
//! alice.flags = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS; // no overdraft
//! let bank = Account::new(2, 840, 1);
//! assert!(client.create_accounts(&[alice, bank])?.iter().all(|r| r.is_ok()));
//!
//! // Acknowledged = durable on a majority. A rejection is a per-event result, not an Err.
//! assert!(client.create_transfers(&[Transfer::new(100, 2, 1, 5_000, 840, 1)])?[0].is_ok());
//! let overdraft = client.create_transfers(&[Transfer::new(101, 1, 2, 9_999, 840, 1)])?;
//! assert_eq!(overdraft[0], CreateTransferResult::ExceedsCredits);
//!
//! // Reads are linearizable: they see every acknowledged write.
//! let accounts = client.lookup_accounts(&[1])?;
//! assert_eq!(accounts[0].credits_posted, 5_000);
//! cluster.shutdown()?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub use ledger_core as core;
pub use ledger_paxos as paxos;
pub use ledger_shard as shard;
pub use ledger_wal as wal;

pub use ledger_core::{
    ACCOUNT_SIZE_BYTES, Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags,
    BATCH_EVENTS_MAX, Command, CoreError, CreateAccountResult, CreateTransferResult,
    InvariantViolation, Ledger, MemoryUsage, Query, QueryReply, Reply, TRANSFER_SIZE_BYTES,
    Transfer, TransferFlags,
};

// ---- cluster API (ledger-shard) ----
pub use ledger_shard::{
    Client, Cluster, ClusterConfig, EVENTS_PER_CALL_MAX, ReplicaState, Router, ShardError,
};
