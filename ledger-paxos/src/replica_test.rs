//! Unit tests: one `Replica` stepped by hand, asserting the exact `Ready` of every handler and
//! timer (STYLE §7). Section numbers refer to Lamport, "Paxos Made Simple" (2001): §2.2 the
//! acceptor's promise and accept rules, §2.3 learning a chosen value, §3 Multi-Paxos with a
//! distinguished proposer and no-ops for holes.

use bytes::Bytes;

use crate::ballot::Ballot;
use crate::config::Config;
use crate::error::{PaxosError, Result};
use crate::message::{Command, Entry, Message, SlotEntry};
use crate::ready::{Envelope, HardState, Persisted, Ready, Recovered, Reply, SnapshotData};
use crate::replica::{Replica, Role};
use crate::state_machine::StateMachine;

/// Records applied commands; replies echo the command; a query answers the count.
#[derive(Debug, Default, PartialEq, Eq)]
struct Recorder {
    applied: Vec<(u64, Vec<u8>)>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, slot: u64, _timestamp_ns: u64, command: &[u8]) -> Bytes {
        self.applied.push((slot, command.to_vec()));
        Bytes::copy_from_slice(command)
    }

    fn query(&self, _query: &[u8]) -> Bytes {
        Bytes::from(vec![self.applied.len() as u8])
    }

    fn encode_snapshot(&self) -> Vec<u8> {
        self.applied
            .iter()
            .flat_map(|(_, command)| command.clone())
            .collect()
    }

    fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Err(PaxosError::Snapshot { reason: "empty" });
        }
        self.applied = bytes.iter().map(|byte| (0, vec![*byte])).collect();
        Ok(())
    }
}

fn config(id: u8, count: usize) -> Config {
    Config::new(id, count)
}

fn replica(id: u8, count: usize) -> Replica<Recorder> {
    Replica::new(
        config(id, count),
        Recovered::default(),
        Recorder::default(),
        1,
    )
    .unwrap()
}

fn to(to: u8, message: Message) -> Envelope {
    Envelope { to, message }
}

fn command(origin: u8, request_id: u64, payload: &'static [u8]) -> Command {
    Command {
        origin,
        request_id,
        payload: Bytes::from_static(payload),
    }
}

fn entry(timestamp_ns: u64, commands: Vec<Command>) -> Entry {
    Entry::new(timestamp_ns, commands)
}

/// Ticks until the replica starts an election, returning the `Ready` with its Prepares.
fn tick_until_candidate(replica: &mut Replica<Recorder>) -> Ready {
    for _ in 0..=replica.config().election_timeout_max_ticks {
        replica.tick();
        if replica.role() == Role::Candidate {
            return replica.ready();
        }
    }
    panic!("no election within the maximum timeout");
}

/// Replica 0 of `count` wins ballot 1.0 with empty promises; returns it after its first
/// `Ready` as leader was taken and persisted.
fn leader(count: usize) -> Replica<Recorder> {
    let mut replica = replica(0, count);
    tick_until_candidate(&mut replica);
    let ballot = replica.ballot();
    for peer in 1..count.div_ceil(2) as u8 {
        replica.step(
            peer,
            Message::Promise {
                ballot,
                accepted: vec![],
                commit_slot: 0,
            },
        );
    }
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    assert!(replica.is_leader());
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    replica
}

#[test]
fn on_election_timeout_sends_prepare_now_and_defers_the_own_promise() {
    let mut replica = replica(0, 3);
    let ready = tick_until_candidate(&mut replica);
    let ballot = Ballot::new(1, 0);
    assert_eq!(replica.ballot(), ballot);
    assert_eq!(
        replica.promised(),
        Ballot::ZERO,
        "a candidate promises itself only later"
    );
    let prepare = Message::Prepare {
        ballot,
        commit_slot: 0,
    };
    let expected = Ready {
        number: 1,
        messages_now: vec![to(1, prepare.clone()), to(2, prepare)],
        ..Ready::default()
    };
    assert_eq!(ready, expected);
}

#[test]
fn on_promise_completing_a_majority_persists_the_own_promise_then_wins_after_advance() {
    let mut replica = replica(0, 3);
    tick_until_candidate(&mut replica);
    let ballot = Ballot::new(1, 0);
    replica.step(
        1,
        Message::Promise {
            ballot,
            accepted: vec![],
            commit_slot: 0,
        },
    );
    let ready = replica.ready();
    let expected = Ready {
        number: 2,
        hard_state: Some(HardState { promised: ballot }),
        ..Ready::default()
    };
    assert_eq!(ready, expected);
    assert_eq!(
        replica.role(),
        Role::Candidate,
        "the own promise counts only once durable"
    );
    replica.advance(Persisted { ready_number: 2 });
    assert_eq!(replica.role(), Role::Leader);
    let ready = replica.ready();
    let (_, noop) = replica.log_entry(0).unwrap();
    assert!(noop.is_noop());
    let accept = Message::Accept {
        ballot,
        slot: 0,
        entry: noop.clone(),
        commit_slot: 0,
    };
    let commit = Message::Commit {
        ballot,
        commit_slot: 0,
        read_round: 0,
    };
    let expected = Ready {
        number: 3,
        entries_to_persist: vec![SlotEntry {
            slot: 0,
            ballot,
            entry: noop.clone(),
        }],
        messages_now: vec![
            to(1, accept.clone()),
            to(2, accept),
            to(1, commit.clone()),
            to(2, commit),
        ],
        ..Ready::default()
    };
    assert_eq!(ready, expected);
}

