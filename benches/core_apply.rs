//! Throughput of the ledger state machine applying batches of 8,190 transfers, and its memory
//! per account and per stored transfer.
//!
//! `cargo bench --bench core_apply`. Cases: transfers uniform over 10k accounts, uniform over
//! 1M accounts, and zipfian (s = 1) over 1M accounts (a few hot accounts take most transfers).
//! Before the timed cases it prints memory per account and per transfer, counted two ways: from
//! the ledger's capacities and by a counting global allocator.
#![allow(missing_docs)]
// The counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]
#![allow(clippy::cast_precision_loss, reason = "statistics and printed ratios")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use ledger_core::{Account, BATCH_EVENTS_MAX, Ledger, Transfer};

struct CountingAllocator;

static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// adds bookkeeping on an atomic counter.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const BATCH_EVENT_COUNT: usize = BATCH_EVENTS_MAX as usize;
/// The ledger is rebuilt (untimed) once it holds this many transfers, bounding memory.
const STORED_TRANSFERS_MAX: usize = 4_000_000;

/// splitmix64: a tiny deterministic generator (no `rand` dependency).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// How debit and credit accounts are drawn.
enum Pick {
    Uniform,
    /// Zipfian over ranks, by inverse CDF.
    Zipf(Vec<f64>),
}

impl Pick {
    fn zipf(account_count: usize, exponent: f64) -> Self {
        let mut cdf = Vec::with_capacity(account_count);
        let mut total = 0.0;
        for rank in 1..=account_count {
            total += 1.0 / (rank as f64).powf(exponent);
            cdf.push(total);
        }
        for value in &mut cdf {
            *value /= total;
        }
        Self::Zipf(cdf)
    }

    fn account(&self, rng: &mut Rng, account_count: usize) -> u128 {
        let index = match self {
            Self::Uniform => rng.below(account_count as u64) as usize,
            Self::Zipf(cdf) => cdf
                .partition_point(|&value| value < rng.unit())
                .min(account_count - 1),
        };
        // Scatter the hot ranks over the id space so they are not neighbours.
        account_id(index)
    }
}

fn account_id(index: usize) -> u128 {
    (index as u128 + 1) * 0x9E37_79B9_7F4A_7C15
}

fn ledger_with_accounts(account_count: usize) -> Ledger {
    let mut ledger = Ledger::new();
    let accounts: Vec<Account> = (0..account_count)
        .map(|i| Account::new(account_id(i), 1, 1))
        .collect();
    for (batch_index, batch) in accounts.chunks(BATCH_EVENT_COUNT).enumerate() {
        let results = ledger.create_accounts(batch, batch_index as u64 + 1);
        assert!(results.iter().all(|result| result.is_ok()));
    }
    ledger
}

struct Workload {
    account_count: usize,
    pick: Pick,
    rng: Rng,
    next_transfer_id: u128,
}

impl Workload {
    fn fill_batch(&mut self, batch: &mut Vec<Transfer>) {
        batch.clear();
        for _ in 0..BATCH_EVENT_COUNT {
            let debit = self.pick.account(&mut self.rng, self.account_count);
            let mut credit = self.pick.account(&mut self.rng, self.account_count);
            while credit == debit {
                credit = self.pick.account(&mut self.rng, self.account_count);
            }
            let amount = u128::from(self.rng.below(1_000) + 1);
            self.next_transfer_id += 1;
            batch.push(Transfer::new(
                self.next_transfer_id,
                debit,
                credit,
                amount,
                1,
                1,
            ));
        }
    }
}

/// Nanoseconds this thread has run on a CPU (Linux `/proc/thread-self/schedstat`), so a figure
/// can be quoted that excludes the time the scheduler gave to other processes. The kernel
/// updates it at scheduler ticks, so only a mean over many batches is meaningful.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// (batches, on-CPU nanoseconds) of the timed batches of the current case.
static BATCH_CPU_NS: std::sync::Mutex<(u64, u64)> = std::sync::Mutex::new((0, 0));

