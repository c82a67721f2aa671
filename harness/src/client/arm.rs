//! Azure Resource Manager calls with the CLI's long-running operation handling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tracing::debug;

use super::{AccessToken, ClientError};

/// A successful ARM response.
#[derive(Clone, Debug)]
pub struct ArmResponse {
    pub status: u16,
    pub body: Value,
}

/// Calls ARM at `base` with a bearer token.
#[derive(Clone)]
pub struct ArmClient {
    http: reqwest::Client,
    base: String,
    token: AccessToken,
    hooks: Option<Arc<dyn ArmHooks>>,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("base", &self.base)
            .field("hooks", &self.hooks.is_some())
            .finish_non_exhaustive()
    }
}

/// Code a target runs around every ARM request: it may rewrite or reject the request, and it
/// receives each response and each poll of a long-running operation.
pub trait ArmHooks: Send + Sync {
    /// Rewrites the URL or body before sending; an `Err` rejects the request with that reason.
    fn before_send(
        &self,
        _method: &Method,
        _url: &mut String,
        _body: &mut Option<Value>,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Receives every HTTP response, errors included.
    fn after_response(&self, _method: &Method, _url: &str, _status: u16, _body: &Value) {}

    /// Sees each poll of a long-running operation after the first, with the time since the
    /// operation started.
    fn on_poll(&self, _url: &str, _poll: u32, _elapsed: Duration) {}
}

/// Polls before a long-running operation counts as stuck.
const MAX_POLLS: u32 = 600;

impl ArmClient {
    pub fn new(http: reqwest::Client, base: &str, token: AccessToken) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            hooks: None,
        }
    }

    /// Runs `hooks` around every request of this client.
    pub fn with_hooks(mut self, hooks: Arc<dyn ArmHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Sends one request and returns the response, or ARM's error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> Result<(ArmResponse, reqwest::header::HeaderMap), ClientError> {
        let url = self.url(path, api_version);
        self.send(method, &url, body).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(ArmResponse, reqwest::header::HeaderMap), ClientError> {
        let mut url = url.to_owned();
        let mut body = body.cloned();
        if let Some(hooks) = &self.hooks {
            hooks
                .before_send(&method, &mut url, &mut body)
                .map_err(|reason| ClientError::Rejected {
                    url: url.clone(),
                    reason,
                })?;
        }
        let url = url.as_str();
        debug!(%method, url, "ARM request");
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.token.token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let transport = |source| ClientError::Transport {
            url: url.to_owned(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport)?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if let Some(hooks) = &self.hooks {
            hooks.after_response(&method, url, status, &body);
        }
        if status >= 400 {
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
            return Err(ClientError::Arm {
                status,
                code,
                message,
            });
        }
        Ok((ArmResponse { status, body }, headers))
    }

    /// Sends a request whose response may start a long-running operation; waits for it like the
    /// CLI: `Azure-AsyncOperation` first, then `Location`, then the resource's own
    /// `provisioningState`. Unlike the CLI, the first poll goes out at once, so operations
    /// that finish immediately cost no `Retry-After` wait; later polls wait `Retry-After`.
    pub async fn call_and_wait(
        &self,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> Result<ArmResponse, ClientError> {
        let url = self.url(path, api_version);
        let started = Instant::now();
        let (response, headers) = self.send(method.clone(), &url, body).await?;
        if let Some(operation) = header(&headers, "azure-asyncoperation") {
            self.poll_async_operation(&operation, retry_after(&headers), started)
                .await?;
            if method == Method::DELETE {
                return Ok(response);
            }
            let (final_response, _) = self.send(Method::GET, &url, None).await?;
            return Ok(final_response);
        }
        if response.status == 202
            && let Some(location) = header(&headers, "location")
        {
            return self
                .poll_location(&location, retry_after(&headers), started)
                .await;
        }
        if matches!(method, Method::PUT | Method::PATCH) {
            return self.poll_provisioning_state(&url, response, started).await;
        }
        Ok(response)
    }

    async fn poll_async_operation(
        &self,
        url: &str,
        mut delay: Duration,
        started: Instant,
    ) -> Result<(), ClientError> {
        for poll in 0..MAX_POLLS {
            if poll > 0 {
                tokio::time::sleep(delay).await;
                self.report_poll(url, poll, started);
            }
            let (status, headers) = self.send(Method::GET, url, None).await?;
            let state = status.body["status"].as_str().unwrap_or("").to_owned();
            match state.to_ascii_lowercase().as_str() {
                "succeeded" => return Ok(()),
                "failed" | "canceled" => {
                    let message = status.body["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    return Err(ClientError::OperationFailed {
                        url: url.to_owned(),
                        status: state,
                        message,
                    });
                }
                _ => delay = retry_after(&headers),
            }
        }
        Err(ClientError::OperationTimedOut {
            url: url.to_owned(),
            polls: MAX_POLLS,
        })
    }

    async fn poll_location(
        &self,
        url: &str,
        mut delay: Duration,
        started: Instant,
    ) -> Result<ArmResponse, ClientError> {
        let mut url = url.to_owned();
        for poll in 0..MAX_POLLS {
            if poll > 0 {
                tokio::time::sleep(delay).await;
                self.report_poll(&url, poll, started);
            }
            let (response, headers) = self.send(Method::GET, &url, None).await?;
            if response.status != 202 {
                return Ok(response);
            }
            if let Some(next) = header(&headers, "location") {
                url = next;
            }
            delay = retry_after(&headers);
        }
        Err(ClientError::OperationTimedOut {
            url,
            polls: MAX_POLLS,
        })
    }

    async fn poll_provisioning_state(
        &self,
        url: &str,
        mut response: ArmResponse,
        started: Instant,
    ) -> Result<ArmResponse, ClientError> {
        for poll in 0..MAX_POLLS {
            let state = response.body["properties"]["provisioningState"]
                .as_str()
                .unwrap_or("Succeeded")
                .to_owned();
            match state.to_ascii_lowercase().as_str() {
                "succeeded" => return Ok(response),
                "failed" | "canceled" => {
                    return Err(ClientError::OperationFailed {
                        url: url.to_owned(),
                        status: state,
                        message: String::new(),
                    });
                }
                _ => {}
            }
            tokio::time::sleep(DEFAULT_DELAY).await;
            self.report_poll(url, poll + 1, started);
            response = self.send(Method::GET, url, None).await?.0;
        }
        Err(ClientError::OperationTimedOut {
            url: url.to_owned(),
            polls: MAX_POLLS,
        })
    }

    fn report_poll(&self, url: &str, poll: u32, started: Instant) {
        if let Some(hooks) = &self.hooks {
            hooks.on_poll(url, poll, started.elapsed());
        }
    }

    fn url(&self, path: &str, api_version: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{separator}api-version={api_version}", self.base)
    }
}

/// Delay between polls when the response has no usable `Retry-After`. The SDKs wait 30 s; the
/// fakes always send `Retry-After`, so this only applies to real Azure.
const DEFAULT_DELAY: Duration = Duration::from_secs(30);

fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    header(headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_DELAY)
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