#[test]
fn become_leader_re_proposes_the_highest_ballot_value_per_slot_and_fills_holes() {
    // Paxos Made Simple §3: the new leader proposes the highest-numbered accepted value of
    // every slot and no-ops for the gaps.
    let mut replica = replica(0, 5);
    tick_until_candidate(&mut replica);
    let ballot = replica.ballot();
    let a = entry(100, vec![command(1, 1, b"a")]);
    let b = entry(200, vec![command(1, 2, b"b")]);
    let stale = entry(50, vec![command(2, 9, b"stale")]);
    let promise_1 = vec![SlotEntry {
        slot: 0,
        ballot: Ballot::new(1, 2),
        entry: stale.clone(),
    }];
    let promise_2 = vec![
        SlotEntry {
            slot: 0,
            ballot: Ballot::new(3, 1),
            entry: a.clone(),
        },
        SlotEntry {
            slot: 2,
            ballot: Ballot::new(1, 1),
            entry: b.clone(),
        },
    ];
    replica.step(
        1,
        Message::Promise {
            ballot,
            accepted: promise_1,
            commit_slot: 0,
        },
    );
    replica.step(
        2,
        Message::Promise {
            ballot,
            accepted: promise_2,
            commit_slot: 0,
        },
    );
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    assert!(replica.is_leader());
    let ready = replica.ready();
    let slots: Vec<(u64, Entry)> = ready
        .entries_to_persist
        .iter()
        .map(|e| (e.slot, e.entry.clone()))
        .collect();
    assert_eq!(slots, vec![(0, a), (1, Entry::noop(100)), (2, b)]);
    assert!(ready.entries_to_persist.iter().all(|e| e.ballot == ballot));
    assert_eq!(
        ready.messages_now.len(),
        3 * 4 + 4,
        "three Accepts and a heartbeat per peer"
    );
}

#[test]
fn on_prepare_promises_only_after_persisting_and_reports_accepted_entries() {
    // §2.2: the promise carries the accepted proposals; here it leaves after the fsync (I4).
    let accepted = SlotEntry {
        slot: 4,
        ballot: Ballot::new(1, 0),
        entry: entry(7, vec![]),
    };
    let recovered = Recovered {
        hard_state: HardState {
            promised: Ballot::new(1, 0),
        },
        snapshot: None,
        entries: vec![accepted.clone()],
    };
    let mut replica = Replica::new(config(1, 3), recovered, Recorder::default(), 1).unwrap();
    let ballot = Ballot::new(2, 2);
    replica.step(
        2,
        Message::Prepare {
            ballot,
            commit_slot: 3,
        },
    );
    let promise = Message::Promise {
        ballot,
        accepted: vec![accepted],
        commit_slot: 0,
    };
    let expected = Ready {
        number: 1,
        hard_state: Some(HardState { promised: ballot }),
        messages_after_persist: vec![to(2, promise)],
        ..Ready::default()
    };
    assert_eq!(replica.ready(), expected);
}

#[test]
fn on_prepare_below_the_promise_is_nacked_now() {
    let mut replica = replica(1, 3);
    replica.step(
        2,
        Message::Prepare {
            ballot: Ballot::new(5, 2),
            commit_slot: 0,
        },
    );
    replica.ready();
    replica.step(
        0,
        Message::Prepare {
            ballot: Ballot::new(4, 0),
            commit_slot: 0,
        },
    );
    let nack = Message::Nack {
        ballot: Ballot::new(5, 2),
    };
    let expected = Ready {
        number: 2,
        messages_now: vec![to(0, nack)],
        ..Ready::default()
    };
    assert_eq!(replica.ready(), expected);
}

#[test]
fn a_candidate_ignores_a_lower_prepare_and_cannot_depose_the_leader_it_elected() {
    // Replicas 0 and 2 time out together; 2's Prepares are lost, replica 1 promises 0's
    // ballot 1.0 and 0 leads. 0's Prepare then reaches candidate 2 (ballot 1.2, promised only
    // 0.0): 2 must not answer with its unpromised ballot, which would depose 0.
    let mut leader = leader(3);
    let leader_ballot = Ballot::new(1, 0);
    assert_eq!(leader.ballot(), leader_ballot);
    let mut candidate = replica(2, 3);
    tick_until_candidate(&mut candidate);
    assert_eq!(candidate.ballot(), Ballot::new(1, 2));
    assert_eq!(candidate.promised(), Ballot::ZERO);
    candidate.step(
        0,
        Message::Prepare {
            ballot: leader_ballot,
            commit_slot: 0,
        },
    );
    let ready = candidate.ready();
    let expected = Ready {
        number: 2,
        ..Ready::default()
    };
    assert_eq!(ready, expected, "no Nack naming an unpromised ballot");
    assert_eq!(candidate.role(), Role::Candidate);
    assert_eq!(candidate.promised(), Ballot::ZERO);
    for envelope in ready.messages_now {
        leader.step(2, envelope.message);
    }
    assert!(leader.is_leader());
    // A Nack carrying a promised, higher ballot still deposes it.
    leader.step(
        1,
        Message::Nack {
            ballot: Ballot::new(1, 2),
        },
    );
    assert_eq!(leader.role(), Role::Follower);
}

