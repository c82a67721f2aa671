//! Throughput of the Service Bus fake next to a RabbitMQ broker, with the same AMQP 1.0
//! client (fe2o3-amqp) on 127.0.0.1 in the same run.
//!
//! Three figures per broker, in messages per second with 1 KiB bodies:
//! - single send: one message per transfer, waiting for its outcome before the next;
//! - batch send: on the fake, batches in message format `0x80013700` with one data section
//!   per inner message, as Service Bus clients send them. RabbitMQ has no batch format, so
//!   it gets the same number of single messages sent back to back, with their outcomes
//!   awaited once per batch;
//! - peek-lock receive: a receiver with sender settle mode `unsettled` takes every message
//!   and accepts (completes) each one. Its receiver settle mode is `second` on the fake, as
//!   Service Bus clients use, and `first` on RabbitMQ 3.x, which rejects `second`.
//!
//! Run `ci/bench-amqp`, which starts a private RabbitMQ node and sets `BENCH_RABBITMQ_URL`.
//! `cargo bench -p xtenant-fakes --bench amqp_throughput` alone measures the fake only.
//! Options: `--messages N` (batch send and receive), `--single N`, `--batch-size N`,
//! `--credit N` (receiver link credit), `--repetitions N`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Timestamp, Value};
use fe2o3_amqp::{Connection, Receiver, Sendable, Sender, Session};
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use xtenant_fakes::cloud::rbac::RoleDefinition;
use xtenant_fakes::cloud::{
    Namespace, Principal, Queue, QueueProperties, RoleAssignment, SharedCloud,
};
use xtenant_fakes::servicebus::BATCH_MESSAGE_FORMAT;
use xtenant_fakes::{Fakes, FakesConfig};

/// Every failure ends the benchmark with its message.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Returns early with a formatted error.
macro_rules! bail {
    ($($message:tt)+) => {
        return Err(format!($($message)+).into())
    };
}

/// Returns early with a formatted error unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            bail!($($message)+);
        }
    };
}

/// Body size of every message, in bytes.
const BODY_SIZE: usize = 1024;
const NAMESPACE: &str = "bench";
const NAMESPACE_HOST: &str = "bench.servicebus.windows.net";
const QUEUE: &str = "throughput";
/// Address of a queue in RabbitMQ 3.x's AMQP 1.0 plugin, which declares the queue on first
/// use.
const RABBITMQ_QUEUE_ADDRESS: &str = "/queue/xtenant-throughput";

#[derive(Debug, Clone, Copy)]
struct Settings {
    single: usize,
    messages: usize,
    batch_size: usize,
    credit: u32,
    repetitions: usize,
}

impl Settings {
    /// Reads the options after `cargo bench --`, skipping the `--bench` flag Cargo adds.
    /// Returns `None` without that flag: `cargo test --all-targets` runs benches without it,
    /// and the benchmark must not run as a test.
    fn from_args() -> Result<Option<Self>> {
        if !std::env::args().any(|arg| arg == "--bench") {
            return Ok(None);
        }
        let mut settings = Settings {
            single: 5_000,
            messages: 15_000,
            batch_size: 100,
            credit: 500,
            repetitions: 3,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            let Some(value) = args.next() else {
                bail!("option {arg} needs a number");
            };
            let Ok(number) = value.parse::<usize>() else {
                bail!("invalid number {value:?} for {arg}");
            };
            ensure!(number > 0, "{arg} must be at least 1");
            match arg.as_str() {
                "--single" => settings.single = number,
                "--messages" => settings.messages = number,
                "--batch-size" => settings.batch_size = number,
                "--credit" => settings.credit = u32::try_from(number)?,
                "--repetitions" => settings.repetitions = number,
                other => bail!(
                    "unknown option {other}: use --single, --messages, --batch-size, --credit \
                     or --repetitions"
                ),
            }
        }
        Ok(Some(settings))
    }
}

/// Messages per second of one repetition against one broker.
#[derive(Debug, Clone, Copy)]
struct Figures {
    single_send: f64,
    batch_send: f64,
    receive: f64,
}

/// Reads one figure out of a repetition's figures.
type FigureOf = fn(&Figures) -> f64;

/// A broker under test, with what the client needs to reach it.
enum Broker {
    /// The fake's plain AMQP endpoint, with a token minted by the model.
    Fake {
        address: SocketAddr,
        token: String,
        cloud: SharedCloud,
    },
    /// RabbitMQ's AMQP 1.0 listener, with SASL PLAIN credentials in the URL.
    RabbitMq { url: String },
}

