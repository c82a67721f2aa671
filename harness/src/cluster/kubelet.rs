//! The kubelet of the embedded cluster: materializes a pod's volumes under its folder, signs
//! and rotates its projected tokens, resolves env vars and runs each container as a process.
//!
//! A pod's folder stands in for its root filesystem. Each volume is a directory
//! `volumes/<name>`, each mount path is a symlink to it, and env values that point into a
//! mount are rewritten to the folder, so `AZURE_FEDERATED_TOKEN_FILE` names a real file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, EnvVar, Pod, Volume,
};
use tracing::Instrument;

use super::ClusterError;
use super::embedded::{Key, PodRecord, SAMPLE_IMAGE, Shared, Store, kube_time};
use super::token::{self, ObjectRef, ProjectedToken, TokenRequest};

/// `PATH` of container processes: the value most base images set.
const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often a running pod checks whether its tokens need rotating.
const TOKEN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Annotation that names the container `kubectl logs` shows when none is given.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// How a pod ended, from its job controller's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PodOutcome {
    Succeeded,
    Failed,
    /// The pod can never start (its image is not mapped) and stays `Pending`.
    Stuck,
}

/// A projected service account token written into a pod's volume.
pub(crate) struct TokenFile {
    pub request: TokenRequest,
    pub path: PathBuf,
    pub mode: u32,
    pub token: ProjectedToken,
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

/// Why a pod cannot start yet, with the container `waiting` reason Kubernetes shows.
struct Blocked {
    reason: &'static str,
    message: String,
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

fn blocked(reason: &'static str, message: String) -> Blocked {
    Blocked { reason, message }
}

/// Writes one volume's files and returns the tokens it holds.
fn write_volume(
    shared: &Shared,
    store: &mut Store,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
) -> Result<Result<Vec<TokenFile>, Blocked>, ClusterError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut tokens = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut mode = 0o644;

    if let Some(projected) = &volume.projected {
        mode = projected.default_mode.unwrap_or(0o644) as u32;
        for source in projected.sources.iter().flatten() {
            if let Some(projection) = &source.service_account_token {
                let request = token_request(shared, store, pod, projection);
                let token = token::sign(&request, &shared.config.signing_key, shared.now());
                let path = dir.join(&projection.path);
                write_file_atomically(&path, token.jwt.as_bytes(), mode)?;
                tracing::info!(path = %path.display(), expires_at = %token.expires_at, "projected token written");
                tokens.push(TokenFile {
                    request,
                    path,
                    mode,
                    token,
                });
            }
            if let Some(map) = &source.config_map {
                match config_map_files(store, &namespace, &map.name, map.optional) {
                    Ok(mut entries) => files.append(&mut entries),
                    Err(message) => return Ok(Err(mount_failed(volume, message))),
                }
            }
            if let Some(secret) = &source.secret {
                match secret_files(store, &namespace, &secret.name, secret.optional) {
                    Ok(mut entries) => files.append(&mut entries),
                    Err(message) => return Ok(Err(mount_failed(volume, message))),
                }
            }
        }
    } else if let Some(map) = &volume.config_map {
        mode = map.default_mode.unwrap_or(0o644) as u32;
        match config_map_files(store, &namespace, &map.name, map.optional) {
            Ok(entries) => files = entries,
            Err(message) => return Ok(Err(mount_failed(volume, message))),
        }
    } else if let Some(secret) = &volume.secret {
        mode = secret.default_mode.unwrap_or(0o644) as u32;
        let name = secret.secret_name.clone().unwrap_or_default();
        match secret_files(store, &namespace, &name, secret.optional) {
            Ok(entries) => files = entries,
            Err(message) => return Ok(Err(mount_failed(volume, message))),
        }
    } else if volume.empty_dir.is_none() {
        // NOTE: hostPath, PVCs and other sources become an empty directory.
        tracing::warn!(
            volume = volume.name,
            "volume source not supported; mounted empty"
        );
    }