#[test]
fn on_prepare_from_a_usurper_is_ignored_while_the_leader_is_live() {
    let mut replica = replica(1, 3);
    let ballot = Ballot::new(1, 0);
    replica.step(
        0,
        Message::Commit {
            ballot,
            commit_slot: 0,
            read_round: 0,
        },
    );
    replica.ready();
    replica.step(
        2,
        Message::Prepare {
            ballot: Ballot::new(9, 2),
            commit_slot: 0,
        },
    );
    assert_eq!(
        replica.ready(),
        Ready {
            number: 2,
            ..Ready::default()
        }
    );
    assert_eq!(
        replica.promised(),
        Ballot::ZERO,
        "stickiness: no promise to the usurper"
    );
}

#[test]
fn lagging_candidate_is_sent_a_snapshot_instead_of_a_promise() {
    let snapshot = SnapshotData {
        slot: 10,
        last_timestamp_ns: 5,
        bytes: Bytes::from_static(b"xyz"),
    };
    let recovered = Recovered {
        snapshot: Some(snapshot),
        ..Recovered::default()
    };
    let mut replica = Replica::new(config(1, 3), recovered, Recorder::default(), 1).unwrap();
    replica.step(
        2,
        Message::Prepare {
            ballot: Ballot::new(3, 2),
            commit_slot: 4,
        },
    );
    let chunk = Message::SnapshotChunk {
        ballot: Ballot::ZERO,
        snapshot_slot: 10,
        last_timestamp_ns: 5,
        offset_bytes: 0,
        total_size_bytes: 3,
        data: Bytes::from_static(b"xyz"),
    };
    let expected = Ready {
        number: 1,
        messages_now: vec![to(2, chunk)],
        ..Ready::default()
    };
    assert_eq!(replica.ready(), expected);
    assert_eq!(replica.promised(), Ballot::ZERO);
}

#[test]
fn on_accept_persists_then_acknowledges_and_learns_the_commit_slot() {
    // §2.2 accept rule and §2.3 learning: an entry of the leader's ballot below its commit
    // slot is chosen and applied.
    let mut replica = replica(1, 3);
    let ballot = Ballot::new(1, 0);
    let first = entry(10, vec![command(0, 1, b"x")]);
    replica.step(
        0,
        Message::Accept {
            ballot,
            slot: 0,
            entry: first.clone(),
            commit_slot: 0,
        },
    );
    let expected = Ready {
        number: 1,
        hard_state: Some(HardState { promised: ballot }),
        entries_to_persist: vec![SlotEntry {
            slot: 0,
            ballot,
            entry: first,
        }],
        messages_after_persist: vec![to(0, Message::Accepted { ballot, slot: 0 })],
        ..Ready::default()
    };
    assert_eq!(replica.ready(), expected);
    assert_eq!(replica.leader_hint(), Some(0));
    let second = entry(20, vec![]);
    replica.step(
        0,
        Message::Accept {
            ballot,
            slot: 1,
            entry: second.clone(),
            commit_slot: 1,
        },
    );
    let expected = Ready {
        number: 2,
        entries_to_persist: vec![SlotEntry {
            slot: 1,
            ballot,
            entry: second,
        }],
        messages_after_persist: vec![to(0, Message::Accepted { ballot, slot: 1 })],
        applied_slots: 0..1,
        ..Ready::default()
    };
    assert_eq!(replica.ready(), expected);
    assert_eq!(replica.state_machine().applied, vec![(0, b"x".to_vec())]);
}

#[test]
fn on_accept_below_the_promise_is_nacked_and_not_written() {
    let mut replica = replica(1, 3);
    replica.step(
        2,
        Message::Prepare {
            ballot: Ballot::new(2, 2),
            commit_slot: 0,
        },
    );
    replica.ready();
    let stale = Message::Accept {
        ballot: Ballot::new(1, 0),
        slot: 0,
        entry: entry(1, vec![]),
        commit_slot: 0,
    };
    replica.step(0, stale);
    let nack = Message::Nack {
        ballot: Ballot::new(2, 2),
    };
    assert_eq!(
        replica.ready(),
        Ready {
            number: 2,
            messages_now: vec![to(0, nack)],
            ..Ready::default()
        }
    );
    assert_eq!(replica.log_entry(0), None);
}

#[test]
fn on_commit_learns_the_commit_slot_and_acks_now() {
    let mut replica = replica(2, 3);
    let ballot = Ballot::new(1, 0);
    for slot in 0..2 {
        let value = entry(slot + 1, vec![command(0, slot, b"c")]);
        replica.step(
            0,
            Message::Accept {
                ballot,
                slot,
                entry: value,
                commit_slot: 0,
            },
        );
    }
    replica.ready();
    replica.step(
        0,
        Message::Commit {
            ballot,
            commit_slot: 2,
            read_round: 5,
        },
    );
    let ack = Message::CommitAck {
        ballot,
        read_round: 5,
        commit_slot: 2,
    };
    let expected = Ready {
        number: 2,
        messages_now: vec![to(0, ack)],
        applied_slots: 0..2,
        ..Ready::default()
    };
    assert_eq!(replica.ready(), expected);
}

