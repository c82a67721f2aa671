//! Service Bus namespaces, queues and their messages, without I/O.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use time::{Duration, OffsetDateTime};

use super::ids::{ResourceId, SubscriptionId, TenantId};

/// Host name suffix of Service Bus namespaces in the public cloud.
pub const SERVICEBUS_HOST_SUFFIX: &str = ".servicebus.windows.net";

/// A Service Bus namespace. Names are unique across all subscriptions, as in Azure.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub id: ResourceId,
    pub name: String,
    pub tenant: TenantId,
    pub subscription: SubscriptionId,
    pub location: String,
    pub sku: String,
    pub disable_local_auth: bool,
    pub created_at: OffsetDateTime,
    /// Queues by lower-cased name: entity names are case-insensitive.
    pub queues: BTreeMap<String, Queue>,
}

impl Namespace {
    pub fn host_name(&self) -> String {
        format!("{}{SERVICEBUS_HOST_SUFFIX}", self.name.to_ascii_lowercase())
    }

    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.get(&name.to_ascii_lowercase())
    }

    pub fn queue_mut(&mut self, name: &str) -> Option<&mut Queue> {
        self.queues.get_mut(&name.to_ascii_lowercase())
    }

    /// Largest message the namespace's tier accepts, in bytes (256 KB on Basic and Standard).
    pub fn max_message_size(&self) -> u64 {
        if self.sku.eq_ignore_ascii_case("Premium") {
            1024 * 1024
        } else {
            256 * 1024
        }
    }
}

/// Queue settings that ARM sets and the data plane honours.
#[derive(Clone, Debug)]
pub struct QueueProperties {
    pub lock_duration: Duration,
    pub max_delivery_count: u32,
    pub requires_session: bool,
    pub dead_lettering_on_message_expiration: bool,
    pub default_message_time_to_live: Option<Duration>,
    pub max_size_in_megabytes: u64,
}

impl Default for QueueProperties {
    fn default() -> Self {
        Self {
            lock_duration: Duration::minutes(1),
            max_delivery_count: 10,
            requires_session: false,
            dead_lettering_on_message_expiration: false,
            default_message_time_to_live: None,
            max_size_in_megabytes: 1024,
        }
    }
}

/// A message as the queue stores it.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub sequence_number: i64,
    pub enqueued_at: OffsetDateTime,
    /// The sender's header section as encoded, or empty when it sent none. The broker
    /// rewrites the header on delivery to set `delivery-count`.
    pub header: Bytes,
    /// The bare message as the sender encoded it: every section after the header.
    pub encoded: Bytes,
    /// Deliveries before the current one.
    pub delivery_count: u32,
    pub lock: Option<MessageLock>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageLock {
    pub token: uuid::Uuid,
    pub locked_until: OffsetDateTime,
}

/// A queue and its messages in sequence-number order.
#[derive(Clone, Debug)]
pub struct Queue {
    pub id: ResourceId,
    pub name: String,
    pub properties: QueueProperties,
    pub created_at: OffsetDateTime,
    pub messages: VecDeque<StoredMessage>,
    pub dead_letters: VecDeque<StoredMessage>,
    next_sequence_number: i64,
}

impl Queue {
    pub fn new(id: ResourceId, properties: QueueProperties, now: OffsetDateTime) -> Self {
        let name = id.name().to_owned();
        Self {
            id,
            name,
            properties,
            created_at: now,
            messages: VecDeque::new(),
            dead_letters: VecDeque::new(),
            next_sequence_number: 1,
        }
    }

    /// Appends a message and returns its sequence number. `header` is the sender's header
    /// section (empty when it sent none) and `encoded` every section after it.
    pub fn enqueue(&mut self, header: Bytes, encoded: Bytes, now: OffsetDateTime) -> i64 {
        let sequence_number = self.next_sequence_number;
        self.next_sequence_number += 1;
        self.messages.push_back(StoredMessage {
            sequence_number,
            enqueued_at: now,
            header,
            encoded,
            delivery_count: 0,
            lock: None,
        });
        sequence_number
    }

    /// Messages in the queue, locked or not (`activeMessageCount` in ARM).
    pub fn active_count(&self) -> usize {
        self.messages.len()
    }

    pub fn dead_letter_count(&self) -> usize {
        self.dead_letters.len()
    }

    /// Messages that a receiver could take now: not locked, or locked past their expiry.
    pub fn available_count(&self, now: OffsetDateTime) -> usize {
        self.messages
            .iter()
            .filter(|m| is_available(m, now))
            .count()
    }

    /// Locks the first available message for the queue's lock duration (peek-lock).
    ///
    /// The returned copy carries the delivery count before this delivery; the stored
    /// message counts this delivery. A message that has already been delivered
    /// `max_delivery_count` times moves to the dead-letter queue instead, as Service Bus
    /// does with reason `MaxDeliveryCountExceeded`.
    pub fn lock_next(&mut self, now: OffsetDateTime) -> Option<StoredMessage> {
        loop {
            let index = self.messages.iter().position(|m| is_available(m, now))?;
            if self.messages[index].delivery_count >= self.properties.max_delivery_count {
                let mut message = self.messages.remove(index)?;
                message.lock = None;
                self.dead_letters.push_back(message);
                continue;
            }
            let message = &mut self.messages[index];
            message.lock = Some(MessageLock {
                token: uuid::Uuid::new_v4(),
                locked_until: now + self.properties.lock_duration,
            });
            let delivered = message.clone();
            message.delivery_count += 1;
            return Some(delivered);
        }
    }

