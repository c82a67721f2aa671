//! Messages as Service Bus stores and delivers them: batch unpacking on send, the fields
//! the broker reads from a sent message, and the header, `x-opt-*` annotations and
//! dead-letter properties it adds on delivery.

use bytes::Bytes;
use serde_amqp::Value;
use serde_amqp::primitives::{OrderedMap, Symbol, Timestamp, Uuid};
use time::OffsetDateTime;

use super::codec::{self, BATCH_MESSAGE_FORMAT, FrameError, Section, section};
use crate::cloud::servicebus::{MessageState, NewMessage, StoredMessage};

/// Message-annotation keys Service Bus sets on delivered messages (AMQP protocol guide).
pub mod annotation {
    pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
    pub const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
    pub const LOCKED_UNTIL: &str = "x-opt-locked-until";
    pub const LOCK_TOKEN: &str = "x-opt-lock-token";
    pub const SCHEDULED_ENQUEUE_TIME: &str = "x-opt-scheduled-enqueue-time";
    pub const MESSAGE_STATE: &str = "x-opt-message-state";
}

/// Application properties Service Bus sets on dead-lettered messages.
pub mod property {
    pub const DEAD_LETTER_REASON: &str = "DeadLetterReason";
    pub const DEAD_LETTER_ERROR_DESCRIPTION: &str = "DeadLetterErrorDescription";
}

/// Index of `ttl` in the header section's field list (AMQP 1.0, section 3.2.1).
const HEADER_TTL: usize = 2;
/// Index of `group-id` in the properties section's field list (AMQP 1.0, section 3.2.4).
const PROPERTIES_GROUP_ID: usize = 10;

/// Unpacks the payload of a completed transfer into the messages to store: one for
/// message format 0, one per `data` section for a Service Bus batch.
pub fn unpack_transfer(payload: &[u8], message_format: u32) -> Result<Vec<NewMessage>, FrameError> {
    match message_format {
        0 => Ok(vec![unpack_message(payload)?]),
        BATCH_MESSAGE_FORMAT => {
            let mut messages = Vec::new();
            for envelope_section in codec::split_sections(payload)? {
                if envelope_section.code != section::DATA {
                    continue;
                }
                let Value::Binary(inner) = envelope_section.value()? else {
                    return Err(FrameError::Decode(
                        "batch data section is not binary".to_owned(),
                    ));
                };
                messages.push(unpack_message(&inner)?);
            }
            if messages.is_empty() {
                return Err(FrameError::Decode("batch contains no messages".to_owned()));
            }
            Ok(messages)
        }
        other => Err(FrameError::Decode(format!(
            "message format {other:#x} is not supported"
        ))),
    }
}

/// Splits one encoded message into what the queue stores: the sender's header section
/// (possibly empty) and the sections after it, without delivery annotations because they
/// belong to one hop. Reads the session id, time-to-live and scheduled enqueue time.
pub fn unpack_message(bytes: &[u8]) -> Result<NewMessage, FrameError> {
    let sections = codec::split_sections(bytes)?;
    let mut message = NewMessage::default();
    let mut encoded = Vec::with_capacity(bytes.len());
    for part in &sections {
        match part.code {
            section::HEADER => {
                message.header = Bytes::copy_from_slice(part.bytes);
                if let Value::List(fields) = part.value()?
                    && let Some(Value::Uint(ttl)) = fields.get(HEADER_TTL)
                {
                    message.time_to_live = Some(time::Duration::milliseconds(i64::from(*ttl)));
                }
                continue;
            }
            section::DELIVERY_ANNOTATIONS => continue,
            section::MESSAGE_ANNOTATIONS => {
                if let Value::Map(map) = part.value()?
                    && let Some(Value::Timestamp(at)) = map.get(&Value::Symbol(Symbol::from(
                        annotation::SCHEDULED_ENQUEUE_TIME,
                    )))
                {
                    message.scheduled_enqueue_at = from_milliseconds(at.milliseconds());
                }
            }
            section::PROPERTIES => {
                if let Value::List(fields) = part.value()?
                    && let Some(Value::String(group)) = fields.get(PROPERTIES_GROUP_ID)
                {
                    message.session_id = Some(group.clone());
                }
            }
            _ => {}
        }
        encoded.extend_from_slice(part.bytes);
    }
    message.encoded = encoded.into();
    Ok(message)
}

