//! Service Bus namespaces, queues and their messages, without I/O.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use time::{Duration, OffsetDateTime};

use super::ids::{ResourceId, SubscriptionId, TenantId};
use super::sas::AuthorizationRule;

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
    /// Shared access authorization rules by lower-cased name.
    pub authorization_rules: BTreeMap<String, AuthorizationRule>,
}

impl Namespace {
    /// Builds a namespace as Azure creates it by default: Standard tier, local (SAS)
    /// authentication enabled, no queues, and a `RootManageSharedAccessKey` rule with every
    /// right and fresh keys. The name and subscription come from `id`, which must name a
    /// subscription.
    pub fn new(
        id: ResourceId,
        tenant: TenantId,
        location: impl Into<String>,
        now: OffsetDateTime,
    ) -> Self {
        let subscription = id
            .subscription()
            .expect("a namespace id starts with /subscriptions/{id}");
        let root = AuthorizationRule::root();
        Self {
            name: id.name().to_owned(),
            id,
            tenant,
            subscription,
            location: location.into(),
            sku: "Standard".to_owned(),
            disable_local_auth: false,
            created_at: now,
            queues: BTreeMap::new(),
            authorization_rules: [(root.name.to_ascii_lowercase(), root)]
                .into_iter()
                .collect(),
        }
    }

    pub fn host_name(&self) -> String {
        format!("{}{SERVICEBUS_HOST_SUFFIX}", self.name.to_ascii_lowercase())
    }

    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.get(&name.to_ascii_lowercase())
    }

    pub fn queue_mut(&mut self, name: &str) -> Option<&mut Queue> {
        self.queues.get_mut(&name.to_ascii_lowercase())
    }

    pub fn authorization_rule(&self, name: &str) -> Option<&AuthorizationRule> {
        self.authorization_rules.get(&name.to_ascii_lowercase())
    }

    pub fn authorization_rule_mut(&mut self, name: &str) -> Option<&mut AuthorizationRule> {
        self.authorization_rules.get_mut(&name.to_ascii_lowercase())
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

/// Stage of a message's life cycle (`x-opt-message-state` on delivered messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageState {
    /// Receivable, or locked by a receiver.
    Active = 0,
    /// Set aside by its receiver; only `receive-by-sequence-number` returns it.
    Deferred = 1,
    /// Waiting for its scheduled enqueue time.
    Scheduled = 2,
}

/// Why a message is in the dead-letter queue: the `DeadLetterReason` and
/// `DeadLetterErrorDescription` application properties Service Bus adds to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterInfo {
    pub reason: Option<String>,
    pub description: Option<String>,
}

/// Reason Service Bus gives a message moved after too many deliveries.
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";
/// Reason Service Bus gives a message that expired in a queue with
/// `deadLetteringOnMessageExpiration`.
pub const TTL_EXPIRED: &str = "TTLExpiredException";

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
    pub state: MessageState,
    /// The message's `group-id`, which Service Bus calls its session id.
    pub session_id: Option<String>,
    /// When a scheduled message becomes active.
    pub scheduled_enqueue_at: Option<OffsetDateTime>,
    /// When the message expires: its time-to-live, capped by the queue's default, after it
    /// was enqueued.
    pub expires_at: Option<OffsetDateTime>,
    /// Set on messages in the dead-letter queue.
    pub dead_letter: Option<DeadLetterInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageLock {
    pub token: uuid::Uuid,
    pub locked_until: OffsetDateTime,
}

/// A message a client sends, with the fields the broker reads from its sections.
#[derive(Clone, Debug, Default)]
pub struct NewMessage {
    pub header: Bytes,
    pub encoded: Bytes,
    pub session_id: Option<String>,
    /// The header's `ttl`.
    pub time_to_live: Option<Duration>,
    /// `x-opt-scheduled-enqueue-time`; the message stays invisible until then.
    pub scheduled_enqueue_at: Option<OffsetDateTime>,
}

/// The two message stores a receiver can read: the queue and its `$DeadLetterQueue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubQueue {
    Main,
    DeadLetter,
}

