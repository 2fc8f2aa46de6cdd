//! ledger-paxos: Multi-Paxos for paxos-ledger.
//!
//! A pure, deterministic replica core stepped by a driver, the threaded driver itself, and
//! (feature `sim`) a deterministic fault-injecting simulator.
#![deny(missing_docs)]

pub mod transport;
