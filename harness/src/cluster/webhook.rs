//! The azure-workload-identity mutating webhook (`mutation.azure-workload-identity.io`) as a
//! pure function over a pod and its service account.
//!
//! The rules follow the webhook's v1.5 layout, which AKS documents: the token is mounted at
//! `/var/run/secrets/azure/tokens`. The proxy sidecar (`inject-proxy-sidecar`) and the v1.6
//! custom token endpoint are not modelled.

use std::collections::{BTreeMap, HashSet};
use std::num::IntErrorKind;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, ProjectedVolumeSource, ServiceAccount, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use serde_json::{Value, json};

/// Name of the webhook in the MutatingWebhookConfiguration, as admission errors quote it.
pub const WEBHOOK_NAME: &str = "mutation.azure-workload-identity.io";
/// Pod label that the webhook's `objectSelector` matches with the exact value `"true"`.
pub const USE_LABEL: &str = "azure.workload.identity/use";
/// Service account annotation whose value becomes `AZURE_CLIENT_ID`.
pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// Service account annotation whose value becomes `AZURE_TENANT_ID`.
pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
/// Service account or pod annotation with the projected token lifetime in seconds.
pub const TOKEN_EXPIRATION_ANNOTATION: &str =
    "azure.workload.identity/service-account-token-expiration";
/// Pod annotation listing containers to leave alone, separated by `;`.
pub const SKIP_CONTAINERS_ANNOTATION: &str = "azure.workload.identity/skip-containers";

pub const CLIENT_ID_ENV: &str = "AZURE_CLIENT_ID";
pub const TENANT_ID_ENV: &str = "AZURE_TENANT_ID";
pub const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";
pub const AUTHORITY_HOST_ENV: &str = "AZURE_AUTHORITY_HOST";

/// Name of the injected projected volume, of its mount, and of the token file inside it.
pub const TOKEN_VOLUME_NAME: &str = "azure-identity-token";
/// Directory where the webhook mounts the token volume (webhook v1.5 and earlier).
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/azure/tokens";
/// Value of `AZURE_FEDERATED_TOKEN_FILE`.
pub const TOKEN_FILE_PATH: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
/// Audience of the projected token, the value Entra ID expects in federated credentials.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Token lifetime when no annotation sets one, in seconds.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// Shortest lifetime the webhook accepts, in seconds.
pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// Longest lifetime the webhook accepts, in seconds.
pub const MAX_TOKEN_EXPIRATION_SECONDS: i64 = 86400;

/// Settings the webhook reads from its `azure-wi-webhook-config` ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `AZURE_TENANT_ID` of the webhook: the cluster's tenant on AKS. Injected when the
    /// service account has no tenant-id annotation.
    pub default_tenant_id: String,
    /// Entra ID authority injected as `AZURE_AUTHORITY_HOST`. A trailing slash is added when
    /// missing, because the webhook injects the cloud's endpoint with one.
    pub authority_host: String,
    /// Audience of the projected token (`--audience` flag of the webhook).
    pub audience: String,
}

impl WebhookConfig {
    /// Creates a config for the given tenant and authority with the default audience.
    pub fn new(default_tenant_id: impl Into<String>, authority_host: impl Into<String>) -> Self {
        Self {
            default_tenant_id: default_tenant_id.into(),
            authority_host: authority_host.into(),
            audience: DEFAULT_AUDIENCE.to_owned(),
        }
    }

    fn authority_host_with_slash(&self) -> String {
        if self.authority_host.ends_with('/') {
            self.authority_host.clone()
        } else {
            format!("{}/", self.authority_host)
        }
    }
}

/// A webhook denial of a pod. The messages are the webhook's own, and the API server prefixes
/// them with `admission webhook "mutation.azure-workload-identity.io" denied the request: `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The token expiration annotation is an integer outside 3600..=86400 seconds.
    #[error("token expiration {0} not valid. Expected value to be between 3600 and 86400")]
    InvalidTokenExpiration(i64),
    /// The token expiration annotation is not a base-10 integer; the text is Go's
    /// `strconv.ParseInt` error, which the webhook returns unchanged.
    #[error("strconv.ParseInt: parsing {value:?}: {reason}")]
    TokenExpirationNotInteger {
        value: String,
        /// `invalid syntax` or `value out of range`.
        reason: &'static str,
    },
    /// The pod's service account does not exist (HTTP 400 from the webhook).
    #[error("serviceaccounts {name:?} not found")]
    ServiceAccountNotFound { namespace: String, name: String },
}

