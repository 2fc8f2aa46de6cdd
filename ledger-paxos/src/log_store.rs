//! How a `Ready`'s persist work maps onto ledger-wal, and how a replica is rebuilt from it.
//!
//! ```text
//!  Ready.hard_state        ──▶ MetaFile "paxos-promised": [round u64][replica u8]  (atomic)
//!  Ready.entries_to_persist ──▶ WAL records, kind 1: [slot u64][round u64][replica u8][entry]
//!                               (slot and ballot inside the checksummed payload), one sync
//!  Ready.snapshot_to_persist ──▶ Wal::write_snapshot(L, [slot u64][last_timestamp u64][bytes])
//!                               then Wal::compact(previous snapshot L + 1)
//!
//!  Wal::open Recovery + MetaFile ──▶ Recovered { hard_state, snapshot, entries (latest per slot) }
//! ```
//!
//! The snapshot's lsn `L` is chosen below the record of every live slot at or above the
//! snapshot's slot, so recovery (which returns the records after `L`) never drops an accepted
//! entry the replica may still need (I4); records after `L` for slots below the snapshot are
//! skipped by `Replica::new`.

use std::collections::BTreeMap;

use ledger_wal::{Lsn, MetaFile, Recovery, Storage, Wal, WalOptions};

use crate::ballot::Ballot;
use crate::error::{PaxosError, Result};
use crate::message::{Entry, Reader, SlotEntry};
use crate::ready::{HardState, Ready, Recovered, SnapshotData};

/// The WAL record kind of an accepted entry.
pub const RECORD_KIND_ENTRY: u8 = 1;
/// The metadata file holding the promised ballot.
pub const HARD_STATE_FILE_NAME: &str = "paxos-promised";
/// The bytes before the entry in an entry record: slot, round, replica.
pub const ENTRY_RECORD_HEADER_SIZE_BYTES: usize = 8 + 8 + 1;
/// The bytes before the state machine's bytes in a snapshot: slot, last timestamp.
pub const SNAPSHOT_HEADER_SIZE_BYTES: usize = 8 + 8;
const HARD_STATE_SIZE_BYTES: usize = 8 + 1;

/// Encodes an accepted entry as a WAL record payload.
pub fn encode_entry_record(slot_entry: &SlotEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&slot_entry.slot.to_le_bytes());
    out.extend_from_slice(&slot_entry.ballot.round.to_le_bytes());
    out.push(slot_entry.ballot.replica);
    slot_entry.entry.encode(out);
}

/// Decodes a WAL record payload written by [`encode_entry_record`].
///
/// # Errors
///
/// [`PaxosError::Malformed`] for truncated or trailing bytes.
pub fn decode_entry_record(payload: &[u8]) -> Result<SlotEntry> {
    let mut reader = Reader {
        bytes: payload,
        offset: 0,
    };
    let slot = reader.u64()?;
    let round = reader.u64()?;
    let replica = reader.u8()?;
    let entry = Entry::decode(&payload[ENTRY_RECORD_HEADER_SIZE_BYTES..])?;
    Ok(SlotEntry {
        slot,
        ballot: Ballot::new(round, replica),
        entry,
    })
}

/// Encodes the hard state for the metadata file.
pub fn encode_hard_state(hard_state: HardState) -> [u8; HARD_STATE_SIZE_BYTES] {
    let mut bytes = [0_u8; HARD_STATE_SIZE_BYTES];
    bytes[..8].copy_from_slice(&hard_state.promised.round.to_le_bytes());
    bytes[8] = hard_state.promised.replica;
    bytes
}

/// Decodes the metadata file's hard state.
///
/// # Errors
///
/// [`PaxosError::Malformed`] if the size is wrong.
pub fn decode_hard_state(bytes: &[u8]) -> Result<HardState> {
    if bytes.len() != HARD_STATE_SIZE_BYTES {
        return Err(PaxosError::Malformed { what: "hard state" });
    }
    let mut reader = Reader { bytes, offset: 0 };
    let round = reader.u64()?;
    let replica = reader.u8()?;
    Ok(HardState {
        promised: Ballot::new(round, replica),
    })
}

/// The lsn of the second-newest snapshot in `snapshot_lsns` (ascending), if there is one.
fn previous_snapshot_lsn(snapshot_lsns: &[Lsn]) -> Option<Lsn> {
    snapshot_lsns.iter().rev().nth(1).copied()
}