#[test]
fn on_commit_does_not_commit_entries_of_an_older_ballot() {
    // An entry accepted under another ballot may not be the chosen one: wait for catch-up.
    let mut replica = replica(2, 3);
    let old = Ballot::new(1, 0);
    replica.step(
        0,
        Message::Accept {
            ballot: old,
            slot: 0,
            entry: entry(1, vec![]),
            commit_slot: 0,
        },
    );
    replica.ready();
    let new = Ballot::new(2, 1);
    replica.step(
        1,
        Message::Commit {
            ballot: new,
            commit_slot: 1,
            read_round: 0,
        },
    );
    let ack = Message::CommitAck {
        ballot: new,
        read_round: 0,
        commit_slot: 0,
    };
    assert_eq!(
        replica.ready(),
        Ready {
            number: 2,
            messages_now: vec![to(1, ack)],
            ..Ready::default()
        }
    );
    assert_eq!(replica.commit_slot(), 0);
}

#[test]
fn on_accepted_chooses_only_with_the_leaders_own_durable_vote() {
    let mut replica = replica(0, 3);
    tick_until_candidate(&mut replica);
    let ballot = replica.ballot();
    replica.step(
        1,
        Message::Promise {
            ballot,
            accepted: vec![],
            commit_slot: 0,
        },
    );
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    let ready = replica.ready(); // The no-op at slot 0, not yet durable here.
    replica.step(1, Message::Accepted { ballot, slot: 0 });
    assert_eq!(replica.commit_slot(), 0, "one vote of three: not chosen");
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    assert_eq!(
        replica.commit_slot(),
        1,
        "the leader's own fsync makes the majority"
    );
}

#[test]
fn propose_batches_up_to_the_count_limit_within_the_pipeline_window() {
    let mut replica = leader(3);
    replica.config.batch_count_max = 2;
    replica.config.pipeline_slots_max = 2;
    for request_id in 1..=5 {
        replica
            .propose(request_id, Bytes::from_static(b"p"))
            .unwrap();
    }
    let ready = replica.ready();
    let batches: Vec<(u64, usize)> = ready
        .entries_to_persist
        .iter()
        .map(|e| (e.slot, e.entry.commands.len()))
        .collect();
    // Slot 0 (the no-op) is still in flight, so the window of two holds one more slot.
    assert_eq!(batches, vec![(1, 2)]);
    assert_eq!(replica.queued_request_count(), 3);
    assert_eq!(ready.messages_now.len(), 2, "one Accept per peer");
    let ballot = replica.ballot();
    replica.step(1, Message::Accepted { ballot, slot: 0 });
    replica.step(1, Message::Accepted { ballot, slot: 1 });
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    let ready = replica.ready();
    let batches: Vec<(u64, usize)> = ready
        .entries_to_persist
        .iter()
        .map(|e| (e.slot, e.entry.commands.len()))
        .collect();
    assert_eq!(batches, vec![(2, 2), (3, 1)]);
    let replies: Vec<u64> = ready.replies.iter().map(|r| r.request_id).collect();
    assert_eq!(replies, vec![1, 2]);
}

#[test]
fn propose_on_a_follower_answers_not_leader_with_the_hint() {
    let mut replica = replica(1, 3);
    replica.step(
        0,
        Message::Commit {
            ballot: Ballot::new(1, 0),
            commit_slot: 0,
            read_round: 0,
        },
    );
    let error = replica.propose(1, Bytes::new()).unwrap_err();
    assert_eq!(
        error,
        PaxosError::NotLeader {
            leader_hint: Some(0)
        }
    );
    assert_eq!(replica.read(2, Bytes::new()).unwrap_err(), error);
}

#[test]
fn on_nack_with_a_higher_ballot_deposes_the_leader_and_fails_queued_requests() {
    let mut replica = leader(3);
    replica.propose(7, Bytes::from_static(b"q")).unwrap();
    replica.step(
        1,
        Message::Nack {
            ballot: Ballot::new(4, 1),
        },
    );
    assert_eq!(replica.role(), Role::Follower);
    let reply = Reply {
        request_id: 7,
        result: Err(PaxosError::NotLeader { leader_hint: None }),
    };
    let number = replica.ready_number + 1;
    assert_eq!(
        replica.ready(),
        Ready {
            number,
            replies: vec![reply],
            ..Ready::default()
        }
    );
}

#[test]
fn a_deposed_leader_answers_once_when_another_value_takes_its_slot() {
    let mut replica = leader(3);
    replica.propose(7, Bytes::from_static(b"q")).unwrap();
    replica.ready(); // Slot 1 carries request 7, never chosen.
    let ballot = Ballot::new(5, 2);
    replica.step(2, Message::Nack { ballot });
    let other = entry(1, vec![command(2, 1, b"other")]);
    for slot in 0..2 {
        let value = if slot == 0 {
            entry(0, vec![])
        } else {
            other.clone()
        };
        replica.step(
            2,
            Message::Accept {
                ballot,
                slot,
                entry: value,
                commit_slot: 2,
            },
        );
    }
    let ready = replica.ready();
    // Answered at the step-down, not again (`NotChosen`) when the other value is applied.
    let reply = Reply {
        request_id: 7,
        result: Err(PaxosError::OutcomeUnknown { slot: 1 }),
    };
    assert_eq!(ready.replies, vec![reply]);
    assert_eq!(ready.applied_slots, 0..2);
    assert_eq!(replica.slotted_request_count(), 0);
}