/// A message session of a session-enabled queue: its state and the receiver holding it.
#[derive(Clone, Debug, Default)]
pub struct MessageSession {
    pub state: Option<Bytes>,
    pub lock: Option<SessionLock>,
}

/// A session lock. `owner` identifies the holding connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionLock {
    pub owner: uuid::Uuid,
    pub locked_until: OffsetDateTime,
}

/// A queue and its messages in sequence-number order.
#[derive(Clone, Debug)]
pub struct Queue {
    pub id: ResourceId,
    pub name: String,
    pub properties: QueueProperties,
    pub created_at: OffsetDateTime,
    /// Active, deferred and scheduled messages.
    pub messages: VecDeque<StoredMessage>,
    pub dead_letters: VecDeque<StoredMessage>,
    /// Message sessions by session id (case-sensitive, as in Service Bus).
    pub sessions: BTreeMap<String, MessageSession>,
    next_sequence_number: i64,
    /// Earliest time at which `apply_time` may have work: a scheduled message's enqueue
    /// time or an expiry. `None` when no message has either. It may be earlier than
    /// needed, which only costs a pass.
    next_due: Option<OffsetDateTime>,
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
            sessions: BTreeMap::new(),
            next_sequence_number: 1,
            next_due: None,
        }
    }

    /// Appends a message without a session, time-to-live or schedule and returns its
    /// sequence number. `header` is the sender's header section (empty when it sent none)
    /// and `encoded` every section after it.
    pub fn enqueue(&mut self, header: Bytes, encoded: Bytes, now: OffsetDateTime) -> i64 {
        let message = NewMessage {
            header,
            encoded,
            ..NewMessage::default()
        };
        self.push(message, now)
    }

    /// Stores a message a client sent, checking the rules the queue's settings impose, and
    /// returns its sequence number.
    pub fn send(&mut self, message: NewMessage, now: OffsetDateTime) -> Result<i64, SendError> {
        if self.properties.requires_session && message.session_id.is_none() {
            return Err(SendError::SessionIdMissing);
        }
        Ok(self.push(message, now))
    }

    fn push(&mut self, message: NewMessage, now: OffsetDateTime) -> i64 {
        let sequence_number = self.next_sequence_number;
        self.next_sequence_number += 1;
        let scheduled = message.scheduled_enqueue_at.filter(|at| *at > now);
        let enqueued_at = scheduled.unwrap_or(now);
        let time_to_live = match (
            message.time_to_live,
            self.properties.default_message_time_to_live,
        ) {
            (Some(own), Some(default)) => Some(own.min(default)),
            (own, default) => own.or(default),
        };
        let expires_at = time_to_live.map(|ttl| enqueued_at + ttl);
        for due in [scheduled, expires_at].into_iter().flatten() {
            self.next_due = Some(self.next_due.map_or(due, |next| next.min(due)));
        }
        self.messages.push_back(StoredMessage {
            sequence_number,
            enqueued_at,
            header: message.header,
            encoded: message.encoded,
            delivery_count: 0,
            lock: None,
            state: if scheduled.is_some() {
                MessageState::Scheduled
            } else {
                MessageState::Active
            },
            session_id: message.session_id,
            scheduled_enqueue_at: message.scheduled_enqueue_at,
            expires_at,
            dead_letter: None,
        });
        sequence_number
    }

    /// Active messages, locked or not (`activeMessageCount` in ARM).
    pub fn active_count(&self) -> usize {
        self.count_in(MessageState::Active)
    }

    pub fn scheduled_count(&self) -> usize {
        self.count_in(MessageState::Scheduled)
    }

    pub fn deferred_count(&self) -> usize {
        self.count_in(MessageState::Deferred)
    }

    fn count_in(&self, state: MessageState) -> usize {
        self.messages.iter().filter(|m| m.state == state).count()
    }

    pub fn dead_letter_count(&self) -> usize {
        self.dead_letters.len()
    }

    /// Messages that a receiver could take now: active and not locked, or locked past
    /// their expiry.
    pub fn available_count(&self, now: OffsetDateTime) -> usize {
        self.messages
            .iter()
            .filter(|m| is_available(m, now))
            .count()
    }

    /// Applies what the passage of time does: scheduled messages whose time has come
    /// become active, and unlocked messages past their expiry are dropped or, with
    /// `deadLetteringOnMessageExpiration`, dead-lettered. Every receive, peek and send runs
    /// this first; ARM counts read the queue as this last left it.
    pub fn apply_time(&mut self, now: OffsetDateTime) {
        // Without this check every receive would scan and rebuild the whole queue.
        if self.next_due.is_none_or(|due| due > now) {
            return;
        }
        for message in &mut self.messages {
            if message.state == MessageState::Scheduled
                && message.scheduled_enqueue_at.is_none_or(|at| at <= now)
            {
                message.state = MessageState::Active;
            }
        }
        let expired = |m: &StoredMessage| {
            m.state != MessageState::Scheduled
                && m.expires_at.is_some_and(|at| at <= now)
                && m.lock.as_ref().is_none_or(|lock| lock.locked_until <= now)
        };
        let mut kept = VecDeque::with_capacity(self.messages.len());
        for mut message in std::mem::take(&mut self.messages) {
            if !expired(&message) {
                kept.push_back(message);
                continue;
            }
            if self.properties.dead_lettering_on_message_expiration {
                message.lock = None;
                message.dead_letter = Some(DeadLetterInfo {
                    reason: Some(TTL_EXPIRED.to_owned()),
                    description: Some("The message expired and was dead lettered.".to_owned()),
                });
                self.dead_letters.push_back(message);
            }
        }
        self.messages = kept;
        self.next_due = self.messages.iter().filter_map(due_at).min();
        // Messages in the dead-letter queue do not expire (Service Bus ignores their TTL).
    }

    /// Locks the first available message of the main queue for the queue's lock duration
    /// (peek-lock), in any session.
    pub fn lock_next(&mut self, now: OffsetDateTime) -> Option<StoredMessage> {
        self.lock_next_from(SubQueue::Main, None, now)
    }

    /// Locks the first available message of `sub`, restricted to `session` when given.
    ///
    /// The returned copy carries the delivery count before this delivery; the stored
    /// message counts this delivery. A message that has already been delivered
    /// `max_delivery_count` times moves to the dead-letter queue instead, as Service Bus
    /// does with reason `MaxDeliveryCountExceeded`.
    pub fn lock_next_from(
        &mut self,
        sub: SubQueue,
        session: Option<&str>,
        now: OffsetDateTime,
    ) -> Option<StoredMessage> {
        self.apply_time(now);
        let lock_duration = self.properties.lock_duration;
        let max_delivery_count = self.properties.max_delivery_count;
        loop {
            let store = self.store_mut(sub);
            let index = store
                .iter()
                .position(|m| is_available(m, now) && in_session(m, session))?;
            if sub == SubQueue::Main && store[index].delivery_count >= max_delivery_count {
                let mut message = store.remove(index)?;
                message.lock = None;
                message.dead_letter = Some(DeadLetterInfo {
                    reason: Some(MAX_DELIVERY_COUNT_EXCEEDED.to_owned()),
                    description: Some(format!(
                        "Message could not be consumed after {max_delivery_count} delivery attempts."
                    )),
                });
                self.dead_letters.push_back(message);
                continue;
            }
            let message = &mut store[index];
            message.lock = Some(MessageLock {
                token: uuid::Uuid::new_v4(),
                locked_until: now + lock_duration,
            });
            let delivered = message.clone();
            message.delivery_count += 1;
            return Some(delivered);
        }
    }

    /// Removes and returns the first available message of the main queue
    /// (receive-and-delete).
    pub fn receive_and_delete(&mut self, now: OffsetDateTime) -> Option<StoredMessage> {
        self.receive_and_delete_from(SubQueue::Main, None, now)
    }

    /// Removes and returns the first available message of `sub`, restricted to `session`
    /// when given.
    pub fn receive_and_delete_from(
        &mut self,
        sub: SubQueue,
        session: Option<&str>,
        now: OffsetDateTime,
    ) -> Option<StoredMessage> {
        self.apply_time(now);
        let store = self.store_mut(sub);
        let index = store
            .iter()
            .position(|m| is_available(m, now) && in_session(m, session))?;
        store.remove(index)
    }

    /// Copies up to `count` messages of `sub` from sequence number `from` on, in any state,
    /// without locking them (peek).
    pub fn peek(
        &mut self,
        sub: SubQueue,
        from: i64,
        count: usize,
        session: Option<&str>,
        now: OffsetDateTime,
    ) -> Vec<StoredMessage> {
        self.apply_time(now);
        let mut peeked: Vec<StoredMessage> = self
            .store_mut(sub)
            .iter()
            .filter(|m| m.sequence_number >= from && in_session(m, session))
            .cloned()
            .collect();
        peeked.sort_by_key(|m| m.sequence_number);
        peeked.truncate(count);
        peeked
    }

    /// Removes the message held by `token` (complete).
    pub fn complete(&mut self, token: uuid::Uuid, now: OffsetDateTime) -> Result<(), LockLost> {
        let (sub, index) = self.locked_index(token, now)?;
        self.store_mut(sub).remove(index);
        Ok(())
    }

    /// Unlocks the message held by `token` so it can be delivered again (abandon). Its
    /// next delivery reports one more prior delivery.
    pub fn abandon(&mut self, token: uuid::Uuid, now: OffsetDateTime) -> Result<(), LockLost> {
        let (sub, index) = self.locked_index(token, now)?;
        self.store_mut(sub)[index].lock = None;
        Ok(())
    }

    /// Unlocks the message held by `token` and sets it aside until a receiver requests it
    /// by sequence number (defer).
    pub fn defer(&mut self, token: uuid::Uuid, now: OffsetDateTime) -> Result<(), LockLost> {
        let (sub, index) = self.locked_index(token, now)?;
        let message = &mut self.store_mut(sub)[index];
        message.lock = None;
        if sub == SubQueue::Main {
            message.state = MessageState::Deferred;
        }
        Ok(())
    }

    /// Moves the message held by `token` to the dead-letter queue with `info`. A message
    /// already in the dead-letter queue stays there unchanged.
    pub fn dead_letter(
        &mut self,
        token: uuid::Uuid,
        info: DeadLetterInfo,
        now: OffsetDateTime,
    ) -> Result<(), LockLost> {
        let (sub, index) = self.locked_index(token, now)?;
        if sub == SubQueue::DeadLetter {
            self.dead_letters[index].lock = None;
            return Ok(());
        }
        if let Some(mut message) = self.messages.remove(index) {
            message.lock = None;
            message.state = MessageState::Active;
            message.dead_letter = Some(info);
            self.dead_letters.push_back(message);
        }
        Ok(())
    }

    /// Extends the lock `token` by the queue's lock duration and returns its new expiry.
    pub fn renew_lock(
        &mut self,
        token: uuid::Uuid,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, LockLost> {
        let (sub, index) = self.locked_index(token, now)?;
        let locked_until = now + self.properties.lock_duration;
        if let Some(lock) = self.store_mut(sub)[index].lock.as_mut() {
            lock.locked_until = locked_until;
        }
        Ok(locked_until)
    }

    /// Drops the lock `token` whether or not it has expired, as when the receiving
    /// connection closes. Returns whether a message held that lock.
    pub fn release_lock(&mut self, token: uuid::Uuid) -> bool {
        let held = self
            .messages
            .iter_mut()
            .chain(self.dead_letters.iter_mut())
            .find(|m| m.lock.as_ref().is_some_and(|lock| lock.token == token));
        match held {
            Some(message) => {
                message.lock = None;
                true
            }
            None => false,
        }
    }

    /// Takes the deferred messages of `sub` with the given sequence numbers, locking them
    /// (peek-lock) or removing them (receive-and-delete). Fails, taking none, when one of
    /// them is not a deferred message.
    pub fn receive_deferred(
        &mut self,
        sub: SubQueue,
        sequence_numbers: &[i64],
        peek_lock: bool,
        now: OffsetDateTime,
    ) -> Result<Vec<StoredMessage>, MessageNotFound> {
        self.apply_time(now);
        let lock_duration = self.properties.lock_duration;
        let store = self.store_mut(sub);
        let deferred =
            |m: &StoredMessage| sub == SubQueue::DeadLetter || m.state == MessageState::Deferred;
        let mut indexes = Vec::with_capacity(sequence_numbers.len());
        for number in sequence_numbers {
            let index = store
                .iter()
                .position(|m| m.sequence_number == *number && deferred(m) && is_unlocked(m, now))
                .ok_or(MessageNotFound(*number))?;
            indexes.push(index);
        }
        if !peek_lock {
            indexes.sort_unstable_by(|a, b| b.cmp(a));
            let mut taken: Vec<StoredMessage> = indexes
                .into_iter()
                .filter_map(|i| store.remove(i))
                .collect();
            taken.reverse();
            return Ok(taken);
        }
        let mut taken = Vec::with_capacity(indexes.len());
        for index in indexes {
            let message = &mut store[index];
            message.lock = Some(MessageLock {
                token: uuid::Uuid::new_v4(),
                locked_until: now + lock_duration,
            });
            taken.push(message.clone());
            message.delivery_count += 1;
        }
        Ok(taken)
    }

    /// Removes scheduled messages by sequence number; numbers that name no scheduled
    /// message are ignored, as Service Bus ignores them.
    pub fn cancel_scheduled(&mut self, sequence_numbers: &[i64]) {
        self.messages.retain(|m| {
            !(m.state == MessageState::Scheduled && sequence_numbers.contains(&m.sequence_number))
        });
    }

    /// Locks message session `id` for `owner`, or with `id` `None` the first session that
    /// has an available message and no lock. Returns the session id and its lock expiry.
    pub fn lock_session(
        &mut self,
        id: Option<&str>,
        owner: uuid::Uuid,
        now: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime), SessionLockError> {
        self.apply_time(now);
        let id = match id {
            Some(id) => id.to_owned(),
            None => self
                .messages
                .iter()
                .filter(|m| is_available(m, now))
                .filter_map(|m| m.session_id.as_deref())
                .find(|candidate| !self.session_locked(candidate, now))
                .map(str::to_owned)
                .ok_or(SessionLockError::NoSessionAvailable)?,
        };
        if self.session_locked(&id, now) {
            return Err(SessionLockError::AlreadyLocked(id));
        }
        let locked_until = now + self.properties.lock_duration;
        self.sessions.entry(id.clone()).or_default().lock = Some(SessionLock {
            owner,
            locked_until,
        });
        Ok((id, locked_until))
    }

    fn session_locked(&self, id: &str, now: OffsetDateTime) -> bool {
        self.sessions
            .get(id)
            .and_then(|s| s.lock.as_ref())
            .is_some_and(|lock| lock.locked_until > now)
    }

    /// Extends `owner`'s lock on session `id` and returns its new expiry.
    pub fn renew_session_lock(
        &mut self,
        id: &str,
        owner: uuid::Uuid,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, SessionLockLost> {
        let locked_until = now + self.properties.lock_duration;
        let lock = self.held_session_lock(id, owner, now)?;
        lock.locked_until = locked_until;
        Ok(locked_until)
    }

    /// Releases `owner`'s lock on session `id`, if it holds one.
    pub fn release_session(&mut self, id: &str, owner: uuid::Uuid) {
        if let Some(session) = self.sessions.get_mut(id)
            && session
                .lock
                .as_ref()
                .is_some_and(|lock| lock.owner == owner)
        {
            session.lock = None;
        }
    }

    /// Returns the state of session `id`, readable only by the receiver that locked it.
    pub fn session_state(
        &mut self,
        id: &str,
        owner: uuid::Uuid,
        now: OffsetDateTime,
    ) -> Result<Option<Bytes>, SessionLockLost> {
        self.held_session_lock(id, owner, now)?;
        Ok(self.sessions.get(id).and_then(|s| s.state.clone()))
    }

    /// Replaces the state of session `id`; `None` clears it.
    pub fn set_session_state(
        &mut self,
        id: &str,
        owner: uuid::Uuid,
        state: Option<Bytes>,
        now: OffsetDateTime,
    ) -> Result<(), SessionLockLost> {
        self.held_session_lock(id, owner, now)?;
        if let Some(session) = self.sessions.get_mut(id) {
            session.state = state;
        }
        Ok(())
    }

    fn held_session_lock(
        &mut self,
        id: &str,
        owner: uuid::Uuid,
        now: OffsetDateTime,
    ) -> Result<&mut SessionLock, SessionLockLost> {
        self.sessions
            .get_mut(id)
            .and_then(|s| s.lock.as_mut())
            .filter(|lock| lock.owner == owner && lock.locked_until > now)
            .ok_or(SessionLockLost)
    }

    fn store_mut(&mut self, sub: SubQueue) -> &mut VecDeque<StoredMessage> {
        match sub {
            SubQueue::Main => &mut self.messages,
            SubQueue::DeadLetter => &mut self.dead_letters,
        }
    }

    /// Finds the message locked by `token` in either store.
    fn locked_index(
        &self,
        token: uuid::Uuid,
        now: OffsetDateTime,
    ) -> Result<(SubQueue, usize), LockLost> {
        let held = |m: &StoredMessage| {
            m.lock
                .as_ref()
                .is_some_and(|l| l.token == token && l.locked_until > now)
        };
        if let Some(index) = self.messages.iter().position(held) {
            return Ok((SubQueue::Main, index));
        }
        self.dead_letters
            .iter()
            .position(held)
            .map(|index| (SubQueue::DeadLetter, index))
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

/// The session lock is not held by the caller or has expired: `SessionLockLostException`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The session lock has expired on the MessageSession. Accept a new MessageSession.")]
pub struct SessionLockLost;

/// No deferred message has this sequence number: `MessageNotFoundException`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "Failed to lock one or more specified messages. The message with sequence number {0} was not found."
)]
pub struct MessageNotFound(pub i64);

/// Failure to lock a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionLockError {
    /// Another receiver has locked the session: `SessionCannotBeLockedException`.
    #[error(
        "The requested session '{0}' cannot be accepted. It may be locked by another receiver."
    )]
    AlreadyLocked(String),
    /// A next-available-session request found no unlocked session with messages.
    #[error("No session is available: every session with messages is locked or none has messages.")]
    NoSessionAvailable,
}

/// Reason a queue rejected a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue requires sessions and the message has no `group-id`.
    #[error(
        "The SessionId was not set on a message, and it cannot be sent to the entity. Entities \
         that have session support enabled can only receive messages that have the SessionId \
         set to a valid value."
    )]
    SessionIdMissing,
}

/// Returns the time from which `apply_time` has work on `message`: its scheduled enqueue time or
/// its expiry. An expired message that a lock kept is due at once, because an abandon can
/// release that lock before it ends.
fn due_at(message: &StoredMessage) -> Option<OffsetDateTime> {
    if message.state == MessageState::Scheduled {
        return message.scheduled_enqueue_at;
    }
    message.expires_at
}

fn is_unlocked(message: &StoredMessage, now: OffsetDateTime) -> bool {
    message
        .lock
        .as_ref()
        .is_none_or(|lock| lock.locked_until <= now)
}

fn is_available(message: &StoredMessage, now: OffsetDateTime) -> bool {
    message.state == MessageState::Active && is_unlocked(message, now)
}

fn in_session(message: &StoredMessage, session: Option<&str>) -> bool {
    session.is_none_or(|id| message.session_id.as_deref() == Some(id))
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
