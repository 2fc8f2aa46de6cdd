//! Shared by the driver tests: temporary directories, an append-only list state machine that
//! lets a test watch every replica's applied log, and leader-following helpers.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "test support: waits for liveness on the wall clock and fails loudly"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ledger_paxos::driver::Group;
use ledger_paxos::{Config, PaxosError, StateMachine};
use parking_lot::Mutex;

/// Generous: only liveness depends on it, never a speed assertion.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ledger-paxos-{name}-{}-{unique}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn replica_dirs(&self, count: usize) -> Vec<PathBuf> {
        (0..count)
            .map(|index| self.0.join(format!("replica-{index}")))
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one state machine instance applied: `(slot, command)` in apply order.
pub type Applied = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// An append-only list. `apply` answers the command's position in the list (u64 LE); `query`
/// answers the whole list, length-prefixed. Every instance registers its list with the
/// factory, in creation order, so a test can inspect each replica's applied log.
pub struct ListMachine {
    applied: Applied,
}

impl StateMachine for ListMachine {
    fn apply(&mut self, slot: u64, _timestamp_ns: u64, command: &[u8]) -> Bytes {
        let mut applied = self.applied.lock();
        applied.push((slot, Bytes::copy_from_slice(command)));
        Bytes::copy_from_slice(&(applied.len() as u64 - 1).to_le_bytes())
    }

    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::from(encode_list(&self.applied.lock()))
    }

    fn encode_snapshot(&self) -> Vec<u8> {
        encode_list(&self.applied.lock())
    }

    fn restore_snapshot(&mut self, bytes: &[u8]) -> ledger_paxos::Result<()> {
        let list = decode_list(bytes).ok_or(PaxosError::Snapshot { reason: "bad list" })?;
        *self.applied.lock() = list;
        Ok(())
    }
}

fn encode_list(list: &[(u64, Bytes)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (slot, command) in list {
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(&(command.len() as u32).to_le_bytes());
        out.extend_from_slice(command);
    }
    out
}

pub fn decode_list(mut bytes: &[u8]) -> Option<Vec<(u64, Bytes)>> {
    let mut list = Vec::new();
    while !bytes.is_empty() {
        let slot = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let size = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
        let command = Bytes::copy_from_slice(bytes.get(12..12 + size)?);
        list.push((slot, command));
        bytes = &bytes[12 + size..];
    }
    Some(list)
}

/// Makes `ListMachine`s and remembers each one's list, in creation order.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Vec<Applied>>>);

impl Registry {
    pub fn factory(&self) -> impl Fn() -> ListMachine + Send + Sync + 'static {
        let registry = self.clone();
        move || {
            let applied = Applied::default();
            registry.0.lock().push(Arc::clone(&applied));
            ListMachine { applied }
        }
    }

    /// The applied commands of the `creation`-th state machine made.
    pub fn commands(&self, creation: usize) -> Vec<Bytes> {
        let applied = Arc::clone(&self.0.lock()[creation]);
        applied
            .lock()
            .iter()
            .map(|(_, command)| command.clone())
            .collect()
    }

    pub fn created_count(&self) -> usize {
        self.0.lock().len()
    }
}

pub fn open_group(dirs: Vec<PathBuf>, registry: &Registry) -> Group {
    let replica_count = dirs.len();
    open_group_with(dirs, Config::new(0, replica_count), registry)
}

pub fn open_group_with(dirs: Vec<PathBuf>, config: Config, registry: &Registry) -> Group {
    Group::open(dirs, config, registry.factory()).unwrap()
}

/// Waits until some replica believes it leads.
pub fn wait_for_leader(group: &Group) -> usize {
    let start = Instant::now();
    loop {
        if let Some(leader) = group.leader() {
            return leader;
        }
        assert!(start.elapsed() < LIVENESS_TIMEOUT, "no leader elected");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether an error means "try again, maybe elsewhere" rather than a failure of the test.
pub fn is_retryable(error: &PaxosError) -> bool {
    matches!(
        error,
        PaxosError::NotLeader { .. }
            | PaxosError::Busy
            | PaxosError::Timeout
            | PaxosError::Shutdown
            | PaxosError::NotChosen { .. }
            | PaxosError::OutcomeUnknown { .. }
    )
}

/// Proposes `command` to whichever replica leads, following leader changes, until it is
/// acknowledged. A retried command may be applied twice (the list machine has no ids); tests
/// that count use unique commands and compare sets.
pub fn propose_to_leader(group: &Group, command: &Bytes) -> Bytes {
    let start = Instant::now();
    loop {
        let leader = wait_for_leader(group);
        match group.replica(leader).propose(command.clone(), CALL_TIMEOUT) {
            Ok(reply) => return reply,
            Err(error) => assert!(is_retryable(&error), "propose failed: {error}"),
        }
        assert!(
            start.elapsed() < LIVENESS_TIMEOUT,
            "command never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the leader's whole list (linearizable), following leader changes.
pub fn read_from_leader(group: &Group) -> Vec<Bytes> {
    let start = Instant::now();
    loop {
        let leader = wait_for_leader(group);
        match group.replica(leader).read(Bytes::new(), CALL_TIMEOUT) {
            Ok(bytes) => {
                let list = decode_list(&bytes).expect("the list decodes");
                return list.into_iter().map(|(_, command)| command).collect();
            }
            Err(error) => assert!(is_retryable(&error), "read failed: {error}"),
        }
        assert!(start.elapsed() < LIVENESS_TIMEOUT, "read never answered");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `condition` holds.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < LIVENESS_TIMEOUT,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn command(tag: &str, index: usize) -> Bytes {
    Bytes::from(format!("{tag}-{index}"))
}

impl Registry {
    /// The distinct slots whose commands the `creation`-th state machine applied.
    pub fn slots(&self, creation: usize) -> std::collections::BTreeSet<u64> {
        let applied = Arc::clone(&self.0.lock()[creation]);
        applied.lock().iter().map(|(slot, _)| *slot).collect()
    }
}
