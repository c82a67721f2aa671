//! The K3s server's command line, the files copied into its container, and the kubeconfig
//! K3s writes.
//!
//! K3s passes `--kube-apiserver-arg=NAME=VALUE` to kube-apiserver as `--NAME=VALUE` and
//! `--kube-controller-manager-arg` likewise, replacing the value K3s would set itself. The
//! flags are the ones a self-managed workload-identity cluster sets: kube-apiserver's
//! `--service-account-issuer`, `--service-account-key-file` and
//! `--service-account-signing-key-file`, and kube-controller-manager's
//! `--service-account-private-key-file`.

use serde_yaml::Value;
use xtenant_fakes::crypto::SigningKey;

use super::K3sError;
use crate::cluster::kind::config::pem;

/// Image of the K3s container unless `--k3s-image` names another.
// NOTE: the tag matches the kind node image's Kubernetes version. No `cargo test` pulls it, so
// only the nightly K3s job shows that the tag exists.
pub const DEFAULT_IMAGE: &str = "rancher/k3s:v1.35.1-k3s1";
/// The API server's port inside the container.
pub const API_SERVER_PORT: u16 = 6443;
/// Path of the verification key in the container.
pub const CONTAINER_PUBLIC_KEY_PATH: &str = "/etc/xtenant/sa.pub";
/// Path of the signing key in the container.
pub const CONTAINER_PRIVATE_KEY_PATH: &str = "/etc/xtenant/sa.key";
/// The admin kubeconfig K3s writes, with the server at `https://127.0.0.1:6443`.
pub const CONTAINER_KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";
/// Path of the workload image tarball in the container. K3s imports every tarball in
/// `/var/lib/rancher/k3s/agent/images/` into containerd when it starts (its air-gap install).
pub const CONTAINER_WORKLOAD_IMAGE_PATH: &str =
    "/var/lib/rancher/k3s/agent/images/xtenant-workload.tar";
/// Line that K3s logs on stderr when its embedded flannel has synced with the node controller.
/// The node becomes Ready soon after, which the backend then waits for.
pub const READY_LOG_LINE: &str = "Node controller sync successful";

/// A file copied into the container before K3s starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFile {
    pub container_path: &'static str,
    pub contents: Vec<u8>,
}

/// Returns the issuer's key pair as PEM files at [`CONTAINER_PUBLIC_KEY_PATH`] and
/// [`CONTAINER_PRIVATE_KEY_PATH`], the same encoding the kind backend mounts.
pub fn key_files(signing_key: &SigningKey) -> [ContainerFile; 2] {
    [
        ContainerFile {
            container_path: CONTAINER_PUBLIC_KEY_PATH,
            contents: pem("PUBLIC KEY", signing_key.public_key_der()).into_bytes(),
        },
        ContainerFile {
            container_path: CONTAINER_PRIVATE_KEY_PATH,
            contents: pem("PRIVATE KEY", &signing_key.private_key_pkcs8_der()).into_bytes(),
        },
    ]
}

/// Returns the container command: `server` and its flags.
///
/// Traefik and metrics-server are disabled because scenarios use neither, and they would take
/// memory and start-up time from the CI runner.
pub fn server_args(issuer_url: &str) -> Vec<String> {
    vec![
        "server".to_owned(),
        "--disable=traefik".to_owned(),
        "--disable=metrics-server".to_owned(),
        format!("--kube-apiserver-arg=service-account-issuer={issuer_url}"),
        format!("--kube-apiserver-arg=service-account-key-file={CONTAINER_PUBLIC_KEY_PATH}"),
        format!(
            "--kube-apiserver-arg=service-account-signing-key-file={CONTAINER_PRIVATE_KEY_PATH}"
        ),
        format!(
            "--kube-controller-manager-arg=service-account-private-key-file={CONTAINER_PRIVATE_KEY_PATH}"
        ),
    ]
}

/// Splits an image reference `NAME[:TAG][@DIGEST]` into the name and what follows the tag's
/// colon, which testcontainers joins back with `:`. A reference without tag or digest gets
/// `latest`, as Docker does. A digest without a tag is rejected, because testcontainers always
/// puts a colon after the name.
pub fn split_image(reference: &str) -> Result<(&str, &str), K3sError> {
    let name_end = reference.find('@').unwrap_or(reference.len());
    let tag_colon = reference[..name_end]
        .rfind(':')
        .filter(|&colon| !reference[colon + 1..name_end].contains('/'));
    match tag_colon {
        Some(colon) => Ok((&reference[..colon], &reference[colon + 1..])),
        None if name_end == reference.len() => Ok((reference, "latest")),
        None => Err(K3sError::ImageWithoutTag {
            image: reference.to_owned(),
        }),
    }
}

/// Points every cluster of the kubeconfig K3s wrote at `https://HOST:PORT`, where the host
/// reaches the container's API server port. `host` is as it goes into a URL, so an IPv6
/// address comes in brackets.
pub fn rewrite_kubeconfig(text: &str, host: &str, port: u16) -> Result<String, K3sError> {
    let invalid = |problem: String| K3sError::Kubeconfig { problem };
    let mut config: Value = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let clusters = config
        .get_mut("clusters")
        .and_then(Value::as_sequence_mut)
        .filter(|clusters| !clusters.is_empty())
        .ok_or_else(|| invalid("it lists no clusters".to_owned()))?;
    for entry in clusters {
        let cluster = entry
            .get_mut("cluster")
            .and_then(Value::as_mapping_mut)
            .ok_or_else(|| invalid("a cluster entry has no `cluster` mapping".to_owned()))?;
        cluster.insert("server".into(), format!("https://{host}:{port}").into());
    }
    Ok(serde_yaml::to_string(&config).expect("YAML values serialize"))
}
