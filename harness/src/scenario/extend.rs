//! Reuse of a base scenario: the `changes` that replace, insert, remove and patch its steps
//! by `id`, including edits of the manifests of a `kubectl apply` step.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{Change, ManifestPatch, MapPatch, RawStep, ScenarioError};

/// Applies `changes` (raw YAML, one per entry of the file's `changes` list, whose lines are
/// `lines`) to the base scenario's steps.
pub(super) fn apply_changes(
    file: &Path,
    mut steps: Vec<RawStep>,
    changes: Vec<Value>,
    lines: &[usize],
) -> Result<Vec<RawStep>, ScenarioError> {
    for (position, value) in changes.into_iter().enumerate() {
        let line = lines.get(position).copied().unwrap_or(1);
        let error = |message: String| ScenarioError::Change {
            file: file.to_path_buf(),
            line,
            index: position + 1,
            message,
        };
        let change: Change = serde_yaml::from_value(value).map_err(|e| error(e.to_string()))?;
        apply_change(file, line, &mut steps, change).map_err(error)?;
    }
    Ok(steps)
}

/// What a change does, read from whichever of its operation keys is present.
enum Operation {
    Replace,
    InsertBefore,
    InsertAfter,
    Remove,
    Patch,
}

fn apply_change(
    file: &Path,
    line: usize,
    steps: &mut Vec<RawStep>,
    change: Change,
) -> Result<(), String> {
    let operations = [
        (Operation::Replace, &change.replace),
        (Operation::InsertBefore, &change.insert_before),
        (Operation::InsertAfter, &change.insert_after),
        (Operation::Remove, &change.remove),
        (Operation::Patch, &change.patch),
    ];
    let mut named = operations
        .into_iter()
        .filter_map(|(operation, id)| id.clone().map(|id| (operation, id)));
    let (operation, id) = match (named.next(), named.next()) {
        (Some(one), None) => one,
        (None, _) => {
            return Err("a change needs one of `replace`, `insert-before`, `insert-after`, `remove` or `patch`, naming a step `id`".into());
        }
        (Some(_), Some(_)) => {
            return Err("a change does one thing; split `replace`, `insert-*`, `remove` and `patch` into separate changes".into());
        }
    };
    let position = steps
        .iter()
        .position(|s| s.id.as_deref() == Some(id.as_str()))
        .ok_or_else(|| {
            let ids: Vec<&str> = steps.iter().filter_map(|s| s.id.as_deref()).collect();
            format!(
                "no step has id `{id}`; the base scenario's ids are: {}",
                ids.join(", ")
            )
        })?;
    let new_steps = || -> Result<Vec<RawStep>, String> {
        let values = change.steps.clone().ok_or_else(|| {
            format!("`steps` is missing; list the steps to put in place of or next to `{id}`")
        })?;
        Ok(values
            .into_iter()
            .map(|value| RawStep::new(file, line, value))
            .collect())
    };
    let patch_fields = change.set.is_some()
        || change.expect_error.is_some()
        || change.timeout.is_some()
        || !change.manifest.is_empty();
    if !matches!(operation, Operation::Patch) && patch_fields {
        return Err(
            "`set`, `expect_error`, `timeout` and `manifest` belong to a `patch` change".into(),
        );
    }
    match operation {
        Operation::Replace => {
            steps.splice(position..=position, new_steps()?);
        }
        Operation::InsertBefore => {
            steps.splice(position..position, new_steps()?);
        }
        Operation::InsertAfter => {
            steps.splice(position + 1..position + 1, new_steps()?);
        }
        Operation::Remove => {
            steps.remove(position);
        }
        Operation::Patch => {
            if change.steps.is_some() {
                return Err("`steps` belongs to `replace` and `insert-*` changes; a `patch` edits the step with `set`, `expect_error`, `timeout` or `manifest`".into());
            }
            patch_step(&mut steps[position], &change)?;
        }
    }
    Ok(())
}

/// Edits one step in place; the step keeps its base file and line.
fn patch_step(step: &mut RawStep, change: &Change) -> Result<(), String> {
    let command = step.command.clone();
    let Some(map) = step.value.as_mapping_mut() else {
        return Err(format!("step `{command}` is not a mapping"));
    };
    if let Some(set) = &change.set {
        let Some(fields) = set.as_mapping() else {
            return Err("`set` is a mapping of the command's fields to new values".into());
        };
        let Some(arguments) = map
            .get_mut(command.as_str())
            .and_then(Value::as_mapping_mut)
        else {
            return Err(format!(
                "step `{command}` takes no fields to `set`; replace the step instead"
            ));
        };
        for (key, value) in fields {
            if value.is_null() {
                arguments.remove(key);
            } else {
                arguments.insert(key.clone(), value.clone());
            }
        }
    }
    if let Some(expected) = &change.expect_error {
        let value =
            serde_yaml::to_value(expected_error_value(expected)).map_err(|e| e.to_string())?;
        map.insert("expect_error".into(), value);
    }
    if let Some(timeout) = &change.timeout {
        map.insert("timeout".into(), Value::String(timeout.clone()));
    }
    if !change.manifest.is_empty() {
        let Some(Value::String(manifests)) = map.get_mut("kubectl apply") else {
            return Err(format!(
                "`manifest` edits a `kubectl apply` step, and `{}` is `{command}`",
                step.id.as_deref().unwrap_or("")
            ));
        };
        *manifests = patch_manifests(manifests, &change.manifest)?;
    }
    Ok(())
}

