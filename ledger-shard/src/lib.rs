//! ledger-shard: the cluster of paxos-ledger.
//!
//! A [`Cluster`] runs n shards in this process, each a Paxos group of 3 (or 5) replicas of the
//! ledger state machine, each replica with its own directory. A [`Client`] routes every account
//! to shard `account_id % shards` ([`Router`]), packs concurrent callers' events into shared
//! log entries, sends them to the shard's leader, follows failovers, and reads linearizably.
//!
//! ```text
//! Client ──► router ──► shard queue ──► proposers (k entries in flight) ──► leader
//!                                                    │  same bytes on retry (nonce, I3)
//!   replicas: Paxos log ──► WAL (fsync on a majority, I2) ──► LedgerMachine ──► Ledger
//! ```
//!
//! `Err` is for the system (no quorum, timeout, I/O, shutdown, bad configuration); a business
//! rejection is a per-event result. A transfer between accounts of two shards (plain or
//! pending, balancing debit, a pending one also closing, and a post or void of a pending one)
//! commits by two-phase commit across the two
//! shards (`docs/crossshard.md`), and so does a linked chain of plain and pending transfers
//! spanning shards; what does not cross shards yet (balancing credit; closing events, posts, voids or
//! timeouts in a chain spanning shards) fails with [`ShardError::CrossShard`] before anything is
//! submitted.
//!
//! # Examples
//!
//! ```
//! use ledger_core::{Account, Transfer};
//! use ledger_shard::{Cluster, ClusterConfig};
//! # let dir = std::env::temp_dir().join(format!("ledger-shard-lib-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//!
//! let cluster = Cluster::open(ClusterConfig::new(&dir).replicas(3).shards(1))?;
//! let client = cluster.client();
//! client.create_accounts(&[Account::new(1, 1, 1), Account::new(2, 1, 1)])?;
//! let results = client.create_transfers(&[Transfer::new(7, 1, 2, 100, 1, 1)])?;
//! assert!(results[0].is_ok());
//! // The same transfer again is a duplicate: it exists, nothing is applied twice (I3).
//! let results = client.create_transfers(&[Transfer::new(7, 1, 2, 100, 1, 1)])?;
//! assert!(results[0].is_exists());
//! cluster.shutdown()?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod backend;
mod client;
mod clock;
mod cluster;
mod config;
mod crossshard;
mod error;
mod machine;
mod reply_cache;
mod router;
mod shard;
#[cfg(feature = "sim")]
pub mod sim;
mod wire;

pub use client::Client;
pub use cluster::{Cluster, MANIFEST_FILE_NAME, ReplicaState};
pub use config::{ClusterConfig, EVENTS_PER_CALL_MAX, SHARD_COUNT_MAX};
pub use crossshard::CrossShardStep;
pub use crossshard::protocol as crossshard_protocol;
pub use error::{Result, ShardError};
pub use machine::{LedgerMachine, MachineProbe};
pub use router::{Route, Router};