/// The entry `replica` holds at `slot`.
fn held_entry(replica: &Replica<Recorder>, slot: u64) -> Entry {
    replica
        .log_entry(slot)
        .expect("slot is in the log")
        .1
        .clone()
}

#[test]
fn a_deposed_leader_answers_unchosen_slots_outcome_unknown_at_once_and_only_once() {
    // Leader 0 puts request 7 in slot 1 and request 8 in slot 2. Only replica 1 receives the
    // Accepts of slots 0 and 1, and no `Accepted` comes back: no slot is chosen. Replicas 1
    // and 2 elect 1, which re-proposes slots 0 and 1 and nothing at slot 2; then no write
    // reaches the group, so slot 2 is never proposed again.
    let mut replica = leader(3);
    replica.propose(7, Bytes::from_static(b"seven")).unwrap();
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    replica.propose(8, Bytes::from_static(b"eight")).unwrap();
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    assert_eq!(replica.slotted_request_count(), 2);
    assert_eq!(replica.commit_slot(), 0);
    let new_ballot = Ballot::new(replica.ballot().round + 1, 1);
    let re_proposed: Vec<Entry> = (0..2).map(|slot| held_entry(&replica, slot)).collect();
    replica.step(
        1,
        Message::Accept {
            ballot: new_ballot,
            slot: 0,
            entry: re_proposed[0].clone(),
            commit_slot: 0,
        },
    );
    assert_eq!(replica.role(), Role::Follower);
    let ready = replica.ready();
    let replies = vec![
        Reply {
            request_id: 7,
            result: Err(PaxosError::OutcomeUnknown { slot: 1 }),
        },
        Reply {
            request_id: 8,
            result: Err(PaxosError::OutcomeUnknown { slot: 2 }),
        },
    ];
    assert_eq!(ready.replies, replies, "answered in the step-down's Ready");
    assert_eq!(replica.slotted_request_count(), 0);
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    // Slot 1 turns out chosen with request 7 in it: it is applied, but not answered again.
    replica.step(
        1,
        Message::Accept {
            ballot: new_ballot,
            slot: 1,
            entry: re_proposed[1].clone(),
            commit_slot: 2,
        },
    );
    let ready = replica.ready();
    assert_eq!(ready.applied_slots, 0..2);
    assert!(ready.replies.is_empty(), "{:?}", ready.replies);
    assert_eq!(
        replica.state_machine().applied,
        vec![(1, b"seven".to_vec())]
    );
    // The group stays idle: heartbeats only, and nothing more is answered.
    for _ in 0..replica.config().election_timeout_max_ticks {
        replica.tick();
        replica.step(
            1,
            Message::Commit {
                ballot: new_ballot,
                commit_slot: 2,
                read_round: 0,
            },
        );
        assert!(replica.ready().replies.is_empty());
    }
}

#[test]
fn a_deposed_leader_keeps_a_request_in_a_slot_known_chosen_and_answers_it_when_applied() {
    let mut replica = leader(3);
    let ballot = replica.ballot();
    replica.propose(7, Bytes::from_static(b"seven")).unwrap();
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    // Slot 1 is chosen (own vote and replica 1's); slot 0 is not, so the commit slot stays 0.
    replica.step(1, Message::Accepted { ballot, slot: 1 });
    assert_eq!(replica.commit_slot(), 0);
    let entries: Vec<Entry> = (0..2).map(|slot| held_entry(&replica, slot)).collect();
    let new_ballot = Ballot::new(ballot.round + 1, 2);
    replica.step(2, Message::Nack { ballot: new_ballot });
    assert_eq!(replica.role(), Role::Follower);
    let ready = replica.ready();
    assert!(ready.replies.is_empty(), "{:?}", ready.replies);
    assert_eq!(replica.slotted_request_count(), 1);
    // Every new leader re-proposes a chosen value; applying it answers the request.
    for (slot, entry) in (0..).zip(entries) {
        replica.step(
            2,
            Message::Accept {
                ballot: new_ballot,
                slot,
                entry,
                commit_slot: 2,
            },
        );
    }
    let ready = replica.ready();
    let reply = Reply {
        request_id: 7,
        result: Ok(Bytes::from_static(b"seven")),
    };
    assert_eq!(ready.replies, vec![reply]);
    assert_eq!(replica.slotted_request_count(), 0);
}

#[test]
fn heartbeat_goes_out_every_interval_and_retries_unacknowledged_accepts() {
    let mut replica = leader(3);
    let ballot = replica.ballot();
    for _ in 0..replica.config().heartbeat_interval_ticks {
        replica.tick();
    }
    let commit = Message::Commit {
        ballot,
        commit_slot: 0,
        read_round: 0,
    };
    let number = replica.ready_number + 1;
    let expected = Ready {
        number,
        messages_now: vec![to(1, commit.clone()), to(2, commit)],
        ..Ready::default()
    };
    assert_eq!(
        replica.ready(),
        expected,
        "slot 0 was sent 5 ticks ago: no retry yet"
    );
    for _ in 0..replica.config().heartbeat_interval_ticks {
        replica.tick();
    }
    let ready = replica.ready();
    let (_, noop) = replica.log_entry(0).unwrap();
    let accept = Message::Accept {
        ballot,
        slot: 0,
        entry: noop.clone(),
        commit_slot: 0,
    };
    let commit = Message::Commit {
        ballot,
        commit_slot: 0,
        read_round: 0,
    };
    let expected = vec![
        to(1, commit.clone()),
        to(2, commit),
        to(1, accept.clone()),
        to(2, accept),
    ];
    assert_eq!(ready.messages_now, expected);
}

