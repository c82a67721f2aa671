//! The `$management` node of a queue: the request-response operations Service Bus clients
//! use for what links cannot do (peek, lock renewal, scheduling, deferred messages,
//! settlement by lock token, session locks and state).
//!
//! A request carries `message-id`, application property `operation` (`com.microsoft:…`)
//! and an `amqp-value` map body with kebab-case keys. The reply carries `correlation-id`
//! equal to the request's `message-id`, application properties `statusCode` (AMQP int) and
//! `statusDescription` in camelCase, `errorCondition` on failure, and an `amqp-value` map.

use bytes::Bytes;
use serde_amqp::Value;
use serde_amqp::primitives::{Array, OrderedMap, Symbol, Uuid};
use time::OffsetDateTime;

use super::codec::{self, FrameError, section};
use super::message::{self, timestamp};
use crate::cloud::servicebus::{
    DeadLetterInfo, LockLost, MessageNotFound, Queue, SessionLockLost, StoredMessage, SubQueue,
};

/// Operation names (Service Bus AMQP request-response documentation).
pub mod operation {
    pub const PEEK_MESSAGE: &str = "com.microsoft:peek-message";
    pub const RENEW_LOCK: &str = "com.microsoft:renew-lock";
    pub const SCHEDULE_MESSAGE: &str = "com.microsoft:schedule-message";
    pub const CANCEL_SCHEDULED_MESSAGE: &str = "com.microsoft:cancel-scheduled-message";
    pub const RECEIVE_BY_SEQUENCE_NUMBER: &str = "com.microsoft:receive-by-sequence-number";
    pub const UPDATE_DISPOSITION: &str = "com.microsoft:update-disposition";
    pub const RENEW_SESSION_LOCK: &str = "com.microsoft:renew-session-lock";
    pub const GET_SESSION_STATE: &str = "com.microsoft:get-session-state";
    pub const SET_SESSION_STATE: &str = "com.microsoft:set-session-state";
}

/// Error conditions of failed operations, sent as `errorCondition`.
const MESSAGE_LOCK_LOST: &str = "com.microsoft:message-lock-lost";
const SESSION_LOCK_LOST: &str = "com.microsoft:session-lock-lost";
const MESSAGE_NOT_FOUND: &str = "com.microsoft:message-not-found";
const ARGUMENT_ERROR: &str = "com.microsoft:argument-error";
const NOT_IMPLEMENTED: &str = "amqp:not-implemented";
const UNAUTHORIZED_ACCESS: &str = "amqp:unauthorized-access";

/// `receiver-settle-mode` of receive-by-sequence-number that means receive-and-delete
/// (AMQP `first`); `1` (`second`) means peek-lock.
const RECEIVE_AND_DELETE: u64 = 0;

/// A decoded management request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `message-id`, echoed as `correlation-id` with its AMQP type kept.
    pub message_id: Value,
    pub reply_to: Option<String>,
    pub operation: String,
    pub body: OrderedMap<Value, Value>,
}

/// The outcome of an operation: status, description, error condition and body map.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: i32,
    pub description: String,
    pub condition: Option<&'static str>,
    pub body: OrderedMap<Value, Value>,
}

impl Reply {
    fn ok(body: OrderedMap<Value, Value>) -> Self {
        Self {
            status: 200,
            description: "OK".to_owned(),
            condition: None,
            body,
        }
    }

    fn no_content() -> Self {
        Self {
            status: 204,
            description: "No Content".to_owned(),
            condition: None,
            body: OrderedMap::new(),
        }
    }

    /// Builds a failed reply with HTTP-like `status` and Service Bus error `condition`.
    pub fn error(status: i32, condition: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            description: description.into(),
            condition: Some(condition),
            body: OrderedMap::new(),
        }
    }

    /// Builds the reply to a caller whose token lacks the claim an operation needs.
    pub fn unauthorized(description: String) -> Self {
        Self::error(401, UNAUTHORIZED_ACCESS, description)
    }
}

/// Returns whether an operation needs the `Send` claim (scheduling) rather than `Listen`.
pub fn needs_send_claim(operation: &str) -> bool {
    matches!(
        operation,
        operation::SCHEDULE_MESSAGE | operation::CANCEL_SCHEDULED_MESSAGE
    )
}

