//! The one seam between the client machinery and consensus: a shard is anything that can say
//! who leads it, and take a proposal or a read at one replica.
//!
//! The real backend is a ledger-paxos [`Group`]; unit tests plug in a single in-process ledger
//! (`LocalBackend`) to test batching, splitting and retries without threads or disks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ledger_paxos::PaxosError;
use ledger_paxos::driver::Group;

/// One shard's consensus group, as the proposers see it.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The replica believed to lead, if any.
    fn leader(&self) -> Option<usize>;
    /// Proposes `command` at `replica`; blocks until it is applied there, or fails.
    fn propose(
        &self,
        replica: usize,
        command: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PaxosError>;
    /// A linearizable read at `replica` (read-index through the leader).
    fn read(&self, replica: usize, query: Bytes, timeout: Duration) -> Result<Bytes, PaxosError>;
}

/// The real backend: a Paxos group of ledger replicas.
pub(crate) struct GroupBackend {
    pub(crate) group: Arc<Group>,
}

impl Backend for GroupBackend {
    fn leader(&self) -> Option<usize> {
        self.group.leader()
    }

    fn propose(
        &self,
        replica: usize,
        command: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PaxosError> {
        self.group.replica(replica).propose(command, timeout)
    }

    fn read(&self, replica: usize, query: Bytes, timeout: Duration) -> Result<Bytes, PaxosError> {
        self.group.replica(replica).read(query, timeout)
    }
}

#[cfg(test)]
pub(crate) mod local {
    //! A single in-process ledger behind the backend trait, with injectable failures.

    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use bytes::Bytes;
    use ledger_paxos::{PaxosError, StateMachine};
    use parking_lot::Mutex;

    use super::{Backend, Duration};
    use crate::machine::LedgerMachine;

    /// One ledger, always led by replica 0; can "lose" replies after applying them.
    #[derive(Default)]
    pub(crate) struct LocalBackend {
        pub(crate) machine: Mutex<LedgerMachine>,
        pub(crate) slot: AtomicU64,
        /// The next this-many proposals apply but then report a timeout (a lost reply).
        pub(crate) lose_replies: AtomicUsize,
        /// Number of proposals (entries) seen.
        pub(crate) proposals: AtomicU64,
        /// How long each proposal takes, as a consensus round would.
        pub(crate) round: Duration,
    }

    impl Backend for LocalBackend {
        fn leader(&self) -> Option<usize> {
            Some(0)
        }

        fn propose(&self, _: usize, command: Bytes, _: Duration) -> Result<Bytes, PaxosError> {
            self.proposals.fetch_add(1, Ordering::SeqCst);
            let _ = crossbeam::channel::never::<()>().recv_timeout(self.round);
            let mut machine = self.machine.lock();
            let slot = self.slot.fetch_add(1, Ordering::SeqCst) + 1;
            let reply = machine.apply(slot, slot * 1000, &command);
            drop(machine);
            let lose = self
                .lose_replies
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if lose {
                Err(PaxosError::Timeout)
            } else {
                Ok(reply)
            }
        }

        fn read(&self, _: usize, query: Bytes, _: Duration) -> Result<Bytes, PaxosError> {
            Ok(self.machine.lock().query(&query))
        }
    }
}
