//! The deterministic fault-injecting simulator (feature `sim`).
//!
//! N replicas (3 or 5) run on one seeded RNG and one event queue: a network that loses,
//! duplicates, delays and reorders messages and is cut by (possibly one-way, possibly
//! flapping) partitions; disks that are ledger-wal `FaultStorage`s behind the real
//! [`crate::LogStore`] (lost un-fsynced writes, torn writes, failing fsyncs that stop the
//! replica); crashes and restarts at random times including power loss of every replica;
//! pauses after which a replica wakes with stale beliefs. Each seed draws its own fault
//! probabilities (swarm testing). After every step the checks run, one file each:
//!
//! - `check_one_value`: one value per slot, across replicas and time (I4, I3);
//! - `check_applied_prefix`: identical applied prefixes (I5, I6);
//! - `check_durability`: every fsynced entry survives recovery, and no request is acknowledged
//!   before a majority fsynced it (I2, I8);
//! - `check_linearizable`: reads see every earlier acknowledged write (I9);
//! - `check_liveness`: after the heal a leader commits within a bound and every pending
//!   request is answered (I11).
//!
//! The same seed gives the same trace hash (I12).
//!
//! # Examples
//!
//! ```
//! let report = ledger_paxos::sim::run_seed(7);
//! assert_eq!(report.violation, None, "{}", ledger_paxos::sim::describe_failure(&report));
//! assert_eq!(report.trace_hash, ledger_paxos::sim::run_seed(7).trace_hash);
//! ```

pub mod check_applied_prefix;
pub mod check_durability;
pub mod check_linearizable;
pub mod check_liveness;
pub mod check_one_value;
pub mod cluster;
mod faults;
pub mod machine;
pub mod network;
pub mod rng;
pub mod run;
pub mod swarm;

pub use cluster::{ExternalReply, SimOptions, SimStats, Simulator, sim_config};
pub use machine::{HashChain, SimStateMachine};
pub use rng::SimRng;
pub use run::{
    SeedReport, describe_failure, panic_message, replay_command, run_options, run_seed, run_seeds,
    run_seeds_with, seeds_from_env, seeds_from_env_or, summary, total_stats,
};
pub use swarm::FaultProfile;