/// Decodes a management request from a complete transfer payload.
pub fn parse_request(payload: &[u8]) -> Result<Request, FrameError> {
    let mut request = Request {
        message_id: Value::Null,
        reply_to: None,
        operation: String::new(),
        body: OrderedMap::new(),
    };
    for part in codec::split_sections(payload)? {
        match (part.code, part.value()?) {
            (section::PROPERTIES, Value::List(fields)) => {
                request.message_id = fields.first().cloned().unwrap_or(Value::Null);
                if let Some(Value::String(address)) = fields.get(4) {
                    request.reply_to = Some(address.clone());
                }
            }
            (section::APPLICATION_PROPERTIES, Value::Map(map)) => {
                if let Some(operation) = text(map.get(&Value::String("operation".into()))) {
                    request.operation = operation;
                }
            }
            (section::AMQP_VALUE, Value::Map(map)) => request.body = map,
            _ => {}
        }
    }
    Ok(request)
}

/// Encodes the reply to the request with `request_id`.
pub fn encode_reply(request_id: Value, to: Option<String>, reply: Reply) -> Vec<u8> {
    let mut properties = vec![Value::Null; 13];
    properties[2] = to.map_or(Value::Null, Value::String);
    properties[5] = request_id;
    let mut application = OrderedMap::new();
    application.insert(Value::String("statusCode".into()), Value::Int(reply.status));
    application.insert(
        Value::String("statusDescription".into()),
        Value::String(reply.description),
    );
    if let Some(condition) = reply.condition {
        application.insert(
            Value::String("errorCondition".into()),
            Value::Symbol(Symbol::from(condition)),
        );
    }
    let mut out = codec::encode_value(codec::described(
        section::PROPERTIES,
        Value::List(properties),
    ));
    out.extend(codec::encode_value(codec::described(
        section::APPLICATION_PROPERTIES,
        Value::Map(application),
    )));
    out.extend(codec::encode_value(codec::described(
        section::AMQP_VALUE,
        Value::Map(reply.body),
    )));
    out
}

/// Runs `request` against `queue` for the node's sub-queue. `owner` identifies the
/// caller's connection, which session operations require to hold the session lock.
pub fn execute(
    queue: &mut Queue,
    sub_queue: SubQueue,
    request: &Request,
    owner: uuid::Uuid,
    now: OffsetDateTime,
) -> Reply {
    let result = match request.operation.as_str() {
        operation::PEEK_MESSAGE => peek(queue, sub_queue, &request.body, now),
        operation::RENEW_LOCK => renew_lock(queue, &request.body, now),
        operation::SCHEDULE_MESSAGE => schedule(queue, &request.body, now),
        operation::CANCEL_SCHEDULED_MESSAGE => sequence_numbers(&request.body).map(|numbers| {
            queue.cancel_scheduled(&numbers);
            Reply::ok(OrderedMap::new())
        }),
        operation::RECEIVE_BY_SEQUENCE_NUMBER => {
            receive_by_sequence_number(queue, sub_queue, &request.body, now)
        }
        operation::UPDATE_DISPOSITION => update_disposition(queue, &request.body, now),
        operation::RENEW_SESSION_LOCK => session_id(&request.body).and_then(|id| {
            let until = queue
                .renew_session_lock(&id, owner, now)
                .map_err(session_lost)?;
            Ok(Reply::ok(map([("expiration", timestamp(until))])))
        }),
        operation::GET_SESSION_STATE => session_id(&request.body).and_then(|id| {
            let state = queue.session_state(&id, owner, now).map_err(session_lost)?;
            let value = state.map_or(Value::Null, |bytes| Value::Binary(bytes.to_vec().into()));
            Ok(Reply::ok(map([("session-state", value)])))
        }),
        operation::SET_SESSION_STATE => session_id(&request.body).and_then(|id| {
            let state = match field(&request.body, "session-state") {
                Some(Value::Binary(bytes)) => Some(Bytes::copy_from_slice(bytes.as_ref())),
                _ => None,
            };
            queue
                .set_session_state(&id, owner, state, now)
                .map_err(session_lost)?;
            Ok(Reply::ok(OrderedMap::new()))
        }),
        other => Err(Reply::error(
            501,
            NOT_IMPLEMENTED,
            format!("The operation '{other}' is not supported by this broker."),
        )),
    };
    result.unwrap_or_else(|reply| reply)
}