#[test]
fn a_steady_stream_of_reads_does_not_hold_back_accept_retries() {
    // Every read starts a read round whose heartbeat restarts the heartbeat timer; the retry
    // of a lost Accept must not wait for a heartbeat that reads keep postponing.
    let mut replica = leader(3);
    let ballot = replica.ballot();
    let retry_ticks = replica.config().accept_retry_ticks;
    let mut retried_at_tick = None;
    for tick in 1..=2 * retry_ticks {
        replica.tick();
        replica.read(tick, Bytes::new()).unwrap();
        let ready = replica.ready();
        let retried = ready
            .messages_now
            .iter()
            .any(|e| matches!(e.message, Message::Accept { slot: 0, .. }));
        if retried && retried_at_tick.is_none() {
            retried_at_tick = Some(tick);
        }
        let read_round = tick;
        let ack = Message::CommitAck {
            ballot,
            read_round,
            commit_slot: 0,
        };
        replica.step(1, ack);
    }
    assert!(replica.is_leader());
    assert_eq!(replica.pending_read_count() as u64, 2 * retry_ticks);
    assert_eq!(
        retried_at_tick,
        Some(retry_ticks),
        "slot 0's Accept (sent when leading began) is re-sent after accept_retry_ticks"
    );
}

#[test]
fn a_leader_without_a_live_majority_steps_down() {
    let mut replica = leader(3);
    let mut ticks = 0;
    while replica.is_leader() {
        replica.tick();
        ticks += 1;
    }
    assert_eq!(
        ticks,
        replica.config().election_timeout_max_ticks,
        "first quorum check"
    );
    assert_eq!(replica.role(), Role::Follower);
    assert_eq!(replica.leader_hint(), None);
}

#[test]
fn catch_up_resends_chosen_entries_to_a_lagging_follower() {
    let mut replica = leader(3);
    let ballot = replica.ballot();
    replica.propose(1, Bytes::from_static(b"one")).unwrap();
    replica.ready();
    replica.step(1, Message::Accepted { ballot, slot: 0 });
    replica.step(1, Message::Accepted { ballot, slot: 1 });
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    assert_eq!(replica.commit_slot(), 2);
    for _ in 0..replica.config().heartbeat_interval_ticks {
        replica.tick();
    }
    replica.ready();
    replica.step(
        2,
        Message::CommitAck {
            ballot,
            read_round: 0,
            commit_slot: 0,
        },
    );
    let ready = replica.ready();
    let resent: Vec<Envelope> = (0..2)
        .map(|slot| {
            let (_, value) = replica.log_entry(slot).unwrap();
            to(
                2,
                Message::Accept {
                    ballot,
                    slot,
                    entry: value.clone(),
                    commit_slot: 2,
                },
            )
        })
        .collect();
    assert_eq!(ready.messages_now, resent);
}

#[test]
fn read_index_waits_for_a_majority_round_then_answers_from_the_state_machine() {
    let mut replica = leader(3);
    let ballot = replica.ballot();
    replica.step(1, Message::Accepted { ballot, slot: 0 });
    replica.ready();
    assert_eq!(replica.commit_slot(), 1);
    replica.read(9, Bytes::new()).unwrap();
    let commit = Message::Commit {
        ballot,
        commit_slot: 1,
        read_round: 1,
    };
    let number = replica.ready_number + 1;
    let expected = Ready {
        number,
        messages_now: vec![to(1, commit.clone()), to(2, commit)],
        ..Ready::default()
    };
    assert_eq!(
        replica.ready(),
        expected,
        "no answer before the round is confirmed"
    );
    replica.step(
        2,
        Message::CommitAck {
            ballot,
            read_round: 1,
            commit_slot: 1,
        },
    );
    let reply = Reply {
        request_id: 9,
        result: Ok(Bytes::from(vec![0])),
    };
    let number = replica.ready_number + 1;
    assert_eq!(
        replica.ready(),
        Ready {
            number,
            replies: vec![reply],
            ..Ready::default()
        }
    );
}