impl AdmissionError {
    /// Returns the HTTP status the webhook puts in its admission response.
    pub fn http_status(&self) -> u16 {
        400
    }

    /// The message kube-apiserver returns to the creator of the pod.
    pub fn api_server_message(&self) -> String {
        format!("admission webhook \"{WEBHOOK_NAME}\" denied the request: {self}")
    }
}

/// Returns whether the webhook's `objectSelector` selects the pod: the pod itself must carry
/// the label `azure.workload.identity/use: "true"`. A label on the service account does not
/// count.
pub fn selects(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(USE_LABEL))
        .is_some_and(|value| value == "true")
}

/// Runs the webhook's handler as it runs after its own service account lookup: `None` means
/// the lookup failed, which the webhook answers with HTTP 400.
pub fn admit(
    pod: &Pod,
    service_account: Option<&ServiceAccount>,
    config: &WebhookConfig,
) -> Result<Pod, AdmissionError> {
    match service_account {
        Some(service_account) => mutate_pod(pod, service_account, config),
        None => Err(AdmissionError::ServiceAccountNotFound {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: service_account_name(pod).to_owned(),
        }),
    }
}

/// Mutates a selected pod: injects the env vars and token mount into every container and init
/// container not skipped, then adds the projected token volume. The caller checks
/// [`selects`] first, as the API server does with the webhook's `objectSelector`.
pub fn mutate_pod(
    pod: &Pod,
    service_account: &ServiceAccount,
    config: &WebhookConfig,
) -> Result<Pod, AdmissionError> {
    let expiration_seconds = token_expiration(pod, service_account)?;
    let sa_annotations = annotations(&service_account.metadata.annotations);
    let client_id = sa_annotations
        .get(CLIENT_ID_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    // A tenant-id annotation wins even when empty, in which case nothing is injected.
    let tenant_id = sa_annotations
        .get(TENANT_ID_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| config.default_tenant_id.clone());
    let skip = skip_containers(pod);
    let injected = [
        (CLIENT_ID_ENV, client_id),
        (TENANT_ID_ENV, tenant_id),
        (FEDERATED_TOKEN_FILE_ENV, TOKEN_FILE_PATH.to_owned()),
        (AUTHORITY_HOST_ENV, config.authority_host_with_slash()),
    ];

    let mut mutated = pod.clone();
    let Some(spec) = mutated.spec.as_mut() else {
        return Ok(mutated);
    };
    let init_containers = spec.init_containers.iter_mut().flatten();
    for container in init_containers.chain(spec.containers.iter_mut()) {
        if skip.contains(container.name.as_str()) {
            continue;
        }
        add_env(container, &injected);
        add_token_mount(container);
    }
    add_token_volume(&mut spec.volumes, expiration_seconds, &config.audience);
    Ok(mutated)
}

/// Returns the RFC 6902 JSON patch that turns `pod` into its mutated form, which is what the
/// webhook sends back in its admission response.
pub fn mutation_patch(
    pod: &Pod,
    service_account: &ServiceAccount,
    config: &WebhookConfig,
) -> Result<Value, AdmissionError> {
    let mutated = mutate_pod(pod, service_account, config)?;
    let before = serde_json::to_value(pod).expect("a Pod serializes to JSON");
    let after = serde_json::to_value(&mutated).expect("a Pod serializes to JSON");
    let mut operations = Vec::new();
    diff(&before, &after, String::new(), &mut operations);
    Ok(Value::Array(operations))
}

/// Returns the pod's service account name, `default` when the spec names none.
pub fn service_account_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.service_account_name.as_deref())
        .filter(|name| !name.is_empty())
        .unwrap_or("default")
}