fn peek(
    queue: &mut Queue,
    sub_queue: SubQueue,
    body: &OrderedMap<Value, Value>,
    now: OffsetDateTime,
) -> Result<Reply, Reply> {
    let from = integer(field(body, "from-sequence-number")).unwrap_or(1);
    let count = integer(field(body, "message-count")).unwrap_or(1).max(0) as usize;
    let session = text(field(body, "session-id"));
    let peeked = queue.peek(sub_queue, from, count, session.as_deref(), now);
    if peeked.is_empty() {
        return Ok(Reply::no_content());
    }
    let mut messages = Vec::with_capacity(peeked.len());
    for mut stored in peeked {
        stored.lock = None;
        messages.push(Value::Map(map([("message", encoded(&stored)?)])));
    }
    Ok(Reply::ok(map([("messages", Value::List(messages))])))
}

fn renew_lock(
    queue: &mut Queue,
    body: &OrderedMap<Value, Value>,
    now: OffsetDateTime,
) -> Result<Reply, Reply> {
    let mut expirations = Vec::new();
    for token in lock_tokens(body)? {
        let until = queue.renew_lock(token, now).map_err(lock_lost)?;
        expirations.push(timestamp(until));
    }
    Ok(Reply::ok(map([(
        "expirations",
        Value::Array(Array(expirations)),
    )])))
}

fn schedule(
    queue: &mut Queue,
    body: &OrderedMap<Value, Value>,
    now: OffsetDateTime,
) -> Result<Reply, Reply> {
    let entries = list(field(body, "messages"))
        .ok_or_else(|| argument_error("The request has no 'messages' list."))?;
    let mut sequence_numbers = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Map(entry) = entry else {
            return Err(argument_error("Each scheduled message must be a map."));
        };
        let Some(Value::Binary(bytes)) = field(&entry, "message") else {
            return Err(argument_error(
                "A scheduled message has no 'message' binary.",
            ));
        };
        let mut message = message::unpack_message(bytes.as_ref())
            .map_err(|error| argument_error(error.to_string()))?;
        if let Some(session) = text(field(&entry, "session-id")) {
            message.session_id = Some(session);
        }
        let number = queue
            .send(message, now)
            .map_err(|error| Reply::error(400, ARGUMENT_ERROR, error.to_string()))?;
        sequence_numbers.push(Value::Long(number));
    }
    Ok(Reply::ok(map([(
        "sequence-numbers",
        Value::Array(Array(sequence_numbers)),
    )])))
}

fn receive_by_sequence_number(
    queue: &mut Queue,
    sub_queue: SubQueue,
    body: &OrderedMap<Value, Value>,
    now: OffsetDateTime,
) -> Result<Reply, Reply> {
    let numbers = sequence_numbers(body)?;
    let peek_lock = integer(field(body, "receiver-settle-mode"))
        .is_none_or(|mode| mode as u64 != RECEIVE_AND_DELETE);
    let taken = queue
        .receive_deferred(sub_queue, &numbers, peek_lock, now)
        .map_err(|MessageNotFound(number)| {
            Reply::error(404, MESSAGE_NOT_FOUND, MessageNotFound(number).to_string())
        })?;
    let mut messages = Vec::with_capacity(taken.len());
    for stored in taken {
        let mut entry = map([("message", encoded(&stored)?)]);
        if let Some(lock) = &stored.lock {
            entry.insert(
                Value::String("lock-token".into()),
                Value::Uuid(Uuid::from(*lock.token.as_bytes())),
            );
        }
        messages.push(Value::Map(entry));
    }
    Ok(Reply::ok(map([("messages", Value::List(messages))])))
}

