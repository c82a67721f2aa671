//! The K3s backend without Docker: the server's flags, the key files copied into the
//! container, and the kubeconfig rewrite. Starting K3s needs Docker and runs in the nightly
//! workflow, not here. Build with `--features k3s`.
#![cfg(feature = "k3s")]

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use xtenant_fakes::crypto::pooled_key;
use xtenant_harness::cluster::k3s::config::{
    self, CONTAINER_PRIVATE_KEY_PATH, CONTAINER_PUBLIC_KEY_PATH, key_files, rewrite_kubeconfig,
    server_args,
};

const ISSUER: &str = "https://172.18.0.1:40003/tenant/guid/";

/// Returns the `NAME=VALUE` pairs of every `--PREFIX=NAME=VALUE` argument.
fn component_args(args: &[String], prefix: &str) -> BTreeMap<String, String> {
    let flag = format!("--{prefix}=");
    args.iter()
        .filter_map(|arg| arg.strip_prefix(&flag))
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("NAME=VALUE");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

fn pem_body(text: &str, label: &str) -> Vec<u8> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&format!("-----BEGIN {label}-----").as_str())
    );
    assert_eq!(
        lines.last(),
        Some(&format!("-----END {label}-----").as_str())
    );
    STANDARD.decode(lines[1..lines.len() - 1].concat()).unwrap()
}

#[test]
fn server_args_set_issuer_and_keys() {
    let args = server_args(ISSUER);
    assert_eq!(args[0], "server");

    let api_server = component_args(&args, "kube-apiserver-arg");
    assert_eq!(api_server["service-account-issuer"], ISSUER);
    assert_eq!(
        api_server["service-account-key-file"],
        "/etc/xtenant/sa.pub"
    );
    assert_eq!(
        api_server["service-account-signing-key-file"],
        "/etc/xtenant/sa.key"
    );
    assert_eq!(api_server.len(), 3);

    let controller_manager = component_args(&args, "kube-controller-manager-arg");
    assert_eq!(
        controller_manager["service-account-private-key-file"],
        "/etc/xtenant/sa.key"
    );
    assert_eq!(controller_manager.len(), 1);
}

#[test]
fn server_args_point_at_copied_key_files() {
    let files = key_files(&pooled_key(0));
    let copied: Vec<&str> = files.iter().map(|file| file.container_path).collect();
    let args = server_args(ISSUER);
    let api_server = component_args(&args, "kube-apiserver-arg");
    let controller_manager = component_args(&args, "kube-controller-manager-arg");

    for path in [
        &api_server["service-account-key-file"],
        &api_server["service-account-signing-key-file"],
        &controller_manager["service-account-private-key-file"],
    ] {
        assert!(copied.contains(&path.as_str()), "{path} is not copied in");
    }
}

#[test]
fn key_files_hold_issuer_key_pair() {
    let key = pooled_key(0);
    let [public, private] = key_files(&key);

    assert_eq!(public.container_path, CONTAINER_PUBLIC_KEY_PATH);
    let public_text = String::from_utf8(public.contents).unwrap();
    assert_eq!(pem_body(&public_text, "PUBLIC KEY"), key.public_key_der());

    assert_eq!(private.container_path, CONTAINER_PRIVATE_KEY_PATH);
    let private_text = String::from_utf8(private.contents).unwrap();
    assert_eq!(
        pem_body(&private_text, "PRIVATE KEY"),
        key.private_key_pkcs8_der()
    );
}

/// A kubeconfig in the layout K3s writes to /etc/rancher/k3s/k3s.yaml.
const K3S_KUBECONFIG: &str = r#"apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Y2EtZGF0YQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
"#;

#[test]
fn kubeconfig_points_at_mapped_port() {
    let text = rewrite_kubeconfig(K3S_KUBECONFIG, "localhost", 32771).unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();

    let cluster = &value["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], "https://localhost:32771");
    assert_eq!(cluster["certificate-authority-data"], "Y2EtZGF0YQ==");
    assert_eq!(value["current-context"], "default");
    assert_eq!(value["users"][0]["user"]["client-key-data"], "a2V5");
}

#[test]
fn kubeconfig_keeps_ipv6_brackets() {
    let text = rewrite_kubeconfig(K3S_KUBECONFIG, "[::1]", 32771).unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();

    assert_eq!(
        value["clusters"][0]["cluster"]["server"],
        "https://[::1]:32771"
    );
}

#[test]
fn kubeconfig_without_clusters_is_rejected() {
    let error = rewrite_kubeconfig("apiVersion: v1\nkind: Config\n", "localhost", 1).unwrap_err();

    assert!(error.to_string().contains("no clusters"), "{error}");
}

#[test]
fn default_image_is_pinned() {
    let (name, tag) = config::split_image(config::DEFAULT_IMAGE).unwrap();

    assert_eq!(name, "rancher/k3s");
    assert_ne!(tag, "latest");
}
