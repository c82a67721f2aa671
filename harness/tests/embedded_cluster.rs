//! The embedded cluster runs Jobs as processes with the workload identity webhook's env and a
//! projected token signed by the cluster issuer's key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use xtenant_fakes::crypto::{SigningKey, pooled_key};
use xtenant_fakes::jwt::DecodedJwt;
use xtenant_harness::cluster::{
    ClusterError, EmbeddedCluster, EmbeddedConfig, ImageMapping, JobConditionType,
};

const TENANT_A: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const TENANT_B: &str = "bbbbbbbb-0000-0000-0000-00000000000b";
const CLIENT_ID: &str = "cccccccc-0000-0000-0000-00000000000c";
const ISSUER: &str = "https://127.0.0.1:9443/tenant-a/cluster-a/";
const WAIT: Duration = Duration::from_secs(20);

/// A state directory removed when the test ends.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("xtenant-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Model clock: real time plus an offset in seconds that tests advance.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicI64>);

impl TestClock {
    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

fn shell(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

fn cluster(state: &Path, key: Arc<SigningKey>, clock: TestClock) -> EmbeddedCluster {
    let config = EmbeddedConfig {
        cluster_name: "aks-a".into(),
        default_tenant_id: TENANT_A.into(),
        authority_host: "https://127.0.0.1:8443".into(),
        issuer_url: ISSUER.into(),
        signing_key: key,
        workload_exe: PathBuf::from("/nonexistent/xtenant"),
        extra_images: vec![
            ImageMapping {
                repository: "example.com/env-printer".into(),
                argv: shell("env; echo TOKEN=$(cat \"$AZURE_FEDERATED_TOKEN_FILE\")"),
            },
            ImageMapping {
                repository: "example.com/failer".into(),
                argv: shell("echo attempt failed; exit 3"),
            },
            ImageMapping {
                repository: "example.com/sleeper".into(),
                argv: shell("sleep 30"),
            },
        ],
        extra_env: vec![("XTENANT_CA_FILE".into(), "/tmp/ca.pem".into())],
        state_dir: state.to_owned(),
        clock: Arc::new(move || {
            OffsetDateTime::now_utc() + time::Duration::seconds(clock.0.load(Ordering::SeqCst))
        }),
    };
    EmbeddedCluster::new(config).unwrap()
}

fn service_account(annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: workload\n  namespace: apps\n  \
         annotations:\n{annotations}"
    )
}

fn job(name: &str, image: &str, labelled: bool, extra_spec: &str) -> String {
    let label = if labelled {
        "      labels:\n        azure.workload.identity/use: \"true\"\n"
    } else {
        "      labels: {}\n"
    };
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n\
         {extra_spec}  template:\n    metadata:\n{label}    spec:\n      serviceAccountName: workload\n      \
         restartPolicy: Never\n      containers:\n        - name: main\n          image: {image}\n"
    )
}

fn log_value<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
}

