//! The Service Bus AMQP fake driven by the fe2o3-amqp client over plain TCP: CBS
//! put-token, batched send, peek-lock receive and complete, and Azure's rejections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::SenderAttachError;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{
    AmqpError, ErrorCondition, ReceiverSettleMode, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp, Value};
use fe2o3_amqp::{Connection, Receiver, Sendable, Sender, Session};
use xtenant_fakes::cloud::sas::{
    AccessRight, AccessRights, AuthorizationRule, KeyType, ROOT_RULE_NAME,
};
use xtenant_fakes::cloud::{
    Cloud, Namespace, Principal, Queue, QueueProperties, ResourceId, SharedCloud, TenantId,
};
use xtenant_fakes::servicebus::{BATCH_MESSAGE_FORMAT, ServiceBusServer, annotation};

const NAMESPACE_HOST: &str = "ns1.servicebus.windows.net";
const QUEUE: &str = "myqueue";

struct Fixture {
    cloud: SharedCloud,
    server: ServiceBusServer,
    /// A principal of tenant b with "Azure Service Bus Data Owner" on the namespace.
    owner: Principal,
    /// A principal of tenant b with no Service Bus role.
    stranger: Principal,
    /// A principal of tenant a, the wrong tenant for the namespace.
    foreigner: Principal,
}

impl Fixture {
    async fn start() -> Self {
        let mut cloud = Cloud::with_tenants(&["a", "b"]);
        let tenant_a = cloud.tenant("a").unwrap().id.clone();
        let tenant_b = cloud.tenant("b").unwrap().id.clone();
        let subscription = cloud.subscriptions_of(&tenant_b)[0].resource_id();
        let namespace_id =
            subscription.join("resourceGroups/rg-b/providers/Microsoft.ServiceBus/namespaces/ns1");
        add_namespace(&mut cloud, &namespace_id, &tenant_b);

        let stranger = cloud.operator(&tenant_b).unwrap().clone();
        let foreigner = cloud.operator(&tenant_a).unwrap().clone();
        let mut owner = stranger.clone();
        owner.object_id = xtenant_fakes::cloud::ObjectId::random();
        owner.display_name = "data-owner".into();
        cloud.principals.push(owner.clone());
        assign(
            &mut cloud,
            &namespace_id,
            &owner,
            "Azure Service Bus Data Owner",
        );
        assign(
            &mut cloud,
            &namespace_id,
            &foreigner,
            "Azure Service Bus Data Owner",
        );

        let cloud = Arc::new(Mutex::new(cloud));
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = ServiceBusServer::start(cloud.clone(), None, bind)
            .await
            .unwrap();
        Self {
            cloud,
            server,
            owner,
            stranger,
            foreigner,
        }
    }

    fn token_for(&self, principal: &Principal) -> String {
        let cloud = self.cloud.lock().unwrap();
        cloud
            .issue_access_token(principal, "https://servicebus.azure.net", "2")
            .access_token
    }

    async fn connect(&self) -> (ConnectionHandle<()>, SessionHandle<()>) {
        let url = format!("amqp://{}", self.server.local_addr());
        let mut connection = Connection::builder()
            .container_id("servicebus-test")
            .hostname(NAMESPACE_HOST)
            .sasl_profile(SaslProfile::Anonymous)
            .open(url.as_str())
            .await
            .unwrap();
        let session = Session::begin(&mut connection).await.unwrap();
        (connection, session)
    }

    /// Moves the model's clock forward.
    fn advance(&self, by: time::Duration) {
        self.cloud.lock().unwrap().clock.advance(by);
    }

    fn active_count(&self) -> usize {
        let cloud = self.cloud.lock().unwrap();
        cloud
            .namespace_by_host(NAMESPACE_HOST)
            .unwrap()
            .queue(QUEUE)
            .unwrap()
            .active_count()
    }

