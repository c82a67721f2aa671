//! The embedded cluster: an API server store, a job controller and a kubelet that runs each
//! container as a local process, all in this process and without a container engine.
//!
//! Images map to commands: [`SAMPLE_IMAGE`] runs the xtenant binary's `servicebusdemo`
//! workload, and [`EmbeddedConfig::extra_images`] adds more. Paths inside a pod live under
//! `state_dir/pods/<pod>/`, so the projected token of a pod is the file
//! `state_dir/pods/<pod>/var/run/secrets/azure/tokens/azure-identity-token`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use xtenant_fakes::crypto::SigningKey;

use super::admission;
use super::manifest::{Object, parse_manifests};
use super::pod_status;
use super::token::ObjectRef;
use super::volumes::{self, TokenFile};
use super::webhook::WebhookConfig;
use super::{Cluster, ClusterError, JobConditionType, describe};
use super::{job_controller, kubelet};

/// Image of the Service Bus sample workload; any tag maps to `[workload_exe, "servicebusdemo"]`.
pub const SAMPLE_IMAGE: &str = "ghcr.io/azure-samples/aks-app-samples/servicebusdemo";

/// Supplier of the model's current time.
pub type NowFn = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// An image repository (the image reference without tag or digest) and the command it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMapping {
    pub repository: String,
    /// Program and arguments; a container's `args` are appended, its `command` replaces these.
    pub argv: Vec<String>,
}

/// Settings of an embedded cluster.
#[derive(Clone)]
pub struct EmbeddedConfig {
    /// Cluster name; the single node is called `<cluster_name>-node`.
    pub cluster_name: String,
    /// Tenant the webhook injects when a service account has no tenant-id annotation.
    pub default_tenant_id: String,
    /// Entra ID authority injected as `AZURE_AUTHORITY_HOST`.
    pub authority_host: String,
    /// Service account issuer URL put in the `iss` claim of projected tokens.
    pub issuer_url: String,
    /// Key that signs projected tokens; the issuer's JWKS must publish it.
    pub signing_key: Arc<SigningKey>,
    /// The xtenant binary, which runs the sample workload.
    pub workload_exe: PathBuf,
    /// More image mappings, checked before the sample image.
    pub extra_images: Vec<ImageMapping>,
    /// Variables added to every container process after the pod's own env, so they win over
    /// same-named pod variables. They are not shown in the pod spec, the way a node's network
    /// and CA bundle are not.
    pub extra_env: Vec<(String, String)>,
    /// Directory for pod folders and logs.
    pub state_dir: PathBuf,
    /// The model's clock, used for token times and rotation.
    pub clock: NowFn,
}

impl std::fmt::Debug for EmbeddedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedConfig")
            .field("cluster_name", &self.cluster_name)
            .field("issuer_url", &self.issuer_url)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Namespace and name of an object.
pub(crate) type Key = (String, String);

pub(crate) struct JobRecord {
    pub job: Job,
    /// The manifest as applied, to tell `unchanged` from a forbidden template change.
    pub applied: Value,
    pub pods: Vec<String>,
    /// The last pod creation failure, as the job controller's `FailedCreate` event shows it.
    pub last_event: Option<String>,
}

pub(crate) struct PodRecord {
    pub pod: Pod,
    /// The manifest as applied, for pods created by `apply`.
    pub applied: Option<Value>,
    pub root: PathBuf,
    pub tokens: Vec<TokenFile>,
}

#[derive(Default)]
pub(crate) struct Store {
    pub service_accounts: BTreeMap<Key, ServiceAccount>,
    pub config_maps: BTreeMap<Key, ConfigMap>,
    pub secrets: BTreeMap<Key, Secret>,
    pub jobs: BTreeMap<Key, JobRecord>,
    pub pods: BTreeMap<Key, PodRecord>,
}

impl Store {
    /// Looks up a service account. Every namespace has a `default` one, made on first use as
    /// the service account controller does.
    pub fn service_account(&mut self, namespace: &str, name: &str) -> Option<ServiceAccount> {
        let key = (namespace.to_owned(), name.to_owned());
        if name == "default" && !self.service_accounts.contains_key(&key) {
            let mut account = ServiceAccount::default();
            account.metadata.name = Some(name.to_owned());
            account.metadata.namespace = Some(namespace.to_owned());
            account.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
            self.service_accounts.insert(key.clone(), account);
        }
        self.service_accounts.get(&key).cloned()
    }
}

