//! `Microsoft.ContainerService/managedClusters`: AKS clusters and their OIDC issuers.
//!
//! A create returns 201 with `provisioningState: Creating` and an `Azure-AsyncOperation` URL
//! that reports `InProgress` until the cluster's `ready_at` on the model's clock. The server
//! fills in what the Azure CLI leaves empty (`kubernetesVersion`, `vmSize`) and what AKS
//! computes (`fqdn`, `nodeResourceGroup`, the kubelet identity). With
//! `oidcIssuerProfile.enabled` the cluster gets an issuer in the model, whose URL AKS returns
//! under the wire key `issuerURL`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use serde_json::{Map, Value, json};

use super::errors::ArmError;
use super::lro::{OperationKind, async_operation_url, operation_result_url};
use super::response::{ArmResponse, RETRY_AFTER_SECONDS};
use super::routes::CONTAINER_SERVICE;
use super::{Context, Parent, required_location};
use crate::cloud::{
    ClientId, ClusterIssuer, ManagedCluster, ObjectId, Principal, PrincipalKind, ResourceId,
};

const CLUSTER_READ: &str = "Microsoft.ContainerService/managedClusters/read";
const CLUSTER_WRITE: &str = "Microsoft.ContainerService/managedClusters/write";
const CLUSTER_DELETE: &str = "Microsoft.ContainerService/managedClusters/delete";
const LIST_USER_CREDENTIAL: &str = "listClusterUserCredential";
const LIST_ADMIN_CREDENTIAL: &str = "listClusterAdminCredential";

/// Kubernetes version AKS picks when the request leaves `kubernetesVersion` empty.
const DEFAULT_KUBERNETES_VERSION: &str = "1.32.7";
/// Node VM size the Azure CLI's `aks create` gets when `--node-vm-size` is not given.
const DEFAULT_VM_SIZE: &str = "Standard_DS2_v2";

/// `.../managedClusters/{name}[/{action}]`.
pub fn cluster(
    context: &mut Context<'_>,
    parent: &Parent,
    name: &str,
    action: Option<&str>,
) -> Result<ArmResponse, ArmError> {
    let id = parent.group_id().join(&format!(
        "providers/{CONTAINER_SERVICE}/managedClusters/{name}"
    ));
    match (context.method(), action) {
        ("PUT", None) => put_cluster(context, parent, id),
        ("GET", None) => {
            context.authorize(&id, CLUSTER_READ)?;
            let cluster = find(context, parent, &id)?;
            Ok(ArmResponse::json(200, cluster_json(context, cluster)))
        }
        ("DELETE", None) => delete_cluster(context, parent, &id),
        ("POST", Some(action))
            if action.eq_ignore_ascii_case(LIST_USER_CREDENTIAL)
                || action.eq_ignore_ascii_case(LIST_ADMIN_CREDENTIAL) =>
        {
            list_credential(
                context,
                parent,
                &id,
                action.eq_ignore_ascii_case(LIST_ADMIN_CREDENTIAL),
            )
        }
        (_, Some(action)) => Err(ArmError::invalid_resource_type(
            &format!("managedClusters/{action}"),
            CONTAINER_SERVICE,
            &context.api_version,
        )),
        _ => Err(context.method_not_allowed()),
    }
}

fn find<'c>(
    context: &'c Context<'_>,
    parent: &Parent,
    id: &ResourceId,
) -> Result<&'c ManagedCluster, ArmError> {
    let group = context.group(parent)?;
    context.cloud.clusters.get(&id.key()).ok_or_else(|| {
        ArmError::resource_not_found(
            &format!("{CONTAINER_SERVICE}/managedClusters/{}", id.name()),
            &group.name,
        )
    })
}