    /// Waits up to two seconds for the queue's active count to reach `expected`, and returns it. A settled
    /// disposition has no reply, so the client returns before the broker applies it.
    async fn active_count_becomes(&self, expected: usize) -> usize {
        for _ in 0..40 {
            if self.active_count() == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.active_count()
    }
}

fn add_namespace(cloud: &mut Cloud, id: &ResourceId, tenant: &TenantId) {
    let now = cloud.now();
    let queue = Queue::new(
        id.join(&format!("queues/{QUEUE}")),
        QueueProperties::default(),
        now,
    );
    let mut namespace = Namespace::new(id.clone(), tenant.clone(), "eastus", now);
    namespace.disable_local_auth = true;
    namespace.queues.insert(QUEUE.to_owned(), queue);
    cloud.namespaces.insert("ns1".into(), namespace);
}

fn assign(cloud: &mut Cloud, scope: &ResourceId, principal: &Principal, role: &str) {
    cloud.assign_role(&principal.object_id, role, scope);
}

/// Puts `token` for `audience` through `$cbs` and returns the reply's `status-code` and
/// `status-description`.
async fn put_token(session: &mut SessionHandle<()>, audience: &str, token: &str) -> (i32, String) {
    put_token_of_type(session, "jwt", audience, token).await
}

/// Puts `token` of CBS type `token_type` (`jwt` or `servicebus.windows.net:sastoken`) for
/// `audience` and returns the reply's `status-code` and `status-description`.
async fn put_token_of_type(
    session: &mut SessionHandle<()>,
    token_type: &str,
    audience: &str,
    token: &str,
) -> (i32, String) {
    let mut sender = Sender::attach(session, "cbs-sender", "$cbs").await.unwrap();
    let mut receiver = Receiver::builder()
        .name("cbs-receiver")
        .source("$cbs")
        .target("cbs-reply-to")
        .attach(session)
        .await
        .unwrap();

    let request = Message::builder()
        .properties(
            Properties::builder()
                .message_id(1u64)
                .reply_to("cbs-reply-to")
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", "put-token")
                .insert("type", token_type)
                .insert("name", audience)
                .insert(
                    "expiration",
                    SimpleValue::Timestamp(Timestamp::from_milliseconds(0)),
                )
                .build(),
        )
        .body(AmqpValue(token.to_owned()))
        .build();
    sender
        .send(request)
        .await
        .unwrap()
        .accepted_or("put-token request")
        .unwrap();
    let reply = receiver.recv::<Body<Value>>().await.unwrap();
    let correlation = reply
        .message()
        .properties
        .as_ref()
        .and_then(|p| p.correlation_id.clone());
    assert_eq!(
        correlation,
        Some(1u64.into()),
        "correlation-id echoes the message-id"
    );
    let properties = reply.message().application_properties.as_ref().unwrap();
    let status = match properties.get("status-code") {
        Some(SimpleValue::Int(code)) => *code,
        other => panic!("status-code is not an AMQP int: {other:?}"),
    };
    let description = match properties.get("status-description") {
        Some(SimpleValue::String(text)) => text.clone(),
        other => panic!("status-description is not a string: {other:?}"),
    };

    sender.close().await.unwrap();
    receiver.close().await.unwrap();
    (status, description)
}

fn batch_of(texts: &[&str]) -> Sendable<Body<Value>> {
    let sections = texts
        .iter()
        .map(|text| {
            let inner = Message::builder()
                .data(Binary::from(text.as_bytes().to_vec()))
                .build();
            Data(Binary::from(
                serde_amqp::to_vec(&Serializable(inner)).unwrap(),
            ))
        })
        .collect();
    let envelope = Message::builder().body(Body::Data(sections)).build();
    Sendable::builder()
        .message(envelope)
        .message_format(BATCH_MESSAGE_FORMAT)
        .build()
}

#[tokio::test]
async fn batch_send_then_peek_lock_and_complete() {
    let fixture = Fixture::start().await;
    let (mut connection, mut session) = fixture.connect().await;
    let token = fixture.token_for(&fixture.owner);
    let audience = format!("sb://{NAMESPACE_HOST}/{QUEUE}");
    let (status, description) = put_token(&mut session, &audience, &token).await;
    assert_eq!(status, 202);
    assert_eq!(description, "Accepted");

    let address = format!("amqps://{NAMESPACE_HOST}/{QUEUE}");
    let mut sender = Sender::attach(&mut session, "sender", address.as_str())
        .await
        .unwrap();
    let outcome = sender
        .send(batch_of(&["one", "two", "three"]))
        .await
        .unwrap();
    assert!(outcome.is_accepted(), "batch outcome: {outcome:?}");
    assert_eq!(fixture.active_count(), 3);

    let mut receiver = Receiver::builder()
        .name("receiver")
        .source("MyQueue")
        .sender_settle_mode(SenderSettleMode::Unsettled)
        .receiver_settle_mode(ReceiverSettleMode::Second)
        .attach(&mut session)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for expected_sequence in 1..=3i64 {
        let delivery = receiver.recv::<Body<Value>>().await.unwrap();
        assert_eq!(delivery.delivery_tag().len(), 16, "lock token tag");
        let message = delivery.message();
        assert_eq!(message.header.as_ref().map(|h| h.delivery_count), Some(0));
        let annotations = message.message_annotations.as_ref().unwrap();
        assert_eq!(
            annotations.get(&OwnedKey::from(Symbol::from(annotation::SEQUENCE_NUMBER))),
            Some(&Value::Long(expected_sequence))
        );
        let lock_token =
            match annotations.get(&OwnedKey::from(Symbol::from(annotation::LOCK_TOKEN))) {
                Some(Value::Uuid(token)) => uuid::Uuid::from_bytes(*token.as_inner()),
                other => panic!("x-opt-lock-token is missing: {other:?}"),
            };
        let tag: [u8; 16] = delivery.delivery_tag().as_slice().try_into().unwrap();
        assert_eq!(
            uuid::Uuid::from_bytes_le(tag),
            lock_token,
            "tag is the token in GUID order"
        );
        if let Body::Data(data) = delivery.body() {
            bodies.push(String::from_utf8(data[0].0.to_vec()).unwrap());
        }
        receiver.accept(&delivery).await.unwrap();
    }
    assert_eq!(bodies, ["one", "two", "three"]);
    assert_eq!(fixture.active_count_becomes(0).await, 0);

    sender.close().await.unwrap();
    receiver.close().await.unwrap();
    session.end().await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn abandoned_message_comes_back_with_count() {
    let fixture = Fixture::start().await;
    let (mut connection, mut session) = fixture.connect().await;
    let token = fixture.token_for(&fixture.owner);
    put_token(
        &mut session,
        &format!("amqps://{NAMESPACE_HOST}:5671/{QUEUE}"),
        &token,
    )
    .await;
    let mut sender = Sender::attach(&mut session, "sender", QUEUE).await.unwrap();
    sender
        .send(Message::builder().value("hello").build())
        .await
        .unwrap();

    let mut receiver = Receiver::builder()
        .name("receiver")
        .source(QUEUE)
        .sender_settle_mode(SenderSettleMode::Unsettled)
        .attach(&mut session)
        .await
        .unwrap();
    let first = receiver.recv::<Body<Value>>().await.unwrap();
    receiver.release(&first).await.unwrap();
    let second = receiver.recv::<Body<Value>>().await.unwrap();
    assert_eq!(
        second.message().header.as_ref().map(|h| h.delivery_count),
        Some(1)
    );
    assert_ne!(
        first.delivery_tag(),
        second.delivery_tag(),
        "a new lock token"
    );
    receiver.accept(&second).await.unwrap();
    assert_eq!(fixture.active_count_becomes(0).await, 0);
    receiver.close().await.unwrap();
    sender.close().await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn disconnect_releases_locks() {
    let fixture = Fixture::start().await;
    let token = fixture.token_for(&fixture.owner);
    {
        let (mut connection, mut session) = fixture.connect().await;
        put_token(&mut session, &format!("sb://{NAMESPACE_HOST}/"), &token).await;
        let mut sender = Sender::attach(&mut session, "sender", QUEUE).await.unwrap();
        sender
            .send(Message::builder().value("kept").build())
            .await
            .unwrap();
        let mut receiver = Receiver::attach(&mut session, "receiver", QUEUE)
            .await
            .unwrap();
        let _locked = receiver.recv::<Body<Value>>().await.unwrap();
        connection.close().await.unwrap();
    }
    let (mut connection, mut session) = fixture.connect().await;
    put_token(&mut session, &format!("sb://{NAMESPACE_HOST}/"), &token).await;
    let mut receiver = Receiver::attach(&mut session, "receiver", QUEUE)
        .await
        .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(5), receiver.recv::<Body<Value>>())
        .await
        .expect("the released message is delivered again")
        .unwrap();
    assert_eq!(
        again.message().header.as_ref().map(|h| h.delivery_count),
        Some(1)
    );
    connection.close().await.unwrap();
}

#[tokio::test]
async fn sender_without_role_is_unauthorized() {
    let fixture = Fixture::start().await;
    let (mut connection, mut session) = fixture.connect().await;
    let token = fixture.token_for(&fixture.stranger);
    let (status, _) = put_token(
        &mut session,
        &format!("sb://{NAMESPACE_HOST}/{QUEUE}"),
        &token,
    )
    .await;
    assert_eq!(status, 202, "the token itself is valid");

    let error = Sender::attach(&mut session, "sender", QUEUE)
        .await
        .unwrap_err();
    let SenderAttachError::RemoteClosedWithError(error) = error else {
        panic!("expected a detach with an error, got {error:?}");
    };
    assert_eq!(
        error.condition,
        ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess)
    );
    let description = error.description.unwrap();
    assert!(
        description.starts_with(
            "Unauthorized access. 'Send' claim(s) are required to perform this operation. \
             Resource: 'sb://ns1.servicebus.windows.net/myqueue'. TrackingId:"
        ),
        "{description}"
    );
    // fe2o3-amqp reports a refused receiver (null source) without the detach error.
    assert!(
        Receiver::attach(&mut session, "receiver", QUEUE)
            .await
            .is_err()
    );
    // After that failure fe2o3-amqp may have stopped its connection engine already, so
    // closing can report IllegalState.
    let _ = connection.close().await;
}

#[tokio::test]
async fn unknown_queue_is_not_found() {
    let fixture = Fixture::start().await;
    let (mut connection, mut session) = fixture.connect().await;
    let token = fixture.token_for(&fixture.owner);
    put_token(&mut session, &format!("sb://{NAMESPACE_HOST}/"), &token).await;
    let error = Sender::attach(&mut session, "sender", "nosuchqueue")
        .await
        .unwrap_err();
    let SenderAttachError::RemoteClosedWithError(error) = error else {
        panic!("expected a detach with an error, got {error:?}");
    };
    assert_eq!(
        error.condition,
        ErrorCondition::AmqpError(AmqpError::NotFound)
    );
    assert!(error.description.unwrap().starts_with(
        "The messaging entity 'sb://ns1.servicebus.windows.net/nosuchqueue' could not be found."
    ));
    connection.close().await.unwrap();
}

#[tokio::test]
async fn token_from_wrong_tenant_fails_put_token() {
    let fixture = Fixture::start().await;
    let (mut connection, mut session) = fixture.connect().await;
    let token = fixture.token_for(&fixture.foreigner);
    let (status, description) = put_token(
        &mut session,
        &format!("sb://{NAMESPACE_HOST}/{QUEUE}"),
        &token,
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        description.starts_with("InvalidIssuer: Token issuer is invalid. TrackingId:"),
        "{description}"
    );
    let error = Sender::attach(&mut session, "sender", QUEUE)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SenderAttachError::RemoteClosedWithError(_)),
        "{error:?}"
    );
    connection.close().await.unwrap();
}

