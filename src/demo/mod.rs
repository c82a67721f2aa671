//! The demo workload: the Service Bus producer and consumer that the sample image
//! `ghcr.io/azure-samples/aks-app-samples/servicebusdemo` runs, with the same environment
//! contract, so the embedded cluster can run it in place of that image.
//!
//! It gets a token with `azure_identity`'s `WorkloadIdentityCredential`, opens an AMQP
//! connection with fe2o3-amqp, authorizes the queue with a `$cbs` put-token, then sends a
//! batch of `MESSAGE_COUNT` messages (producer) or receives until the queue is empty
//! (consumer). Two settings beyond the sample's reproduce client mistakes: see
//! [`Config::token_reads`] and [`Config::connection_string`].

mod amqp;
mod config;
mod credential;

use std::time::Duration;

use anyhow::{Context, Result};
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Receiver, Sender, Session};

pub use config::{Config, Mode, TokenReads};
use time::OffsetDateTime;

/// Body of every message the producer sends.
const MESSAGE_BODY: &str = "Hello World!";
/// The consumer treats the queue as drained once no message arrives for this long.
const RECEIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the workload as configured by the environment. The returned error carries the
/// whole chain, including the token endpoint's `AADSTS` message; print it with `{:?}`.
pub async fn run() -> Result<()> {
    let config = Config::from_env()?;
    let audience = format!("sb://{}/{}", config.hostname, config.queue);
    let token = match (&config.connection_string, config.token_reads) {
        (Some(text), _) => credential::ConnectionString::parse(text)?
            .sas_token(&audience, OffsetDateTime::now_utc()),
        (None, TokenReads::Once) => credential::token_after_rotation(true).await?,
        (None, TokenReads::AgainAfterRotation) => credential::token_after_rotation(false).await?,
        (None, TokenReads::EachRequest) => credential::workload_identity_token().await?,
    };

    let mut connection = amqp::connect(&config).await?;
    let mut session = Session::begin(&mut connection)
        .await
        .context("beginning an AMQP session failed")?;
    amqp::put_token(
        &mut session,
        &audience,
        token.token_type,
        &token.token,
        token.expires_on,
    )
    .await?;

    match config.mode {
        Mode::Producer => produce(&mut session, &config).await?,
        Mode::Consumer => consume(&mut session, &config).await?,
    }

    session
        .end()
        .await
        .context("ending the AMQP session failed")?;
    connection
        .close()
        .await
        .context("closing the AMQP connection failed")?;
    Ok(())
}

async fn produce(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    config: &Config,
) -> Result<()> {
    let mut sender = Sender::attach(session, "servicebusdemo-sender", config.queue.as_str())
        .await
        .map_err(amqp::describe_attach_error)
        .with_context(|| format!("attaching a sender to queue '{}' failed", config.queue))?;
    let mut batch = amqp::Batch::default();
    for _ in 0..config.message_count {
        println!("Adding message to batch: {MESSAGE_BODY}");
        if !batch.try_add(MESSAGE_BODY.as_bytes())? {
            batch.send(&mut sender).await?;
            batch.try_add(MESSAGE_BODY.as_bytes())?;
        }
    }
    batch.send(&mut sender).await?;
    println!("Sent {} messages", config.message_count);
    sender
        .close()
        .await
        .context("detaching the sender failed")?;
    Ok(())
}

async fn consume(
    session: &mut fe2o3_amqp::session::SessionHandle<()>,
    config: &Config,
) -> Result<()> {
    let mut receiver = Receiver::attach(session, "servicebusdemo-receiver", config.queue.as_str())
        .await
        .with_context(|| format!("attaching a receiver to queue '{}' failed", config.queue))?;
    let mut received = 0usize;
    // The consumer stops after MESSAGE_COUNT messages, or once the queue stays empty.
    while received < config.message_count {
        let next = tokio::time::timeout(RECEIVE_IDLE_TIMEOUT, receiver.recv::<Body<Value>>()).await;
        let Ok(delivery) = next else { break };
        let delivery = delivery.context("receiving a message failed")?;
        println!("Received message: {}", body_text(delivery.message()));
        receiver
            .accept(&delivery)
            .await
            .context("completing a message failed")?;
        received += 1;
    }
    println!("Received {received} messages");
    receiver
        .close()
        .await
        .context("detaching the receiver failed")?;
    Ok(())
}

fn body_text(message: &Message<Body<Value>>) -> String {
    match &message.body {
        Body::Data(sections) => sections
            .iter()
            .map(|data| String::from_utf8_lossy(&data.0).into_owned())
            .collect(),
        Body::Value(value) => format!("{:?}", value.0),
        other => format!("{other:?}"),
    }
}
