//! Conformance of the Service Bus fake with the Rust `azure_core_amqp` crate, unmodified: its
//! connection, session, claims-based security (`$cbs` put-token) and sender against the
//! broker, over TLS and plain AMQP.
//!
//! Run with `cargo test --features conformance --test conformance_amqp_rust`. The crate's
//! native-tls stack trusts the fakes' CA through `SSL_CERT_FILE`, which is process-wide, so
//! this file contains one test and runs in its own process. Every connection goes to 127.0.0.1.

#![cfg(feature = "conformance")]

use std::net::SocketAddr;
use std::time::Duration;

use azure_core::credentials::Secret;
use azure_core::http::{StatusCode, Url};
use azure_core_amqp::{
    AmqpClaimsBasedSecurity, AmqpClaimsBasedSecurityApis, AmqpConnection, AmqpConnectionApis,
    AmqpConnectionOptions, AmqpErrorKind, AmqpMessage, AmqpSendOutcome, AmqpSender, AmqpSenderApis,
    AmqpSession, AmqpSessionApis,
};
use fe2o3_amqp::types::messaging::Data;
use fe2o3_amqp::types::primitives::Binary;
use xtenant_fakes::cloud::{Cloud, Namespace, Queue, QueueProperties, lock};
use xtenant_fakes::servicebus::SERVICEBUS_AUDIENCE;
use xtenant_fakes::{Fakes, FakesConfig};

const NAMESPACE: &str = "ns1";
const NAMESPACE_HOST: &str = "ns1.servicebus.windows.net";
const QUEUE: &str = "myqueue";
/// The audience the Rust Service Bus client puts tokens for: the entity URI with port 5671.
const QUEUE_AUDIENCE: &str = "amqps://ns1.servicebus.windows.net:5671/myqueue";
/// Time one connection's exchange may take before the test fails.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Access tokens for Service Bus minted by the model.
struct Tokens {
    /// For a managed identity in tenant b, with Data Sender on the namespace.
    sender: Secret,
    /// For tenant a's operator application, which the namespace's tenant does not trust.
    other_tenant: Secret,
    expires_at: time::OffsetDateTime,
}

/// Provisions in tenant b a namespace `NAMESPACE` with `QUEUE` and a managed identity with
/// "Azure Service Bus Data Sender" on it, and mints the tokens the test puts.
fn provision(cloud: &mut Cloud) -> Tokens {
    let now = cloud.now();
    let tenant_a = cloud.tenant("a").unwrap().id.clone();
    let tenant_b = cloud.tenant("b").unwrap().id.clone();
    let group = cloud.subscriptions_of(&tenant_b)[0]
        .resource_id()
        .join("resourceGroups/rg-b");

    let identity_id =
        group.join("providers/Microsoft.ManagedIdentity/userAssignedIdentities/producer");
    let identity = cloud.create_user_assigned_identity(identity_id, &tenant_b, "eastus");

    let namespace_id = group.join(&format!(
        "providers/Microsoft.ServiceBus/namespaces/{NAMESPACE}"
    ));
    let queue = Queue::new(
        namespace_id.join(&format!("queues/{QUEUE}")),
        QueueProperties::default(),
        now,
    );
    let mut namespace = Namespace::new(namespace_id.clone(), tenant_b.clone(), "eastus", now);
    namespace.disable_local_auth = true;
    namespace.queues.insert(QUEUE.to_owned(), queue);
    cloud.namespaces.insert(NAMESPACE.into(), namespace);

    cloud.assign_role(
        &identity.principal_id,
        "Azure Service Bus Data Sender",
        &namespace_id,
    );

    let principal = cloud.principal(&identity.principal_id).unwrap();
    let sender = cloud.issue_access_token(principal, SERVICEBUS_AUDIENCE, "2");
    let operator_a = cloud.operator(&tenant_a).unwrap();
    let other_tenant = cloud.issue_access_token(operator_a, SERVICEBUS_AUDIENCE, "1");
    Tokens {
        sender: Secret::new(sender.access_token),
        other_tenant: Secret::new(other_tenant.access_token),
        expires_at: now + time::Duration::seconds(other_tenant.expires_in),
    }
}

/// Encodes a body as the single `data` section the broker stores for a message sent with
/// that body and no other sections.
fn data_section(body: &[u8]) -> Vec<u8> {
    serde_amqp::to_vec(&Data(Binary::from(body.to_vec()))).unwrap()
}

