//! The wall clock of the client side: call deadlines only.

use std::time::Instant;

/// The current instant.
///
/// The client machinery is driver-level code like ledger-paxos's driver: it bounds blocking
/// calls by deadlines. No replicated state ever sees this value (the Paxos leader stamps
/// entries with its own time).
#[allow(
    clippy::disallowed_methods,
    reason = "call deadlines need the wall clock"
)]
pub(crate) fn now() -> Instant {
    Instant::now()
}
