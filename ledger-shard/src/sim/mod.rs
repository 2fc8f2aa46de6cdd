//! The whole-cluster deterministic simulator (feature `sim`): every shard a Paxos group of 3
//! replicas of the real [`LedgerMachine`] over the real Paxos replica and log store (on
//! ledger-paxos's simulator: seeded network and disk faults, crashes, partitions, swarm
//! profiles), all on one seed and one simulated clock; simulated clients running cross-shard
//! transfers against the current leaders — mostly plain ones, plus users' pending transfers
//! across shards that the workload later posts (fully or partly) or voids (some expire), and
//! linked chains spanning shards — and a simulated resolver on simulated time that ends every
//! kind of recovery the core yields (legs, users' posts, chains, expiries).
//!
//! On top of each group's random faults, each seed crashes, right after one protocol step
//! (prepared, voted, decided), the coordinator shard's leader, the participant shard's leader,
//! or the driving client: consecutive seeds cycle through the nine cases
//! ([`CrashCase::ALL`]). Then everything heals.
//!
//! Checks (`src/sim/oracle.rs` says how): each shard's replicas apply identical prefixes and
//! keep double entry; conservation per ledger across shards at every applied entry (users'
//! posts and chain events in flight counted); atomicity (a participant posts only what its
//! coordinator committed, and at the end both legs or neither; a chain all or none; a user's
//! post applied at the participant as its coordinator logged it); no acknowledged transfer,
//! chain, post or void lost; no pending amount left at the end; every prepared transfer and
//! every protocol record resolves within the bound once its shards have caught-up leaders
//! after the heal; same seed, same trace hash.
//!
//! # Examples
//!
//! ```
//! use ledger_shard::sim::{run_cluster_seed, describe_cluster_failure};
//!
//! let report = run_cluster_seed(3);
//! assert_eq!(report.violation, None, "{}", describe_cluster_failure(&report));
//! assert_eq!(report.trace_hash, run_cluster_seed(3).trace_hash);
//! ```

mod oracle;
mod protocol;
mod run;
mod world;

use ledger_paxos::sim::{SimRng, SimStateMachine};

use crate::machine::LedgerMachine;
use crate::wire::Read;

pub use protocol::Step;
pub use run::{
    ClusterSeedReport, SEED_BASE_DEFAULT, SEED_COUNT_DEFAULT, describe_cluster_failure,
    replay_command, run_cluster_options, run_cluster_seed, run_cluster_seeds, seeds_from_env,
    summary,
};
pub use world::{ClusterSim, ClusterSimOptions, ClusterStats, CrashCase, PlantedBug, Timings, Who};

/// The ledger under ledger-paxos's simulator. The whole-cluster simulator submits its own
/// requests (external workload), so the built-in workload only reads digests.
impl SimStateMachine for LedgerMachine {
    fn state_digest(&self) -> u64 {
        self.probe().digest().1
    }

    fn write_command(_random: &mut SimRng, request_id: u64, target: usize) -> bytes::Bytes {
        // An empty account batch under a unique nonce: applied, changes nothing.
        let nonce = (u128::from(request_id) << 8) | target as u128;
        crate::wire::encode_command(nonce, &ledger_core::Command::CreateAccounts(Vec::new()))
    }

    fn read_query(_random: &mut SimRng) -> bytes::Bytes {
        Read::Digest.encode()
    }

    fn check_read(
        request_id: u64,
        reply: &[u8],
        _acknowledged_slot_end: u64,
    ) -> Result<(), String> {
        // A digest reply: applied slot and digest, 16 bytes.
        if reply.len() == 16 {
            Ok(())
        } else {
            Err(format!("read {request_id}: malformed digest reply"))
        }
    }
}
