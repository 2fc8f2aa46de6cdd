//! The proposer side: elections (phase 1), the leader's pipeline (phase 2), heartbeats,
//! catch-up and read-index.
//!
//! A candidate does not promise its own ballot until the promises of the others would make a
//! majority with it. Until then it still follows a live leader's `Accept` or `Commit`, so a
//! replica that was cut off and returns with a high ballot does not depose a healthy leader
//! (together with the stickiness in `acceptor.rs`).

use bytes::Bytes;

use crate::ballot::{Ballot, ReplicaId};
use crate::message::{COMMAND_HEADER_SIZE_BYTES, Command, ENTRY_HEADER_SIZE_BYTES, Entry};
use crate::message::{Message, SlotEntry};
use crate::ready::Reply;
use crate::replica::{
    CandidateState, InFlight, LeaderState, LogSlot, PROMISE_SLOT_SPAN_MAX, PeerProgress,
    PendingRead, Replica, Role,
};
use crate::state_machine::StateMachine;

impl<S: StateMachine> Replica<S> {
    /// No leader spoke within the randomized timeout: start phase 1 with a fresh ballot.
    pub(crate) fn on_election_timeout(&mut self) {
        assert!(self.role != Role::Leader);
        let round_max = self
            .round_max_seen
            .max(self.promised.round)
            .max(self.ballot.round);
        let ballot = Ballot::new(round_max, self.id()).next_for(self.id());
        self.round_max_seen = ballot.round;
        self.role = Role::Candidate;
        self.ballot = ballot;
        self.candidate = Some(CandidateState::default());
        self.leader = None;
        self.leader_hint = None;
        self.reset_election_timer();
        self.candidate_send_prepare();
        self.candidate_maybe_self_promise();
    }

    /// Sends `Prepare` for the current ballot, from the current commit slot, to every peer.
    fn candidate_send_prepare(&mut self) {
        let (ballot, commit_slot) = (self.ballot, self.commit_slot);
        for peer in self.peers() {
            self.send_now(
                peer,
                Message::Prepare {
                    ballot,
                    commit_slot,
                },
            );
        }
    }

    /// Promises the own ballot once the others' promises make a majority with it; the own
    /// promise counts after it is durable (`advance`).
    fn candidate_maybe_self_promise(&mut self) {
        let majority = self.config.majority();
        let Some(candidate) = self.candidate.as_mut() else {
            return;
        };
        let others = candidate.promises.count_ones() as usize;
        if candidate.self_promise_requested || others + 1 < majority {
            return;
        }
        candidate.self_promise_requested = true;
        assert!(
            self.ballot > self.promised,
            "a candidate's ballot is above every promise"
        );
        self.promise(self.ballot);
    }

    /// The own promise of `promised` is durable: count it with the own accepted entries.
    pub(crate) fn advance_own_promise(&mut self, promised: Ballot) {
        if self.role != Role::Candidate || self.ballot != promised || self.promised != promised {
            return;
        }
        let own: Vec<SlotEntry> = self
            .log
            .range(self.commit_slot..)
            .map(|(slot, log_slot)| SlotEntry {
                slot: *slot,
                ballot: log_slot.ballot,
                entry: log_slot.entry.clone(),
            })
            .collect();
        self.candidate_merge(self.id(), own);
        self.candidate_maybe_win();
    }

    /// Phase 1b arrives at the candidate.
    pub(crate) fn on_promise(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        accepted: Vec<SlotEntry>,
        commit_slot: u64,
    ) {
        if self.role != Role::Candidate || ballot != self.ballot {
            return;
        }
        let span_end = commit_slot.saturating_add(PROMISE_SLOT_SPAN_MAX);
        if accepted
            .iter()
            .any(|slot_entry| slot_entry.slot >= span_end)
        {
            // No leader accepts that far beyond a commit slot: a hostile or corrupt promise.
            // Not counting it is safe; re-proposing up to its slot could loop for ages.
            return;
        }
        let accepted = self.candidate_adopt_chosen(commit_slot, accepted);
        self.candidate_merge(from, accepted);
        self.candidate_maybe_self_promise();
        self.candidate_maybe_win();
    }

