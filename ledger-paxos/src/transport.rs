//! Moving messages between replicas: the [`Transport`] trait and its in-process implementation
//! over bounded crossbeam channels.
//!
//! ```text
//!   replica 0 ──send(to = 2, m)──► ChannelNetwork ──try_send──► inbox of replica 2 (bounded)
//!                                    │ inboxes[i]: Option<Sender>, swapped on crash/restart
//!                                    └── full or disconnected inbox: the message is dropped
//! ```
//!
//! Sending never blocks. Paxos already tolerates lost messages (every Accept, Prepare and read
//! round is retried by the core), so a full inbox drops the message and counts it instead of
//! stalling the sender's loop: two replicas blocked on each other's full inboxes would deadlock,
//! and one slow replica must never slow the leader down. A crashed replica's inbox is
//! disconnected, so messages to it vanish as they would on a real network.
//!
//! Messages carry their entries as `bytes::Bytes`, so an Accept fanned out to every peer shares
//! one buffer instead of copying it per replica. A TCP transport implements the same trait and
//! pushes what it reads off the socket into the same kind of inbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ballot::ReplicaId;
use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use parking_lot::RwLock;

/// How many messages an in-process inbox holds before further messages to it are dropped.
pub const INBOX_MESSAGE_COUNT_MAX: usize = 16 * 1024;

/// A message in flight, tagged with the replica that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound<M> {
    /// The sending replica.
    pub from: ReplicaId,
    /// The message itself.
    pub message: M,
}

/// Sends messages to the other replicas of one group. Implementations never block: a message
/// that cannot be delivered now is dropped (the protocol retries).
pub trait Transport<M>: Send + Sync + 'static {
    /// Sends `message` to replica `to`. Delivery is best effort: it may be dropped, but is never
    /// corrupted, duplicated by the transport or delivered to another replica.
    fn send(&self, to: ReplicaId, message: M);
}

/// The in-process network of one group: one bounded inbox per replica.
///
/// A replica's inbox is created by [`ChannelNetwork::connect`] and torn down by
/// [`ChannelNetwork::disconnect`], which is how a crash and a restart look to the peers.
#[derive(Debug)]
pub struct ChannelNetwork<M> {
    inboxes: RwLock<Vec<Option<Sender<Inbound<M>>>>>,
    inbox_message_count_max: usize,
    dropped_message_count: AtomicU64,
    overflow_message_count: AtomicU64,
    delivered_message_count: AtomicU64,
}

impl<M: Send + 'static> ChannelNetwork<M> {
    /// A network for `replica_count` replicas, all disconnected, with inboxes of
    /// [`INBOX_MESSAGE_COUNT_MAX`] messages.
    pub fn new(replica_count: usize) -> Arc<Self> {
        Self::with_inbox_capacity(replica_count, INBOX_MESSAGE_COUNT_MAX)
    }

    /// A network for `replica_count` replicas whose inboxes hold `inbox_message_count_max`
    /// messages each.
    ///
    /// # Panics
    /// If `replica_count` or `inbox_message_count_max` is zero.
    pub fn with_inbox_capacity(replica_count: usize, inbox_message_count_max: usize) -> Arc<Self> {
        assert!(replica_count > 0, "a group has at least one replica");
        assert!(
            inbox_message_count_max > 0,
            "an inbox holds at least one message"
        );
        Arc::new(Self {
            inboxes: RwLock::new((0..replica_count).map(|_| None).collect()),
            inbox_message_count_max,
            dropped_message_count: AtomicU64::new(0),
            overflow_message_count: AtomicU64::new(0),
            delivered_message_count: AtomicU64::new(0),
        })
    }

    /// The number of replicas this network connects.
    pub fn replica_count(&self) -> usize {
        self.inboxes.read().len()
    }

    /// Gives replica `index` a fresh, empty inbox and returns its receiving end. Messages queued
    /// in a previous inbox of the same replica are discarded with it.
    ///
    /// # Panics
    /// If `index` is not a replica of this network.
    pub fn connect(&self, index: ReplicaId) -> Receiver<Inbound<M>> {
        let (sender, receiver) = channel::bounded(self.inbox_message_count_max);
        let mut inboxes = self.inboxes.write();
        assert!(
            usize::from(index) < inboxes.len(),
            "replica {index} is not in this network"
        );
        inboxes[usize::from(index)] = Some(sender);
        receiver
    }

    /// Removes replica `index`'s inbox: later messages to it are dropped.
    ///
    /// # Panics
    /// If `index` is not a replica of this network.
    pub fn disconnect(&self, index: ReplicaId) {
        let mut inboxes = self.inboxes.write();
        assert!(
            usize::from(index) < inboxes.len(),
            "replica {index} is not in this network"
        );
        inboxes[usize::from(index)] = None;
    }

    /// The sending side for replica `from`: everything it sends is tagged with `from`.
    ///
    /// # Panics
    /// If `from` is not a replica of this network.
    pub fn endpoint(self: &Arc<Self>, from: ReplicaId) -> ChannelTransport<M> {
        assert!(
            usize::from(from) < self.replica_count(),
            "replica {from} is not in this network"
        );
        ChannelTransport {
            network: Arc::clone(self),
            from,
        }
    }

    /// How many messages were dropped because the inbox was full or disconnected.
    pub fn dropped_message_count(&self) -> u64 {
        self.dropped_message_count.load(Ordering::Relaxed)
    }

    /// How many of the dropped messages found their inbox full (rather than disconnected).
    pub fn overflow_message_count(&self) -> u64 {
        self.overflow_message_count.load(Ordering::Relaxed)
    }

    /// How many messages were put into an inbox.
    pub fn delivered_message_count(&self) -> u64 {
        self.delivered_message_count.load(Ordering::Relaxed)
    }

    fn deliver(&self, to: ReplicaId, envelope: Inbound<M>) {
        // The read lock guards only the `Sender` lookup and a non-blocking `try_send`: no I/O
        // and no waiting happens under it.
        let inboxes = self.inboxes.read();
        assert!(
            usize::from(to) < inboxes.len(),
            "replica {to} is not in this network"
        );
        let result = match &inboxes[usize::from(to)] {
            Some(sender) => sender.try_send(envelope),
            None => Err(TrySendError::Disconnected(envelope)),
        };
        let counter = match result {
            Ok(()) => &self.delivered_message_count,
            Err(TrySendError::Full(_)) => {
                self.overflow_message_count.fetch_add(1, Ordering::Relaxed);
                &self.dropped_message_count
            }
            Err(TrySendError::Disconnected(_)) => &self.dropped_message_count,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One replica's handle on a [`ChannelNetwork`]: a [`Transport`] whose messages are tagged with
/// the sending replica's index.
#[derive(Debug)]
pub struct ChannelTransport<M> {
    network: Arc<ChannelNetwork<M>>,
    from: ReplicaId,
}

impl<M> Clone for ChannelTransport<M> {
    fn clone(&self) -> Self {
        Self {
            network: Arc::clone(&self.network),
            from: self.from,
        }
    }
}

impl<M: Send + 'static> ChannelTransport<M> {
    /// The replica this endpoint sends as.
    pub fn from(&self) -> ReplicaId {
        self.from
    }
}

impl<M: Send + 'static> Transport<M> for ChannelTransport<M> {
    fn send(&self, to: ReplicaId, message: M) {
        self.network.deliver(
            to,
            Inbound {
                from: self.from,
                message,
            },
        );
    }
}