    for (name, content) in files {
        write_file_atomically(&dir.join(name), &content, mode)?;
    }
    Ok(Ok(tokens))
}

fn mount_failed(volume: &Volume, message: String) -> Blocked {
    blocked(
        "ContainerCreating",
        format!(
            "MountVolume.SetUp failed for volume \"{}\" : {message}",
            volume.name
        ),
    )
}

fn token_request(
    shared: &Shared,
    store: &mut Store,
    pod: &Pod,
    projection: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> TokenRequest {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let account_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let account_uid = store
        .service_account(&namespace, &account_name)
        .and_then(|account| account.metadata.uid)
        .unwrap_or_default();
    TokenRequest {
        issuer: shared.config.issuer_url.clone(),
        // A projection without an audience gets the API server's own; the issuer is used
        // here because kube-apiserver's default `--api-audiences` is its issuer.
        audiences: vec![
            projection
                .audience
                .clone()
                .unwrap_or_else(|| shared.config.issuer_url.clone()),
        ],
        expiration_seconds: projection.expiration_seconds.unwrap_or(3600),
        namespace,
        service_account: ObjectRef {
            name: account_name,
            uid: account_uid,
        },
        pod: ObjectRef {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        },
        node: shared.node.clone(),
    }
}

type Files = Vec<(String, Vec<u8>)>;

fn config_map_files(
    store: &Store,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Files, String> {
    match store
        .config_maps
        .get(&(namespace.to_owned(), name.to_owned()))
    {
        Some(map) => {
            let text = map
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()));
            let binary = map
                .binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()));
            Ok(text.chain(binary).collect())
        }
        None if optional == Some(true) => Ok(Vec::new()),
        None => Err(format!("configmap \"{name}\" not found")),
    }
}

fn secret_files(
    store: &Store,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Files, String> {
    match store.secrets.get(&(namespace.to_owned(), name.to_owned())) {
        Some(secret) => Ok(secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()),
        None if optional == Some(true) => Ok(Vec::new()),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

/// Makes each mount path of `container` a symlink to its volume directory. The first
/// container to mount a path wins.
///
/// NOTE: mounts live in one folder per pod, so two containers that mount different volumes
/// at the same path both see the first one.
fn link_mounts(root: &Path, volumes_dir: &Path, container: &Container) -> Result<(), ClusterError> {
    for mount in container.volume_mounts.iter().flatten() {
        let link = root.join(mount.mount_path.trim_start_matches('/'));
        if link.symlink_metadata().is_ok() {
            continue;
        }
        let mut target = volumes_dir.join(&mount.name);
        if let Some(sub_path) = mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
            target = target.join(sub_path);
        }
        if let Some(parent) = link.parent() {
            create_dir(parent)?;
        }
        std::os::unix::fs::symlink(&target, &link).map_err(|source| ClusterError::Io {
            action: "link the mount",
            path: link.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Finds the command for a container's image: the image's mapping, then `command` and `args`
/// as Kubernetes applies them over an image's entrypoint.
fn resolve_argv(shared: &Shared, container: &Container) -> Result<Vec<String>, String> {
    let image = container.image.clone().unwrap_or_default();
    let repository = image_repository(&image);
    let config = &shared.config;
    let mapped = config
        .extra_images
        .iter()
        .find(|mapping| mapping.repository == repository)
        .map(|mapping| mapping.argv.clone())
        .or_else(|| {
            (repository == SAMPLE_IMAGE).then(|| {
                vec![
                    config.workload_exe.to_string_lossy().into_owned(),
                    "servicebusdemo".to_owned(),
                ]
            })
        });
    let Some(mut argv) = mapped else {
        let known: Vec<&str> = config
            .extra_images
            .iter()
            .map(|m| m.repository.as_str())
            .chain([SAMPLE_IMAGE])
            .collect();
        return Err(format!(
            "Failed to pull image \"{image}\": the embedded cluster runs only these images: {}; \
             map others with EmbeddedConfig::extra_images",
            known.join(", ")
        ));
    };
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        argv = command.clone();
    }
    argv.extend(container.args.iter().flatten().cloned());
    Ok(argv)
}

/// Strips the tag and digest from an image reference: `a.io/b/c:1@sha256:..` becomes `a.io/b/c`.
fn image_repository(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    match without_digest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => without_digest,
    }
}

/// Resolves `envFrom` and `env` as the kubelet does (`env` wins), then maps values that point
/// into a mounted volume to the pod folder.
fn resolve_env(
    store: &Store,
    pod: &Pod,
    root: &Path,
    container: &Container,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(existing, _)| *existing != name);
        env.push((name, value));
    };

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let entries = if let Some(map) = &source.config_map_ref {
            config_map_files(store, &namespace, &map.name, map.optional)?
        } else if let Some(secret) = &source.secret_ref {
            secret_files(store, &namespace, &secret.name, secret.optional)?
        } else {
            Vec::new()
        };
        for (name, value) in entries {
            set(
                &mut env,
                format!("{prefix}{name}"),
                String::from_utf8_lossy(&value).into_owned(),
            );
        }
    }

    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(store, pod, &namespace, var, &env)? {
            set(&mut env, var.name.clone(), value);
        }
    }

    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.trim_end_matches('/'))
        .collect();
    for (_, value) in env.iter_mut() {
        let inside = mounts
            .iter()
            .any(|mount| value.as_str() == *mount || value.starts_with(&format!("{mount}/")));
        if inside {
            *value = root
                .join(value.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned();
        }
    }
    Ok(env)
}