    /// Adopts the promise's entries below the promiser's `commit_slot` as chosen (a log below
    /// its commit slot holds only chosen values, I4) and returns the others. The candidate's
    /// commit slot rises over them, so it re-proposes only above, and a restarted replica
    /// that forgot its commit slot neither rewrites nor re-proposes the chosen prefix.
    fn candidate_adopt_chosen(
        &mut self,
        commit_slot: u64,
        accepted: Vec<SlotEntry>,
    ) -> Vec<SlotEntry> {
        let candidate = self.candidate.as_mut().expect("only a candidate adopts");
        candidate.chosen_floor = candidate.chosen_floor.max(commit_slot);
        let mut rest = Vec::new();
        for slot_entry in accepted {
            if slot_entry.slot >= commit_slot {
                rest.push(slot_entry);
            } else if slot_entry.slot == self.commit_slot {
                self.log_chosen(slot_entry.slot, slot_entry.ballot, slot_entry.entry);
            }
        }
        rest
    }

    /// Records `from`'s promise and keeps the highest-ballot entry per slot.
    fn candidate_merge(&mut self, from: ReplicaId, accepted: Vec<SlotEntry>) {
        let commit_slot = self.commit_slot;
        let candidate = self
            .candidate
            .as_mut()
            .expect("only a candidate merges promises");
        if candidate.promises & (1 << from) != 0 {
            return;
        }
        candidate.promises |= 1 << from;
        for slot_entry in accepted {
            if slot_entry.slot < commit_slot {
                continue;
            }
            let higher = candidate
                .accepted
                .get(&slot_entry.slot)
                .is_none_or(|current| slot_entry.ballot > current.ballot);
            if higher {
                let log_slot = LogSlot {
                    ballot: slot_entry.ballot,
                    entry: slot_entry.entry,
                };
                candidate.accepted.insert(slot_entry.slot, log_slot);
            }
        }
    }

    fn candidate_maybe_win(&mut self) {
        let Some(candidate) = &self.candidate else {
            return;
        };
        let own = candidate.promises & (1 << self.id()) != 0;
        if !own || (candidate.promises.count_ones() as usize) < self.config.majority() {
            return;
        }
        if self.commit_slot < candidate.chosen_floor {
            // Chosen slots we have not seen yet: the promises omitted them (bounded size), so
            // leading now could fill them with no-ops. Ask the same peers again from our
            // raised commit slot; they promised this ballot already and answer at once.
            self.candidate_prepare_again();
            return;
        }
        self.become_leader();
    }

    /// Restarts phase 1 of the same ballot from the current commit slot, keeping the own
    /// durable promise.
    fn candidate_prepare_again(&mut self) {
        let me = 1 << self.id();
        let candidate = self.candidate.as_mut().expect("only a candidate prepares");
        candidate.promises &= me;
        self.candidate_send_prepare();
    }

