//! Goal: the whole cluster under the deterministic simulator — 4 shards × 3 replicas of the
//! real ledger state machine over real Paxos replicas and log stores, with the paxos
//! simulator's swarm faults plus a crash of the coordinator's leader, the participant's
//! leader or the client after every protocol step (the nine cases cycle across seeds) — keeps
//! money conserved, transfers atomic, acknowledged transfers durable, and resolves every
//! prepared transfer within 2 s (simulated) of its shards having leaders after the heal. The
//! workload is mostly plain transfers (≥ 50 % across shards), plus users' pending transfers
//! across shards posted (fully or partly), voided or expired later, and linked chains of 2–3
//! transfers spanning shards (some events pending): chains commit all or none, a post or void
//! answered `Ok` is applied on both sides, and nothing is left pending at the end.
//! `SIM_SEEDS` and `SIM_SEED_BASE` select other seeds; a failing seed prints its replay
//! command. And the checks can fail: planted protocol bugs are caught.

use ledger_shard::sim::{
    self, ClusterSimOptions, CrashCase, PlantedBug, Step, Who, describe_cluster_failure,
};

#[test]
fn cluster_seeds_keep_money_atomic_conserved_and_durable() {
    let (base, count) = sim::seeds_from_env();
    let threads = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .min(4);
    let reports = sim::run_cluster_seeds(base, count, threads);
    let failures: Vec<String> = reports
        .iter()
        .filter(|report| report.violation.is_some())
        .map(describe_cluster_failure)
        .collect();
    for failure in &failures {
        eprintln!("{failure}");
    }
    println!("{}", sim::summary(base, count, &reports));
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed",
        failures.len()
    );
    let transfers: u64 = reports.iter().map(|r| r.stats.transfers).sum();
    let cross: u64 = reports.iter().map(|r| r.stats.cross_transfers).sum();
    assert!(transfers > 0, "no transfer ran");
    assert!(
        cross * 2 >= transfers,
        "only {cross} of {transfers} transfers crossed shards"
    );
    let pending: u64 = reports.iter().map(|r| r.stats.pending_transfers).sum();
    let chain_events: u64 = reports.iter().map(|r| r.stats.chain_events).sum();
    assert!(
        (transfers - pending - chain_events) * 2 > transfers,
        "plain transfers are not the majority: {pending} pending and {chain_events} chain \
         events of {transfers}"
    );
    if count >= 9 {
        // Every (step × who) crash case happened somewhere, and transfers both committed and
        // aborted across shards.
        for (index, case) in CrashCase::ALL.iter().enumerate() {
            let hits: u64 = reports.iter().map(|r| r.stats.cases[index]).sum();
            assert!(hits > 0, "crash case {case:?} never happened");
        }
        assert!(reports.iter().map(|r| r.stats.committed).sum::<u64>() > 0);
        assert!(reports.iter().map(|r| r.stats.aborted).sum::<u64>() > 0);
        assert!(reports.iter().map(|r| r.stats.acknowledged).sum::<u64>() > 0);
        // The new paths ran: pending transfers, chains, and posts and voids that landed.
        assert!(pending > 0 && chain_events > 0);
        assert!(reports.iter().map(|r| r.stats.posts_ok).sum::<u64>() > 0);
        // The resolver ended users' posts, chains and expiries too.
        assert!(reports.iter().map(|r| r.stats.recovered_posts).sum::<u64>() > 0);
        assert!(
            reports
                .iter()
                .map(|r| r.stats.recovered_chains)
                .sum::<u64>()
                > 0
        );
        assert!(
            reports
                .iter()
                .map(|r| r.stats.recovered_expiries)
                .sum::<u64>()
                > 0
        );
    }
}

#[test]
fn same_seed_same_trace() {
    let base = 0xD37E_5000;
    let first = sim::run_cluster_seeds(base, 3, 2);
    let second = sim::run_cluster_seeds(base, 3, 1);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.violation, None, "{}", describe_cluster_failure(a));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {} diverged", a.seed);
        assert_eq!(a.stats, b.stats, "seed {} diverged", a.seed);
    }
    assert_ne!(first[0].trace_hash, first[1].trace_hash);
}

/// A calm run (no random faults) with the given case and `bug` planted: some check must
/// fail, and it must be the one whose message contains `caught_by`.
fn assert_caught(seed: u64, after: Step, who: Who, bug: PlantedBug, caught_by: &str) {
    let mut options = ClusterSimOptions::from_seed(seed);
    options.profile = ledger_paxos::sim::FaultProfile::calm(3);
    options.case = CrashCase { after, who };
    options.case_permille = 1_000;
    options.planted = Some(bug);
    let report = sim::run_cluster_options(options);
    let violation = report.violation.expect("the planted bug must be caught");
    assert!(
        violation.contains(caught_by),
        "caught, but by another check: {violation}"
    );
}

#[test]
fn a_participant_posting_before_the_decision_is_caught() {
    let bug = PlantedBug::ParticipantPostsBeforeDecision;
    assert_caught(
        11,
        Step::Voted,
        Who::CoordinatorLeader,
        bug,
        "before its coordinator",
    );
}

