//! Fault injection: crashes and restarts (checked against what was fsynced), power loss,
//! pauses, partitions, and the heal after which liveness is checked.

use ledger_wal::{Storage, WalOptions};

use crate::ballot::ReplicaId;
use crate::log_store::LogStore;
use crate::replica::Replica;
use crate::sim::cluster::{Event, FAULT_STEP_US, Simulator, sim_config};
use crate::sim::machine::SimStateMachine;
use crate::sim::swarm::FaultProfile;

/// The simulated disks' log options: small segments, so compaction happens in short runs.
pub(crate) fn wal_options() -> WalOptions {
    WalOptions {
        segment_size_bytes_max: 4096,
        ..WalOptions::default()
    }
}

impl<M: SimStateMachine> Simulator<M> {
    /// Stops a replica: memory gone, un-fsynced writes lost or torn at random.
    pub fn crash(&mut self, index: usize) {
        self.stats.crashes += 1;
        self.trace.word(0xC0DE_0000 | index as u64);
        let node = &mut self.nodes[index];
        node.replica = None;
        node.store = None;
        node.incarnation += 1;
        node.disk_queue.clear();
        node.disk_free_us = self.now_us;
        node.paused_until_us = 0;
        node.storage.crash_random();
        self.pending.replica_crashed(index as ReplicaId);
    }

    /// Restarts a stopped replica from its disk and checks the recovery against what it had
    /// fsynced.
    ///
    /// # Panics
    ///
    /// If the replica is running.
    ///
    /// # Errors
    ///
    /// A description if recovery fails or lost fsynced state.
    pub fn restart(&mut self, index: usize) -> Result<(), String> {
        assert!(!self.is_live(index));
        let replica_count = self.nodes.len();
        let node = &mut self.nodes[index];
        if node.disk_lost {
            return Ok(());
        }
        let storage = node.storage.clone();
        let (store, recovered) = match LogStore::open(storage.clone(), storage, wal_options()) {
            Ok(opened) => opened,
            Err(error) if node.bit_flipped => {
                // The typed error a flipped bit must cause: the disk is lost and the replica
                // stays down for good (it would otherwise rejoin with amnesia).
                // Its mirror stays: what it fsynced before still counts for the acks of
                // entries chosen with it.
                node.disk_lost = true;
                self.stats.disk_losses += 1;
                self.trace.word(0xD15C_0000 | index as u64);
                self.trace.bytes(error.to_string().as_bytes());
                return Ok(());
            }
            Err(error) => return Err(format!("I8: replica {index} cannot recover: {error}")),
        };
        if let Err(error) = node.mirror.check_recovered(&recovered) {
            let flipped = if node.bit_flipped {
                " (after a bit flip at rest that recovery did not report)"
            } else {
                ""
            };
            return Err(format!("{error}{flipped}"));
        }
        node.bit_flipped = false;
        let mut config = sim_config(index as ReplicaId, replica_count);
        if let Some(hook) = self.options.config_hook {
            hook(&mut config);
        }
        let seed = self.options.seed ^ (node.incarnation << 32) ^ index as u64;
        let replica = Replica::new(config, recovered, M::default(), seed)
            .map_err(|error| format!("replica {index} cannot start: {error}"))?;
        node.applied_seen = replica.applied_slot();
        node.commit_seen = replica.commit_slot();
        let applied_slot = replica.applied_slot();
        let digest = replica.state_machine().state_digest();
        node.replica = Some(replica);
        node.store = Some(store);
        let incarnation = node.incarnation;
        if applied_slot > 0 {
            self.digests
                .observe(index as ReplicaId, applied_slot, digest)?;
        }
        let first_tick_us = self.now_us + self.random.range(1, 10_000);
        self.schedule(first_tick_us, Event::Tick(index), incarnation);
        self.trace.word(0x5EA7_0000 | index as u64);
        Ok(())
    }

