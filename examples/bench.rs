//! The cluster's throughput and latency: `--clients` threads each send batches of `--batch`
//! transfers for `--seconds`, between accounts drawn uniformly or by a Zipf law, then every
//! acknowledged transfer is looked up to count losses.
//!
//! ```sh
//! cargo run --release --example bench -- --shards 1 --replicas 3 --clients 4 --batch 8190 \
//!     --accounts 10000 --distribution uniform --seconds 10
//! ```
//!
//! Credit accounts live on the debit account's shard unless `--cross-shard` is given: then both
//! are drawn independently, so with n shards a fraction (n-1)/n of the transfers crosses shards
//! and commits by two-phase commit; `--all-cross` puts every credit account on the next shard
//! after its debit account's, so every transfer crosses shards.
//! Also `--proposers <k>` (entries in flight per shard), `--capacity <transfers>` (size the
//! ledger's transfer index up front) and `--no-fsync` (only to see what the disk costs).
//!
//! Prints a progress line each second and, last, `RESULT transfers_per_sec=<n> p50_ms=<x>
//! p99_ms=<y> p999_ms=<z> acked=<n> lost=<n> cpu_us_per_transfer=<c>`: the process's CPU time
//! (all threads, user + system) during the timed run and until every cross-shard leg is resolved
//! (`drain_ms` after the run), per acknowledged transfer: foreign load on a shared machine
//! disturbs it much less than the rate; `transfers_per_sec_drained` counts that wait in the
//! time.
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads the wall clock"
)]
#![allow(
    clippy::cast_precision_loss,
    reason = "rates and the Zipf table are floating point"
)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use paxos_ledger::{Account, Client, Cluster, ClusterConfig, EVENTS_PER_CALL_MAX, Transfer};

#[derive(Debug, Clone)]
struct Options {
    shards: usize,
    replicas: usize,
    clients: usize,
    batch: usize,
    accounts: u64,
    zipfian: bool,
    seconds: u64,
    fsync: bool,
    /// Where credit accounts live relative to their debit accounts.
    mix: Mix,
    proposers: usize,
    capacity: usize,
}

/// Where a transfer's credit account lives.
#[derive(Debug, Clone, Copy)]
enum Mix {
    /// On the debit account's shard.
    SameShard,
    /// Anywhere (with n shards, (n-1)/n of the transfers cross shards).
    Uniform,
    /// On the shard after the debit account's (every transfer crosses, with 2+ shards).
    AllCross,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        shards: 1,
        replicas: 3,
        clients: 4,
        batch: 8190,
        accounts: 10_000,
        zipfian: false,
        seconds: 10,
        fsync: true,
        mix: Mix::SameShard,
        proposers: 4,
        capacity: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--shards" => options.shards = number(value()?)? as usize,
            "--replicas" => options.replicas = number(value()?)? as usize,
            "--clients" => options.clients = number(value()?)? as usize,
            "--batch" => options.batch = number(value()?)? as usize,
            "--accounts" => options.accounts = number(value()?)?,
            "--seconds" => options.seconds = number(value()?)?,
            "--distribution" => match value()?.as_str() {
                "uniform" => options.zipfian = false,
                "zipfian" => options.zipfian = true,
                other => return Err(format!("unknown distribution {other}")),
            },
            "--proposers" => options.proposers = number(value()?)? as usize,
            "--capacity" => options.capacity = number(value()?)? as usize,
            "--no-fsync" => options.fsync = false,
            "--cross-shard" => options.mix = Mix::Uniform,
            "--all-cross" => options.mix = Mix::AllCross,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.batch == 0 || options.batch > EVENTS_PER_CALL_MAX || options.accounts < 2 {
        return Err(format!(
            "--batch must be 1..={EVENTS_PER_CALL_MAX}, --accounts >= 2"
        ));
    }
    if options.clients == 0 || options.seconds == 0 {
        return Err("--clients and --seconds must be positive".into());
    }
    Ok(options)
}

/// xorshift64*: fast, seeded, good enough to pick accounts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws account indexes in `0..count`, uniformly or by Zipf's law (s = 1).
struct Picker {
    cdf: Option<Vec<f64>>,
    count: u64,
}

impl Picker {
    fn new(count: u64, zipfian: bool) -> Self {
        let cdf = zipfian.then(|| {
            let mut total = 0.0;
            let mut cdf: Vec<f64> = (1..=count)
                .map(|rank| {
                    total += 1.0 / rank as f64;
                    total
                })
                .collect();
            for c in &mut cdf {
                *c /= total;
            }
            cdf
        });
        Self { cdf, count }
    }

    fn pick(&self, rng: &mut Rng) -> u64 {
        match &self.cdf {
            None => rng.next() % self.count,
            Some(cdf) => {
                let u = rng.unit();
                (cdf.partition_point(|&c| c < u) as u64).min(self.count - 1)
            }
        }
    }
}

fn create_accounts(client: &Client, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let ids: Vec<u128> = (1..=u128::from(count)).collect();
    for chunk in ids.chunks(EVENTS_PER_CALL_MAX) {
        let accounts: Vec<Account> = chunk.iter().map(|&id| Account::new(id, 1, 1)).collect();
        let results = client.create_accounts(&accounts)?;
        if let Some(bad) = results.iter().find(|r| !r.is_ok() && !r.is_exists()) {
            return Err(format!("create_accounts: {bad:?}").into());
        }
    }
    Ok(())
}

