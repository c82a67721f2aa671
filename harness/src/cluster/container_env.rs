//! The command and environment of a container process: image mappings, `command` and
//! `args`, `envFrom`, `env` with its references, and `$(VAR)` expansion.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use super::embedded::{SAMPLE_IMAGE, Shared, Store};
use super::volumes::{config_map_files, secret_files};

/// Finds the command for a container's image: the image's mapping, then `command` and `args`
/// as Kubernetes applies them over an image's entrypoint.
pub(crate) fn resolve_argv(shared: &Shared, container: &Container) -> Result<Vec<String>, String> {
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
pub(crate) fn image_repository(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    match without_digest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => without_digest,
    }
}

/// Resolves `envFrom` and `env` as the kubelet does (`env` wins), then maps values that point
/// into a mounted volume to the pod folder.
pub(crate) fn resolve_env(
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
pub(crate) fn env_value(
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
pub(crate) fn field_value(pod: &Pod, path: &str) -> Result<String, String> {
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
pub(crate) fn expand(input: &str, env: &[(String, String)]) -> String {
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
