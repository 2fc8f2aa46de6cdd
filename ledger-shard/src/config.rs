//! The configuration of a cluster: where it lives, how many shards and replicas, and timeouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, ShardError};

/// The most shards a cluster may have.
pub const SHARD_COUNT_MAX: usize = 1024;
/// The most events one call may carry, and one log entry (`TigerBeetle`'s batch limit).
pub const EVENTS_PER_CALL_MAX: usize = ledger_core::BATCH_EVENTS_MAX as usize;
/// The default request timeout (see [`ClusterConfig::request_timeout`]).
pub(crate) const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How a cluster is opened: `ClusterConfig::new(dir).replicas(3).shards(1)`.
///
/// Every setting has a default that suits one machine; timeouts are `Duration`s.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ledger_shard::ClusterConfig;
///
/// let config = ClusterConfig::new("/tmp/ledger")
///     .replicas(3)
///     .shards(2)
///     .request_timeout(Duration::from_secs(5));
/// assert_eq!(config.shard_count(), 2);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) dir: PathBuf,
    pub(crate) replica_count: usize,
    pub(crate) shard_count: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) attempt_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) election_timeout: Duration,
    pub(crate) proposers_per_shard: usize,
    pub(crate) fsync: bool,
    pub(crate) ledger_capacity: (usize, usize),
}

impl ClusterConfig {
    /// A configuration for a cluster in `dir`: 1 shard of 3 replicas, fsync on, a 10 s
    /// request timeout, 1 s per attempt, 20 ms heartbeats and an election timeout randomized
    /// over 100–200 ms (so a failover takes about 100–250 ms).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            replica_count: 3,
            shard_count: 1,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            attempt_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_millis(20),
            election_timeout: Duration::from_millis(100),
            proposers_per_shard: 4,
            fsync: true,
            ledger_capacity: (0, 0),
        }
    }

    /// Replicas per shard: 3 or 5 (1 is allowed for tests, without fault tolerance).
    #[must_use]
    pub fn replicas(mut self, replica_count: usize) -> Self {
        self.replica_count = replica_count;
        self
    }

    /// Number of shards; accounts are routed by `account_id % shards`.
    #[must_use]
    pub fn shards(mut self, shard_count: usize) -> Self {
        self.shard_count = shard_count;
        self
    }

    /// How long one call may take, retries across failovers included, before it returns
    /// [`ShardError::Timeout`] or [`ShardError::NoQuorum`].
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one attempt on one leader may take before the client retries the same ids
    /// (on the same or a new leader).
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The leader's heartbeat interval.
    #[must_use]
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// How long a follower waits without hearing from a leader before it starts an election;
    /// each replica randomizes its timeout between this and twice this.
    #[must_use]
    pub fn election_timeout(mut self, timeout: Duration) -> Self {
        self.election_timeout = timeout;
        self
    }

    /// How many log entries of one shard the client keeps in flight at once (pipelining);
    /// concurrent calls are packed into these entries.
    #[must_use]
    pub fn proposers_per_shard(mut self, count: usize) -> Self {
        self.proposers_per_shard = count;
        self
    }

    /// Whether the WAL fsyncs before acknowledging (on by default; off voids RPO = 0 and is
    /// only for measuring what the disk costs).
    #[must_use]
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sizes each replica's id indexes for this many accounts and transfers up front, so they
    /// never pause to double (a rehash of millions of ids stalls every replica at once) until
    /// the ledger outgrows them. Costs 16 bytes per id of memory per replica from the start.
    #[must_use]
    pub fn ledger_capacity(mut self, account_count_max: usize, transfer_count_max: usize) -> Self {
        self.ledger_capacity = (account_count_max, transfer_count_max);
        self
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replicas per shard.
    pub fn replica_count(&self) -> usize {
        self.replica_count
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The directory of one replica: `<dir>/shard-<s>/replica-<r>`.
    pub fn replica_dir(&self, shard: usize, replica: usize) -> PathBuf {
        self.dir
            .join(format!("shard-{shard}"))
            .join(format!("replica-{replica}"))
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ShardError::InvalidConfig`] naming the first bad setting.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(ShardError::InvalidConfig { reason });
        if !matches!(self.replica_count, 1 | 3 | 5) {
            return invalid(format!(
                "replicas must be 3 or 5 (or 1), not {}",
                self.replica_count
            ));
        }
        if self.shard_count == 0 || self.shard_count > SHARD_COUNT_MAX {
            return invalid(format!(
                "shards must be in 1..={SHARD_COUNT_MAX}, not {}",
                self.shard_count
            ));
        }
        if self.request_timeout.is_zero() || self.attempt_timeout.is_zero() {
            return invalid("timeouts must be positive".to_owned());
        }
        if self.heartbeat_interval.is_zero() || self.election_timeout <= self.heartbeat_interval {
            return invalid("election timeout must exceed a positive heartbeat interval".into());
        }
        if self.proposers_per_shard == 0 || self.proposers_per_shard > 64 {
            return invalid("proposers_per_shard must be in 1..=64".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_builder_sets_fields() {
        let config = ClusterConfig::new("/x").replicas(5).shards(4);
        assert!(config.validate().is_ok());
        assert_eq!(config.replica_count(), 5);
        assert_eq!(config.shard_count(), 4);
        assert_eq!(
            config.replica_dir(2, 1),
            PathBuf::from("/x/shard-2/replica-1")
        );
    }

    #[test]
    fn bad_settings_are_rejected_not_panics() {
        let base = ClusterConfig::new("/x");
        for config in [
            base.clone().replicas(2),
            base.clone().replicas(0),
            base.clone().shards(0),
            base.clone().shards(SHARD_COUNT_MAX + 1),
            base.clone().request_timeout(Duration::ZERO),
            base.clone().election_timeout(Duration::from_millis(1)),
            base.clone().proposers_per_shard(0),
        ] {
            assert!(matches!(
                config.validate(),
                Err(ShardError::InvalidConfig { .. })
            ));
        }
    }
}
