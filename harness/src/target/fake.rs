//! The fake target: the fakes started in-process for one scenario.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xtenant_fakes::cloud::{ResourceId, SharedCloud, lock};
use xtenant_fakes::{Endpoints, Fakes, FakesConfig};

use super::{Credential, OperatorCredentials, TargetError};
use crate::cluster::{EmbeddedCluster, EmbeddedConfig};

/// The fakes, started for one scenario.
pub struct FakeTarget {
    pub fakes: Fakes,
    workload_exe: PathBuf,
    state_dir: tempfile::TempDir,
}

impl FakeTarget {
    /// Starts the fakes with the scenario's tenants.
    /// `bind` is the address every fake listens on, loopback when `None`.
    pub async fn start(
        tenants: &[String],
        workload_exe: &Path,
        bind: Option<IpAddr>,
    ) -> Result<Self, TargetError> {
        let state_dir = tempfile::Builder::new().prefix("xtenant-run-").tempdir()?;
        let mut config = FakesConfig {
            tenants: tenants.to_vec(),
            state_dir: Some(state_dir.path().join("fakes")),
            ..FakesConfig::default()
        };
        if let Some(bind) = bind {
            config.bind = bind;
        }
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
            credential: Credential::Secret(operator.secret().unwrap_or_default().to_owned()),
        })
    }

    /// The tenant id of the scenario tenant `name`.
    pub fn tenant_id(&self, name: &str) -> Option<String> {
        lock(&self.fakes.cloud)
            .tenant(name)
            .map(|t| t.id.to_string())
    }

    /// The state folder of this run.
    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// The parts of the fakes a cluster needs.
    pub fn view(&self) -> FakesView {
        FakesView {
            cloud: self.fakes.cloud.clone(),
            endpoints: self.fakes.endpoints.clone(),
            ca_file: self.ca_file().to_path_buf(),
        }
    }

    /// An embedded cluster standing in for the AKS cluster `cluster_id`.
    pub fn embedded_cluster(&self, cluster_id: &str) -> Result<EmbeddedCluster, TargetError> {
        embedded_cluster(
            &self.view(),
            cluster_id,
            &self.workload_exe,
            &self.state_dir.path().join("clusters"),
        )
    }
}

/// The model, endpoints and CA file of running fakes, cheap to clone.
#[derive(Clone, Debug)]
pub struct FakesView {
    pub cloud: SharedCloud,
    pub endpoints: Arc<Endpoints>,
    pub ca_file: PathBuf,
}

/// The AKS cluster `cluster_id` as the fake cloud models it: its name, tenant, issuer URL and
/// the issuer's signing key.
pub(crate) struct ClusterIdentity {
    pub name: String,
    pub tenant_id: String,
    pub issuer_url: String,
    pub signing_key: Arc<xtenant_fakes::crypto::SigningKey>,
}

pub(crate) fn cluster_identity(
    cloud: &SharedCloud,
    cluster_id: &str,
) -> Result<ClusterIdentity, TargetError> {
    let cloud = lock(cloud);
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
    Ok(ClusterIdentity {
        name: id.name().to_owned(),
        tenant_id: cluster.tenant.to_string(),
        issuer_url,
        signing_key: issuer.active_key().clone(),
    })
}

/// An embedded cluster standing in for the AKS cluster `cluster_id`: its issuer and key sign
/// the projected tokens, and its tenant is the webhook's default tenant.
pub fn embedded_cluster(
    fakes: &FakesView,
    cluster_id: &str,
    workload_exe: &Path,
    clusters_dir: &Path,
) -> Result<EmbeddedCluster, TargetError> {
    let identity = cluster_identity(&fakes.cloud, cluster_id)?;
    let endpoints = &fakes.endpoints;
    let cloud = fakes.cloud.clone();
    let state_dir = clusters_dir.join(&identity.name);
    std::fs::create_dir_all(&state_dir)?;
    let config = EmbeddedConfig {
        cluster_name: identity.name,
        default_tenant_id: identity.tenant_id,
        authority_host: format!("{}/", endpoints.login),
        issuer_url: identity.issuer_url,
        signing_key: identity.signing_key,
        workload_exe: workload_exe.to_path_buf(),
        extra_env: vec![
            ("SSL_CERT_FILE".into(), fakes.ca_file.display().to_string()),
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