    /// Phase 1 won: re-propose the highest-ballot value of every slot from the commit slot up,
    /// fill holes with no-ops, and start heartbeats.
    fn become_leader(&mut self) {
        let candidate = self
            .candidate
            .take()
            .expect("only a candidate becomes leader");
        assert_eq!(self.ballot, self.promised);
        self.role = Role::Leader;
        self.leader_hint = Some(self.id());
        let peer = PeerProgress {
            last_ack_tick: self.tick_count,
            ..PeerProgress::default()
        };
        self.leader = Some(LeaderState {
            next_slot: self.commit_slot,
            in_flight: std::collections::BTreeMap::new(),
            ready_slot: self.commit_slot,
            peers: vec![peer; self.config.replica_count],
            read_round: 0,
            read_round_unsent: false,
            heartbeat_commit_slot: self.commit_slot,
            heartbeat_elapsed_ticks: 0,
            quorum_check_elapsed_ticks: 0,
        });
        let end = candidate
            .accepted
            .last_key_value()
            .map_or(self.commit_slot, |(s, _)| s + 1);
        let mut previous_timestamp_ns = self.timestamp_max_ns;
        for slot in self.commit_slot..end.max(self.commit_slot) {
            let entry = match candidate.accepted.get(&slot) {
                Some(log_slot) => log_slot.entry.clone(),
                None => Entry::noop(previous_timestamp_ns),
            };
            previous_timestamp_ns = entry.timestamp_ns;
            self.leader_propose_slot(slot, entry);
        }
        if end <= self.commit_slot {
            let entry = Entry::noop(self.stamp());
            self.leader_propose_slot(self.commit_slot, entry);
        }
        let leader = self.leader.as_mut().expect("just became leader");
        leader.ready_slot = leader.next_slot;
        self.broadcast_commit();
    }

    /// Writes `entry` at the next slot under the leader's ballot and sends it to every peer.
    fn leader_propose_slot(&mut self, slot: u64, entry: Entry) {
        let ballot = self.ballot;
        let commit_slot = self.commit_slot;
        let tick = self.tick_count;
        let leader = self.leader.as_mut().expect("only a leader proposes");
        assert_eq!(slot, leader.next_slot, "a leader fills slots in order");
        leader.next_slot += 1;
        leader.in_flight.insert(
            slot,
            InFlight {
                votes: 0,
                chosen: false,
                sent_tick: tick,
            },
        );
        for peer in self.peers() {
            let message = Message::Accept {
                ballot,
                slot,
                entry: entry.clone(),
                commit_slot,
            };
            self.send_now(peer, message);
        }
        self.log_accept(slot, ballot, entry);
    }

    /// Packs queued client requests into entries while the pipeline has room.
    pub(crate) fn flush_proposals(&mut self) {
        loop {
            let Some(leader) = &self.leader else {
                return;
            };
            let window_full = leader.in_flight.len() as u64 >= self.config.pipeline_slots_max;
            if window_full || self.requests.is_empty() {
                return;
            }
            let slot = leader.next_slot;
            let (commands, request_ids) = self.flush_proposals_batch();
            let entry = Entry::new(self.stamp(), commands);
            self.requests_in_slots.insert(slot, request_ids);
            self.leader_propose_slot(slot, entry);
        }
    }

    /// Takes up to `batch_count_max` requests and `batch_size_bytes_max` bytes (at least one).
    fn flush_proposals_batch(&mut self) -> (Vec<Command>, Vec<u64>) {
        let mut commands = Vec::new();
        let mut request_ids = Vec::new();
        let mut size_bytes = ENTRY_HEADER_SIZE_BYTES;
        while let Some((_, payload)) = self.requests.front() {
            let cost = COMMAND_HEADER_SIZE_BYTES + payload.len();
            let full = commands.len() >= self.config.batch_count_max
                || size_bytes + cost > self.config.batch_size_bytes_max;
            if !commands.is_empty() && full {
                break;
            }
            let (request_id, payload) = self.requests.pop_front().expect("front exists");
            size_bytes += cost;
            commands.push(Command {
                origin: self.id(),
                request_id,
                payload,
            });
            request_ids.push(request_id);
        }
        assert!(!commands.is_empty());
        (commands, request_ids)
    }

    /// Phase 2b arrives at the leader.
    pub(crate) fn on_accepted(&mut self, from: ReplicaId, ballot: Ballot, slot: u64) {
        if self.role != Role::Leader || ballot != self.ballot {
            return;
        }
        let tick = self.tick_count;
        if let Some(leader) = self.leader.as_mut() {
            leader.peers[from as usize].last_ack_tick = tick;
        }
        self.record_vote(from, slot);
    }

