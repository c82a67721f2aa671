//! The kind cluster configuration: the API server's service-account issuer is the fake
//! issuer's URL, and its signing and verification keys are the fake issuer's key pair,
//! mounted into the control-plane node.
//!
//! Flags are kube-apiserver's `--service-account-issuer`, `--service-account-key-file` and
//! `--service-account-signing-key-file`, and kube-controller-manager's
//! `--service-account-private-key-file`, set through a kubeadm `ClusterConfiguration` patch.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Node image of the cluster unless `--kind-node-image` names another.
pub const DEFAULT_NODE_IMAGE: &str = "kindest/node:v1.35.1";
/// Where the node sees the verification key (kubeadm's default service-account key path).
pub const NODE_PUBLIC_KEY_PATH: &str = "/etc/kubernetes/pki/sa.pub";
/// Where the node sees the signing key.
pub const NODE_PRIVATE_KEY_PATH: &str = "/etc/kubernetes/pki/sa.key";

/// Writes DER as PEM with 64-character lines, the layout OpenSSL and Go's `encoding/pem` write.
pub fn pem(label: &str, der: &[u8]) -> String {
    let encoded = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// Renders the kind `Cluster` config for one control-plane node.
///
/// The patch uses kubeadm's `v1beta4` API, where `extraArgs` is a list of `name`/`value`
/// pairs; kind uses that API for Kubernetes 1.31 and newer.
// NOTE: checked against the kubeadm v1beta4 field layout, not yet against a kind release in
// this repository's CI; an older node image (kubeadm v1beta3) needs `extraArgs` as a map.
pub fn render(
    cluster_name: &str,
    node_image: &str,
    issuer_url: &str,
    public_key_file: &Path,
    private_key_file: &Path,
) -> String {
    format!(
        r#"kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {cluster_name}
nodes:
  - role: control-plane
    image: {node_image}
    extraMounts:
      - hostPath: {public}
        containerPath: {NODE_PUBLIC_KEY_PATH}
        readOnly: true
      - hostPath: {private}
        containerPath: {NODE_PRIVATE_KEY_PATH}
        readOnly: true
    kubeadmConfigPatches:
      - |
        apiVersion: kubeadm.k8s.io/v1beta4
        kind: ClusterConfiguration
        apiServer:
          extraArgs:
            - name: service-account-issuer
              value: "{issuer_url}"
            - name: service-account-key-file
              value: {NODE_PUBLIC_KEY_PATH}
            - name: service-account-signing-key-file
              value: {NODE_PRIVATE_KEY_PATH}
        controllerManager:
          extraArgs:
            - name: service-account-private-key-file
              value: {NODE_PRIVATE_KEY_PATH}
"#,
        public = public_key_file.display(),
        private = private_key_file.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_wraps_at_64_characters() {
        let text = pem("PUBLIC KEY", &[7u8; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PUBLIC KEY-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END PUBLIC KEY-----"));
        let body: String = lines[1..lines.len() - 1].concat();
        assert_eq!(STANDARD.decode(body).unwrap(), vec![7u8; 100]);
    }
}