/// Returns the value of one `env` entry, `None` for an optional reference that is missing.
fn env_value(
    store: &Store,
    pod: &Pod,
    namespace: &str,
    var: &EnvVar,
    earlier: &[(String, String)],
) -> Result<Option<String>, String> {
    let Some(source) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), earlier)));
    };
    if let Some(selector) = &source.config_map_key_ref {
        let key = (namespace.to_owned(), selector.name.clone());
        let optional = selector.optional == Some(true);
        return match store.config_maps.get(&key) {
            None if optional => Ok(None),
            None => Err(format!("configmap \"{}\" not found", selector.name)),
            Some(map) => match map.data.as_ref().and_then(|d| d.get(&selector.key)) {
                Some(value) => Ok(Some(value.clone())),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in ConfigMap {namespace}/{}",
                    selector.key, selector.name
                )),
            },
        };
    }
    if let Some(selector) = &source.secret_key_ref {
        let key = (namespace.to_owned(), selector.name.clone());
        let optional = selector.optional == Some(true);
        return match store.secrets.get(&key) {
            None if optional => Ok(None),
            None => Err(format!("secret \"{}\" not found", selector.name)),
            Some(secret) => match secret.data.as_ref().and_then(|d| d.get(&selector.key)) {
                Some(value) => Ok(Some(String::from_utf8_lossy(&value.0).into_owned())),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in Secret {namespace}/{}",
                    selector.key, selector.name
                )),
            },
        };
    }
    if let Some(field) = &source.field_ref {
        return field_value(pod, &field.field_path).map(Some);
    }
    Err(format!(
        "env var {}: only value, configMapKeyRef, secretKeyRef and fieldRef are supported",
        var.name
    ))
}

/// Resolves a downward API `fieldRef`.
fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let metadata = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let from_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        map.as_ref()?.get(key).cloned()
    };
    let value = match path {
        "metadata.name" => metadata.name.clone(),
        "metadata.namespace" => metadata.namespace.clone(),
        "metadata.uid" => metadata.uid.clone(),
        "spec.serviceAccountName" => spec.service_account_name,
        "spec.nodeName" => spec.node_name,
        "status.podIP" | "status.hostIP" => Some("127.0.0.1".to_owned()),
        _ if path.starts_with("metadata.labels['") => {
            from_map(&metadata.labels, "metadata.labels['")
        }
        _ if path.starts_with("metadata.annotations['") => {
            from_map(&metadata.annotations, "metadata.annotations['")
        }
        _ => return Err(format!("unsupported fieldRef path {path}")),
    };
    Ok(value.unwrap_or_default())
}

/// Expands `$(NAME)` references to earlier variables; `$$` escapes a `$`. Unknown references
/// stay as written, as in Kubernetes.
fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut output = String::new();
    let mut rest = input;
    while let Some(index) = rest.find('$') {
        output.push_str(&rest[..index]);
        let after = &rest[index + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            output.push('$');
            rest = stripped;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|s| s.split_once(')')) {
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => output.push_str(value),
                None => output.push_str(&format!("$({name})")),
            }
            rest = tail;
        } else {
            output.push('$');
            rest = after;
        }
    }
    output.push_str(rest);
    output
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

/// The exit code Kubernetes reports: the process's code, or 128 plus the signal number.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(128)
}

