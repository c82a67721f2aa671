//! Messages as Service Bus stores and delivers them: batch unpacking on send, and the
//! header and `x-opt-*` annotations the broker adds on delivery.

use bytes::Bytes;
use serde_amqp::Value;
use serde_amqp::primitives::{OrderedMap, Symbol, Timestamp, Uuid};
use time::OffsetDateTime;

use super::codec::{self, BATCH_MESSAGE_FORMAT, FrameError, Section, section};
use crate::cloud::servicebus::StoredMessage;

/// Message-annotation keys Service Bus sets on delivered messages (AMQP protocol guide).
pub mod annotation {
    pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
    pub const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
    pub const LOCKED_UNTIL: &str = "x-opt-locked-until";
    pub const LOCK_TOKEN: &str = "x-opt-lock-token";
}

/// A message ready to store: the sender's header section (possibly empty) and the
/// sections after it, with delivery annotations removed because they belong to one hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub header: Bytes,
    pub encoded: Bytes,
}

/// Unpacks the payload of a completed transfer into the messages to store: one for
/// message format 0, one per `data` section for a Service Bus batch.
pub fn unpack_transfer(payload: &[u8], message_format: u32) -> Result<Vec<Incoming>, FrameError> {
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

fn unpack_message(bytes: &[u8]) -> Result<Incoming, FrameError> {
    let sections = codec::split_sections(bytes)?;
    let header = sections
        .iter()
        .find(|s| s.code == section::HEADER)
        .map(|s| Bytes::copy_from_slice(s.bytes))
        .unwrap_or_default();
    let mut encoded = Vec::with_capacity(bytes.len());
    for kept in sections
        .iter()
        .filter(|s| !matches!(s.code, section::HEADER | section::DELIVERY_ANNOTATIONS))
    {
        encoded.extend_from_slice(kept.bytes);
    }
    Ok(Incoming {
        header,
        encoded: encoded.into(),
    })
}

/// Encodes a stored message for delivery: a full header with `delivery-count` (prior
/// deliveries, written even when 0 because .NET reads it unconditionally), then the
/// sender's message annotations plus the broker's, then the rest unchanged.
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
    out.extend(codec::encode_value(codec::described(
        section::MESSAGE_ANNOTATIONS,
        Value::Map(annotations),
    )));
    for rest in sections
        .iter()
        .filter(|s| s.code != section::MESSAGE_ANNOTATIONS)
    {
        out.extend_from_slice(rest.bytes);
    }
    Ok(out)
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
