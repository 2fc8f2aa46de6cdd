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

/// Crashes the leader mid-stream, measures crash -> first new commit, restarts the old leader.
fn fail_over(cluster: &Cluster, client: &Client) -> Result<Duration, Error> {
    sleep(Duration::from_secs(1));
    let old_leader = cluster.leader(0).ok_or("no leader")?;
    let crashed_at = Instant::now();
    cluster.crash_replica(0, old_leader)?;
    client.create_transfers(&[Transfer::new(u128::MAX, 1, 2, 1, 1, 1)])?;
    let failover = crashed_at.elapsed();
    let new_leader = cluster.leader(0).ok_or("no leader")?;
    println!("leader {old_leader} crashed; new leader {new_leader}; failover {failover:.1?}");
    sleep(Duration::from_secs(1));
    cluster.restart_replica(0, old_leader)?;
    println!("replica {old_leader} restarted, catching up");
    sleep(Duration::from_millis(500));
    Ok(failover)
}

fn check(passed: bool, what: &str) -> bool {
    println!("{} {what}", if passed { "ok  " } else { "FAIL" });
    passed
}

fn main() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("paxos-ledger-example-{}", std::process::id()));
    let cluster = Cluster::open(ClusterConfig::new(&dir).replicas(3).shards(1))?;
    let client = cluster.client();
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    client.create_accounts(
        &ids.iter()
            .map(|&id| Account::new(id, 1, 1))
            .collect::<Vec<_>>(),
    )?;
    let (stop, acked) = (&AtomicBool::new(false), &Mutex::new(Vec::new()));
    let failover = scope(|s| {
        for thread in 0..8 {
            let client = &client;
            s.spawn(move || stream(client, thread, stop, acked));
        }
        let failover = fail_over(&cluster, &client);
        stop.store(true, Relaxed);
        failover
    })?;

    let acked = std::mem::take(&mut *acked.lock().map_err(|_| "poisoned")?);
    let mut found = 0;
    for chunk in acked.chunks(8_000) {
        found += client.lookup_transfers(chunk)?.len();
    }
    let accounts = client.lookup_accounts(&ids)?;
    let debits: u128 = accounts.iter().map(|a| a.debits_posted).sum();
    let credits: u128 = accounts.iter().map(|a| a.credits_posted).sum();
    let digests = cluster.wait_replicas_identical(Duration::from_secs(10));
    println!("failover took {failover:.1?} (target: 300 ms)");
    let passed = [
        check(
            found == acked.len(),
            &format!("acknowledged transfers present: {found}"),
        ),
        check(
            debits == credits,
            &format!("money conserved: debits {debits} = credits {credits}"),
        ),
        check(
            digests.is_ok(),
            &format!("replicas identical after catch-up: {digests:x?}"),
        ),
    ];
    cluster.shutdown()?;
    std::fs::remove_dir_all(&dir)?;
    if passed.iter().all(|&p| p) {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
