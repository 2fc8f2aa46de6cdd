//! Goal (I8): random sequences of `append`, `sync`, `append_and_wait`, snapshot, compact, crash (at
//! rest, or in the middle of a sync with the in-flight write lost, persisted or torn) and
//! recover, checked after every recovery against a `Vec` model: the recovered log is a prefix
//! of what was appended, holds every record whose sync completed, and the newest completed
//! snapshot.

use ledger_wal::{FaultStorage, PendingFate, Wal, WalOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Operation {
    Append {
        kind: u8,
        size: usize,
    },
    AppendAndWait {
        kind: u8,
        size: usize,
    },
    Sync,
    Snapshot,
    Compact,
    Crash,
    CrashDuringSync {
        operations_allowed: u64,
        fate: u8,
        keep_bytes: u64,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (any::<u8>(), 0usize..300).prop_map(|(kind, size)| Operation::Append { kind, size }),
        2 => (any::<u8>(), 0usize..300)
            .prop_map(|(kind, size)| Operation::AppendAndWait { kind, size }),
        3 => Just(Operation::Sync),
        1 => Just(Operation::Snapshot),
        1 => Just(Operation::Compact),
        1 => Just(Operation::Crash),
        2 => (0u64..5, 0u8..3, 0u64..400).prop_map(|(operations_allowed, fate, keep_bytes)| {
            Operation::CrashDuringSync { operations_allowed, fate, keep_bytes }
        }),
    ]
}

fn options() -> WalOptions {
    WalOptions {
        segment_size_bytes_max: 1500,
        ..WalOptions::default()
    }
}

fn payload(lsn: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|index| (lsn as usize).wrapping_mul(7).wrapping_add(index) as u8)
        .collect()
}

/// The model: every appended record (index = lsn − 1), what is durable, the snapshots.
#[derive(Default)]
struct Model {
    records: Vec<(u8, Vec<u8>)>,
    durable_lsn: u64,
    snapshot_lsns: Vec<u64>,
}

struct Harness {
    storage: FaultStorage,
    wal: Wal<FaultStorage>,
    model: Model,
}

impl Harness {
    fn new(seed: u64) -> Self {
        let storage = FaultStorage::new(seed);
        let (wal, _) = Wal::open(storage.clone(), options()).expect("open");
        Harness {
            storage,
            wal,
            model: Model::default(),
        }
    }

    fn append(&mut self, kind: u8, size: usize, wait: bool) {
        let lsn = self.model.records.len() as u64 + 1;
        let payload = payload(lsn, size);
        let appended = if wait {
            self.wal
                .append_and_wait(kind, &payload)
                .expect("append_and_wait")
        } else {
            self.wal.append(kind, &payload).expect("append")
        };
        assert_eq!(appended, lsn);
        self.model.records.push((kind, payload));
        if wait {
            self.model.durable_lsn = lsn;
        }
    }

    fn apply(&mut self, operation: &Operation) {
        match *operation {
            Operation::Append { kind, size } => self.append(kind, size, false),
            Operation::AppendAndWait { kind, size } => self.append(kind, size, true),
            Operation::Sync => {
                self.model.durable_lsn = self.wal.sync().expect("sync");
                assert_eq!(self.model.durable_lsn, self.model.records.len() as u64);
            }
            Operation::Snapshot => {
                let lsn = self.model.durable_lsn;
                if lsn > 0 && self.model.snapshot_lsns.last() != Some(&lsn) {
                    self.wal
                        .write_snapshot(lsn, &lsn.to_le_bytes())
                        .expect("snapshot");
                    self.model.snapshot_lsns.push(lsn);
                }
            }
            Operation::Compact => {
                // Up to the older kept snapshot, so the newest can fall back to it.
                let kept = &self.model.snapshot_lsns;
                if let Some(&keep_from) =
                    kept.len().checked_sub(2).and_then(|index| kept.get(index))
                {
                    self.wal.compact(keep_from + 1).expect("compact");
                }
            }
            Operation::Crash => self.crash_and_recover(PendingFate::Lost),
            Operation::CrashDuringSync {
                operations_allowed,
                fate,
                keep_bytes,
            } => {
                self.storage.set_operation_budget(Some(operations_allowed));
                if let Ok(durable_lsn) = self.wal.sync() {
                    self.model.durable_lsn = durable_lsn;
                }
                let fate = match fate {
                    0 => PendingFate::Lost,
                    1 => PendingFate::Persisted,
                    _ => PendingFate::Torn { keep_bytes },
                };
                self.crash_and_recover(fate);
            }
        }
    }

    fn crash_and_recover(&mut self, fate: PendingFate) {
        self.storage.crash_with(|_| fate);
        let (wal, recovery) = Wal::open(self.storage.clone(), options()).expect("recover");
        self.wal = wal;
        let snapshot_lsn = match recovery.snapshot {
            Some((lsn, bytes)) => {
                assert_eq!(bytes, lsn.to_le_bytes());
                lsn
            }
            None => 0,
        };
        assert_eq!(
            snapshot_lsn,
            self.model.snapshot_lsns.last().copied().unwrap_or(0)
        );
        for (record, lsn) in recovery.records.iter().zip(snapshot_lsn + 1..) {
            assert_eq!(record.lsn, lsn);
            let (kind, payload) = &self.model.records[(lsn - 1) as usize];
            assert_eq!(
                (&record.kind, &record.payload),
                (kind, payload),
                "lsn {lsn}"
            );
        }
        let recovered_lsn = snapshot_lsn + recovery.records.len() as u64;
        assert!(
            recovered_lsn >= self.model.durable_lsn,
            "a durable record was lost"
        );
        assert!(
            recovered_lsn <= self.model.records.len() as u64,
            "a record appeared"
        );
        // Un-synced records the crash kept are now durable; the others are gone.
        self.model.records.truncate(recovered_lsn as usize);
        self.model.durable_lsn = recovered_lsn;
        assert_eq!(self.wal.next_lsn(), recovered_lsn + 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_log_matches_a_vec_model(seed in any::<u64>(), operations in prop::collection::vec(operation(), 1..80)) {
        let mut harness = Harness::new(seed);
        for operation in &operations {
            harness.apply(operation);
            harness.wal.check_invariants();
        }
        harness.apply(&Operation::Crash);
    }
}