    pub(crate) fn on_fault(&mut self) -> Result<(), String> {
        if self.now_us + FAULT_STEP_US < self.options.heal_us {
            self.schedule(self.now_us + FAULT_STEP_US, Event::Fault, 0);
        }
        let profile = self.options.profile.clone();
        let count = self.nodes.len();
        if self.random.chance(profile.crash_permille) {
            let leader = self.leader().filter(|_| self.random.chance(500));
            let index = leader.unwrap_or_else(|| self.random.index(count));
            if self.is_live(index) {
                self.crash(index);
            }
        }
        if self.random.chance(profile.restart_permille) {
            let index = self.random.index(count);
            if !self.is_live(index) {
                self.restart(index)?;
            }
        }
        if self.random.chance(profile.crash_all_permille) {
            self.stats.power_losses += 1;
            for index in 0..count {
                if self.is_live(index) {
                    self.crash(index);
                }
            }
        }
        if self.random.chance(profile.pause_permille) {
            // Half the pauses hit the leader: it wakes believing it still leads.
            let leader = self.leader().filter(|_| self.random.chance(500));
            let index = leader.unwrap_or_else(|| self.random.index(count));
            if self.is_live(index) {
                self.stats.pauses += 1;
                self.nodes[index].paused_until_us =
                    self.now_us + self.random.range(100_000, 1_000_000);
            }
        }
        if self.random.chance(profile.bit_flip_permille) {
            self.flip_bit_at_rest();
        }
        self.on_fault_partition(&profile);
        Ok(())
    }

    /// Flips one random bit of one random file of a replica's disk, at rest. Only a minority
    /// of the replicas ever get one, so a majority keeps good disks.
    fn flip_bit_at_rest(&mut self) {
        let count = self.nodes.len();
        let damaged = self
            .nodes
            .iter()
            .filter(|node| node.bit_flipped || node.disk_lost)
            .count();
        let index = self.random.index(count);
        let node = &self.nodes[index];
        if node.disk_lost || (!node.bit_flipped && damaged >= (count - 1) / 2) {
            return;
        }
        let storage = node.storage.clone();
        let mut files: Vec<(String, u64)> = storage
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|name| storage.len(&name).ok().map(|len| (name, len)))
            .filter(|(_, len)| *len > 0)
            .collect();
        files.sort();
        // Known gaps of ledger-wal, left out (reported, not fixed here): a flip in the newest
        // segment can land in its last record, which recovery cannot tell from a torn write
        // and truncates; a flipped snapshot file is dropped silently (recovery falls back to
        // no snapshot). Older segments and the promise file must give a typed error.
        let newest_segment = files
            .iter()
            .filter(|(name, _)| name.starts_with("wal-"))
            .map(|(name, _)| name.clone())
            .max();
        let is_excluded =
            |name: &String| name.starts_with("snap-") || Some(name) == newest_segment.as_ref();
        files.retain(|(name, _)| !is_excluded(name));
        if files.is_empty() {
            return;
        }
        let (name, len) = files[self.random.index(files.len())].clone();
        let offset = self.random.range(0, len - 1);
        let bit = (self.random.next_u64() % 8) as u8;
        if storage.flip_bit(&name, offset, bit) {
            self.stats.bit_flips += 1;
            self.nodes[index].bit_flipped = true;
            self.trace.word(0xF11B_0000 | index as u64);
        }
    }

    fn on_fault_partition(&mut self, profile: &FaultProfile) {
        let partitioned = (0..self.nodes.len())
            .any(|from| (0..self.nodes.len()).any(|to| self.network.is_blocked(from, to)));
        if partitioned && profile.flapping {
            self.network.heal();
        } else if self.random.chance(profile.partition_permille) {
            if partitioned {
                self.network.heal();
            } else {
                self.stats.partitions += 1;
                let kind = self.network.partition(&mut self.random);
                self.trace.bytes(kind.as_bytes());
            }
        }
    }

    pub(crate) fn on_heal(&mut self) -> Result<(), String> {
        self.healed = true;
        self.network.heal();
        self.network.loss_permille = 0;
        self.network.duplicate_permille = 0;
        self.network.delay_spike_permille = 0;
        for index in 0..self.nodes.len() {
            self.nodes[index].paused_until_us = 0;
            if !self.is_live(index) {
                self.restart(index)?;
            }
        }
        Ok(())
    }
}
