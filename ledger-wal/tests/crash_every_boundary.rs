//! Goal (I8): stop the machine after every storage operation of a workload of 520 appends with
//! group commits, segment rotations, a snapshot and a compaction in the middle, and crash it in
//! every way the disk allows: (a) every un-synced write lost, (b) each subset of the pending
//! writes persisted, (c) the in-flight write torn at several offsets. After each crash the
//! recovered log must be a prefix of what was appended that holds every record whose sync
//! completed and no record that was not fully written, and the log must keep working.

use ledger_wal::{FaultStorage, PendingFate, PendingWrite, Storage, Wal, WalOptions};

const APPEND_COUNT: u64 = 520;
const SNAPSHOT_AFTER_APPENDS: u64 = 260;

fn options() -> WalOptions {
    WalOptions {
        segment_size_bytes_max: 2048,
        ..WalOptions::default()
    }
}

/// The payload of the record with lsn `lsn`: its size varies from 0 to 150 bytes.
fn payload(lsn: u64) -> Vec<u8> {
    let size = (lsn * 37 % 151) as usize;
    (0..size)
        .map(|index| (lsn as usize * 31 + index) as u8)
        .collect()
}

fn snapshot_bytes(lsn: u64) -> Vec<u8> {
    format!("state after {lsn} records").into_bytes()
}

/// What the workload had achieved when the machine stopped.
#[derive(Debug, Default)]
struct Progress {
    appended_lsn: u64,
    durable_lsn: u64,
    snapshot_lsn: Option<u64>,
    compacted: bool,
}

/// Runs the workload until it finishes or the storage stops accepting operations.
fn run_workload(wal: &Wal<FaultStorage>) -> Progress {
    let mut progress = Progress::default();
    let _ = run_workload_steps(wal, &mut progress);
    progress
}

fn run_workload_steps(wal: &Wal<FaultStorage>, progress: &mut Progress) -> ledger_wal::Result<()> {
    let mut group_size = 1;
    let mut in_group = 0;
    for lsn in 1..=APPEND_COUNT {
        assert_eq!(wal.append((lsn % 7) as u8, &payload(lsn))?, lsn);
        progress.appended_lsn = lsn;
        in_group += 1;
        if in_group == group_size {
            progress.durable_lsn = wal.sync()?;
            assert_eq!(progress.durable_lsn, lsn);
            in_group = 0;
            group_size = group_size % 13 + 1;
        }
        if lsn == SNAPSHOT_AFTER_APPENDS {
            let durable_lsn = wal.sync()?;
            progress.durable_lsn = durable_lsn;
            wal.write_snapshot(durable_lsn, &snapshot_bytes(durable_lsn))?;
            progress.snapshot_lsn = Some(durable_lsn);
            wal.compact(durable_lsn + 1)?;
            progress.compacted = true;
        }
    }
    progress.durable_lsn = wal.sync()?;
    Ok(())
}

/// Recovers from `storage` and checks the recovered log against the workload's progress.
fn recover_and_check(storage: FaultStorage, progress: &Progress, case: &str) -> Wal<FaultStorage> {
    let (wal, recovery) =
        Wal::open(storage, options()).unwrap_or_else(|error| panic!("{case}: {error}"));
    let snapshot_lsn = if let Some((lsn, bytes)) = &recovery.snapshot {
        assert_eq!(bytes, &snapshot_bytes(*lsn), "{case}: snapshot bytes");
        assert_eq!(*lsn, SNAPSHOT_AFTER_APPENDS, "{case}: snapshot lsn");
        *lsn
    } else {
        assert_eq!(
            progress.snapshot_lsn, None,
            "{case}: a completed snapshot was lost"
        );
        0
    };
    for (record, lsn) in recovery.records.iter().zip(snapshot_lsn + 1..) {
        assert_eq!(record.lsn, lsn, "{case}: lsns are consecutive");
        assert_eq!(record.payload, payload(lsn), "{case}: payload of lsn {lsn}");
        assert_eq!(record.kind, (lsn % 7) as u8, "{case}: kind of lsn {lsn}");
    }
    let recovered_lsn = snapshot_lsn + recovery.records.len() as u64;
    assert!(
        recovered_lsn >= progress.durable_lsn,
        "{case}: lost durable records"
    );
    assert!(
        recovered_lsn <= progress.appended_lsn,
        "{case}: records never appended"
    );
    assert_eq!(wal.next_lsn(), recovered_lsn + 1, "{case}: next lsn");
    wal.check_invariants();
    wal
}

