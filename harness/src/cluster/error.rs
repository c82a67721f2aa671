//! Errors of the cluster backends.

use std::path::PathBuf;
use std::time::Duration;

use super::manifest::ManifestError;

/// A failed cluster operation.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The YAML given to `apply` could not be read; the message names the document and line.
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
    /// The API server rejected an object: validation, an immutable field, or admission (the
    /// service account plugin or a webhook). The message is the server's, as kubectl prints it
    /// after `Error from server`.
    #[error("{message}")]
    Rejected { message: String },
    /// No object of this kind and name exists in the namespace.
    #[error(
        "{kind} \"{name}\" not found in namespace \"{namespace}\"; apply it first or check the name"
    )]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// The job reached the other terminal condition, so the awaited one can no longer happen.
    #[error(
        "job {namespace}/{name} has condition {reached} ({message}), so it will never be \
         {expected}; check `logs` and `describe_pod` for its pods"
    )]
    JobFinishedOtherwise {
        namespace: String,
        name: String,
        expected: String,
        reached: String,
        message: String,
    },
    /// A pod cannot start because its image is not mapped to a command; it would stay in
    /// `ErrImagePull` forever.
    #[error("pod {namespace}/{pod} cannot start: {message}")]
    ImagePull {
        namespace: String,
        pod: String,
        message: String,
    },
    /// The awaited state was not reached in time.
    #[error("timed out after {timeout:?} waiting for {what}; current state: {state}")]
    Timeout {
        what: String,
        timeout: Duration,
        state: String,
    },
    /// A `logs` target is neither `job/NAME`, `pod/NAME` nor a pod name.
    #[error("invalid log target \"{0}\"; use job/NAME, pod/NAME or a pod name")]
    InvalidTarget(String),
    /// A file or directory under the state directory could not be written or read.
    #[error("failed to {action} {path}: {source}; check that the state directory is writable")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}
