//! The kubelet of the embedded cluster: materializes a pod's volumes under its folder, signs
//! and rotates its projected tokens, resolves env vars and runs each container as a process.
//!
//! A pod's folder stands in for its root filesystem. Each volume is a directory
//! `volumes/<name>`, each mount path is a symlink to it, and env values that point into a
//! mount are rewritten to the folder, so `AZURE_FEDERATED_TOKEN_FILE` names a real file.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning};
use tracing::Instrument;

use super::ClusterError;
use super::container_env::{expand, resolve_argv, resolve_env};
use super::embedded::{Key, Shared, kube_time};
use super::pod_status::{finish_pod, set_all_waiting, set_state, set_terminated, update_pod};
use super::volumes::{create_dir, link_mounts, refresh_pod_tokens, write_volume};

/// `PATH` of container processes: the value most base images set.
const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often a running pod checks whether its tokens need rotating.
const TOKEN_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The end state of a pod, as its job controller counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PodOutcome {
    Succeeded,
    Failed,
    /// The pod can never start (its image is not mapped) and stays `Pending`.
    Stuck,
}

/// A container ready to start.
struct ContainerPlan {
    name: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

struct PodPlan {
    init_containers: Vec<ContainerPlan>,
    containers: Vec<ContainerPlan>,
}

/// A reason a pod cannot start yet, with the container `waiting` reason Kubernetes shows.
pub(crate) struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

/// Runs a stored pod to completion and records its status.
pub(crate) async fn run_pod(shared: Arc<Shared>, key: Key) -> PodOutcome {
    let span = tracing::info_span!("pod", namespace = %key.0, name = %key.1);
    run_pod_in_span(shared, key).instrument(span).await
}

async fn run_pod_in_span(shared: Arc<Shared>, key: Key) -> PodOutcome {
    let mut objects = shared.objects_changed.subscribe();
    let plan = loop {
        objects.mark_unchanged();
        match prepare(&shared, &key) {
            Ok(Ok(plan)) => break plan,
            Ok(Err(blocked)) => {
                tracing::info!(reason = blocked.reason, message = %blocked.message, "pod waiting");
                let stuck = blocked.reason == "ErrImagePull";
                set_all_waiting(&shared, &key, &blocked);
                if stuck {
                    return PodOutcome::Stuck;
                }
                // Retry once `apply` changes objects, as the kubelet retries a missing ConfigMap.
                if objects.changed().await.is_err() {
                    return PodOutcome::Stuck;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "pod setup failed");
                finish_pod(&shared, &key, "Failed", Some(error.to_string()));
                return PodOutcome::Failed;
            }
        }
    };

    update_pod(&shared, &key, |pod| {
        let status = pod.status.get_or_insert_with(Default::default);
        status.phase = Some("Running".to_owned());
        status.start_time = Some(kube_time(shared.now()));
        status.host_ip = Some("127.0.0.1".to_owned());
        status.pod_ip = Some("127.0.0.1".to_owned());
    });

    for container in &plan.init_containers {
        let code =
            with_token_rotation(&shared, &key, run_container(&shared, &key, container, true)).await;
        if code != 0 {
            finish_pod(&shared, &key, "Failed", None);
            return PodOutcome::Failed;
        }
    }

    let all = async {
        let mut codes = Vec::new();
        let mut running = Vec::new();
        for container in &plan.containers {
            running.push(run_container(&shared, &key, container, false));
        }
        // `join_all` polls every future in its first round, so all processes start together.
        for code in join_all(running).await {
            codes.push(code);
        }
        codes
    };
    let codes = with_token_rotation(&shared, &key, all).await;
    let phase = if codes.iter().all(|&code| code == 0) {
        "Succeeded"
    } else {
        "Failed"
    };
    finish_pod(&shared, &key, phase, None);
    if phase == "Succeeded" {
        PodOutcome::Succeeded
    } else {
        PodOutcome::Failed
    }
}

/// Polls `futures` together and returns their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// Drives `work` while rotating the pod's tokens once per second.
async fn with_token_rotation<T>(
    shared: &Shared,
    key: &Key,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut ticker = tokio::time::interval(TOKEN_CHECK_INTERVAL);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticker.tick() => {
                if let Err(error) = refresh_pod_tokens(shared, key) {
                    tracing::warn!(%error, "token rotation failed");
                }
            }
        }
    }
}