    /// Counts `replica`'s durable acceptance of `slot`; a majority chooses it, and the commit
    /// slot advances over the chosen prefix.
    pub(crate) fn record_vote(&mut self, replica: ReplicaId, slot: u64) {
        let majority = self.config.majority();
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        if let Some(in_flight) = leader.in_flight.get_mut(&slot) {
            in_flight.votes |= 1 << replica;
            if in_flight.votes.count_ones() as usize >= majority {
                in_flight.chosen = true;
            }
        }
        while let Some(first) = leader.in_flight.first_entry() {
            assert_eq!(
                *first.key(),
                self.commit_slot,
                "in-flight slots follow the commit slot"
            );
            if !first.get().chosen {
                break;
            }
            first.remove();
            self.commit_slot += 1;
        }
    }

    /// A replica promised a higher ballot: a leader or candidate below it stands down. Every
    /// Nack carries a ballot its sender has promised (never an unpromised candidacy), so a
    /// leader is deposed only by a ballot that can actually win.
    pub(crate) fn on_nack(&mut self, ballot: Ballot) {
        self.round_max_seen = self.round_max_seen.max(ballot.round);
        if self.role != Role::Follower && ballot > self.ballot {
            self.become_follower(None);
        }
    }

    /// A follower confirms the leader's ballot (read-index) and reports its commit slot.
    pub(crate) fn on_commit_ack(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        read_round: u64,
        commit_slot: u64,
    ) {
        if self.role != Role::Leader || ballot != self.ballot {
            return;
        }
        let tick = self.tick_count;
        let leader = self.leader.as_mut().expect("role is leader");
        let peer = &mut leader.peers[from as usize];
        peer.last_ack_tick = tick;
        peer.read_round = peer.read_round.max(read_round);
        peer.commit_slot = commit_slot;
        let behind = commit_slot < leader.heartbeat_commit_slot.min(self.commit_slot);
        if behind {
            self.catch_up(from);
        }
    }

    /// Sends a lagging peer the chosen entries it misses, or our snapshot if they are
    /// compacted. Re-accepting a chosen value under our ballot is safe: it is our value there.
    fn catch_up(&mut self, peer: ReplicaId) {
        let leader = self
            .leader
            .as_ref()
            .expect("only a leader catches peers up");
        let progress = &leader.peers[peer as usize];
        let peer_commit_slot = progress.commit_slot;
        if peer_commit_slot < self.log_start_slot {
            let offset = progress.snapshot_next_offset_bytes.unwrap_or(0);
            self.send_snapshot_chunk(peer, offset);
            return;
        }
        let end = (peer_commit_slot + self.config.catch_up_slots_max).min(self.commit_slot);
        let ballot = self.ballot;
        let commit_slot = self.commit_slot;
        for slot in peer_commit_slot..end {
            let entry = self
                .log
                .get(&slot)
                .expect("chosen slots above the snapshot are logged");
            let message = Message::Accept {
                ballot,
                slot,
                entry: entry.entry.clone(),
                commit_slot,
            };
            self.send_now(peer, message);
        }
    }

    /// The leader's timer: heartbeats, accept retries and the quorum check.
    pub(crate) fn tick_leader(&mut self) {
        let heartbeat_interval = self.config.heartbeat_interval_ticks;
        let window = self.config.election_timeout_max_ticks;
        let majority = self.config.majority();
        let tick = self.tick_count;
        let me = self.id() as usize;
        let leader = self.leader.as_mut().expect("role is leader");
        leader.heartbeat_elapsed_ticks += 1;
        leader.quorum_check_elapsed_ticks += 1;
        if leader.quorum_check_elapsed_ticks >= window {
            leader.quorum_check_elapsed_ticks = 0;
            let live = leader
                .peers
                .iter()
                .enumerate()
                .filter(|(index, peer)| *index == me || peer.last_ack_tick + window > tick)
                .count();
            if live < majority {
                self.become_follower(None);
                return;
            }
        }
        if leader.heartbeat_elapsed_ticks >= heartbeat_interval {
            self.broadcast_commit();
        }
        // On every tick, not with the periodic heartbeat: each read round sends a heartbeat
        // too and restarts its timer, so under a steady stream of reads the periodic one never
        // fires, and a lost `Accept` at the head of the pipeline would block every write and
        // read for as long as the reads keep coming (cluster sim seed 22381: about 1 s).
        self.retry_accepts();
    }

