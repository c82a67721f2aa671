//! AMQP 1.0 framing and the encoding rules the broker follows on the wire.
//!
//! Decoding uses the `fe2o3-amqp-types` performatives. Encoding goes through
//! [`serde_amqp::Value`] so that every described list this broker sends has all
//! of its fields: `serde_amqp` drops trailing null and default fields, and
//! Python's pyamqp indexes performative fields by position, so a short list
//! crashes it.

use fe2o3_amqp_types::performatives::Performative;
use fe2o3_amqp_types::sasl::SaslInit;
use serde::Serialize;
use serde_amqp::Value;
use serde_amqp::descriptor::Descriptor;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Protocol header of the AMQP layer (protocol id 0, version 1.0.0).
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// Protocol header of the SASL layer (protocol id 3, version 1.0.0).
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// Frame type of AMQP frames.
pub const FRAME_TYPE_AMQP: u8 = 0;
/// Frame type of SASL frames.
pub const FRAME_TYPE_SASL: u8 = 1;
/// Smallest max-frame-size a peer may declare (AMQP 1.0, section 2.7.1).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;
/// Message format of a Service Bus batch: one `data` section per encoded inner message.
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// Descriptor codes of the message sections (AMQP 1.0, section 3.2).
pub mod section {
    pub const HEADER: u64 = 0x70;
    pub const DELIVERY_ANNOTATIONS: u64 = 0x71;
    pub const MESSAGE_ANNOTATIONS: u64 = 0x72;
    pub const PROPERTIES: u64 = 0x73;
    pub const APPLICATION_PROPERTIES: u64 = 0x74;
    pub const DATA: u64 = 0x75;
    pub const AMQP_SEQUENCE: u64 = 0x76;
    pub const AMQP_VALUE: u64 = 0x77;
    pub const FOOTER: u64 = 0x78;
}

/// A framing or decoding failure; the connection ends with the matching close error.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the socket, or reading from it failed.
    #[error("reading from the peer failed: {0}")]
    Io(#[from] std::io::Error),
    /// The frame header is malformed or the frame exceeds the negotiated size.
    #[error("invalid frame: {0}")]
    Framing(String),
    /// The frame body is not a valid encoding of the expected type.
    #[error("frame body could not be decoded: {0}")]
    Decode(String),
}

/// One frame as read from the socket, before its body is decoded.
#[derive(Debug)]
pub struct RawFrame {
    pub frame_type: u8,
    pub channel: u16,
    pub body: Vec<u8>,
}

/// Reads one frame, rejecting frames larger than `max_frame_size` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_size: u32,
) -> Result<RawFrame, FrameError> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let doff = u32::from(header[4]) * 4;
    if size < 8 || doff < 8 || doff > size {
        return Err(FrameError::Framing(format!(
            "frame size {size} with data offset {doff} is invalid"
        )));
    }
    if size > max_frame_size {
        return Err(FrameError::Framing(format!(
            "frame size {size} exceeds the max-frame-size {max_frame_size}"
        )));
    }
    let mut rest = vec![0u8; (size - 8) as usize];
    reader.read_exact(&mut rest).await?;
    let body = rest.split_off((doff - 8) as usize);
    Ok(RawFrame {
        frame_type: header[5],
        channel: u16::from_be_bytes([header[6], header[7]]),
        body,
    })
}

/// Appends a frame with the given type, channel and body bytes to `out`.
pub fn write_frame(out: &mut Vec<u8>, frame_type: u8, channel: u16, body: &[&[u8]]) {
    let len: usize = body.iter().map(|part| part.len()).sum();
    out.extend_from_slice(&((len + 8) as u32).to_be_bytes());
    out.push(2);
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    for part in body {
        out.extend_from_slice(part);
    }
}

/// Decodes an AMQP frame body into its performative and the payload that follows it.
/// An empty body is a heartbeat and decodes to `None`.
pub fn decode_amqp_body(body: &[u8]) -> Result<Option<(Performative, &[u8])>, FrameError> {
    if body.is_empty() {
        return Ok(None);
    }
    let len = encoded_len(body)
        .ok_or_else(|| FrameError::Decode("performative is truncated".to_owned()))?;
    let performative: Performative =
        serde_amqp::from_slice(&body[..len]).map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok(Some((performative, &body[len..])))
}