impl Broker {
    fn name(&self) -> &'static str {
        match self {
            Broker::Fake { .. } => "fake",
            Broker::RabbitMq { .. } => "RabbitMQ",
        }
    }

    fn queue_address(&self) -> &'static str {
        match self {
            Broker::Fake { .. } => QUEUE,
            Broker::RabbitMq { .. } => RABBITMQ_QUEUE_ADDRESS,
        }
    }

    /// Receiver settle mode of the peek-lock receiver: `second` as Service Bus clients ask
    /// for, but `first` on RabbitMQ 3.x, whose AMQP 1.0 plugin rejects `second`. In mode
    /// `first` the broker sends no disposition in reply to the client's.
    fn receiver_settle_mode(&self) -> ReceiverSettleMode {
        match self {
            Broker::Fake { .. } => ReceiverSettleMode::Second,
            Broker::RabbitMq { .. } => ReceiverSettleMode::First,
        }
    }

    /// Opens a connection and session, authorized for the queue.
    async fn connect(&self) -> Result<(ConnectionHandle<()>, SessionHandle<()>)> {
        match self {
            Broker::Fake { address, token, .. } => {
                let url = format!("amqp://{address}");
                let mut connection = Connection::builder()
                    .container_id("xtenant-bench")
                    .hostname(NAMESPACE_HOST)
                    .sasl_profile(SaslProfile::Anonymous)
                    .open(url.as_str())
                    .await?;
                let mut session = Session::begin(&mut connection).await?;
                put_token(&mut session, token).await?;
                Ok((connection, session))
            }
            Broker::RabbitMq { url } => {
                let mut connection = Connection::open("xtenant-bench", url.as_str()).await?;
                let session = Session::begin(&mut connection).await?;
                Ok((connection, session))
            }
        }
    }

    /// Sends `count` messages one at a time, waiting for each outcome.
    async fn single_send(&self, count: usize) -> Result<f64> {
        let (mut connection, mut session) = self.connect().await?;
        let mut sender = Sender::attach(&mut session, "bench-single", self.queue_address()).await?;
        let started = Instant::now();
        for _ in 0..count {
            let outcome = sender.send(body_message()).await?;
            ensure!(outcome.is_accepted(), "single send outcome: {outcome:?}");
        }
        let rate = count as f64 / started.elapsed().as_secs_f64();
        sender.detach().await.map_err(|(_, error)| error)?;
        session.end().await?;
        connection.close().await?;
        Ok(rate)
    }

    /// Sends `count` messages in groups of `batch_size`: one batch transfer per group on the
    /// fake, `batch_size` transfers sent without waiting on RabbitMQ.
    async fn batch_send(&self, count: usize, batch_size: usize) -> Result<f64> {
        let (mut connection, mut session) = self.connect().await?;
        let mut sender = Sender::attach(&mut session, "bench-batch", self.queue_address()).await?;
        let started = Instant::now();
        let mut sent = 0;
        while sent < count {
            let size = batch_size.min(count - sent);
            match self {
                Broker::Fake { .. } => {
                    let outcome = sender.send(batch_of(size)?).await?;
                    ensure!(outcome.is_accepted(), "batch outcome: {outcome:?}");
                }
                Broker::RabbitMq { .. } => {
                    let mut pending = Vec::with_capacity(size);
                    for _ in 0..size {
                        pending.push(sender.send_batchable(body_message()).await?);
                    }
                    for delivery in pending {
                        let outcome = delivery.await?;
                        ensure!(outcome.is_accepted(), "pipelined outcome: {outcome:?}");
                    }
                }
            }
            sent += size;
        }
        let rate = count as f64 / started.elapsed().as_secs_f64();
        sender.detach().await.map_err(|(_, error)| error)?;
        session.end().await?;
        connection.close().await?;
        Ok(rate)
    }

    /// Receives `count` messages in peek-lock mode and accepts each. The clock stops when
    /// the broker replies to the receiver's detach, which it does only after handling every
    /// disposition sent before it.
    async fn receive(&self, count: usize, credit: u32) -> Result<f64> {
        let (mut connection, mut session) = self.connect().await?;
        let mut receiver = Receiver::builder()
            .name("bench-receiver")
            .source(self.queue_address())
            .sender_settle_mode(SenderSettleMode::Unsettled)
            .receiver_settle_mode(self.receiver_settle_mode())
            .credit_mode(CreditMode::Auto(credit))
            .attach(&mut session)
            .await?;
        let started = Instant::now();
        for _ in 0..count {
            let delivery =
                tokio::time::timeout(Duration::from_secs(30), receiver.recv::<Body<Value>>())
                    .await
                    .map_err(|_| "no message within 30 s")??;
            let Body::Data(sections) = delivery.body() else {
                bail!("received a body that is not data sections");
            };
            ensure!(
                sections.iter().map(|d| d.0.len()).sum::<usize>() == BODY_SIZE,
                "received a body that is not {BODY_SIZE} bytes"
            );
            receiver.accept(&delivery).await?;
        }
        receiver.detach().await.map_err(|(_, error)| error)?;
        let rate = count as f64 / started.elapsed().as_secs_f64();
        session.end().await?;
        connection.close().await?;
        if let Broker::Fake { cloud, .. } = self {
            let left = fake_queue_length(cloud);
            ensure!(
                left == 0,
                "{left} messages left in the fake's queue after completion"
            );
        }
        Ok(rate)
    }

    async fn measure(&self, settings: &Settings) -> Result<Figures> {
        let single_send = self
            .single_send(settings.single)
            .await
            .map_err(|error| format!("single send: {error}"))?;
        let batch_send = self
            .batch_send(settings.messages, settings.batch_size)
            .await
            .map_err(|error| format!("batch send: {error}"))?;
        let receive = self
            .receive(settings.single + settings.messages, settings.credit)
            .await
            .map_err(|error| format!("receive: {error}"))?;
        Ok(Figures {
            single_send,
            batch_send,
            receive,
        })
    }
}

