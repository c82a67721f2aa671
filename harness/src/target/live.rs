//! The live target: the scenario's clients against Azure (or any endpoints the settings
//! name), with each tenant's operator credentials from the environment.
//!
//! Every resource group name gets the suffix `-{run id}` and the tags `xtenant-run` and
//! `xtenant-created`, and [`LiveTarget::finish`] deletes the run's groups, so a run leaves
//! nothing behind; `xtenant sweep` deletes tagged groups that a killed run left. `aks create`
//! is rejected unless the settings allow it, because an AKS cluster costs money per hour.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Credential, OperatorCredentials, TargetError, TargetHooks};
use crate::client::{AccessToken, ArmClient, ArmHooks, ClientError, TokenClient, http_client};
use crate::cluster::RunCluster;
use crate::cluster::kind::KubectlCluster;

/// Azure Resource Manager of the public cloud.
pub const DEFAULT_ARM_URL: &str = "https://management.azure.com";
/// Entra ID authority host of the public cloud.
pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
/// Tag naming the run that created a resource group.
pub const RUN_TAG: &str = "xtenant-run";
/// Tag with the RFC 3339 time a resource group was created.
pub const CREATED_TAG: &str = "xtenant-created";
/// api-version of resource group calls, as the Azure CLI 2.91.0 sends it.
const RESOURCES_API: &str = "2024-11-01";
/// api-version of the subscription list.
const SUBSCRIPTIONS_API: &str = "2022-12-01";
/// Scope of ARM tokens as the CLI requests them.
const ARM_SCOPE: &str = "https://management.core.windows.net//.default";

/// Where the live target sends requests and how each tenant signs in.
#[derive(Clone, Debug)]
pub struct LiveSettings {
    pub arm_url: String,
    pub login_url: String,
    /// CA to trust instead of the platform roots (`XTENANT_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// Operator credentials by scenario tenant name.
    pub tenants: BTreeMap<String, OperatorCredentials>,
    /// Lets `aks create` through the cost guard (`--allow-aks`).
    pub allow_aks: bool,
    /// Suffix of resource group names and value of the `xtenant-run` tag.
    pub run_id: String,
    /// Builds the cluster for `aks get-credentials` instead of the returned kubeconfig, for
    /// runs against the fakes with live-style settings.
    pub stand_in: Option<StandInCluster>,
}

/// A [`StandIn`] that settings can carry.
#[derive(Clone)]
pub struct StandInCluster(pub StandIn);

impl std::fmt::Debug for StandInCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StandInCluster")
    }
}

impl LiveSettings {
    /// Reads the settings from environment variables through `lookup`:
    /// `XTENANT_ARM_URL`, `XTENANT_LOGIN_URL`, `XTENANT_CA_FILE`, and for each tenant `NAME`
    /// `XTENANT_TENANT_<NAME>_ID`, `_CLIENT_ID` and `_CLIENT_SECRET` or
    /// `_FEDERATED_TOKEN_FILE`.
    pub fn from_lookup(
        tenants: &[&str],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TargetError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let mut credentials = BTreeMap::new();
        for tenant in tenants {
            let prefix = format!("XTENANT_TENANT_{}", tenant.to_ascii_uppercase());
            let required = |suffix: &str| {
                let name = format!("{prefix}_{suffix}");
                get(&name).ok_or_else(|| {
                    TargetError::Settings(format!("{name} is missing for tenant '{tenant}'"))
                })
            };
            let credential = match (
                get(&format!("{prefix}_CLIENT_SECRET")),
                get(&format!("{prefix}_FEDERATED_TOKEN_FILE")),
            ) {
                (Some(secret), _) => Credential::Secret(secret),
                (None, Some(file)) => Credential::FederatedTokenFile(PathBuf::from(file)),
                (None, None) => {
                    return Err(TargetError::Settings(format!(
                        "set {prefix}_CLIENT_SECRET or {prefix}_FEDERATED_TOKEN_FILE for tenant '{tenant}'"
                    )));
                }
            };
            credentials.insert(
                (*tenant).to_owned(),
                OperatorCredentials {
                    tenant_id: required("ID")?,
                    client_id: required("CLIENT_ID")?,
                    credential,
                },
            );
        }
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        Ok(Self {
            arm_url: get("XTENANT_ARM_URL").unwrap_or_else(|| DEFAULT_ARM_URL.to_owned()),
            login_url: get("XTENANT_LOGIN_URL").unwrap_or_else(|| DEFAULT_LOGIN_URL.to_owned()),
            ca_file: get("XTENANT_CA_FILE").map(PathBuf::from),
            tenants: credentials,
            allow_aks: false,
            run_id,
            stand_in: None,
        })
    }
}

