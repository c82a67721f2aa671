//! Pod volumes in the embedded kubelet: each volume is a directory `volumes/<name>` in the
//! pod folder and each mount path a symlink to it. Projected service account tokens are
//! signed here and rotated once 80 % of their lifetime has passed on the model clock.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, ServiceAccountTokenProjection, Volume};

use super::ClusterError;
use super::embedded::{Key, Shared, Store};
use super::kubelet::{Blocked, blocked};
use super::token::{self, ObjectRef, ProjectedToken, TokenRequest};

/// A projected service account token written into a pod's volume.
pub(crate) struct TokenFile {
    pub request: TokenRequest,
    pub path: PathBuf,
    pub mode: u32,
    pub token: ProjectedToken,
}

/// Writes one volume's files and returns the tokens it holds.
pub(crate) fn write_volume(
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

pub(crate) fn mount_failed(volume: &Volume, message: String) -> Blocked {
    blocked(
        "ContainerCreating",
        format!(
            "MountVolume.SetUp failed for volume \"{}\" : {message}",
            volume.name
        ),
    )
}

pub(crate) fn token_request(
    shared: &Shared,
    store: &mut Store,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
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

pub(crate) type Files = Vec<(String, Vec<u8>)>;

pub(crate) fn config_map_files(
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

pub(crate) fn secret_files(
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
pub(crate) fn link_mounts(
    root: &Path,
    volumes_dir: &Path,
    container: &Container,
) -> Result<(), ClusterError> {
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

pub(crate) fn is_finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Writes through a temporary file and a rename, so readers never see a partial token.
pub(crate) fn write_file_atomically(
    path: &Path,
    content: &[u8],
    mode: u32,
) -> Result<(), ClusterError> {
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

pub(crate) fn create_dir(path: &Path) -> Result<(), ClusterError> {
    std::fs::create_dir_all(path).map_err(|source| ClusterError::Io {
        action: "create the directory",
        path: path.to_owned(),
        source,
    })
}
