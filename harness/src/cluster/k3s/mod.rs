//! A K3s cluster in one Docker container, for hosts that have Docker but not kind.
//!
//! K3s is started through testcontainers with the fake issuer's URL and key pair
//! ([`config`]). From then on it is set up as the kind backend sets up its cluster, with the
//! same functions: the webhook runs in this process, the pod wiring points pods at the fakes,
//! and `kubectl` drives the cluster. The fakes listen on the gateway of the Docker network
//! [`DOCKER_NETWORK`], which the container joins.
//!
//! Dropping a [`K3sCluster`] removes the container, also when a run fails, because
//! testcontainers removes a container when its handle is dropped. That includes a failure
//! while the container starts.

pub mod config;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};
use tracing::info;

use super::kind::{self, KindError, KindSetup, KubectlCluster, StartedWebhook};
use super::webhook_server::WebhookServer;

/// The Docker network of the K3s container; the fakes listen on its gateway.
pub const DOCKER_NETWORK: &str = "xtenant-k3s";
/// How long K3s may take from container start to [`config::READY_LOG_LINE`].
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the node may take to become Ready after that.
const NODE_READY_TIMEOUT: &str = "--timeout=120s";
/// How long the `default` service account may take to appear; pods cannot be created before.
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of the K3s backend, from the command line.
#[derive(Clone, Debug, Default)]
pub struct K3sOptions {
    /// K3s image; [`config::DEFAULT_IMAGE`] when `None`.
    pub image: Option<String>,
    /// Demo workload image to import into K3s; [`kind::DEFAULT_WORKLOAD_IMAGE`] when `None`.
    pub workload_image: Option<String>,
    /// Address the fakes listen on; the gateway of [`DOCKER_NETWORK`] when `None`.
    pub fakes_bind: Option<IpAddr>,
}

/// A failure to set up the K3s cluster.
#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    /// Docker could not create or start the container, or K3s did not log that it is ready.
    #[error("failed to start K3s from {image}: {source}; check that Docker is running")]
    Start {
        image: String,
        source: Box<TestcontainersError>,
    },
    /// The running container did not return the mapped port or a file.
    #[error("failed to {action} of the K3s container: {source}")]
    Container {
        action: &'static str,
        source: Box<TestcontainersError>,
    },
    /// The kubeconfig K3s wrote could not be rewritten.
    #[error("invalid kubeconfig in the K3s container: {problem}")]
    Kubeconfig { problem: String },
    /// `--k3s-image` names a digest without a tag.
    #[error("invalid K3s image {image}: give a tag, as in rancher/k3s:v1.35.1-k3s1@sha256:...")]
    ImageWithoutTag { image: String },
    /// `docker save` failed, usually because the image has not been built.
    #[error(
        "failed to export the workload image {image}: {source}; build it with `docker build -t {image} .`"
    )]
    WorkloadImage {
        image: String,
        source: Box<KindError>,
    },
    /// A step shared with the kind backend failed: files, kubectl, the webhook or its TLS.
    #[error("{0}")]
    Setup(#[from] KindError),
}

impl From<super::ClusterError> for K3sError {
    fn from(error: super::ClusterError) -> Self {
        K3sError::Setup(KindError::Cluster(error))
    }
}

/// A K3s cluster of one run, with the webhook server it calls.
pub struct K3sCluster {
    kubectl: KubectlCluster,
    _webhook: WebhookServer,
    container: ContainerAsync<GenericImage>,
}

impl Drop for K3sCluster {
    fn drop(&mut self) {
        // The container's own drop, which runs next, removes it.
        info!(container = %self.container.id(), "deleting the K3s container");
    }
}

impl K3sCluster {
    /// Starts K3s, waits for its node, starts the webhook and applies the CA ConfigMap and
    /// the MutatingWebhookConfiguration.
    pub async fn create(options: &K3sOptions, setup: KindSetup<'_>) -> Result<Self, K3sError> {
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| KindError::Io { path, source }
        };
        std::fs::create_dir_all(&setup.state_dir).map_err(io(&setup.state_dir))?;
        let wiring = kind::pod_wiring(&setup, options.workload_image.as_deref());
        let image_tar = setup.state_dir.join("workload-image.tar");
        export_image(&wiring.workload_image, &image_tar).await?;

        let reference = options.image.as_deref().unwrap_or(config::DEFAULT_IMAGE);
        let container = start_container(reference, &setup, image_tar).await?;
        // From here on a failure drops `container`, which removes it.
        let kubeconfig = setup.state_dir.join("kubeconfig");
        let text = read_kubeconfig(&container).await?;
        std::fs::write(&kubeconfig, text).map_err(io(&kubeconfig))?;

