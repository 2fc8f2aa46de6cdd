//! ledger-wal append throughput with fsync, against the raw limit of the same disk.
//!
//! For groups of 1, 64 and 8,190 records of 128 payload bytes (160 bytes on disk with the
//! 32-byte record header), each iteration appends one group and calls `sync` (one write + one
//! fdatasync through `FileStorage`). The `raw_std_fs` line writes the same number of on-disk
//! bytes with one `write` + one `fdatasync` per group straight through `std::fs`, in the same
//! run. Throughput is reported in payload MB/s for both; fsyncs/s is 1 / time per iteration.
//!
//! Run: `cargo bench --bench wal_append` (files go to a fresh directory under the system temp
//! directory and are removed after each sample).

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ledger_wal::{FileStorage, Wal, WalOptions};

const PAYLOAD_SIZE_BYTES: usize = 128;
const PAYLOAD_SIZE_BYTES_F64: f64 = 128.0;
/// A 128-byte payload plus the 32-byte record header (already a multiple of 8).
const RECORD_SIZE_ON_DISK_BYTES: usize = 160;
const GROUP_SIZES: [usize; 3] = [1, 64, 8_190];
/// Group commits done before timing starts, on both sides.
const WARM_UP_GROUPS: usize = 2;

fn bench_directory(kind: &str) -> PathBuf {
    let name = format!("paxos-ledger-bench-{kind}-{}", std::process::id());
    let directory = std::env::temp_dir().join(name);
    let _ = fs::remove_dir_all(&directory);
    directory
}

/// Times `iterations` group commits of `group_size` records through the `Wal`.
#[allow(clippy::disallowed_methods, reason = "a benchmark reads the clock")]
fn wal_group_commits(group_size: usize, iterations: u64) -> Duration {
    let directory = bench_directory("wal");
    let storage = FileStorage::open(&directory).expect("bench directory");
    let (wal, _) = Wal::open(storage, WalOptions::default()).expect("open");
    let payload = [0xAB_u8; PAYLOAD_SIZE_BYTES];
    // Warm-up outside the timed loop, as on the raw side: creates the first segment (and
    // fsyncs the directory) and grows both group-commit buffers to their steady size.
    for _ in 0..WARM_UP_GROUPS {
        for _ in 0..group_size {
            wal.append(0, &payload).expect("append");
        }
        wal.sync().expect("sync");
    }
    let start = Instant::now();
    for _ in 0..iterations {
        for _ in 0..group_size {
            wal.append(1, black_box(&payload)).expect("append");
        }
        black_box(wal.sync().expect("sync"));
    }
    let elapsed = start.elapsed();
    drop(wal);
    fs::remove_dir_all(&directory).expect("cleanup");
    elapsed
}

/// Times `iterations` of one `write` + one `fdatasync` of the same bytes through `std::fs`.
#[allow(clippy::disallowed_methods, reason = "a benchmark reads the clock")]
fn raw_group_writes(group_size: usize, iterations: u64) -> Duration {
    let directory = bench_directory("raw");
    fs::create_dir_all(&directory).expect("bench directory");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(directory.join("raw.log"))
        .expect("raw file");
    let bytes = vec![0xAB_u8; group_size * RECORD_SIZE_ON_DISK_BYTES];
    for _ in 0..WARM_UP_GROUPS {
        file.write_all(&bytes).expect("write");
        file.sync_data().expect("fdatasync");
    }
    let start = Instant::now();
    for _ in 0..iterations {
        file.write_all(black_box(&bytes)).expect("write");
        file.sync_data().expect("fdatasync");
    }
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_dir_all(&directory).expect("cleanup");
    elapsed
}

fn append_with_fsync(criterion: &mut Criterion) {
    for group_size in GROUP_SIZES {
        let mut group = criterion.benchmark_group(format!("wal_append/group_{group_size}"));
        group.throughput(Throughput::BytesDecimal(
            (group_size * PAYLOAD_SIZE_BYTES) as u64,
        ));
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        group.sample_size(10);
        group.bench_function("wal", |bencher| {
            bencher.iter_custom(|iterations| wal_group_commits(group_size, iterations));
        });
        group.bench_function("raw_std_fs", |bencher| {
            bencher.iter_custom(|iterations| raw_group_writes(group_size, iterations));
        });
        group.finish();
    }
}

/// Paired rounds: alternates `wal` and `raw_std_fs` runs of `iterations` group commits so both
/// see the same foreign load, and prints the median time of each and the median ratio.
fn paired_ratio(group_size: u32, rounds: usize, iterations: u32) {
    let group_size_f64 = f64::from(group_size);
    let (group_size, iterations_f64) = (group_size as usize, f64::from(iterations));
    let iterations = u64::from(iterations);
    let mut wal_times = Vec::with_capacity(rounds);
    let mut raw_times = Vec::with_capacity(rounds);
    let mut ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let wal = wal_group_commits(group_size, iterations).as_secs_f64() / iterations_f64;
        let raw = raw_group_writes(group_size, iterations).as_secs_f64() / iterations_f64;
        wal_times.push(wal);
        raw_times.push(raw);
        ratios.push(raw / wal);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (wal, raw, ratio) = (
        median(&mut wal_times),
        median(&mut raw_times),
        median(&mut ratios),
    );
    let megabytes = group_size_f64 * PAYLOAD_SIZE_BYTES_F64 / 1e6;
    println!(
        "paired group_{group_size}: wal {:.1} us ({:.2} MB/s, {:.0} fsyncs/s), raw {:.1} us \
         ({:.2} MB/s, {:.0} fsyncs/s), wal/raw throughput ratio (median of {rounds}) {:.1} %",
        wal * 1e6,
        megabytes / wal,
        1.0 / wal,
        raw * 1e6,
        megabytes / raw,
        1.0 / raw,
        ratio * 100.0,
    );
}

/// The criterion entry points (the generated function has no doc comment of its own).
#[allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]
mod suite {
    criterion::criterion_group!(benches, super::append_with_fsync);
}

fn main() {
    suite::benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench -- --test` (CI) only checks that the benchmarks run.
    if std::env::args().any(|argument| argument == "--test") {
        paired_ratio(64, 1, 1);
        return;
    }
    paired_ratio(1, 15, 200);
    paired_ratio(64, 15, 100);
    paired_ratio(8_190, 15, 30);
}