/// State shared by the cluster handle and its controller and kubelet tasks.
pub(crate) struct Shared {
    pub config: EmbeddedConfig,
    pub webhook: WebhookConfig,
    pub node: ObjectRef,
    store: Mutex<Store>,
    /// Bumped when `apply` changes objects, so blocked pods and jobs retry.
    pub objects_changed: watch::Sender<u64>,
    /// Bumped when a job or pod status changes, so waiters look again.
    pub status_changed: watch::Sender<u64>,
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn now(&self) -> OffsetDateTime {
        (self.config.clock)()
    }

    pub fn notify_status(&self) {
        self.status_changed.send_modify(|version| *version += 1);
    }

    fn notify_objects(&self) {
        self.objects_changed.send_modify(|version| *version += 1);
    }
}

/// Converts a model time to a Kubernetes timestamp, at second precision as the API shows it.
pub(crate) fn kube_time(time: OffsetDateTime) -> Time {
    Time(Timestamp::from_second(time.unix_timestamp()).expect("model time is in range"))
}

/// A cluster that runs in this process. Dropping it kills every container process.
pub struct EmbeddedCluster {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl EmbeddedCluster {
    /// Creates an empty cluster and its `state_dir/pods` folder.
    pub fn new(config: EmbeddedConfig) -> Result<Self, ClusterError> {
        let pods_dir = config.state_dir.join("pods");
        std::fs::create_dir_all(&pods_dir).map_err(|source| ClusterError::Io {
            action: "create the directory",
            path: pods_dir,
            source,
        })?;
        let webhook = WebhookConfig::new(&config.default_tenant_id, &config.authority_host);
        let node = ObjectRef {
            name: format!("{}-node", config.cluster_name),
            uid: uuid::Uuid::new_v4().to_string(),
        };
        let shared = Shared {
            config,
            webhook,
            node,
            store: Mutex::new(Store::default()),
            objects_changed: watch::channel(0).0,
            status_changed: watch::channel(0).0,
        };
        Ok(Self {
            shared: Arc::new(shared),
            tasks: JoinSet::new(),
        })
    }

    /// Applies a manifest: see [`Cluster::apply`]. Objects before a rejected one stay applied,
    /// as with `kubectl apply`.
    pub async fn apply(&mut self, yaml: &str) -> Result<Vec<String>, ClusterError> {
        let objects = parse_manifests(yaml)?;
        let mut lines = Vec::new();
        for object in objects {
            let verb = self.apply_object(&object)?;
            lines.push(format!(
                "{}/{} {verb}",
                object.kubectl_resource(),
                object.name()
            ));
        }
        self.shared.notify_objects();
        Ok(lines)
    }

    fn apply_object(&mut self, object: &Object) -> Result<&'static str, ClusterError> {
        let key = (object.namespace().to_owned(), object.name().to_owned());
        let applied = serde_json::to_value(object_json(object)).expect("objects serialize");
        let mut store = self.shared.store();
        let verb = match object {
            Object::ServiceAccount(account) => {
                let mut account = account.clone();
                let previous = store.service_accounts.get(&key);
                account.metadata.uid = previous
                    .and_then(|p| p.metadata.uid.clone())
                    .or_else(|| Some(uuid::Uuid::new_v4().to_string()));
                upsert(&mut store.service_accounts, key, account)
            }
            Object::ConfigMap(map) => upsert(&mut store.config_maps, key, map.clone()),
            Object::Secret(secret) => {
                upsert(&mut store.secrets, key, secret_with_string_data(secret))
            }
            Object::Job(job) => {
                if let Some(existing) = store.jobs.get(&key) {
                    return unchanged_or_immutable(&existing.applied, &applied, "Job.batch", &key);
                }
                admission::validate_job(job)?;
                store.jobs.insert(
                    key.clone(),
                    job_controller::new_job_record(job, applied, self.shared.now()),
                );
                let span = tracing::info_span!("job", namespace = %key.0, name = %key.1);
                let shared = self.shared.clone();
                self.tasks
                    .spawn(job_controller::run_job(shared, key).instrument(span));
                "created"
            }
            Object::Pod(pod) => {
                if let Some(existing) = store.pods.get(&key) {
                    let previous = existing.applied.clone().unwrap_or_default();
                    return unchanged_or_immutable(&previous, &applied, "Pod", &key);
                }
                let pod_key = admission::create_pod(&self.shared, &mut store, (**pod).clone())
                    .map_err(|message| ClusterError::Rejected { message })?;
                if let Some(record) = store.pods.get_mut(&pod_key) {
                    record.applied = Some(applied);
                }
                let shared = self.shared.clone();
                self.tasks.spawn(async move {
                    kubelet::run_pod(shared, pod_key).await;
                });
                "created"
            }
        };
        Ok(verb)
    }