#[tokio::test]
async fn garbage_bytes_get_a_header_and_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fixture = Fixture::start().await;
    let mut stream = tokio::net::TcpStream::connect(fixture.server.local_addr())
        .await
        .unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("the broker closes the socket")
        .unwrap();
    assert_eq!(reply, b"AMQP\x03\x01\x00\x00");
}

#[tokio::test]
async fn garbage_frame_after_open_closes_with_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fixture = Fixture::start().await;
    let mut stream = tokio::net::TcpStream::connect(fixture.server.local_addr())
        .await
        .unwrap();
    stream.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    // sasl-init ANONYMOUS, then the AMQP header and a frame whose body is not a performative.
    let init = [0x00, 0x53, 0x41, 0xc0, 0x0c, 0x01, 0xa3, 0x09];
    let mut frame = Vec::new();
    let body: Vec<u8> = init.iter().copied().chain(*b"ANONYMOUS").collect();
    frame.extend(((body.len() + 8) as u32).to_be_bytes());
    frame.extend([2, 1, 0, 0]);
    frame.extend(body);
    stream.write_all(&frame).await.unwrap();
    stream.write_all(b"AMQP\x00\x01\x00\x00").await.unwrap();
    stream
        .write_all(&[0, 0, 0, 12, 2, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("the broker closes the socket")
        .unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("amqp:decode-error"),
        "close carries the condition: {text:?}"
    );
}

