//! `FaultStorage`: an in-memory `Storage` that injects the faults a real disk has.
//!
//! ```text
//!   append/truncate ──► current bytes ──sync(name)──► durable bytes
//!   create/rename/remove ──► current names ──sync_dir──► durable names
//!   crash ──► names := durable names; each file := durable bytes + the pending writes the
//!             crash lets through (none, a chosen subset, the last one torn at a byte)
//! ```
//!
//! Faults: a crash (`crash`, `crash_with`, `crash_random`), an operation budget that stops the
//! "machine" after n mutating operations (`set_operation_budget`, to crash at every boundary of a
//! workload), bit flips at rest (`flip_bit`), a failing fsync (`fail_next_sync`) and a full disk
//! (`set_disk_limit`). Everything is deterministic: the only randomness is a seeded generator,
//! and all maps are ordered, so one seed replays one trace (I12).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::Storage;

/// What a crash does to one pending (written but not fsynced) write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingFate {
    /// The write never reached the disk.
    Lost,
    /// The whole write reached the disk.
    Persisted,
    /// Only the first `keep_bytes` bytes of the write reached the disk.
    Torn {
        /// How many leading bytes survive (clamped to the write's length).
        keep_bytes: u64,
    },
}

/// A pending write, as shown to the fate chooser of `FaultStorage::crash_with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWrite {
    /// The file written.
    pub file: String,
    /// Global order of the operation (higher is later); the largest is the in-flight write.
    pub sequence: u64,
    /// Offset of the write in the file.
    pub offset_bytes: u64,
    /// Length of the write (0 for a truncate).
    pub size_bytes: u64,
    /// True if this is a truncate rather than a write.
    pub is_truncate: bool,
}

#[derive(Debug, Clone)]
enum Operation {
    Write {
        sequence: u64,
        offset_bytes: u64,
        bytes: Vec<u8>,
    },
    Truncate {
        sequence: u64,
        len_bytes: u64,
    },
}

#[derive(Debug, Default, Clone)]
struct FileData {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Operation>,
}

#[derive(Debug, Clone)]
struct State {
    random_next: u64,
    files: BTreeMap<u64, FileData>,
    inode_next: u64,
    names: BTreeMap<String, u64>,
    names_durable: BTreeMap<String, u64>,
    sequence_next: u64,
    operation_count: u64,
    operation_budget: Option<u64>,
    sync_failures_pending: u32,
    disk_limit_bytes: Option<u64>,
    sync_count: u64,
}

/// An in-memory, fault-injecting `Storage`. `Clone` gives another handle to the same disk.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ledger_wal::{FaultStorage, Storage};
/// let storage = FaultStorage::new(7);
/// storage.create("a")?;
/// storage.sync_dir()?;
/// storage.append("a", b"durable")?;
/// storage.sync("a")?;
/// storage.append("a", b" lost")?;
/// storage.crash();
/// assert_eq!(storage.contents("a").as_deref(), Some(&b"durable"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FaultStorage {
    state: Arc<Mutex<State>>,
}

fn stopped_error() -> io::Error {
    io::Error::other("fault storage: operation budget exhausted (simulated power loss)")
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("fault storage: no file {name}"),
    )
}

impl State {
    fn next_random(&mut self) -> u64 {
        // splitmix64: tiny, seeded, good enough to choose fates.
        self.random_next = self.random_next.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random_next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Counts one mutating operation, refusing it once the budget is spent.
    fn begin_operation(&mut self) -> io::Result<u64> {
        if let Some(budget) = self.operation_budget {
            if self.operation_count >= budget {
                return Err(stopped_error());
            }
        }
        self.operation_count += 1;
        let sequence = self.sequence_next;
        self.sequence_next += 1;
        Ok(sequence)
    }

    fn file_mut(&mut self, name: &str) -> io::Result<&mut FileData> {
        let inode = *self.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(self
            .files
            .get_mut(&inode)
            .expect("every name points at a file"))
    }

    fn used_bytes(&self) -> u64 {
        let live = self.names.values().chain(self.names_durable.values());
        let mut inodes: Vec<u64> = live.copied().collect();
        inodes.sort_unstable();
        inodes.dedup();
        inodes
            .iter()
            .map(|inode| self.files[inode].current.len() as u64)
            .sum()
    }

    fn take_sync_failure(&mut self) -> io::Result<()> {
        if self.sync_failures_pending > 0 {
            self.sync_failures_pending -= 1;
            return Err(io::Error::other("fault storage: injected fsync failure"));
        }
        Ok(())
    }
}

impl FileData {
    fn apply_to(bytes: &mut Vec<u8>, operation: &Operation, fate: PendingFate) {
        match (operation, fate) {
            (_, PendingFate::Lost) => {}
            (Operation::Truncate { len_bytes, .. }, _) => bytes.truncate(*len_bytes as usize),
            (
                Operation::Write {
                    offset_bytes,
                    bytes: written,
                    ..
                },
                fate,
            ) => {
                let keep = match fate {
                    PendingFate::Torn { keep_bytes } => written.len().min(keep_bytes as usize),
                    _ => written.len(),
                };
                let offset = *offset_bytes as usize;
                if bytes.len() < offset + keep {
                    bytes.resize(offset + keep, 0);
                }
                bytes[offset..offset + keep].copy_from_slice(&written[..keep]);
            }
        }
    }
}

impl FaultStorage {
    /// A new empty disk whose random choices are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let state = State {
            random_next: seed,
            files: BTreeMap::new(),
            inode_next: 1,
            names: BTreeMap::new(),
            names_durable: BTreeMap::new(),
            sequence_next: 0,
            operation_count: 0,
            operation_budget: None,
            sync_failures_pending: 0,
            disk_limit_bytes: None,
            sync_count: 0,
        };
        FaultStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Simulates power loss: every name and byte not made durable is lost. Clears the budget.
    /// A `Wal` or `MetaFile` that was using this storage must be dropped and reopened: its
    /// in-memory state describes the machine before the crash.
    pub fn crash(&self) {
        self.crash_with(|_| PendingFate::Lost);
    }

