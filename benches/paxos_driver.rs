//! The real ledger-paxos driver: 3 replicas in one process on real files with fdatasync, a
//! no-op state machine, entries of 8,190 × 128 bytes (one client batch, 1,048,320 bytes) — in
//! entries/s and bytes/s, against the raw write + fdatasync limit of the same disk, same run.
//!
//! - `paxos_driver/group_3`: `CLIENT_THREAD_COUNT` threads propose to the leader; an entry counts
//!   when acknowledged (chosen on a majority, durable there, applied at the leader).
//! - `paxos_driver/raw_3_logs`: three threads each `write` + `fdatasync` the same entry bytes to
//!   their own file through `std::fs` (the disk work of one replicated entry: every replica
//!   writes it once); an entry counts when it is on all three files.
//! - `paxos_driver/raw_3_logs_8_per_fsync`: the same with one write + one fdatasync per 8
//!   entries (what group commit can reach with `CLIENT_THREAD_COUNT` = 8 entries in flight).
//! - `paxos_driver/raw_1_log`: one thread, one file: the single-log ceiling.
//!
//! One criterion iteration is `ENTRIES_PER_ITERATION` entries; the reported throughput is entry
//! bytes (what clients submitted, not the 3× the disk writes) per second.
//!
//! After the criterion groups, paired rounds alternate `group_3` and `raw_3_logs` (same foreign
//! load) and print the median of each and the median ratio.
//!
//! Run: `cargo bench --bench paxos_driver` (files go to a fresh directory under the system temp
//! directory and are removed after each sample).

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use ledger_paxos::driver::Group;
use ledger_paxos::{Config, StateMachine};

const EVENT_COUNT: usize = 8_190;
const EVENT_SIZE_BYTES: usize = 128;
const ENTRY_SIZE_BYTES: usize = EVENT_COUNT * EVENT_SIZE_BYTES;
const CLIENT_THREAD_COUNT: usize = 8;
/// Entries per criterion iteration, so that each sample keeps the pipeline full for a while
/// instead of timing a handful of entries.
const ENTRIES_PER_ITERATION: u64 = 16;
/// Entries proposed before timing starts (elects, creates segments, warms the page cache).
const WARM_UP_ENTRIES: u64 = 8;
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Replicates bytes and does nothing with them.
struct NoOp;

impl StateMachine for NoOp {
    fn apply(&mut self, _slot: u64, _timestamp_ns: u64, _command: &[u8]) -> Bytes {
        Bytes::new()
    }
    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::new()
    }
    fn encode_snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore_snapshot(&mut self, _bytes: &[u8]) -> ledger_paxos::Result<()> {
        Ok(())
    }
}

fn bench_directory(kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("paxos-ledger-bench-{kind}-{}-{unique}", std::process::id());
    let directory = std::env::temp_dir().join(name);
    let _ = fs::remove_dir_all(&directory);
    directory
}

/// Proposes `count` entries from `CLIENT_THREAD_COUNT` threads, following the leader.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark waits for an election"
)]
fn propose_entries(group: &Group, entry: &Bytes, count: u64) {
    let remaining = AtomicU64::new(count);
    thread::scope(|scope| {
        for _ in 0..CLIENT_THREAD_COUNT {
            scope.spawn(|| {
                while remaining
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    loop {
                        let Some(leader) = group.leader() else {
                            thread::sleep(Duration::from_millis(1));
                            continue;
                        };
                        match group
                            .replica(leader)
                            .propose(entry.clone(), PROPOSE_TIMEOUT)
                        {
                            Ok(reply) => {
                                black_box(reply);
                                break;
                            }
                            Err(error) => assert!(
                                !matches!(error, ledger_paxos::PaxosError::Storage(_)),
                                "{error}"
                            ),
                        }
                    }
                }
            });
        }
    });
}

/// Times `iterations` entries through a fresh 3-replica group.
#[allow(clippy::disallowed_methods, reason = "a benchmark reads the clock")]
fn group_entries(iterations: u64) -> Duration {
    let directory = bench_directory("group");
    let dirs = (0..3)
        .map(|index| directory.join(format!("replica-{index}")))
        .collect();
    let group = Group::open(dirs, Config::new(0, 3), || NoOp).expect("open group");
    let entry = Bytes::from(vec![0xAB_u8; ENTRY_SIZE_BYTES]);
    propose_entries(&group, &entry, WARM_UP_ENTRIES);
    let start = Instant::now();
    propose_entries(&group, &entry, iterations);
    let elapsed = start.elapsed();
    group.shutdown();
    drop(group);
    fs::remove_dir_all(&directory).expect("cleanup");
    elapsed
}

