//! Ballots: the totally ordered proposal numbers of Multi-Paxos.

use std::fmt;

/// The index of a replica inside its group, `0..replica_count`.
pub type ReplicaId = u8;

/// A ballot `(round, replica)`, ordered lexicographically: first by round, then by the replica
/// that owns it. Two replicas never share a ballot, so each ballot has at most one proposer and
/// one value per slot (I4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// The round; a candidate picks one higher than every round it has seen.
    pub round: u64,
    /// The replica that owns this ballot.
    pub replica: ReplicaId,
}

impl Ballot {
    /// The ballot below every real one; a fresh replica has promised it.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        replica: 0,
    };

    /// Builds a ballot.
    ///
    /// # Examples
    ///
    /// ```
    /// use ledger_paxos::Ballot;
    /// assert!(Ballot::new(2, 0) > Ballot::new(1, 4));
    /// assert!(Ballot::new(2, 1) > Ballot::new(2, 0));
    /// ```
    pub const fn new(round: u64, replica: ReplicaId) -> Self {
        Ballot { round, replica }
    }

    /// The smallest ballot owned by `replica` that is above `self`.
    ///
    /// # Panics
    ///
    /// If the round space (`u64`) is exhausted.
    #[must_use]
    pub fn next_for(self, replica: ReplicaId) -> Ballot {
        let round = self
            .round
            .checked_add(1)
            .expect("ballot round space exhausted");
        let next = Ballot { round, replica };
        assert!(next > self);
        next
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.round, self.replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_round_then_replica() {
        assert!(Ballot::new(1, 2) < Ballot::new(2, 0));
        assert!(Ballot::new(3, 1) < Ballot::new(3, 2));
        assert_eq!(Ballot::ZERO, Ballot::default());
        assert_eq!(Ballot::new(7, 1).next_for(0), Ballot::new(8, 0));
        assert_eq!(Ballot::new(7, 1).to_string(), "7.1");
    }
}
