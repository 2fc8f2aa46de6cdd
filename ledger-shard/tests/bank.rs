//! The bank workload under crashes: 16 threads move money at random among 100 accounts that
//! forbid overdraft while another thread crashes and restarts a random replica of a random shard
//! (its leader half the time) every second. It runs twice: on one shard, and across 4 shards
//! with three quarters of the transfers crossing shards (committed by two-phase commit).
//! Afterwards, once every cross-shard leg is resolved, every acknowledged transfer is present
//! exactly once (I2, I3, I10), money is conserved across shards (I1), no balance is negative
//! (I7), and every replica holds the same state (I5); the same holds after the cluster reopens.
//!
//! A third run mixes, across 4 shards, plain transfers, users' pending transfers then posted
//! (partially) or voided, and linked chains spanning shards (some of their events pending, then
//! posted or voided), under the same crashes: every acknowledged event applied exactly once,
//! chains all or none, nothing left pending.
//!
//! `BANK_SHARDS` picks the shard count of the same-shard run (default 1).
#![allow(
    clippy::disallowed_methods,
    reason = "a workload test paces itself by the wall clock"
)]
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ledger_core::{Account, AccountFlags, CreateTransferResult, Transfer, TransferFlags};
use ledger_shard::{Client, Cluster, ClusterConfig};

const THREADS: u64 = 16;
const ACCOUNTS: u128 = 100;
const FUNDING_ID: u128 = 1_000_000;
const INITIAL_BALANCE: u128 = 1_000;
const RUN: Duration = Duration::from_secs(10);

/// A small deterministic generator (xorshift64*), seeded per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The two workloads run one after the other: each alone keeps the 2-core machine busy.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Where the workers draw their credit accounts.
#[derive(Clone, Copy, PartialEq)]
enum Spread {
    /// On the debit account's shard: every transfer stays within one shard.
    SameShard,
    /// Anywhere: with 4 shards, three quarters of the transfers cross shards.
    Anywhere,
}

/// Opens the accounts and funds each from a funding account of its own shard.
fn setup(client: &Client, shards: usize) {
    assert_eq!(
        FUNDING_ID % shards as u128,
        0,
        "use a shard count dividing {FUNDING_ID}"
    );
    let mut accounts: Vec<Account> = (1..=ACCOUNTS)
        .map(|id| {
            let mut account = Account::new(id, 1, 1);
            account.flags = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
            account
        })
        .collect();
    accounts.extend((0..shards as u128).map(|s| Account::new(FUNDING_ID + s, 1, 1)));
    assert!(
        client
            .create_accounts(&accounts)
            .unwrap()
            .iter()
            .all(|r| r.is_ok())
    );
    let funding: Vec<Transfer> = (1..=ACCOUNTS)
        .map(|id| {
            // FUNDING_ID is a multiple of the shard count, so funder lives on id's shard.
            let funder = FUNDING_ID + id % shards as u128;
            Transfer::new(id, funder, id, INITIAL_BALANCE, 1, 1)
        })
        .collect();
    let results = client.create_transfers(&funding).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

/// Submits one transfer until its fate is known: retries the same id after a system error.
/// Only such a retry may answer `Exists`: inside one call, a failover retry of an entry that
/// had committed answers its original result (I3).
fn submit(client: &Client, transfer: Transfer) -> CreateTransferResult {
    submit_all(client, &[transfer])[0]
}

/// [`submit`] for a batch (a linked chain): the results once they are known.
fn submit_all(client: &Client, transfers: &[Transfer]) -> Vec<CreateTransferResult> {
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut first_attempt = true;
    loop {
        match client.create_transfers(transfers) {
            Ok(results) => {
                assert!(
                    !first_attempt || !results.iter().any(|result| result.is_exists()),
                    "a fresh id answered Exists"
                );
                return results;
            }
            Err(error) => {
                assert!(error.is_transient(), "unexpected system error: {error}");
                assert!(Instant::now() < give_up, "no progress for 60 s: {error}");
            }
        }
        first_attempt = false;
    }
}

/// One worker: random transfers between two accounts spread as asked; returns the fate of each.
fn worker(
    client: &Client,
    thread: u64,
    (shards, spread): (usize, Spread),
    stop: &AtomicBool,
) -> Vec<(Transfer, bool)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1));
    let mut fates = Vec::new();
    let mut sequence = 0u128;
    while !stop.load(Ordering::Relaxed) {
        let debit = 1 + u128::from(rng.below(ACCOUNTS as u64));
        let mut credit = 1 + u128::from(rng.below(ACCOUNTS as u64));
        if spread == Spread::SameShard {
            credit = credit - credit % shards as u128 + debit % shards as u128;
        }
        if credit == debit || credit == 0 || credit > ACCOUNTS {
            continue;
        }
        sequence += 1;
        let id = (u128::from(thread + 1) << 64) | sequence;
        let amount = 1 + u128::from(rng.below(200));
        let transfer = Transfer::new(id, debit, credit, amount, 1, 1);
        let result = submit(client, transfer);
        let applied = result.is_ok() || result.is_exists();
        // IdAlreadyFailed: a retry after a system error of a transfer that had failed (or
        // was aborted by the resolver after its caller gave up): not applied either way.
        assert!(
            applied
                || result == CreateTransferResult::ExceedsCredits
                || result == CreateTransferResult::IdAlreadyFailed,
            "{result:?}"
        );
        fates.push((transfer, applied));
    }
    fates
}