/// Decodes the body of the client's sasl-init frame.
pub fn decode_sasl_init(body: &[u8]) -> Result<SaslInit, FrameError> {
    serde_amqp::from_slice(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Encodes a described type with every field of each described list written out.
pub fn encode_full<T: Serialize>(value: &T) -> Vec<u8> {
    let bytes = serde_amqp::to_vec(value).expect("performatives always encode");
    let mut value: Value = serde_amqp::from_slice(&bytes).expect("own encoding decodes");
    pad_lists(&mut value);
    serde_amqp::to_vec(&value).expect("values always encode")
}

/// Encodes an already built value, padding its described lists first.
pub fn encode_value(mut value: Value) -> Vec<u8> {
    pad_lists(&mut value);
    serde_amqp::to_vec(&value).expect("values always encode")
}

/// Builds a described value with a numeric descriptor.
pub fn described(code: u64, value: Value) -> Value {
    Value::Described(Box::new(serde_amqp::described::Described {
        descriptor: Descriptor::Code(code),
        value,
    }))
}

/// Number of fields of the described list types this broker sends (AMQP 1.0 parts 2, 3 and 5).
fn field_count(code: u64) -> Option<usize> {
    Some(match code {
        0x10 => 10, // open
        0x11 => 8,  // begin
        0x12 => 14, // attach
        0x13 => 11, // flow
        0x14 => 11, // transfer
        0x15 => 6,  // disposition
        0x16 => 3,  // detach
        0x17 => 1,  // end
        0x18 => 1,  // close
        0x1d => 3,  // error
        0x23 => 2,  // received
        0x25 => 1,  // rejected
        0x27 => 3,  // modified
        0x28 => 11, // source
        0x29 => 7,  // target
        0x40 => 1,  // sasl-mechanisms
        0x44 => 2,  // sasl-outcome
        0x70 => 5,  // header
        0x73 => 13, // properties
        _ => return None,
    })
}

/// Pads every described list in `value` with nulls up to its type's field count.
pub fn pad_lists(value: &mut Value) {
    match value {
        Value::Described(described) => {
            let count = match &described.descriptor {
                Descriptor::Code(code) => field_count(*code),
                Descriptor::Name(_) => None,
            };
            if let Some(count) = count {
                if matches!(described.value, Value::Null) {
                    described.value = Value::List(Vec::new());
                }
                if let Value::List(fields) = &mut described.value
                    && fields.len() < count
                {
                    fields.resize(count, Value::Null);
                }
            }
            pad_lists(&mut described.value);
        }
        Value::List(items) => items.iter_mut().for_each(pad_lists),
        _ => {}
    }
}

/// Length in bytes of the one encoded AMQP value at the start of `bytes`, or `None` when
/// the value is truncated or starts with an unknown format code.
pub fn encoded_len(bytes: &[u8]) -> Option<usize> {
    let code = *bytes.first()?;
    let len = match code {
        0x00 => {
            let descriptor = encoded_len(&bytes[1..])?;
            let value = encoded_len(bytes.get(1 + descriptor..)?)?;
            1 + descriptor + value
        }
        0x40..=0x4f => 1,
        0x50..=0x5f => 2,
        0x60..=0x6f => 3,
        0x70..=0x7f => 5,
        0x80..=0x8f => 9,
        0x90..=0x9f => 17,
        0xa0..=0xaf | 0xc0..=0xcf | 0xe0..=0xef => 2 + usize::from(*bytes.get(1)?),
        0xb0..=0xbf | 0xd0..=0xdf | 0xf0..=0xff => {
            let size = bytes.get(1..5)?;
            5 + u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize
        }
        _ => return None,
    };
    (len <= bytes.len()).then_some(len)
}

/// One section of an encoded message: its descriptor code and its encoded bytes.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    pub code: u64,
    pub bytes: &'a [u8],
}

impl Section<'_> {
    /// Decodes the section's described value.
    pub fn value(&self) -> Result<Value, FrameError> {
        match serde_amqp::from_slice::<Value>(self.bytes) {
            Ok(Value::Described(described)) => Ok(described.value),
            Ok(other) => Err(FrameError::Decode(format!(
                "section is not described: {other:?}"
            ))),
            Err(e) => Err(FrameError::Decode(e.to_string())),
        }
    }
}

/// Splits an encoded message into its sections, checking that each is a known section
/// type and that the message has a body.
pub fn split_sections(mut bytes: &[u8]) -> Result<Vec<Section<'_>>, FrameError> {
    let mut sections = Vec::new();
    while !bytes.is_empty() {
        let len = encoded_len(bytes)
            .ok_or_else(|| FrameError::Decode("message section is truncated".to_owned()))?;
        let code = section_code(&bytes[..len]).ok_or_else(|| {
            FrameError::Decode("message section has no known descriptor".to_owned())
        })?;
        sections.push(Section {
            code,
            bytes: &bytes[..len],
        });
        bytes = &bytes[len..];
    }
    let has_body = sections.iter().any(|s| {
        matches!(
            s.code,
            section::DATA | section::AMQP_SEQUENCE | section::AMQP_VALUE
        )
    });
    if !has_body {
        return Err(FrameError::Decode("message has no body section".to_owned()));
    }
    Ok(sections)
}

