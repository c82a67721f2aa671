//! One client connection: protocol header and SASL negotiation, then the AMQP connection
//! with its sessions, served until either side closes it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp_types::definitions::{
    AmqpError, ConnectionError, Error as AmqpErrorBody, ErrorCondition,
};
use fe2o3_amqp_types::performatives::{Begin, Close, End, Open, Performative};
use fe2o3_amqp_types::primitives::Array;
use fe2o3_amqp_types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use serde_amqp::primitives::Symbol;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use tracing::{Instrument, debug, info, info_span};

use super::cbs::Grant;
use super::codec::{
    self, AMQP_HEADER, FRAME_TYPE_AMQP, FRAME_TYPE_SASL, FrameError, MIN_MAX_FRAME_SIZE, RawFrame,
    SASL_HEADER,
};
use super::session::Session;
use crate::cloud::{self, SharedCloud};

/// Largest frame the broker accepts and announces, in bytes (Service Bus Standard tier).
pub const MAX_FRAME_SIZE: u32 = 262_144;
/// Highest channel number a client may use.
const CHANNEL_MAX: u16 = 4999;
/// Container id the broker announces in its open frame.
const CONTAINER_ID: &str = "xtenant-servicebus";
/// Time a client has to complete the protocol header and SASL exchange. Service Bus drops a
/// connection that has not put a valid token within 20 seconds of opening.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// SASL mechanisms offered: .NET sends `MSSBCBS`, Python, Go and Rust send `ANONYMOUS`;
/// both mean "authorize later through `$cbs`".
const SASL_MECHANISMS: [&str; 2] = ["MSSBCBS", "ANONYMOUS"];
/// How often idle links look for messages that became available without a notification,
/// such as a lock that expired on the model's clock.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What every connection shares: the model and a signal raised when any queue gains
/// messages or unlocks one.
#[derive(Clone)]
pub struct Context {
    pub cloud: SharedCloud,
    pub queue_changed: Arc<Notify>,
}

/// A connection-level failure, sent to the client in a close frame.
#[derive(Debug)]
pub struct ConnectionFailure {
    pub condition: ErrorCondition,
    pub description: String,
}

impl ConnectionFailure {
    pub fn new(condition: impl Into<ErrorCondition>, description: impl Into<String>) -> Self {
        Self {
            condition: condition.into(),
            description: description.into(),
        }
    }
}

/// Frames queued for the socket, and the peer's limit on their size.
pub struct Outbox {
    pub bytes: Vec<u8>,
    pub peer_max_frame_size: u32,
}

impl Outbox {
    /// Queues a frame on `channel` whose body is `performative` followed by `payload`.
    pub fn frame(&mut self, channel: u16, performative: &[u8], payload: &[u8]) {
        codec::write_frame(
            &mut self.bytes,
            FRAME_TYPE_AMQP,
            channel,
            &[performative, payload],
        );
    }
}

/// State of the client's connection after the handshake.
pub struct Connection {
    /// Identifies the connection as the holder of message session locks.
    pub id: uuid::Uuid,
    pub context: Context,
    pub outbox: Outbox,
    /// Host name from the client's open frame: the namespace, even when the client dialled
    /// a custom endpoint.
    pub hostname: Option<String>,
    pub grants: Vec<Grant>,
    /// Sessions by the client's channel number.
    sessions: BTreeMap<u16, Session>,
    opened: bool,
    heartbeat: Option<Duration>,
}

/// Serves one accepted stream until it closes; never panics on client input.
pub async fn serve<S>(stream: S, context: Context, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!("amqp_connection", %peer);
    async move {
        info!("connection accepted");
        match run(stream, context).await {
            Ok(()) => info!("connection closed"),
            Err(error) => debug!(%error, "connection ended"),
        }
    }
    .instrument(span)
    .await
}

