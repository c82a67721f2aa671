//! The Service Bus data plane over AMQP 1.0: a broker engine that speaks the protocol as
//! Azure Service Bus does, over the queues of the shared [`crate::cloud`] model.
//!
//! The engine (framing, SASL, connection, session and link state) is built here on the
//! `fe2o3-amqp-types` codec rather than on fe2o3-amqp's acceptor, because Service Bus
//! clients read the 16-byte message lock token from the delivery tag and the acceptor
//! always numbers deliveries with 4-byte tags.
//!
//! What the broker follows:
//! - SASL `MSSBCBS` or `ANONYMOUS`, then authorization per entity through `$cbs`
//!   put-token with a Microsoft Entra access token from the namespace's tenant, or with a
//!   shared access signature of one of the namespace's rules unless it disables local auth;
//! - the `Send` claim (data action `messages/send/action`) for links the client sends on,
//!   `Listen` (`messages/receive/action`) for links it receives on, from role assignments
//!   or from the rule's rights (`Manage` includes both);
//! - single messages and batches (message format `0x80013700`);
//! - peek-lock with lock tokens as delivery tags in .NET GUID byte order, and
//!   receive-and-delete;
//! - every performative written as a full-length list, which Python's client requires.
//!
//! Start it with [`ServiceBusServer::start`]; TLS is optional, so tests can use plain TCP.

mod address;
mod cbs;
mod codec;
mod connection;
mod management;
mod message;
mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use address::EntityAddress;
pub use cbs::{SERVICEBUS_AUDIENCE, STATUS_ACCEPTED};
pub use codec::BATCH_MESSAGE_FORMAT;
pub use connection::MAX_FRAME_SIZE;
pub use message::annotation;

use crate::cloud::SharedCloud;
use connection::Context;

/// A running Service Bus AMQP endpoint. Dropping it stops accepting connections; open
/// connections end when their clients close them.
pub struct ServiceBusServer {
    local_addr: SocketAddr,
    context: Context,
    accept_task: JoinHandle<()>,
}

impl ServiceBusServer {
    /// Binds `bind` and serves every accepted connection on its own task. With `tls`, each
    /// connection starts with a TLS handshake as on port 5671; without it, AMQP starts at
    /// once as with the Service Bus emulator on port 5672.
    pub async fn start(
        cloud: SharedCloud,
        tls: Option<Arc<rustls::ServerConfig>>,
        bind: SocketAddr,
    ) -> io::Result<Self> {
        let context = Context {
            cloud,
            queue_changed: Arc::new(Notify::new()),
        };
        Self::listen(context, tls, bind).await
    }

    /// Starts a second endpoint of the same broker on `bind`, such as a plain listener next
    /// to a TLS one. Both share the queue-change signal, so a receiver connected to one
    /// gets a message sent through the other at once.
    pub async fn start_sibling(
        &self,
        tls: Option<Arc<rustls::ServerConfig>>,
        bind: SocketAddr,
    ) -> io::Result<Self> {
        Self::listen(self.context.clone(), tls, bind).await
    }

    async fn listen(
        context: Context,
        tls: Option<Arc<rustls::ServerConfig>>,
        bind: SocketAddr,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let local_addr = listener.local_addr()?;
        let acceptor = tls.map(TlsAcceptor::from);
        info!(%local_addr, tls = acceptor.is_some(), "Service Bus AMQP endpoint listening");
        let accept_task = tokio::spawn(accept_loop(listener, context.clone(), acceptor));
        Ok(Self {
            local_addr,
            context,
            accept_task,
        })
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for ServiceBusServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, context: Context, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a connection failed");
                continue;
            }
        };
        tokio::spawn(serve_stream(stream, peer, context.clone(), tls.clone()));
    }
}

async fn serve_stream(
    stream: TcpStream,
    peer: SocketAddr,
    context: Context,
    tls: Option<TlsAcceptor>,
) {
    // Without TCP_NODELAY, Nagle's algorithm delays each small reply until the client's
    // delayed ACK, which halves single-message throughput.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, %peer, "setting TCP_NODELAY failed");
    }
    match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => connection::serve(stream, context, peer).await,
            Err(error) => debug!(%error, %peer, "rejected: TLS handshake failed"),
        },
        None => connection::serve(stream, context, peer).await,
    }
}
