//! The workload-identity webhook served over HTTPS as a real admission webhook: it serves
//! `admission.k8s.io/v1` AdmissionReview requests on `/mutate-v1-pod` with the JSON patch of
//! [`webhook::mutation_patch`], the function the embedded cluster applies.
//!
//! The server speaks HTTP/1.1 with keep-alive, which is what kube-apiserver's webhook client
//! uses when the server offers no HTTP/2 in ALPN.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::webhook::{self, AdmissionError, WebhookConfig};

/// Path of the webhook, as in the azure-workload-identity deployment.
pub const MUTATE_PATH: &str = "/mutate-v1-pod";
/// Largest request body accepted, in bytes; pods are far smaller.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Looks up a service account by namespace and name, as the webhook reads it from the API
/// server; `None` when it does not exist.
pub type ServiceAccountLookup = Arc<
    dyn Fn(String, String) -> Pin<Box<dyn Future<Output = Option<ServiceAccount>> + Send>>
        + Send
        + Sync,
>;

/// A running webhook server; dropping it stops the server.
pub struct WebhookServer {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookServer {
    /// Serves on `listener` with TLS from `tls` (a leaf certificate of the run's CA).
    pub fn start(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        config: WebhookConfig,
        lookup: ServiceAccountLookup,
    ) -> std::io::Result<Self> {
        let address = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(tls);
        let config = Arc::new(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let config = config.clone();
                let lookup = lookup.clone();
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => {
                            if let Err(error) = serve_connection(tls, &config, &lookup).await {
                                debug!(%peer, %error, "webhook connection ended with an error");
                            }
                        }
                        Err(error) => debug!(%peer, %error, "webhook TLS handshake failed"),
                    }
                });
            }
        });
        Ok(Self { address, task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

async fn serve_connection<S>(
    stream: S,
    config: &WebhookConfig,
    lookup: &ServiceAccountLookup,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        let (status, body) = if content_length > MAX_BODY {
            (413, json!({"message": "request body too large"}))
        } else {
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body).await?;
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            if path.split('?').next() == Some(MUTATE_PATH) {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(review) => (200, review_response(&review, config, lookup).await),
                    Err(error) => (400, json!({"message": format!("invalid JSON: {error}")})),
                }
            } else {
                (404, json!({"message": format!("no handler for {path}")}))
            }
        };
        let body = serde_json::to_vec(&body).expect("JSON values serialize");
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            if status == 200 { "OK" } else { "Error" },
            body.len()
        );
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        if close {
            return Ok(());
        }
    }
}

/// Builds the response to one AdmissionReview: a JSONPatch for a selected pod, `allowed` with no patch for
/// any other object, and a denial with the webhook's message when mutation fails.
pub async fn review_response(
    review: &Value,
    config: &WebhookConfig,
    lookup: &ServiceAccountLookup,
) -> Value {
    let request = &review["request"];
    let uid = request["uid"].clone();
    let allowed = json!({ "uid": uid, "allowed": true });
    let Ok(mut pod) = serde_json::from_value::<Pod>(request["object"].clone()) else {
        return envelope(allowed);
    };
    if !webhook::selects(&pod) {
        return envelope(allowed);
    }
    // On CREATE the pod's namespace may be empty; the request names it.
    if let Some(namespace) = request["namespace"].as_str() {
        pod.metadata
            .namespace
            .get_or_insert_with(|| namespace.to_owned());
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = webhook::service_account_name(&pod).to_owned();
    let service_account = lookup(namespace.clone(), name.clone()).await;
    let result = match &service_account {
        Some(service_account) => webhook::mutation_patch(&pod, service_account, config),
        None => Err(AdmissionError::ServiceAccountNotFound { namespace, name }),
    };
    match result {
        Ok(patch) => {
            let patch = serde_json::to_vec(&patch).expect("JSON values serialize");
            envelope(json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": STANDARD.encode(patch),
            }))
        }
        Err(error) => {
            warn!(%error, "webhook denied a pod");
            envelope(json!({
                "uid": uid,
                "allowed": false,
                "status": { "code": error.http_status(), "message": error.to_string() },
            }))
        }
    }
}

fn envelope(response: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

/// The MutatingWebhookConfiguration that sends pod creations labelled
/// `azure.workload.identity/use: "true"` to the server at `url`.
pub fn configuration(url: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "azure-wi-webhook-mutating-webhook-configuration" },
        "webhooks": [{
            "name": webhook::WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "url": url,
                "caBundle": STANDARD.encode(ca_pem),
            },
            "objectSelector": { "matchLabels": { webhook::USE_LABEL: "true" } },
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
            }],
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "reinvocationPolicy": "IfNeeded",
            "sideEffects": "None",
        }],
    })
}