/// Crashes a random replica (the leader half the time) each second and restarts it.
fn chaos(cluster: &Cluster, shards: usize, stop: &AtomicBool) -> usize {
    let mut rng = Rng(42);
    let mut crashes = 0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(700));
        let shard = rng.below(shards as u64) as usize;
        let replica = match cluster.leader(shard) {
            Some(leader) if rng.below(2) == 0 => leader,
            _ => rng.below(cluster.config().replica_count() as u64) as usize,
        };
        cluster.crash_replica(shard, replica).unwrap();
        crashes += 1;
        std::thread::sleep(Duration::from_millis(300));
        cluster.restart_replica(shard, replica).unwrap();
    }
    crashes
}

/// What an event did, once its fate is known: `moved` from `debit` to `credit` (posted), and
/// whether a lookup of its id finds it.
#[derive(Clone, Copy)]
struct Fate {
    id: u128,
    debit: u128,
    credit: u128,
    moved: u128,
    present: bool,
}

impl Fate {
    /// A plain transfer: moved and present if applied.
    fn plain(transfer: &Transfer, applied: bool) -> Self {
        Self {
            id: transfer.id,
            debit: transfer.debit_account_id,
            credit: transfer.credit_account_id,
            moved: if applied { transfer.amount } else { 0 },
            present: applied,
        }
    }
}

/// Runs `threads` workers for [`RUN`] while [`chaos`] crashes replicas; returns what the
/// workers return, all together, and the number of crashes.
fn run_workers<T: Send>(
    cluster: &Cluster,
    client: &Client,
    threads: u64,
    worker: impl Fn(&Client, u64, &AtomicBool) -> Vec<T> + Sync,
) -> (Vec<T>, usize) {
    let shards = cluster.config().shard_count();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (worker, stop) = (&worker, &stop);
                scope.spawn(move || worker(client, thread, stop))
            })
            .collect();
        let chaos = scope.spawn(|| chaos(cluster, shards, &stop));
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
        let results: Vec<T> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (results, chaos.join().unwrap())
    })
}

fn check(client: &Client, cluster: &Cluster, fates: &[(Transfer, bool)], shards: usize) {
    let fates: Vec<Fate> = fates
        .iter()
        .map(|(transfer, applied)| Fate::plain(transfer, *applied))
        .collect();
    check_fates(client, cluster, &fates, shards);
}