/// Encodes a stored message for delivery: a full header with `delivery-count` (prior
/// deliveries, written even when 0 because .NET reads it unconditionally), then the
/// sender's message annotations plus the broker's, then the rest with the dead-letter
/// reason and description added to the application properties of a dead-lettered message.
pub fn encode_delivery(message: &StoredMessage) -> Result<Vec<u8>, FrameError> {
    let mut header_fields = if message.header.is_empty() {
        Vec::new()
    } else {
        let header = Section {
            code: section::HEADER,
            bytes: &message.header,
        };
        match header.value()? {
            Value::List(fields) => fields,
            _ => Vec::new(),
        }
    };
    header_fields.resize(5, Value::Null);
    header_fields[4] = Value::Uint(message.delivery_count);
    let mut out = codec::encode_value(codec::described(
        section::HEADER,
        Value::List(header_fields),
    ));

    let sections = codec::split_sections(&message.encoded)?;
    let mut annotations = match sections
        .iter()
        .find(|s| s.code == section::MESSAGE_ANNOTATIONS)
    {
        Some(existing) => match existing.value()? {
            Value::Map(map) => map,
            _ => OrderedMap::new(),
        },
        None => OrderedMap::new(),
    };
    let mut annotate = |key: &str, value: Value| {
        annotations.insert(Value::Symbol(Symbol::from(key)), value);
    };
    annotate(
        annotation::SEQUENCE_NUMBER,
        Value::Long(message.sequence_number),
    );
    annotate(annotation::ENQUEUED_TIME, timestamp(message.enqueued_at));
    if let Some(lock) = &message.lock {
        annotate(annotation::LOCKED_UNTIL, timestamp(lock.locked_until));
        annotate(
            annotation::LOCK_TOKEN,
            Value::Uuid(Uuid::from(*lock.token.as_bytes())),
        );
    }
    if let Some(at) = message.scheduled_enqueue_at {
        annotate(annotation::SCHEDULED_ENQUEUE_TIME, timestamp(at));
    }
    if message.state != MessageState::Active {
        annotate(annotation::MESSAGE_STATE, Value::Int(message.state as i32));
    }
    out.extend(codec::encode_value(codec::described(
        section::MESSAGE_ANNOTATIONS,
        Value::Map(annotations),
    )));

    let dead_letter_properties = message.dead_letter.as_ref().map(|info| {
        [
            (property::DEAD_LETTER_REASON, info.reason.clone()),
            (
                property::DEAD_LETTER_ERROR_DESCRIPTION,
                info.description.clone(),
            ),
        ]
    });
    let mut pending_properties = dead_letter_properties;
    for rest in sections
        .iter()
        .filter(|s| s.code != section::MESSAGE_ANNOTATIONS)
    {
        let is_body = matches!(
            rest.code,
            section::DATA | section::AMQP_SEQUENCE | section::AMQP_VALUE
        );
        if rest.code == section::APPLICATION_PROPERTIES
            && let Some(added) = pending_properties.take()
        {
            let map = match rest.value()? {
                Value::Map(map) => map,
                _ => OrderedMap::new(),
            };
            out.extend(application_properties_with(map, added));
            continue;
        }
        if is_body && let Some(added) = pending_properties.take() {
            out.extend(application_properties_with(OrderedMap::new(), added));
        }
        out.extend_from_slice(rest.bytes);
    }
    Ok(out)
}

/// Encodes an application-properties section: `map` with `added` entries that have values.
fn application_properties_with(
    mut map: OrderedMap<Value, Value>,
    added: [(&str, Option<String>); 2],
) -> Vec<u8> {
    for (key, value) in added {
        if let Some(value) = value {
            map.insert(Value::String(key.to_owned()), Value::String(value));
        }
    }
    codec::encode_value(codec::described(
        section::APPLICATION_PROPERTIES,
        Value::Map(map),
    ))
}

/// Delivery tag that carries a lock token: the token's bytes in .NET `Guid` order, which
/// Python reads with `uuid.UUID(bytes_le=tag)` and Go by swapping the first three groups.
pub fn lock_token_tag(token: uuid::Uuid) -> [u8; 16] {
    token.to_bytes_le()
}

/// An AMQP timestamp (milliseconds since the Unix epoch).
pub fn timestamp(at: OffsetDateTime) -> Value {
    Value::Timestamp(Timestamp::from_milliseconds(
        (at.unix_timestamp_nanos() / 1_000_000) as i64,
    ))
}

