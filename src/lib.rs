//! paxos-ledger: a replicated double-entry ledger that cannot lose money.
//!
//! Accounts and double-entry transfers, replicated by Multi-Paxos across three (or five)
//! replicas, durable on a majority before anything is acknowledged (RPO = 0), with automatic
//! leader failover, sharded by account id. This crate re-exports the public API of the
//! workspace's crates.
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
