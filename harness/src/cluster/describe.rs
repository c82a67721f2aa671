//! `kubectl describe pod` output for a stored pod: metadata, containers with their env and
//! mounts, and volumes, laid out as kubectl prints them.

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, EnvVar, Pod, Volume};

/// Formats `pod` as `kubectl describe pod` does, without the events section.
pub(crate) fn describe_pod(pod: &Pod) -> String {
    let mut out = String::new();
    let metadata = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();

    field(&mut out, 0, "Name", metadata.name.as_deref().unwrap_or(""));
    field(
        &mut out,
        0,
        "Namespace",
        metadata.namespace.as_deref().unwrap_or(""),
    );
    field(
        &mut out,
        0,
        "Service Account",
        spec.service_account_name.as_deref().unwrap_or("default"),
    );
    field(
        &mut out,
        0,
        "Node",
        spec.node_name.as_deref().unwrap_or("<none>"),
    );
    map_field(&mut out, "Labels", &metadata.labels);
    map_field(&mut out, "Annotations", &metadata.annotations);
    field(
        &mut out,
        0,
        "Status",
        status.phase.as_deref().unwrap_or("Pending"),
    );
    if let Some(message) = &status.message {
        field(&mut out, 0, "Message", message);
    }

    let init_statuses = status.init_container_statuses.unwrap_or_default();
    let statuses = status.container_statuses.unwrap_or_default();
    if let Some(init) = spec.init_containers.as_ref().filter(|c| !c.is_empty()) {
        out.push_str("Init Containers:\n");
        for container in init {
            describe_container(&mut out, container, &init_statuses);
        }
    }
    out.push_str("Containers:\n");
    for container in &spec.containers {
        describe_container(&mut out, container, &statuses);
    }

    out.push_str("Volumes:\n");
    for volume in spec.volumes.iter().flatten() {
        describe_volume(&mut out, volume);
    }
    out
}

/// Width of the label column, as kubectl's tab writer aligns the top-level fields.
const LABEL_WIDTH: usize = 18;
/// Width of the label column in the volumes section, which kubectl aligns separately.
const VOLUME_LABEL_WIDTH: usize = 29;

fn field(out: &mut String, indent: usize, name: &str, value: &str) {
    padded_field(out, indent, name, value, LABEL_WIDTH);
}

fn volume_field(out: &mut String, name: &str, value: &str) {
    padded_field(out, 4, name, value, VOLUME_LABEL_WIDTH);
}

fn padded_field(out: &mut String, indent: usize, name: &str, value: &str, width: usize) {
    let label = format!("{}{name}:", " ".repeat(indent));
    let width = width.max(label.len() + 2);
    let _ = writeln!(out, "{label:<width$}{value}");
}

fn map_field(out: &mut String, name: &str, map: &Option<BTreeMap<String, String>>) {
    let entries: Vec<String> = map
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if entries.is_empty() {
        field(out, 0, name, "<none>");
        return;
    }
    for (index, entry) in entries.iter().enumerate() {
        let label = if index == 0 { name } else { "" };
        if label.is_empty() {
            let _ = writeln!(out, "{:<18}{entry}", "");
        } else {
            field(out, 0, label, entry);
        }
    }
}