/// The time of an AMQP timestamp, or `None` when it is out of range.
pub fn from_milliseconds(milliseconds: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(milliseconds) * 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use crate::cloud::servicebus::MessageLock;

    use super::*;

    fn data_message(text: &str) -> Vec<u8> {
        codec::encode_value(codec::described(
            section::DATA,
            Value::Binary(text.as_bytes().to_vec().into()),
        ))
    }

    fn stored(encoded: Vec<u8>, lock: Option<MessageLock>) -> StoredMessage {
        StoredMessage {
            sequence_number: 42,
            enqueued_at: OffsetDateTime::UNIX_EPOCH,
            header: Bytes::new(),
            encoded: encoded.into(),
            delivery_count: 0,
            lock,
            state: MessageState::Active,
            session_id: None,
            scheduled_enqueue_at: None,
            expires_at: None,
            dead_letter: None,
        }
    }

    #[test]
    fn batch_is_unpacked_into_each_inner_message() {
        let mut envelope = Vec::new();
        for text in ["a", "b", "c"] {
            envelope.extend(codec::encode_value(codec::described(
                section::DATA,
                Value::Binary(data_message(text).into()),
            )));
        }
        let messages = unpack_transfer(&envelope, BATCH_MESSAGE_FORMAT).unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1].encoded, Bytes::from(data_message("b")));
    }

    #[test]
    fn header_and_delivery_annotations_are_split_off() {
        let mut message = codec::encode_value(codec::described(
            section::HEADER,
            Value::List(vec![Value::Bool(true)]),
        ));
        message.extend(codec::encode_value(codec::described(
            section::DELIVERY_ANNOTATIONS,
            Value::Map(OrderedMap::new()),
        )));
        message.extend(data_message("x"));
        let incoming = unpack_transfer(&message, 0).unwrap().remove(0);
        assert!(!incoming.header.is_empty());
        assert_eq!(incoming.encoded, Bytes::from(data_message("x")));
    }

    #[test]
    fn unpack_reads_ttl_session_and_schedule() {
        let mut message = codec::encode_value(codec::described(
            section::HEADER,
            Value::List(vec![Value::Null, Value::Null, Value::Uint(1500)]),
        ));
        let mut annotations = OrderedMap::new();
        annotations.insert(
            Value::Symbol(Symbol::from(annotation::SCHEDULED_ENQUEUE_TIME)),
            Value::Timestamp(Timestamp::from_milliseconds(5000)),
        );
        message.extend(codec::encode_value(codec::described(
            section::MESSAGE_ANNOTATIONS,
            Value::Map(annotations),
        )));
        let mut properties = vec![Value::Null; 13];
        properties[PROPERTIES_GROUP_ID] = Value::String("s1".into());
        message.extend(codec::encode_value(codec::described(
            section::PROPERTIES,
            Value::List(properties),
        )));
        message.extend(data_message("x"));
        let unpacked = unpack_message(&message).unwrap();
        assert_eq!(
            unpacked.time_to_live,
            Some(time::Duration::milliseconds(1500))
        );
        assert_eq!(unpacked.session_id.as_deref(), Some("s1"));
        assert_eq!(
            unpacked.scheduled_enqueue_at,
            Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(5))
        );
    }

    #[test]
    fn dead_lettered_delivery_gets_reason_properties() {
        let mut message = stored(data_message("x"), None);
        message.dead_letter = Some(crate::cloud::servicebus::DeadLetterInfo {
            reason: Some("bad".into()),
            description: Some("why".into()),
        });
        let encoded = encode_delivery(&message).unwrap();
        let sections = codec::split_sections(&encoded).unwrap();
        let properties = sections
            .iter()
            .find(|s| s.code == section::APPLICATION_PROPERTIES)
            .expect("application properties added before the body");
        let Value::Map(map) = properties.value().unwrap() else {
            panic!("map")
        };
        assert_eq!(
            map.get(&Value::String(property::DEAD_LETTER_REASON.into())),
            Some(&Value::String("bad".into()))
        );
        assert_eq!(
            map.get(&Value::String(
                property::DEAD_LETTER_ERROR_DESCRIPTION.into()
            )),
            Some(&Value::String("why".into()))
        );
        assert_eq!(sections.last().unwrap().code, section::DATA);
    }

    #[test]
    fn delivery_has_full_header_and_annotations() {
        let token = uuid::Uuid::new_v4();
        let lock = MessageLock {
            token,
            locked_until: OffsetDateTime::UNIX_EPOCH,
        };
        let encoded = encode_delivery(&stored(data_message("x"), Some(lock))).unwrap();
        let sections = codec::split_sections(&encoded).unwrap();
        let codes: Vec<u64> = sections.iter().map(|s| s.code).collect();
        assert_eq!(
            codes,
            [section::HEADER, section::MESSAGE_ANNOTATIONS, section::DATA]
        );
        let Value::List(header) = sections[0].value().unwrap() else {
            panic!("header")
        };
        assert_eq!(header.len(), 5);
        assert_eq!(header[4], Value::Uint(0));
        let Value::Map(annotations) = sections[1].value().unwrap() else {
            panic!("annotations")
        };
        let key = |k: &str| Value::Symbol(Symbol::from(k));
        assert_eq!(
            annotations.get(&key(annotation::SEQUENCE_NUMBER)),
            Some(&Value::Long(42))
        );
        assert_eq!(
            annotations.get(&key(annotation::LOCK_TOKEN)),
            Some(&Value::Uuid(Uuid::from(*token.as_bytes())))
        );
    }

    #[test]
    fn lock_token_tag_is_dotnet_guid_order() {
        let token = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(
            lock_token_tag(token),
            [
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
    }
}