    /// Simulates power loss, letting `fate` decide for each pending write (in file order) how
    /// much of it reached the disk. A lost write followed by a persisted one leaves a hole of
    /// zeros, as a page cache writing back out of order would. Names not made durable by
    /// `sync_dir` are lost. Clears the operation budget.
    pub fn crash_with(&self, mut fate: impl FnMut(&PendingWrite) -> PendingFate) {
        let mut state = self.state.lock();
        let names = state.names_durable.clone();
        let mut files = BTreeMap::new();
        for (name, inode) in &names {
            let data = &state.files[inode];
            let mut bytes = data.durable.clone();
            for operation in &data.pending {
                let info = describe(name, operation);
                FileData::apply_to(&mut bytes, operation, fate(&info));
            }
            let file = FileData {
                durable: bytes.clone(),
                current: bytes,
                pending: Vec::new(),
            };
            files.insert(*inode, file);
        }
        state.files = files;
        state.names = names;
        state.operation_budget = None;
    }

    /// Simulates power loss with seeded random fates: each pending write is lost, persisted or
    /// torn at a random byte.
    pub fn crash_random(&self) {
        let mut fates = Vec::new();
        {
            let mut state = self.state.lock();
            for _ in 0..self.pending_writes_locked(&state).len() {
                let draw = state.next_random();
                fates.push(draw);
            }
        }
        let mut index = 0;
        self.crash_with(|write| {
            let draw = fates[index];
            index += 1;
            match draw % 3 {
                0 => PendingFate::Lost,
                1 => PendingFate::Persisted,
                _ => PendingFate::Torn {
                    keep_bytes: (draw >> 8) % (write.size_bytes + 1),
                },
            }
        });
    }

    fn pending_writes_locked(&self, state: &State) -> Vec<PendingWrite> {
        let _ = self;
        let mut writes = Vec::new();
        for (name, inode) in &state.names_durable {
            for operation in &state.files[inode].pending {
                writes.push(describe(name, operation));
            }
        }
        writes
    }

    /// The pending writes a crash now would decide about (files whose names are durable), in
    /// the order `crash_with` visits them.
    pub fn pending_writes(&self) -> Vec<PendingWrite> {
        let state = self.state.lock();
        self.pending_writes_locked(&state)
    }

    /// After `operations` more mutating operations (`create`, `append`, `sync`, `truncate`,
    /// `remove`, `rename`, `sync_dir`), every further one fails as if the machine had stopped. `None` removes
    /// the limit.
    pub fn set_operation_budget(&self, operations: Option<u64>) {
        let mut state = self.state.lock();
        state.operation_budget = operations.map(|count| state.operation_count + count);
    }

    /// How many mutating operations have run so far.
    pub fn operation_count(&self) -> u64 {
        self.state.lock().operation_count
    }

    /// How many successful `sync` and `sync_dir` calls have run so far.
    pub fn sync_count(&self) -> u64 {
        self.state.lock().sync_count
    }

    /// Makes the next `sync` or `sync_dir` fail (its data stays un-durable).
    pub fn fail_next_sync(&self) {
        self.state.lock().sync_failures_pending += 1;
    }

    /// Limits the total bytes stored; an append past it writes what fits and then fails with
    /// `ErrorKind::StorageFull`. `None` removes the limit.
    pub fn set_disk_limit(&self, limit_bytes: Option<u64>) {
        self.state.lock().disk_limit_bytes = limit_bytes;
    }

