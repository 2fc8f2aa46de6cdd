//! The ledger as a replicated state machine: the adapter between ledger-paxos's
//! [`StateMachine`] and ledger-core's pure [`Ledger`].
//!
//! ```text
//! chosen entry ──► apply(slot, timestamp, bytes)
//!                    decode envelope ─ malformed ──► Malformed reply, state unchanged
//!                    nonce cached? ─── yes ────────► Replayed: the original reply (I3)
//!                    Ledger::apply(command, entry timestamp) ──► encode Reply, cache it
//! read-index ────► query(bytes) ──► lookups, history, balances, digest
//! ```
//!
//! The state sits behind a mutex shared with a [`MachineProbe`], so the cluster can compare
//! the replicas' digests (I5) without going through consensus; the lock is taken once per entry,
//! never per transfer, and never across I/O.

use std::sync::Arc;

use bytes::Bytes;
use ledger_core::{Command, Ledger};
use ledger_paxos::{PaxosError, StateMachine};
use parking_lot::Mutex;

use crate::crossshard::LegIndex;
use crate::reply_cache::{Reader, ReplyCache};
use crate::wire::{self, Read, ReplyStatus};

/// The version of the adapter's snapshot layout (2: with the cross-shard leg index).
const SNAPSHOT_VERSION: u8 = 2;

/// The replicated state of one replica: the ledger, the recent replies, the applied slot.
#[derive(Debug, Default)]
struct MachineState {
    ledger: Ledger,
    replies: ReplyCache,
    applied_slot: u64,
    /// Cross-shard legs not resolved yet (derived from the ledger's results, I10).
    legs: LegIndex,
}

/// The ledger state machine of one replica.
#[derive(Debug, Default)]
pub struct LedgerMachine {
    state: Arc<Mutex<MachineState>>,
}

/// A read-only view of one replica's state machine, for digests and invariant checks.
#[derive(Debug, Clone)]
pub struct MachineProbe {
    state: Arc<Mutex<MachineState>>,
}

impl LedgerMachine {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty ledger whose id indexes are sized for this many accounts and transfers, so
    /// they never stall to double below that (see `Ledger::with_capacity`).
    pub fn with_capacity(account_count_max: usize, transfer_count_max: usize) -> Self {
        let state = MachineState {
            ledger: Ledger::with_capacity(account_count_max, transfer_count_max),
            ..MachineState::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A probe that observes this machine from another thread.
    pub fn probe(&self) -> MachineProbe {
        MachineProbe {
            state: Arc::clone(&self.state),
        }
    }
}

impl MachineProbe {
    /// The last applied slot and the digest of the ledger's state (I5: equal for equal slots).
    pub fn digest(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.applied_slot, state.ledger.digest())
    }

    /// Runs the ledger's O(n) invariant checks (I1, I7).
    ///
    /// # Errors
    ///
    /// A description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let state = self.state.lock();
        state
            .ledger
            .check_invariants()
            .map_err(|violation| format!("{violation:?}"))
    }

    /// The last applied slot (cheap, unlike [`Self::digest`], which encodes the whole state).
    pub fn applied_slot(&self) -> u64 {
        self.state.lock().applied_slot
    }

    /// How many cross-shard legs this replica holds unresolved.
    pub fn unresolved_leg_count(&self) -> usize {
        self.state.lock().legs.len()
    }

    /// Runs `f` on the replica's ledger (for tests and examples).
    pub fn with_ledger<R>(&self, f: impl FnOnce(&Ledger) -> R) -> R {
        f(&self.state.lock().ledger)
    }
}

