//! Starts every fake on loopback, behind TLS with a CA made for the run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::info;

use crate::arm::ArmResponder;
use crate::cloud::{Cloud, SharedCloud};
use crate::entra::EntraResponder;
use crate::http::HttpsFake;
use crate::issuer::IssuerResponder;
use crate::servicebus::ServiceBusServer;
use crate::tls::{CertificateAuthority, FAKE_HOST_NAMES, TlsError};

/// Where each fake listens. URLs have no trailing slash.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// Azure Resource Manager, e.g. `https://127.0.0.1:40001`.
    pub arm: String,
    /// Entra ID authority host, e.g. `https://127.0.0.1:40002`.
    pub login: String,
    /// Base of the cluster OIDC issuers; each cluster's issuer is a path below it.
    pub issuer: String,
    /// Service Bus AMQP over TLS (what port 5671 is on Azure).
    pub servicebus_tls: SocketAddr,
    /// Service Bus plain AMQP, for clients that cannot be pointed at a CA.
    pub servicebus_plain: SocketAddr,
}

/// Settings for [`Fakes::start`].
#[derive(Clone, Debug)]
pub struct FakesConfig {
    /// Scenario names of the tenants to create (`a`, `b`).
    pub tenants: Vec<String>,
    /// Address every fake binds to; loopback unless a caller needs the fakes reachable from
    /// elsewhere (a kind cluster on the Docker bridge).
    pub bind: IpAddr,
    /// Folder for the CA file; a temporary folder removed on drop when `None`.
    pub state_dir: Option<PathBuf>,
}

impl Default for FakesConfig {
    fn default() -> Self {
        Self {
            tenants: vec!["a".into(), "b".into()],
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            state_dir: None,
        }
    }
}

/// Why the fakes could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("failed to bind or start a fake on {bind}: {source}")]
    Io {
        bind: IpAddr,
        source: std::io::Error,
    },
    #[error("failed to write the CA certificate to {path}: {source}")]
    WriteCa {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running set of fakes over one cloud model. Dropping it stops them.
pub struct Fakes {
    pub cloud: SharedCloud,
    pub endpoints: Arc<Endpoints>,
    pub arm: HttpsFake,
    pub entra: HttpsFake,
    pub issuer: HttpsFake,
    pub servicebus: ServiceBusServer,
    pub servicebus_plain: ServiceBusServer,
    ca: CertificateAuthority,
    ca_file: PathBuf,
    _temp_dir: Option<tempfile::TempDir>,
}

impl Fakes {
    /// Starts ARM, Entra ID, the cluster issuer and Service Bus on `config.bind`, each on a
    /// port the OS picks.
    pub async fn start(config: FakesConfig) -> Result<Self, StartError> {
        let bind = config.bind;
        let io = |source| StartError::Io { bind, source };
        let names: Vec<&str> = config.tenants.iter().map(String::as_str).collect();
        let cloud: SharedCloud = Arc::new(Mutex::new(Cloud::with_tenants(&names)));

        let ca = CertificateAuthority::generate()?;
        let bind_text = bind.to_string();
        let mut hosts: Vec<&str> = FAKE_HOST_NAMES.to_vec();
        if !hosts.contains(&bind_text.as_str()) {
            hosts.push(&bind_text);
        }
        let tls = ca.server_config(&hosts)?;

        let (arm_listener, arm_address) = HttpsFake::bind(bind, 0).await.map_err(io)?;
        let (entra_listener, entra_address) = HttpsFake::bind(bind, 0).await.map_err(io)?;
        let (issuer_listener, issuer_address) = HttpsFake::bind(bind, 0).await.map_err(io)?;
        let servicebus =
            ServiceBusServer::start(cloud.clone(), Some(tls.clone()), SocketAddr::new(bind, 0))
                .await
                .map_err(io)?;
        let servicebus_plain = servicebus
            .start_sibling(None, SocketAddr::new(bind, 0))
            .await
            .map_err(io)?;
        let endpoints = Arc::new(Endpoints {
            arm: crate::http::https_url(arm_address),
            login: crate::http::https_url(entra_address),
            issuer: crate::http::https_url(issuer_address),
            servicebus_tls: servicebus.local_addr(),
            servicebus_plain: servicebus_plain.local_addr(),
        });

        let arm = HttpsFake::serve(
            arm_listener,
            tls.clone(),
            ArmResponder::new(cloud.clone(), endpoints.clone()),
            "arm",
        )
        .await
        .map_err(io)?;
        let entra = HttpsFake::serve(
            entra_listener,
            tls.clone(),
            EntraResponder::new(cloud.clone(), endpoints.clone()),
            "entra",
        )
        .await
        .map_err(io)?;
        let issuer = HttpsFake::serve(
            issuer_listener,
            tls,
            IssuerResponder::new(cloud.clone()),
            "issuer",
        )
        .await
        .map_err(io)?;

        let (state_dir, temp_dir) = match config.state_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("xtenant-")
                    .tempdir()
                    .map_err(io)?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&state_dir).map_err(io)?;
        let ca_file = state_dir.join("ca.pem");
        ca.write_ca(&ca_file)
            .map_err(|source| StartError::WriteCa {
                path: ca_file.clone(),
                source,
            })?;

        info!(arm = %endpoints.arm, login = %endpoints.login, issuer = %endpoints.issuer,
            servicebus = %endpoints.servicebus_tls, "fakes started");
        Ok(Self {
            cloud,
            endpoints,
            arm,
            entra,
            issuer,
            servicebus,
            servicebus_plain,
            ca,
            ca_file,
            _temp_dir: temp_dir,
        })
    }

    /// The CA certificate file clients must trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }
}
