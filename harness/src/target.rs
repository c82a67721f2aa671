//! Where a scenario runs: endpoints, credentials and clusters. The fake target starts the
//! fakes in-process; a live target (real Azure) plugs the same clients into Azure's
//! endpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use xtenant_fakes::cloud::{ResourceId, lock};
use xtenant_fakes::{Fakes, FakesConfig, StartError};

use crate::cluster::{EmbeddedCluster, EmbeddedConfig};

/// The credentials of a tenant's operator, who runs provisioning steps.
#[derive(Clone)]
pub struct OperatorCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub secret: String,
}

impl std::fmt::Debug for OperatorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorCredentials")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The fakes, started for one scenario.
pub struct FakeTarget {
    pub fakes: Fakes,
    workload_exe: PathBuf,
    state_dir: tempfile::TempDir,
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
    #[error("failed to start the embedded cluster: {0}")]
    Cluster(String),
}

impl FakeTarget {
    /// Starts the fakes with the scenario's tenants.
    pub async fn start(tenants: &[String], workload_exe: &Path) -> Result<Self, TargetError> {
        let state_dir = tempfile::Builder::new().prefix("xtenant-run-").tempdir()?;
        let config = FakesConfig {
            tenants: tenants.to_vec(),
            state_dir: Some(state_dir.path().join("fakes")),
            ..FakesConfig::default()
        };
        let fakes = Fakes::start(config).await?;
        Ok(Self {
            fakes,
            workload_exe: workload_exe.to_path_buf(),
            state_dir,
        })
    }

    pub fn arm_url(&self) -> &str {
        &self.fakes.endpoints.arm
    }

    pub fn login_url(&self) -> &str {
        &self.fakes.endpoints.login
    }

    pub fn ca_file(&self) -> &Path {
        self.fakes.ca_file()
    }

    /// The operator credentials of the tenant named `name` in the scenario.
    pub fn operator(&self, name: &str) -> Result<OperatorCredentials, TargetError> {
        let cloud = lock(&self.fakes.cloud);
        let tenant = cloud
            .tenant(name)
            .ok_or_else(|| TargetError::UnknownTenant(name.to_owned()))?;
        let operator = cloud
            .operator(&tenant.id)
            .ok_or_else(|| TargetError::UnknownTenant(name.to_owned()))?;
        Ok(OperatorCredentials {
            tenant_id: tenant.id.to_string(),
            client_id: operator.client_id.to_string(),
            secret: operator.secret().unwrap_or_default().to_owned(),
        })
    }

    /// The tenant id of the scenario tenant `name`.
    pub fn tenant_id(&self, name: &str) -> Option<String> {
        lock(&self.fakes.cloud)
            .tenant(name)
            .map(|t| t.id.to_string())
    }

    /// An embedded cluster standing in for the AKS cluster `cluster_id`: its issuer and key
    /// sign the projected tokens, and its tenant is the webhook's default tenant.
    pub fn embedded_cluster(&self, cluster_id: &str) -> Result<EmbeddedCluster, TargetError> {
        let (name, tenant, issuer_url, key) = {
            let cloud = lock(&self.fakes.cloud);
            let id = ResourceId::new(cluster_id);
            let cluster = cloud
                .clusters
                .get(&id.key())
                .ok_or_else(|| TargetError::UnknownCluster(cluster_id.to_owned()))?;
            let issuer_url = cluster
                .issuer_url
                .clone()
                .ok_or_else(|| TargetError::NoIssuer(cluster_id.to_owned()))?;
            let issuer = cloud
                .issuer(&issuer_url)
                .ok_or_else(|| TargetError::NoIssuer(cluster_id.to_owned()))?;
            (
                id.name().to_owned(),
                cluster.tenant.to_string(),
                issuer_url,
                issuer.active_key().clone(),
            )
        };
        let endpoints = &self.fakes.endpoints;
        let cloud = self.fakes.cloud.clone();
        let state_dir = self.state_dir.path().join("clusters").join(&name);
        std::fs::create_dir_all(&state_dir)?;
        let config = EmbeddedConfig {
            cluster_name: name,
            default_tenant_id: tenant,
            authority_host: format!("{}/", endpoints.login),
            issuer_url,
            signing_key: key,
            workload_exe: self.workload_exe.clone(),
            extra_env: vec![
                ("SSL_CERT_FILE".into(), self.ca_file().display().to_string()),
                (
                    "AZURE_SERVICEBUS_ENDPOINT".into(),
                    format!("amqps://{}", endpoints.servicebus_tls),
                ),
            ],
            extra_images: Vec::new(),
            state_dir,
            clock: Arc::new(move || lock(&cloud).now()),
        };
        EmbeddedCluster::new(config).map_err(|e| TargetError::Cluster(e.to_string()))
    }
}
