//! A certificate authority made per run, leaf certificates for the fakes' host names, and TLS
//! termination in front of the HTTP fakes.
//!
//! Clients trust the fakes by trusting the CA file: `REQUESTS_CA_BUNDLE` for the Azure CLI and
//! the Python SDKs, `SSL_CERT_FILE` for Rust programs that use rustls with platform roots.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, debug_span};

/// Host names every leaf certificate covers: loopback, and the public Azure host names that
/// clients keep as TLS server names while their traffic is routed to the fakes.
pub const FAKE_HOST_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "login.microsoftonline.com",
    "management.azure.com",
    "*.servicebus.windows.net",
    "*.oic.prod-aks.azure.com",
];

/// Failure to make or use the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to generate a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("failed to build the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A CA generated for one run; its private key never leaves memory.
pub struct CertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a self-signed CA with an ECDSA P-256 key.
    pub fn generate() -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "xtenant fake CA");
        name.push(DnType::OrganizationName, "xtenant");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// Returns the CA certificate in PEM, for clients to trust.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_ca(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.ca_pem())
    }

    /// Builds a rustls server configuration with a leaf certificate for `hosts` (DNS names, wildcards
    /// or IP addresses), signed by this CA.
    pub fn server_config(&self, hosts: &[&str]) -> Result<Arc<ServerConfig>, TlsError> {
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("localhost"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let leaf = params.signed_by(&key, &self.issuer)?;
        let chain = vec![
            leaf.der().clone(),
            CertificateDer::from(self.issuer.der().to_vec()),
        ];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, private)?;
        Ok(Arc::new(config))
    }
}

/// Accepts TLS on `listener` and relays the decrypted bytes to `upstream`, a plain HTTP server
/// on loopback. Runs until the task is dropped.
pub async fn terminate_tls(listener: TcpListener, config: Arc<ServerConfig>, upstream: SocketAddr) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%error, "failed to accept a TLS connection");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let span = debug_span!("tls", %peer, %upstream);
        tokio::spawn(
            async move {
                if let Err(error) = relay(acceptor, stream, upstream).await {
                    debug!(%error, "TLS connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}

async fn relay(acceptor: TlsAcceptor, stream: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut tls = acceptor.accept(stream).await?;
    let mut plain = TcpStream::connect(upstream).await?;
    plain.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut tls, &mut plain).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_config_builds_for_fake_hosts() {
        let ca = CertificateAuthority::generate().unwrap();
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        ca.server_config(FAKE_HOST_NAMES).unwrap();
    }
}