/// Encodes a snapshot for `Wal::write_snapshot`.
pub fn encode_snapshot(snapshot: &SnapshotData) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_SIZE_BYTES + snapshot.bytes.len());
    bytes.extend_from_slice(&snapshot.slot.to_le_bytes());
    bytes.extend_from_slice(&snapshot.last_timestamp_ns.to_le_bytes());
    bytes.extend_from_slice(&snapshot.bytes);
    bytes
}

/// Decodes a snapshot written by [`encode_snapshot`].
///
/// # Errors
///
/// [`PaxosError::Malformed`] if the header is truncated.
pub fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotData> {
    let mut reader = Reader { bytes, offset: 0 };
    let slot = reader.u64()?;
    let last_timestamp_ns = reader.u64()?;
    let bytes = bytes::Bytes::copy_from_slice(&bytes[SNAPSHOT_HEADER_SIZE_BYTES..]);
    Ok(SnapshotData {
        slot,
        last_timestamp_ns,
        bytes,
    })
}

/// Rebuilds what a replica recovered from a WAL [`Recovery`] and the metadata file's value.
/// Returns it with the lsn of each slot's live record.
///
/// # Errors
///
/// [`PaxosError::Malformed`] if a record or the metadata does not decode (the WAL's checksum
/// passed, so this is a bug or a foreign file, never a torn write).
pub fn recover(
    recovery: &Recovery,
    hard_state: Option<&[u8]>,
) -> Result<(Recovered, BTreeMap<u64, Lsn>)> {
    let hard_state = hard_state
        .map(decode_hard_state)
        .transpose()?
        .unwrap_or_default();
    let snapshot = match &recovery.snapshot {
        Some((_, bytes)) => Some(decode_snapshot(bytes)?),
        None => None,
    };
    let snapshot_slot = snapshot.as_ref().map_or(0, |s| s.slot);
    let mut latest: BTreeMap<u64, (Lsn, SlotEntry)> = BTreeMap::new();
    for record in &recovery.records {
        if record.kind != RECORD_KIND_ENTRY {
            return Err(PaxosError::Malformed {
                what: "record kind",
            });
        }
        let slot_entry = decode_entry_record(&record.payload)?;
        if slot_entry.slot < snapshot_slot {
            continue;
        }
        let newer = latest
            .get(&slot_entry.slot)
            .is_none_or(|(_, e)| slot_entry.ballot >= e.ballot);
        if newer {
            latest.insert(slot_entry.slot, (record.lsn, slot_entry));
        }
    }
    let slot_lsns = latest
        .iter()
        .map(|(slot, (lsn, _))| (*slot, *lsn))
        .collect();
    let entries = latest
        .into_values()
        .map(|(_, slot_entry)| slot_entry)
        .collect();
    Ok((
        Recovered {
            hard_state,
            snapshot,
            entries,
        },
        slot_lsns,
    ))
}

/// A replica's durable storage: a [`Wal`] for entries and snapshots, a [`MetaFile`] for the
/// promised ballot. Used by the driver and by the simulator (over `FaultStorage`).
#[derive(Debug)]
pub struct LogStore<S: Storage> {
    wal: Wal<S>,
    meta: MetaFile<S>,
    /// The lsn of the live record of each slot at or above the snapshot.
    slot_lsns: BTreeMap<u64, Lsn>,
    snapshot_slot: u64,
    buffer: Vec<u8>,
}

impl<S: Storage> LogStore<S> {
    /// Opens (recovering) the log in `wal_storage` and the metadata in `meta_storage` (two
    /// handles on the same directory) and returns what the replica recovered.
    ///
    /// # Errors
    ///
    /// [`PaxosError::Storage`] for log errors (corruption is reported, never skipped, I8);
    /// [`PaxosError::Malformed`] for records that do not decode.
    pub fn open(wal_storage: S, meta_storage: S, options: WalOptions) -> Result<(Self, Recovered)> {
        let (wal, recovery) = Wal::open(wal_storage, options)?;
        let (meta, hard_state) = MetaFile::open(meta_storage, HARD_STATE_FILE_NAME)?;
        let (recovered, slot_lsns) = recover(&recovery, hard_state.as_deref())?;
        let snapshot_slot = recovered.snapshot.as_ref().map_or(0, |s| s.slot);
        let store = LogStore {
            wal,
            meta,
            slot_lsns,
            snapshot_slot,
            buffer: Vec::new(),
        };
        Ok((store, recovered))
    }