async fn run<S>(stream: S, context: Context) -> Result<(), FrameError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let handshake = timeout(HANDSHAKE_TIMEOUT, negotiate(&mut reader, &mut writer)).await;
    match handshake {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            // Closing with unread input makes the kernel reset the connection, and the
            // client would lose the header just sent; read what is left first.
            let _ = writer.shutdown().await;
            let mut sink = [0u8; 1024];
            let drain = async { while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = timeout(Duration::from_secs(2), drain).await;
            return Ok(());
        }
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            debug!("rejected: handshake timed out");
            return Ok(());
        }
    }

    let (frames_tx, mut frames) = mpsc::channel(64);
    let reader_task = tokio::spawn(async move {
        loop {
            let frame = codec::read_frame(&mut reader, MAX_FRAME_SIZE).await;
            let failed = frame.is_err();
            if frames_tx.send(frame).await.is_err() || failed {
                break;
            }
        }
    });
    let mut connection = Connection {
        id: uuid::Uuid::new_v4(),
        context: context.clone(),
        outbox: Outbox {
            bytes: Vec::new(),
            peer_max_frame_size: MIN_MAX_FRAME_SIZE,
        },
        hostname: None,
        grants: Vec::new(),
        sessions: BTreeMap::new(),
        opened: false,
        heartbeat: None,
    };
    let result = connection.serve_frames(&mut frames, &mut writer).await;
    reader_task.abort();
    connection.release_all_locks();
    let _ = writer.shutdown().await;
    result
}

/// Runs the protocol header and SASL exchange. Returns `false` when the connection ends
/// here because the client sent something other than what the exchange expects.
async fn negotiate<R, W>(reader: &mut R, writer: &mut W) -> Result<bool, FrameError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    if header != SASL_HEADER {
        // AMQP 1.0 section 2.2: answer an unsupported header with the one the server
        // supports, then close. Service Bus requires SASL before AMQP.
        debug!(header = ?header, "rejected: protocol header is not the SASL header");
        writer.write_all(&SASL_HEADER).await?;
        return Ok(false);
    }
    let mechanisms = SaslMechanisms {
        sasl_server_mechanisms: Array(SASL_MECHANISMS.iter().map(|m| Symbol::from(*m)).collect()),
    };
    let mut out = SASL_HEADER.to_vec();
    codec::write_frame(
        &mut out,
        FRAME_TYPE_SASL,
        0,
        &[&codec::encode_full(&mechanisms)],
    );
    writer.write_all(&out).await?;

    let frame = codec::read_frame(reader, MAX_FRAME_SIZE).await?;
    if frame.frame_type != FRAME_TYPE_SASL {
        return Err(FrameError::Framing("expected a SASL frame".to_owned()));
    }
    let init = codec::decode_sasl_init(&frame.body)?;
    let accepted = SASL_MECHANISMS.contains(&init.mechanism.as_str());
    let outcome = SaslOutcome {
        code: if accepted {
            SaslCode::Ok
        } else {
            SaslCode::Auth
        },
        additional_data: None,
    };
    let mut out = Vec::new();
    codec::write_frame(
        &mut out,
        FRAME_TYPE_SASL,
        0,
        &[&codec::encode_full(&outcome)],
    );
    writer.write_all(&out).await?;
    if !accepted {
        debug!(
            mechanism = init.mechanism.as_str(),
            "rejected: SASL mechanism not offered"
        );
        return Ok(false);
    }

    reader.read_exact(&mut header).await?;
    if header != AMQP_HEADER {
        debug!(header = ?header, "rejected: protocol header after SASL is not AMQP");
        writer.write_all(&AMQP_HEADER).await?;
        return Ok(false);
    }
    writer.write_all(&AMQP_HEADER).await?;
    Ok(true)
}