        let kubectl = KubectlCluster::new(&kubeconfig, Some(wiring));
        wait_until_ready(&kubectl).await?;
        let StartedWebhook { server, manifests } =
            kind::start_webhook(&setup, kubectl.clone()).await?;
        let cluster = Self {
            kubectl,
            _webhook: server,
            container,
        };
        cluster
            .kubectl
            .run(&["apply", "-f", "-"], Some(&manifests))
            .await?;
        Ok(cluster)
    }

    pub fn kubectl(&self) -> &KubectlCluster {
        &self.kubectl
    }

    pub async fn apply(&self, yaml: &str) -> Result<Vec<String>, super::ClusterError> {
        self.kubectl.apply(yaml).await
    }
}

/// Writes the workload image to `path` with `docker save`, for K3s to import at start.
async fn export_image(image: &str, path: &std::path::Path) -> Result<(), K3sError> {
    let path = path.display().to_string();
    kind::run("docker", &["save", "-o", &path, image], &[])
        .await
        .map_err(|source| K3sError::WorkloadImage {
            image: image.to_owned(),
            source: Box::new(source),
        })?;
    Ok(())
}

/// Creates the privileged K3s container on [`DOCKER_NETWORK`] with the key files and the
/// workload image copied in, and waits for [`config::READY_LOG_LINE`].
async fn start_container(
    reference: &str,
    setup: &KindSetup<'_>,
    image_tar: PathBuf,
) -> Result<ContainerAsync<GenericImage>, K3sError> {
    let (name, tag) = config::split_image(reference)?;
    let mut request = GenericImage::new(name, tag)
        .with_exposed_port(config::API_SERVER_PORT.tcp())
        .with_wait_for(WaitFor::message_on_stderr(config::READY_LOG_LINE))
        .with_cmd(config::server_args(&setup.issuer_url))
        // K3s runs containerd, the kubelet and flannel, which need the host's devices,
        // cgroups and network administration.
        .with_privileged(true)
        .with_network(DOCKER_NETWORK)
        .with_startup_timeout(START_TIMEOUT)
        .with_copy_to(config::CONTAINER_WORKLOAD_IMAGE_PATH, image_tar);
    for file in config::key_files(&setup.signing_key) {
        request = request.with_copy_to(file.container_path, file.contents);
    }
    info!(image = %reference, issuer = %setup.issuer_url, "starting the K3s container");
    request.start().await.map_err(|source| K3sError::Start {
        image: reference.to_owned(),
        source: Box::new(source),
    })
}

/// Reads the kubeconfig K3s wrote and points it at the API server's port on the host.
async fn read_kubeconfig(container: &ContainerAsync<GenericImage>) -> Result<String, K3sError> {
    let failed = |action| {
        move |source| K3sError::Container {
            action,
            source: Box::new(source),
        }
    };
    let port = container
        .get_host_port_ipv4(config::API_SERVER_PORT.tcp())
        .await
        .map_err(failed("read the API server's host port"))?;
    let host = container
        .get_host()
        .await
        .map_err(failed("read the host"))?;
    let bytes = container
        .copy_file_from(config::CONTAINER_KUBECONFIG_PATH, Vec::new())
        .await
        .map_err(failed("copy the kubeconfig out"))?;
    // NOTE: K3s's serving certificate covers 127.0.0.1 and localhost, so a Docker daemon on
    // another host (DOCKER_HOST=tcp://...) would need `--tls-san` for that host's name.
    config::rewrite_kubeconfig(&String::from_utf8_lossy(&bytes), &host.to_string(), port)
}

/// Waits until the node is Ready and the `default` service account exists, the state
/// `kind create cluster --wait` leaves a kind cluster in.
async fn wait_until_ready(kubectl: &KubectlCluster) -> Result<(), K3sError> {
    kubectl
        .run(
            &[
                "wait",
                "--for=condition=Ready",
                "node",
                "--all",
                NODE_READY_TIMEOUT,
            ],
            None,
        )
        .await?;
    let deadline = tokio::time::Instant::now() + SERVICE_ACCOUNT_TIMEOUT;
    loop {
        let lookup = kubectl
            .run(&["get", "serviceaccount", "default", "-n", "default"], None)
            .await;
        match lookup {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(super::ClusterError::Timeout {
                    what: "the default service account".to_owned(),
                    timeout: SERVICE_ACCOUNT_TIMEOUT,
                    state: error.to_string(),
                }
                .into());
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::config::*;

    #[test]
    fn split_image_reads_tag_and_digest() {
        let cases = [
            ("rancher/k3s:v1.35.1-k3s1", ("rancher/k3s", "v1.35.1-k3s1")),
            ("rancher/k3s", ("rancher/k3s", "latest")),
            ("localhost:5000/k3s:dev", ("localhost:5000/k3s", "dev")),
            ("localhost:5000/k3s", ("localhost:5000/k3s", "latest")),
            (
                "rancher/k3s:v1@sha256:abc",
                ("rancher/k3s", "v1@sha256:abc"),
            ),
        ];
        for (reference, expected) in cases {
            assert_eq!(split_image(reference).unwrap(), expected, "{reference}");
        }
    }

    #[test]
    fn split_image_rejects_digest_only() {
        assert!(split_image("rancher/k3s@sha256:abc").is_err());
    }
}