#[test]
fn snapshot_chunks_are_reassembled_acknowledged_and_installed() {
    let mut replica = replica(2, 3);
    let ballot = Ballot::new(1, 0);
    let chunk = |offset_bytes: u64, data: &'static [u8]| Message::SnapshotChunk {
        ballot,
        snapshot_slot: 6,
        last_timestamp_ns: 60,
        offset_bytes,
        total_size_bytes: 4,
        data: Bytes::from_static(data),
    };
    replica.step(0, chunk(0, b"ab"));
    let ack = |next_offset_bytes| Message::SnapshotAck {
        ballot,
        snapshot_slot: 6,
        next_offset_bytes,
    };
    assert_eq!(
        replica.ready(),
        Ready {
            number: 1,
            messages_now: vec![to(0, ack(2))],
            ..Ready::default()
        }
    );
    replica.step(0, chunk(2, b"cd"));
    let snapshot = SnapshotData {
        slot: 6,
        last_timestamp_ns: 60,
        bytes: Bytes::from_static(b"abcd"),
    };
    let expected = Ready {
        number: 2,
        messages_now: vec![to(0, ack(4))],
        snapshot_to_persist: Some(snapshot),
        ..Ready::default()
    };
    assert_eq!(replica.ready(), expected);
    assert_eq!(
        (
            replica.commit_slot(),
            replica.applied_slot(),
            replica.log_start_slot()
        ),
        (6, 6, 6)
    );
    assert_eq!(replica.state_machine().applied.len(), 4);
}

#[test]
fn step_drops_messages_from_outside_the_group_or_naming_another_owner() {
    let mut replica = replica(1, 3);
    replica.step(
        7,
        Message::Prepare {
            ballot: Ballot::new(1, 7),
            commit_slot: 0,
        },
    );
    replica.step(
        1,
        Message::Prepare {
            ballot: Ballot::new(1, 1),
            commit_slot: 0,
        },
    );
    replica.step(
        2,
        Message::Prepare {
            ballot: Ballot::new(1, 0),
            commit_slot: 0,
        },
    );
    assert_eq!(
        replica.ready(),
        Ready {
            number: 1,
            ..Ready::default()
        }
    );
}

#[test]
#[should_panic(expected = "advance beyond the last ready")]
fn advance_beyond_the_last_ready_is_a_driver_bug() {
    let mut replica = replica(0, 3);
    replica.advance(Persisted { ready_number: 1 });
}

#[test]
fn a_single_replica_group_commits_and_answers_alone() {
    let mut replica = replica(0, 1);
    let ready = tick_until_candidate(&mut replica);
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            promised: Ballot::new(1, 0)
        })
    );
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    assert!(replica.is_leader());
    replica.propose(3, Bytes::from_static(b"solo")).unwrap();
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    let ready = replica.ready();
    assert_eq!(
        ready.replies,
        vec![Reply {
            request_id: 3,
            result: Ok(Bytes::from_static(b"solo"))
        }]
    );
}

#[test]
fn catch_up_below_the_compacted_prefix_streams_the_snapshot_in_chunks() {
    let snapshot = SnapshotData {
        slot: 10,
        last_timestamp_ns: 5,
        bytes: Bytes::from_static(b"xyz"),
    };
    let recovered = Recovered {
        snapshot: Some(snapshot),
        ..Recovered::default()
    };
    let mut config = config(0, 3);
    config.snapshot_chunk_size_bytes_max = 2;
    let mut replica = Replica::new(config, recovered, Recorder::default(), 1).unwrap();
    tick_until_candidate(&mut replica);
    let ballot = replica.ballot();
    replica.step(
        1,
        Message::Promise {
            ballot,
            accepted: vec![],
            commit_slot: 10,
        },
    );
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    let ready = replica.ready();
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    replica.step(1, Message::Accepted { ballot, slot: 10 });
    for _ in 0..replica.config().heartbeat_interval_ticks {
        replica.tick();
    }
    replica.ready();
    assert_eq!(replica.commit_slot(), 11);
    let chunk = |offset_bytes: u64, data: &'static [u8]| Message::SnapshotChunk {
        ballot,
        snapshot_slot: 10,
        last_timestamp_ns: 5,
        offset_bytes,
        total_size_bytes: 3,
        data: Bytes::from_static(data),
    };
    replica.step(
        2,
        Message::CommitAck {
            ballot,
            read_round: 0,
            commit_slot: 3,
        },
    );
    assert_eq!(replica.ready().messages_now, vec![to(2, chunk(0, b"xy"))]);
    let ack = |next_offset_bytes| Message::SnapshotAck {
        ballot,
        snapshot_slot: 10,
        next_offset_bytes,
    };
    replica.step(2, ack(2));
    assert_eq!(replica.ready().messages_now, vec![to(2, chunk(2, b"z"))]);
    replica.step(2, ack(3));
    assert_eq!(
        replica.ready().messages_now,
        vec![],
        "the transfer is complete"
    );
}

fn slot_entries(slots: std::ops::Range<u64>, ballot: Ballot) -> Vec<SlotEntry> {
    slots
        .map(|slot| SlotEntry {
            slot,
            ballot,
            entry: entry(10 + slot, vec![command(1, slot, b"x")]),
        })
        .collect()
}

