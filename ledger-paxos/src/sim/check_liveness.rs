//! Invariant I11, liveness: once every fault healed, a leader commits within a bound and every
//! request a live replica accepted is answered within a bound.

use std::collections::BTreeMap;

use crate::ballot::ReplicaId;

/// A request a replica accepted and has not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// When it was submitted.
    pub submitted_us: u64,
    /// Whether it is a read.
    pub is_read: bool,
    /// For reads: one past the highest acknowledged write slot when the read began.
    pub acknowledged_slot_end: u64,
}

/// The requests waiting for an answer, by `(replica, request_id)`.
#[derive(Debug, Default)]
pub struct PendingRequests {
    pending: BTreeMap<(ReplicaId, u64), Pending>,
}

impl PendingRequests {
    /// A replica accepted a request.
    ///
    /// # Panics
    ///
    /// If the request id was used before (a simulator bug).
    pub fn submitted(&mut self, replica: ReplicaId, request_id: u64, pending: Pending) {
        let previous = self.pending.insert((replica, request_id), pending);
        assert!(previous.is_none(), "request ids are unique");
    }

    /// A replica answered a request.
    ///
    /// # Errors
    ///
    /// A description if the request was not pending there (a duplicate or invented answer).
    pub fn answered(&mut self, replica: ReplicaId, request_id: u64) -> Result<Pending, String> {
        self.pending.remove(&(replica, request_id)).ok_or_else(|| {
            format!("replica {replica} answered request {request_id} twice or unasked")
        })
    }

    /// A replica crashed: its clients' connections broke, their requests are no longer owed.
    pub fn replica_crashed(&mut self, replica: ReplicaId) {
        self.pending.retain(|(owner, _), _| *owner != replica);
    }

    /// The number of requests waiting.
    pub fn count(&self) -> usize {
        self.pending.len()
    }

    /// Checks that nothing waits at the end of the run.
    ///
    /// # Errors
    ///
    /// A description of the oldest unanswered request.
    pub fn check_all_answered(&self, heal_us: u64) -> Result<(), String> {
        match self
            .pending
            .iter()
            .min_by_key(|(_, pending)| pending.submitted_us)
        {
            None => Ok(()),
            Some(((replica, request_id), pending)) => Err(format!(
                "I11: {} requests unanswered after the heal at {heal_us}us, e.g. request \
                 {request_id} at replica {replica} submitted at {}us",
                self.pending.len(),
                pending.submitted_us
            )),
        }
    }
}

/// Checks that a leader committed within `bound_us` of the heal.
///
/// # Errors
///
/// A description of the violation.
pub fn check_leader_after_heal(
    heal_us: u64,
    first_commit_after_heal_us: Option<u64>,
    bound_us: u64,
) -> Result<(), String> {
    match first_commit_after_heal_us {
        Some(at) if at - heal_us <= bound_us => Ok(()),
        Some(at) => Err(format!(
            "I11: first commit after the heal took {}us (bound {bound_us}us)",
            at - heal_us
        )),
        None => Err(format!(
            "I11: no leader committed after the heal at {heal_us}us"
        )),
    }
}