#[tokio::test]
async fn job_gets_webhook_env_and_token() {
    let state = StateDir::new();
    let key = pooled_key(0);
    let mut cluster = cluster(&state.0, key.clone(), TestClock::default());
    let manifest = format!(
        "{}---\n{}",
        service_account(&format!(
            "    azure.workload.identity/client-id: \"{CLIENT_ID}\"\n    \
             azure.workload.identity/tenant-id: \"{TENANT_B}\"\n"
        )),
        job("printer", "example.com/env-printer:1.0", true, "")
    );

    let lines = cluster.apply(&manifest).await.unwrap();
    let status = cluster
        .wait_job("printer", "apps", JobConditionType::Complete, WAIT)
        .await
        .unwrap();
    let log = cluster.logs("job/printer", "apps").await.unwrap();

    assert_eq!(
        lines,
        [
            "serviceaccount/workload created",
            "job.batch/printer created"
        ]
    );
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(log_value(&log, "AZURE_CLIENT_ID"), Some(CLIENT_ID));
    assert_eq!(log_value(&log, "AZURE_TENANT_ID"), Some(TENANT_B));
    assert_eq!(
        log_value(&log, "AZURE_AUTHORITY_HOST"),
        Some("https://127.0.0.1:8443/")
    );
    assert_eq!(log_value(&log, "XTENANT_CA_FILE"), Some("/tmp/ca.pem"));

    let pod = cluster.job_pods("printer", "apps").pop().unwrap();
    assert!(pod.starts_with("printer-"), "{pod}");
    let token_file = state
        .0
        .join("pods")
        .join(&pod)
        .join("var/run/secrets/azure/tokens/azure-identity-token");
    assert_eq!(
        log_value(&log, "AZURE_FEDERATED_TOKEN_FILE"),
        Some(token_file.to_str().unwrap())
    );
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);

    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(log_value(&log, "TOKEN"), Some(token.as_str()));
    let decoded = DecodedJwt::decode(&token).unwrap();
    assert_eq!(decoded.verify(&[key.verifier()]), Ok(()));
    assert_eq!(
        decoded.claim_str("sub"),
        Some("system:serviceaccount:apps:workload")
    );
    assert_eq!(decoded.claim_str("iss"), Some(ISSUER));
    assert_eq!(decoded.audiences(), ["api://AzureADTokenExchange"]);
    let lifetime = decoded.claim_time("exp").unwrap() - decoded.claim_time("iat").unwrap();
    assert_eq!(lifetime, 3600);
    assert_eq!(decoded.claims["kubernetes.io"]["pod"]["name"], pod.as_str());
}

#[tokio::test]
async fn absent_tenant_annotation_uses_cluster_tenant() {
    let state = StateDir::new();
    let mut cluster = cluster(&state.0, pooled_key(0), TestClock::default());
    let manifest = format!(
        "{}---\n{}",
        service_account(&format!(
            "    azure.workload.identity/client-id: \"{CLIENT_ID}\"\n"
        )),
        job("printer", "example.com/env-printer", true, "")
    );

    cluster.apply(&manifest).await.unwrap();
    cluster
        .wait_job("printer", "apps", JobConditionType::Complete, WAIT)
        .await
        .unwrap();
    let log = cluster.job_logs("printer", "apps").unwrap();

    assert_eq!(log_value(&log, "AZURE_TENANT_ID"), Some(TENANT_A));
}

#[tokio::test]
async fn unlabelled_pod_gets_no_identity() {
    let state = StateDir::new();
    let mut cluster = cluster(&state.0, pooled_key(0), TestClock::default());
    let manifest = format!(
        "{}---\n{}",
        service_account(&format!(
            "    azure.workload.identity/client-id: \"{CLIENT_ID}\"\n"
        )),
        job("plain", "example.com/env-printer", false, "")
    );

    cluster.apply(&manifest).await.unwrap();
    cluster
        .wait_job("plain", "apps", JobConditionType::Complete, WAIT)
        .await
        .unwrap();
    let log = cluster.job_logs("plain", "apps").unwrap();
    let pod = cluster.job_pods("plain", "apps").pop().unwrap();
    let description = cluster.describe_pod(&pod, "apps").await.unwrap();

    assert_eq!(log_value(&log, "AZURE_CLIENT_ID"), None);
    assert_eq!(log_value(&log, "AZURE_FEDERATED_TOKEN_FILE"), None);
    assert!(
        !description.contains("azure-identity-token"),
        "{description}"
    );
}

