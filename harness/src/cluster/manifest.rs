//! Parsing of the multi-document YAML that `kubectl apply -f` takes into typed `k8s-openapi`
//! objects.
//!
//! k8s-openapi checks `apiVersion` and `kind` against the type while deserializing, so a
//! `Job` written with `apiVersion: v1` is rejected as the API server would. Unknown fields are
//! ignored, unlike the strict field validation kubectl requests by default since 1.27.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// Namespace given to objects whose manifest names none, as kubectl does without `-n`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Kinds the embedded cluster accepts, in the form used by error messages.
pub const SUPPORTED_KINDS: &str =
    "v1 ServiceAccount, batch/v1 Job, v1 Pod, v1 ConfigMap, v1 Secret";

/// One object of a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    ServiceAccount(ServiceAccount),
    Job(Box<Job>),
    Pod(Box<Pod>),
    ConfigMap(ConfigMap),
    Secret(Secret),
}

impl Object {
    /// Returns the object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::ServiceAccount(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::ServiceAccount(o) => &mut o.metadata,
            Object::Job(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
        }
    }

    /// Returns the resource name kubectl prints before the object name (`job.batch/x created`).
    pub fn kubectl_resource(&self) -> &'static str {
        match self {
            Object::ServiceAccount(_) => "serviceaccount",
            Object::Job(_) => "job.batch",
            Object::Pod(_) => "pod",
            Object::ConfigMap(_) => "configmap",
            Object::Secret(_) => "secret",
        }
    }

    /// Returns the object's name, empty when the manifest has none.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// Returns the object's namespace after defaulting.
    pub fn namespace(&self) -> &str {
        self.metadata()
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// A manifest that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A document is not valid YAML or does not match the schema of its kind.
    #[error("document {document}{}: {message}", line_suffix(*line))]
    Invalid {
        /// Zero-based index of the document in the input.
        document: usize,
        /// One-based line in the whole input, when the YAML parser reports one.
        line: Option<usize>,
        message: String,
    },
    /// A document lacks `apiVersion` or `kind`, which kubectl needs to pick the resource.
    #[error(
        "document {document}: missing `apiVersion` or `kind`; every object needs both, \
         for example `apiVersion: v1` and `kind: ServiceAccount`"
    )]
    MissingType {
        /// Zero-based index of the document in the input.
        document: usize,
    },
    /// A document has a kind the embedded cluster does not serve.
    #[error(
        "document {document}: kind {api_version} {kind} is not supported by the embedded \
         cluster; supported kinds: {SUPPORTED_KINDS}"
    )]
    UnsupportedKind {
        /// Zero-based index of the document in the input.
        document: usize,
        api_version: String,
        kind: String,
    },
    /// A document has no `metadata.name`; `generateName` is not supported by `apply`.
    #[error("document {document}: {kind} has no metadata.name; add a name to the manifest")]
    MissingName {
        /// Zero-based index of the document in the input.
        document: usize,
        kind: String,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// Parses every document of `yaml` into a typed object, giving objects without a namespace
/// the `default` namespace. Empty documents (`---` with nothing after it) are skipped.
pub fn parse_manifests(yaml: &str) -> Result<Vec<Object>, ManifestError> {
    // The first pass reads each document as an untyped value to find its kind. The second
    // pass deserializes the same document straight into its type, so schema errors keep
    // the line numbers of the whole input.
    let mut kinds = Vec::new();
    for (document, de) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml::Value::deserialize(de).map_err(|e| invalid(document, &e))?;
        kinds.push(read_type(document, &value)?);
    }

    let mut objects = Vec::new();
    let documents = serde_yaml::Deserializer::from_str(yaml).enumerate();
    for ((document, de), kind) in documents.zip(kinds) {
        let Some((api_version, kind)) = kind else {
            continue;
        };
        let parsed = match (api_version.as_str(), kind.as_str()) {
            ("v1", "ServiceAccount") => ServiceAccount::deserialize(de).map(Object::ServiceAccount),
            ("batch/v1", "Job") => Job::deserialize(de).map(|job| Object::Job(Box::new(job))),
            ("v1", "Pod") => Pod::deserialize(de).map(|pod| Object::Pod(Box::new(pod))),
            ("v1", "ConfigMap") => ConfigMap::deserialize(de).map(Object::ConfigMap),
            ("v1", "Secret") => Secret::deserialize(de).map(Object::Secret),
            _ => {
                return Err(ManifestError::UnsupportedKind {
                    document,
                    api_version,
                    kind,
                });
            }
        };
        let mut object = parsed.map_err(|e| invalid(document, &e))?;
        if object.name().is_empty() {
            return Err(ManifestError::MissingName { document, kind });
        }
        let metadata = object.metadata_mut();
        if metadata.namespace.as_deref().is_none_or(str::is_empty) {
            metadata.namespace = Some(DEFAULT_NAMESPACE.to_owned());
        }
        objects.push(object);
    }
    Ok(objects)
}

