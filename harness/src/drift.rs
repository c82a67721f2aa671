//! Drift between two runs: what each ARM operation returned (status, error code, and the set
//! of JSON field paths), recorded with `xtenant run --record FILE` and compared with
//! `xtenant drift A.json B.json`.
//!
//! Recording a fake run and a live run of the same scenario shows where the fakes' responses
//! differ from Azure's. Values are not recorded, only field paths, so ids and timestamps do
//! not count as drift.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one operation returned over a run. An operation that ran more than once (polls)
/// contributes every status, code and field it returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub statuses: BTreeSet<u16>,
    pub error_codes: BTreeSet<String>,
    /// JSON paths such as `properties.oidcIssuerProfile.issuerUrl`; `[]` marks array items.
    pub fields: BTreeSet<String>,
}

/// Every operation of a run, by [`operation_key`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub operations: BTreeMap<String, OperationRecord>,
}

impl Recording {
    /// Reads a recording written by [`Recorder::write`].
    pub fn read(path: &Path) -> Result<Self, DriftError> {
        let text = std::fs::read_to_string(path).map_err(|source| DriftError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DriftError::Parse {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Failure to read or write a recording.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("failed to read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an xtenant recording: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

/// Collects operation records during a run; clones share one recording.
#[derive(Clone, Debug, Default)]
pub struct Recorder(Arc<Mutex<Recording>>);

impl Recorder {
    /// Adds one response to the record of its operation.
    pub fn record(&self, method: &str, url: &str, status: u16, body: &Value) {
        let key = operation_key(method, url);
        let mut recording = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let record = recording.operations.entry(key).or_default();
        record.statuses.insert(status);
        if let Some(code) = body["error"]["code"].as_str().filter(|c| !c.is_empty()) {
            record.error_codes.insert(code.to_owned());
        }
        collect_fields(body, String::new(), &mut record.fields);
    }

    /// Returns a copy of what has been recorded so far.
    pub fn snapshot(&self) -> Recording {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes the recording as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), DriftError> {
        let text =
            serde_json::to_string_pretty(&self.snapshot()).expect("a recording serializes to JSON");
        std::fs::write(path, text).map_err(|source| DriftError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Names an operation by method and path, with the host, query and every GUID (subscription
/// ids, role assignment names, operation ids) replaced, so that runs against different
/// endpoints and subscriptions compare.
pub fn operation_key(method: &str, url: &str) -> String {
    let without_query = url.split('?').next().unwrap_or(url);
    let path = match without_query.find("://") {
        Some(scheme_end) => {
            let rest = &without_query[scheme_end + 3..];
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        None => without_query,
    };
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| {
            if uuid::Uuid::parse_str(segment).is_ok() {
                "{guid}".to_owned()
            } else {
                segment.to_owned()
            }
        })
        .collect();
    format!("{} {}", method.to_ascii_uppercase(), segments.join("/"))
}

/// Adds the path of every field under `value`; array items share the path `name[]`.
pub fn collect_fields(value: &Value, prefix: String, fields: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                fields.insert(path.clone());
                collect_fields(child, path, fields);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_fields(item, format!("{prefix}[]"), fields);
            }
        }
        _ => {}
    }
}

/// One difference between a baseline run and a compared run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The operation ran only in the baseline.
    OperationMissing {
        operation: String,
    },
    /// The operation ran only in the compared run.
    OperationNew {
        operation: String,
    },
    StatusChanged {
        operation: String,
        before: BTreeSet<u16>,
        after: BTreeSet<u16>,
    },
    FieldMissing {
        operation: String,
        field: String,
    },
    FieldNew {
        operation: String,
        field: String,
    },
    ErrorCodeMissing {
        operation: String,
        code: String,
    },
    ErrorCodeNew {
        operation: String,
        code: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::OperationMissing { operation } => {
                write!(f, "{operation}: operation missing")
            }
            Difference::OperationNew { operation } => write!(f, "{operation}: new operation"),
            Difference::StatusChanged {
                operation,
                before,
                after,
            } => write!(
                f,
                "{operation}: status changed from {before:?} to {after:?}"
            ),
            Difference::FieldMissing { operation, field } => {
                write!(f, "{operation}: field `{field}` missing")
            }
            Difference::FieldNew { operation, field } => {
                write!(f, "{operation}: new field `{field}`")
            }
            Difference::ErrorCodeMissing { operation, code } => {
                write!(f, "{operation}: error code {code} missing")
            }
            Difference::ErrorCodeNew { operation, code } => {
                write!(f, "{operation}: new error code {code}")
            }
        }
    }
}

/// Lists every difference from `baseline` to `compared`, operation by operation.
pub fn compare(baseline: &Recording, compared: &Recording) -> Vec<Difference> {
    let mut differences = Vec::new();
    let operations: BTreeSet<&String> = baseline
        .operations
        .keys()
        .chain(compared.operations.keys())
        .collect();
    for operation in operations {
        let name = || operation.clone();
        let (before, after) = match (
            baseline.operations.get(operation),
            compared.operations.get(operation),
        ) {
            (Some(before), Some(after)) => (before, after),
            (Some(_), None) => {
                differences.push(Difference::OperationMissing { operation: name() });
                continue;
            }
            (None, _) => {
                differences.push(Difference::OperationNew { operation: name() });
                continue;
            }
        };
        if before.statuses != after.statuses {
            differences.push(Difference::StatusChanged {
                operation: name(),
                before: before.statuses.clone(),
                after: after.statuses.clone(),
            });
        }
        for code in before.error_codes.difference(&after.error_codes) {
            differences.push(Difference::ErrorCodeMissing {
                operation: name(),
                code: code.clone(),
            });
        }
        for code in after.error_codes.difference(&before.error_codes) {
            differences.push(Difference::ErrorCodeNew {
                operation: name(),
                code: code.clone(),
            });
        }
        for field in before.fields.difference(&after.fields) {
            differences.push(Difference::FieldMissing {
                operation: name(),
                field: field.clone(),
            });
        }
        for field in after.fields.difference(&before.fields) {
            differences.push(Difference::FieldNew {
                operation: name(),
                field: field.clone(),
            });
        }
    }
    differences
}

/// Renders the drift report as Markdown: a heading, then one bullet per difference.
pub fn render_report(baseline: &str, compared: &str, differences: &[Difference]) -> String {
    let mut report = format!("# Drift from {baseline} to {compared}\n\n");
    if differences.is_empty() {
        report.push_str("No differences.\n");
        return report;
    }
    let _ = writeln!(report, "{} differences:\n", differences.len());
    for difference in differences {
        let _ = writeln!(report, "- {difference}");
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operation_key_replaces_host_query_and_guids() {
        let key = operation_key(
            "put",
            "https://127.0.0.1:4000/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourcegroups/rg-a?api-version=2024-11-01",
        );
        assert_eq!(key, "PUT /subscriptions/{guid}/resourcegroups/rg-a");
    }

    #[test]
    fn fields_cover_nested_objects_and_arrays() {
        let mut fields = BTreeSet::new();
        collect_fields(
            &json!({"properties": {"items": [{"name": "x"}]}, "id": "y"}),
            String::new(),
            &mut fields,
        );
        let expected: BTreeSet<String> = [
            "id",
            "properties",
            "properties.items",
            "properties.items[].name",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(fields, expected);
    }
}
