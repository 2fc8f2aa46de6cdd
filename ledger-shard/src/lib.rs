//! ledger-shard: the cluster of paxos-ledger.
//!
//! Routes accounts to shards by `account_id % shard_count`, runs one Paxos group of the ledger
//! state machine per shard, and gives callers a blocking, thread-safe `Client`.
#![deny(missing_docs)]