fn check_fates(client: &Client, cluster: &Cluster, fates: &[Fate], shards: usize) {
    // A linearizable read of every shard, then every cross-shard leg resolved (I10).
    let funders: Vec<u128> = (0..shards as u128).map(|s| FUNDING_ID + s).collect();
    client.lookup_accounts(&funders).unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    while cluster.unresolved_cross_shard_legs() > 0 {
        assert!(Instant::now() < give_up, "cross-shard legs stay unresolved");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut expected: HashMap<u128, (u128, u128)> = HashMap::new();
    for fate in fates {
        expected.entry(fate.debit).or_default().0 += fate.moved;
        expected.entry(fate.credit).or_default().1 += fate.moved;
    }
    for chunk in fates.chunks(4_000) {
        let ids: Vec<u128> = chunk.iter().map(|fate| fate.id).collect();
        let found: HashMap<u128, Transfer> = client
            .lookup_transfers(&ids)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        for fate in chunk {
            assert_eq!(
                found.contains_key(&fate.id),
                fate.present,
                "event {}",
                fate.id
            );
        }
    }
    let ids: Vec<u128> = (1..=ACCOUNTS)
        .chain((0..shards as u128).map(|s| FUNDING_ID + s))
        .collect();
    let accounts = client.lookup_accounts(&ids).unwrap();
    let (mut debits, mut credits, mut customer_money) = (0u128, 0u128, 0i128);
    for account in &accounts {
        debits += account.debits_posted;
        credits += account.credits_posted;
        if account.id <= ACCOUNTS {
            let (moved_out, moved_in) = expected.get(&account.id).copied().unwrap_or_default();
            // Exactly once: the posted totals are the sums of the acknowledged transfers.
            assert_eq!(account.debits_posted, moved_out, "account {}", account.id);
            assert_eq!(
                account.credits_posted,
                moved_in + INITIAL_BALANCE,
                "account {}",
                account.id
            );
            assert!(
                account.credits_posted >= account.debits_posted,
                "overdraft {}",
                account.id
            );
            // Every pending transfer was posted or voided.
            assert_eq!(
                (account.debits_pending, account.credits_pending),
                (0, 0),
                "account {}",
                account.id
            );
            customer_money += account.balance_posted();
        }
    }
    assert_eq!(debits, credits, "money conserved (I1)");
    assert_eq!(
        customer_money,
        i128::try_from(ACCOUNTS * INITIAL_BALANCE).unwrap()
    );
    cluster
        .wait_replicas_identical(Duration::from_secs(30))
        .unwrap();
    cluster.check_invariants().unwrap();
}

#[test]
fn bank_workload_survives_replica_crashes() {
    let shards = std::env::var("BANK_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    run_bank(shards, Spread::SameShard);
}

#[test]
fn cross_shard_bank_workload_survives_replica_crashes() {
    run_bank(4, Spread::Anywhere);
}

fn run_bank(shards: usize, spread: Spread) {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir =
        std::env::temp_dir().join(format!("ledger-shard-bank-{shards}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = ClusterConfig::new(&dir).replicas(3).shards(shards);
    let cluster = Cluster::open(config.clone()).unwrap();
    let client = cluster.client();
    setup(&client, shards);
    let (fates, crashes) = run_workers(&cluster, &client, THREADS, |client, thread, stop| {
        worker(client, thread, (shards, spread), stop)
    });
    let applied = fates.iter().filter(|(_, applied)| *applied).count();
    let crossing = fates
        .iter()
        .filter(|(t, _)| {
            t.debit_account_id % shards as u128 != t.credit_account_id % shards as u128
        })
        .count();
    println!(
        "{} transfers, {crossing} across shards, {applied} applied, {crashes} crashes",
        fates.len()
    );
    if spread == Spread::Anywhere {
        assert!(2 * crossing >= fates.len(), "at least half cross shards");
    } else {
        assert_eq!(crossing, 0, "same-shard transfers only");
    }
    assert!(crashes >= 5, "the chaos thread ran");
    assert!(
        applied > 100,
        "the workload made progress through the crashes"
    );
    check(&client, &cluster, &fates, shards);
    // A genuine duplicate says Exists, never Ok.
    let (transfer, _) = fates.iter().find(|(_, applied)| *applied).unwrap();
    assert!(client.create_transfers(&[*transfer]).unwrap()[0].is_exists());
    cluster.shutdown().unwrap();
    // Reopening recovers every acknowledged transfer (I2).
    let cluster = Cluster::open(config).unwrap();
    check(&cluster.client(), &cluster, &fates, shards);
    cluster.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two different accounts anywhere and an amount.
fn pick(rng: &mut Rng) -> (u128, u128, u128) {
    let debit = 1 + u128::from(rng.below(ACCOUNTS as u64));
    let credit = 1 + (debit + u128::from(rng.below(ACCOUNTS as u64 - 1))) % ACCOUNTS;
    (debit, credit, 1 + u128::from(rng.below(100)))
}

/// Fresh transfer ids of one worker thread.
struct Ids {
    thread: u64,
    sequence: u128,
}

impl Ids {
    fn next(&mut self) -> u128 {
        self.sequence += 1;
        (u128::from(self.thread + 1) << 64) | self.sequence
    }
}

/// One mixed worker: plain transfers, users' pending transfers then posted (partially) or
/// voided, and linked chains of two or three transfers, accounts anywhere; returns the fate of
/// every event.
fn mixed_worker(client: &Client, thread: u64, stop: &AtomicBool) -> Vec<Fate> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (thread + 1));
    let mut ids = Ids {
        thread,
        sequence: 0,
    };
    let mut fates = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match rng.below(3) {
            0 => {
                let (debit, credit, amount) = pick(&mut rng);
                let transfer = Transfer::new(ids.next(), debit, credit, amount, 1, 1);
                let result = submit(client, transfer);
                fates.push(Fate::plain(&transfer, result.is_ok() || result.is_exists()));
            }
            1 => {
                let (debit, credit, amount) = pick(&mut rng);
                let pending = Transfer {
                    flags: TransferFlags::PENDING,
                    ..Transfer::new(ids.next(), debit, credit, amount, 1, 1)
                };
                let result = submit(client, pending);
                let committed = result.is_ok() || result.is_exists();
                fates.extend(pending_then_resolved(
                    client, &mut rng, &mut ids, pending, committed,
                ));
            }
            _ => fates.extend(chain(client, &mut rng, &mut ids)),
        }
    }
    fates
}

/// A linked chain of two or three transfers anywhere, some pending (not those whose credit
/// account lives on the chain's coordinator, which the cluster refuses); then each committed
/// pending one posted in part or voided.
fn chain(client: &Client, rng: &mut Rng, ids: &mut Ids) -> Vec<Fate> {
    const SHARDS: u128 = 4;
    let count = 2 + rng.below(2);
    let mut chain: Vec<Transfer> = Vec::new();
    for _ in 0..count {
        let (debit, credit, amount) = pick(rng);
        let coordinator = chain.first().map_or(debit, |first| first.debit_account_id) % SHARDS;
        let crosses_to_coordinator =
            debit % SHARDS != credit % SHARDS && credit % SHARDS == coordinator;
        let pending = rng.below(3) == 0 && !crosses_to_coordinator;
        chain.push(Transfer {
            flags: if pending {
                TransferFlags::LINKED.union(TransferFlags::PENDING)
            } else {
                TransferFlags::LINKED
            },
            ..Transfer::new(ids.next(), debit, credit, amount, 1, 1)
        });
    }
    if let Some(last) = chain.last_mut() {
        last.flags = last.flags.difference(TransferFlags::LINKED);
    }
    let results = submit_all(client, &chain);
    // Committed now, or before (a retry: the first event exists, as on one ledger).
    let committed =
        results.iter().all(|result| result.is_ok()) || results[0] == CreateTransferResult::Exists;
    let mut fates = Vec::new();
    for event in &chain {
        if event.flags.pending() {
            fates.extend(pending_then_resolved(client, rng, ids, *event, committed));
        } else {
            fates.push(Fate::plain(event, committed));
        }
    }
    fates
}

/// The fates of a user's pending transfer and (if it committed) of its post of a part, or its
/// void.
fn pending_then_resolved(
    client: &Client,
    rng: &mut Rng,
    ids: &mut Ids,
    pending: Transfer,
    committed: bool,
) -> Vec<Fate> {
    let (debit, credit, amount) = (
        pending.debit_account_id,
        pending.credit_account_id,
        pending.amount,
    );
    let mut fates = vec![Fate {
        moved: 0,
        ..Fate::plain(&pending, committed)
    }];
    if !committed {
        return fates;
    }
    // Only its user resolves a pending transfer: the post or void must land.
    let post = rng.below(2) == 0;
    let part = 1 + u128::from(rng.below(amount as u64));
    let resolution = Transfer {
        pending_id: pending.id,
        flags: if post {
            TransferFlags::POST_PENDING_TRANSFER
        } else {
            TransferFlags::VOID_PENDING_TRANSFER
        },
        ..Transfer::new(ids.next(), 0, 0, if post { part } else { 0 }, 0, 0)
    };
    let result = submit(client, resolution);
    assert!(result.is_ok() || result.is_exists(), "{result:?}");
    fates.push(Fate {
        id: resolution.id,
        debit,
        credit,
        moved: if post { part } else { 0 },
        present: true,
    });
    fates
}

#[test]
fn mixed_cross_shard_workload_survives_replica_crashes() {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let shards = 4;
    let dir = std::env::temp_dir().join(format!("ledger-shard-mixed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = ClusterConfig::new(&dir).replicas(3).shards(shards);
    let cluster = Cluster::open(config.clone()).unwrap();
    let client = cluster.client();
    setup(&client, shards);
    let (fates, crashes) = run_workers(&cluster, &client, THREADS / 2, mixed_worker);
    let moved = fates.iter().filter(|fate| fate.moved > 0).count();
    println!(
        "{} events, {moved} moved money, {crashes} crashes",
        fates.len()
    );
    assert!(crashes >= 5, "the chaos thread ran");
    assert!(moved > 50, "the workload made progress through the crashes");
    check_fates(&client, &cluster, &fates, shards);
    cluster.shutdown().unwrap();
    let cluster = Cluster::open(config).unwrap();
    check_fates(&cluster.client(), &cluster, &fates, shards);
    cluster.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
