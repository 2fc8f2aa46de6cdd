//! The acceptor and learner side: handlers for messages a leader or candidate sends.
//!
//! I4: a replica never promises or accepts below its promised ballot, and its `Promise` and
//! `Accepted` leave only after the promise and the entry are durable (`messages_after_persist`).

use bytes::Bytes;

use crate::ballot::{Ballot, ReplicaId};
use crate::message::{Entry, Message, SlotEntry};
use crate::ready::SnapshotData;
use crate::replica::{IncomingSnapshot, LogSlot, Replica, Role, SNAPSHOT_SIZE_BYTES_MAX};
use crate::state_machine::StateMachine;

impl<S: StateMachine> Replica<S> {
    /// Whether this replica heard from a live leader recently enough to ignore a usurper
    /// (leader stickiness): it leads itself, or it follows a leader that spoke within the
    /// minimum election timeout.
    pub(crate) fn is_sticky(&self) -> bool {
        match self.role {
            Role::Leader => true,
            Role::Candidate => false,
            Role::Follower => {
                self.leader_hint.is_some()
                    && self.election_elapsed_ticks < self.config.election_timeout_min_ticks
            }
        }
    }

    /// Phase 1b. Promises `ballot` unless a higher ballot was promised (Nack) or a live leader
    /// is known (stickiness: no answer).
    pub(crate) fn on_prepare(&mut self, from: ReplicaId, ballot: Ballot, commit_slot: u64) {
        if ballot < self.promised {
            self.send_now(
                from,
                Message::Nack {
                    ballot: self.promised,
                },
            );
            return;
        }
        if self.role == Role::Candidate && ballot < self.ballot {
            // A competing candidate with a lower ballot: stay silent. Our own ballot is not
            // promised yet, so a Nack naming it would depose the other replica even if a
            // majority made it leader (a Nack may carry only a promised ballot, see
            // `on_nack`); and promising would abandon our own, higher candidacy.
            return;
        }
        if ballot > self.promised {
            if self.is_sticky() {
                return;
            }
            if commit_slot < self.log_start_slot {
                // The candidate misses entries we compacted; it cannot fill those slots
                // safely, so help it catch up instead of promising.
                self.send_snapshot_chunk(from, 0);
                return;
            }
            self.promise(ballot);
            self.become_follower(None);
        }
        assert!(ballot == self.promised);
        if commit_slot < self.log_start_slot {
            return;
        }
        // Our entries below our commit slot are chosen: send at most `catch_up_slots_max` of
        // them (the candidate adopts them and asks again for more), then every entry from our
        // commit slot up, which the candidate needs in full to re-propose safely.
        let chosen_end = self
            .commit_slot
            .min(commit_slot.saturating_add(self.config.catch_up_slots_max));
        let tail_start = self.commit_slot.max(commit_slot);
        let log_range = |range| {
            self.log
                .range(range)
                .map(|(slot, log_slot): (&u64, &LogSlot)| SlotEntry {
                    slot: *slot,
                    ballot: log_slot.ballot,
                    entry: log_slot.entry.clone(),
                })
        };
        let accepted: Vec<SlotEntry> = log_range(commit_slot..chosen_end.max(commit_slot))
            .chain(log_range(tail_start..u64::MAX))
            .collect();
        let commit_slot = self.commit_slot;
        self.send_after_persist(
            from,
            Message::Promise {
                ballot,
                accepted,
                commit_slot,
            },
        );
    }

    /// Phase 2b. Accepts `entry` at `slot` unless a higher ballot was promised; `Accepted`
    /// leaves after the entry is durable.
    pub(crate) fn on_accept(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        slot: u64,
        entry: Entry,
        commit_slot: u64,
    ) {
        if ballot < self.promised {
            self.send_now(
                from,
                Message::Nack {
                    ballot: self.promised,
                },
            );
            return;
        }
        self.promise(ballot);
        self.follow(from, ballot);
        if slot < self.commit_slot {
            // Already chosen here: the leader must be re-sending the chosen value (I4). A
            // majority holds it durably already, so vote for it without writing it again; a
            // new leader that re-proposes chosen slots needs these votes to make progress.
            if let Some(log_slot) = self.log.get(&slot) {
                assert!(log_slot.entry == entry, "two values chosen at slot {slot}");
            }
            self.send_after_persist(from, Message::Accepted { ballot, slot });
        } else {
            let current = self.log.get(&slot);
            let same = current.is_some_and(|c| c.ballot == ballot && c.entry == entry);
            if !same {
                self.log_accept(slot, ballot, entry);
            }
            self.send_after_persist(from, Message::Accepted { ballot, slot });
        }
        self.learn_commit(ballot, commit_slot);
    }

    /// The leader's heartbeat: learn its commit slot and answer for catch-up and read-index.
    pub(crate) fn on_commit(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        commit_slot: u64,
        read_round: u64,
    ) {
        if ballot < self.promised {
            self.send_now(
                from,
                Message::Nack {
                    ballot: self.promised,
                },
            );
            return;
        }
        self.follow(from, ballot);
        self.learn_commit(ballot, commit_slot);
        let commit_slot = self.commit_slot;
        self.send_now(
            from,
            Message::CommitAck {
                ballot,
                read_round,
                commit_slot,
            },
        );
    }

    /// Recognizes `from` as the leader of `ballot` (not below the promise): a leader or
    /// candidate of another ballot stands down, and the election timer restarts.
    fn follow(&mut self, from: ReplicaId, ballot: Ballot) {
        assert!(ballot >= self.promised);
        assert_eq!(
            ballot.replica, from,
            "step() drops messages naming another owner"
        );
        let is_other = self.role != Role::Follower && self.ballot != ballot;
        if is_other || self.role == Role::Candidate {
            self.become_follower(Some(from));
        }
        self.leader_hint = Some(from);
        self.election_elapsed_ticks = 0;
    }

