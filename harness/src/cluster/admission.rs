//! Pod creation as the API server performs it: defaulting, the built-in ServiceAccount
//! admission plugin, then the azure-workload-identity webhook for selected pods.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::ClusterError;
use super::embedded::{Key, PodRecord, Shared, Store, kube_time};
use super::webhook;

/// Characters of generated name suffixes (`k8s.io/apimachinery/pkg/util/rand`), which leave
/// out vowels and look-alike digits.
const NAME_SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Default file mode of projected, configMap and secret volumes (0644).
const DEFAULT_VOLUME_MODE: i32 = 0o644;

/// Checks what the API server checks on a Job before the embedded cluster runs it.
pub(crate) fn validate_job(job: &Job) -> Result<(), ClusterError> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let invalid = |detail: &str| ClusterError::Rejected {
        message: format!("The Job \"{name}\" is invalid: {detail}"),
    };
    let Some(spec) = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return Err(invalid("spec.template.spec: Required value"));
    };
    if spec.containers.is_empty() {
        return Err(invalid("spec.template.spec.containers: Required value"));
    }
    match spec.restart_policy.as_deref() {
        Some("Never" | "OnFailure") => Ok(()),
        _ => Err(invalid(
            "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        )),
    }
}

/// Builds a pod from a job's template with the name, labels and owner the job controller sets.
pub(crate) fn pod_from_job(job: &Job) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    let template = job.spec.clone().unwrap_or_default().template;
    let mut pod = Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        status: None,
    };
    let metadata = &mut pod.metadata;
    metadata.namespace = job.metadata.namespace.clone();
    metadata.generate_name = Some(format!("{job_name}-"));
    metadata.name = Some(format!("{job_name}-{}", random_suffix()));
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    for label in ["batch.kubernetes.io/job-name", "job-name"] {
        labels.insert(label.to_owned(), job_name.clone());
    }
    for label in ["batch.kubernetes.io/controller-uid", "controller-uid"] {
        labels.insert(label.to_owned(), job_uid.clone());
    }
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
        name: job_name,
        uid: job_uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    pod
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| NAME_SUFFIX_ALPHABET[usize::from(*b) % NAME_SUFFIX_ALPHABET.len()] as char)
        .collect()
}

/// Admits and stores a pod, returning its key or the API server's rejection message.
///
/// The ServiceAccount admission plugin runs before any webhook, so a pod whose service
/// account does not exist is rejected by it (403) and never reaches the workload identity
/// webhook, labelled or not.
pub(crate) fn create_pod(shared: &Shared, store: &mut Store, mut pod: Pod) -> Result<Key, String> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata.namespace = Some(namespace.clone());
    let forbidden = |reason: String| format!("pods \"{name}\" is forbidden: {reason}");

    // Pod folders are named by pod alone, so names must be unique across namespaces.
    if store.pods.keys().any(|(_, existing)| *existing == name) {
        return Err(format!(
            "pods \"{name}\" already exists; the embedded cluster needs pod names that are \
             unique across namespaces"
        ));
    }

    let spec = pod.spec.get_or_insert_with(Default::default);
    let account_name = spec
        .service_account_name
        .clone()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    spec.service_account_name = Some(account_name.clone());
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.node_name = Some(shared.node.name.clone());

    let Some(account) = store.service_account(&namespace, &account_name) else {
        return Err(forbidden(format!(
            "error looking up service account {namespace}/{account_name}: \
             serviceaccount \"{account_name}\" not found"
        )));
    };

    if webhook::selects(&pod) {
        pod = webhook::mutate_pod(&pod, &account, &shared.webhook)
            .map_err(|denied| denied.api_server_message())?;
    }
    default_volume_modes(&mut pod);

    pod.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    pod.metadata.creation_timestamp = Some(kube_time(shared.now()));
    pod.status = Some(PodStatus {
        phase: Some("Pending".to_owned()),
        ..Default::default()
    });
    tracing::info!(
        namespace,
        pod = name,
        mutated = webhook::selects(&pod),
        "pod created"
    );
    let root = shared.config.state_dir.join("pods").join(&name);
    let key = (namespace, name);
    store.pods.insert(
        key.clone(),
        PodRecord {
            pod,
            applied: None,
            root,
            tokens: Vec::new(),
        },
    );
    Ok(key)
}

/// Sets `defaultMode: 420` (0644) on volumes that leave it unset, as API defaulting does.
fn default_volume_modes(pod: &mut Pod) {
    let volumes = pod
        .spec
        .iter_mut()
        .flat_map(|s| s.volumes.iter_mut().flatten());
    for volume in volumes {
        if let Some(projected) = volume.projected.as_mut() {
            projected.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        }
        if let Some(config_map) = volume.config_map.as_mut() {
            config_map.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        }
        if let Some(secret) = volume.secret.as_mut() {
            secret.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        }
    }
}
