//! The job controller of the embedded cluster: creates a Job's pods through admission, counts
//! their outcomes and sets the `Complete` or `Failed` condition.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use serde_json::Value;
use time::OffsetDateTime;

use super::admission;
use super::embedded::{JobRecord, Key, Shared, kube_time};
use super::kubelet::{self, PodOutcome};

/// Retries of a failing job when `spec.backoffLimit` is unset (Kubernetes default).
const DEFAULT_BACKOFF_LIMIT: i32 = 6;

pub(crate) fn new_job_record(job: &Job, applied: Value, now: OffsetDateTime) -> JobRecord {
    let mut job = job.clone();
    job.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    job.status = Some(JobStatus {
        start_time: Some(kube_time(now)),
        active: Some(0),
        ..Default::default()
    });
    JobRecord {
        job,
        applied,
        pods: Vec::new(),
        last_event: None,
    }
}

/// Runs the job controller for one job: creates one pod at a time until `completions` pods
/// succeeded or more than `backoffLimit` failed.
///
/// NOTE: pods run one after another, so `parallelism` is ignored, and a failed pod is
/// replaced at once, without the controller's exponential back-off (10 s, 20 s, ...).
/// `restartPolicy: OnFailure` also gets a new pod instead of a restarted container.
pub(crate) async fn run_job(shared: Arc<Shared>, key: Key) {
    let mut objects = shared.objects_changed.subscribe();
    loop {
        let template = {
            let mut store = shared.store();
            let Some(record) = store.jobs.get_mut(&key) else {
                return;
            };
            if finish_job_if_done(record, shared.now()) {
                drop(store);
                shared.notify_status();
                return;
            }
            record.job.clone()
        };

        objects.mark_unchanged();
        let created = {
            let mut store = shared.store();
            let pod = admission::pod_from_job(&template);
            let created = admission::create_pod(&shared, &mut store, pod);
            let record = store
                .jobs
                .get_mut(&key)
                .expect("the job exists while its controller runs");
            match &created {
                Ok(pod_key) => {
                    record.pods.push(pod_key.1.clone());
                    record.last_event = None;
                    set_active(record, 1);
                }
                Err(message) => {
                    tracing::info!(event = "FailedCreate", %message, "pod creation rejected");
                    record.last_event = Some(format!("Error creating: {message}"));
                }
            }
            created
        };
        shared.notify_status();

        let Ok(pod_key) = created else {
            // Retry when `apply` changes objects, for example once the service account exists.
            if objects.changed().await.is_err() {
                return;
            }
            continue;
        };
        let outcome = kubelet::run_pod(shared.clone(), pod_key).await;
        let mut store = shared.store();
        let Some(record) = store.jobs.get_mut(&key) else {
            return;
        };
        set_active(record, 0);
        let status = record.job.status.get_or_insert_with(Default::default);
        match outcome {
            PodOutcome::Succeeded => status.succeeded = Some(status.succeeded.unwrap_or(0) + 1),
            PodOutcome::Failed => status.failed = Some(status.failed.unwrap_or(0) + 1),
            // The pod waits forever, as a pod in ErrImagePull does; the job stays active.
            PodOutcome::Stuck => {
                set_active(record, 1);
                drop(store);
                shared.notify_status();
                return;
            }
        }
        drop(store);
        shared.notify_status();
    }
}

pub(crate) fn set_active(record: &mut JobRecord, active: i32) {
    record
        .job
        .status
        .get_or_insert_with(Default::default)
        .active = Some(active);
}

/// Adds the terminal conditions once the job is done and returns whether it is.
pub(crate) fn finish_job_if_done(record: &mut JobRecord, now: OffsetDateTime) -> bool {
    let spec = record.job.spec.clone().unwrap_or_default();
    let completions = spec.completions.unwrap_or(1);
    let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    let status = record.job.status.get_or_insert_with(Default::default);
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);
    // Kubernetes 1.31 and later set SuccessCriteriaMet or FailureTarget before the final
    // condition; both are listed the same way here.
    let conditions = if succeeded >= completions {
        status.completion_time = Some(kube_time(now));
        [("SuccessCriteriaMet", None, None), ("Complete", None, None)]
    } else if failed > backoff_limit {
        let reason = Some("BackoffLimitExceeded");
        let message = Some("Job has reached the specified backoff limit");
        [
            ("FailureTarget", reason, message),
            ("Failed", reason, message),
        ]
    } else {
        return false;
    };
    status.conditions = Some(
        conditions
            .into_iter()
            .map(|(type_, reason, message)| JobCondition {
                type_: type_.to_owned(),
                status: "True".to_owned(),
                reason: reason.map(str::to_owned),
                message: message.map(str::to_owned),
                last_probe_time: Some(kube_time(now)),
                last_transition_time: Some(kube_time(now)),
            })
            .collect(),
    );
    status.active = Some(0);
    tracing::info!(succeeded, failed, "job finished");
    true
}
