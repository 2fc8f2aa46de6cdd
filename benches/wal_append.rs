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

use criterion::{Criterion, Throughput, criterion_main};
use ledger_wal::{FileStorage, Wal, WalOptions};

const PAYLOAD_SIZE_BYTES: usize = 128;
/// A 128-byte payload plus the 32-byte record header (already a multiple of 8).
const RECORD_SIZE_ON_DISK_BYTES: usize = 160;
const GROUP_SIZES: [usize; 3] = [1, 64, 8_190];

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
    // Creates the first segment (and fsyncs the directory) outside the timed loop, as the raw
    // side creates its file outside it.
    wal.append(0, &payload).expect("append");
    wal.sync().expect("sync");
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

/// The criterion entry points (the generated function has no doc comment of its own).
#[allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]
mod suite {
    criterion::criterion_group!(benches, super::append_with_fsync);
}

criterion_main!(suite::benches);