impl Connection {
    async fn serve_frames<W: AsyncWrite + Unpin>(
        &mut self,
        frames: &mut mpsc::Receiver<Result<RawFrame, FrameError>>,
        writer: &mut WriteHalf<W>,
    ) -> Result<(), FrameError> {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heartbeat: Option<tokio::time::Interval> = None;
        let queue_changed = self.context.queue_changed.clone();
        loop {
            let mut stop = false;
            tokio::select! {
                frame = frames.recv() => {
                    let frame = frame.unwrap_or_else(|| {
                        Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                    });
                    match frame.and_then(|frame| self.handle_frame(frame)) {
                        Ok(keep_going) => stop = !keep_going,
                        Err(FrameError::Io(error)) => return Err(FrameError::Io(error)),
                        Err(error) => {
                            let condition: ErrorCondition = match error {
                                FrameError::Decode(_) => AmqpError::DecodeError.into(),
                                _ => ConnectionError::FramingError.into(),
                            };
                            self.fail(ConnectionFailure::new(condition, error.to_string()));
                            stop = true;
                        }
                    }
                    if heartbeat.is_none() && let Some(period) = self.heartbeat {
                        let mut timer = interval_at(Instant::now() + period, period);
                        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        heartbeat = Some(timer);
                    }
                }
                _ = queue_changed.notified() => self.pump_all(),
                _ = poll.tick() => self.pump_all(),
                _ = async { heartbeat.as_mut().expect("guarded").tick().await }, if heartbeat.is_some() => {
                    // An empty frame keeps the client's idle timer from expiring.
                    codec::write_frame(&mut self.outbox.bytes, FRAME_TYPE_AMQP, 0, &[]);
                }
            }
            if !self.outbox.bytes.is_empty() {
                writer.write_all(&self.outbox.bytes).await?;
                writer.flush().await?;
                self.outbox.bytes.clear();
            }
            if stop {
                return Ok(());
            }
        }
    }

    /// Handles one frame. Returns `false` once the connection is closed.
    fn handle_frame(&mut self, frame: RawFrame) -> Result<bool, FrameError> {
        if frame.frame_type != FRAME_TYPE_AMQP {
            return Err(FrameError::Framing(format!(
                "frame type {} is not valid after the AMQP header",
                frame.frame_type
            )));
        }
        let Some((performative, payload)) = codec::decode_amqp_body(&frame.body)? else {
            return Ok(true);
        };
        let result = match performative {
            Performative::Open(open) => self.on_open(open),
            _ if !self.opened => Err(ConnectionFailure::new(
                AmqpError::IllegalState,
                "the first frame must be an open frame",
            )),
            Performative::Close(close) => {
                if let Some(error) = &close.error {
                    debug!(condition = ?error.condition, "client closed the connection with an error");
                }
                self.release_all_locks();
                self.outbox
                    .frame(0, &codec::encode_full(&Close { error: None }), &[]);
                return Ok(false);
            }
            Performative::Begin(begin) => self.on_begin(frame.channel, begin),
            Performative::End(_) => self.on_end(frame.channel),
            other => self.on_session_frame(frame.channel, other, payload),
        };
        match result {
            Ok(()) => Ok(true),
            Err(failure) => {
                self.fail(failure);
                Ok(false)
            }
        }
    }