/// A run against live endpoints.
pub struct LiveTarget {
    settings: LiveSettings,
    hooks: Arc<LiveHooks>,
    state_dir: tempfile::TempDir,
    /// Builds the cluster for `aks get-credentials` instead of the kubeconfig: tests against
    /// the fakes use an embedded cluster here.
    stand_in: Option<StandIn>,
}

/// Builds a stand-in cluster for an AKS cluster id.
pub type StandIn = Arc<dyn Fn(&str) -> Result<RunCluster, TargetError> + Send + Sync>;

impl LiveTarget {
    pub fn new(
        settings: LiveSettings,
        tenants: &[String],
        _workload_exe: &Path,
        hooks: Arc<TargetHooks>,
    ) -> Result<Self, TargetError> {
        if let Some(missing) = tenants.iter().find(|t| !settings.tenants.contains_key(*t)) {
            return Err(TargetError::UnknownTenant(missing.clone()));
        }
        let suffix = format!("-{}", settings.run_id);
        let hooks = Arc::new(LiveHooks {
            inner: (*hooks).clone().stripping(suffix.clone()),
            suffix,
            run_id: settings.run_id.clone(),
            allow_aks: settings.allow_aks,
        });
        Ok(Self {
            hooks,
            state_dir: tempfile::Builder::new().prefix("xtenant-live-").tempdir()?,
            stand_in: settings.stand_in.as_ref().map(|s| s.0.clone()),
            settings,
        })
    }

    /// Uses `stand_in` for clusters instead of the kubeconfig ARM returns.
    pub fn with_stand_in(mut self, stand_in: StandIn) -> Self {
        self.stand_in = Some(stand_in);
        self
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.settings.ca_file.as_deref()
    }

    pub fn login_url(&self) -> &str {
        &self.settings.login_url
    }

    pub fn tenant_id(&self, name: &str) -> Option<String> {
        self.settings.tenants.get(name).map(|c| c.tenant_id.clone())
    }

    pub fn operator(&self, name: &str) -> Result<OperatorCredentials, TargetError> {
        self.settings
            .tenants
            .get(name)
            .cloned()
            .ok_or_else(|| TargetError::UnknownTenant(name.to_owned()))
    }

    pub fn arm_client(&self, http: reqwest::Client, token: AccessToken) -> ArmClient {
        ArmClient::new(http, &self.settings.arm_url, token).with_hooks(self.hooks.clone())
    }

    /// The AKS cluster through its user kubeconfig, driven with kubectl.
    pub async fn cluster(
        &self,
        cluster_id: &str,
        kubeconfig: &[u8],
    ) -> Result<RunCluster, TargetError> {
        // The runner names the cluster by the scenario's group; ARM knows the suffixed one.
        let cluster_id = suffix_group(cluster_id, &self.hooks.suffix);
        if let Some(stand_in) = &self.stand_in {
            return stand_in(&cluster_id);
        }
        let name = cluster_id.rsplit('/').next().unwrap_or("cluster");
        let path = self.state_dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, kubeconfig)?;
        Ok(RunCluster::Kubectl(Box::new(KubectlCluster::new(
            &path, None,
        ))))
    }

    /// Deletes every resource group tagged with this run's id, in every tenant.
    pub async fn finish(&self) -> Result<(), TargetError> {
        let run_id = self.settings.run_id.clone();
        sweep(&self.settings, |tags| {
            tags[RUN_TAG].as_str() == Some(run_id.as_str())
        })
        .await
        .map(|_| ())
    }
}

/// Rewrites resource group names and bodies, guards costs, then records like every target.
struct LiveHooks {
    inner: TargetHooks,
    suffix: String,
    run_id: String,
    allow_aks: bool,
}

impl ArmHooks for LiveHooks {
    fn before_send(
        &self,
        method: &Method,
        url: &mut String,
        body: &mut Option<Value>,
    ) -> Result<(), String> {
        if *method == Method::PUT
            && url
                .to_ascii_lowercase()
                .contains("/microsoft.containerservice/managedclusters/")
            && !self.allow_aks
        {
            return Err(
                "creating an AKS cluster on live Azure costs money; pass --allow-aks to allow it"
                    .into(),
            );
        }
        let is_group_put = *method == Method::PUT && is_group_url(url);
        *url = suffix_group(url, &self.suffix);
        if is_group_put && let Some(Value::Object(object)) = body {
            let created = OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default();
            let tags = object.entry("tags").or_insert_with(|| json!({}));
            if let Value::Object(tags) = tags {
                tags.insert(RUN_TAG.into(), json!(self.run_id));
                tags.insert(CREATED_TAG.into(), json!(created));
            }
        }
        Ok(())
    }

