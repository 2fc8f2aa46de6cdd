//! Goal: invariant I12 — the simulator is deterministic. Fifty seeds run twice give the same
//! trace hash seed by seed, and different seeds give different traces.

use std::collections::BTreeSet;

use ledger_paxos::sim;

#[test]
fn fifty_seeds_run_twice_give_identical_trace_hashes() {
    let base = 0xD37E_2000;
    let first = sim::run_seeds(base, 50, 2);
    let second = sim::run_seeds(base, 50, 1);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.seed, b.seed);
        assert_eq!(a.violation, None, "{}", sim::describe_failure(a));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {} diverged", a.seed);
        assert_eq!(a.stats, b.stats, "seed {} diverged", a.seed);
    }
    let distinct: BTreeSet<u64> = first.iter().map(|report| report.trace_hash).collect();
    assert_eq!(
        distinct.len(),
        50,
        "different seeds must give different traces"
    );
}