    /// Waits for a job condition: see [`Cluster::wait_job`]. Returns early with an error when
    /// the job reaches the other terminal condition or one of its pods cannot pull its image,
    /// where `kubectl wait` would wait until the timeout.
    pub async fn wait_job(
        &self,
        name: &str,
        namespace: &str,
        condition: JobConditionType,
        timeout: Duration,
    ) -> Result<JobStatus, ClusterError> {
        let mut changes = self.shared.status_changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.mark_unchanged();
            if let Some(result) = self.check_job(name, namespace, condition)? {
                return result;
            }
            let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
            if changed.is_err() {
                return Err(ClusterError::Timeout {
                    what: format!("job {namespace}/{name} to be {}", condition.as_str()),
                    timeout,
                    state: self.job_state(name, namespace),
                });
            }
        }
    }

    /// Returns `Some` when waiting is over, with the status or the reason it cannot happen.
    fn check_job(
        &self,
        name: &str,
        namespace: &str,
        condition: JobConditionType,
    ) -> Result<Option<Result<JobStatus, ClusterError>>, ClusterError> {
        let store = self.shared.store();
        let key = (namespace.to_owned(), name.to_owned());
        let record = store.jobs.get(&key).ok_or_else(|| ClusterError::NotFound {
            kind: "job",
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
        let status = record.job.status.clone().unwrap_or_default();
        for terminal in status.conditions.iter().flatten() {
            if terminal.status != "True" {
                continue;
            }
            if terminal.type_ == condition.as_str() {
                return Ok(Some(Ok(status)));
            }
            if terminal.type_ == "Complete" || terminal.type_ == "Failed" {
                return Ok(Some(Err(ClusterError::JobFinishedOtherwise {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    expected: condition.as_str().to_owned(),
                    reached: terminal.type_.clone(),
                    message: terminal.message.clone().unwrap_or_default(),
                })));
            }
        }
        for pod_name in &record.pods {
            let pod_key = (namespace.to_owned(), pod_name.clone());
            if let Some(message) = store
                .pods
                .get(&pod_key)
                .and_then(pod_status::image_pull_error)
            {
                return Ok(Some(Err(ClusterError::ImagePull {
                    namespace: namespace.to_owned(),
                    pod: pod_name.clone(),
                    message,
                })));
            }
        }
        Ok(None)
    }

    /// Summarizes a job in one line for timeout messages: counts, last event, pod waits.
    fn job_state(&self, name: &str, namespace: &str) -> String {
        let store = self.shared.store();
        let key = (namespace.to_owned(), name.to_owned());
        let Some(record) = store.jobs.get(&key) else {
            return "job not found".to_owned();
        };
        let status = record.job.status.clone().unwrap_or_default();
        let mut state = format!(
            "active {}, succeeded {}, failed {}",
            status.active.unwrap_or(0),
            status.succeeded.unwrap_or(0),
            status.failed.unwrap_or(0)
        );
        if let Some(event) = &record.last_event {
            state.push_str(&format!("; last event: FailedCreate: {event}"));
        }
        for pod_name in &record.pods {
            let pod_key = (namespace.to_owned(), pod_name.clone());
            if let Some(reason) = store
                .pods
                .get(&pod_key)
                .and_then(pod_status::waiting_reason)
            {
                state.push_str(&format!("; pod {pod_name} waiting: {reason}"));
            }
        }
        state
    }

    /// Returns a log: see [`Cluster::logs`]. For a job this is the log of its newest pod's
    /// first container.
    pub async fn logs(&self, target: &str, namespace: &str) -> Result<String, ClusterError> {
        self.read_logs(target, namespace)
    }

    /// Returns the log of the job's newest pod, like `kubectl logs job/NAME`.
    pub fn job_logs(&self, name: &str, namespace: &str) -> Result<String, ClusterError> {
        self.read_logs(&format!("job/{name}"), namespace)
    }

    fn read_logs(&self, target: &str, namespace: &str) -> Result<String, ClusterError> {
        let pod_name = match target.split_once('/') {
            Some(("job" | "jobs" | "job.batch", job)) => self.newest_pod(job, namespace)?,
            Some(("pod" | "pods", pod)) => pod.to_owned(),
            Some(_) => return Err(ClusterError::InvalidTarget(target.to_owned())),
            None if target.is_empty() => return Err(ClusterError::InvalidTarget(String::new())),
            None => target.to_owned(),
        };
        let path = {
            let store = self.shared.store();
            let record = store
                .pods
                .get(&(namespace.to_owned(), pod_name.clone()))
                .ok_or_else(|| not_found("pod", namespace, &pod_name))?;
            pod_status::default_log_path(record)
        };
        match std::fs::read_to_string(&path) {
            Ok(log) => Ok(log),
            // A pod whose container has not started has no log yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(ClusterError::Io {
                action: "read the log",
                path,
                source,
            }),
        }
    }

    fn newest_pod(&self, job: &str, namespace: &str) -> Result<String, ClusterError> {
        let store = self.shared.store();
        let record = store
            .jobs
            .get(&(namespace.to_owned(), job.to_owned()))
            .ok_or_else(|| not_found("job", namespace, job))?;
        record
            .pods
            .last()
            .cloned()
            .ok_or_else(|| ClusterError::Rejected {
                message: format!(
                    "job {namespace}/{job} has no pods yet{}",
                    record
                        .last_event
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            })
    }

    /// Describes a pod: see [`Cluster::describe_pod`].
    pub async fn describe_pod(&self, name: &str, namespace: &str) -> Result<String, ClusterError> {
        let store = self.shared.store();
        let record = store
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| not_found("pod", namespace, name))?;
        Ok(describe::describe_pod(&record.pod))
    }

    /// Returns every pod with its current status, ordered by namespace and name.
    pub fn pods(&self) -> Vec<Pod> {
        let store = self.shared.store();
        store
            .pods
            .values()
            .map(|record| record.pod.clone())
            .collect()
    }

    /// Returns the names of a job's pods, oldest first.
    pub fn job_pods(&self, name: &str, namespace: &str) -> Vec<String> {
        let store = self.shared.store();
        store
            .jobs
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|record| record.pods.clone())
            .unwrap_or_default()
    }

    /// Rewrites every projected token of a running pod that has passed 80 % of its lifetime
    /// on the model clock, as the kubelet does, and returns how many were rewritten. The
    /// kubelet tasks also check once per second; call this after advancing the model clock to
    /// rotate at once.
    pub fn refresh_tokens(&self) -> Result<usize, ClusterError> {
        let keys: Vec<Key> = self.shared.store().pods.keys().cloned().collect();
        let mut rotated = 0;
        for key in keys {
            rotated += volumes::refresh_pod_tokens(&self.shared, &key)?;
        }
        Ok(rotated)
    }
}