fn body_message() -> Message<Data> {
    Message::builder()
        .data(Binary::from(vec![0x5a; BODY_SIZE]))
        .build()
}

/// Builds one Service Bus batch: an envelope in message format `0x80013700` whose data
/// sections each hold one encoded message.
fn batch_of(count: usize) -> Result<Sendable<Body<Value>>> {
    let mut sections = Vec::with_capacity(count);
    for _ in 0..count {
        let encoded = serde_amqp::to_vec(&Serializable(body_message()))?;
        sections.push(Data(Binary::from(encoded)));
    }
    let envelope = Message::builder().body(Body::Data(sections.into())).build();
    Ok(Sendable::builder()
        .message(envelope)
        .message_format(BATCH_MESSAGE_FORMAT)
        .build())
}

/// Puts the token for the namespace through `$cbs` and checks that it was accepted.
async fn put_token(session: &mut SessionHandle<()>, token: &str) -> Result<()> {
    let mut sender = Sender::attach(session, "cbs-sender", "$cbs").await?;
    let mut receiver = Receiver::builder()
        .name("cbs-receiver")
        .source("$cbs")
        .target("cbs-reply-to")
        .attach(session)
        .await?;
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
                .insert("type", "jwt")
                .insert("name", format!("sb://{NAMESPACE_HOST}/"))
                .insert(
                    "expiration",
                    SimpleValue::Timestamp(Timestamp::from_milliseconds(0)),
                )
                .build(),
        )
        .body(AmqpValue(token.to_owned()))
        .build();
    sender.send(request).await?;
    let reply = receiver.recv::<Body<Value>>().await?;
    receiver.accept(&reply).await?;
    let status = reply
        .message()
        .application_properties
        .as_ref()
        .and_then(|properties| properties.get("status-code").cloned());
    ensure!(
        status == Some(SimpleValue::Int(202)),
        "put-token status: {status:?}"
    );
    sender.close().await?;
    receiver.close().await?;
    Ok(())
}

