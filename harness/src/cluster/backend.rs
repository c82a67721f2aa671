//! The cluster a run uses, whichever backend it is: the runner holds a [`RunCluster`].

use std::time::Duration;

use k8s_openapi::List;
use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::Pod;

#[cfg(feature = "k3s")]
use super::k3s::K3sCluster;
use super::kind::{KindCluster, KubectlCluster};
use super::{Cluster, ClusterError, EmbeddedCluster, JobConditionType};

/// One cluster of a run.
pub enum RunCluster {
    /// In-process, no container engine.
    Embedded(Box<EmbeddedCluster>),
    /// A kind cluster created for the run, deleted when dropped.
    Kind(Box<KindCluster>),
    /// A K3s container started for the run, removed when dropped.
    #[cfg(feature = "k3s")]
    K3s(Box<K3sCluster>),
    /// A cluster reached through a kubeconfig (a real AKS cluster on live Azure).
    Kubectl(Box<KubectlCluster>),
}

impl RunCluster {
    fn kubectl(&self) -> Option<&KubectlCluster> {
        match self {
            RunCluster::Embedded(_) => None,
            RunCluster::Kind(kind) => Some(kind.kubectl()),
            #[cfg(feature = "k3s")]
            RunCluster::K3s(k3s) => Some(k3s.kubectl()),
            RunCluster::Kubectl(kubectl) => Some(kubectl),
        }
    }

    /// Returns the logs of a job's pods, as `kubectl logs job/NAME` shows them.
    // NOTE: synchronous, so kubectl-based backends block the calling thread while kubectl
    // runs (well under a second on a local cluster).
    pub fn job_logs(&self, name: &str, namespace: &str) -> Result<String, ClusterError> {
        match (self, self.kubectl()) {
            (RunCluster::Embedded(cluster), _) => cluster.job_logs(name, namespace),
            (_, Some(kubectl)) => {
                kubectl.run_blocking(&["logs", "-n", namespace, &format!("job/{name}")])
            }
            (_, None) => unreachable!("every other backend runs kubectl"),
        }
    }

    /// Creates or updates the objects of a manifest; see [`Cluster::apply`].
    pub async fn apply(&mut self, yaml: &str) -> Result<Vec<String>, ClusterError> {
        Cluster::apply(self, yaml).await
    }

    /// Waits until the job has `condition`; see [`Cluster::wait_job`].
    pub async fn wait_job(
        &self,
        name: &str,
        namespace: &str,
        condition: JobConditionType,
        timeout: Duration,
    ) -> Result<JobStatus, ClusterError> {
        Cluster::wait_job(self, name, namespace, condition, timeout).await
    }

    /// Returns every pod of the cluster. For kubectl backends a failed `kubectl get` returns
    /// no pods.
    pub fn pods(&self) -> Vec<Pod> {
        match (self, self.kubectl()) {
            (RunCluster::Embedded(cluster), _) => cluster.pods(),
            (_, Some(kubectl)) => kubectl
                .run_blocking(&["get", "pods", "--all-namespaces", "-o", "json"])
                .ok()
                .and_then(|json| serde_json::from_str::<List<Pod>>(&json).ok())
                .map(|list| list.items)
                .unwrap_or_default(),
            (_, None) => unreachable!("every other backend runs kubectl"),
        }
    }

    /// Returns the names of a job's pods, oldest first.
    pub fn job_pods(&self, name: &str, namespace: &str) -> Vec<String> {
        match (self, self.kubectl()) {
            (RunCluster::Embedded(cluster), _) => cluster.job_pods(name, namespace),
            (_, Some(kubectl)) => {
                let selector = format!("job-name={name}");
                let mut pods: Vec<Pod> = kubectl
                    .run_blocking(&[
                        "get", "pods", "-n", namespace, "-l", &selector, "-o", "json",
                    ])
                    .ok()
                    .and_then(|json| serde_json::from_str::<List<Pod>>(&json).ok())
                    .map(|list| list.items)
                    .unwrap_or_default();
                pods.sort_by(|a, b| {
                    a.metadata
                        .creation_timestamp
                        .cmp(&b.metadata.creation_timestamp)
                });
                pods.into_iter()
                    .filter_map(|pod| pod.metadata.name)
                    .collect()
            }
            (_, None) => unreachable!("every other backend runs kubectl"),
        }
    }

    /// Replaces projected tokens past their refresh time after the clock moved. Real
    /// clusters refresh their own tokens, so this does nothing for them and returns 0.
    pub fn refresh_tokens(&self) -> Result<usize, ClusterError> {
        match self {
            RunCluster::Embedded(cluster) => cluster.refresh_tokens(),
            _ => Ok(0),
        }
    }
}

impl Cluster for RunCluster {
    async fn apply(&mut self, yaml: &str) -> Result<Vec<String>, ClusterError> {
        match self {
            RunCluster::Embedded(cluster) => cluster.apply(yaml).await,
            RunCluster::Kind(kind) => kind.apply(yaml).await,
            #[cfg(feature = "k3s")]
            RunCluster::K3s(k3s) => k3s.apply(yaml).await,
            RunCluster::Kubectl(kubectl) => kubectl.apply(yaml).await,
        }
    }

    async fn wait_job(
        &self,
        name: &str,
        namespace: &str,
        condition: JobConditionType,
        timeout: Duration,
    ) -> Result<JobStatus, ClusterError> {
        match (self, self.kubectl()) {
            (RunCluster::Embedded(cluster), _) => {
                cluster.wait_job(name, namespace, condition, timeout).await
            }
            (_, Some(kubectl)) => kubectl.wait_job(name, namespace, condition, timeout).await,
            (_, None) => unreachable!("every other backend runs kubectl"),
        }
    }

    async fn logs(&self, target: &str, namespace: &str) -> Result<String, ClusterError> {
        match (self, self.kubectl()) {
            (RunCluster::Embedded(cluster), _) => cluster.logs(target, namespace).await,
            (_, Some(kubectl)) => kubectl.logs(target, namespace).await,
            (_, None) => unreachable!("every other backend runs kubectl"),
        }
    }

    async fn describe_pod(&self, name: &str, namespace: &str) -> Result<String, ClusterError> {
        match (self, self.kubectl()) {
            (RunCluster::Embedded(cluster), _) => cluster.describe_pod(name, namespace).await,
            (_, Some(kubectl)) => kubectl.describe_pod(name, namespace).await,
            (_, None) => unreachable!("every other backend runs kubectl"),
        }
    }
}