    /// Advances the commit slot over entries accepted under the leader's `ballot`: the leader
    /// proposes one value per slot per ballot, so such an entry below the leader's commit slot
    /// is the chosen one (I4).
    pub(crate) fn learn_commit(&mut self, ballot: Ballot, leader_commit_slot: u64) {
        while self.commit_slot < leader_commit_slot {
            match self.log.get(&self.commit_slot) {
                Some(log_slot) if log_slot.ballot == ballot => self.commit_slot += 1,
                _ => break,
            }
        }
    }

    /// Receives a snapshot chunk; snapshots hold only chosen state, so any sender will do.
    pub(crate) fn on_snapshot_chunk(&mut self, from: ReplicaId, message: Message) {
        let Message::SnapshotChunk {
            ballot,
            snapshot_slot,
            last_timestamp_ns,
            offset_bytes,
            total_size_bytes,
            data,
        } = message
        else {
            return;
        };
        let ack_ballot = self.promised.max(ballot);
        // A leader re-proposed every slot from its commit slot up in phase 1, so it never
        // needs a snapshot; installing one would move its commit slot under its pipeline.
        let useless = snapshot_slot <= self.commit_slot || self.role == Role::Leader;
        // While a newer snapshot is arriving, older ones are declined, so that two senders
        // cannot restart each other's transfer forever.
        let stale_ticks = self.config.election_timeout_max_ticks;
        let superseded = self.incoming_snapshot.as_ref().is_some_and(|i| {
            i.slot > snapshot_slot && i.progress_tick + stale_ticks > self.tick_count
        });
        if useless || superseded || total_size_bytes > SNAPSHOT_SIZE_BYTES_MAX {
            let next_offset_bytes = total_size_bytes;
            let ack = Message::SnapshotAck {
                ballot: ack_ballot,
                snapshot_slot,
                next_offset_bytes,
            };
            self.send_now(from, ack);
            return;
        }
        if offset_bytes == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                slot: snapshot_slot,
                progress_tick: self.tick_count,
                last_timestamp_ns,
                total_size_bytes,
                bytes: Vec::new(),
            });
        }
        let next_offset_bytes = self.snapshot_chunk_append(snapshot_slot, offset_bytes, &data);
        let ack = Message::SnapshotAck {
            ballot: ack_ballot,
            snapshot_slot,
            next_offset_bytes,
        };
        self.send_now(from, ack);
    }

    /// Appends a chunk at the expected offset, installs a complete snapshot, and returns the
    /// next offset wanted.
    fn snapshot_chunk_append(&mut self, snapshot_slot: u64, offset_bytes: u64, data: &[u8]) -> u64 {
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return 0;
        };
        if incoming.slot != snapshot_slot {
            return 0;
        }
        let received = incoming.bytes.len() as u64;
        let fits = data.len() as u64 <= incoming.total_size_bytes - received;
        if offset_bytes == received && fits {
            incoming.bytes.extend_from_slice(data);
            incoming.progress_tick = self.tick_count;
        }
        if (incoming.bytes.len() as u64) < incoming.total_size_bytes {
            return incoming.bytes.len() as u64;
        }
        let incoming = self.incoming_snapshot.take().expect("checked above");
        let total_size_bytes = incoming.total_size_bytes;
        let snapshot = SnapshotData {
            slot: incoming.slot,
            last_timestamp_ns: incoming.last_timestamp_ns,
            bytes: Bytes::from(incoming.bytes),
        };
        match self.install_snapshot(snapshot) {
            Ok(()) => total_size_bytes,
            Err(_) => 0,
        }
    }

    /// Sends the chunk of our snapshot starting at `offset_bytes`.
    pub(crate) fn send_snapshot_chunk(&mut self, to: ReplicaId, offset_bytes: u64) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let total_size_bytes = snapshot.bytes.len() as u64;
        let start = offset_bytes.min(total_size_bytes) as usize;
        let end = (start + self.config.snapshot_chunk_size_bytes_max).min(snapshot.bytes.len());
        let message = Message::SnapshotChunk {
            ballot: self.ballot,
            snapshot_slot: snapshot.slot,
            last_timestamp_ns: snapshot.last_timestamp_ns,
            offset_bytes: start as u64,
            total_size_bytes,
            data: snapshot.bytes.slice(start..end),
        };
        self.send_now(to, message);
    }

    /// A peer asks for the next chunk of a snapshot (or is done with it).
    pub(crate) fn on_snapshot_ack(
        &mut self,
        from: ReplicaId,
        ballot: Ballot,
        snapshot_slot: u64,
        next_offset_bytes: u64,
    ) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let total_size_bytes = snapshot.bytes.len() as u64;
        let current = snapshot.slot == snapshot_slot;
        let done = current && next_offset_bytes >= total_size_bytes;
        if let Some(leader) = self.leader.as_mut() {
            let peer = &mut leader.peers[from as usize];
            if done {
                peer.snapshot_next_offset_bytes = None;
                peer.commit_slot = peer.commit_slot.max(snapshot_slot);
            } else {
                peer.snapshot_next_offset_bytes = Some(next_offset_bytes);
            }
            if ballot == self.ballot {
                peer.last_ack_tick = self.tick_count;
            }
        }
        if done {
            return;
        }
        let offset = if current { next_offset_bytes } else { 0 };
        self.send_snapshot_chunk(from, offset);
    }
}
