//! Plumbing shared by the HTTP fakes: a wiremock server behind TLS, and request helpers.
//!
//! Each HTTP fake is a wiremock [`MockServer`] whose catch-all responder, mounted at the lowest
//! priority, responds from the cloud model. Tests mount their own mocks above it (a 429 on the
//! third PUT, a delay) and read [`MockServer::received_requests`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::ServerConfig;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond};

use crate::tls::terminate_tls;

/// Priority of the model-backed responder: the lowest, so any mock a test mounts wins.
pub const MODEL_PRIORITY: u8 = u8::MAX;

/// A wiremock server reachable over HTTPS at [`HttpsFake::url`].
pub struct HttpsFake {
    pub server: MockServer,
    url: String,
    address: SocketAddr,
    tls_task: JoinHandle<()>,
}

impl HttpsFake {
    /// Binds the TLS listener; the responder is mounted later with [`HttpsFake::serve`], once
    /// the URLs of every fake are known.
    pub async fn bind(ip: IpAddr, port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind((ip, port)).await?;
        let address = listener.local_addr()?;
        Ok((listener, address))
    }

    /// Starts the wiremock server behind TLS on `listener` and mounts `responder` at the
    /// lowest priority.
    pub async fn serve(
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        responder: impl Respond + 'static,
        name: &str,
    ) -> std::io::Result<Self> {
        let address = listener.local_addr()?;
        let server = MockServer::builder().start().await;
        Mock::given(any())
            .respond_with(responder)
            .with_priority(MODEL_PRIORITY)
            .named(format!("{name} model"))
            .mount(&server)
            .await;
        let upstream = *server.address();
        let tls_task = tokio::spawn(terminate_tls(listener, tls, upstream));
        Ok(Self {
            server,
            url: https_url(address),
            address,
            tls_task,
        })
    }

    /// Base URL without a trailing slash, e.g. `https://127.0.0.1:4431`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for HttpsFake {
    fn drop(&mut self) {
        self.tls_task.abort();
    }
}

/// `https://ip:port`, with brackets around an IPv6 address.
pub fn https_url(address: SocketAddr) -> String {
    format!("https://{address}")
}

/// Returns the request path with runs of `/` collapsed, as ARM and Entra treat them; clients that join
/// a base URL ending in `/` send `//metadata/endpoints`.
pub fn normalized_path(request: &Request) -> String {
    let mut path = String::with_capacity(request.url.path().len());
    let mut previous_slash = false;
    for c in request.url.path().chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        path.push(c);
    }
    if path.len() > 1 {
        path.truncate(path.trim_end_matches('/').len());
    }
    path
}

/// Query parameters with lower-cased names; the last value wins.
pub fn query(request: &Request) -> BTreeMap<String, String> {
    request
        .url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect()
}

/// Returns a header's value as text.
pub fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Returns the bearer token of the `Authorization` header, if the scheme is `Bearer`.
pub fn bearer_token(request: &Request) -> Option<&str> {
    let value = header(request, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Parses the body as JSON; an empty body is `null`.
pub fn json_body(request: &Request) -> Result<Value, serde_json::Error> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&request.body)
}