#[tokio::test]
async fn expired_token_detaches_link_unless_renewed() {
    let fixture = Fixture::start().await;
    let (mut connection, mut session) = fixture.connect().await;
    let audience = format!("sb://{NAMESPACE_HOST}/{QUEUE}");
    put_token(&mut session, &audience, &fixture.token_for(&fixture.owner)).await;
    let mut sender = Sender::attach(&mut session, "sender", QUEUE).await.unwrap();

    // A new put-token before the first token expires keeps the link open.
    fixture.advance(time::Duration::minutes(50));
    put_token(&mut session, &audience, &fixture.token_for(&fixture.owner)).await;
    fixture.advance(time::Duration::minutes(30));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let renewed = sender
        .send(Message::builder().value("renewed").build())
        .await
        .unwrap();
    assert!(renewed.is_accepted(), "outcome after renewal: {renewed:?}");

    // Once every token has expired, the broker detaches the link.
    fixture.advance(time::Duration::hours(2));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let expired = sender
        .send(Message::builder().value("expired").build())
        .await;
    assert!(
        expired.is_err(),
        "send on a link whose token expired: {expired:?}"
    );
    assert_eq!(fixture.active_count(), 1);
    let _ = connection.close().await;
}

#[tokio::test]
async fn expired_message_is_dead_lettered_when_configured() {
    let fixture = Fixture::start().await;
    {
        let mut cloud = fixture.cloud.lock().unwrap();
        let queue = cloud
            .namespace_by_host_mut(NAMESPACE_HOST)
            .unwrap()
            .queue_mut(QUEUE)
            .unwrap();
        queue.properties.default_message_time_to_live = Some(time::Duration::minutes(5));
        queue.properties.dead_lettering_on_message_expiration = true;
    }
    let (mut connection, mut session) = fixture.connect().await;
    put_token(
        &mut session,
        &format!("sb://{NAMESPACE_HOST}/{QUEUE}"),
        &fixture.token_for(&fixture.owner),
    )
    .await;
    let mut sender = Sender::attach(&mut session, "sender", QUEUE).await.unwrap();
    sender
        .send(Message::builder().value("short-lived").build())
        .await
        .unwrap();
    fixture.advance(time::Duration::minutes(6));

    let mut receiver = Receiver::attach(&mut session, "receiver", QUEUE)
        .await
        .unwrap();
    let nothing =
        tokio::time::timeout(Duration::from_millis(500), receiver.recv::<Body<Value>>()).await;
    assert!(nothing.is_err(), "an expired message is not delivered");
    let mut dead_letters = Receiver::attach(
        &mut session,
        "dead-letter-receiver",
        format!("{QUEUE}/$DeadLetterQueue").as_str(),
    )
    .await
    .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(5), dead_letters.recv::<Body<Value>>())
        .await
        .expect("the expired message is in the dead-letter queue")
        .unwrap();
    let properties = letter.message().application_properties.as_ref().unwrap();
    assert_eq!(
        properties.get("DeadLetterReason"),
        Some(&SimpleValue::String("TTLExpiredException".into()))
    );
    dead_letters.accept(&letter).await.unwrap();
    let _ = connection.close().await;
}