/// Prints the mean on-CPU time per batch of the case just measured, and forgets it.
fn report_cpu_time(name: &str) {
    let (batches, cpu_ns) = std::mem::take(
        &mut *BATCH_CPU_NS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if batches == 0 || cpu_ns == 0 {
        return;
    }
    let mean_ns = cpu_ns as f64 / batches as f64;
    println!(
        "{name}: mean on-CPU time {:.3} ms per batch = {:.2} M transfers/s of CPU time \
         ({batches} batches)",
        mean_ns / 1e6,
        BATCH_EVENT_COUNT as f64 / mean_ns * 1e3,
    );
}

/// Times `iterations` batches of fresh transfers; building batches and rebuilding the ledger
/// are not timed.
#[allow(clippy::disallowed_methods, reason = "a benchmark reads the clock")]
fn apply_batches(ledger: &mut Ledger, workload: &mut Workload, iterations: u64) -> Duration {
    let mut batch = Vec::with_capacity(BATCH_EVENT_COUNT);
    let mut elapsed = Duration::ZERO;
    let mut timestamp = ledger.last_timestamp() + 1;
    for _ in 0..iterations {
        if ledger.transfer_count() + BATCH_EVENT_COUNT > STORED_TRANSFERS_MAX {
            *ledger = ledger_with_accounts(workload.account_count);
            timestamp = ledger.last_timestamp() + 1;
        }
        workload.fill_batch(&mut batch);
        let cpu_start = thread_cpu_ns();
        let start = Instant::now();
        let results = ledger.create_transfers(black_box(&batch), timestamp);
        elapsed += start.elapsed();
        if let (Some(cpu_start), Some(cpu_end)) = (cpu_start, thread_cpu_ns()) {
            let mut totals = BATCH_CPU_NS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            totals.0 += 1;
            totals.1 += cpu_end.saturating_sub(cpu_start);
        }
        debug_assert!(results.iter().all(|result| result.is_ok()));
        black_box(results);
        timestamp += 1_000_000;
    }
    elapsed
}

fn report_memory() {
    let account_count = 1_000_000;
    let transfer_count = 3_276_000; // 400 batches
    let before = ALLOCATED_BYTES.load(Ordering::Relaxed);
    let mut ledger = ledger_with_accounts(account_count);
    let after_accounts = ALLOCATED_BYTES.load(Ordering::Relaxed);
    let accounts_usage = ledger.memory_usage();
    let mut workload = Workload {
        account_count,
        pick: Pick::Uniform,
        rng: Rng(7),
        next_transfer_id: 0,
    };
    let mut batch = Vec::with_capacity(BATCH_EVENT_COUNT);
    let batch_bytes = ALLOCATED_BYTES.load(Ordering::Relaxed);
    for batch_index in 0..transfer_count / BATCH_EVENT_COUNT {
        workload.fill_batch(&mut batch);
        ledger.create_transfers(&batch, 1_000_000 + batch_index as u64);
    }
    let after_transfers = ALLOCATED_BYTES.load(Ordering::Relaxed);
    let usage = ledger.memory_usage();
    let per_account_capacity = (accounts_usage.accounts_bytes + accounts_usage.account_index_bytes)
        as f64
        / account_count as f64;
    let per_account_counted = (after_accounts - before) as f64 / account_count as f64;
    let transfer_part = |u: &ledger_core::MemoryUsage| u.transfers_bytes + u.transfer_index_bytes;
    let per_transfer_capacity = (transfer_part(&usage) - transfer_part(&accounts_usage)) as f64
        / ledger.transfer_count() as f64;
    let per_transfer_counted =
        (after_transfers - batch_bytes) as f64 / ledger.transfer_count() as f64;
    println!(
        "memory: {account_count} accounts, {} transfers: per account {per_account_capacity:.1} B \
         (capacities) / {per_account_counted:.1} B (allocator); per stored transfer \
         {per_transfer_capacity:.1} B (capacities, record + metadata + id index) / \
         {per_transfer_counted:.1} B (allocator, everything allocated while applying)",
        ledger.transfer_count()
    );
    black_box(ledger);
}

type MakePick = fn(usize) -> Pick;

fn bench_apply(criterion: &mut Criterion) {
    report_memory();
    let mut group = criterion.benchmark_group("core_apply");
    group.throughput(Throughput::Elements(BATCH_EVENT_COUNT as u64));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let cases: [(&str, usize, MakePick); 3] = [
        ("uniform_10k_accounts", 10_000, |_| Pick::Uniform),
        ("uniform_1m_accounts", 1_000_000, |_| Pick::Uniform),
        ("zipf_1m_accounts", 1_000_000, |count| {
            Pick::zipf(count, 1.0)
        }),
    ];
    for (name, account_count, pick) in cases {
        let mut ledger = ledger_with_accounts(account_count);
        let mut workload = Workload {
            account_count,
            pick: pick(account_count),
            rng: Rng(42),
            next_transfer_id: 0,
        };
        *BATCH_CPU_NS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (0, 0);
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| apply_batches(&mut ledger, &mut workload, iterations));
        });
        report_cpu_time(name);
    }
    group.finish();
}

criterion_group!(benches, bench_apply);

/// Runs the benches with transparent huge pages for malloc'd memory (glibc's
/// `glibc.malloc.hugetlb=1` tunable), re-executing itself once with the tunable set: a ledger of
/// millions of records is bound by TLB misses and page faults on 4 KiB pages. Set
/// `CORE_APPLY_SMALL_PAGES=1` to measure with the default 4 KiB pages.
fn main() {
    let small_pages = std::env::var_os("CORE_APPLY_SMALL_PAGES").is_some();
    if !small_pages && std::env::var_os("GLIBC_TUNABLES").is_none() {
        if let Ok(program) = std::env::current_exe() {
            let status = std::process::Command::new(program)
                .args(std::env::args_os().skip(1))
                .env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
                .status();
            if let Ok(status) = status {
                std::process::exit(status.code().unwrap_or(1));
            }
        }
    }
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    println!("GLIBC_TUNABLES={tunables:?} (hugetlb=1: transparent huge pages for malloc)");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
