//! Kubernetes clusters that run scenario workloads.
//!
//! [`EmbeddedCluster`] needs no container engine: it parses manifests into `k8s-openapi`
//! types, admits pods through the azure-workload-identity webhook rules ([`webhook`]), signs
//! projected service account tokens with the cluster issuer's key ([`token`]) and runs each
//! container as a local process. A kind-based backend can implement the same [`Cluster`]
//! trait. Start with [`EmbeddedCluster::new`] and [`Cluster::apply`].

mod admission;
mod backend;
mod container_env;
mod describe;
pub mod embedded;
mod error;
mod job_controller;
#[cfg(feature = "k3s")]
pub mod k3s;
pub mod kind;
mod kubelet;
pub mod manifest;
mod pod_status;
pub mod token;
mod volumes;
pub mod webhook;
pub mod webhook_server;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::batch::v1::JobStatus;

pub use backend::RunCluster;
pub use embedded::{EmbeddedCluster, EmbeddedConfig, ImageMapping, NowFn, SAMPLE_IMAGE};
pub use error::ClusterError;
pub use manifest::{Object, parse_manifests};

/// A terminal job condition that `wait_job` can wait for (`kubectl wait --for=condition=...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobConditionType {
    Complete,
    Failed,
}

impl JobConditionType {
    /// Returns the condition's `type` in the job status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobConditionType::Complete => "Complete",
            JobConditionType::Failed => "Failed",
        }
    }
}

/// Operations that scenarios run against a cluster, whichever backend runs it.
pub trait Cluster {
    /// Creates or updates the objects of a multi-document manifest and returns one line per
    /// object as `kubectl apply` prints it (`serviceaccount/x created`).
    fn apply(
        &mut self,
        yaml: &str,
    ) -> impl Future<Output = Result<Vec<String>, ClusterError>> + Send;

    /// Waits until the job has `condition` and returns its status.
    fn wait_job(
        &self,
        name: &str,
        namespace: &str,
        condition: JobConditionType,
        timeout: Duration,
    ) -> impl Future<Output = Result<JobStatus, ClusterError>> + Send;

    /// Returns the log of `job/NAME`, `pod/NAME` or a pod name, as `kubectl logs` does.
    fn logs(
        &self,
        target: &str,
        namespace: &str,
    ) -> impl Future<Output = Result<String, ClusterError>> + Send;

    /// Returns the pod as `kubectl describe pod` shows it.
    fn describe_pod(
        &self,
        name: &str,
        namespace: &str,
    ) -> impl Future<Output = Result<String, ClusterError>> + Send;
}