/// CBS token type of a shared access signature.
const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

impl Fixture {
    /// Turns on local (SAS) authentication, which the fixture's namespace starts without.
    fn enable_local_auth(&self) {
        let mut cloud = self.cloud.lock().unwrap();
        cloud
            .namespace_by_host_mut(NAMESPACE_HOST)
            .unwrap()
            .disable_local_auth = false;
    }

    /// Adds a namespace rule with `rights` and returns it, keys included.
    fn add_rule(&self, name: &str, rights: &[AccessRight]) -> AuthorizationRule {
        let rule = AuthorizationRule::new(name, AccessRights::new(rights.iter().copied()));
        let mut cloud = self.cloud.lock().unwrap();
        cloud
            .namespace_by_host_mut(NAMESPACE_HOST)
            .unwrap()
            .authorization_rules
            .insert(name.to_ascii_lowercase(), rule.clone());
        rule
    }

    /// Returns the namespace's rule `name`, keys included.
    fn rule(&self, name: &str) -> AuthorizationRule {
        let cloud = self.cloud.lock().unwrap();
        cloud
            .namespace_by_host(NAMESPACE_HOST)
            .unwrap()
            .authorization_rule(name)
            .unwrap()
            .clone()
    }

    /// Signs a SAS token for `resource` with `key` of rule `key_name`, valid for an hour
    /// on the model's clock.
    fn sas_token(&self, resource: &str, key_name: &str, key: &str) -> String {
        let expiry = self.cloud.lock().unwrap().now() + time::Duration::hours(1);
        sign_sas(resource, key_name, key, expiry.unix_timestamp())
    }
}