#[test]
fn a_resolver_aborting_a_committed_transfer_is_caught() {
    // Clients crash right after the decision: the resolver finishes, and aborts.
    let bug = PlantedBug::ResolverAbortsCommitted;
    assert_caught(12, Step::Decided, Who::Client, bug, "atomicity");
}

#[test]
fn transfers_left_prepared_without_a_resolver_are_caught() {
    // Clients crash right after the prepare, and nobody finishes their transfers.
    let bug = PlantedBug::NoResolver;
    assert_caught(13, Step::Prepared, Who::Client, bug, "resolution:");
}

#[test]
fn a_participant_voiding_a_users_post_is_caught() {
    // The participant applies a user's post of a cross-shard pending transfer as a void.
    let bug = PlantedBug::ParticipantVoidsUsersPost;
    assert_caught(
        14,
        Step::Decided,
        Who::ParticipantLeader,
        bug,
        "applied a void",
    );
}

#[test]
fn a_chain_committed_in_part_is_caught() {
    // A chain's finish voids its events other than the head, which its coordinator committed.
    let bug = PlantedBug::ChainFinishVoidsMembers;
    assert_caught(15, Step::Prepared, Who::ParticipantLeader, bug, "of chain");
}

#[test]
fn a_resolver_committing_without_the_timeout_is_caught() {
    // Clients crash right after the vote: the resolver commits their pending transfers, some
    // with a timeout, with markers carrying none (as before seed 70052's fix): they never
    // expire. The same run without the bug passes.
    let bug = PlantedBug::ResolverDropsTimeouts;
    assert_caught(16, Step::Voted, Who::Client, bug, "expiry:");
    let mut options = ClusterSimOptions::from_seed(16);
    options.profile = ledger_paxos::sim::FaultProfile::calm(3);
    options.case = CrashCase {
        after: Step::Voted,
        who: Who::Client,
    };
    options.case_permille = 1_000;
    let report = sim::run_cluster_options(options);
    assert_eq!(
        report.violation,
        None,
        "{}",
        describe_cluster_failure(&report)
    );
    assert!(report.stats.expired > 0, "nothing expired");
}

#[test]
fn the_ledger_runs_under_the_paxos_simulators_own_workload() {
    // The ledger's SimStateMachine implementation: the paxos simulator's clients write (empty
    // batches under unique nonces) and read digests, under that seed's faults.
    for seed in [1, 2, 3] {
        let report = ledger_paxos::sim::run_options::<ledger_shard::LedgerMachine>(
            ledger_paxos::sim::SimOptions::from_seed(seed),
        );
        assert_eq!(
            report.violation,
            None,
            "{}",
            ledger_paxos::sim::describe_failure(&report)
        );
        assert!(report.stats.acknowledged_writes > 0 && report.stats.answered_reads > 0);
    }
}

/// Seeds that once failed, kept as regressions. 216: a chain whose first attempt logged one
/// shard's part and timed out was committed by its retry, which answered
/// `[LinkedEventFailed, Exists]` (the caller believed a committed chain had failed); a chain
/// its call commits now answers `Ok` for every event. 20574: the resolver did not scan while
/// a pass's recoveries towards shards without a leader ran (four intervals), so a leg on two
/// healthy shards was first seen, and began to age, 0.9 s late; passes now run beside the
/// recoveries. 22381: a shard's leader, caught up at the heal, answered nothing for 1.15 s (a
/// Paxos stall: a lost Accept's retry postponed by every read round, since fixed in
/// ledger-paxos), and the bound counted from it; it now counts from a leader that serves.
/// 309397: a chain's retry logged the head's legs (the first attempt had logged only the other
/// event's) while the resolver, reading them, logged the commit first; the retry answered
/// `[LinkedEventFailed, Exists]` from the other event's leg. A chain committed by another
/// driver now answers at its first event (`Exists`). 70052: a pending transfer with a timeout
/// whose client crashed after the vote was committed by the resolver with no timeout (neither
/// leg held it) and never expired; the participant leg now carries it.
#[test]
fn seeds_that_once_failed_pass() {
    const SEEDS: &[u64] = &[216, 20574, 22381, 70_052, 309_397];
    // Each seed runs twice: with today's workload, and without closing transfers (added
    // after these seeds were found; their draws change every later one), which replays the
    // scenario the seed was found on more closely.
    let reports: Vec<_> = SEEDS
        .iter()
        .flat_map(|&seed| {
            let before_closing = sim::ClusterSimOptions {
                closing_permille: 0,
                ..sim::ClusterSimOptions::from_seed(seed)
            };
            [
                sim::run_cluster_seed(seed),
                sim::run_cluster_options(before_closing),
            ]
        })
        .collect();
    let failures: Vec<String> = reports
        .iter()
        .filter(|report| report.violation.is_some())
        .map(describe_cluster_failure)
        .collect();
    assert_eq!(reports.len(), 2 * SEEDS.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
