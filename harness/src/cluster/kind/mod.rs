//! A kind cluster that runs scenario workloads on a real API server.
//!
//! The API server signs service-account tokens as the fake issuer ([`config`]), the
//! workload-identity webhook runs in this process as a real admission webhook
//! ([`crate::cluster::webhook_server`]), and pods reach the fakes on the Docker network's
//! gateway ([`wiring`]). The cluster is driven with the `kind` and `kubectl` programs through
//! `tokio::process`; ARCHITECTURE.md gives the reason for kubectl and not the `kube` crate.
//!
//! A [`KindCluster`] deletes its cluster when dropped, unless it reuses one
//! (`--reuse-kind-cluster`). Needs Docker, so it runs in CI and on machines with Docker.

pub mod config;
mod kubectl;
pub mod wiring;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use tokio::net::TcpListener;
use tokio::process::Command;
use tracing::{info, warn};
use xtenant_fakes::crypto::SigningKey;
use xtenant_fakes::tls::{CertificateAuthority, FAKE_HOST_NAMES};

pub use kubectl::KubectlCluster;
pub use wiring::PodWiring;

use super::webhook::WebhookConfig;
use super::webhook_server::{MUTATE_PATH, ServiceAccountLookup, WebhookServer, configuration};

/// Name of kind clusters the harness creates, unless reused.
pub const DEFAULT_CLUSTER_NAME: &str = "xtenant";
/// Tag of the demo workload image that the `Dockerfile` builds.
pub const DEFAULT_WORKLOAD_IMAGE: &str = "xtenant-demo:dev";
/// The Docker network kind puts its nodes on.
pub const DOCKER_NETWORK: &str = "kind";

/// Settings of the kind backend, from the command line.
#[derive(Clone, Debug, Default)]
pub struct KindOptions {
    /// An existing cluster to use and keep (`--reuse-kind-cluster NAME`).
    pub reuse: Option<String>,
    /// Node image; [`config::DEFAULT_NODE_IMAGE`] when `None`.
    pub node_image: Option<String>,
    /// Demo workload image to `kind load`; [`DEFAULT_WORKLOAD_IMAGE`] when `None`.
    pub workload_image: Option<String>,
    /// Address the fakes listen on; the gateway of the Docker network `kind` when `None`.
    pub fakes_bind: Option<IpAddr>,
}

/// What the fake target gives a kind cluster: the AKS cluster's issuer and key, the
/// webhook's defaults, and where pods find the fakes.
pub struct KindSetup<'a> {
    pub issuer_url: String,
    pub signing_key: Arc<SigningKey>,
    pub default_tenant_id: String,
    pub authority_host: String,
    pub servicebus_endpoint: String,
    /// Address the fakes listen on, which pods reach through their node.
    pub fakes_address: IpAddr,
    pub ca: &'a CertificateAuthority,
    pub state_dir: PathBuf,
}

