//! Swarm testing: each seed draws its own fault probabilities, so the seeds together cover
//! calm runs, lossy runs, crash storms and partitions, not one average mix.

use std::fmt;

use crate::sim::rng::SimRng;

/// The faults and load of one seed. Probabilities are per mille.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultProfile {
    /// 3 or 5.
    pub replica_count: usize,
    /// Chance a message is lost (0–300 ‰).
    pub loss_permille: u64,
    /// Chance a message is held up for 0.1–1 s (a delay spike: it arrives long after newer
    /// messages, carrying stale ballots).
    pub delay_spike_permille: u64,
    /// Chance a message is delivered twice.
    pub duplicate_permille: u64,
    /// The smallest one-way network delay.
    pub delay_min_us: u64,
    /// The largest one-way network delay (messages overtake each other in between).
    pub delay_max_us: u64,
    /// The smallest fsync latency.
    pub fsync_min_us: u64,
    /// The largest fsync latency.
    pub fsync_max_us: u64,
    /// Per fault step (every 100 ms): chance to change the partition.
    pub partition_permille: u64,
    /// Whether partitions flap: re-drawn at every fault step while one is active.
    pub flapping: bool,
    /// Per fault step: chance to crash one replica.
    pub crash_permille: u64,
    /// Per fault step: chance to restart one crashed replica.
    pub restart_permille: u64,
    /// Per fault step: chance of a power loss of every replica at once.
    pub crash_all_permille: u64,
    /// Per fault step: chance to pause one replica for 0.1–1 s.
    pub pause_permille: u64,
    /// Per persist: chance the machine stops in the middle (a torn write).
    pub torn_write_permille: u64,
    /// Per persist: chance the fsync fails (the replica stops).
    pub fsync_error_permille: u64,
    /// Mean interval between client requests.
    pub client_interval_us: u64,
    /// Per client request: chance it is a linearizable read.
    pub read_permille: u64,
    /// Per fault step: chance to flip one bit at rest on a replica's disk (at most a
    /// minority of the replicas ever get one).
    pub bit_flip_permille: u64,
}

impl FaultProfile {
    /// Draws a profile from the seed's generator.
    pub fn draw(random: &mut SimRng) -> Self {
        let calm = random.chance(150);
        let scale = |random: &mut SimRng, max: u64| if calm { 0 } else { random.range(0, max) };
        let delay_min_us = random.range(100, 2_000);
        let fsync_min_us = random.range(100, 2_000);
        FaultProfile {
            replica_count: if random.chance(500) { 3 } else { 5 },
            loss_permille: scale(random, 300),
            delay_spike_permille: scale(random, 20),
            duplicate_permille: scale(random, 100),
            delay_min_us,
            delay_max_us: delay_min_us + random.range(0, 10_000),
            fsync_min_us,
            fsync_max_us: fsync_min_us + random.range(0, 5_000),
            partition_permille: scale(random, 150),
            flapping: random.chance(300),
            crash_permille: scale(random, 100),
            restart_permille: random.range(100, 600),
            crash_all_permille: scale(random, 15),
            pause_permille: scale(random, 80),
            torn_write_permille: scale(random, 10),
            fsync_error_permille: scale(random, 5),
            client_interval_us: random.range(2_000, 40_000),
            read_permille: random.range(0, 300),
            bit_flip_permille: scale(random, 10),
        }
    }

    /// A profile without faults: only network and disk latency.
    pub fn calm(replica_count: usize) -> Self {
        FaultProfile {
            replica_count,
            loss_permille: 0,
            delay_spike_permille: 0,
            duplicate_permille: 0,
            delay_min_us: 500,
            delay_max_us: 2_000,
            fsync_min_us: 500,
            fsync_max_us: 2_000,
            partition_permille: 0,
            flapping: false,
            crash_permille: 0,
            restart_permille: 0,
            crash_all_permille: 0,
            pause_permille: 0,
            torn_write_permille: 0,
            fsync_error_permille: 0,
            client_interval_us: 10_000,
            read_permille: 100,
            bit_flip_permille: 0,
        }
    }
}

impl fmt::Display for FaultProfile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "replicas={} loss={}‰ spikes={}‰ dup={}‰ delay={}-{}us fsync={}-{}us partition={}‰{} \
             crash={}‰ restart={}‰ crash_all={}‰ pause={}‰ torn={}‰ fsync_error={}‰ \
             client_interval={}us reads={}‰ bit_flip={}‰",
            self.replica_count,
            self.loss_permille,
            self.delay_spike_permille,
            self.duplicate_permille,
            self.delay_min_us,
            self.delay_max_us,
            self.fsync_min_us,
            self.fsync_max_us,
            self.partition_permille,
            if self.flapping { " flapping" } else { "" },
            self.crash_permille,
            self.restart_permille,
            self.crash_all_permille,
            self.pause_permille,
            self.torn_write_permille,
            self.fsync_error_permille,
            self.client_interval_us,
            self.read_permille,
            self.bit_flip_permille,
        )
    }
}