fn update_disposition(
    queue: &mut Queue,
    body: &OrderedMap<Value, Value>,
    now: OffsetDateTime,
) -> Result<Reply, Reply> {
    let status = text(field(body, "disposition-status")).unwrap_or_default();
    for token in lock_tokens(body)? {
        let result = match status.as_str() {
            "completed" => queue.complete(token, now),
            "abandoned" => queue.abandon(token, now),
            // Python's client spells it `defered`.
            "defered" | "deferred" => queue.defer(token, now),
            "suspended" => {
                let info = DeadLetterInfo {
                    reason: text(field(body, "deadletter-reason")),
                    description: text(field(body, "deadletter-description")),
                };
                queue.dead_letter(token, info, now)
            }
            other => {
                return Err(argument_error(format!(
                    "The disposition status '{other}' is not one of completed, abandoned, \
                     defered or suspended."
                )));
            }
        };
        result.map_err(lock_lost)?;
    }
    Ok(Reply::ok(OrderedMap::new()))
}

fn encoded(stored: &StoredMessage) -> Result<Value, Reply> {
    let bytes = message::encode_delivery(stored).map_err(|error| {
        Reply::error(
            500,
            "amqp:internal-error",
            format!("stored message: {error}"),
        )
    })?;
    Ok(Value::Binary(bytes.into()))
}

fn lock_tokens(body: &OrderedMap<Value, Value>) -> Result<Vec<uuid::Uuid>, Reply> {
    let values = list(field(body, "lock-tokens"))
        .ok_or_else(|| argument_error("The request has no 'lock-tokens' array."))?;
    values
        .iter()
        .map(|value| match value {
            Value::Uuid(token) => Ok(uuid::Uuid::from_bytes(*token.as_inner())),
            other => Err(argument_error(format!(
                "A lock token must be a uuid, not {other:?}."
            ))),
        })
        .collect()
}

fn sequence_numbers(body: &OrderedMap<Value, Value>) -> Result<Vec<i64>, Reply> {
    let values = list(field(body, "sequence-numbers"))
        .ok_or_else(|| argument_error("The request has no 'sequence-numbers' array."))?;
    values
        .iter()
        .map(|value| {
            integer(Some(value)).ok_or_else(|| {
                argument_error(format!("A sequence number must be a long, not {value:?}."))
            })
        })
        .collect()
}

fn session_id(body: &OrderedMap<Value, Value>) -> Result<String, Reply> {
    text(field(body, "session-id"))
        .ok_or_else(|| argument_error("The request has no 'session-id'."))
}

fn lock_lost(lost: LockLost) -> Reply {
    Reply::error(410, MESSAGE_LOCK_LOST, lost.to_string())
}

fn session_lost(lost: SessionLockLost) -> Reply {
    Reply::error(410, SESSION_LOCK_LOST, lost.to_string())
}

fn argument_error(description: impl Into<String>) -> Reply {
    Reply::error(400, ARGUMENT_ERROR, description)
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> OrderedMap<Value, Value> {
    let mut map = OrderedMap::new();
    for (key, value) in entries {
        map.insert(Value::String(key.to_owned()), value);
    }
    map
}

/// Looks a body field up by string key, or by symbol key as some clients write them.
fn field<'a>(body: &'a OrderedMap<Value, Value>, key: &str) -> Option<&'a Value> {
    body.get(&Value::String(key.to_owned()))
        .or_else(|| body.get(&Value::Symbol(Symbol::from(key))))
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Symbol(symbol) => Some(symbol.as_str().to_owned()),
        _ => None,
    }
}

fn integer(value: Option<&Value>) -> Option<i64> {
    Some(match value? {
        Value::Long(n) => *n,
        Value::Int(n) => i64::from(*n),
        Value::Short(n) => i64::from(*n),
        Value::Byte(n) => i64::from(*n),
        Value::Ulong(n) => i64::try_from(*n).ok()?,
        Value::Uint(n) => i64::from(*n),
        Value::Ushort(n) => i64::from(*n),
        Value::Ubyte(n) => i64::from(*n),
        _ => return None,
    })
}