/// Why the kind cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("failed to run {program}: {source}; install it and check that it is on PATH")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("failed to write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to set up the webhook's TLS: {0}")]
    Tls(#[from] xtenant_fakes::tls::TlsError),
    #[error("{0}")]
    Cluster(#[from] super::ClusterError),
    #[error("the Docker network {0} has no IPv4 gateway; pass --fakes-bind")]
    NoGateway(String),
}

/// A kind cluster of one run, with the webhook server it calls.
pub struct KindCluster {
    name: String,
    delete_on_drop: bool,
    kubectl: KubectlCluster,
    _webhook: WebhookServer,
}

impl Drop for KindCluster {
    fn drop(&mut self) {
        if self.delete_on_drop {
            delete_cluster_blocking(&self.name);
        }
    }
}

impl KindCluster {
    /// Creates (or reuses) the cluster, starts the webhook, loads the demo image and applies
    /// the CA ConfigMap and the MutatingWebhookConfiguration.
    pub async fn create(options: &KindOptions, setup: KindSetup<'_>) -> Result<Self, KindError> {
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| KindError::Io { path, source }
        };
        std::fs::create_dir_all(&setup.state_dir).map_err(io(&setup.state_dir))?;
        let public_key = setup.state_dir.join("sa.pub");
        let private_key = setup.state_dir.join("sa.key");
        let kubeconfig = setup.state_dir.join("kubeconfig");
        std::fs::write(
            &public_key,
            config::pem("PUBLIC KEY", setup.signing_key.public_key_der()),
        )
        .map_err(io(&public_key))?;
        std::fs::write(
            &private_key,
            config::pem("PRIVATE KEY", &setup.signing_key.private_key_pkcs8_der()),
        )
        .map_err(io(&private_key))?;

        let (name, delete_on_drop) = match &options.reuse {
            Some(name) => {
                run(
                    "kind",
                    &["export", "kubeconfig", "--name", name, "--kubeconfig"],
                    &[kubeconfig.display().to_string()],
                )
                .await?;
                (name.clone(), false)
            }
            None => {
                let name = DEFAULT_CLUSTER_NAME.to_owned();
                let config_file = setup.state_dir.join("kind.yaml");
                let node_image = options
                    .node_image
                    .as_deref()
                    .unwrap_or(config::DEFAULT_NODE_IMAGE);
                let text = config::render(
                    &name,
                    node_image,
                    &setup.issuer_url,
                    &public_key,
                    &private_key,
                );
                std::fs::write(&config_file, text).map_err(io(&config_file))?;
                info!(cluster = %name, issuer = %setup.issuer_url, "creating the kind cluster");
                run(
                    "kind",
                    &["create", "cluster", "--wait", "120s", "--name", &name],
                    &[
                        "--config".into(),
                        config_file.display().to_string(),
                        "--kubeconfig".into(),
                        kubeconfig.display().to_string(),
                    ],
                )
                .await?;
                (name, true)
            }
        };
        // From here on a failure drops `cluster`, which deletes the kind cluster.
        let wiring = pod_wiring(&setup, options.workload_image.as_deref());
        let kubectl = KubectlCluster::new(&kubeconfig, Some(wiring.clone()));
        let webhook = start_webhook(&setup, kubectl.clone()).await?;
        let cluster = Self {
            name,
            delete_on_drop,
            kubectl,
            _webhook: webhook.server,
        };
        run(
            "kind",
            &[
                "load",
                "docker-image",
                &wiring.workload_image,
                "--name",
                &cluster.name,
            ],
            &[],
        )
        .await?;
        cluster
            .kubectl
            .run(&["apply", "-f", "-"], Some(&webhook.manifests))
            .await?;
        Ok(cluster)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kubectl(&self) -> &KubectlCluster {
        &self.kubectl
    }

    pub async fn apply(&self, yaml: &str) -> Result<Vec<String>, super::ClusterError> {
        self.kubectl.apply(yaml).await
    }
}

/// Builds the pod wiring of a cluster whose nodes reach the fakes at `setup.fakes_address`.
/// The workload image is [`DEFAULT_WORKLOAD_IMAGE`] when `None`.
pub(crate) fn pod_wiring(setup: &KindSetup<'_>, workload_image: Option<&str>) -> PodWiring {
    PodWiring {
        fakes_address: setup.fakes_address.to_string(),
        host_names: FAKE_HOST_NAMES
            .iter()
            .filter(|host| !host.contains('*') && host.parse::<IpAddr>().is_err())
            .filter(|host| **host != "localhost")
            .map(|host| (*host).to_owned())
            .collect(),
        servicebus_endpoint: setup.servicebus_endpoint.clone(),
        workload_image: workload_image.unwrap_or(DEFAULT_WORKLOAD_IMAGE).to_owned(),
    }
}

pub(crate) struct StartedWebhook {
    pub(crate) server: WebhookServer,
    /// The CA ConfigMap and the MutatingWebhookConfiguration, as one manifest.
    pub(crate) manifests: String,
}

/// Starts the webhook on the fakes' address, where the API server in the node reaches it.
pub(crate) async fn start_webhook(
    setup: &KindSetup<'_>,
    kubectl: KubectlCluster,
) -> Result<StartedWebhook, KindError> {
    let host = setup.fakes_address.to_string();
    let tls = setup.ca.server_config(&[host.as_str()])?;
    let listener = TcpListener::bind(SocketAddr::new(setup.fakes_address, 0))
        .await
        .map_err(|source| KindError::Io {
            path: PathBuf::from(format!("tcp://{}", setup.fakes_address)),
            source,
        })?;
    let lookup: ServiceAccountLookup = Arc::new(move |namespace, name| {
        let kubectl = kubectl.clone();
        Box::pin(async move {
            let json = kubectl
                .run(
                    &[
                        "get",
                        "serviceaccount",
                        &name,
                        "-n",
                        &namespace,
                        "-o",
                        "json",
                    ],
                    None,
                )
                .await
                .ok()?;
            serde_json::from_str::<ServiceAccount>(&json).ok()
        })
    });
    let config = WebhookConfig::new(&setup.default_tenant_id, &setup.authority_host);
    let server =
        WebhookServer::start(listener, tls, config, lookup).map_err(|source| KindError::Io {
            path: PathBuf::from("webhook listener"),
            source,
        })?;
    let url = format!("https://{}{MUTATE_PATH}", server.address());
    let ca_pem = setup.ca.ca_pem();
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": wiring::CA_CONFIG_MAP, "namespace": "default" },
        "data": { wiring::CA_KEY: ca_pem },
    });
    let manifests = [config_map, configuration(&url, &ca_pem)]
        .iter()
        .map(|object| serde_yaml::to_string(object).expect("JSON values serialize as YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    Ok(StartedWebhook { server, manifests })
}

/// Runs `program ARGS EXTRA` and returns stdout, or the command line and stderr on failure.
pub(crate) async fn run(
    program: &'static str,
    args: &[&str],
    extra: &[String],
) -> Result<String, KindError> {
    let output = Command::new(program)
        .args(args)
        .args(extra)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| KindError::Spawn { program, source })?;
    if !output.status.success() {
        return Err(KindError::Command {
            command: format!("{program} {} {}", args.join(" "), extra.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Deletes a kind cluster, waiting for `kind` to finish; used from `Drop`, also when a run
/// fails or is interrupted.
pub fn delete_cluster_blocking(name: &str) {
    info!(cluster = %name, "deleting the kind cluster");
    match std::process::Command::new("kind")
        .args(["delete", "cluster", "--name", name])
        .output()
    {
        Ok(output) if output.status.success() => {}
        Ok(output) => warn!(cluster = %name, stderr = %String::from_utf8_lossy(&output.stderr),
            "failed to delete the kind cluster; delete it with `kind delete cluster --name {name}`"),
        Err(error) => warn!(cluster = %name, %error, "failed to run `kind delete cluster`"),
    }
}

/// The IPv4 gateway of the Docker network `kind`, created first when missing (kind then uses
/// it). Pods reach the host, and so the fakes, at this address.
pub async fn docker_network_gateway() -> Result<IpAddr, KindError> {
    network_gateway(DOCKER_NETWORK).await
}

/// Returns the IPv4 gateway of the Docker network `network`, creating the network first when
/// it is missing.
pub async fn network_gateway(network: &str) -> Result<IpAddr, KindError> {
    let inspect = [
        "network",
        "inspect",
        network,
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
    ];
    let output = match run("docker", &inspect, &[]).await {
        Ok(output) => output,
        Err(KindError::Command { .. }) => {
            run("docker", &["network", "create", network], &[]).await?;
            run("docker", &inspect, &[]).await?
        }
        Err(error) => return Err(error),
    };
    output
        .split_whitespace()
        .filter_map(|text| text.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| KindError::NoGateway(network.to_owned()))
}