/// After recovery the log accepts appends and a second recovery sees them.
fn continue_and_check(wal: Wal<FaultStorage>, case: &str) {
    let lsn = wal.next_lsn();
    for offset in 0..3 {
        wal.append(((lsn + offset) % 7) as u8, &payload(lsn + offset))
            .expect("append");
    }
    assert_eq!(wal.sync().expect("sync"), lsn + 2);
    let storage = wal.storage().clone();
    drop(wal);
    storage.crash();
    let progress = Progress {
        appended_lsn: lsn + 2,
        durable_lsn: lsn + 2,
        ..Progress::default()
    };
    let (_, recovery) = Wal::open(storage, options()).expect("second recovery");
    let last = recovery.records.last().map(|record| record.lsn);
    assert_eq!(
        last,
        Some(progress.durable_lsn),
        "{case}: appends after recovery"
    );
}

/// The crash variants for one stopping point: (a), (b) every subset, (c) tears.
fn crash_variants(pending: &[PendingWrite]) -> Vec<(String, Vec<PendingFate>)> {
    let mut variants = vec![(
        "lose all".to_string(),
        vec![PendingFate::Lost; pending.len()],
    )];
    let subset_count = 1u32 << pending.len().min(4);
    for mask in 1..subset_count {
        let fates = (0..pending.len())
            .map(|index| {
                let kept = index < 4 && mask & (1 << index) != 0;
                if kept {
                    PendingFate::Persisted
                } else {
                    PendingFate::Lost
                }
            })
            .collect();
        variants.push((format!("subset {mask:b}"), fates));
    }
    let in_flight = (0..pending.len())
        .filter(|&index| !pending[index].is_truncate)
        .max_by_key(|&index| pending[index].sequence);
    if let Some(in_flight) = in_flight {
        let size = pending[in_flight].size_bytes;
        for keep_bytes in [1, 7, 8, 31, 32, 33, 40, size / 2, size.saturating_sub(1)] {
            let mut fates = vec![PendingFate::Persisted; pending.len()];
            fates[in_flight] = PendingFate::Torn {
                keep_bytes: keep_bytes.min(size),
            };
            variants.push((format!("torn at {keep_bytes}"), fates));
        }
    }
    variants
}

#[test]
fn a_crash_at_every_operation_recovers_a_prefix_with_every_synced_record() {
    // A full run first, to count the operations and check the workload itself.
    let storage = FaultStorage::new(0);
    let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
    let progress = run_workload(&wal);
    assert_eq!(progress.durable_lsn, APPEND_COUNT);
    assert!(progress.compacted);
    assert!(
        wal.segment_first_lsns().len() > 10,
        "the workload rotates segments"
    );
    let operation_count = storage.operation_count();
    drop(wal);
    recover_and_check(storage, &progress, "no crash");

    let mut checked = 0;
    for budget in 0..=operation_count {
        let storage = FaultStorage::new(budget);
        let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
        storage.set_operation_budget(Some(budget));
        let progress = run_workload(&wal);
        drop(wal);
        let pending = storage.pending_writes();
        for (name, fates) in crash_variants(&pending) {
            let case = format!("budget {budget}, {name}, {progress:?}");
            let crashed = storage.fork();
            let mut fate = fates.iter();
            crashed.crash_with(|_| *fate.next().expect("one fate per pending write"));
            let wal = recover_and_check(crashed, &progress, &case);
            if budget % 5 == 0 {
                continue_and_check(wal, &case);
            }
            checked += 1;
        }
    }
    eprintln!("operations {operation_count}, crash states {checked}");
    assert!(
        checked > 2 * operation_count,
        "checked {checked} crash states"
    );
}

/// A crash during recovery itself (after the torn tail was truncated but before that was
/// fsynced, or earlier) is recovered by the next recovery.
#[test]
fn a_crash_during_recovery_is_recovered_again() {
    let storage = FaultStorage::new(9);
    let (wal, _) = Wal::open(storage.clone(), options()).unwrap();
    storage.set_operation_budget(Some(301));
    let progress = run_workload(&wal);
    drop(wal);
    storage.crash_with(|_| PendingFate::Torn { keep_bytes: 45 });
    let mut checked = 0;
    for budget in 0..4 {
        let crashed = storage.fork();
        crashed.set_operation_budget(Some(budget));
        if Wal::open(crashed.clone(), options()).is_ok() {
            continue;
        }
        checked += 1;
        crashed.crash_with(|_| PendingFate::Persisted);
        recover_and_check(
            crashed,
            &progress,
            &format!("recovery stopped after {budget}"),
        );
    }
    assert!(checked >= 1);
    assert!(
        storage
            .list()
            .unwrap()
            .iter()
            .any(|name| name.starts_with("wal-"))
    );
}