/// One client thread: batches until `stop`; returns (latencies in µs, acknowledged ids).
fn client_run(
    client: &Client,
    options: &Options,
    picker: &Picker,
    thread: u64,
    stop: &AtomicBool,
    acked_total: &AtomicU64,
) -> (Vec<u32>, Vec<u128>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1).wrapping_mul(0x1234_5678_9abc));
    let (mut latencies, mut acked) = (Vec::new(), Vec::new());
    let shards = options.shards as u64;
    let mut sequence = 0u128;
    let mut batch = Vec::with_capacity(options.batch);
    while !stop.load(Relaxed) {
        batch.clear();
        while batch.len() < options.batch {
            let debit = picker.pick(&mut rng);
            // The credit account lives on the debit account's shard, unless --cross-shard.
            let credit = picker.pick(&mut rng);
            let credit = match options.mix {
                Mix::SameShard => credit - credit % shards + debit % shards,
                Mix::Uniform => credit,
                Mix::AllCross => credit - credit % shards + (debit + 1) % shards,
            };
            if credit == debit || credit >= options.accounts {
                continue;
            }
            sequence += 1;
            let id = (u128::from(thread + 1) << 64) | sequence;
            batch.push(Transfer::new(
                id,
                u128::from(debit + 1),
                u128::from(credit + 1),
                1,
                1,
                1,
            ));
        }
        let started = Instant::now();
        let Ok(results) = client.create_transfers(&batch) else {
            continue;
        };
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        let ok = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(t, _)| t.id);
        let before = acked.len();
        acked.extend(ok);
        acked_total.fetch_add((acked.len() - before) as u64, Relaxed);
    }
    (latencies, acked)
}

/// CPU time this process has used (user + system), from `/proc/self/stat`; `None` where that
/// file does not exist. Foreign load changes throughput far more than it changes this.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks as f64 / 100.0)
}

/// Waits (up to a minute) until every cross-shard leg is resolved; returns the wait in ms and
/// the CPU seconds used since `cpu_started` (0 where unknown).
fn drain_cross_shard(cluster: &Cluster, cpu_started: Option<f64>) -> (u128, f64) {
    let started = Instant::now();
    while cluster.unresolved_cross_shard_legs() > 0 && started.elapsed().as_secs() < 60 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu_seconds = process_cpu_seconds().zip(cpu_started);
    let cpu_seconds = cpu_seconds.map_or(0.0, |(now, then)| now - then);
    (started.elapsed().as_millis(), cpu_seconds)
}

fn percentile_ms(sorted: &[u32], permille: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = (sorted.len() * permille)
        .div_ceil(1000)
        .clamp(1, sorted.len())
        - 1;
    f64::from(sorted[index]) / 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse().map_err(|error| format!("bench: {error}"))?;
    let dir = std::env::temp_dir().join(format!("paxos-ledger-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = ClusterConfig::new(&dir)
        .replicas(options.replicas)
        .shards(options.shards)
        .fsync(options.fsync)
        .proposers_per_shard(options.proposers)
        .ledger_capacity(options.accounts as usize, options.capacity);
    let cluster = Cluster::open(config)?;
    let client = cluster.client();
    println!("bench: {options:?}");
    create_accounts(&client, options.accounts)?;
    let picker = Picker::new(options.accounts, options.zipfian);
    let (stop, acked_total) = (AtomicBool::new(false), AtomicU64::new(0));
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    let cpu_started = process_cpu_seconds();
    std::thread::scope(|scope| {
        for thread in 0..options.clients as u64 {
            let (client, options, picker) = (client.clone(), &options, &picker);
            let (stop, acked_total, results) = (&stop, &acked_total, &results);
            scope.spawn(move || {
                let outcome = client_run(&client, options, picker, thread, stop, acked_total);
                results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(outcome);
            });
        }
        let mut last = 0;
        for second in 1..=options.seconds {
            std::thread::sleep(Duration::from_secs(1));
            let now = acked_total.load(Relaxed);
            println!("t={second}s transfers/s={} acked={now}", now - last);
            last = now;
        }
        stop.store(true, Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    // The work of the acknowledged transfers includes finishing their cross-shard legs: count
    // its CPU too (the rate, as before, does not wait for it).
    let (drain_ms, cpu_seconds) = drain_cross_shard(&cluster, cpu_started);
    let results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut latencies: Vec<u32> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    latencies.sort_unstable();
    let acked: Vec<u128> = results.into_iter().flat_map(|(_, a)| a).collect();
    let mut found = 0;
    for chunk in acked.chunks(EVENTS_PER_CALL_MAX) {
        found += client.lookup_transfers(chunk)?.len();
    }
    cluster.shutdown()?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "RESULT transfers_per_sec={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} acked={} lost={} \
         cpu_us_per_transfer={:.2} drain_ms={drain_ms} transfers_per_sec_drained={:.0}",
        acked.len() as f64 / elapsed,
        percentile_ms(&latencies, 500),
        percentile_ms(&latencies, 990),
        percentile_ms(&latencies, 999),
        acked.len(),
        acked.len() - found,
        cpu_seconds * 1e6 / acked.len().max(1) as f64,
        acked.len() as f64 / (elapsed + drain_ms as f64 / 1000.0),
    );
    Ok(())
}