    /// Removes and returns the first available message (receive-and-delete).
    pub fn receive_and_delete(&mut self, now: OffsetDateTime) -> Option<StoredMessage> {
        let index = self.messages.iter().position(|m| is_available(m, now))?;
        self.messages.remove(index)
    }

    /// Removes the message held by `token` (complete).
    pub fn complete(&mut self, token: uuid::Uuid, now: OffsetDateTime) -> Result<(), LockLost> {
        let index = self.locked_index(token, now)?;
        self.messages.remove(index);
        Ok(())
    }

    /// Unlocks the message held by `token` so it can be delivered again (abandon). Its
    /// next delivery reports one more prior delivery.
    pub fn abandon(&mut self, token: uuid::Uuid, now: OffsetDateTime) -> Result<(), LockLost> {
        let index = self.locked_index(token, now)?;
        self.messages[index].lock = None;
        Ok(())
    }

    /// Moves the message held by `token` to the dead-letter queue.
    pub fn dead_letter(&mut self, token: uuid::Uuid, now: OffsetDateTime) -> Result<(), LockLost> {
        let index = self.locked_index(token, now)?;
        if let Some(mut message) = self.messages.remove(index) {
            message.lock = None;
            self.dead_letters.push_back(message);
        }
        Ok(())
    }

    /// Drops the lock `token` whether or not it has expired, as when the receiving
    /// connection closes. Returns whether a message held that lock.
    pub fn release_lock(&mut self, token: uuid::Uuid) -> bool {
        let held = self
            .messages
            .iter_mut()
            .find(|m| m.lock.as_ref().is_some_and(|lock| lock.token == token));
        match held {
            Some(message) => {
                message.lock = None;
                true
            }
            None => false,
        }
    }

    fn locked_index(&self, token: uuid::Uuid, now: OffsetDateTime) -> Result<usize, LockLost> {
        self.messages
            .iter()
            .position(|m| {
                m.lock
                    .as_ref()
                    .is_some_and(|l| l.token == token && l.locked_until > now)
            })
            .ok_or(LockLost)
    }
}

/// The lock token is unknown, expired or was already settled: Service Bus's
/// `MessageLockLostException`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "The lock supplied is invalid. Either the lock expired, or the message has already been \
     removed from the queue."
)]
pub struct LockLost;

fn is_available(message: &StoredMessage, now: OffsetDateTime) -> bool {
    message
        .lock
        .as_ref()
        .is_none_or(|lock| lock.locked_until <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        let id = ResourceId::new(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ServiceBus/namespaces/n/queues/q",
        );
        Queue::new(id, QueueProperties::default(), OffsetDateTime::UNIX_EPOCH)
    }

    fn body(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[test]
    fn lock_hides_message_until_it_expires() {
        let mut queue = queue();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        queue.enqueue(Bytes::new(), body("a"), t0);
        let first = queue.lock_next(t0).unwrap();
        assert_eq!(first.delivery_count, 0);
        assert!(queue.lock_next(t0 + Duration::seconds(59)).is_none());
        let again = queue.lock_next(t0 + Duration::seconds(60)).unwrap();
        assert_eq!(again.delivery_count, 1);
        assert_ne!(again.lock, first.lock);
    }

    #[test]
    fn complete_removes_and_stale_token_is_lock_lost() {
        let mut queue = queue();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        queue.enqueue(Bytes::new(), body("a"), t0);
        let token = queue.lock_next(t0).unwrap().lock.unwrap().token;
        assert_eq!(
            queue.complete(token, t0 + Duration::seconds(61)),
            Err(LockLost)
        );
        let token = queue
            .lock_next(t0 + Duration::seconds(61))
            .unwrap()
            .lock
            .unwrap()
            .token;
        assert_eq!(queue.complete(token, t0 + Duration::seconds(62)), Ok(()));
        assert_eq!(queue.active_count(), 0);
    }

    #[test]
    fn abandon_counts_a_delivery() {
        let mut queue = queue();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        queue.enqueue(Bytes::new(), body("a"), t0);
        let token = queue.lock_next(t0).unwrap().lock.unwrap().token;
        queue.abandon(token, t0).unwrap();
        assert_eq!(queue.lock_next(t0).unwrap().delivery_count, 1);
    }

    #[test]
    fn max_delivery_count_dead_letters() {
        let mut queue = queue();
        queue.properties.max_delivery_count = 1;
        let t0 = OffsetDateTime::UNIX_EPOCH;
        queue.enqueue(Bytes::new(), body("a"), t0);
        let token = queue.lock_next(t0).unwrap().lock.unwrap().token;
        assert!(queue.release_lock(token));
        assert!(queue.lock_next(t0).is_none());
        assert_eq!(queue.dead_letter_count(), 1);
        assert_eq!(queue.active_count(), 0);
    }

    #[test]
    fn receive_and_delete_takes_in_order() {
        let mut queue = queue();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        queue.enqueue(Bytes::new(), body("a"), t0);
        queue.enqueue(Bytes::new(), body("b"), t0);
        let first = queue.receive_and_delete(t0).unwrap();
        assert_eq!(first.sequence_number, 1);
        assert_eq!(queue.active_count(), 1);
    }
}