impl StateMachine for LedgerMachine {
    fn apply(&mut self, slot: u64, timestamp: u64, command: &[u8]) -> Bytes {
        let mut state = self.state.lock();
        // I6: slots apply in order (a slot may repeat only if the driver re-applies nothing).
        assert!(
            slot >= state.applied_slot,
            "applied slots only move forward (I6)"
        );
        state.applied_slot = slot;
        let Some((nonce, command_bytes)) = wire::decode_command_envelope(command) else {
            return wire::encode_reply(ReplyStatus::Malformed, &[]);
        };
        if let Some(original) = state.replies.get(nonce) {
            return wire::encode_reply(ReplyStatus::Replayed, original);
        }
        let Ok(command) = Command::decode(command_bytes) else {
            return wire::encode_reply(ReplyStatus::Malformed, &[]);
        };
        let state = &mut *state;
        // Read while the decoded events are still in cache (see LegIndex::classify).
        let kinds = match &command {
            Command::CreateTransfers(transfers) => LegIndex::classify(transfers),
            _ => Vec::new(),
        };
        let reply = state.ledger.apply(&command, timestamp);
        if let (Command::CreateTransfers(transfers), ledger_core::Reply::CreateTransfers(results)) =
            (&command, &reply)
        {
            state
                .legs
                .observe_classified(&state.ledger, transfers, &kinds, results);
        }
        let mut reply_bytes = Vec::new();
        reply.encode(&mut reply_bytes);
        let reply_bytes = Bytes::from(reply_bytes);
        state.replies.insert(nonce, reply_bytes.clone());
        wire::encode_reply(ReplyStatus::Applied, &reply_bytes)
    }

    fn query(&self, query: &[u8]) -> Bytes {
        let state = self.state.lock();
        let ledger = &state.ledger;
        // A malformed read answers nothing; the client reports it as undecodable.
        let Some(read) = Read::decode(query) else {
            return Bytes::new();
        };
        let reply = match read {
            Read::Digest => return wire::encode_digest(state.applied_slot, ledger.digest()),
            Read::Unresolved => {
                let entries = state.legs.unresolved(ledger);
                return wire::encode_unresolved(ledger.last_timestamp(), entries);
            }
            Read::Ledger(query) => ledger.query(&query),
        };
        wire::encode_query_reply(&reply)
    }

    fn encode_snapshot(&self) -> Vec<u8> {
        let state = self.state.lock();
        let ledger = state.ledger.encode_snapshot();
        let mut out = Vec::with_capacity(1 + 8 + 8 + ledger.len());
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&state.applied_slot.to_le_bytes());
        out.extend_from_slice(&(ledger.len() as u64).to_le_bytes());
        out.extend_from_slice(&ledger);
        state.legs.encode(&state.ledger, &mut out);
        state.replies.encode(&mut out);
        out
    }

    fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<(), PaxosError> {
        let restored = decode_snapshot(bytes).ok_or(PaxosError::Snapshot {
            reason: "not a ledger-shard snapshot",
        })?;
        *self.state.lock() = restored;
        Ok(())
    }
}

fn decode_snapshot(bytes: &[u8]) -> Option<MachineState> {
    let mut reader = Reader::new(bytes);
    if reader.u8()? != SNAPSHOT_VERSION {
        return None;
    }
    let applied_slot = reader.u64()?;
    let ledger_size_bytes = usize::try_from(reader.u64()?).ok()?;
    let ledger = Ledger::decode_snapshot(reader.take(ledger_size_bytes)?).ok()?;
    let legs = LegIndex::decode(&mut reader, &ledger)?;
    let replies = ReplyCache::decode(reader.rest())?;
    Some(MachineState {
        ledger,
        replies,
        applied_slot,
        legs,
    })
}

#[cfg(test)]
mod tests {
    use ledger_core::{Account, Query, QueryReply, Reply, Transfer};
    use proptest::prelude::*;

    use super::*;

    fn entry(nonce: u128, command: &Command) -> Bytes {
        wire::encode_command(nonce, command)
    }

    fn setup() -> LedgerMachine {
        let mut machine = LedgerMachine::new();
        let accounts = Command::CreateAccounts(vec![Account::new(1, 1, 1), Account::new(2, 1, 1)]);
        let reply = machine.apply(1, 100, &entry(1, &accounts));
        assert_eq!(
            wire::decode_reply_envelope(&reply).unwrap().0,
            ReplyStatus::Applied
        );
        machine
    }