fn expected_error_value(expected: &super::ExpectedError) -> Mapping {
    let mut map = Mapping::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            map.insert(key.into(), value);
        }
    };
    put("code", expected.code.clone().map(Value::String));
    put("status", expected.status.map(|s| Value::Number(s.into())));
    put("condition", expected.condition.clone().map(Value::String));
    put("message", expected.message.clone().map(Value::String));
    map
}

/// Applies manifest patches to multi-document YAML and writes it back.
fn patch_manifests(text: &str, patches: &[ManifestPatch]) -> Result<String, String> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| format!("the manifests are not valid YAML: {e}"))?;
        documents.push(value);
    }
    for patch in patches {
        let mut matched = false;
        for document in documents.iter_mut() {
            let kind = document.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = document
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if kind != patch.kind || patch.name.as_deref().is_some_and(|n| n != name) {
                continue;
            }
            matched = true;
            patch_object(document, patch)?;
        }
        if !matched {
            return Err(format!(
                "no {} {}in the manifests of this step",
                patch.kind,
                patch
                    .name
                    .as_deref()
                    .map(|n| format!("named {n} "))
                    .unwrap_or_default()
            ));
        }
    }
    let mut out = String::new();
    for (position, document) in documents.iter().enumerate() {
        if position > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(document).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn patch_object(object: &mut Value, patch: &ManifestPatch) -> Result<(), String> {
    let is_job = patch.kind == "Job";
    if let Some(name) = &patch.rename {
        *entry(object, &["metadata", "name"]) = Value::String(name.clone());
    }
    if let Some(limit) = patch.backoff_limit {
        if !is_job {
            return Err("`backoff-limit` applies to a Job".into());
        }
        *entry(object, &["spec", "backoffLimit"]) = Value::Number(limit.into());
    }
    let pod_metadata: &[&str] = if is_job {
        &["spec", "template", "metadata"]
    } else {
        &["metadata"]
    };
    for (field, map_patch) in [
        ("annotations", &patch.annotations),
        ("labels", &patch.labels),
    ] {
        let Some(map_patch) = map_patch else { continue };
        let mut path = pod_metadata.to_vec();
        path.push(field);
        let map = entry(object, &path);
        if !map.is_mapping() {
            *map = Value::Mapping(Mapping::new());
        }
        let map = map.as_mapping_mut().expect("set to a mapping above");
        for key in &map_patch.remove {
            map.remove(key.as_str());
        }
        for (key, value) in &map_patch.set {
            map.insert(key.as_str().into(), Value::String(value.clone()));
        }
    }
    if let Some(env) = &patch.env {
        patch_env(object, is_job, env)?;
    }
    Ok(())
}

fn patch_env(object: &mut Value, is_job: bool, patch: &MapPatch) -> Result<(), String> {
    let path: &[&str] = if is_job {
        &["spec", "template", "spec", "containers"]
    } else {
        &["spec", "containers"]
    };
    let Some(containers) = entry(object, path).as_sequence_mut() else {
        return Err("`env` edits containers, and the object has none".into());
    };
    for container in containers {
        let env = entry(container, &["env"]);
        if !env.is_sequence() {
            *env = Value::Sequence(Vec::new());
        }
        let list = env.as_sequence_mut().expect("set to a sequence above");
        list.retain(|variable| {
            let name = variable.get("name").and_then(Value::as_str).unwrap_or("");
            !patch.remove.iter().any(|r| r == name) && !patch.set.contains_key(name)
        });
        for (name, value) in &patch.set {
            let mut variable = Mapping::new();
            variable.insert("name".into(), Value::String(name.clone()));
            variable.insert("value".into(), Value::String(value.clone()));
            list.push(Value::Mapping(variable));
        }
    }
    Ok(())
}

/// The value at `path`, created as empty mappings on the way.
fn entry<'v>(value: &'v mut Value, path: &[&str]) -> &'v mut Value {
    let mut current = value;
    for key in path {
        if !current.is_mapping() {
            *current = Value::Mapping(Mapping::new());
        }
        let map = current.as_mapping_mut().expect("set to a mapping above");
        current = map.entry((*key).into()).or_insert(Value::Null);
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n  annotations:\n    azure.workload.identity/client-id: ${CLIENT_ID}\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: job\nspec:\n  template:\n    metadata:\n      labels:\n        azure.workload.identity/use: \"true\"\n    spec:\n      containers:\n        - name: c\n          image: i\n          env:\n            - name: A\n              value: a\n            - name: B\n              value: b\n";

    fn patch(yaml: &str) -> ManifestPatch {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn env_is_set_and_removed_in_job_containers() {
        let out = patch_manifests(
            MANIFESTS,
            &[patch("{kind: Job, env: {set: {C: c, A: z}, remove: [B]}}")],
        )
        .unwrap();
        let job: Value = serde_yaml::Deserializer::from_str(&out)
            .nth(1)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .unwrap();
        let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
        let names: Vec<&str> = env
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["A", "C"]);
        assert_eq!(env[0]["value"].as_str(), Some("z"));
        assert!(out.contains("${CLIENT_ID}"), "{out}");
    }

    #[test]
    fn job_labels_are_the_pod_template_labels() {
        let out = patch_manifests(
            MANIFESTS,
            &[patch(
                "{kind: Job, labels: {remove: [azure.workload.identity/use]}}",
            )],
        )
        .unwrap();
        assert!(!out.contains("azure.workload.identity/use"), "{out}");
    }

    #[test]
    fn unknown_kind_is_reported() {
        let error = patch_manifests(MANIFESTS, &[patch("{kind: Deployment}")]).unwrap_err();
        assert!(error.contains("no Deployment"), "{error}");
    }
}
