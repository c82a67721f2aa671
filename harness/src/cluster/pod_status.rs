//! Pod and container status updates of the embedded kubelet, and the status queries that
//! `wait_job` and `logs` use.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
};

use super::embedded::{Key, PodRecord, Shared, kube_time};
use super::kubelet::Blocked;

/// Annotation that names the container `kubectl logs` shows when none is given.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Applies `change` to a stored pod and wakes status waiters.
pub(crate) fn update_pod(shared: &Shared, key: &Key, change: impl FnOnce(&mut Pod)) {
    if let Some(record) = shared.store().pods.get_mut(key) {
        change(&mut record.pod);
    }
    shared.notify_status();
}

pub(crate) fn finish_pod(shared: &Shared, key: &Key, phase: &str, message: Option<String>) {
    tracing::info!(phase, "pod finished");
    update_pod(shared, key, |pod| {
        let status = pod.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_owned());
        if message.is_some() {
            status.message = message;
        }
    });
}

pub(crate) fn set_all_waiting(shared: &Shared, key: &Key, blocked: &Blocked) {
    update_pod(shared, key, |pod| {
        let spec = pod.spec.clone().unwrap_or_default();
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(blocked.reason.to_owned()),
                message: Some(blocked.message.clone()),
            }),
            ..Default::default()
        };
        for container in spec.init_containers.iter().flatten() {
            put_state(pod, &container.name, true, waiting.clone());
        }
        for container in &spec.containers {
            put_state(pod, &container.name, false, waiting.clone());
        }
    });
}

pub(crate) fn set_terminated(
    shared: &Shared,
    key: &Key,
    name: &str,
    init: bool,
    exit_code: i32,
    reason: &str,
    message: Option<String>,
) {
    let now = kube_time(shared.now());
    let state = ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            reason: Some(reason.to_owned()),
            message,
            finished_at: Some(now),
            ..Default::default()
        }),
        ..Default::default()
    };
    set_state(shared, key, name, init, state);
}

pub(crate) fn set_state(shared: &Shared, key: &Key, name: &str, init: bool, state: ContainerState) {
    update_pod(shared, key, |pod| put_state(pod, name, init, state));
}

pub(crate) fn put_state(pod: &mut Pod, name: &str, init: bool, state: ContainerState) {
    let image = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .find(|c| c.name == name)
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let status = pod.status.get_or_insert_with(Default::default);
    let statuses = if init {
        status.init_container_statuses.get_or_insert_with(Vec::new)
    } else {
        status.container_statuses.get_or_insert_with(Vec::new)
    };
    let running = state.running.is_some();
    match statuses.iter_mut().find(|s| s.name == name) {
        Some(existing) => {
            existing.state = Some(state);
            existing.ready = running;
            existing.started = Some(running);
        }
        None => statuses.push(ContainerStatus {
            name: name.to_owned(),
            image,
            image_id: String::new(),
            ready: running,
            restart_count: 0,
            started: Some(running),
            state: Some(state),
            ..Default::default()
        }),
    }
}

/// Returns the `ErrImagePull` message of a pod that cannot start, if it has one.
pub(crate) fn image_pull_error(record: &PodRecord) -> Option<String> {
    waiting_states(&record.pod)
        .find(|waiting| waiting.reason.as_deref() == Some("ErrImagePull"))
        .map(|waiting| waiting.message.clone().unwrap_or_default())
}

/// `reason: message` of the first waiting container, if any.
pub(crate) fn waiting_reason(record: &PodRecord) -> Option<String> {
    waiting_states(&record.pod).next().map(|waiting| {
        format!(
            "{}: {}",
            waiting.reason.as_deref().unwrap_or_default(),
            waiting.message.as_deref().unwrap_or_default()
        )
    })
}

pub(crate) fn waiting_states(pod: &Pod) -> impl Iterator<Item = &ContainerStateWaiting> {
    pod.status
        .iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|s| s.state.as_ref()?.waiting.as_ref())
}

/// Returns the log file `kubectl logs` shows for a pod: the default container's.
pub(crate) fn default_log_path(record: &PodRecord) -> PathBuf {
    let pod = &record.pod;
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION).cloned());
    let first = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone());
    let name = annotated.or(first).unwrap_or_default();
    record.root.join("logs").join(format!("{name}.log"))
}
