//! Replica configuration: every limit is a `_max` constant or field (STYLE §1), every duration
//! is counted in ticks of `tick_interval_ms` (STYLE §3).

use crate::ballot::ReplicaId;
use crate::error::{PaxosError, Result};

/// The largest group size (a vote set is a `u32` bit set; 3 and 5 are the intended sizes).
pub const REPLICA_COUNT_MAX: usize = 31;

/// The configuration of one replica of a group of `replica_count`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica, in `0..replica_count`.
    pub replica_id: ReplicaId,
    /// The number of replicas in the group (1, 3 or 5 in practice).
    pub replica_count: usize,
    /// How much driver time one `tick()` stands for.
    pub tick_interval_ms: u64,
    /// The leader sends a `Commit` heartbeat every this many ticks.
    pub heartbeat_interval_ticks: u64,
    /// The smallest randomized election timeout. A follower that heard from a live leader
    /// within this many ticks ignores a usurper's `Prepare` (leader stickiness).
    pub election_timeout_min_ticks: u64,
    /// The largest randomized election timeout (inclusive). A leader that has not heard from a
    /// majority within this many ticks steps down.
    pub election_timeout_max_ticks: u64,
    /// The most slots a leader has in flight (proposed, not yet chosen).
    pub pipeline_slots_max: u64,
    /// The most client commands in one entry.
    pub batch_count_max: usize,
    /// The most encoded bytes in one entry (a single larger command still gets its own entry).
    pub batch_size_bytes_max: usize,
    /// The most client requests queued at the leader before `propose` answers `Busy`.
    pub request_queue_max: usize,
    /// The most linearizable reads waiting at the leader before `read` answers `Busy`.
    pub read_queue_max: usize,
    /// Take a snapshot (and let the driver compact the log) every this many applied slots.
    pub snapshot_interval_slots: u64,
    /// The most bytes in one `SnapshotChunk`.
    pub snapshot_chunk_size_bytes_max: usize,
    /// The most chosen entries re-sent to a lagging follower per `CommitAck`.
    pub catch_up_slots_max: u64,
    /// An in-flight slot not chosen after this many ticks has its `Accept` re-sent.
    pub accept_retry_ticks: u64,
}

impl Config {
    /// The defaults for replica `replica_id` of `replica_count`: 10 ms ticks, a 50 ms heartbeat,
    /// election timeouts randomized over 150–300 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = ledger_paxos::Config::new(0, 3);
    /// assert!(config.validate().is_ok());
    /// assert_eq!(config.heartbeat_interval_ticks * config.tick_interval_ms, 50);
    /// ```
    pub fn new(replica_id: ReplicaId, replica_count: usize) -> Self {
        Config {
            replica_id,
            replica_count,
            tick_interval_ms: 10,
            heartbeat_interval_ticks: 5,
            election_timeout_min_ticks: 15,
            election_timeout_max_ticks: 30,
            pipeline_slots_max: 32,
            batch_count_max: 8_190,
            batch_size_bytes_max: 1 << 20,
            request_queue_max: 65_536,
            read_queue_max: 4_096,
            snapshot_interval_slots: 4_096,
            snapshot_chunk_size_bytes_max: 64 << 10,
            catch_up_slots_max: 64,
            accept_retry_ticks: 10,
        }
    }

    /// The number of replicas that form a majority.
    pub fn majority(&self) -> usize {
        self.replica_count / 2 + 1
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`PaxosError::InvalidConfig`] naming the first rule broken.
    pub fn validate(&self) -> Result<()> {
        let rules: [(bool, &'static str); 10] = [
            (self.replica_count >= 1, "replica_count must be at least 1"),
            (
                self.replica_count <= REPLICA_COUNT_MAX,
                "replica_count above REPLICA_COUNT_MAX",
            ),
            (
                (self.replica_id as usize) < self.replica_count,
                "replica_id out of range",
            ),
            (
                self.tick_interval_ms >= 1,
                "tick_interval_ms must be at least 1",
            ),
            (
                self.heartbeat_interval_ticks >= 1,
                "heartbeat_interval_ticks must be at least 1",
            ),
            (
                self.election_timeout_min_ticks > self.heartbeat_interval_ticks,
                "election_timeout_min_ticks must exceed heartbeat_interval_ticks",
            ),
            (
                self.election_timeout_max_ticks >= self.election_timeout_min_ticks,
                "election_timeout_max_ticks below election_timeout_min_ticks",
            ),
            (
                self.pipeline_slots_max >= 1,
                "pipeline_slots_max must be at least 1",
            ),
            (
                self.batch_count_max >= 1 && self.batch_size_bytes_max >= 1,
                "batch limits must be at least 1",
            ),
            (
                self.snapshot_interval_slots >= 1
                    && self.snapshot_chunk_size_bytes_max >= 1
                    && self.catch_up_slots_max >= 1
                    && self.accept_retry_ticks >= 1
                    && self.request_queue_max >= 1
                    && self.read_queue_max >= 1,
                "snapshot, catch-up, retry and queue limits must be at least 1",
            ),
        ];
        match rules.iter().find(|(ok, _)| !ok) {
            Some((_, reason)) => Err(PaxosError::InvalidConfig { reason }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_broken_rule() {
        assert_eq!(Config::new(0, 3).majority(), 2);
        assert_eq!(Config::new(0, 5).majority(), 3);
        let mut config = Config::new(3, 3);
        assert_eq!(
            config.validate(),
            Err(PaxosError::InvalidConfig {
                reason: "replica_id out of range"
            })
        );
        config.replica_id = 0;
        config.election_timeout_max_ticks = 2;
        assert!(config.validate().is_err());
    }
}