/// Signs a shared access signature as the Azure SDKs do: HMAC-SHA256 keyed with the key's
/// text over the URL-encoded resource, a newline and the expiry, fields in the SDKs' order.
fn sign_sas(resource: &str, key_name: &str, key: &str, expiry: i64) -> String {
    let encode = |text: &str| serde_urlencoded::to_string([("v", text)]).unwrap()[2..].to_owned();
    let encoded_resource = encode(resource);
    let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
    let signature = aws_lc_rs::hmac::sign(
        &hmac_key,
        format!("{encoded_resource}\n{expiry}").as_bytes(),
    );
    format!(
        "SharedAccessSignature sr={encoded_resource}&sig={}&se={expiry}&skn={}",
        encode(&STANDARD.encode(signature.as_ref())),
        encode(key_name)
    )
}

#[tokio::test]
async fn sas_token_of_root_rule_sends() {
    let fixture = Fixture::start().await;
    fixture.enable_local_auth();
    let root = fixture.rule(ROOT_RULE_NAME);
    let audience = format!("sb://{NAMESPACE_HOST}/{QUEUE}");
    let (mut connection, mut session) = fixture.connect().await;

    let token = fixture.sas_token(&audience, ROOT_RULE_NAME, &root.primary_key);
    let (status, description) =
        put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &token).await;
    assert_eq!(status, 202, "{description}");
    let mut sender = Sender::attach(&mut session, "sender", QUEUE).await.unwrap();
    sender
        .send(
            Message::builder()
                .data(Binary::from(b"one".to_vec()))
                .build(),
        )
        .await
        .unwrap()
        .accepted_or("send")
        .unwrap();
    assert_eq!(fixture.active_count(), 1);

    let secondary = fixture.sas_token(&audience, ROOT_RULE_NAME, &root.secondary_key);
    let (status, description) =
        put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &secondary).await;
    assert_eq!(status, 202, "the secondary key signs too: {description}");
    sender.close().await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn listen_only_rule_cannot_send() {
    let fixture = Fixture::start().await;
    fixture.enable_local_auth();
    let rule = fixture.add_rule("listen-only", &[AccessRight::Listen]);
    let audience = format!("sb://{NAMESPACE_HOST}/{QUEUE}");
    let (mut connection, mut session) = fixture.connect().await;
    let token = fixture.sas_token(&audience, "listen-only", &rule.primary_key);
    let (status, description) =
        put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &token).await;
    assert_eq!(status, 202, "{description}");

    let receiver = Receiver::attach(&mut session, "receiver", QUEUE)
        .await
        .expect("Listen allows a receiver");
    receiver.close().await.unwrap();
    let error = Sender::attach(&mut session, "sender", QUEUE)
        .await
        .unwrap_err();
    let SenderAttachError::RemoteClosedWithError(error) = error else {
        panic!("expected a detach with an error, got {error:?}");
    };
    assert_eq!(
        error.condition,
        ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess)
    );
    let description = error.description.unwrap();
    assert!(
        description.starts_with(
            "Unauthorized access. 'Send' claim(s) are required to perform this operation."
        ),
        "{description}"
    );
    let _ = connection.close().await;
}

#[tokio::test]
async fn send_only_rule_cannot_receive() {
    let fixture = Fixture::start().await;
    fixture.enable_local_auth();
    let rule = fixture.add_rule("send-only", &[AccessRight::Send]);
    let audience = format!("sb://{NAMESPACE_HOST}/{QUEUE}");
    let (mut connection, mut session) = fixture.connect().await;
    let token = fixture.sas_token(&audience, "send-only", &rule.secondary_key);
    let (status, description) =
        put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &token).await;
    assert_eq!(status, 202, "{description}");

    let sender = Sender::attach(&mut session, "sender", QUEUE)
        .await
        .expect("Send allows a sender");
    sender.close().await.unwrap();
    // fe2o3-amqp reports a refused receiver (null source) without the detach error.
    assert!(
        Receiver::attach(&mut session, "receiver", QUEUE)
            .await
            .is_err()
    );
    let _ = connection.close().await;
}