/// Reads the token lifetime: the service account annotation, then the pod annotation, which
/// wins. Both are parsed, so an invalid service account value fails even when the pod sets one.
fn token_expiration(pod: &Pod, service_account: &ServiceAccount) -> Result<i64, AdmissionError> {
    let mut seconds = DEFAULT_TOKEN_EXPIRATION_SECONDS;
    let sources = [
        &service_account.metadata.annotations,
        &pod.metadata.annotations,
    ];
    for source in sources {
        if let Some(value) = annotations(source).get(TOKEN_EXPIRATION_ANNOTATION) {
            seconds = parse_go_int(value)?;
        }
    }
    if !(MIN_TOKEN_EXPIRATION_SECONDS..=MAX_TOKEN_EXPIRATION_SECONDS).contains(&seconds) {
        return Err(AdmissionError::InvalidTokenExpiration(seconds));
    }
    Ok(seconds)
}

fn parse_go_int(value: &str) -> Result<i64, AdmissionError> {
    value.parse::<i64>().map_err(|e| {
        let reason = match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        AdmissionError::TokenExpirationNotInteger {
            value: value.to_owned(),
            reason,
        }
    })
}

fn annotations(map: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.clone().unwrap_or_default()
}

fn skip_containers(pod: &Pod) -> HashSet<String> {
    let annotations = annotations(&pod.metadata.annotations);
    let Some(list) = annotations.get(SKIP_CONTAINERS_ANNOTATION) else {
        return HashSet::new();
    };
    list.split(';').map(|name| name.trim().to_owned()).collect()
}

/// Appends each non-empty variable whose name the container's `env` does not already hold.
/// `envFrom` is not consulted, so an injected value overrides a same-named `envFrom` entry.
fn add_env(container: &mut Container, injected: &[(&str, String)]) {
    let env = container.env.get_or_insert_with(Vec::new);
    for (name, value) in injected {
        if value.is_empty() || env.iter().any(|var| var.name == *name) {
            continue;
        }
        env.push(EnvVar {
            name: (*name).to_owned(),
            value: Some(value.clone()),
            value_from: None,
        });
    }
}

fn add_token_mount(container: &mut Container) {
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    if mounts.iter().any(|mount| mount.name == TOKEN_VOLUME_NAME) {
        return;
    }
    mounts.push(VolumeMount {
        name: TOKEN_VOLUME_NAME.to_owned(),
        mount_path: TOKEN_MOUNT_PATH.to_owned(),
        read_only: Some(true),
        ..Default::default()
    });
}