    /// Makes the promised ballot durable (atomic replace).
    ///
    /// # Errors
    ///
    /// [`PaxosError::Storage`]; the replica must stop.
    pub fn write_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        self.meta.write(&encode_hard_state(hard_state))?;
        Ok(())
    }

    /// Buffers accepted entries in the log; durable after [`LogStore::sync`].
    ///
    /// # Errors
    ///
    /// [`PaxosError::Storage`]; the replica must stop.
    pub fn append_entries(&mut self, entries: &[SlotEntry]) -> Result<()> {
        for slot_entry in entries {
            self.buffer.clear();
            encode_entry_record(slot_entry, &mut self.buffer);
            let lsn = self.wal.append(RECORD_KIND_ENTRY, &self.buffer)?;
            if slot_entry.slot >= self.snapshot_slot {
                self.slot_lsns.insert(slot_entry.slot, lsn);
            }
        }
        Ok(())
    }

    /// Makes every appended entry durable (one write, one fdatasync).
    ///
    /// # Errors
    ///
    /// [`PaxosError::Storage`] (a failed fsync poisons the log); the replica must stop.
    pub fn sync(&self) -> Result<Lsn> {
        Ok(self.wal.sync()?)
    }

    /// Writes a snapshot (after the entries before it are synced) and compacts the log below
    /// it, keeping every live record at or above the snapshot's slot.
    ///
    /// # Errors
    ///
    /// [`PaxosError::Storage`]; the replica must stop.
    pub fn write_snapshot(&mut self, snapshot: &SnapshotData) -> Result<()> {
        if snapshot.slot <= self.snapshot_slot {
            return Ok(());
        }
        let durable_lsn = self.sync()?;
        self.slot_lsns = self.slot_lsns.split_off(&snapshot.slot);
        let first_live_lsn = self
            .slot_lsns
            .values()
            .min()
            .copied()
            .unwrap_or(durable_lsn + 1);
        let snapshot_lsn = first_live_lsn.min(durable_lsn + 1) - 1;
        self.wal
            .write_snapshot(snapshot_lsn, &encode_snapshot(snapshot))?;
        // Keep the log from the previous snapshot on: if the newest snapshot is found damaged at
        // recovery, the WAL falls back to the previous one, and the records between the two
        // must still be there (I8). Compacting to the newest would turn that fallback into a
        // gap error.
        let keep_from_lsn =
            previous_snapshot_lsn(&self.wal.snapshot_lsns()).map_or(1, |lsn| lsn + 1);
        self.wal.compact(keep_from_lsn)?;
        self.snapshot_slot = snapshot.slot;
        Ok(())
    }

    /// Does all of a `Ready`'s persist work in order: hard state, entries, one sync, snapshot.
    /// On `Ok`, its `messages_after_persist` may leave and `Replica::advance` may be called.
    ///
    /// # Errors
    ///
    /// [`PaxosError::Storage`]; the replica must stop.
    pub fn persist(&mut self, ready: &Ready) -> Result<()> {
        if let Some(hard_state) = ready.hard_state {
            self.write_hard_state(hard_state)?;
        }
        if !ready.entries_to_persist.is_empty() {
            self.append_entries(&ready.entries_to_persist)?;
            self.sync()?;
        }
        if let Some(snapshot) = &ready.snapshot_to_persist {
            self.write_snapshot(snapshot)?;
        }
        Ok(())
    }

    /// The underlying log.
    pub fn wal(&self) -> &Wal<S> {
        &self.wal
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ledger_wal::FaultStorage;

    use super::*;
    use crate::message::Command;

    fn entry(slot: u64, round: u64, tag: u8) -> SlotEntry {
        let command = Command {
            origin: 0,
            request_id: slot,
            payload: Bytes::from(vec![tag; 3]),
        };
        SlotEntry {
            slot,
            ballot: Ballot::new(round, 1),
            entry: Entry::new(slot, vec![command]),
        }
    }

    fn open(storage: &FaultStorage) -> (LogStore<FaultStorage>, Recovered) {
        let options = WalOptions {
            segment_size_bytes_max: 256,
            ..WalOptions::default()
        };
        LogStore::open(storage.clone(), storage.clone(), options).unwrap()
    }

    #[test]
    fn records_round_trip_and_reject_truncation() {
        let mut bytes = Vec::new();
        let slot_entry = entry(9, 4, 7);
        encode_entry_record(&slot_entry, &mut bytes);
        assert_eq!(decode_entry_record(&bytes).unwrap(), slot_entry);
        for cut in 0..bytes.len() {
            assert!(decode_entry_record(&bytes[..cut]).is_err());
        }
        let hard_state = HardState {
            promised: Ballot::new(3, 2),
        };
        assert_eq!(
            decode_hard_state(&encode_hard_state(hard_state)).unwrap(),
            hard_state
        );
        assert!(decode_hard_state(&[1, 2]).is_err());
    }

    #[test]
    fn a_crash_keeps_synced_entries_and_the_promise_and_the_highest_ballot_wins() {
        let storage = FaultStorage::new(3);
        let (mut store, recovered) = open(&storage);
        assert_eq!(recovered, Recovered::default());
        store
            .write_hard_state(HardState {
                promised: Ballot::new(5, 1),
            })
            .unwrap();
        store
            .append_entries(&[entry(0, 4, 1), entry(1, 4, 1), entry(1, 5, 2)])
            .unwrap();
        store.sync().unwrap();
        store.append_entries(&[entry(2, 5, 3)]).unwrap();
        storage.crash();
        let (_store, recovered) = open(&storage);
        assert_eq!(recovered.hard_state.promised, Ballot::new(5, 1));
        assert_eq!(recovered.entries, vec![entry(0, 4, 1), entry(1, 5, 2)]);
    }

    #[test]
    fn a_damaged_newest_snapshot_falls_back_to_the_previous_one_with_every_entry_after_it() {
        let storage = FaultStorage::new(5);
        let (mut store, _) = open(&storage);
        let snapshot_at = |slot: u64| SnapshotData {
            slot,
            last_timestamp_ns: slot,
            bytes: Bytes::from(vec![u8::try_from(slot).unwrap(); 4]),
        };
        store
            .append_entries(&(0..20).map(|slot| entry(slot, 1, 1)).collect::<Vec<_>>())
            .unwrap();
        store.write_snapshot(&snapshot_at(10)).unwrap();
        store
            .append_entries(&(20..40).map(|slot| entry(slot, 1, 2)).collect::<Vec<_>>())
            .unwrap();
        store.write_snapshot(&snapshot_at(30)).unwrap();
        store.sync().unwrap();
        // Snapshot files sort by name in lsn order; the newest is the last one.
        let newest = storage
            .list()
            .unwrap()
            .into_iter()
            .filter(|name| name.starts_with("snap-"))
            .max()
            .unwrap();
        assert!(storage.flip_bit(&newest, 40, 3));
        let (_store, recovered) = open(&storage);
        assert_eq!(recovered.snapshot, Some(snapshot_at(10)));
        let slots: Vec<u64> = recovered.entries.iter().map(|e| e.slot).collect();
        assert_eq!(slots, (10..40).collect::<Vec<_>>());
    }

    #[test]
    fn a_snapshot_compacts_below_itself_but_keeps_live_entries_above() {
        let storage = FaultStorage::new(4);
        let (mut store, _) = open(&storage);
        // Slot 30 is accepted early (out of order), then slots 0..20 arrive.
        store.append_entries(&[entry(30, 1, 9)]).unwrap();
        let early: Vec<SlotEntry> = (0..20).map(|slot| entry(slot, 1, 1)).collect();
        store.append_entries(&early).unwrap();
        store.sync().unwrap();
        let snapshot = SnapshotData {
            slot: 10,
            last_timestamp_ns: 9,
            bytes: Bytes::from_static(b"state"),
        };
        store.write_snapshot(&snapshot).unwrap();
        storage.crash();
        let (_store, recovered) = open(&storage);
        assert_eq!(recovered.snapshot, Some(snapshot));
        let slots: Vec<u64> = recovered.entries.iter().map(|e| e.slot).collect();
        let expected: Vec<u64> = (10..20).chain([30]).collect();
        assert_eq!(slots, expected);
    }
}