/// Descriptor code of an encoded described value, when it names a message section.
fn section_code(bytes: &[u8]) -> Option<u64> {
    if bytes.first() != Some(&0x00) {
        return None;
    }
    let code = match bytes.get(1)? {
        0x53 => u64::from(*bytes.get(2)?),
        0x80 => u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?),
        0x44 => 0,
        _ => return None,
    };
    (section::HEADER..=section::FOOTER)
        .contains(&code)
        .then_some(code)
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp_types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
    use fe2o3_amqp_types::messaging::{Source, Target};
    use fe2o3_amqp_types::performatives::{Attach, Begin};

    use super::*;

    /// Decodes an encoded described list and returns its field count.
    fn list_len(bytes: &[u8]) -> usize {
        match serde_amqp::from_slice::<Value>(bytes).unwrap() {
            Value::Described(d) => match d.value {
                Value::List(fields) => fields.len(),
                other => panic!("not a list: {other:?}"),
            },
            other => panic!("not described: {other:?}"),
        }
    }

    #[test]
    fn begin_is_encoded_with_all_eight_fields() {
        let begin = Begin {
            remote_channel: Some(1),
            next_outgoing_id: 1,
            incoming_window: 5000,
            outgoing_window: 5000,
            handle_max: Handle(255),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let short = serde_amqp::to_vec(&begin).unwrap();
        assert!(
            list_len(&short) < 8,
            "serde_amqp is expected to drop trailing nulls"
        );
        assert_eq!(list_len(&encode_full(&begin)), 8);
    }

    #[test]
    fn attach_pads_nested_source_and_target() {
        let attach = Attach {
            name: "link".to_owned(),
            handle: Handle(0),
            role: Role::Receiver,
            snd_settle_mode: SenderSettleMode::Unsettled,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(Source::builder().address("$cbs").build())),
            target: Some(Box::new(Target::builder().address("$cbs").build().into())),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: Some(262_144),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let value: Value = serde_amqp::from_slice(&encode_full(&attach)).unwrap();
        let Value::Described(attach) = value else {
            panic!("not described")
        };
        let Value::List(fields) = attach.value else {
            panic!("not a list")
        };
        assert_eq!(fields.len(), 14);
        for (index, expected) in [(5, 11), (6, 7)] {
            let Value::Described(terminus) = &fields[index] else {
                panic!("no terminus")
            };
            let Value::List(terminus_fields) = &terminus.value else {
                panic!("not a list")
            };
            assert_eq!(terminus_fields.len(), expected, "field {index}");
        }
    }

    #[test]
    fn encoded_performative_decodes_with_payload() {
        let begin = Begin {
            remote_channel: None,
            next_outgoing_id: 7,
            incoming_window: 10,
            outgoing_window: 10,
            handle_max: Handle(3),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let mut body = encode_full(&begin);
        body.extend_from_slice(b"payload");
        let (performative, payload) = decode_amqp_body(&body).unwrap().unwrap();
        assert!(matches!(performative, Performative::Begin(b) if b.next_outgoing_id == 7));
        assert_eq!(payload, b"payload");
    }

    #[test]
    fn empty_body_is_a_heartbeat() {
        assert!(decode_amqp_body(&[]).unwrap().is_none());
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        assert!(decode_amqp_body(&[0x00, 0x53, 0x99, 0x45]).is_err());
        assert!(decode_amqp_body(&[0xff]).is_err());
        assert!(decode_amqp_body(&[0x00, 0x53]).is_err());
    }

    #[tokio::test]
    async fn frame_round_trips_through_the_reader() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, FRAME_TYPE_AMQP, 3, &[b"abc", b"de"]);
        let frame = read_frame(&mut bytes.as_slice(), 512).await.unwrap();
        assert_eq!(frame.channel, 3);
        assert_eq!(frame.frame_type, FRAME_TYPE_AMQP);
        assert_eq!(frame.body, b"abcde");
    }

    #[tokio::test]
    async fn oversized_and_malformed_frames_are_framing_errors() {
        let mut big = Vec::new();
        write_frame(&mut big, FRAME_TYPE_AMQP, 0, &[&[0u8; 600]]);
        assert!(matches!(
            read_frame(&mut big.as_slice(), 512).await,
            Err(FrameError::Framing(_))
        ));
        let bad_offset = [0, 0, 0, 8, 1, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut bad_offset.as_slice(), 512).await,
            Err(FrameError::Framing(_))
        ));
    }

    #[test]
    fn message_sections_are_split_and_need_a_body() {
        let mut message = encode_value(described(section::HEADER, Value::List(vec![])));
        message.extend(encode_value(described(
            section::DATA,
            Value::Binary(b"hi".to_vec().into()),
        )));
        let sections = split_sections(&message).unwrap();
        let codes: Vec<u64> = sections.iter().map(|s| s.code).collect();
        assert_eq!(codes, [section::HEADER, section::DATA]);
        let header_only = encode_value(described(section::HEADER, Value::List(vec![])));
        assert!(split_sections(&header_only).is_err());
    }
}
