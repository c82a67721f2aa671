//! Where a scenario runs: endpoints, credentials and clusters.
//!
//! [`Target::Fake`] starts the fakes in-process. [`Target::Live`] (Cargo feature
//! `live-azure`) points the same clients at Azure's endpoints with credentials from the
//! environment. Either target builds the cluster a scenario's `aks get-credentials` step
//! selects, through the backend chosen for the run ([`ClusterBackend`]).

mod fake;
mod hooks;
#[cfg(feature = "live-azure")]
pub mod live;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xtenant_fakes::{Fakes, StartError};

use crate::client::{AccessToken, ArmClient, ClientError, TokenClient};
use crate::cluster::RunCluster;
use crate::cluster::kind::{KindCluster, KindOptions, KindSetup};
use crate::drift::Recorder;
pub use fake::{FakeTarget, FakesView, embedded_cluster};
pub use hooks::{Progress, TargetHooks};

/// How a tenant's operator signs in.
#[derive(Clone)]
pub enum Credential {
    /// A client secret (`az login --service-principal --password`).
    Secret(String),
    /// A file holding a federated token, read at each sign-in because it is rotated
    /// (`az login --federated-token`, as GitHub Actions OIDC provides it).
    FederatedTokenFile(PathBuf),
}

/// The credentials of a tenant's operator, who runs provisioning steps.
#[derive(Clone)]
pub struct OperatorCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub credential: Credential,
}

impl std::fmt::Debug for OperatorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorCredentials")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OperatorCredentials {
    /// The client secret, when the operator signs in with one.
    pub fn secret(&self) -> Option<&str> {
        match &self.credential {
            Credential::Secret(secret) => Some(secret),
            Credential::FederatedTokenFile(_) => None,
        }
    }

    /// Requests a token for `scope` with the operator's secret or federated token.
    pub async fn token(
        &self,
        tokens: &TokenClient,
        scope: &str,
    ) -> Result<AccessToken, ClientError> {
        match &self.credential {
            Credential::Secret(secret) => {
                tokens
                    .with_secret(&self.tenant_id, &self.client_id, secret, scope)
                    .await
            }
            Credential::FederatedTokenFile(path) => {
                let assertion =
                    std::fs::read_to_string(path).map_err(|e| ClientError::Unexpected {
                        url: path.display().to_string(),
                        problem: format!("failed to read the federated token file: {e}"),
                    })?;
                tokens
                    .with_assertion(&self.tenant_id, &self.client_id, assertion.trim(), scope)
                    .await
            }
        }
    }
}

/// Why a target could not serve a request of the runner.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("failed to start the fakes: {0}")]
    Start(#[from] StartError),
    #[error(
        "the scenario uses tenant '{0}', which the target does not have; list it under `tenants`"
    )]
    UnknownTenant(String),
    #[error("no AKS cluster with id {0} exists in the fake cloud")]
    UnknownCluster(String),
    #[error("the AKS cluster {0} has no OIDC issuer; create it with `oidc-issuer: true`")]
    NoIssuer(String),
    #[error("failed to prepare the cluster's folder: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to start the cluster: {0}")]
    Cluster(String),
    /// A step needs the fakes (clock, faults), but the run targets live Azure.
    #[error("this step needs the fakes, but the run targets live Azure")]
    NotFake,
    /// The live target's settings are missing or invalid.
    #[error("invalid live-Azure settings: {0}")]
    Settings(String),
}

/// Which cluster backend stands in for AKS clusters on the fake target.
#[derive(Clone, Debug, Default)]
pub enum ClusterBackend {
    /// In-process, no container engine ([`crate::cluster::EmbeddedCluster`]).
    #[default]
    Embedded,
    /// A kind cluster whose API server signs with the fake issuer's key.
    Kind(KindOptions),
    /// A K3s container whose API server signs with the fake issuer's key.
    #[cfg(feature = "k3s")]
    K3s(crate::cluster::k3s::K3sOptions),
}

/// Which cloud a run targets.
#[derive(Clone, Debug, Default)]
pub enum TargetKind {
    /// Fresh fakes per scenario.
    #[default]
    Fake,
    /// Real Azure, or any endpoints the settings name.
    #[cfg(feature = "live-azure")]
    Live(live::LiveSettings),
}