    /// Flips bit `bit % 8` of byte `byte_offset` of `name`, at rest (in both the current and
    /// the durable bytes). Returns false if there is no such byte.
    pub fn flip_bit(&self, name: &str, byte_offset: u64, bit: u8) -> bool {
        let mut state = self.state.lock();
        let Ok(file) = state.file_mut(name) else {
            return false;
        };
        let offset = byte_offset as usize;
        let mut flipped = false;
        for bytes in [&mut file.current, &mut file.durable] {
            if let Some(byte) = bytes.get_mut(offset) {
                *byte ^= 1 << (bit % 8);
                flipped = true;
            }
        }
        flipped
    }

    /// A deep copy of this disk (a new, independent disk in the same state), so one state can
    /// be crashed several ways.
    #[must_use]
    pub fn fork(&self) -> FaultStorage {
        FaultStorage {
            state: Arc::new(Mutex::new(self.state.lock().clone())),
        }
    }

    /// Overwrites bytes of `name` at rest (current and durable), extending it with zeros if
    /// needed: hostile or damaged content for tests. Returns false if there is no such file.
    pub fn overwrite(&self, name: &str, offset_bytes: u64, bytes: &[u8]) -> bool {
        let mut state = self.state.lock();
        let Ok(file) = state.file_mut(name) else {
            return false;
        };
        let write = Operation::Write {
            sequence: 0,
            offset_bytes,
            bytes: bytes.to_vec(),
        };
        FileData::apply_to(&mut file.current, &write, PendingFate::Persisted);
        FileData::apply_to(&mut file.durable, &write, PendingFate::Persisted);
        true
    }

    /// The current bytes of `name`, if it exists.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let mut state = self.state.lock();
        state.file_mut(name).ok().map(|file| file.current.clone())
    }
}

fn describe(name: &str, operation: &Operation) -> PendingWrite {
    match operation {
        Operation::Write {
            sequence,
            offset_bytes,
            bytes,
        } => PendingWrite {
            file: name.to_string(),
            sequence: *sequence,
            offset_bytes: *offset_bytes,
            size_bytes: bytes.len() as u64,
            is_truncate: false,
        },
        Operation::Truncate {
            sequence,
            len_bytes,
        } => PendingWrite {
            file: name.to_string(),
            sequence: *sequence,
            offset_bytes: *len_bytes,
            size_bytes: 0,
            is_truncate: true,
        },
    }
}

impl Storage for FaultStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().names.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin_operation()?;
        let inode = state.inode_next;
        state.inode_next += 1;
        state.files.insert(inode, FileData::default());
        state.names.insert(name.to_string(), inode);
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let sequence = state.begin_operation()?;
        let room = state
            .disk_limit_bytes
            .map(|limit| limit.saturating_sub(state.used_bytes()));
        let fits = room.map_or(bytes.len(), |room| bytes.len().min(room as usize));
        let file = state.file_mut(name)?;
        let offset_bytes = file.current.len() as u64;
        file.current.extend_from_slice(&bytes[..fits]);
        if fits > 0 {
            let bytes = bytes[..fits].to_vec();
            file.pending.push(Operation::Write {
                sequence,
                offset_bytes,
                bytes,
            });
        }
        if fits < bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "fault storage: disk full",
            ));
        }
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let file = state.file_mut(name)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(buffer.len());
        if end > file.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "fault storage: short read",
            ));
        }
        buffer.copy_from_slice(&file.current[start..end]);
        Ok(())
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        let mut state = self.state.lock();
        Ok(state.file_mut(name)?.current.len() as u64)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin_operation()?;
        state.file_mut(name)?;
        state.take_sync_failure()?;
        state.sync_count += 1;
        let file = state.file_mut(name)?;
        let pending = std::mem::take(&mut file.pending);
        for operation in &pending {
            FileData::apply_to(&mut file.durable, operation, PendingFate::Persisted);
        }
        assert!(
            file.durable == file.current,
            "after a sync the durable bytes are the current"
        );
        Ok(())
    }

    fn truncate(&self, name: &str, len_bytes: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        let sequence = state.begin_operation()?;
        let file = state.file_mut(name)?;
        file.current.truncate(len_bytes as usize);
        file.pending.push(Operation::Truncate {
            sequence,
            len_bytes,
        });
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin_operation()?;
        state.names.remove(name).ok_or_else(|| not_found(name))?;
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin_operation()?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_string(), inode);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.begin_operation()?;
        state.take_sync_failure()?;
        state.sync_count += 1;
        state.names_durable = state.names.clone();
        let live: Vec<u64> = state.names.values().copied().collect();
        state.files.retain(|inode, _| live.contains(inode));
        Ok(())
    }
}