impl Cluster for EmbeddedCluster {
    async fn apply(&mut self, yaml: &str) -> Result<Vec<String>, ClusterError> {
        EmbeddedCluster::apply(self, yaml).await
    }

    async fn wait_job(
        &self,
        name: &str,
        namespace: &str,
        condition: JobConditionType,
        timeout: Duration,
    ) -> Result<JobStatus, ClusterError> {
        EmbeddedCluster::wait_job(self, name, namespace, condition, timeout).await
    }

    async fn logs(&self, target: &str, namespace: &str) -> Result<String, ClusterError> {
        EmbeddedCluster::logs(self, target, namespace).await
    }

    async fn describe_pod(&self, name: &str, namespace: &str) -> Result<String, ClusterError> {
        EmbeddedCluster::describe_pod(self, name, namespace).await
    }
}

fn not_found(kind: &'static str, namespace: &str, name: &str) -> ClusterError {
    ClusterError::NotFound {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn object_json(object: &Object) -> Value {
    let value = match object {
        Object::ServiceAccount(o) => serde_json::to_value(o),
        Object::Job(o) => serde_json::to_value(o),
        Object::Pod(o) => serde_json::to_value(o),
        Object::ConfigMap(o) => serde_json::to_value(o),
        Object::Secret(o) => serde_json::to_value(o),
    };
    value.expect("k8s-openapi objects serialize to JSON")
}

fn upsert<T: PartialEq + Clone>(map: &mut BTreeMap<Key, T>, key: Key, value: T) -> &'static str {
    match map.insert(key, value.clone()) {
        None => "created",
        Some(previous) if previous == value => "unchanged",
        Some(_) => "configured",
    }
}

fn unchanged_or_immutable(
    previous: &Value,
    applied: &Value,
    kind: &str,
    key: &Key,
) -> Result<&'static str, ClusterError> {
    if previous == applied {
        return Ok("unchanged");
    }
    Err(ClusterError::Rejected {
        message: format!(
            "The {kind} \"{}\" is invalid: spec: field is immutable; delete the object and \
             apply it under a new name",
            key.1
        ),
    })
}

/// Merges `stringData` into `data`, as the API server does when it stores a Secret.
fn secret_with_string_data(secret: &Secret) -> Secret {
    let mut stored = secret.clone();
    if let Some(strings) = stored.string_data.take() {
        let data = stored.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in strings {
            data.insert(key, k8s_openapi::ByteString(value.into_bytes()));
        }
    }
    stored
}