/// Adds the namespace and queue to the model and returns a principal with "Azure Service
/// Bus Data Owner" on the namespace.
fn provision(cloud: &SharedCloud) -> Result<Principal> {
    let mut cloud = cloud.lock().expect("model lock");
    let tenant = cloud.tenant("b").ok_or("tenant b is missing")?.id.clone();
    let subscription = cloud.subscriptions_of(&tenant)[0].resource_id();
    let namespace_id = subscription.join(&format!(
        "resourceGroups/rg-bench/providers/Microsoft.ServiceBus/namespaces/{NAMESPACE}"
    ));
    let now = cloud.now();
    let queue = Queue::new(
        namespace_id.join(&format!("queues/{QUEUE}")),
        QueueProperties::default(),
        now,
    );
    let mut namespace = Namespace::new(namespace_id.clone(), tenant.clone(), "eastus", now);
    namespace.disable_local_auth = true;
    namespace.queues.insert(QUEUE.to_owned(), queue);
    cloud.namespaces.insert(NAMESPACE.into(), namespace);

    let principal = cloud
        .operator(&tenant)
        .ok_or("tenant b has no operator")?
        .clone();
    let role = RoleDefinition::by_name("Azure Service Bus Data Owner").ok_or("role not defined")?;
    let id = namespace_id.join(&format!(
        "providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    ));
    cloud.role_assignments.insert(
        id.key(),
        RoleAssignment {
            id,
            scope: namespace_id,
            role_definition_id: role.id.to_owned(),
            principal_id: principal.object_id.clone(),
            principal_type: "User".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: principal.object_id.clone(),
        },
    );
    Ok(principal)
}

fn fake_queue_length(cloud: &SharedCloud) -> usize {
    let cloud = cloud.lock().expect("model lock");
    cloud
        .namespace_by_host(NAMESPACE_HOST)
        .and_then(|namespace| namespace.queue(QUEUE))
        .map_or(0, |queue| queue.messages.len())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn print_table(settings: &Settings, fake: &[Figures], rabbit: &[Figures]) {
    let rows: [(&str, FigureOf); 3] = [
        ("single send", |f| f.single_send),
        ("batch send", |f| f.batch_send),
        ("peek-lock receive + complete", |f| f.receive),
    ];
    println!();
    println!(
        "messages/s, median of {} repetitions, {BODY_SIZE}-byte bodies",
        settings.repetitions
    );
    println!(
        "{:<30} {:>12} {:>12} {:>14}",
        "figure", "fake", "RabbitMQ", "fake/RabbitMQ"
    );
    for (name, pick) in rows {
        let fake_median = median(&mut fake.iter().map(pick).collect::<Vec<_>>());
        if rabbit.is_empty() {
            println!("{name:<30} {fake_median:>12.0} {:>12} {:>14}", "-", "-");
            continue;
        }
        let rabbit_median = median(&mut rabbit.iter().map(pick).collect::<Vec<_>>());
        let ratio = fake_median / rabbit_median;
        println!("{name:<30} {fake_median:>12.0} {rabbit_median:>12.0} {ratio:>14.2}");
    }
    println!();
    println!(
        "single send: {} messages, each awaited. receive: {} messages, link credit {}, \
         sender settle mode unsettled, receiver settle mode second on the fake and first on \
         RabbitMQ (its 3.x AMQP 1.0 plugin rejects second), each message accepted.",
        settings.single,
        settings.single + settings.messages,
        settings.credit
    );
    println!(
        "batch send: {} messages; fake: batches of {} in format 0x80013700, each awaited; \
         RabbitMQ has no batch format: groups of {} single messages sent without waiting, \
         outcomes awaited per group.",
        settings.messages, settings.batch_size, settings.batch_size
    );
}

fn main() -> Result<()> {
    let Some(settings) = Settings::from_args()? else {
        println!("amqp_throughput runs under `cargo bench` or ci/bench-amqp only; skipped");
        return Ok(());
    };
    let rabbit_url = std::env::var("BENCH_RABBITMQ_URL").ok();

    // The fake gets a runtime and threads of its own, as a broker process would.
    let fake_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fake-broker")
        .enable_all()
        .build()?;
    let fakes = fake_runtime.block_on(Fakes::start(FakesConfig::default()))?;
    let principal = provision(&fakes.cloud)?;
    let token = fakes
        .cloud
        .lock()
        .expect("model lock")
        .issue_access_token(&principal, "https://servicebus.azure.net", "2")
        .access_token;
    let fake = Broker::Fake {
        address: fakes.endpoints.servicebus_plain,
        token,
        cloud: fakes.cloud.clone(),
    };
    let rabbit = rabbit_url.map(|url| Broker::RabbitMq { url });

    let client_runtime: Arc<Runtime> = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-client")
            .enable_all()
            .build()?,
    );
    println!(
        "fe2o3-amqp client; RabbitMQ {}; load average before: {}",
        std::env::var("BENCH_RABBITMQ_VERSION").unwrap_or_else(|_| "not run".to_owned()),
        load_average()
    );
    if rabbit.is_none() {
        println!(
            "BENCH_RABBITMQ_URL is not set, so only the fake is measured (ci/bench-amqp sets it)"
        );
    }

    let mut fake_figures = Vec::new();
    let mut rabbit_figures = Vec::new();
    // A warm-up round, then the counted ones. The brokers alternate so that drift in the
    // machine's speed affects both alike.
    for repetition in 0..=settings.repetitions {
        for broker in std::iter::once(&fake).chain(rabbit.as_ref()) {
            let figures = client_runtime
                .block_on(broker.measure(&settings))
                .map_err(|error| format!("measuring {} failed: {error}", broker.name()))?;
            let label = if repetition == 0 {
                "warm-up".to_owned()
            } else {
                format!("run {repetition}")
            };
            println!(
                "{label:>8} {:<9} single {:>8.0}/s  batch {:>8.0}/s  receive {:>8.0}/s",
                broker.name(),
                figures.single_send,
                figures.batch_send,
                figures.receive
            );
            if repetition > 0 {
                match broker {
                    Broker::Fake { .. } => fake_figures.push(figures),
                    Broker::RabbitMq { .. } => rabbit_figures.push(figures),
                }
            }
        }
    }
    print_table(&settings, &fake_figures, &rabbit_figures);
    println!("load average after: {}", load_average());

    drop(fakes);
    fake_runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
