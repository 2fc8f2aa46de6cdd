//! Running many seeds of the whole-cluster simulator: from the environment (`SIM_SEEDS`,
//! `SIM_SEED_BASE`), in parallel, with a summary and a replay command for every failing seed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ledger_paxos::sim::FaultProfile;

use crate::sim::world::{ClusterSim, ClusterSimOptions, ClusterStats, CrashCase};

/// The first seed when `SIM_SEED_BASE` is not set.
pub const SEED_BASE_DEFAULT: u64 = 0xC055_5000;
/// The number of seeds when `SIM_SEEDS` is not set: every crash case 30 times.
pub const SEED_COUNT_DEFAULT: u64 = 270;

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct ClusterSeedReport {
    /// The seed.
    pub seed: u64,
    /// The faults it drew (every group).
    pub profile: FaultProfile,
    /// The crash case it exercised.
    pub case: CrashCase,
    /// The hash of its trace (I12).
    pub trace_hash: u64,
    /// What happened.
    pub stats: ClusterStats,
    /// The first violation (or panic), if any.
    pub violation: Option<String>,
}

/// The command that replays `seed` alone.
pub fn replay_command(seed: u64) -> String {
    format!(
        "SIM_SEED_BASE={seed} SIM_SEEDS=1 cargo test -p ledger-shard --features sim --test \
         crossshard_sim -- --nocapture"
    )
}

/// `(SIM_SEED_BASE, SIM_SEEDS)` from the environment, with this simulator's defaults.
///
/// # Panics
///
/// If a variable is set but is not a number.
pub fn seeds_from_env() -> (u64, u64) {
    ledger_paxos::sim::seeds_from_env_or(SEED_BASE_DEFAULT, SEED_COUNT_DEFAULT)
}

/// Runs seed `seed`'s scenario.
pub fn run_cluster_seed(seed: u64) -> ClusterSeedReport {
    run_cluster_options(ClusterSimOptions::from_seed(seed))
}

/// Runs one scenario, catching panics.
pub fn run_cluster_options(options: ClusterSimOptions) -> ClusterSeedReport {
    let (seed, profile, case) = (options.seed, options.profile.clone(), options.case);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut sim = ClusterSim::new(options)?;
        let result = sim
            .run()
            .map_err(|violation| format!("{violation}\n  at {}us", sim.now_us()));
        Ok::<_, String>((sim.trace_hash(), sim.stats.clone(), result.err()))
    }));
    let (trace_hash, stats, violation) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(violation)) => (0, ClusterStats::default(), Some(violation)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            (
                0,
                ClusterStats::default(),
                Some(format!("panic: {message}")),
            )
        }
    };
    ClusterSeedReport {
        seed,
        profile,
        case,
        trace_hash,
        stats,
        violation,
    }
}

/// Runs `count` seeds from `base` on up to `threads` threads; reports in seed order.
pub fn run_cluster_seeds(base: u64, count: u64, threads: usize) -> Vec<ClusterSeedReport> {
    ledger_paxos::sim::run_seeds_with(base, count, threads, run_cluster_seed)
}

/// Adds one seed's statistics `s` to `total`.
fn add_stats(total: &mut ClusterStats, s: &ClusterStats) {
    total.transfers += s.transfers;
    total.cross_transfers += s.cross_transfers;
    total.pending_transfers += s.pending_transfers;
    total.closing_transfers += s.closing_transfers;
    total.closed_accounts += s.closed_accounts;
    total.chain_events += s.chain_events;
    total.chains += s.chains;
    total.posts += s.posts;
    total.posts_ok += s.posts_ok;
    total.acknowledged += s.acknowledged;
    total.rejected += s.rejected;
    total.failed_calls += s.failed_calls;
    total.retried_calls += s.retried_calls;
    total.resolver_passes += s.resolver_passes;
    total.recoveries += s.recoveries;
    total.recovered_posts += s.recovered_posts;
    total.recovered_chains += s.recovered_chains;
    total.recovered_expiries += s.recovered_expiries;
    total.expired += s.expired;
    total.committed += s.committed;
    total.aborted += s.aborted;
    for (sum, count) in total.cases.iter_mut().zip(s.cases) {
        *sum += count;
    }
    crate::sim::world::add_paxos_stats(&mut total.paxos, &s.paxos);
}

/// The statistics of every seed, summed, as one line.
pub fn summary(base: u64, count: u64, reports: &[ClusterSeedReport]) -> String {
    let failed = reports.iter().filter(|r| r.violation.is_some()).count();
    let mut total = ClusterStats::default();
    for report in reports {
        add_stats(&mut total, &report.stats);
    }
    let paxos = &total.paxos;
    format!(
        "cluster sim: seeds {base}..{} ran={} failed={failed} transfers={} cross={} \
         pending={} closing={} closed_at_end={} chains={} chain_events={} posts_and_voids={} posts_ok={} acknowledged={} \
         rejected={} failed_calls={} retried_calls={} committed_cross={} \
         aborted_cross={} resolver_passes={} recoveries={} (posts={} chains={} expiries={}) \
         expired={} crash_cases={:?} | paxos: \
         chosen_slots={} crashes={} power_losses={} persist_failures={} pauses={} \
         partitions={} disk_losses={} messages={} dropped={}",
        base.wrapping_add(count),
        reports.len(),
        total.transfers,
        total.cross_transfers,
        total.pending_transfers,
        total.closing_transfers,
        total.closed_accounts,
        total.chains,
        total.chain_events,
        total.posts,
        total.posts_ok,
        total.acknowledged,
        total.rejected,
        total.failed_calls,
        total.retried_calls,
        total.committed,
        total.aborted,
        total.resolver_passes,
        total.recoveries,
        total.recovered_posts,
        total.recovered_chains,
        total.recovered_expiries,
        total.expired,
        total.cases,
        paxos.chosen_slots,
        paxos.crashes,
        paxos.power_losses,
        paxos.persist_failures,
        paxos.pauses,
        paxos.partitions,
        paxos.disk_losses,
        paxos.messages_sent,
        paxos.messages_dropped,
    )
}

/// Describes a failing seed: its case, faults, violation and replay command.
pub fn describe_cluster_failure(report: &ClusterSeedReport) -> String {
    format!(
        "seed {} FAILED: {}\n  case: {:?}\n  faults: {}\n  replay: {}",
        report.seed,
        report.violation.as_deref().unwrap_or("none"),
        report.case,
        report.profile,
        replay_command(report.seed)
    )
}
