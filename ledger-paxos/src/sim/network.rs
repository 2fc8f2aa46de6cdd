//! The simulated network: loss, duplication, delay with reordering, and partitions that may
//! be one-way (a blocked link `from → to` says nothing about `to → from`).

use crate::sim::rng::SimRng;
use crate::sim::swarm::FaultProfile;

/// Links between replicas.
#[derive(Clone, Debug)]
pub struct Network {
    replica_count: usize,
    /// `blocked[from * replica_count + to]`: messages on that link are dropped.
    blocked: Vec<bool>,
    /// Loss while faults are active; 0 after the heal.
    pub loss_permille: u64,
    /// Duplication while faults are active; 0 after the heal.
    pub duplicate_permille: u64,
    /// Delay spikes while faults are active; 0 after the heal.
    pub delay_spike_permille: u64,
}

/// What the network does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fate {
    /// Dropped (loss or partition).
    Dropped,
    /// Delivered after these delays (one, or two when duplicated).
    Delivered {
        /// The first copy's delay.
        delay_us: u64,
        /// The duplicate's delay, if duplicated.
        duplicate_delay_us: Option<u64>,
    },
}

impl Network {
    /// A fully connected network with the profile's loss and duplication.
    pub fn new(profile: &FaultProfile) -> Self {
        let replica_count = profile.replica_count;
        Network {
            replica_count,
            blocked: vec![false; replica_count * replica_count],
            loss_permille: profile.loss_permille,
            duplicate_permille: profile.duplicate_permille,
            delay_spike_permille: profile.delay_spike_permille,
        }
    }

    /// Whether `from → to` is cut.
    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.blocked[from * self.replica_count + to]
    }

    /// Decides one message's fate.
    pub fn send(
        &self,
        random: &mut SimRng,
        profile: &FaultProfile,
        from: usize,
        to: usize,
    ) -> Fate {
        if self.is_blocked(from, to) || random.chance(self.loss_permille) {
            return Fate::Dropped;
        }
        let mut delay_us = random.range(profile.delay_min_us, profile.delay_max_us);
        // No draw without spikes, so calm runs (the failover measurement) keep their sequence.
        if self.delay_spike_permille > 0 && random.chance(self.delay_spike_permille) {
            delay_us += random.range(100_000, 1_000_000);
        }
        let duplicate_delay_us = random
            .chance(self.duplicate_permille)
            .then(|| random.range(profile.delay_min_us, profile.delay_max_us * 2));
        Fate::Delivered {
            delay_us,
            duplicate_delay_us,
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.blocked.fill(false);
    }

    /// Draws a new partition: a symmetric split, one isolated replica, or random one-way links.
    /// Returns a short description for the trace.
    pub fn partition(&mut self, random: &mut SimRng) -> &'static str {
        self.heal();
        let count = self.replica_count;
        match random.range(0, 2) {
            0 => {
                let side: Vec<bool> = (0..count).map(|_| random.chance(500)).collect();
                for from in 0..count {
                    for to in 0..count {
                        self.blocked[from * count + to] = side[from] != side[to];
                    }
                }
                "split"
            }
            1 => {
                let isolated = random.index(count);
                let inbound_only = random.chance(500);
                for other in 0..count {
                    self.blocked[isolated * count + other] = !inbound_only;
                    self.blocked[other * count + isolated] = true;
                }
                if inbound_only {
                    "deaf (sends, hears nothing)"
                } else {
                    "isolated"
                }
            }
            _ => {
                for link in 0..count * count {
                    self.blocked[link] = random.chance(250);
                }
                "one-way links"
            }
        }
    }
}