fn list(value: Option<&Value>) -> Option<Vec<Value>> {
    match value? {
        Value::Array(array) => Some(array.0.clone()),
        Value::List(items) => Some(items.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::servicebus::QueueProperties;
    use crate::cloud::{ResourceId, servicebus::NewMessage};

    fn queue() -> Queue {
        let id = ResourceId::new(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ServiceBus/namespaces/n/queues/q",
        );
        Queue::new(id, QueueProperties::default(), OffsetDateTime::UNIX_EPOCH)
    }

    fn request(operation: &str, body: OrderedMap<Value, Value>) -> Request {
        Request {
            message_id: Value::Null,
            reply_to: None,
            operation: operation.to_owned(),
            body,
        }
    }

    fn data(text: &str) -> Bytes {
        codec::encode_value(codec::described(
            section::DATA,
            Value::Binary(text.as_bytes().to_vec().into()),
        ))
        .into()
    }

    #[test]
    fn renew_lock_returns_expirations_or_lock_lost() {
        let mut queue = queue();
        let now = OffsetDateTime::UNIX_EPOCH;
        queue.enqueue(Bytes::new(), data("a"), now);
        let token = queue.lock_next(now).unwrap().lock.unwrap().token;
        let tokens = |t: uuid::Uuid| {
            map([(
                "lock-tokens",
                Value::Array(Array(vec![Value::Uuid(Uuid::from(*t.as_bytes()))])),
            )])
        };
        let later = now + time::Duration::seconds(30);
        let reply = execute(
            &mut queue,
            SubQueue::Main,
            &request(operation::RENEW_LOCK, tokens(token)),
            uuid::Uuid::nil(),
            later,
        );
        assert_eq!(reply.status, 200);
        let Some(Value::Array(expirations)) = reply.body.get(&Value::String("expirations".into()))
        else {
            panic!("no expirations")
        };
        assert_eq!(
            expirations.0,
            [timestamp(later + time::Duration::minutes(1))]
        );

        let lost = execute(
            &mut queue,
            SubQueue::Main,
            &request(operation::RENEW_LOCK, tokens(uuid::Uuid::new_v4())),
            uuid::Uuid::nil(),
            later,
        );
        assert_eq!(lost.status, 410);
        assert_eq!(lost.condition, Some(MESSAGE_LOCK_LOST));
    }

    #[test]
    fn peek_of_empty_queue_is_no_content() {
        let mut queue = queue();
        let body = map([
            ("from-sequence-number", Value::Long(1)),
            ("message-count", Value::Int(5)),
        ]);
        let reply = execute(
            &mut queue,
            SubQueue::Main,
            &request(operation::PEEK_MESSAGE, body),
            uuid::Uuid::nil(),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(reply.status, 204);
    }

    #[test]
    fn session_state_needs_the_session_lock() {
        let mut queue = queue();
        queue.properties.requires_session = true;
        let now = OffsetDateTime::UNIX_EPOCH;
        let message = NewMessage {
            encoded: data("a"),
            session_id: Some("s1".into()),
            ..NewMessage::default()
        };
        queue.send(message, now).unwrap();
        let owner = uuid::Uuid::new_v4();
        let set = map([
            ("session-id", Value::String("s1".into())),
            ("session-state", Value::Binary(b"state".to_vec().into())),
        ]);
        let rejected = execute(
            &mut queue,
            SubQueue::Main,
            &request(operation::SET_SESSION_STATE, set.clone()),
            owner,
            now,
        );
        assert_eq!(rejected.condition, Some(SESSION_LOCK_LOST));

        queue.lock_session(Some("s1"), owner, now).unwrap();
        let accepted = execute(
            &mut queue,
            SubQueue::Main,
            &request(operation::SET_SESSION_STATE, set),
            owner,
            now,
        );
        assert_eq!(accepted.status, 200);
        let get = map([("session-id", Value::String("s1".into()))]);
        let reply = execute(
            &mut queue,
            SubQueue::Main,
            &request(operation::GET_SESSION_STATE, get),
            owner,
            now,
        );
        assert_eq!(
            reply.body.get(&Value::String("session-state".into())),
            Some(&Value::Binary(b"state".to_vec().into()))
        );
    }
}
