//! ledger-wal: durable storage for paxos-ledger.
//!
//! A segmented write-ahead log with group commit, snapshots and crash recovery, reached
//! through a `Storage` trait so tests can inject faults.
#![deny(missing_docs)]