/// Reads the pod and the objects it uses and writes its volumes. The outer error is an I/O
/// failure; the inner one says why the pod must wait.
fn prepare(shared: &Shared, key: &Key) -> Result<Result<PodPlan, Blocked>, ClusterError> {
    let mut store = shared.store();
    let (pod, root) = match store.pods.get(key) {
        Some(record) => (record.pod.clone(), record.root.clone()),
        None => {
            return Ok(Err(blocked(
                "PodNotFound",
                "the pod was removed".to_owned(),
            )));
        }
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let volumes_dir = root.join("volumes");

    let mut tokens = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        let dir = volumes_dir.join(&volume.name);
        create_dir(&dir)?;
        match write_volume(shared, &mut store, &pod, volume, &dir)? {
            Ok(mut written) => tokens.append(&mut written),
            Err(blocked) => return Ok(Err(blocked)),
        }
    }

    let all_containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in all_containers.clone() {
        link_mounts(&root, &volumes_dir, container)?;
    }

    let mut plans = Vec::new();
    for container in all_containers {
        let argv = match resolve_argv(shared, container) {
            Ok(argv) => argv,
            Err(message) => return Ok(Err(blocked("ErrImagePull", message))),
        };
        let env = match resolve_env(&store, &pod, &root, container) {
            Ok(env) => env,
            Err(message) => return Ok(Err(blocked("CreateContainerConfigError", message))),
        };
        let argv = argv.iter().map(|arg| expand(arg, &env)).collect();
        plans.push(ContainerPlan {
            name: container.name.clone(),
            argv,
            env,
            log: root.join("logs").join(format!("{}.log", container.name)),
        });
    }
    create_dir(&root.join("logs"))?;

    if let Some(record) = store.pods.get_mut(key) {
        record.tokens = tokens;
    }
    let init_count = spec.init_containers.as_ref().map_or(0, Vec::len);
    let containers = plans.split_off(init_count);
    Ok(Ok(PodPlan {
        init_containers: plans,
        containers,
    }))
}

pub(crate) fn blocked(reason: &'static str, message: String) -> Blocked {
    Blocked { reason, message }
}

/// Starts one container process, waits for it and records its state; returns the exit code.
async fn run_container(shared: &Shared, key: &Key, plan: &ContainerPlan, init: bool) -> i32 {
    let root = shared
        .store()
        .pods
        .get(key)
        .map(|r| r.root.clone())
        .unwrap_or_default();
    let log = match std::fs::File::create(&plan.log) {
        Ok(file) => file,
        Err(error) => {
            let message = format!("failed to create the log {}: {error}", plan.log.display());
            set_terminated(
                shared,
                key,
                &plan.name,
                init,
                128,
                "StartError",
                Some(message),
            );
            return 128;
        }
    };
    let stderr = log
        .try_clone()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut command = tokio::process::Command::new(&plan.argv[0]);
    command
        .args(&plan.argv[1..])
        .env_clear()
        .env("PATH", CONTAINER_PATH)
        .env("HOSTNAME", &key.1)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .envs(shared.config.extra_env.iter().map(|(k, v)| (k, v)))
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);

    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let message = format!("failed to start {}: {error}", plan.argv[0]);
            tracing::warn!(container = plan.name, %message, "container start failed");
            set_terminated(
                shared,
                key,
                &plan.name,
                init,
                128,
                "StartError",
                Some(message),
            );
            return 128;
        }
    };
    tracing::info!(
        container = plan.name,
        program = plan.argv[0],
        "container started"
    );
    set_state(
        shared,
        key,
        &plan.name,
        init,
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(kube_time(shared.now())),
            }),
            ..Default::default()
        },
    );

    let _group = child.id().map(ProcessGroupGuard);
    let code = match child.wait().await {
        Ok(status) => exit_code(status),
        Err(error) => {
            tracing::warn!(container = plan.name, %error, "waiting for the container failed");
            128
        }
    };
    let reason = if code == 0 { "Completed" } else { "Error" };
    tracing::info!(container = plan.name, exit_code = code, "container exited");
    set_terminated(shared, key, &plan.name, init, code, reason, None);
    code
}

/// Kills a container's process group when dropped: after the main process exits, or when the
/// pod's task is aborted. Processes that the main process started in the background die with
/// it, as they do when a container stops.
struct ProcessGroupGuard(u32);

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        // The group id is the main process id, because the process was started with
        // `process_group(0)`. The shell's `kill` builtin is used because the harness has no
        // libc binding, and a group whose processes have all exited is not an error here.
        let group = format!("-{}", self.0);
        let _ = std::process::Command::new("/bin/sh")
            .args(["-c", "kill -s KILL -- \"$0\" 2>/dev/null", &group])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Returns the exit code Kubernetes reports: the process's code, or 128 plus the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(128)
}
