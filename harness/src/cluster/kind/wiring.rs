//! What a kind node's network would give pods on AKS, added to applied pod templates: the
//! fakes' host names resolve to the fakes' address, the run's CA is trusted through
//! `SSL_CERT_FILE`, the Service Bus endpoint points at the fake broker, and the sample image
//! runs the locally built demo image.

use serde_yaml::{Mapping, Value};

use crate::cluster::ClusterError;
use crate::cluster::SAMPLE_IMAGE;

/// ConfigMap holding the run's CA certificate, in every namespace the scenario uses.
pub const CA_CONFIG_MAP: &str = "xtenant-ca";
/// Key of the CA certificate in the ConfigMap.
pub const CA_KEY: &str = "ca.pem";
/// Directory where pods see the CA ConfigMap.
pub const CA_MOUNT_PATH: &str = "/etc/xtenant/ca";
const CA_VOLUME: &str = "xtenant-ca";

/// Pod wiring for one kind cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodWiring {
    /// Address of the fakes as pods reach it (the Docker network's gateway).
    pub fakes_address: String,
    /// Host names resolved to `fakes_address` through `hostAliases`.
    pub host_names: Vec<String>,
    /// `AZURE_SERVICEBUS_ENDPOINT` of the demo workload.
    pub servicebus_endpoint: String,
    /// Image that replaces [`SAMPLE_IMAGE`], loaded into the nodes with `kind load`.
    pub workload_image: String,
}

impl PodWiring {
    /// Rewrites every Pod, Job, Deployment, StatefulSet, DaemonSet and ReplicaSet of a
    /// multi-document manifest; other objects pass through unchanged.
    pub fn rewrite(&self, yaml: &str) -> Result<String, ClusterError> {
        let mut documents = Vec::new();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let mut value = Value::deserialize(document).map_err(|e| ClusterError::Rejected {
                message: format!("error parsing the manifest: {e}"),
            })?;
            if value.is_null() {
                continue;
            }
            if let Some(spec) = pod_spec(&mut value) {
                self.wire(spec);
            }
            documents.push(serde_yaml::to_string(&value).expect("YAML values serialize"));
        }
        Ok(documents.join("---\n"))
    }

    fn wire(&self, spec: &mut Mapping) {
        let aliases = sequence(spec, "hostAliases");
        aliases.push(yaml(serde_json::json!({
            "ip": self.fakes_address,
            "hostnames": self.host_names,
        })));
        let volumes = sequence(spec, "volumes");
        volumes.push(yaml(serde_json::json!({
            "name": CA_VOLUME,
            "configMap": { "name": CA_CONFIG_MAP },
        })));
        for list in ["initContainers", "containers"] {
            let Some(Value::Sequence(containers)) = spec.get_mut(list) else {
                continue;
            };
            for container in containers.iter_mut().filter_map(Value::as_mapping_mut) {
                self.wire_container(container);
            }
        }
    }

    fn wire_container(&self, container: &mut Mapping) {
        let image = container
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let repository = image.split(['@']).next().unwrap_or(image);
        let repository = match repository.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name,
            _ => repository,
        };
        if repository == SAMPLE_IMAGE {
            container.insert("image".into(), self.workload_image.clone().into());
            container.insert("imagePullPolicy".into(), "Never".into());
        }
        let env = sequence(container, "env");
        for (name, value) in [
            ("SSL_CERT_FILE", format!("{CA_MOUNT_PATH}/{CA_KEY}")),
            (
                "AZURE_SERVICEBUS_ENDPOINT",
                self.servicebus_endpoint.clone(),
            ),
        ] {
            let present = env
                .iter()
                .any(|var| var.get("name").and_then(Value::as_str) == Some(name));
            if !present {
                env.push(yaml(serde_json::json!({ "name": name, "value": value })));
            }
        }
        let mounts = sequence(container, "volumeMounts");
        mounts.push(yaml(serde_json::json!({
            "name": CA_VOLUME,
            "mountPath": CA_MOUNT_PATH,
            "readOnly": true,
        })));
    }
}

use serde::Deserialize as _;

fn yaml(value: serde_json::Value) -> Value {
    serde_yaml::to_value(value).expect("JSON values convert to YAML")
}

/// The pod spec of a Pod, or of the pod template of a workload object.
fn pod_spec(object: &mut Value) -> Option<&mut Mapping> {
    let kind = object.get("kind").and_then(Value::as_str)?.to_owned();
    let spec = object.get_mut("spec")?;
    let spec = match kind.as_str() {
        "Pod" => spec,
        "Job" | "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
            spec.get_mut("template")?.get_mut("spec")?
        }
        _ => return None,
    };
    spec.as_mapping_mut()
}

/// The sequence at `key`, created empty when absent or null.
fn sequence<'a>(map: &'a mut Mapping, key: &str) -> &'a mut Vec<Value> {
    let entry = map
        .entry(key.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !entry.is_sequence() {
        *entry = Value::Sequence(Vec::new());
    }
    entry.as_sequence_mut().expect("set to a sequence above")
}