fn describe_container(out: &mut String, container: &Container, statuses: &[ContainerStatus]) {
    let _ = writeln!(out, "  {}:", container.name);
    field(out, 4, "Image", container.image.as_deref().unwrap_or(""));
    if let Some(command) = &container.command {
        let _ = writeln!(out, "    Command:");
        for part in command {
            let _ = writeln!(out, "      {part}");
        }
    }
    if let Some(args) = &container.args {
        let _ = writeln!(out, "    Args:");
        for part in args {
            let _ = writeln!(out, "      {part}");
        }
    }
    let state = statuses
        .iter()
        .find(|s| s.name == container.name)
        .and_then(|s| s.state.clone())
        .unwrap_or_default();
    if let Some(terminated) = &state.terminated {
        field(out, 4, "State", "Terminated");
        field(out, 6, "Reason", terminated.reason.as_deref().unwrap_or(""));
        if let Some(message) = &terminated.message {
            field(out, 6, "Message", message);
        }
        field(out, 6, "Exit Code", &terminated.exit_code.to_string());
    } else if let Some(waiting) = &state.waiting {
        field(out, 4, "State", "Waiting");
        field(out, 6, "Reason", waiting.reason.as_deref().unwrap_or(""));
        if let Some(message) = &waiting.message {
            field(out, 6, "Message", message);
        }
    } else if state.running.is_some() {
        field(out, 4, "State", "Running");
    } else {
        field(out, 4, "State", "Waiting");
    }

    let env = container.env.clone().unwrap_or_default();
    if env.is_empty() && container.env_from.is_none() {
        field(out, 4, "Environment", "<none>");
    } else {
        out.push_str("    Environment:\n");
        let width = env.iter().map(|v| v.name.len() + 1).max().unwrap_or(0);
        for var in &env {
            let label = format!("{}:", var.name);
            let _ = writeln!(out, "      {label:<width$}  {}", env_display(var));
        }
        for source in container.env_from.iter().flatten() {
            if let Some(map) = &source.config_map_ref {
                let _ = writeln!(
                    out,
                    "      {}  ConfigMap  Optional: {}",
                    map.name,
                    map.optional.unwrap_or(false)
                );
            }
            if let Some(secret) = &source.secret_ref {
                let _ = writeln!(
                    out,
                    "      {}  Secret  Optional: {}",
                    secret.name,
                    secret.optional.unwrap_or(false)
                );
            }
        }
    }

    let mounts = container.volume_mounts.clone().unwrap_or_default();
    if mounts.is_empty() {
        field(out, 4, "Mounts", "<none>");
    } else {
        out.push_str("    Mounts:\n");
        for mount in &mounts {
            let access = if mount.read_only == Some(true) {
                "ro"
            } else {
                "rw"
            };
            let _ = writeln!(
                out,
                "      {} from {} ({access})",
                mount.mount_path, mount.name
            );
        }
    }
}

/// Formats the value column of an env var, with kubectl's wording for references.
fn env_display(var: &EnvVar) -> String {
    let Some(source) = &var.value_from else {
        return var.value.clone().unwrap_or_default();
    };
    if let Some(selector) = &source.config_map_key_ref {
        return format!(
            "<set to the key '{}' of config map '{}'>  Optional: {}",
            selector.key,
            selector.name,
            selector.optional.unwrap_or(false)
        );
    }
    if let Some(selector) = &source.secret_key_ref {
        return format!(
            "<set to the key '{}' in secret '{}'>  Optional: {}",
            selector.key,
            selector.name,
            selector.optional.unwrap_or(false)
        );
    }
    if let Some(field) = &source.field_ref {
        let version = field.api_version.as_deref().unwrap_or("v1");
        return format!(" ({version}:{})", field.field_path);
    }
    String::new()
}

fn describe_volume(out: &mut String, volume: &Volume) {
    let _ = writeln!(out, "  {}:", volume.name);
    if let Some(projected) = &volume.projected {
        volume_field(
            out,
            "Type",
            "Projected (a volume that contains injected data from multiple sources)",
        );
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                let seconds = token.expiration_seconds.unwrap_or(3600).to_string();
                volume_field(out, "TokenExpirationSeconds", &seconds);
            }
            if let Some(map) = &source.config_map {
                volume_field(out, "ConfigMapName", &map.name);
            }
            if let Some(secret) = &source.secret {
                volume_field(out, "SecretName", &secret.name);
            }
        }
    } else if let Some(map) = &volume.config_map {
        volume_field(out, "Type", "ConfigMap (a volume populated by a ConfigMap)");
        volume_field(out, "Name", &map.name);
        volume_field(out, "Optional", &map.optional.unwrap_or(false).to_string());
    } else if let Some(secret) = &volume.secret {
        volume_field(out, "Type", "Secret (a volume populated by a Secret)");
        volume_field(
            out,
            "SecretName",
            secret.secret_name.as_deref().unwrap_or(""),
        );
        volume_field(
            out,
            "Optional",
            &secret.optional.unwrap_or(false).to_string(),
        );
    } else if volume.empty_dir.is_some() {
        volume_field(
            out,
            "Type",
            "EmptyDir (a temporary directory that shares a pod's lifetime)",
        );
    } else {
        volume_field(out, "Type", "<unsupported in the embedded cluster>");
    }
}