#[tokio::test]
async fn regenerated_key_fails_next_put_token() {
    let fixture = Fixture::start().await;
    fixture.enable_local_auth();
    let root = fixture.rule(ROOT_RULE_NAME);
    let audience = format!("sb://{NAMESPACE_HOST}/{QUEUE}");
    let token = fixture.sas_token(&audience, ROOT_RULE_NAME, &root.primary_key);
    let (mut connection, mut session) = fixture.connect().await;
    let (status, _) = put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &token).await;
    assert_eq!(status, 202);

    {
        let mut cloud = fixture.cloud.lock().unwrap();
        cloud
            .namespace_by_host_mut(NAMESPACE_HOST)
            .unwrap()
            .authorization_rule_mut(ROOT_RULE_NAME)
            .unwrap()
            .regenerate(KeyType::Primary, None);
    }
    let (status, description) =
        put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &token).await;
    assert_eq!(status, 401);
    assert!(
        description.starts_with("InvalidSignature: The token has an invalid signature."),
        "{description}"
    );
    let secondary = fixture.sas_token(&audience, ROOT_RULE_NAME, &root.secondary_key);
    let (status, _) = put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &secondary).await;
    assert_eq!(status, 202, "the secondary key is unchanged");
    connection.close().await.unwrap();
}

#[tokio::test]
async fn sas_rejections_name_the_cause() {
    let fixture = Fixture::start().await;
    fixture.enable_local_auth();
    let root = fixture.rule(ROOT_RULE_NAME);
    let audience = format!("sb://{NAMESPACE_HOST}/{QUEUE}");
    let now = fixture.cloud.lock().unwrap().now().unix_timestamp();
    let key = root.primary_key.as_str();
    let cases = [
        (
            "signed with another key",
            sign_sas(
                &audience,
                ROOT_RULE_NAME,
                &STANDARD.encode([1u8; 32]),
                now + 3600,
            ),
            "InvalidSignature: ",
        ),
        (
            "unknown rule",
            sign_sas(&audience, "no-such-rule", key, now + 3600),
            "InvalidSignature: ",
        ),
        (
            "expired",
            sign_sas(&audience, ROOT_RULE_NAME, key, now - 1),
            "ExpiredToken: ",
        ),
        (
            "resource of another queue",
            sign_sas(
                &format!("sb://{NAMESPACE_HOST}/otherqueue"),
                ROOT_RULE_NAME,
                key,
                now + 3600,
            ),
            "InvalidAudience: ",
        ),
        (
            "resource of another namespace",
            sign_sas(
                "sb://ns2.servicebus.windows.net/myqueue",
                ROOT_RULE_NAME,
                key,
                now + 3600,
            ),
            "InvalidAudience: ",
        ),
        (
            "not a shared access signature",
            "sr=a&sig=b&se=1&skn=c".to_owned(),
            "MalformedToken: ",
        ),
    ];
    let (mut connection, mut session) = fixture.connect().await;
    for (case, token, expected) in &cases {
        let (status, description) =
            put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, token).await;
        assert_eq!(status, 401, "{case}: {description}");
        assert!(description.starts_with(expected), "{case}: {description}");
    }

    let namespace_wide = sign_sas(
        &format!("sb://{NAMESPACE_HOST}/"),
        ROOT_RULE_NAME,
        key,
        now + 3600,
    );
    let (status, description) =
        put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &namespace_wide).await;
    assert_eq!(
        status, 202,
        "a namespace-wide resource covers the queue: {description}"
    );

    fixture
        .cloud
        .lock()
        .unwrap()
        .namespace_by_host_mut(NAMESPACE_HOST)
        .unwrap()
        .disable_local_auth = true;
    let (status, description) =
        put_token_of_type(&mut session, SAS_TOKEN_TYPE, &audience, &namespace_wide).await;
    assert_eq!(status, 401);
    assert!(
        description.starts_with("LocalAuthDisabled: "),
        "a valid signature still meets disabled local auth first: {description}"
    );
    connection.close().await.unwrap();
}
