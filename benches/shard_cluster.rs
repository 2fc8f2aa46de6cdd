//! One batch of 8,190 transfers through a three-replica cluster (fsync on): encode, replicate
//! to a majority's WAL, apply on every replica, answer. `examples/bench.rs` measures sustained
//! throughput with many clients; this measures the cost of one call.
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paxos_ledger::{Account, Cluster, ClusterConfig, EVENTS_PER_CALL_MAX, Transfer};

const ACCOUNTS: u128 = 10_000;

fn create_transfers_batch(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("paxos-ledger-criterion-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = Cluster::open(ClusterConfig::new(&dir).replicas(3).shards(1)).expect("open");
    let client = cluster.client();
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    for chunk in ids.chunks(EVENTS_PER_CALL_MAX) {
        let accounts: Vec<Account> = chunk.iter().map(|&id| Account::new(id, 1, 1)).collect();
        client.create_accounts(&accounts).expect("create accounts");
    }
    let next_id = AtomicU64::new(1);
    let mut group = c.benchmark_group("cluster");
    group.throughput(Throughput::Elements(EVENTS_PER_CALL_MAX as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("create_transfers_8190_fsync", |b| {
        b.iter(|| {
            let batch: Vec<Transfer> = (0..EVENTS_PER_CALL_MAX as u128)
                .map(|i| {
                    let id = u128::from(next_id.fetch_add(1, Ordering::Relaxed));
                    Transfer::new(id, i % ACCOUNTS + 1, (i + 1) % ACCOUNTS + 1, 1, 1, 1)
                })
                .collect();
            let results = client.create_transfers(&batch).expect("create transfers");
            assert!(results.iter().all(|r| r.is_ok()));
        });
    });
    group.finish();
    cluster.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, create_transfers_batch);
criterion_main!(benches);
