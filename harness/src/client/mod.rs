//! The HTTP clients the runner drives ARM and Entra ID with. They send what the Azure CLI
//! sends, so the same code runs against the fakes and against Azure.

mod arm;
mod login;

pub use arm::{ArmClient, ArmHooks, ArmResponse};
pub use login::{AccessToken, TokenClient};

use std::path::Path;

/// Failure of a call: a transport problem, or Azure's own error response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request got no HTTP response.
    #[error("request to {url} failed: {source}")]
    Transport { url: String, source: reqwest::Error },
    /// Entra ID rejected a token request.
    #[error("Entra ID responded {status} {error}: {description}")]
    Entra {
        status: u16,
        error: String,
        code: Option<String>,
        description: String,
    },
    /// ARM responded with an error envelope.
    #[error("ARM responded {status} ({code}) {message}")]
    Arm {
        status: u16,
        code: String,
        message: String,
    },
    /// A long-running operation ended in `Failed` or `Canceled`.
    #[error("operation {url} ended with status {status}: {message}")]
    OperationFailed {
        url: String,
        status: String,
        message: String,
    },
    /// A long-running operation did not finish in time.
    #[error("operation {url} did not finish after {polls} polls")]
    OperationTimedOut { url: String, polls: u32 },
    /// The response is not what the API specification defines.
    #[error("unexpected response from {url}: {problem}")]
    Unexpected { url: String, problem: String },
    /// The target's hooks rejected the request before it was sent (a cost guard).
    #[error("request to {url} rejected before sending: {reason}")]
    Rejected { url: String, reason: String },
    /// The CA file could not be read or parsed.
    #[error("cannot use the CA file {path}: {problem}")]
    CaFile { path: String, problem: String },
}

impl ClientError {
    /// Returns the error code a scenario compares: the ARM code or `AADSTSnnnnn`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Entra { code, error, .. } => Some(code.as_deref().unwrap_or(error)),
            ClientError::Arm { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Entra { status, .. } | ClientError::Arm { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Builds an HTTP client that trusts only `ca_file` when given (the fakes), or else the
/// platform's roots.
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .user_agent(concat!("xtenant/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let ca_error = |problem: String| ClientError::CaFile {
            path: path.display().to_string(),
            problem,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let certificate =
            reqwest::Certificate::from_pem(&pem).map_err(|e| ca_error(e.to_string()))?;
        builder = builder.tls_certs_only([certificate]);
    }
    builder.build().map_err(|source| ClientError::Transport {
        url: String::new(),
        source,
    })
}