/// Adds the projected token volume unless a projected service account token source with the
/// path `azure-identity-token` already exists.
fn add_token_volume(volumes: &mut Option<Vec<Volume>>, expiration_seconds: i64, audience: &str) {
    let volumes = volumes.get_or_insert_with(Vec::new);
    let exists = volumes
        .iter()
        .filter_map(|volume| volume.projected.as_ref())
        .flat_map(|projected| projected.sources.iter().flatten())
        .filter_map(|source| source.service_account_token.as_ref())
        .any(|token| token.path == TOKEN_VOLUME_NAME);
    if exists {
        return;
    }
    volumes.push(Volume {
        name: TOKEN_VOLUME_NAME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(audience.to_owned()),
                    expiration_seconds: Some(expiration_seconds),
                    path: TOKEN_VOLUME_NAME.to_owned(),
                    user: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
}

/// Appends JSON patch operations that turn `before` into `after`. Arrays that only grew at the
/// end get one `add` per new element; other changed arrays are replaced whole.
fn diff(before: &Value, after: &Value, path: String, operations: &mut Vec<Value>) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, old_value) in old {
                let child = format!("{path}/{}", escape_pointer(key));
                match new.get(key) {
                    Some(new_value) => diff(old_value, new_value, child, operations),
                    None => operations.push(json!({"op": "remove", "path": child})),
                }
            }
            for (key, new_value) in new {
                if !old.contains_key(key) {
                    let child = format!("{path}/{}", escape_pointer(key));
                    operations.push(json!({"op": "add", "path": child, "value": new_value}));
                }
            }
        }
        (Value::Array(old), Value::Array(new)) if new.len() >= old.len() => {
            let (prefix, added) = new.split_at(old.len());
            if prefix == old.as_slice() {
                for (offset, value) in added.iter().enumerate() {
                    let child = format!("{path}/{}", old.len() + offset);
                    operations.push(json!({"op": "add", "path": child, "value": value}));
                }
            } else if old.len() == new.len() {
                for (index, (old_value, new_value)) in old.iter().zip(new).enumerate() {
                    diff(old_value, new_value, format!("{path}/{index}"), operations);
                }
            } else {
                operations.push(json!({"op": "replace", "path": path, "value": after}));
            }
        }
        _ if before == after => {}
        _ => operations.push(json!({"op": "replace", "path": path, "value": after})),
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT_A: &str = "aaaaaaaa-0000-0000-0000-000000000000";
    const TENANT_B: &str = "bbbbbbbb-0000-0000-0000-000000000000";
    const CLIENT: &str = "cccccccc-0000-0000-0000-000000000000";

    fn config() -> WebhookConfig {
        WebhookConfig::new(TENANT_A, "https://login.microsoftonline.com")
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn service_account(annotations: &[(&str, &str)]) -> ServiceAccount {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some("workload".into());
        sa.metadata.namespace = Some("default".into());
        sa.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        sa
    }

    const BASIC_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: default
  labels: {azure.workload.identity/use: "true"}
spec:
  serviceAccountName: workload
  containers:
    - name: app
      image: example.com/app
"#;

    fn env_of(pod: &Pod, container: usize) -> BTreeMap<String, String> {
        pod.spec.as_ref().unwrap().containers[container]
            .env
            .iter()
            .flatten()
            .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
            .collect()
    }

    fn env_names(container: &Container) -> Vec<String> {
        container
            .env
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect()
    }

    fn token_projection(pod: &Pod) -> ServiceAccountTokenProjection {
        let volumes = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
        let volume = volumes
            .iter()
            .find(|v| v.name == TOKEN_VOLUME_NAME)
            .unwrap();
        let sources = volume.projected.clone().unwrap().sources.unwrap();
        sources[0].service_account_token.clone().unwrap()
    }

    #[test]
    fn selects_only_pods_labelled_true() {
        assert!(selects(&pod(BASIC_POD)));
        let other = BASIC_POD.replace("\"true\"", "\"True\"");
        assert!(!selects(&pod(&other)));
        let unlabelled = BASIC_POD.replace("labels: {azure.workload.identity/use: \"true\"}", "");
        assert!(!selects(&pod(&unlabelled)));
    }

    #[test]
    fn injects_env_in_documented_order() {
        let sa = service_account(&[(CLIENT_ID_ANNOTATION, CLIENT)]);
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap();
        let container = &mutated.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            env_names(container),
            [
                CLIENT_ID_ENV,
                TENANT_ID_ENV,
                FEDERATED_TOKEN_FILE_ENV,
                AUTHORITY_HOST_ENV
            ]
        );
        let env = env_of(&mutated, 0);
        assert_eq!(env[CLIENT_ID_ENV], CLIENT);
        assert_eq!(env[FEDERATED_TOKEN_FILE_ENV], TOKEN_FILE_PATH);
    }

    #[test]
    fn missing_client_id_injects_no_client_id() {
        let sa = service_account(&[("azure.workload.identity/client_id", CLIENT)]);
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap();
        let env = env_of(&mutated, 0);
        assert!(!env.contains_key(CLIENT_ID_ENV));
        assert!(env.contains_key(TENANT_ID_ENV));
        assert!(env.contains_key(FEDERATED_TOKEN_FILE_ENV));
    }

    #[test]
    fn empty_client_id_injects_nothing() {
        let sa = service_account(&[(CLIENT_ID_ANNOTATION, "")]);
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap();
        assert!(!env_of(&mutated, 0).contains_key(CLIENT_ID_ENV));
    }

    #[test]
    fn absent_tenant_id_uses_default_tenant() {
        let sa = service_account(&[(CLIENT_ID_ANNOTATION, CLIENT)]);
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap();
        assert_eq!(env_of(&mutated, 0)[TENANT_ID_ENV], TENANT_A);
    }

    #[test]
    fn tenant_id_annotation_wins() {
        let sa = service_account(&[(TENANT_ID_ANNOTATION, TENANT_B)]);
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap();
        assert_eq!(env_of(&mutated, 0)[TENANT_ID_ENV], TENANT_B);
    }

    #[test]
    fn empty_tenant_id_injects_nothing() {
        let sa = service_account(&[(TENANT_ID_ANNOTATION, "")]);
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap();
        assert!(!env_of(&mutated, 0).contains_key(TENANT_ID_ENV));
    }

    #[test]
    fn authority_host_gets_trailing_slash() {
        let sa = service_account(&[]);
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap();
        let env = env_of(&mutated, 0);
        assert_eq!(
            env[AUTHORITY_HOST_ENV],
            "https://login.microsoftonline.com/"
        );

        let slashed = WebhookConfig::new(TENANT_A, "https://127.0.0.1:8443/");
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &slashed).unwrap();
        assert_eq!(
            env_of(&mutated, 0)[AUTHORITY_HOST_ENV],
            "https://127.0.0.1:8443/"
        );
    }

    #[test]
    fn user_env_wins_over_injected() {
        let yaml = format!(
            "{BASIC_POD}      env:\n        - name: AZURE_CLIENT_ID\n          value: mine\n        \
             - name: AZURE_TENANT_ID\n          valueFrom:\n            configMapKeyRef: {{name: c, key: k}}\n"
        );
        let sa = service_account(&[(CLIENT_ID_ANNOTATION, CLIENT)]);
        let mutated = mutate_pod(&pod(&yaml), &sa, &config()).unwrap();
        let container = &mutated.spec.as_ref().unwrap().containers[0];
        let names = env_names(container);
        assert_eq!(names.iter().filter(|n| *n == CLIENT_ID_ENV).count(), 1);
        assert_eq!(names.iter().filter(|n| *n == TENANT_ID_ENV).count(), 1);
        assert_eq!(env_of(&mutated, 0)[CLIENT_ID_ENV], "mine");
    }

    #[test]
    fn env_from_is_ignored() {
        let yaml = format!("{BASIC_POD}      envFrom:\n        - configMapRef: {{name: c}}\n");
        let sa = service_account(&[(CLIENT_ID_ANNOTATION, CLIENT)]);
        let mutated = mutate_pod(&pod(&yaml), &sa, &config()).unwrap();
        assert_eq!(env_of(&mutated, 0)[CLIENT_ID_ENV], CLIENT);
    }

    #[test]
    fn mounts_token_read_only() {
        let mutated = mutate_pod(&pod(BASIC_POD), &service_account(&[]), &config()).unwrap();
        let container = &mutated.spec.as_ref().unwrap().containers[0];
        let mount = &container.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.name, TOKEN_VOLUME_NAME);
        assert_eq!(mount.mount_path, TOKEN_MOUNT_PATH);
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn adds_projected_token_volume() {
        let mutated = mutate_pod(&pod(BASIC_POD), &service_account(&[]), &config()).unwrap();
        let token = token_projection(&mutated);
        assert_eq!(token.path, TOKEN_VOLUME_NAME);
        assert_eq!(token.audience.as_deref(), Some(DEFAULT_AUDIENCE));
        assert_eq!(token.expiration_seconds, Some(3600));
    }

    #[test]
    fn existing_token_volume_is_kept() {
        let once = mutate_pod(&pod(BASIC_POD), &service_account(&[]), &config()).unwrap();
        let twice = mutate_pod(&once, &service_account(&[]), &config()).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn expiration_from_service_account() {
        let sa = service_account(&[(TOKEN_EXPIRATION_ANNOTATION, "7200")]);
        let mutated = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap();
        assert_eq!(token_projection(&mutated).expiration_seconds, Some(7200));
    }

    #[test]
    fn pod_expiration_wins_over_service_account() {
        let yaml = BASIC_POD.replace(
            "  namespace: default\n",
            "  namespace: default\n  annotations:\n    \
             azure.workload.identity/service-account-token-expiration: \"86400\"\n",
        );
        let sa = service_account(&[(TOKEN_EXPIRATION_ANNOTATION, "7200")]);
        let mutated = mutate_pod(&pod(&yaml), &sa, &config()).unwrap();
        assert_eq!(token_projection(&mutated).expiration_seconds, Some(86400));
    }

    #[test]
    fn expiration_out_of_range_is_denied() {
        for value in ["3599", "86401", "0", "-3600"] {
            let sa = service_account(&[(TOKEN_EXPIRATION_ANNOTATION, value)]);
            let error = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "token expiration {value} not valid. Expected value to be between 3600 and 86400"
                )
            );
        }
    }

    #[test]
    fn expiration_bounds_are_inclusive() {
        for value in ["3600", "86400"] {
            let sa = service_account(&[(TOKEN_EXPIRATION_ANNOTATION, value)]);
            assert!(
                mutate_pod(&pod(BASIC_POD), &sa, &config()).is_ok(),
                "{value}"
            );
        }
    }

    #[test]
    fn expiration_not_integer_is_denied() {
        let sa = service_account(&[(TOKEN_EXPIRATION_ANNOTATION, "1h")]);
        let error = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "strconv.ParseInt: parsing \"1h\": invalid syntax"
        );
        assert_eq!(error.http_status(), 400);

        let sa = service_account(&[(TOKEN_EXPIRATION_ANNOTATION, "99999999999999999999")]);
        let error = mutate_pod(&pod(BASIC_POD), &sa, &config()).unwrap_err();
        assert!(error.to_string().ends_with("value out of range"), "{error}");
    }

    #[test]
    fn skip_containers_are_trimmed_and_skipped() {
        let yaml = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {azure.workload.identity/skip-containers: " sidecar ; init-skip"}
spec:
  initContainers:
    - {name: init-skip, image: i}
    - {name: init-keep, image: i}
  containers:
    - {name: app, image: a}
    - {name: sidecar, image: s}
"#;
        let mutated = mutate_pod(&pod(yaml), &service_account(&[]), &config()).unwrap();
        let spec = mutated.spec.as_ref().unwrap();
        let init = spec.init_containers.as_ref().unwrap();
        assert!(init[0].env.as_ref().is_none_or(Vec::is_empty));
        assert!(init[0].volume_mounts.as_ref().is_none_or(Vec::is_empty));
        assert!(env_names(&init[1]).contains(&FEDERATED_TOKEN_FILE_ENV.to_owned()));
        assert!(env_names(&spec.containers[0]).contains(&FEDERATED_TOKEN_FILE_ENV.to_owned()));
        assert!(spec.containers[1].env.as_ref().is_none_or(Vec::is_empty));
    }

    #[test]
    fn admit_without_service_account_is_400() {
        let error = admit(&pod(BASIC_POD), None, &config()).unwrap_err();
        assert_eq!(error.http_status(), 400);
        assert_eq!(
            error.api_server_message(),
            "admission webhook \"mutation.azure-workload-identity.io\" denied the request: \
             serviceaccounts \"workload\" not found"
        );
    }

    #[test]
    fn patch_applies_to_original() {
        let original = pod(BASIC_POD);
        let sa = service_account(&[(CLIENT_ID_ANNOTATION, CLIENT)]);
        let patch = mutation_patch(&original, &sa, &config()).unwrap();
        let mut document = serde_json::to_value(&original).unwrap();
        for operation in patch.as_array().unwrap() {
            apply_operation(&mut document, operation);
        }
        let expected = mutate_pod(&original, &sa, &config()).unwrap();
        assert_eq!(document, serde_json::to_value(expected).unwrap());
    }

    /// Applies one `add` or `replace` operation; enough to check the patches `diff` emits here.
    fn apply_operation(document: &mut Value, operation: &Value) {
        let path = operation["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let target = document.pointer_mut(parent).unwrap();
        let value = operation["value"].clone();
        match (operation["op"].as_str().unwrap(), target) {
            ("add", Value::Array(items)) => items.insert(last.parse().unwrap(), value),
            (_, Value::Object(map)) => {
                map.insert(last.replace("~1", "/").replace("~0", "~"), value);
            }
            (op, target) => panic!("unexpected {op} on {target}"),
        }
    }
}
