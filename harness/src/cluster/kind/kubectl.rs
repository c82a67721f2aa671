//! A cluster driven through `kubectl` with a kubeconfig: kind clusters, and real AKS clusters
//! on live Azure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::wiring::PodWiring;
use crate::cluster::{ClusterError, JobConditionType};

/// `kubectl` against one kubeconfig, with optional wiring added to applied pod templates.
#[derive(Clone, Debug)]
pub struct KubectlCluster {
    kubeconfig: PathBuf,
    wiring: Option<PodWiring>,
}

impl KubectlCluster {
    pub fn new(kubeconfig: &Path, wiring: Option<PodWiring>) -> Self {
        Self {
            kubeconfig: kubeconfig.to_path_buf(),
            wiring,
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl ARGS` with `stdin` and returns stdout; a non-zero exit becomes
    /// [`ClusterError::Rejected`] with kubectl's stderr.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let io = |source| ClusterError::Io {
            action: "run kubectl with",
            path: self.kubeconfig.clone(),
            source,
        };
        let mut child = command.spawn().map_err(io)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(io)?;
        }
        let output = child.wait_with_output().await.map_err(io)?;
        if !output.status.success() {
            return Err(ClusterError::Rejected {
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `kubectl ARGS` on the calling thread and returns stdout.
    pub fn run_blocking(&self, args: &[&str]) -> Result<String, ClusterError> {
        let output = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ClusterError::Io {
                action: "run kubectl with",
                path: self.kubeconfig.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(ClusterError::Rejected {
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `kubectl apply -f -` after adding the wiring to pod templates; returns kubectl's lines.
    pub async fn apply(&self, yaml: &str) -> Result<Vec<String>, ClusterError> {
        let yaml = match &self.wiring {
            Some(wiring) => wiring.rewrite(yaml)?,
            None => yaml.to_owned(),
        };
        let output = self.run(&["apply", "-f", "-"], Some(&yaml)).await?;
        Ok(output.lines().map(str::to_owned).collect())
    }

    /// `kubectl wait --for=condition=...`, then the job's status.
    // NOTE: kubectl waits for the named condition only, so a job that fails while waiting for
    // Complete is reported when the timeout ends, not at once as the embedded cluster does.
    pub async fn wait_job(
        &self,
        name: &str,
        namespace: &str,
        condition: JobConditionType,
        timeout: Duration,
    ) -> Result<JobStatus, ClusterError> {
        let job = format!("job/{name}");
        let wait_for = format!("--for=condition={}", condition.as_str());
        let timeout_arg = format!("--timeout={}s", timeout.as_secs().max(1));
        let waited = self
            .run(
                &["wait", &wait_for, &timeout_arg, "-n", namespace, &job],
                None,
            )
            .await;
        let status = self.job_status(name, namespace).await?;
        match waited {
            Ok(_) => Ok(status),
            Err(error) => Err(ClusterError::Timeout {
                what: format!("job {namespace}/{name} to be {}", condition.as_str()),
                timeout,
                state: format!("{error}; status {status:?}"),
            }),
        }
    }

    async fn job_status(&self, name: &str, namespace: &str) -> Result<JobStatus, ClusterError> {
        let json = self
            .run(&["get", "job", name, "-n", namespace, "-o", "json"], None)
            .await?;
        let job: Job = serde_json::from_str(&json).map_err(|e| ClusterError::Rejected {
            message: format!("kubectl returned a job that does not parse: {e}"),
        })?;
        Ok(job.status.unwrap_or_default())
    }

    pub async fn logs(&self, target: &str, namespace: &str) -> Result<String, ClusterError> {
        self.run(&["logs", "-n", namespace, target], None).await
    }

    pub async fn describe_pod(&self, name: &str, namespace: &str) -> Result<String, ClusterError> {
        self.run(&["describe", "pod", "-n", namespace, name], None)
            .await
    }
}
