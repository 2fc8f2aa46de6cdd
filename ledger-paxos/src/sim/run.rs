//! Running many seeds: from the environment (`SIM_SEEDS`, `SIM_SEED_BASE`), in parallel, with a
//! one-line summary and a replay command for every failing seed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::sim::cluster::{SimOptions, SimStats, Simulator};
use crate::sim::machine::{HashChain, SimStateMachine};
use crate::sim::swarm::FaultProfile;

/// The first seed when `SIM_SEED_BASE` is not set.
pub const SEED_BASE_DEFAULT: u64 = 0x1ED6_E200;
/// The number of seeds when `SIM_SEEDS` is not set.
pub const SEED_COUNT_DEFAULT: u64 = 1_000;

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The faults it drew.
    pub profile: FaultProfile,
    /// The hash of its trace (I12).
    pub trace_hash: u64,
    /// What happened.
    pub stats: SimStats,
    /// The first violation (or panic), if any.
    pub violation: Option<String>,
}

/// The command that replays `seed` alone.
pub fn replay_command(seed: u64) -> String {
    format!(
        "SIM_SEED_BASE={seed} SIM_SEEDS=1 cargo test -p ledger-paxos --features sim --test \
         sim_seeds -- --nocapture"
    )
}

/// `(SIM_SEED_BASE, SIM_SEEDS)` from the environment, with the defaults.
///
/// # Panics
///
/// If a variable is set but is not a number.
pub fn seeds_from_env() -> (u64, u64) {
    seeds_from_env_or(SEED_BASE_DEFAULT, SEED_COUNT_DEFAULT)
}

/// `(SIM_SEED_BASE, SIM_SEEDS)` from the environment, with these defaults (for another
/// simulator built on this one).
///
/// # Panics
///
/// If a variable is set but is not a number.
pub fn seeds_from_env_or(base_default: u64, count_default: u64) -> (u64, u64) {
    let read = |name: &str, default: u64| match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
        Err(_) => default,
    };
    (
        read("SIM_SEED_BASE", base_default),
        read("SIM_SEEDS", count_default),
    )
}

/// The message of a caught panic (empty if it carries none).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_default()
}

/// Runs one seed's swarm scenario, catching panics of the core's assertions.
pub fn run_seed(seed: u64) -> SeedReport {
    run_options::<HashChain>(SimOptions::from_seed(seed))
}

/// Runs one scenario over the state machine `M`.
pub fn run_options<M: SimStateMachine>(options: SimOptions) -> SeedReport {
    let seed = options.seed;
    let profile = options.profile.clone();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut simulator = Simulator::<M>::new(options)?;
        let result = simulator.run().map_err(|violation| {
            format!(
                "{violation}\n  at {}us:\n{}",
                simulator.now_us(),
                simulator.describe_replicas()
            )
        });
        Ok::<_, String>((
            simulator.trace_hash(),
            simulator.stats.clone(),
            result.err(),
        ))
    }));
    let (trace_hash, stats, violation) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(violation)) => (0, SimStats::default(), Some(violation)),
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            (0, SimStats::default(), Some(format!("panic: {message}")))
        }
    };
    SeedReport {
        seed,
        profile,
        trace_hash,
        stats,
        violation,
    }
}

/// Runs `count` seeds from `base` on up to `threads` threads; reports in seed order.
///
/// # Panics
///
/// If a worker thread panics outside a seed (seeds' panics are caught and reported).
pub fn run_seeds(base: u64, count: u64, threads: usize) -> Vec<SeedReport> {
    run_seeds_with(base, count, threads, run_seed)
}

/// Runs `run(seed)` for `count` seeds from `base` on up to `threads` threads; returns the
/// results in seed order.
///
/// # Panics
///
/// If `run` panics (catch a seed's panics inside it).
pub fn run_seeds_with<T: Send>(
    base: u64,
    count: u64,
    threads: usize,
    run: impl Fn(u64) -> T + Sync,
) -> Vec<T> {
    let threads = threads.max(1) as u64;
    let run = &run;
    let mut results: Vec<(u64, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    (0..count)
                        .filter(|offset| offset % threads == worker)
                        .map(|offset| (offset, run(base.wrapping_add(offset))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker panicked"))
            .collect()
    });
    results.sort_by_key(|(offset, _)| *offset);
    results.into_iter().map(|(_, result)| result).collect()
}

/// The one-line summary of a run of seeds.
pub fn summary(base: u64, count: u64, reports: &[SeedReport]) -> String {
    let failed = reports.iter().filter(|r| r.violation.is_some()).count();
    let total = total_stats(reports);
    format!(
        "sim: seeds {base}..{} ran={} failed={failed} chosen_slots={} acked_writes={} reads={} \
         failed_requests={} crashes={} power_losses={} persist_failures={} \
         tears_past_promise={} pauses={} partitions={} messages={} dropped={} \
         requests_to_other_leader={} bit_flips={} disk_losses={}",
        base.wrapping_add(count),
        reports.len(),
        total.chosen_slots,
        total.acknowledged_writes,
        total.answered_reads,
        total.failed_requests,
        total.crashes,
        total.power_losses,
        total.persist_failures,
        total.tears_past_promise,
        total.pauses,
        total.partitions,
        total.messages_sent,
        total.messages_dropped,
        total.requests_to_other_leader,
        total.bit_flips,
        total.disk_losses,
    )
}

/// The statistics of every seed, summed.
pub fn total_stats(reports: &[SeedReport]) -> SimStats {
    let mut total = SimStats::default();
    for report in reports {
        let s = &report.stats;
        total.chosen_slots += s.chosen_slots;
        total.acknowledged_writes += s.acknowledged_writes;
        total.answered_reads += s.answered_reads;
        total.failed_requests += s.failed_requests;
        total.crashes += s.crashes;
        total.power_losses += s.power_losses;
        total.persist_failures += s.persist_failures;
        total.pauses += s.pauses;
        total.partitions += s.partitions;
        total.messages_sent += s.messages_sent;
        total.messages_dropped += s.messages_dropped;
        total.tears_past_promise += s.tears_past_promise;
        total.requests_to_other_leader += s.requests_to_other_leader;
        total.bit_flips += s.bit_flips;
        total.disk_losses += s.disk_losses;
    }
    total
}

/// Describes a failing seed: its faults, the violation and the replay command.
pub fn describe_failure(report: &SeedReport) -> String {
    format!(
        "seed {} FAILED: {}\n  faults: {}\n  replay: {}",
        report.seed,
        report.violation.as_deref().unwrap_or("none"),
        report.profile,
        replay_command(report.seed)
    )
}
