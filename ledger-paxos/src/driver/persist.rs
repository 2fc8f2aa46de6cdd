//! The persist thread: group commits of queued readies, then the messages that waited for
//! them (I4).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam::channel::{Receiver, Sender};
use ledger_wal::Storage;
use parking_lot::Mutex;

use super::PERSIST_BATCH_READY_COUNT_MAX;
use crate::error::{PaxosError, Result};
use crate::log_store::LogStore;
use crate::message::{Message, SlotEntry};
use crate::ready::{Envelope, HardState, SnapshotData};
use crate::transport::{ChannelTransport, Transport};

/// One `Ready`'s persist work and the messages that wait for it.
pub(super) struct PersistJob {
    pub(super) ready_number: u64,
    pub(super) hard_state: Option<HardState>,
    pub(super) entries: Vec<SlotEntry>,
    pub(super) snapshot: Option<SnapshotData>,
    pub(super) messages: Vec<Envelope>,
}

/// What the persist thread reports to the replica thread. The replica thread learns of changes
/// through the doorbell channel, so neither thread ever blocks on the other's queue.
#[derive(Debug, Default)]
pub(super) struct PersistProgress {
    /// Every `Ready` up to this number is durable and its messages left.
    pub(super) durable_ready_number: AtomicU64,
    /// Set on a write or fsync failure; the persist thread has stopped.
    pub(super) failure: Mutex<Option<PaxosError>>,
    /// Set by a crash: write nothing more, send nothing more.
    pub(super) crashed: AtomicBool,
}

/// The persist thread: takes every job queued (up to [`PERSIST_BATCH_READY_COUNT_MAX`]),
/// persists them with one group commit, then lets their `messages_after_persist` leave (I4)
/// and reports the durable `Ready` number.
pub(super) fn persist_run<St: Storage>(
    mut store: LogStore<St>,
    jobs: &Receiver<PersistJob>,
    progress: &PersistProgress,
    doorbell: &Sender<()>,
    transport: &ChannelTransport<Message>,
) {
    let mut batch = Vec::with_capacity(PERSIST_BATCH_READY_COUNT_MAX);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < PERSIST_BATCH_READY_COUNT_MAX {
            let Ok(job) = jobs.try_recv() else { break };
            batch.push(job);
        }
        if progress.crashed.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = persist_batch(&mut store, &batch) {
            // Never retried: after a failed fsync the page cache may have dropped the data.
            *progress.failure.lock() = Some(error);
            let _ = doorbell.try_send(());
            return;
        }
        if progress.crashed.load(Ordering::Acquire) {
            return;
        }
        let last = batch.last().map_or(0, |job| job.ready_number);
        for job in batch.drain(..) {
            for envelope in job.messages {
                transport.send(envelope.to, envelope.message);
            }
        }
        progress.durable_ready_number.store(last, Ordering::Release);
        // A full doorbell already holds a wake-up; the replica thread reads the number itself.
        let _ = doorbell.try_send(());
    }
}

/// Persists a batch of readies in `Ready::number` order with one log sync for all of their
/// entries: hard state (its own atomic metadata write), entries, snapshot (which syncs the
/// entries before it first).
fn persist_batch<St: Storage>(store: &mut LogStore<St>, batch: &[PersistJob]) -> Result<()> {
    let mut unsynced = false;
    for job in batch {
        if let Some(hard_state) = job.hard_state {
            store.write_hard_state(hard_state)?;
        }
        if !job.entries.is_empty() {
            store.append_entries(&job.entries)?;
            unsynced = true;
        }
        if let Some(snapshot) = &job.snapshot {
            store.write_snapshot(snapshot)?;
            unsynced = false;
        }
    }
    if unsynced {
        store.sync()?;
    }
    Ok(())
}