/// Creates a cluster (201) or updates one (200); both report an `Azure-AsyncOperation`.
fn put_cluster(
    context: &mut Context<'_>,
    parent: &Parent,
    id: ResourceId,
) -> Result<ArmResponse, ArmError> {
    context.authorize(&id, CLUSTER_WRITE)?;
    let body = context.body()?;
    let location = required_location(&body)?;
    let group = context.writable_group(parent)?;
    let id = group.id.join(&format!(
        "providers/{CONTAINER_SERVICE}/managedClusters/{}",
        id.name()
    ));
    let group_name = group.name.clone();
    let requested = match body.get("properties") {
        Some(Value::Object(properties)) => properties.clone(),
        _ => Map::new(),
    };
    let oidc_requested = requested
        .get("oidcIssuerProfile")
        .and_then(|p| p.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // NOTE: AKS rejects workload identity without the OIDC issuer; the fake accepts it and
    // leaves the check to the Azure CLI, which refuses that combination itself.
    let workload_identity = requested
        .get("securityProfile")
        .and_then(|p| p.get("workloadIdentity"))
        .and_then(|w| w.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let now = context.cloud.now();
    let tenant = context.tenant();

    let existing = context.cloud.clusters.get(&id.key()).cloned();
    let status = if existing.is_some() { 200 } else { 201 };
    let mut cluster = match existing {
        Some(cluster) => cluster,
        None => {
            let principal = Principal {
                object_id: ObjectId::random(),
                client_id: ClientId::random(),
                tenant: tenant.clone(),
                display_name: id.name().to_owned(),
                kind: PrincipalKind::ManagedIdentity {
                    resource_id: id.clone(),
                },
                created_at: now,
            };
            let identity_principal = principal.object_id.clone();
            context.cloud.principals.push(principal);
            ManagedCluster {
                id: id.clone(),
                tenant: tenant.clone(),
                location: location.clone(),
                properties: Value::Object(Map::new()),
                identity_principal,
                issuer_url: None,
                workload_identity: false,
                created_at: now,
                ready_at: now + context.cloud.delays.operation_duration,
            }
        }
    };

    // AKS cannot turn the OIDC issuer off once it is on, so an update only ever adds one.
    if oidc_requested && cluster.issuer_url.is_none() {
        let url = format!(
            "{}/{}/{}/",
            context.endpoints.issuer,
            tenant,
            uuid::Uuid::new_v4()
        );
        let key = context.cloud.take_key();
        context.cloud.issuers.push(ClusterIssuer {
            url: url.clone(),
            tenant: tenant.clone(),
            keys: vec![key],
            reachable: true,
        });
        cluster.issuer_url = Some(url);
    }
    cluster.workload_identity = workload_identity;
    cluster.properties =
        complete_properties(requested, &cluster, &parent.subscription, &group_name);
    context.cloud.clusters.insert(id.key(), cluster.clone());

    let operation = context
        .operations
        .start(context.cloud, OperationKind::CreateCluster);
    let status_url = async_operation_url(
        &context.endpoints.arm,
        &parent.subscription,
        &cluster.location,
        &operation.id,
    );
    let mut body = cluster_json(context, &cluster);
    if status == 201 {
        body["properties"]["provisioningState"] = json!("Creating");
    }
    Ok(ArmResponse::json(status, body)
        .with_header("azure-asyncoperation", status_url)
        .with_header("retry-after", RETRY_AFTER_SECONDS))
}

/// Starts deleting a cluster and its issuer: 202 with both polling headers, as AKS sends.
/// A cluster that does not exist returns 204.
fn delete_cluster(
    context: &mut Context<'_>,
    parent: &Parent,
    id: &ResourceId,
) -> Result<ArmResponse, ArmError> {
    context.authorize(id, CLUSTER_DELETE)?;
    context.group(parent)?;
    let Some(cluster) = context.cloud.clusters.get(&id.key()) else {
        return Ok(ArmResponse::empty(204));
    };
    let scope = cluster.id.clone();
    let location = cluster.location.clone();

    let operation = context
        .operations
        .start(context.cloud, OperationKind::Delete { scope });
    let arm = &context.endpoints.arm;
    Ok(ArmResponse::empty(202)
        .with_header(
            "azure-asyncoperation",
            async_operation_url(arm, &parent.subscription, &location, &operation.id),
        )
        .with_header(
            "location",
            operation_result_url(
                arm,
                &parent.subscription,
                &operation.id,
                &context.api_version,
            ),
        )
        .with_header("retry-after", RETRY_AFTER_SECONDS))
}

/// `POST .../listClusterUserCredential`: one kubeconfig, base64-encoded, naming the cluster.
fn list_credential(
    context: &mut Context<'_>,
    parent: &Parent,
    id: &ResourceId,
    admin: bool,
) -> Result<ArmResponse, ArmError> {
    let action = if admin {
        LIST_ADMIN_CREDENTIAL
    } else {
        LIST_USER_CREDENTIAL
    };
    context.authorize(
        id,
        &format!("{CONTAINER_SERVICE}/managedClusters/{action}/action"),
    )?;
    let cluster = find(context, parent, id)?;
    let group = context.group(parent)?.name.clone();
    let fqdn = cluster
        .properties
        .get("fqdn")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let user = if admin { "clusterAdmin" } else { "clusterUser" };
    let kubeconfig = kubeconfig(cluster.id.name(), &group, fqdn, user);
    Ok(ArmResponse::json(
        200,
        json!({"kubeconfigs": [{"name": user, "value": STANDARD.encode(kubeconfig)}]}),
    ))
}

/// The `Azure-AsyncOperation` status URL of an AKS operation.
pub fn operation_status(context: &mut Context<'_>, id: &str) -> Result<ArmResponse, ArmError> {
    if context.method() != "GET" {
        return Err(context.method_not_allowed());
    }
    let now = context.cloud.now();
    let operation = context
        .operations
        .get(id)
        .ok_or_else(|| ArmError::operation_not_found(id))?;
    Ok(ArmResponse::json(200, operation.status_body(now)))
}

/// The request's `properties` completed with the values AKS computes or defaults. Values the
/// server set on an earlier PUT (fqdn, node resource group, kubelet identity) are kept.
fn complete_properties(
    mut properties: Map<String, Value>,
    cluster: &ManagedCluster,
    subscription: &str,
    group: &str,
) -> Value {
    let name = cluster.id.name();
    let location = &cluster.location;
    let previous = cluster.properties.as_object().cloned().unwrap_or_default();
    let version = match properties.get("kubernetesVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => DEFAULT_KUBERNETES_VERSION.to_owned(),
    };
    let dns_prefix = match properties.get("dnsPrefix").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => format!(
            "{name}-{group}-{}",
            &subscription[..subscription.len().min(6)]
        ),
    };

    let mut keep_or = |key: &str, default: Value| {
        let value = previous.get(key).cloned().unwrap_or(default);
        properties.insert(key.to_owned(), value);
    };
    let hash = random_hex(4);
    keep_or(
        "fqdn",
        json!(format!("{dns_prefix}-{hash}.hcp.{location}.azmk8s.io")),
    );
    keep_or(
        "azurePortalFQDN",
        json!(format!(
            "{dns_prefix}-{hash}.portal.hcp.{location}.azmk8s.io"
        )),
    );
    let node_group = format!("MC_{group}_{name}_{location}");
    keep_or("nodeResourceGroup", json!(node_group));
    keep_or(
        "identityProfile",
        json!({"kubeletidentity": {
            "resourceId": format!(
                "/subscriptions/{subscription}/resourcegroups/{node_group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}-agentpool"
            ),
            "clientId": ClientId::random(),
            "objectId": ObjectId::random(),
        }}),
    );

    properties.insert("kubernetesVersion".into(), json!(version));
    properties.insert("currentKubernetesVersion".into(), json!(version));
    properties.insert("dnsPrefix".into(), json!(dns_prefix));
    properties.insert("powerState".into(), json!({"code": "Running"}));
    properties.insert("servicePrincipalProfile".into(), json!({"clientId": "msi"}));
    properties.entry("enableRBAC").or_insert(json!(true));
    properties.entry("maxAgentPools").or_insert(json!(100));
    properties.insert(
        "agentPoolProfiles".into(),
        agent_pools(properties.get("agentPoolProfiles"), &version),
    );

    let mut oidc = json!({"enabled": cluster.issuer_url.is_some()});
    if let Some(url) = &cluster.issuer_url {
        oidc["issuerURL"] = json!(url);
    }
    properties.insert("oidcIssuerProfile".into(), oidc);
    let security = properties.entry("securityProfile").or_insert(json!({}));
    if !security.is_object() {
        *security = json!({});
    }
    security["workloadIdentity"] = json!({"enabled": cluster.workload_identity});
    Value::Object(properties)
}

/// Agent pools with server defaults; one `nodepool1` of three nodes when none are given.
fn agent_pools(requested: Option<&Value>, version: &str) -> Value {
    let mut pools: Vec<Value> = requested
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if pools.is_empty() {
        pools.push(json!({}));
    }
    for pool in &mut pools {
        let Some(pool) = pool.as_object_mut() else {
            continue;
        };
        let mut default_if_empty = |key: &str, default: Value| {
            let empty = match pool.get(key) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if empty {
                pool.insert(key.to_owned(), default);
            }
        };
        default_if_empty("name", json!("nodepool1"));
        default_if_empty("count", json!(3));
        default_if_empty("vmSize", json!(DEFAULT_VM_SIZE));
        default_if_empty("orchestratorVersion", json!(version));
        default_if_empty("osType", json!("Linux"));
        default_if_empty("mode", json!("System"));
        default_if_empty("type", json!("VirtualMachineScaleSets"));
        default_if_empty("maxPods", json!(110));
        default_if_empty("osDiskSizeGB", json!(128));
        pool.insert("currentOrchestratorVersion".into(), json!(version));
        pool.insert("provisioningState".into(), json!("Succeeded"));
        pool.insert("powerState".into(), json!({"code": "Running"}));
    }
    Value::Array(pools)
}

fn cluster_json(context: &Context<'_>, cluster: &ManagedCluster) -> Value {
    let now = context.cloud.now();
    let state = if context.operations.deleting(&cluster.id) {
        "Deleting"
    } else if now < cluster.ready_at {
        "Creating"
    } else {
        "Succeeded"
    };
    let mut properties = cluster.properties.clone();
    properties["provisioningState"] = json!(state);
    json!({
        "id": cluster.id.as_str(),
        "location": cluster.location,
        "name": cluster.id.name(),
        "type": "Microsoft.ContainerService/ManagedClusters",
        // NOTE: the model keeps no tags or SKU for clusters; every cluster reports the
        // Free tier and no tags.
        "tags": {},
        "sku": {"name": "Base", "tier": "Free"},
        "identity": {
            "type": "SystemAssigned",
            "principalId": cluster.identity_principal,
            "tenantId": cluster.tenant,
        },
        "properties": properties,
    })
}

/// A kubeconfig in the layout AKS returns: cluster and context named after the cluster, a
/// user named `{clusterUser|clusterAdmin}_{group}_{cluster}` with a bearer token. Scalars are
/// written as JSON strings, which YAML reads as double-quoted strings.
// NOTE: AKS also sends `certificate-authority-data`; the fake has no API server certificate
// to put there, so clients use their system trust for the server URL.
fn kubeconfig(cluster: &str, group: &str, fqdn: &str, user_kind: &str) -> String {
    let quote = |s: &str| Value::from(s).to_string();
    let user = format!("{user_kind}_{group}_{cluster}");
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    server: {server}\n  name: {cluster}\n\
         contexts:\n\
         - context:\n    cluster: {cluster}\n    user: {user}\n  name: {cluster}\n\
         current-context: {cluster}\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n  user:\n    token: {token}\n",
        server = quote(&format!("https://{fqdn}:443")),
        cluster = quote(cluster),
        user = quote(&user),
        token = quote(&random_hex(64)),
    )
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}