    fn after_response(&self, method: &Method, url: &str, status: u16, body: &Value) {
        self.inner.after_response(method, url, status, body);
    }

    fn on_poll(&self, url: &str, poll: u32, elapsed: Duration) {
        self.inner.on_poll(url, poll, elapsed);
    }
}

/// Whether the URL's path ends at a resource group (`.../resourcegroups/NAME`).
fn is_group_url(url: &str) -> bool {
    let path = url.split('?').next().unwrap_or(url);
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    segments.len() >= 2 && segments[segments.len() - 2].eq_ignore_ascii_case("resourcegroups")
}

/// Appends `suffix` to the resource group segment of `url` unless it already ends with it.
pub fn suffix_group(url: &str, suffix: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    let mut segments: Vec<String> = path.split('/').map(str::to_owned).collect();
    for index in 1..segments.len() {
        if segments[index - 1].eq_ignore_ascii_case("resourcegroups")
            && !segments[index].is_empty()
            && !segments[index].ends_with(suffix)
        {
            segments[index].push_str(suffix);
        }
    }
    let path = segments.join("/");
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// Deletes, in every tenant's subscriptions, each resource group whose tags `select`
/// accepts; returns the ids of the groups deleted.
pub async fn sweep(
    settings: &LiveSettings,
    select: impl Fn(&Value) -> bool,
) -> Result<Vec<String>, TargetError> {
    let client_error = |e: ClientError| TargetError::Cluster(e.to_string());
    let http = http_client(settings.ca_file.as_deref()).map_err(client_error)?;
    let tokens = TokenClient::new(http.clone(), &settings.login_url);
    let mut deleted = Vec::new();
    for credentials in settings.tenants.values() {
        let token = credentials
            .token(&tokens, ARM_SCOPE)
            .await
            .map_err(client_error)?;
        let arm = ArmClient::new(http.clone(), &settings.arm_url, token);
        let (subscriptions, _) = arm
            .call(Method::GET, "/subscriptions", SUBSCRIPTIONS_API, None)
            .await
            .map_err(client_error)?;
        for subscription in subscriptions.body["value"].as_array().into_iter().flatten() {
            let Some(id) = subscription["subscriptionId"].as_str() else {
                continue;
            };
            let path = format!("/subscriptions/{id}/resourcegroups");
            let (groups, _) = arm
                .call(Method::GET, &path, RESOURCES_API, None)
                .await
                .map_err(client_error)?;
            for group in groups.body["value"].as_array().into_iter().flatten() {
                if group["tags"][RUN_TAG].is_null() || !select(&group["tags"]) {
                    continue;
                }
                let Some(group_id) = group["id"].as_str() else {
                    continue;
                };
                match arm
                    .call(Method::DELETE, group_id, RESOURCES_API, None)
                    .await
                {
                    Ok(_) | Err(ClientError::Arm { status: 404, .. }) => {
                        deleted.push(group_id.to_owned());
                    }
                    Err(error) => return Err(client_error(error)),
                }
            }
        }
    }
    Ok(deleted)
}

/// Whether tags carry an `xtenant-created` time older than `age`.
pub fn created_before(tags: &Value, age: Duration) -> bool {
    let Some(created) = tags[CREATED_TAG]
        .as_str()
        .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
    else {
        return false;
    };
    OffsetDateTime::now_utc() - created > age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_applies_once_to_group_segment() {
        let url = "https://arm/subscriptions/s/resourceGroups/rg-a/providers/x?api-version=1";
        let once = suffix_group(url, "-r1");
        assert_eq!(
            once,
            "https://arm/subscriptions/s/resourceGroups/rg-a-r1/providers/x?api-version=1"
        );
        assert_eq!(suffix_group(&once, "-r1"), once);
    }

    #[test]
    fn settings_need_a_credential_per_tenant() {
        let vars: BTreeMap<&str, &str> = [
            ("XTENANT_TENANT_A_ID", "t"),
            ("XTENANT_TENANT_A_CLIENT_ID", "c"),
        ]
        .into();
        let error = LiveSettings::from_lookup(&["a"], |name| vars.get(name).map(|v| v.to_string()))
            .unwrap_err();
        assert!(error.to_string().contains("XTENANT_TENANT_A_CLIENT_SECRET"));
    }
}