    /// Sends the heartbeat: commit slot and current read round.
    pub(crate) fn broadcast_commit(&mut self) {
        let ballot = self.ballot;
        let commit_slot = self.commit_slot;
        let leader = self.leader.as_mut().expect("only a leader heartbeats");
        leader.heartbeat_elapsed_ticks = 0;
        leader.heartbeat_commit_slot = commit_slot;
        leader.read_round_unsent = false;
        let read_round = leader.read_round;
        for peer in self.peers() {
            self.send_now(
                peer,
                Message::Commit {
                    ballot,
                    commit_slot,
                    read_round,
                },
            );
        }
    }

    /// Re-sends `Accept`s of in-flight slots that wait `accept_retry_ticks` or longer, to the
    /// peers whose votes are missing.
    fn retry_accepts(&mut self) {
        let tick = self.tick_count;
        let retry_ticks = self.config.accept_retry_ticks;
        let ballot = self.ballot;
        let commit_slot = self.commit_slot;
        let peers: Vec<ReplicaId> = self.peers().collect();
        let leader = self.leader.as_mut().expect("only a leader retries");
        let mut resend = Vec::new();
        for (slot, in_flight) in &mut leader.in_flight {
            if in_flight.chosen || in_flight.sent_tick + retry_ticks > tick {
                continue;
            }
            in_flight.sent_tick = tick;
            for peer in &peers {
                if in_flight.votes & (1 << peer) == 0 {
                    resend.push((*peer, *slot));
                }
            }
        }
        for (peer, slot) in resend {
            let entry = self
                .log
                .get(&slot)
                .expect("in-flight slots are logged")
                .entry
                .clone();
            self.send_now(
                peer,
                Message::Accept {
                    ballot,
                    slot,
                    entry,
                    commit_slot,
                },
            );
        }
    }

    /// Registers a read: it may be answered once a majority acknowledged a heartbeat of a
    /// later round (leadership confirmed) and the read slot is applied (I9).
    pub(crate) fn read_enqueue(&mut self, request_id: u64, query: Bytes) {
        let commit_slot = self.commit_slot;
        let leader = self.leader.as_mut().expect("only a leader reads");
        leader.read_round += 1;
        leader.read_round_unsent = true;
        let read_slot = commit_slot.max(leader.ready_slot);
        let read_round = leader.read_round;
        self.reads.push_back(PendingRead {
            request_id,
            query,
            read_slot,
            read_round,
        });
    }

    /// Starts the read-index round for reads registered since the last heartbeat.
    pub(crate) fn flush_read_round(&mut self) {
        let unsent = self
            .leader
            .as_ref()
            .is_some_and(|leader| leader.read_round_unsent);
        if unsent {
            self.broadcast_commit();
        }
    }

    /// Answers every read whose round a majority confirmed and whose slot is applied.
    pub(crate) fn serve_reads(&mut self) {
        let leader = self.leader.as_ref().expect("only a leader serves reads");
        let me = self.id() as usize;
        let mut rounds: Vec<u64> = leader
            .peers
            .iter()
            .enumerate()
            .map(|(index, peer)| {
                if index == me {
                    u64::MAX
                } else {
                    peer.read_round
                }
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed_round = rounds[self.config.majority() - 1];
        while let Some(read) = self.reads.front() {
            if read.read_round > confirmed_round || read.read_slot > self.applied_slot {
                break;
            }
            let read = self.reads.pop_front().expect("front exists");
            let result = Ok(self.state_machine.query(&read.query));
            self.out.replies.push(Reply {
                request_id: read.request_id,
                result,
            });
        }
    }
}