/// Reads `apiVersion` and `kind`, or `None` for an empty document.
fn read_type(
    document: usize,
    value: &serde_yaml::Value,
) -> Result<Option<(String, String)>, ManifestError> {
    if value.is_null() {
        return Ok(None);
    }
    let field = |name: &str| value.get(name).and_then(serde_yaml::Value::as_str);
    match (field("apiVersion"), field("kind")) {
        (Some(api_version), Some(kind)) => Ok(Some((api_version.to_owned(), kind.to_owned()))),
        _ => Err(ManifestError::MissingType { document }),
    }
}

fn invalid(document: usize, error: &serde_yaml::Error) -> ManifestError {
    ManifestError::Invalid {
        document,
        line: error.location().map(|l| l.line()),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: producer
  annotations:
    azure.workload.identity/client-id: "00000000-0000-0000-0000-000000000001"
---
apiVersion: batch/v1
kind: Job
metadata:
  name: myproducer
  namespace: apps
spec:
  template:
    metadata:
      labels:
        azure.workload.identity/use: "true"
    spec:
      serviceAccountName: producer
      restartPolicy: Never
      containers:
        - name: producer
          image: ghcr.io/azure-samples/aks-app-samples/servicebusdemo:latest
---
"#;

    #[test]
    fn parses_documents_in_order() {
        let objects = parse_manifests(SAMPLE).unwrap();
        assert_eq!(objects.len(), 2);
        assert!(matches!(objects[0], Object::ServiceAccount(_)));
        assert!(matches!(objects[1], Object::Job(_)));
        assert_eq!(objects[1].name(), "myproducer");
    }

    #[test]
    fn namespace_defaults_to_default() {
        let objects = parse_manifests(SAMPLE).unwrap();
        assert_eq!(objects[0].namespace(), "default");
        assert_eq!(objects[1].namespace(), "apps");
    }

    #[test]
    fn kubectl_resource_names() {
        let objects = parse_manifests(SAMPLE).unwrap();
        assert_eq!(objects[0].kubectl_resource(), "serviceaccount");
        assert_eq!(objects[1].kubectl_resource(), "job.batch");
    }

    #[test]
    fn unsupported_kind_lists_supported_kinds() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        let error = parse_manifests(yaml).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("apps/v1 Deployment"), "{message}");
        assert!(message.contains("batch/v1 Job"), "{message}");
    }

    #[test]
    fn schema_error_names_document_and_line() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: 5\n";
        let error = parse_manifests(yaml).unwrap_err();
        let ManifestError::Invalid { document, line, .. } = &error else {
            panic!("expected Invalid, got {error:?}");
        };
        assert_eq!(*document, 1);
        assert_eq!(*line, Some(9));
        assert!(
            error.to_string().starts_with("document 1 (line 9): "),
            "{error}"
        );
    }

    #[test]
    fn wrong_api_version_is_unsupported() {
        let yaml = "apiVersion: v1\nkind: Job\nmetadata: {name: j}\n";
        let error = parse_manifests(yaml).unwrap_err();
        assert!(
            matches!(error, ManifestError::UnsupportedKind { .. }),
            "{error}"
        );
    }

    #[test]
    fn missing_kind_is_reported() {
        let error = parse_manifests("apiVersion: v1\nmetadata: {name: x}\n").unwrap_err();
        assert!(matches!(error, ManifestError::MissingType { document: 0 }));
    }

    #[test]
    fn missing_name_is_reported() {
        let error = parse_manifests("apiVersion: v1\nkind: Secret\nmetadata: {}\n").unwrap_err();
        assert!(matches!(
            error,
            ManifestError::MissingName { document: 0, .. }
        ));
    }

    #[test]
    fn invalid_yaml_names_line() {
        let error = parse_manifests("apiVersion: v1\nkind: [unclosed\n").unwrap_err();
        assert!(matches!(
            error,
            ManifestError::Invalid {
                document: 0,
                line: Some(_),
                ..
            }
        ));
    }
}