/// Settings of a run's target, shared by its scenarios.
#[derive(Clone, Default)]
pub struct TargetOptions {
    pub kind: TargetKind,
    pub cluster: ClusterBackend,
    /// Records every ARM answer for `xtenant drift`.
    pub recorder: Option<Recorder>,
    /// Receives a line per poll of a long-running operation.
    pub progress: Option<Progress>,
}

/// The cloud one scenario runs against.
pub enum Target {
    Fake(Box<FakeInstance>),
    #[cfg(feature = "live-azure")]
    Live(Box<live::LiveTarget>),
}

/// The fakes of one scenario and the cluster backend that stands in for AKS.
pub struct FakeInstance {
    pub target: FakeTarget,
    cluster: ClusterBackend,
    hooks: Arc<TargetHooks>,
}

impl Target {
    /// Starts the target of one scenario with the scenario's tenants.
    pub async fn start(
        tenants: &[String],
        workload_exe: &Path,
        options: &TargetOptions,
    ) -> Result<Self, TargetError> {
        let hooks = Arc::new(TargetHooks::new(
            options.recorder.clone(),
            options.progress.clone(),
        ));
        match &options.kind {
            TargetKind::Fake => {
                let bind = match &options.cluster {
                    ClusterBackend::Embedded => None,
                    ClusterBackend::Kind(kind) => Some(fakes_bind_address(kind).await?),
                    #[cfg(feature = "k3s")]
                    ClusterBackend::K3s(k3s) => Some(k3s_fakes_bind_address(k3s).await?),
                };
                let target = FakeTarget::start(tenants, workload_exe, bind).await?;
                Ok(Target::Fake(Box::new(FakeInstance {
                    target,
                    cluster: options.cluster.clone(),
                    hooks,
                })))
            }
            #[cfg(feature = "live-azure")]
            TargetKind::Live(settings) => Ok(Target::Live(Box::new(live::LiveTarget::new(
                settings.clone(),
                tenants,
                workload_exe,
                hooks,
            )?))),
        }
    }

    /// Whether the run targets live Azure, where fake-only steps are skipped.
    pub fn is_live(&self) -> bool {
        !matches!(self, Target::Fake(_))
    }

    /// The fakes, for steps that act on them directly (clock, faults).
    pub fn fakes(&self) -> Result<&Fakes, TargetError> {
        match self {
            Target::Fake(instance) => Ok(&instance.target.fakes),
            #[cfg(feature = "live-azure")]
            Target::Live(_) => Err(TargetError::NotFake),
        }
    }

    /// The CA file HTTPS clients trust instead of the platform roots, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        match self {
            Target::Fake(instance) => Some(instance.target.ca_file()),
            #[cfg(feature = "live-azure")]
            Target::Live(live) => live.ca_file(),
        }
    }

    pub fn login_url(&self) -> &str {
        match self {
            Target::Fake(instance) => instance.target.login_url(),
            #[cfg(feature = "live-azure")]
            Target::Live(live) => live.login_url(),
        }
    }

    /// The tenant id of the scenario tenant `name`.
    pub fn tenant_id(&self, name: &str) -> Option<String> {
        match self {
            Target::Fake(instance) => instance.target.tenant_id(name),
            #[cfg(feature = "live-azure")]
            Target::Live(live) => live.tenant_id(name),
        }
    }

    /// The operator credentials of the tenant named `name` in the scenario.
    pub fn operator(&self, name: &str) -> Result<OperatorCredentials, TargetError> {
        match self {
            Target::Fake(instance) => instance.target.operator(name),
            #[cfg(feature = "live-azure")]
            Target::Live(live) => live.operator(name),
        }
    }

    /// An ARM client for the target's endpoint with the target's hooks (recording, progress,
    /// and on live Azure the run-id suffix, tags and cost guard).
    pub fn arm_client(&self, http: reqwest::Client, token: AccessToken) -> ArmClient {
        match self {
            Target::Fake(instance) => ArmClient::new(http, instance.target.arm_url(), token)
                .with_hooks(instance.hooks.clone()),
            #[cfg(feature = "live-azure")]
            Target::Live(live) => live.arm_client(http, token),
        }
    }

    /// The cluster behind the AKS cluster `cluster_id`, whose user kubeconfig ARM returned.
    pub async fn cluster(
        &self,
        cluster_id: &str,
        kubeconfig: &[u8],
    ) -> Result<RunCluster, TargetError> {
        #[cfg(not(feature = "live-azure"))]
        let _ = kubeconfig;
        match self {
            Target::Fake(instance) => instance.cluster(cluster_id).await,
            #[cfg(feature = "live-azure")]
            Target::Live(live) => live.cluster(cluster_id, kubeconfig).await,
        }
    }

    /// Ends the run: deletes what the run created on live Azure. Clusters are deleted when
    /// the runner drops them.
    pub async fn finish(&self) -> Result<(), TargetError> {
        match self {
            Target::Fake(_) => Ok(()),
            #[cfg(feature = "live-azure")]
            Target::Live(live) => live.finish().await,
        }
    }
}