    #[test]
    fn same_nonce_replays_the_original_reply() {
        let mut machine = setup();
        let transfers = Command::CreateTransfers(vec![Transfer::new(5, 1, 2, 10, 1, 1)]);
        let first = machine.apply(2, 200, &entry(7, &transfers));
        let again = machine.apply(3, 300, &entry(7, &transfers));
        let (status, body) = wire::decode_reply_envelope(&again).unwrap();
        assert_eq!(status, ReplyStatus::Replayed);
        assert_eq!(body, &first[1..]);
        let Reply::CreateTransfers(results) = Reply::decode(body).unwrap() else {
            panic!()
        };
        assert!(results[0].is_ok());
        // A new nonce with the same transfer is a genuine duplicate.
        let dup = machine.apply(4, 400, &entry(8, &transfers));
        let Reply::CreateTransfers(results) = Reply::decode(&dup[1..]).unwrap() else {
            panic!()
        };
        assert!(results[0].is_exists());
        assert_eq!(
            machine.probe().with_ledger(|l| l.lookup_accounts(&[2]))[0].credits_posted,
            10
        );
    }

    #[test]
    fn snapshot_round_trip_keeps_state_and_replies() {
        let mut machine = setup();
        let transfers = Command::CreateTransfers(vec![Transfer::new(5, 1, 2, 10, 1, 1)]);
        machine.apply(2, 200, &entry(7, &transfers));
        let snapshot = machine.encode_snapshot();
        let mut restored = LedgerMachine::new();
        restored.restore_snapshot(&snapshot).unwrap();
        assert_eq!(restored.probe().digest(), machine.probe().digest());
        assert_eq!(restored.encode_snapshot(), snapshot);
        let again = restored.apply(3, 300, &entry(7, &transfers));
        assert_eq!(
            wire::decode_reply_envelope(&again).unwrap().0,
            ReplyStatus::Replayed
        );
        assert!(
            restored
                .restore_snapshot(&snapshot[..snapshot.len() - 1])
                .is_err()
        );
        assert_eq!(restored.probe().digest().1, machine.probe().digest().1);
    }

    #[test]
    fn queries_answer_lookups_and_digest() {
        let machine = setup();
        let bytes = machine.query(&Read::Ledger(Query::LookupAccounts(vec![2, 3, 1])).encode());
        let QueryReply::Accounts(accounts) = QueryReply::decode(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(
            accounts.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![2, 1]
        );
        let (slot, digest) = wire::decode_digest(&machine.query(&Read::Digest.encode())).unwrap();
        assert_eq!((slot, digest), machine.probe().digest());
        assert!(machine.query(&[0xff, 1, 2]).is_empty());
    }

    #[test]
    fn the_unresolved_read_answers_the_ledger_time() {
        let machine = setup();
        let bytes = machine.query(&Read::Unresolved.encode());
        let (ledger_now, entries) = wire::decode_unresolved(&bytes).unwrap();
        // The accounts were applied at 100: two events, stamped 100 and 101.
        assert_eq!((ledger_now, entries), (101, Vec::new()));
        assert_eq!(
            ledger_now,
            machine.probe().with_ledger(Ledger::last_timestamp)
        );
        assert!(wire::decode_unresolved(&bytes[..7]).is_none());
        assert!(wire::decode_unresolved(&bytes[..bytes.len() - 1]).is_none());
    }

    proptest! {
        #[test]
        fn hostile_entries_change_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut machine = setup();
            let digest = machine.probe().digest().1;
            let reply = machine.apply(2, 200, &bytes);
            let (status, _) = wire::decode_reply_envelope(&reply).unwrap();
            if status != ReplyStatus::Applied {
                prop_assert_eq!(machine.probe().digest().1, digest);
            }
            let _ = machine.query(&bytes);
            let _ = Read::decode(&bytes);
            let _ = wire::decode_digest(&bytes);
            let _ = wire::decode_unresolved(&bytes);
            let restored = LedgerMachine::new().restore_snapshot(&bytes);
            prop_assert!(restored.is_err() || bytes.len() > 16);
        }
    }
}
