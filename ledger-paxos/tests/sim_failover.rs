//! Goal: measure, in simulated time, how long a group needs from the crash of its leader to the
//! first commit by a new leader, with the default timing (10 ms ticks, 50 ms heartbeat,
//! election timeout randomized over 150–300 ms), 0.5–2 ms network delay and 0.5–2 ms fsync,
//! under a steady client load, over `SIM_FAILOVER_SEEDS` seeds (default 1,000) each for 3 and 5
//! replicas. Prints the percentiles (recorded in BENCHMARKS.md) and asserts the simulated
//! targets p50 ≤ 300 ms and p99 ≤ 600 ms. Simulated time only: no wall clock is involved.

use ledger_paxos::sim::{HashChain, SimOptions, SimRng, Simulator};

/// Runs one failover: steady state for about a second, crash the leader at a random moment
/// within a heartbeat interval, wait for a new leader's first commit.
fn failover_us(seed: u64, replica_count: usize) -> u64 {
    let mut simulator =
        Simulator::<HashChain>::new(SimOptions::calm(seed, replica_count)).expect("starts");
    let mut random = SimRng::new(seed ^ 0xFA11);
    simulator
        .run_until(1_000_000 + random.range(0, 50_000))
        .expect("no violation");
    let leader = simulator.leader().expect("a leader after one second");
    let crashed_us = simulator.now_us();
    simulator.crash(leader);
    simulator.watch_commit(leader);
    simulator
        .run_until(crashed_us + 3_000_000)
        .expect("no violation");
    let committed_us = simulator
        .watched_commit_us()
        .expect("a new leader commits within 3 s");
    committed_us - crashed_us
}

fn percentile(sorted: &[u64], permille: usize) -> u64 {
    sorted[(sorted.len() * permille / 1000).min(sorted.len() - 1)]
}

#[test]
fn failover_from_leader_crash_to_first_new_commit() {
    let seeds: u64 = std::env::var("SIM_FAILOVER_SEEDS").map_or(1_000, |v| v.parse().unwrap());
    for replica_count in [3, 5] {
        let mut times_us: Vec<u64> = (0..seeds)
            .map(|seed| failover_us(0xFA11_0000 + seed, replica_count))
            .collect();
        times_us.sort_unstable();
        let [p50, p90, p99] = [500, 900, 990].map(|permille| percentile(&times_us, permille));
        let (min, max) = (times_us[0], times_us[times_us.len() - 1]);
        println!(
            "failover (simulated, {replica_count} replicas, {seeds} seeds): p50={}ms p90={}ms \
             p99={}ms min={}ms max={}ms",
            p50 / 1000,
            p90 / 1000,
            p99 / 1000,
            min / 1000,
            max / 1000
        );
        assert!(p50 <= 300_000, "p50 {p50}us above the 300 ms target");
        assert!(p99 <= 600_000, "p99 {p99}us above the 600 ms target");
    }
}
