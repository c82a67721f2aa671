//! The kind backend without Docker: the generated kind and kubeadm config, the webhook
//! answering a real AdmissionReview over HTTPS, the pod wiring, and the image build context.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use xtenant_fakes::tls::CertificateAuthority;
use xtenant_harness::cluster::kind::{PodWiring, config};
use xtenant_harness::cluster::webhook::{WebhookConfig, mutation_patch};
use xtenant_harness::cluster::webhook_server::{
    MUTATE_PATH, ServiceAccountLookup, WebhookServer, configuration,
};

#[test]
fn kind_config_sets_issuer_and_keys() {
    let text = config::render(
        "xtenant",
        "kindest/node:v1.35.1",
        "https://172.18.0.1:40003/tenant/guid/",
        Path::new("/state/sa.pub"),
        Path::new("/state/sa.key"),
    );
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(value["kind"], "Cluster");
    assert_eq!(value["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(value["name"], "xtenant");
    let node = &value["nodes"][0];
    assert_eq!(node["role"], "control-plane");
    assert_eq!(node["image"], "kindest/node:v1.35.1");
    assert_eq!(node["extraMounts"][0]["hostPath"], "/state/sa.pub");
    assert_eq!(
        node["extraMounts"][0]["containerPath"],
        "/etc/kubernetes/pki/sa.pub"
    );
    assert_eq!(node["extraMounts"][1]["hostPath"], "/state/sa.key");
    assert_eq!(
        node["extraMounts"][1]["containerPath"],
        "/etc/kubernetes/pki/sa.key"
    );

    let patch: serde_yaml::Value =
        serde_yaml::from_str(node["kubeadmConfigPatches"][0].as_str().unwrap()).unwrap();
    assert_eq!(patch["kind"], "ClusterConfiguration");
    assert_eq!(patch["apiVersion"], "kubeadm.k8s.io/v1beta4");
    let args = |component: &str| -> BTreeMap<String, String> {
        patch[component]["extraArgs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|arg| {
                (
                    arg["name"].as_str().unwrap().to_owned(),
                    arg["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let api_server = args("apiServer");
    assert_eq!(
        api_server["service-account-issuer"],
        "https://172.18.0.1:40003/tenant/guid/"
    );
    assert_eq!(
        api_server["service-account-key-file"],
        "/etc/kubernetes/pki/sa.pub"
    );
    assert_eq!(
        api_server["service-account-signing-key-file"],
        "/etc/kubernetes/pki/sa.key"
    );
    assert_eq!(
        args("controllerManager")["service-account-private-key-file"],
        "/etc/kubernetes/pki/sa.key"
    );
}

#[test]
fn webhook_configuration_selects_labelled_pod_creates() {
    let value = configuration("https://172.18.0.1:9443/mutate-v1-pod", "CA PEM");
    let hook = &value["webhooks"][0];
    assert_eq!(value["kind"], "MutatingWebhookConfiguration");
    assert_eq!(hook["name"], "mutation.azure-workload-identity.io");
    assert_eq!(
        hook["objectSelector"]["matchLabels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(hook["rules"][0]["operations"], json!(["CREATE"]));
    assert_eq!(hook["rules"][0]["resources"], json!(["pods"]));
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["clientConfig"]["caBundle"], STANDARD.encode("CA PEM"));
}

fn labelled_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "generateName": "myproducer-",
            "labels": { "azure.workload.identity/use": "true" },
        },
        "spec": {
            "serviceAccountName": "myserviceaccount",
            "containers": [{ "name": "producer", "image": "servicebusdemo" }],
        },
    }))
    .unwrap()
}

fn service_account() -> ServiceAccount {
    serde_json::from_value(json!({
        "metadata": {
            "name": "myserviceaccount",
            "namespace": "default",
            "annotations": { "azure.workload.identity/client-id": "client-1" },
        },
    }))
    .unwrap()
}

async fn start_server(ca: &CertificateAuthority, config: WebhookConfig) -> WebhookServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = ca.server_config(&["127.0.0.1"]).unwrap();
    let lookup: ServiceAccountLookup = Arc::new(|namespace, name| {
        Box::pin(async move {
            (namespace == "default" && name == "myserviceaccount").then(service_account)
        })
    });
    WebhookServer::start(listener, tls, config, lookup).unwrap()
}

async fn post_review(ca: &CertificateAuthority, server: &WebhookServer, pod: &Pod) -> Value {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "operation": "CREATE",
            "namespace": "default",
            "object": pod,
        },
    });
    client
        .post(format!("https://{}{MUTATE_PATH}", server.address()))
        .json(&review)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn webhook_server_returns_embedded_patch() {
    let ca = CertificateAuthority::generate().unwrap();
    let config = WebhookConfig::new("tenant-a", "https://login.example/");
    let server = start_server(&ca, config.clone()).await;
    let pod = labelled_pod();

    let answer = post_review(&ca, &server, &pod).await;

    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_slice(
        &STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut namespaced = pod.clone();
    namespaced.metadata.namespace = Some("default".into());
    let expected = mutation_patch(&namespaced, &service_account(), &config).unwrap();
    assert_eq!(patch, expected);
    assert!(!expected.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn webhook_server_denies_missing_service_account() {
    let ca = CertificateAuthority::generate().unwrap();
    let server = start_server(&ca, WebhookConfig::new("t", "https://login.example/")).await;
    let mut pod = labelled_pod();
    pod.spec.as_mut().unwrap().service_account_name = Some("missing".into());

    let answer = post_review(&ca, &server, &pod).await;

    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 400);
    assert_eq!(
        answer["response"]["status"]["message"],
        "serviceaccounts \"missing\" not found"
    );
}

#[tokio::test]
async fn webhook_server_allows_unlabelled_pod_unchanged() {
    let ca = CertificateAuthority::generate().unwrap();
    let server = start_server(&ca, WebhookConfig::new("t", "https://login.example/")).await;
    let mut pod = labelled_pod();
    pod.metadata.labels = None;

    let answer = post_review(&ca, &server, &pod).await;

    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
}

#[test]
fn wiring_maps_sample_image_and_trusts_ca() {
    let wiring = PodWiring {
        fakes_address: "172.18.0.1".into(),
        host_names: vec!["login.microsoftonline.com".into()],
        servicebus_endpoint: "amqps://172.18.0.1:5671".into(),
        workload_image: "xtenant-demo:dev".into(),
    };
    let manifest = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n---\n\
apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec:\n      \
containers:\n        - name: c\n          image: ghcr.io/azure-samples/aks-app-samples/servicebusdemo:latest\n";

    let rewritten = wiring.rewrite(manifest).unwrap();

    let documents: Vec<serde_yaml::Value> = rewritten
        .split("---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[0]["kind"], "ServiceAccount");
    assert!(documents[0].get("spec").is_none());
    let spec = &documents[1]["spec"]["template"]["spec"];
    assert_eq!(spec["hostAliases"][0]["ip"], "172.18.0.1");
    assert_eq!(spec["volumes"][0]["configMap"]["name"], "xtenant-ca");
    let container = &spec["containers"][0];
    assert_eq!(container["image"], "xtenant-demo:dev");
    assert_eq!(container["imagePullPolicy"], "Never");
    assert_eq!(container["env"][0]["name"], "SSL_CERT_FILE");
    assert_eq!(container["env"][0]["value"], "/etc/xtenant/ca/ca.pem");
    assert_eq!(container["env"][1]["value"], "amqps://172.18.0.1:5671");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/xtenant/ca");
}

#[test]
fn image_build_context_is_present() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/xtenant", "servicebusdemo"]"#));
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let lines: Vec<&str> = ignore.lines().collect();
    assert!(lines.contains(&"target"));
    assert!(lines.contains(&".git"));
}