/// Steps that act on the fakes directly (clock, faults, request counts) reach them through
/// this. They are fake-only, so the runner skips them on live Azure before they get here.
impl std::ops::Deref for Target {
    type Target = FakeTarget;

    fn deref(&self) -> &FakeTarget {
        match self {
            Target::Fake(instance) => &instance.target,
            #[cfg(feature = "live-azure")]
            Target::Live(_) => panic!("a fake-only step ran against live Azure"),
        }
    }
}

impl FakeInstance {
    async fn cluster(&self, cluster_id: &str) -> Result<RunCluster, TargetError> {
        match &self.cluster {
            ClusterBackend::Embedded => Ok(RunCluster::Embedded(Box::new(
                self.target.embedded_cluster(cluster_id)?,
            ))),
            ClusterBackend::Kind(options) => {
                let setup = self.kind_setup(cluster_id)?;
                let cluster = KindCluster::create(options, setup)
                    .await
                    .map_err(|e| TargetError::Cluster(e.to_string()))?;
                Ok(RunCluster::Kind(Box::new(cluster)))
            }
            #[cfg(feature = "k3s")]
            ClusterBackend::K3s(options) => {
                let setup = self.kind_setup(cluster_id)?;
                let cluster = crate::cluster::k3s::K3sCluster::create(options, setup)
                    .await
                    .map_err(|e| TargetError::Cluster(e.to_string()))?;
                Ok(RunCluster::K3s(Box::new(cluster)))
            }
        }
    }

    /// What a cluster on a real API server (kind or K3s) takes from the fakes.
    fn kind_setup(&self, cluster_id: &str) -> Result<KindSetup<'_>, TargetError> {
        let view = self.target.view();
        let identity = fake::cluster_identity(&view.cloud, cluster_id)?;
        Ok(KindSetup {
            issuer_url: identity.issuer_url,
            signing_key: identity.signing_key,
            default_tenant_id: identity.tenant_id,
            authority_host: format!("{}/", view.endpoints.login),
            servicebus_endpoint: format!("amqps://{}", view.endpoints.servicebus_tls),
            fakes_address: view.endpoints.servicebus_tls.ip(),
            ca: self.target.fakes.ca(),
            state_dir: self
                .target
                .state_dir()
                .join("clusters")
                .join(&identity.name),
        })
    }
}

/// The address the fakes listen on for a kind cluster: the option when set, else the gateway
/// of the Docker network `kind`, which pods reach through their node.
async fn fakes_bind_address(options: &KindOptions) -> Result<IpAddr, TargetError> {
    match options.fakes_bind {
        Some(address) => Ok(address),
        None => crate::cluster::kind::docker_network_gateway()
            .await
            .map_err(|e| TargetError::Cluster(e.to_string())),
    }
}

/// The address the fakes listen on for a K3s cluster: the option when set, else the gateway
/// of the Docker network the K3s container joins.
#[cfg(feature = "k3s")]
async fn k3s_fakes_bind_address(
    options: &crate::cluster::k3s::K3sOptions,
) -> Result<IpAddr, TargetError> {
    match options.fakes_bind {
        Some(address) => Ok(address),
        None => crate::cluster::kind::network_gateway(crate::cluster::k3s::DOCKER_NETWORK)
            .await
            .map_err(|e| TargetError::Cluster(e.to_string())),
    }
}
