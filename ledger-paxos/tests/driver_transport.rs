//! The in-process transport: messages reach the right inbox tagged with their sender, per-sender
//! order is kept, a full or disconnected inbox drops (and counts) instead of blocking, and entry
//! bytes are shared between receivers rather than copied.

use std::thread;

use bytes::Bytes;
use ledger_paxos::transport::{ChannelNetwork, Inbound, Transport};

#[test]
fn message_reaches_its_inbox_tagged_with_the_sender() {
    let network = ChannelNetwork::<u64>::new(3);
    let inbox_1 = network.connect(1);
    let inbox_2 = network.connect(2);
    network.endpoint(0).send(2, 7);
    network.endpoint(1).send(2, 8);
    assert_eq!(
        inbox_2.try_recv().unwrap(),
        Inbound {
            from: 0,
            message: 7
        }
    );
    assert_eq!(
        inbox_2.try_recv().unwrap(),
        Inbound {
            from: 1,
            message: 8
        }
    );
    assert!(inbox_2.try_recv().is_err());
    assert!(inbox_1.try_recv().is_err());
    assert_eq!(network.delivered_message_count(), 2);
    assert_eq!(network.dropped_message_count(), 0);
}

#[test]
fn full_inbox_drops_instead_of_blocking() {
    let network = ChannelNetwork::<u64>::with_inbox_capacity(2, 4);
    let inbox = network.connect(1);
    let sender = network.endpoint(0);
    for message in 0..10 {
        sender.send(1, message);
    }
    let received: Vec<u64> = inbox.try_iter().map(|envelope| envelope.message).collect();
    assert_eq!(received, vec![0, 1, 2, 3]);
    assert_eq!(network.delivered_message_count(), 4);
    assert_eq!(network.dropped_message_count(), 6);
    assert_eq!(network.overflow_message_count(), 6);
    sender.send(1, 10);
    assert_eq!(inbox.try_recv().unwrap().message, 10);
}

#[test]
fn disconnected_replica_loses_messages_and_reconnects_empty() {
    let network = ChannelNetwork::<u64>::new(2);
    let old_inbox = network.connect(1);
    let sender = network.endpoint(0);
    sender.send(1, 1);
    network.disconnect(1);
    sender.send(1, 2);
    assert_eq!(network.dropped_message_count(), 1);
    assert_eq!(network.overflow_message_count(), 0);
    let new_inbox = network.connect(1);
    sender.send(1, 3);
    // The old inbox keeps only what reached it before the crash; the new one starts empty.
    assert_eq!(
        old_inbox.try_iter().map(|e| e.message).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        new_inbox.try_iter().map(|e| e.message).collect::<Vec<_>>(),
        vec![3]
    );
}

#[test]
fn dropped_receiver_counts_as_dropped() {
    let network = ChannelNetwork::<u64>::new(2);
    drop(network.connect(1));
    network.endpoint(0).send(1, 1);
    assert_eq!(network.dropped_message_count(), 1);
    assert_eq!(network.delivered_message_count(), 0);
}

#[test]
fn entry_bytes_are_shared_not_copied() {
    let network = ChannelNetwork::<Bytes>::new(3);
    let inbox_1 = network.connect(1);
    let inbox_2 = network.connect(2);
    let entry = Bytes::from(vec![0xab_u8; 1 << 20]);
    let sender = network.endpoint(0);
    sender.send(1, entry.clone());
    sender.send(2, entry.clone());
    let at_1 = inbox_1.try_recv().unwrap().message;
    let at_2 = inbox_2.try_recv().unwrap().message;
    assert_eq!(at_1.as_ptr(), entry.as_ptr());
    assert_eq!(at_2.as_ptr(), entry.as_ptr());
    assert_eq!(at_1, entry);
}

#[test]
fn many_threads_keep_per_sender_order() {
    const SENDERS: u8 = 4;
    const PER_SENDER: u64 = 2_000;
    let network = ChannelNetwork::<u64>::new(usize::from(SENDERS) + 1);
    let inbox = network.connect(SENDERS);
    thread::scope(|scope| {
        for from in 0..SENDERS {
            let sender = network.endpoint(from);
            scope.spawn(move || {
                for message in 0..PER_SENDER {
                    sender.send(SENDERS, message);
                }
            });
        }
    });
    let mut next = [0_u64; SENDERS as usize];
    for envelope in inbox.try_iter() {
        assert_eq!(
            envelope.message,
            next[usize::from(envelope.from)],
            "sender {} reordered",
            envelope.from
        );
        next[usize::from(envelope.from)] += 1;
    }
    assert!(next.iter().all(|&count| count == PER_SENDER), "{next:?}");
    assert_eq!(network.dropped_message_count(), 0);
}

#[test]
#[should_panic(expected = "not in this network")]
fn sending_to_an_unknown_replica_is_a_bug() {
    let network = ChannelNetwork::<u64>::new(2);
    network.endpoint(0).send(5, 1);
}