/// Opens a connection to `NAMESPACE_HOST` at `endpoint`, checks that tenant a's token is
/// rejected and tenant b's accepted on one `$cbs` link, then sends `bodies` to `QUEUE`.
async fn put_tokens_and_send(endpoint: Url, tokens: &Tokens, bodies: &[&str]) {
    let namespace = Url::parse(&format!("amqps://{NAMESPACE_HOST}")).unwrap();
    let options = AmqpConnectionOptions {
        custom_endpoint: Some(endpoint.clone()),
        ..Default::default()
    };
    let connection = AmqpConnection::new();
    connection
        .open("xtenant-conformance".into(), namespace, Some(options))
        .await
        .unwrap_or_else(|error| panic!("open to {endpoint} failed: {error}"));
    let session = AmqpSession::new();
    session.begin(&connection, None).await.unwrap();

    let cbs = AmqpClaimsBasedSecurity::new(session.clone()).unwrap();
    cbs.attach().await.unwrap();
    let error = cbs
        .authorize_path(
            QUEUE_AUDIENCE.into(),
            None,
            &tokens.other_tenant,
            tokens.expires_at,
        )
        .await
        .expect_err("a token from tenant a is rejected");
    println!("{endpoint}: put-token with tenant a's token: {error}");
    match error.kind() {
        AmqpErrorKind::ManagementStatusCode(status, description) => {
            assert_eq!(*status, StatusCode::Unauthorized);
            let description = description.as_deref().unwrap_or_default();
            assert!(
                description.starts_with("InvalidIssuer:"),
                "status-description: {description}"
            );
        }
        _ => panic!("expected a put-token status error, got: {error}"),
    }
    cbs.authorize_path(
        QUEUE_AUDIENCE.into(),
        Some("jwt".into()),
        &tokens.sender,
        tokens.expires_at,
    )
    .await
    .unwrap_or_else(|error| panic!("put-token with tenant b's token failed: {error}"));
    println!("{endpoint}: put-token with tenant b's token accepted");

    let sender = AmqpSender::new();
    sender
        .attach(&session, "xtenant-sender".into(), QUEUE.to_owned(), None)
        .await
        .unwrap();
    for body in bodies {
        let message = AmqpMessage::from(body.as_bytes().to_vec());
        let outcome = sender.send(message, None).await.unwrap();
        assert!(
            matches!(outcome, AmqpSendOutcome::Accepted),
            "the broker accepts {body:?}"
        );
    }
    println!("{endpoint}: sent {bodies:?}");

    sender.detach().await.unwrap();
    cbs.detach().await.unwrap();
    session.end().await.unwrap();
    connection.close().await.unwrap();
}

fn url(scheme: &str, address: SocketAddr) -> Url {
    Url::parse(&format!("{scheme}://{address}")).unwrap()
}

// NOTE: fe2o3-amqp 0.14.1, which azure_core_amqp 1.1.0 uses, records an unsettled delivery
// only after it hands the transfer to the session task. On a multi-thread runtime the broker's
// disposition can arrive in between, the client drops it, and `send` (put-token included)
// waits forever. On a current-thread runtime the session task runs only when this task
// yields, which it does in that gap only when the session's channel is full or its
// cooperative budget is spent.
#[tokio::test]
async fn azure_core_amqp_puts_token_and_sends() {
    // `RUST_LOG=debug` shows the broker's view of each connection.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let fakes = Fakes::start(FakesConfig::default()).await.unwrap();
    // SAFETY: this test binary runs this one test, so no other thread reads the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", fakes.ca_file()) };
    let tokens = provision(&mut lock(&fakes.cloud));

    let tls = url("amqps", fakes.endpoints.servicebus_tls);
    let plain = url("amqp", fakes.endpoints.servicebus_plain);
    let over_tls = put_tokens_and_send(tls, &tokens, &["tls-0", "tls-1"]);
    tokio::time::timeout(EXCHANGE_TIMEOUT, over_tls)
        .await
        .expect("the exchange over TLS finishes in time");
    let over_plain = put_tokens_and_send(plain, &tokens, &["plain-0"]);
    tokio::time::timeout(EXCHANGE_TIMEOUT, over_plain)
        .await
        .expect("the exchange over plain AMQP finishes in time");

    let cloud = lock(&fakes.cloud);
    let queue = cloud
        .namespace_by_host(NAMESPACE_HOST)
        .and_then(|namespace| namespace.queue(QUEUE))
        .expect("the queue exists");
    let stored: Vec<_> = queue.messages.iter().collect();
    assert_eq!(stored.len(), 3, "the queue holds every message sent");
    for (message, body) in stored.iter().zip(["tls-0", "tls-1", "plain-0"]) {
        assert_eq!(
            message.encoded.as_ref(),
            data_section(body.as_bytes()),
            "the stored message {} has body {body:?}",
            message.sequence_number
        );
    }
    let sequence_numbers: Vec<i64> = stored.iter().map(|m| m.sequence_number).collect();
    assert_eq!(sequence_numbers, [1, 2, 3]);
}