#[test]
fn on_prepare_sends_a_bounded_chosen_prefix_and_every_entry_from_the_commit_slot_up() {
    // A replica committed to 20 answers a candidate that knows nothing: at most
    // `catch_up_slots_max` chosen entries, then all of its possibly unchosen tail.
    let old = Ballot::new(1, 0);
    let recovered = Recovered {
        hard_state: HardState { promised: old },
        snapshot: None,
        entries: slot_entries(0..22, old),
    };
    let mut config = config(1, 3);
    config.catch_up_slots_max = 4;
    let mut replica = Replica::new(config, recovered, Recorder::default(), 1).unwrap();
    replica.step(
        0,
        Message::Commit {
            ballot: old,
            commit_slot: 20,
            read_round: 0,
        },
    );
    assert_eq!(replica.commit_slot(), 20);
    for _ in 0..replica.config().election_timeout_min_ticks {
        replica.tick();
    }
    replica.ready();
    let ballot = Ballot::new(2, 2);
    replica.step(
        2,
        Message::Prepare {
            ballot,
            commit_slot: 0,
        },
    );
    let ready = replica.ready();
    let mut accepted = slot_entries(0..4, old);
    accepted.extend(slot_entries(20..22, old));
    let promise = Message::Promise {
        ballot,
        accepted,
        commit_slot: 20,
    };
    assert_eq!(ready.hard_state, Some(HardState { promised: ballot }));
    assert_eq!(ready.messages_after_persist, vec![to(2, promise)]);
}

#[test]
fn a_candidate_adopts_chosen_entries_asks_again_and_re_proposes_only_above_them() {
    // A restarted replica (commit slot 0) runs for leader; replica 1 committed to 6 and
    // reports only slots 0..4 of that chosen prefix plus its unchosen slot 6.
    let mut replica = replica(0, 3);
    tick_until_candidate(&mut replica);
    let ballot = replica.ballot();
    let old = Ballot::new(0, 1);
    let mut accepted = slot_entries(0..4, old);
    accepted.extend(slot_entries(6..7, old));
    replica.step(
        1,
        Message::Promise {
            ballot,
            accepted,
            commit_slot: 6,
        },
    );
    assert_eq!(replica.commit_slot(), 4, "slots 0..4 adopted as chosen");
    let ready = replica.ready();
    assert_eq!(ready.entries_to_persist, slot_entries(0..4, old));
    assert_eq!(ready.hard_state, Some(HardState { promised: ballot }));
    assert_eq!(ready.applied_slots, 0..4);
    replica.advance(Persisted {
        ready_number: ready.number,
    });
    assert_eq!(
        replica.role(),
        Role::Candidate,
        "slots 4..6 are chosen but unknown here: leading could overwrite them"
    );
    let prepare = Message::Prepare {
        ballot,
        commit_slot: 4,
    };
    let ready = replica.ready();
    assert_eq!(
        ready.messages_now,
        vec![to(1, prepare.clone()), to(2, prepare)]
    );
    let mut accepted = slot_entries(4..6, old);
    accepted.extend(slot_entries(6..7, old));
    replica.step(
        1,
        Message::Promise {
            ballot,
            accepted,
            commit_slot: 6,
        },
    );
    assert!(replica.is_leader());
    assert_eq!(replica.commit_slot(), 6);
    let ready = replica.ready();
    let reproposed = slot_entries(6..7, old)
        .into_iter()
        .map(|e| SlotEntry { ballot, ..e })
        .collect::<Vec<_>>();
    let mut persisted = slot_entries(4..6, old);
    persisted.extend(reproposed);
    assert_eq!(
        ready.entries_to_persist, persisted,
        "chosen slots are adopted, only slot 6 is re-proposed"
    );
    assert_eq!(ready.applied_slots, 4..6);
}

#[test]
fn a_promise_reporting_an_absurd_slot_is_not_counted() {
    let mut replica = replica(0, 3);
    tick_until_candidate(&mut replica);
    let ballot = replica.ballot();
    replica.step(
        1,
        Message::Promise {
            ballot,
            accepted: vec![SlotEntry {
                slot: u64::MAX,
                ballot: Ballot::new(0, 1),
                entry: entry(5, vec![]),
            }],
            commit_slot: 0,
        },
    );
    let expected = Ready {
        number: 2,
        ..Ready::default()
    };
    assert_eq!(
        replica.ready(),
        expected,
        "no self-promise: the promise was ignored"
    );
    assert_eq!(replica.role(), Role::Candidate);
}

#[test]
fn a_stalled_snapshot_transfer_stops_blocking_an_older_snapshot_after_an_election_timeout() {
    // Replica 1 began sending its snapshot at 40 and then lost its disk for good; replica 0's
    // snapshot at 32 is declined while 1's transfer is fresh, and accepted once it is stale.
    let mut replica = replica(2, 3);
    let chunk = |ballot: Ballot, snapshot_slot: u64| Message::SnapshotChunk {
        ballot,
        snapshot_slot,
        last_timestamp_ns: 60,
        offset_bytes: 0,
        total_size_bytes: 4,
        data: Bytes::from_static(b"ab"),
    };
    let ack = |ballot: Ballot, snapshot_slot: u64, next_offset_bytes: u64| {
        to(
            0,
            Message::SnapshotAck {
                ballot,
                snapshot_slot,
                next_offset_bytes,
            },
        )
    };
    replica.step(1, chunk(Ballot::new(1, 1), 40));
    replica.ready();
    let ballot = Ballot::new(2, 0);
    replica.step(0, chunk(ballot, 32));
    let ready = replica.ready();
    assert_eq!(ready.messages_now, vec![ack(ballot, 32, 4)], "declined");
    for _ in 0..replica.config().election_timeout_max_ticks {
        replica.tick();
    }
    replica.ready();
    replica.step(0, chunk(ballot, 32));
    let ready = replica.ready();
    assert_eq!(ready.messages_now, vec![ack(ballot, 32, 2)], "receiving");
}
