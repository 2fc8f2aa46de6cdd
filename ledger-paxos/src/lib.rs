//! ledger-paxos: Multi-Paxos for paxos-ledger.
//!
//! The heart is [`Replica`], a pure, deterministic Multi-Paxos participant generic over the
//! [`StateMachine`] it replicates. It does no I/O: the driver feeds it ticks, peer messages and
//! client requests, takes a [`Ready`] describing what to persist, send and answer, and reports
//! back with [`Replica::advance`] once the persist work is durable. That is what lets the
//! simulator (feature `sim`) run thousands of seeded fault scenarios and replay any of them.
//!
//! - `ballot`, `message`: the protocol vocabulary (Prepare, Promise, Accept, Accepted, Commit,
//!   Nack, snapshot chunks).
//! - `replica`, `acceptor`, `proposer`: the core; `ready`: its input/output types.
//! - `log_store`: how `Ready`'s persist work maps onto write-ahead-log records and back.
//! - `sim` (feature `sim`): the deterministic fault-injecting cluster simulator.
//!
//! # Examples
//!
//! Driving three replicas by hand: replica 0 times out, wins the election and commits.
//!
//! ```
//! use bytes::Bytes;
//! use ledger_paxos::{Config, Persisted, Recovered, Replica, StateMachine};
//! # #[derive(Default)] struct Log(Vec<u8>);
//! # impl StateMachine for Log {
//! #     fn apply(&mut self, _: u64, _: u64, c: &[u8]) -> Bytes {
//! #         self.0.extend_from_slice(c);
//! #         Bytes::new()
//! #     }
//! #     fn query(&self, _: &[u8]) -> Bytes { Bytes::from(self.0.clone()) }
//! #     fn encode_snapshot(&self) -> Vec<u8> { self.0.clone() }
//! #     fn restore_snapshot(&mut self, b: &[u8]) -> ledger_paxos::Result<()> {
//! #         self.0 = b.to_vec();
//! #         Ok(())
//! #     }
//! # }
//! let mut replicas: Vec<Replica<Log>> = (0..3)
//!     .map(|id| Replica::new(Config::new(id, 3), Recovered::default(), Log::default(), id.into()))
//!     .collect::<Result<_, _>>()?;
//! let mut proposed = false;
//! for _ in 0..200 {
//!     replicas[0].tick();
//!     if replicas[0].is_leader() && !proposed {
//!         replicas[0].propose(1, Bytes::from_static(b"x"))?;
//!         proposed = true;
//!     }
//!     // Deliver everything at once; every persist completes at once.
//!     let mut in_flight = Vec::new();
//!     for (index, replica) in replicas.iter_mut().enumerate() {
//!         let ready = replica.ready();
//!         replica.advance(Persisted { ready_number: ready.number });
//!         for envelope in ready.messages_now.into_iter().chain(ready.messages_after_persist) {
//!             in_flight.push((index as u8, envelope));
//!         }
//!     }
//!     for (from, envelope) in in_flight {
//!         replicas[envelope.to as usize].step(from, envelope.message);
//!     }
//! }
//! assert!(replicas[0].is_leader());
//! assert_eq!(replicas[0].state_machine().0, b"x");
//! # Ok::<(), ledger_paxos::PaxosError>(())
//! ```
#![deny(missing_docs)]

mod acceptor;
mod ballot;
mod config;
mod error;
pub mod log_store;
mod message;
mod proposer;
mod ready;
mod replica;
#[cfg(test)]
mod replica_test;
#[cfg(feature = "sim")]
pub mod sim;
mod state_machine;

pub use ballot::{Ballot, ReplicaId};
pub use config::{Config, REPLICA_COUNT_MAX};
pub use error::{PaxosError, Result, StorageError};
pub use log_store::LogStore;
pub use message::{
    COMMAND_HEADER_SIZE_BYTES, Command, ENTRY_HEADER_SIZE_BYTES, Entry, Message, SlotEntry,
};
pub use ready::{Envelope, HardState, Persisted, Ready, Recovered, Reply, SnapshotData};
pub use replica::{Replica, Role, SNAPSHOT_SIZE_BYTES_MAX};
pub use state_machine::StateMachine;
pub mod driver;
pub mod transport;