#[tokio::test]
async fn failing_job_exhausts_backoff_limit() {
    let state = StateDir::new();
    let mut cluster = cluster(&state.0, pooled_key(0), TestClock::default());
    let manifest = format!(
        "{}---\n{}",
        service_account("    {}\n"),
        job("failer", "example.com/failer", true, "  backoffLimit: 2\n")
    );

    cluster.apply(&manifest).await.unwrap();
    let status = cluster
        .wait_job("failer", "apps", JobConditionType::Failed, WAIT)
        .await
        .unwrap();
    let complete = cluster
        .wait_job("failer", "apps", JobConditionType::Complete, WAIT)
        .await;
    let log = cluster.job_logs("failer", "apps").unwrap();

    assert_eq!(status.failed, Some(3));
    assert_eq!(cluster.job_pods("failer", "apps").len(), 3);
    let failed = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert!(matches!(
        complete,
        Err(ClusterError::JobFinishedOtherwise { .. })
    ));
    assert_eq!(log, "attempt failed\n");
}

#[tokio::test]
async fn missing_service_account_blocks_until_applied() {
    let state = StateDir::new();
    let mut cluster = cluster(&state.0, pooled_key(0), TestClock::default());

    cluster
        .apply(&job("early", "example.com/env-printer", true, ""))
        .await
        .unwrap();
    let waited = cluster
        .wait_job(
            "early",
            "apps",
            JobConditionType::Complete,
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
    cluster.apply(&service_account("    {}\n")).await.unwrap();
    let status = cluster
        .wait_job("early", "apps", JobConditionType::Complete, WAIT)
        .await;

    let message = waited.to_string();
    assert!(matches!(waited, ClusterError::Timeout { .. }), "{message}");
    assert!(
        message.contains(
            "is forbidden: error looking up service account apps/workload: \
             serviceaccount \"workload\" not found"
        ),
        "{message}"
    );
    assert_eq!(status.unwrap().succeeded, Some(1));
}

#[tokio::test]
async fn invalid_token_expiration_rejects_pod() {
    let state = StateDir::new();
    let mut cluster = cluster(&state.0, pooled_key(0), TestClock::default());
    cluster.apply(&service_account("    {}\n")).await.unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: short\n  namespace: apps\n  labels:\n    \
               azure.workload.identity/use: \"true\"\n  annotations:\n    \
               azure.workload.identity/service-account-token-expiration: \"600\"\nspec:\n  \
               serviceAccountName: workload\n  containers:\n    - name: main\n      \
               image: example.com/env-printer\n";

    let error = cluster.apply(pod).await.unwrap_err();

    assert_eq!(
        error.to_string(),
        "admission webhook \"mutation.azure-workload-identity.io\" denied the request: \
         token expiration 600 not valid. Expected value to be between 3600 and 86400"
    );
    assert!(cluster.pods().is_empty());
}

#[tokio::test]
async fn unknown_image_reports_err_image_pull() {
    let state = StateDir::new();
    let mut cluster = cluster(&state.0, pooled_key(0), TestClock::default());
    let manifest = format!(
        "{}---\n{}",
        service_account("    {}\n"),
        job("unknown", "docker.io/library/nginx:1.27", true, "")
    );

    cluster.apply(&manifest).await.unwrap();
    let error = cluster
        .wait_job("unknown", "apps", JobConditionType::Complete, WAIT)
        .await
        .unwrap_err();

    let message = error.to_string();
    assert!(matches!(error, ClusterError::ImagePull { .. }), "{message}");
    assert!(
        message.contains("docker.io/library/nginx:1.27"),
        "{message}"
    );
    assert!(message.contains("example.com/env-printer"), "{message}");
    assert!(
        message.contains("ghcr.io/azure-samples/aks-app-samples/servicebusdemo"),
        "{message}"
    );
}

#[tokio::test]
async fn token_rotates_after_eighty_percent() {
    let state = StateDir::new();
    let clock = TestClock::default();
    let key = pooled_key(0);
    let mut cluster = cluster(&state.0, key.clone(), clock.clone());
    let manifest = format!(
        "{}---\n{}",
        service_account("    {}\n"),
        job("sleeper", "example.com/sleeper", true, "")
    );
    cluster.apply(&manifest).await.unwrap();
    let token_file = wait_for_token_file(&cluster, &state.0, "sleeper").await;
    let first = std::fs::read_to_string(&token_file).unwrap();

    clock.advance(2000);
    let early = cluster.refresh_tokens().unwrap();
    clock.advance(900);
    let due = cluster.refresh_tokens().unwrap();
    let second = std::fs::read_to_string(&token_file).unwrap();

    assert_eq!(early, 0);
    assert_eq!(due, 1);
    assert_ne!(first, second);
    let first_iat = DecodedJwt::decode(&first)
        .unwrap()
        .claim_time("iat")
        .unwrap();
    let second = DecodedJwt::decode(&second).unwrap();
    assert_eq!(second.verify(&[key.verifier()]), Ok(()));
    assert!(second.claim_time("iat").unwrap() >= first_iat + 2900);
}

async fn wait_for_token_file(cluster: &EmbeddedCluster, state: &Path, job: &str) -> PathBuf {
    for _ in 0..100 {
        if let Some(pod) = cluster.job_pods(job, "apps").pop() {
            let path = state
                .join("pods")
                .join(pod)
                .join("var/run/secrets/azure/tokens/azure-identity-token");
            if path.exists() {
                return path;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the token file of job {job} did not appear within 5 s");
}

#[tokio::test]
async fn describe_shows_mutated_spec() {
    let state = StateDir::new();
    let mut cluster = cluster(&state.0, pooled_key(0), TestClock::default());
    let manifest = format!(
        "{}---\n{}",
        service_account(&format!(
            "    azure.workload.identity/client-id: \"{CLIENT_ID}\"\n"
        )),
        job("printer", "example.com/env-printer", true, "")
    );
    cluster.apply(&manifest).await.unwrap();
    cluster
        .wait_job("printer", "apps", JobConditionType::Complete, WAIT)
        .await
        .unwrap();
    let pod = cluster.job_pods("printer", "apps").pop().unwrap();

    let description = cluster.describe_pod(&pod, "apps").await.unwrap();

    assert!(
        description.contains(&format!("AZURE_CLIENT_ID:             {CLIENT_ID}")),
        "{description}"
    );
    assert!(
        description.contains(
            "AZURE_FEDERATED_TOKEN_FILE:  /var/run/secrets/azure/tokens/azure-identity-token"
        ),
        "{description}"
    );
    assert!(
        description.contains("/var/run/secrets/azure/tokens from azure-identity-token (ro)"),
        "{description}"
    );
    assert!(
        description.contains("TokenExpirationSeconds:  3600"),
        "{description}"
    );
    assert!(
        description.contains("Status:           Succeeded"),
        "{description}"
    );
    assert!(!description.contains("XTENANT_CA_FILE"), "{description}");
}

#[tokio::test]
async fn config_map_reference_resolves() {
    let state = StateDir::new();
    let mut cluster = cluster(&state.0, pooled_key(0), TestClock::default());
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: apps}}\n\
         data: {{queue: myqueue}}\n---\n{}---\n{}          env:\n            - name: QUEUE_NAME\n              \
         valueFrom:\n                configMapKeyRef: {{name: settings, key: queue}}\n",
        service_account("    {}\n"),
        job("printer", "example.com/env-printer", true, "")
    );

    let lines = cluster.apply(&manifest).await.unwrap();
    cluster
        .wait_job("printer", "apps", JobConditionType::Complete, WAIT)
        .await
        .unwrap();
    let log = cluster.job_logs("printer", "apps").unwrap();
    let again = cluster.apply(&manifest).await.unwrap();

    assert_eq!(lines[0], "configmap/settings created");
    assert_eq!(log_value(&log, "QUEUE_NAME"), Some("myqueue"));
    assert_eq!(
        again,
        [
            "configmap/settings unchanged",
            "serviceaccount/workload unchanged",
            "job.batch/printer unchanged"
        ]
    );
}
