//! The AMQP side of the demo: the connection (TCP to the endpoint, TLS and AMQP named for
//! the namespace), the `$cbs` put-token exchange, and Service Bus message batches.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::ErrorCondition;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use fe2o3_amqp::{Connection, Receiver, Sendable, Sender};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::config::Config;

/// Message format of a Service Bus batch: one `data` section per encoded message.
const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;
/// Largest batch payload the demo builds, below the 256 KB limit of the Standard tier so the
/// envelope's own encoding fits too.
const MAX_BATCH_BYTES: usize = 250 * 1024;
/// Status of an accepted put-token.
const PUT_TOKEN_ACCEPTED: i32 = 202;

/// Opens the AMQP connection: TCP to the configured endpoint, then TLS (when the endpoint
/// is `amqps`) and AMQP both named for the namespace host.
pub async fn connect(config: &Config) -> Result<ConnectionHandle<()>> {
    let tcp = TcpStream::connect(&config.endpoint.address)
        .await
        .with_context(|| format!("connecting to {} failed", config.endpoint.address))?;
    tcp.set_nodelay(true)?;
    if !config.endpoint.tls {
        return open(tcp, &config.hostname).await;
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config()?));
    let server_name = ServerName::try_from(config.hostname.clone())
        .with_context(|| format!("'{}' is not a valid TLS server name", config.hostname))?;
    let tls = connector
        .connect(server_name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {} failed", config.hostname))?;
    open(tls, &config.hostname).await
}

async fn open<Io>(stream: Io, hostname: &str) -> Result<ConnectionHandle<()>>
where
    Io: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    Connection::builder()
        .container_id(format!("servicebusdemo-{}", uuid::Uuid::new_v4().simple()))
        .hostname(hostname)
        .sasl_hostname(hostname)
        .scheme("amqp")
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(stream)
        .await
        .with_context(|| format!("opening the AMQP connection to {hostname} failed"))
}

/// Builds the TLS client settings, trusting the CA certificates in `SSL_CERT_FILE`.
// NOTE: without SSL_CERT_FILE there are no trusted roots, so TLS to the real service needs
// that variable pointed at the system bundle.
fn tls_config() -> Result<rustls::ClientConfig> {
    let path = std::env::var("SSL_CERT_FILE")
        .context("SSL_CERT_FILE is not set; point it at the PEM file of trusted CA certificates")?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("reading CA certificates from {path} failed"))?
    {
        let certificate =
            certificate.with_context(|| format!("{path} contains an invalid certificate"))?;
        roots
            .add(certificate)
            .with_context(|| format!("{path} contains an unusable CA certificate"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Authorizes `audience` on the connection with a `$cbs` put-token of `token` (of type
/// `jwt` for an Entra token, `servicebus.windows.net:sastoken` for a shared access
/// signature), failing with the service's status and description unless it replies 202.
pub async fn put_token(
    session: &mut SessionHandle<()>,
    audience: &str,
    token_type: &str,
    token: &str,
    expires_on: OffsetDateTime,
) -> Result<()> {
    const REPLY_TO: &str = "servicebusdemo-cbs";
    let mut sender = Sender::attach(session, "servicebusdemo-cbs-sender", "$cbs")
        .await
        .context("attaching the $cbs sender failed")?;
    let mut receiver = Receiver::builder()
        .name("servicebusdemo-cbs-receiver")
        .source("$cbs")
        .target(REPLY_TO)
        .attach(session)
        .await
        .context("attaching the $cbs receiver failed")?;

    let expiration =
        Timestamp::from_milliseconds((expires_on.unix_timestamp_nanos() / 1_000_000) as i64);
    let request = Message::builder()
        .properties(
            Properties::builder()
                .message_id(1u64)
                .reply_to(REPLY_TO)
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", "put-token")
                .insert("type", token_type)
                .insert("name", audience)
                .insert("expiration", SimpleValue::Timestamp(expiration))
                .build(),
        )
        .body(AmqpValue(token.to_owned()))
        .build();
    sender
        .send(request)
        .await
        .context("sending the put-token request failed")?;
    let reply = receiver
        .recv::<Body<Value>>()
        .await
        .context("receiving the put-token reply failed")?;
    receiver.accept(&reply).await.ok();

    let properties = reply.message().application_properties.as_ref();
    let status = match properties.and_then(|p| p.get("status-code")) {
        Some(SimpleValue::Int(code)) => *code,
        other => bail!("put-token reply has no int status-code: {other:?}"),
    };
    let description = match properties.and_then(|p| p.get("status-description")) {
        Some(SimpleValue::String(text)) => text.clone(),
        _ => String::new(),
    };
    sender.close().await.ok();
    receiver.close().await.ok();
    if status != PUT_TOKEN_ACCEPTED {
        bail!("Put token failed. status-code: {status}, status-description: {description}");
    }
    Ok(())
}

/// Rewrites a refused attach so its error condition reads as on the wire
/// (`amqp:unauthorized-access`), the way Service Bus SDKs report it, instead of a Rust enum.
pub fn describe_attach_error(error: fe2o3_amqp::link::SenderAttachError) -> anyhow::Error {
    match error {
        fe2o3_amqp::link::SenderAttachError::RemoteClosedWithError(remote) => anyhow::anyhow!(
            "the service detached the link with {}: {}",
            condition_symbol(&remote.condition),
            remote.description.unwrap_or_default()
        ),
        other => other.into(),
    }
}

/// The symbol an AMQP error condition is sent as.
pub fn condition_symbol(condition: &ErrorCondition) -> String {
    let symbol: Symbol = match condition {
        ErrorCondition::AmqpError(e) => e.into(),
        ErrorCondition::ConnectionError(e) => e.into(),
        ErrorCondition::SessionError(e) => e.into(),
        ErrorCondition::LinkError(e) => e.into(),
        ErrorCondition::Custom(symbol) => symbol.clone(),
        #[allow(unreachable_patterns)]
        other => return format!("{other:?}"),
    };
    symbol.as_str().to_owned()
}

/// Messages collected for one Service Bus batch transfer.
#[derive(Default)]
pub struct Batch {
    sections: Vec<Data>,
    size: usize,
}

impl Batch {
    /// Adds a message with `body` as its data section. Returns `false`, leaving the batch
    /// unchanged, when the message does not fit.
    pub fn try_add(&mut self, body: &[u8]) -> Result<bool> {
        let message = Message::builder().data(Binary::from(body.to_vec())).build();
        let encoded =
            serde_amqp::to_vec(&Serializable(message)).context("encoding a message failed")?;
        if !self.sections.is_empty() && self.size + encoded.len() > MAX_BATCH_BYTES {
            return Ok(false);
        }
        self.size += encoded.len();
        self.sections.push(Data(Binary::from(encoded)));
        Ok(true)
    }

    /// Sends the batch, if it has messages, and empties it.
    pub async fn send(&mut self, sender: &mut Sender) -> Result<()> {
        if self.sections.is_empty() {
            return Ok(());
        }
        let count = self.sections.len();
        let envelope = Message::builder()
            .body(Body::<Value>::Data(
                std::mem::take(&mut self.sections).into(),
            ))
            .build();
        self.size = 0;
        let sendable = Sendable::builder()
            .message(envelope)
            .message_format(BATCH_MESSAGE_FORMAT)
            .build();
        let outcome = sender
            .send(sendable)
            .await
            .context("sending a message batch failed")?;
        if !outcome.is_accepted() {
            bail!("the batch of {count} messages was not accepted: {outcome:?}");
        }
        Ok(())
    }
}
