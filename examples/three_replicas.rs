//! Three replicas in one process: transfers stream in from 8 threads, the leader is crashed
//! mid-stream, a new leader takes over, the old one restarts and catches up, and then every
//! acknowledged transfer is checked, money is counted, and the replicas are compared.
//!
//! `cargo run --release --example three_replicas` — exits non-zero if any check fails.
#![allow(
    clippy::disallowed_methods,
    reason = "an example paces itself by the wall clock"
)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::{scope, sleep};
use std::time::{Duration, Instant};

use paxos_ledger::{Account, Client, Cluster, ClusterConfig, Transfer};

type Error = Box<dyn std::error::Error>;
const ACCOUNTS: u128 = 1_000;

/// Sends batches of 100 transfers until `stop`, remembering every acknowledged id.
fn stream(client: &Client, thread: u128, stop: &AtomicBool, acked: &Mutex<Vec<u128>>) {
    for n in (0u128..).take_while(|_| !stop.load(Relaxed)) {
        let batch: Vec<Transfer> = (0..100u128)
            .map(|i| (thread << 64 | n << 8 | i, (n * 100 + i) % ACCOUNTS))
            .map(|(id, a)| Transfer::new(id, a + 1, (a + 7) % ACCOUNTS + 1, 1, 1, 1))
            .collect();
        if let Ok(results) = client.create_transfers(&batch) {
            let ok = batch.iter().zip(results).filter(|(_, r)| r.is_ok());
            acked
                .lock()
                .map(|mut a| a.extend(ok.map(|(t, _)| t.id)))
                .ok();
        }
    }
}

/// Crashes the leader; the first transfer committed after the crash ends the failover.
fn fail_over(cluster: &Cluster, client: &Client) -> Result<(usize, Duration), Error> {
    let old_leader = cluster.leader(0).ok_or("no leader")?;
    let crashed_at = Instant::now();
    cluster.crash_replica(0, old_leader)?;
    client.create_transfers(&[Transfer::new(u128::MAX, 1, 2, 1, 1, 1)])?;
    let failover = crashed_at.elapsed();
    println!(
        "leader {old_leader} crashed; new leader: {:?}",
        cluster.leader(0)
    );
    println!("failover (crash -> first new commit): {failover:.1?}");
    Ok((old_leader, failover))
}

fn main() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("paxos-ledger-example-{}", std::process::id()));
    let cluster = Cluster::open(ClusterConfig::new(&dir).replicas(3).shards(1))?;
    let client = cluster.client();
    client.create_accounts(
        &(1..=ACCOUNTS)
            .map(|id| Account::new(id, 1, 1))
            .collect::<Vec<_>>(),
    )?;
    let (stop, acked) = (AtomicBool::new(false), Mutex::new(Vec::new()));
    let failover = scope(|s| -> Result<Duration, Error> {
        for thread in 0..8 {
            let (client, stop, acked) = (&client, &stop, &acked);
            s.spawn(move || stream(client, thread, stop, acked));
        }
        sleep(Duration::from_secs(1));
        let failed_over = fail_over(&cluster, &client);
        sleep(Duration::from_secs(1));
        let restarted = failed_over
            .as_ref()
            .map(|(old, _)| cluster.restart_replica(0, *old));
        println!("old leader restarted: {restarted:?}");
        sleep(Duration::from_millis(500));
        stop.store(true, Relaxed);
        Ok(failed_over?.1)
    })?;

    let acked = acked.into_inner()?;
    let found: usize = acked
        .chunks(8_000)
        .map(|ids| client.lookup_transfers(ids).map(|t| t.len()))
        .sum::<Result<_, _>>()?;
    let (debits, credits) = client
        .lookup_accounts(&(1..=ACCOUNTS).collect::<Vec<_>>())?
        .iter()
        .fold((0, 0), |(d, c), a| {
            (d + a.debits_posted, c + a.credits_posted)
        });
    let digests = cluster.wait_replicas_identical(Duration::from_secs(10));
    let checks = [
        (
            format!("acknowledged transfers present: {found} of {}", acked.len()),
            found == acked.len(),
        ),
        (
            format!("money conserved: debits {debits} = credits {credits}"),
            debits == credits,
        ),
        (
            format!("replicas identical after catch-up: {digests:x?}"),
            digests.is_ok(),
        ),
    ];
    println!("failover took {failover:.1?} (target: 300 ms)");
    cluster.shutdown()?;
    std::fs::remove_dir_all(&dir)?;
    for (check, passed) in &checks {
        println!("{} {check}", if *passed { "ok  " } else { "FAIL" });
    }
    if checks.iter().all(|(_, passed)| *passed) {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