/// Re-signs each token of a running pod once 80 % of its lifetime has passed on the model
/// clock, and returns how many were rewritten.
pub(crate) fn refresh_pod_tokens(shared: &Shared, key: &Key) -> Result<usize, ClusterError> {
    let now = shared.now();
    let mut store = shared.store();
    let Some(record) = store.pods.get_mut(key) else {
        return Ok(0);
    };
    if is_finished(&record.pod) {
        return Ok(0);
    }
    let mut rotated = 0;
    for file in &mut record.tokens {
        if now < file.token.refresh_at() {
            continue;
        }
        let token = token::sign(&file.request, &shared.config.signing_key, now);
        write_file_atomically(&file.path, token.jwt.as_bytes(), file.mode)?;
        tracing::info!(path = %file.path.display(), expires_at = %token.expires_at, "projected token rotated");
        file.token = token;
        rotated += 1;
    }
    Ok(rotated)
}

fn is_finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Writes through a temporary file and a rename, so readers never see a partial token.
fn write_file_atomically(path: &Path, content: &[u8], mode: u32) -> Result<(), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |action, source| ClusterError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&temporary, content).map_err(|e| io("write", e))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("set the mode of", e))?;
    std::fs::rename(&temporary, path).map_err(|e| io("replace", e))
}

fn create_dir(path: &Path) -> Result<(), ClusterError> {
    std::fs::create_dir_all(path).map_err(|source| ClusterError::Io {
        action: "create the directory",
        path: path.to_owned(),
        source,
    })
}

/// Applies `change` to a stored pod and wakes status waiters.
fn update_pod(shared: &Shared, key: &Key, change: impl FnOnce(&mut Pod)) {
    if let Some(record) = shared.store().pods.get_mut(key) {
        change(&mut record.pod);
    }
    shared.notify_status();
}

fn finish_pod(shared: &Shared, key: &Key, phase: &str, message: Option<String>) {
    tracing::info!(phase, "pod finished");
    update_pod(shared, key, |pod| {
        let status = pod.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_owned());
        if message.is_some() {
            status.message = message;
        }
    });
}

fn set_all_waiting(shared: &Shared, key: &Key, blocked: &Blocked) {
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

fn set_terminated(
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

fn set_state(shared: &Shared, key: &Key, name: &str, init: bool, state: ContainerState) {
    update_pod(shared, key, |pod| put_state(pod, name, init, state));
}

fn put_state(pod: &mut Pod, name: &str, init: bool, state: ContainerState) {
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

/// The `ErrImagePull` message of a pod that cannot start, if it is stuck on that.
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

fn waiting_states(pod: &Pod) -> impl Iterator<Item = &ContainerStateWaiting> {
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

/// The log file `kubectl logs` shows for a pod: the default container's.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_strips_tag_and_digest() {
        assert_eq!(image_repository("a.io/b/c:1.0"), "a.io/b/c");
        assert_eq!(image_repository("a.io/b/c@sha256:00"), "a.io/b/c");
        assert_eq!(image_repository("localhost:5000/c"), "localhost:5000/c");
        assert_eq!(image_repository("localhost:5000/c:tag"), "localhost:5000/c");
        assert_eq!(image_repository("busybox"), "busybox");
    }

    #[test]
    fn expand_replaces_known_references() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn env_pointing_into_mount_is_mapped() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p, namespace: default}\nspec:\n  containers:\n    - name: c\n      \
             env:\n        - {name: F, value: /var/run/secrets/azure/tokens/azure-identity-token}\n        \
             - {name: G, value: /var/run/secrets/azure/tokensX}\n      \
             volumeMounts:\n        - {name: v, mountPath: /var/run/secrets/azure/tokens}\n",
        )
        .unwrap();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let env = resolve_env(
            &Store::default(),
            &pod,
            Path::new("/state/pods/p"),
            container,
        )
        .unwrap();
        let env: BTreeMap<_, _> = env.into_iter().collect();
        assert_eq!(
            env["F"],
            "/state/pods/p/var/run/secrets/azure/tokens/azure-identity-token"
        );
        assert_eq!(env["G"], "/var/run/secrets/azure/tokensX");
    }

    #[test]
    fn missing_config_map_blocks() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p, namespace: default}\nspec:\n  containers:\n    - name: c\n      \
             env:\n        - name: X\n          valueFrom: {configMapKeyRef: {name: cm, key: k}}\n",
        )
        .unwrap();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let error = resolve_env(&Store::default(), &pod, Path::new("/r"), container).unwrap_err();
        assert_eq!(error, "configmap \"cm\" not found");
    }
}