/// Times `iterations` entries written to each of `log_count` files, one thread per file, with
/// one `write` + one `fdatasync` per `entries_per_fsync` entries (`iterations` is rounded up to
/// a multiple of it).
#[allow(clippy::disallowed_methods, reason = "a benchmark reads the clock")]
fn raw_entries(log_count: usize, entries_per_fsync: u64, iterations: u64) -> Duration {
    let directory = bench_directory("raw");
    fs::create_dir_all(&directory).expect("bench directory");
    let group_size = usize::try_from(entries_per_fsync).expect("small group");
    let bytes = vec![0xAB_u8; ENTRY_SIZE_BYTES * group_size];
    let fsyncs = iterations.div_ceil(entries_per_fsync);
    let mut files: Vec<fs::File> = (0..log_count)
        .map(|index| {
            let path = directory.join(format!("raw-{index}.log"));
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("raw file")
        })
        .collect();
    for file in &mut files {
        for _ in 0..WARM_UP_ENTRIES {
            file.write_all(&bytes).expect("write");
            file.sync_data().expect("fdatasync");
        }
    }
    let start = Instant::now();
    thread::scope(|scope| {
        for file in &mut files {
            let bytes = &bytes;
            scope.spawn(move || {
                for _ in 0..fsyncs {
                    file.write_all(black_box(bytes)).expect("write");
                    file.sync_data().expect("fdatasync");
                }
            });
        }
    });
    let elapsed = start.elapsed();
    drop(files);
    fs::remove_dir_all(&directory).expect("cleanup");
    elapsed
}

fn driver_throughput(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("paxos_driver");
    group.throughput(Throughput::BytesDecimal(
        ENTRY_SIZE_BYTES as u64 * ENTRIES_PER_ITERATION,
    ));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(10);
    group.bench_function("group_3", |bencher| {
        bencher.iter_custom(|iterations| group_entries(iterations * ENTRIES_PER_ITERATION));
    });
    group.bench_function("raw_3_logs", |bencher| {
        bencher.iter_custom(|iterations| raw_entries(3, 1, iterations * ENTRIES_PER_ITERATION));
    });
    group.bench_function("raw_3_logs_8_per_fsync", |bencher| {
        bencher.iter_custom(|iterations| raw_entries(3, 8, iterations * ENTRIES_PER_ITERATION));
    });
    group.bench_function("raw_1_log", |bencher| {
        bencher.iter_custom(|iterations| raw_entries(1, 1, iterations * ENTRIES_PER_ITERATION));
    });
    group.finish();
}

/// Alternates `group_3` and `raw_3_logs` runs of `iterations` entries so both see the same
/// foreign load; prints the median time per entry of each and the median throughput ratio.
fn paired_ratio(rounds: usize, iterations: u32) {
    let per_entry = |elapsed: Duration| elapsed.as_secs_f64() / f64::from(iterations);
    let mut group_times = Vec::with_capacity(rounds);
    let mut raw_times = Vec::with_capacity(rounds);
    let mut ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let group = per_entry(group_entries(u64::from(iterations)));
        let raw = per_entry(raw_entries(3, 1, u64::from(iterations)));
        group_times.push(group);
        raw_times.push(raw);
        ratios.push(raw / group);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (group, raw, ratio) = (
        median(&mut group_times),
        median(&mut raw_times),
        median(&mut ratios),
    );
    let megabytes = f64::from(u32::try_from(ENTRY_SIZE_BYTES).expect("entry size fits u32")) / 1e6;
    println!(
        "paired entry_{EVENT_COUNT}x{EVENT_SIZE_BYTES}: group_3 {:.2} ms/entry ({:.0} entries/s, \
         {:.1} MB/s), raw_3_logs {:.2} ms/entry ({:.0} entries/s, {:.1} MB/s), \
         group/raw throughput ratio (median of {rounds}) {:.1} %",
        group * 1e3,
        1.0 / group,
        megabytes / group,
        raw * 1e3,
        1.0 / raw,
        megabytes / raw,
        ratio * 100.0,
    );
}

/// The criterion entry points (the generated function has no doc comment of its own).
#[allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]
mod suite {
    criterion::criterion_group!(benches, super::driver_throughput);
}

fn main() {
    suite::benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench -- --test` (CI) only checks that the benchmarks run.
    if std::env::args().any(|argument| argument == "--test") {
        paired_ratio(1, 2);
        return;
    }
    paired_ratio(7, 40);
}