    fn on_open(&mut self, open: Open) -> Result<(), ConnectionFailure> {
        if self.opened {
            return Err(ConnectionFailure::new(
                AmqpError::IllegalState,
                "the connection is already open",
            ));
        }
        self.opened = true;
        self.hostname = open
            .hostname
            .as_deref()
            .map(|host| host.split(':').next().unwrap_or(host).to_ascii_lowercase());
        self.outbox.peer_max_frame_size = open
            .max_frame_size
            .0
            .clamp(MIN_MAX_FRAME_SIZE, MAX_FRAME_SIZE);
        self.heartbeat = open
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms) / 2));
        debug!(hostname = ?self.hostname, container = %open.container_id, "open");
        let reply = Open {
            container_id: CONTAINER_ID.to_owned(),
            hostname: None,
            max_frame_size: MAX_FRAME_SIZE.into(),
            channel_max: CHANNEL_MAX.into(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.outbox.frame(0, &codec::encode_full(&reply), &[]);
        Ok(())
    }

    fn on_begin(&mut self, channel: u16, begin: Begin) -> Result<(), ConnectionFailure> {
        if begin.remote_channel.is_some() {
            return Err(ConnectionFailure::new(
                AmqpError::NotAllowed,
                "the broker does not begin sessions, so a begin must not name a remote channel",
            ));
        }
        if channel > CHANNEL_MAX || self.sessions.contains_key(&channel) {
            return Err(ConnectionFailure::new(
                ConnectionError::FramingError,
                format!("channel {channel} is in use or above channel-max {CHANNEL_MAX}"),
            ));
        }
        let local_channel = (0..=CHANNEL_MAX)
            .find(|c| self.sessions.values().all(|s| s.local_channel != *c))
            .expect("fewer sessions than channels");
        let session = Session::new(local_channel, &begin);
        self.outbox.frame(
            local_channel,
            &codec::encode_full(&session.begin_reply(channel)),
            &[],
        );
        self.sessions.insert(channel, session);
        Ok(())
    }

    fn on_end(&mut self, channel: u16) -> Result<(), ConnectionFailure> {
        let mut session = self
            .sessions
            .remove(&channel)
            .ok_or_else(|| unknown_channel(channel))?;
        session.release_locks(&self.context.cloud, self.id);
        self.outbox.frame(
            session.local_channel,
            &codec::encode_full(&End { error: None }),
            &[],
        );
        self.context.queue_changed.notify_waiters();
        Ok(())
    }

    fn on_session_frame(
        &mut self,
        channel: u16,
        performative: Performative,
        payload: &[u8],
    ) -> Result<(), ConnectionFailure> {
        let mut session = self
            .sessions
            .remove(&channel)
            .ok_or_else(|| unknown_channel(channel))?;
        let result = session.handle(self, performative, payload);
        self.sessions.insert(channel, session);
        result
    }

    /// Delivers what queues hold to every link with credit.
    fn pump_all(&mut self) {
        let channels: Vec<u16> = self.sessions.keys().copied().collect();
        for channel in channels {
            if let Some(mut session) = self.sessions.remove(&channel) {
                session.pump(self);
                self.sessions.insert(channel, session);
            }
        }
    }

    /// Queues a reply on the first `$cbs` link the client receives from, in any session.
    pub fn send_cbs_reply(&mut self, reply_to: Option<&str>, message: Vec<u8>) {
        let channels: Vec<u16> = self.sessions.keys().copied().collect();
        for channel in channels {
            let Some(mut session) = self.sessions.remove(&channel) else {
                continue;
            };
            let sent = session.queue_cbs_reply(&mut self.outbox, reply_to, &message);
            self.sessions.insert(channel, session);
            if sent {
                return;
            }
        }
        debug!("put-token reply dropped: the client has no $cbs receiver link");
    }

    fn fail(&mut self, failure: ConnectionFailure) {
        debug!(condition = ?failure.condition, description = %failure.description, "closing connection with an error");
        let close = Close {
            error: Some(AmqpErrorBody::new(
                failure.condition,
                failure.description,
                None,
            )),
        };
        self.outbox.frame(0, &codec::encode_full(&close), &[]);
    }

    fn release_all_locks(&mut self) {
        let mut released = false;
        for session in self.sessions.values_mut() {
            released |= session.release_locks(&self.context.cloud, self.id);
        }
        if released {
            self.context.queue_changed.notify_waiters();
        }
    }

    /// Locks the shared model for one step.
    pub fn model(&self) -> std::sync::MutexGuard<'_, cloud::Cloud> {
        cloud::lock(&self.context.cloud)
    }
}

fn unknown_channel(channel: u16) -> ConnectionFailure {
    ConnectionFailure::new(
        AmqpError::IllegalState,
        format!("channel {channel} has no session; send begin first"),
    )
}
