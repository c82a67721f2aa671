//! Random interleavings of peek-lock operations against the queue model: send, receive,
//! complete, abandon, lock expiry on the model's clock, and receivers that disconnect.
//! Whatever the order, no message is lost and none is completed twice.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;
use time::{Duration, OffsetDateTime};
use xtenant_fakes::cloud::servicebus::LockLost;
use xtenant_fakes::cloud::{Queue, QueueProperties, ResourceId};

/// Receivers that take part in a run.
const RECEIVERS: usize = 3;
/// Lock duration of the queue under test.
const LOCK_SECONDS: i64 = 30;
/// Deliveries after which the queue dead-letters a message.
const MAX_DELIVERY_COUNT: u32 = 3;

/// One step of a run. Indexes pick a receiver, or one of the locks a receiver holds.
#[derive(Debug, Clone)]
enum Step {
    Send,
    Receive { receiver: usize },
    Complete { receiver: usize, lock: usize },
    Abandon { receiver: usize, lock: usize },
    AdvanceClock { seconds: i64 },
    Disconnect { receiver: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let receiver = 0..RECEIVERS;
    prop_oneof![
        3 => Just(Step::Send),
        4 => receiver.clone().prop_map(|receiver| Step::Receive { receiver }),
        3 => (receiver.clone(), 0..4usize)
            .prop_map(|(receiver, lock)| Step::Complete { receiver, lock }),
        2 => (receiver.clone(), 0..4usize)
            .prop_map(|(receiver, lock)| Step::Abandon { receiver, lock }),
        1 => (1..2 * LOCK_SECONDS).prop_map(|seconds| Step::AdvanceClock { seconds }),
        1 => receiver.prop_map(|receiver| Step::Disconnect { receiver }),
    ]
}

/// A lock a receiver believes it holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    sequence_number: i64,
    token: uuid::Uuid,
    locked_until: OffsetDateTime,
}

/// The queue under test and what the test observed of it.
struct Run {
    queue: Queue,
    now: OffsetDateTime,
    held: Vec<Vec<Held>>,
    sent: BTreeSet<i64>,
    completed: BTreeMap<i64, u32>,
}

impl Run {
    fn new() -> Self {
        let now = OffsetDateTime::UNIX_EPOCH;
        let id = ResourceId::new(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ServiceBus/namespaces/n/queues/q",
        );
        let properties = QueueProperties {
            lock_duration: Duration::seconds(LOCK_SECONDS),
            max_delivery_count: MAX_DELIVERY_COUNT,
            ..QueueProperties::default()
        };
        Self {
            queue: Queue::new(id, properties, now),
            now,
            held: vec![Vec::new(); RECEIVERS],
            sent: BTreeSet::new(),
            completed: BTreeMap::new(),
        }
    }

    fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Send => {
                let body = Bytes::from(format!("message {}", self.sent.len()));
                let sequence_number = self.queue.enqueue(Bytes::new(), body, self.now);
                prop_assert!(self.sent.insert(sequence_number), "sequence number reused");
            }
            Step::Receive { receiver } => self.receive(receiver)?,
            Step::Complete { receiver, lock } => self.settle(receiver, lock, true)?,
            Step::Abandon { receiver, lock } => self.settle(receiver, lock, false)?,
            Step::AdvanceClock { seconds } => self.now += Duration::seconds(seconds),
            Step::Disconnect { receiver } => {
                for held in self.held[receiver].drain(..) {
                    self.queue.release_lock(held.token);
                }
            }
        }
        Ok(())
    }

    fn receive(&mut self, receiver: usize) -> Result<(), TestCaseError> {
        let Some(message) = self.queue.lock_next(self.now) else {
            return Ok(());
        };
        let lock = message.lock.expect("peek-lock sets a lock");
        let still_held_elsewhere = self.held.iter().flatten().any(|held| {
            held.sequence_number == message.sequence_number && held.locked_until > self.now
        });
        prop_assert!(
            !still_held_elsewhere,
            "message {} delivered while another receiver's lock is valid",
            message.sequence_number
        );
        prop_assert!(
            !self.completed.contains_key(&message.sequence_number),
            "completed message {} delivered again",
            message.sequence_number
        );
        self.held[receiver].push(Held {
            sequence_number: message.sequence_number,
            token: lock.token,
            locked_until: lock.locked_until,
        });
        Ok(())
    }

    fn settle(
        &mut self,
        receiver: usize,
        lock: usize,
        complete: bool,
    ) -> Result<(), TestCaseError> {
        let locks = &mut self.held[receiver];
        if locks.is_empty() {
            return Ok(());
        }
        let held = locks.remove(lock % locks.len());
        let result = if complete {
            self.queue.complete(held.token, self.now)
        } else {
            self.queue.abandon(held.token, self.now)
        };
        let lock_valid = held.locked_until > self.now;
        match result {
            Ok(()) => {
                prop_assert!(
                    lock_valid,
                    "settled message {} with an expired lock",
                    held.sequence_number
                );
                if complete {
                    let count = self.completed.entry(held.sequence_number).or_default();
                    *count += 1;
                    prop_assert_eq!(*count, 1, "message completed twice");
                }
            }
            // A lock that is still valid can be lost only when the receiver's connection
            // released it, which removes it from `held` first.
            Err(LockLost) => prop_assert!(
                !lock_valid,
                "valid lock on message {} reported lost",
                held.sequence_number
            ),
        }
        Ok(())
    }

    /// Checks that every sent message is in exactly one place: the queue, the dead-letter
    /// queue or the completed set.
    fn check_conservation(&self) -> Result<(), TestCaseError> {
        let mut seen: BTreeMap<i64, u32> = self.completed.clone();
        for message in self.queue.messages.iter().chain(&self.queue.dead_letters) {
            *seen.entry(message.sequence_number).or_default() += 1;
        }
        for sequence_number in &self.sent {
            prop_assert_eq!(
                seen.get(sequence_number).copied(),
                Some(1),
                "message {} is not in exactly one place",
                sequence_number
            );
        }
        prop_assert_eq!(
            seen.len(),
            self.sent.len(),
            "a message appeared from nowhere"
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_message_lost_or_completed_twice(steps in prop::collection::vec(step(), 1..120)) {
        let mut run = Run::new();
        for step in &steps {
            run.apply(step)?;
            run.check_conservation()?;
        }
        // Drain: with every lock released and expired, each remaining message is
        // receivable until it is completed or dead-lettered.
        for receiver in 0..RECEIVERS {
            run.apply(&Step::Disconnect { receiver })?;
        }
        run.now += Duration::seconds(2 * LOCK_SECONDS);
        while let Some(message) = run.queue.lock_next(run.now) {
            let token = message.lock.expect("peek-lock sets a lock").token;
            prop_assert_eq!(run.queue.complete(token, run.now), Ok(()));
            let count = run.completed.entry(message.sequence_number).or_default();
            *count += 1;
            prop_assert_eq!(*count, 1, "message completed twice while draining");
        }
        run.check_conservation()?;
        prop_assert_eq!(run.queue.active_count(), 0);
    }
}
