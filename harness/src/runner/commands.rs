//! The `az` and `kubectl` commands a scenario step can run, sent to ARM as the Azure CLI
//! sends them.

use reqwest::Method;
use serde_json::{Value, json};

use super::{CommandOutput, Runner, Session, StepError};
use crate::client::ArmClient;
use crate::scenario::{
    AksCreateArgs, Command, FederatedCredentialArgs, NamespaceCreateArgs, RoleAssignmentArgs,
};

/// api-versions the Azure CLI 2.91.0 sends; the fakes accept any.
mod api {
    pub const SUBSCRIPTIONS: &str = "2022-12-01";
    pub const RESOURCES: &str = "2024-11-01";
    pub const CONTAINER_SERVICE: &str = "2026-06-01";
    pub const SERVICE_BUS: &str = "2026-01-01";
    pub const MANAGED_IDENTITY: &str = "2025-05-31-preview";
    pub const FEDERATED_CREDENTIALS: &str = "2025-01-31-preview";
    pub const ROLE_DEFINITIONS: &str = "2022-05-01-preview";
    pub const ROLE_ASSIGNMENTS: &str = "2022-04-01";
}

/// Scope of ARM tokens as the CLI requests them (note the doubled slash).
const ARM_SCOPE: &str = "https://management.core.windows.net//.default";

/// A one-line description of a step for the report.
pub fn title(command: &Command) -> String {
    match command {
        Command::Login(tenant) => format!("login {tenant}"),
        Command::AccountShow(_) => "account show".into(),
        Command::Rest(a) => format!("rest {} {}", a.method, a.url),
        Command::Set(_) => "set delays".into(),
        Command::Fault(f) => format!("fault {:?}", f.service).to_lowercase(),
        Command::GroupCreate(a) => format!("group create {}", a.name),
        Command::GroupDelete(a) => format!("group delete {}", a.name),
        Command::AksCreate(a) => format!("aks create {}", a.name),
        Command::AksShow(a) => format!("aks show {}", a.name),
        Command::AksGetCredentials(a) => format!("aks get-credentials {}", a.name),
        Command::ServiceBusNamespaceCreate(a) => format!("servicebus namespace create {}", a.name),
        Command::ServiceBusNamespaceShow(a) => format!("servicebus namespace show {}", a.name),
        Command::ServiceBusQueueCreate(a) => format!("servicebus queue create {}", a.name),
        Command::ServiceBusQueueShow(a) => format!("servicebus queue show {}", a.name),
        Command::IdentityCreate(a) => format!("identity create {}", a.name),
        Command::IdentityShow(a) => format!("identity show {}", a.name),
        Command::FederatedCredentialCreate(a) => {
            format!("identity federated-credential create {}", a.name)
        }
        Command::RoleAssignmentCreate(a) => format!("role assignment create '{}'", a.role),
        Command::KubectlApply(_) => "kubectl apply".into(),
        Command::Wait(a) => match (&a.condition, &a.log) {
            (Some(condition), _) => format!("wait job/{} {condition:?}", a.job).to_lowercase(),
            (None, log) => format!("wait job/{} log {:?}", a.job, log.as_deref().unwrap_or("")),
        },
        Command::Expect(e) => super::expect::title(e),
        Command::AdvanceClock(by) => format!("advance clock {by}"),
    }
}

fn group_path(session: &Session, group: &str) -> String {
    format!(
        "/subscriptions/{}/resourcegroups/{group}",
        session.subscription
    )
}

fn provider_path(session: &Session, group: &str, provider: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{group}/providers/{provider}",
        session.subscription
    )
}

impl Runner {
    pub(super) async fn execute(&mut self, command: &Command) -> Result<CommandOutput, StepError> {
        if self.target.is_live() && command.fake_only() {
            return Ok(CommandOutput {
                value: Value::Null,
                note: Some("skipped: acts on the fakes only".into()),
            });
        }
        match command {
            Command::Login(tenant) => self.login(tenant).await,
            Command::AccountShow(_) => {
                let session = self.session()?;
                Ok(CommandOutput::json(json!({
                    "id": session.subscription,
                    "tenantId": session.tenant,
                    "name": session.subscription_name,
                    "state": "Enabled",
                })))
            }
            Command::Rest(args) => {
                let session = self.session()?;
                let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| {
                        StepError::Precondition(format!(
                            "invalid HTTP method {:?}; use GET, PUT, POST, PATCH or DELETE",
                            args.method
                        ))
                    })?;
                let (response, _) = session
                    .arm
                    .call(method, &args.url, &args.api_version, args.body.as_ref())
                    .await?;
                Ok(CommandOutput::json(response.body))
            }
            Command::Set(settings) => self.set_delays(settings),
            Command::Fault(fault) => self.inject_fault(fault).await,
            Command::GroupCreate(args) => {
                let session = self.session()?;
                let body = json!({ "location": args.location });
                let response = session
                    .arm
                    .call_and_wait(
                        Method::PUT,
                        &group_path(session, &args.name),
                        api::RESOURCES,
                        Some(&body),
                    )
                    .await?;
                Ok(CommandOutput::json(response.body))
            }
            Command::GroupDelete(args) => {
                let session = self.session()?;
                let path = group_path(session, &args.name);
                if args.no_wait {
                    session
                        .arm
                        .call(Method::DELETE, &path, api::RESOURCES, None)
                        .await?;
                } else {
                    session
                        .arm
                        .call_and_wait(Method::DELETE, &path, api::RESOURCES, None)
                        .await?;
                }
                Ok(CommandOutput::json(Value::Null))
            }
            Command::AksCreate(args) => self.aks_create(args).await,
            Command::AksShow(args) => {
                self.show(
                    &args.group,
                    &format!("Microsoft.ContainerService/managedClusters/{}", args.name),
                    api::CONTAINER_SERVICE,
                )
                .await
            }
            Command::AksGetCredentials(args) => {
                self.aks_get_credentials(&args.group, &args.name).await
            }
            Command::ServiceBusNamespaceCreate(args) => self.namespace_create(args).await,
            Command::ServiceBusNamespaceShow(args) => {
                self.show(
                    &args.group,
                    &format!("Microsoft.ServiceBus/namespaces/{}", args.name),
                    api::SERVICE_BUS,
                )
                .await
            }
            Command::ServiceBusQueueCreate(args) => {
                let session = self.session()?;
                let path = provider_path(
                    session,
                    &args.group,
                    &format!(
                        "Microsoft.ServiceBus/namespaces/{}/queues/{}",
                        args.namespace, args.name
                    ),
                );
                let (response, _) = session
                    .arm
                    .call(
                        Method::PUT,
                        &path,
                        api::SERVICE_BUS,
                        Some(&json!({ "properties": {} })),
                    )
                    .await?;
                expect_status(&path, response.status, &[200])?;
                Ok(CommandOutput::json(response.body))
            }
            Command::ServiceBusQueueShow(args) => {
                self.show(
                    &args.group,
                    &format!(
                        "Microsoft.ServiceBus/namespaces/{}/queues/{}",
                        args.namespace, args.name
                    ),
                    api::SERVICE_BUS,
                )
                .await
            }
            Command::IdentityCreate(args) => {
                let session = self.session()?;
                let location =
                    group_location(&session.arm, &group_path(session, &args.group)).await?;
                let path = provider_path(
                    session,
                    &args.group,
                    &format!(
                        "Microsoft.ManagedIdentity/userAssignedIdentities/{}",
                        args.name
                    ),
                );
                let (response, _) = session
                    .arm
                    .call(
                        Method::PUT,
                        &path,
                        api::MANAGED_IDENTITY,
                        Some(&json!({ "location": location })),
                    )
                    .await?;
                expect_status(&path, response.status, &[200, 201])?;
                Ok(CommandOutput::json(response.body))
            }
            Command::IdentityShow(args) => {
                self.show(
                    &args.group,
                    &format!(
                        "Microsoft.ManagedIdentity/userAssignedIdentities/{}",
                        args.name
                    ),
                    api::MANAGED_IDENTITY,
                )
                .await
            }
            Command::FederatedCredentialCreate(args) => {
                self.federated_credential_create(args).await
            }
            Command::RoleAssignmentCreate(args) => self.role_assignment_create(args).await,
            Command::KubectlApply(manifests) => {
                let lines = self
                    .cluster()?
                    .apply(manifests)
                    .await
                    .map_err(|e| StepError::Cluster(e.to_string()))?;
                Ok(CommandOutput {
                    value: json!(lines),
                    note: None,
                })
            }
            Command::Wait(args) => self.wait(args).await,
            Command::Expect(expectations) => self.check(expectations).await,
            Command::AdvanceClock(by) => {
                let duration = super::expect::parse_duration(by)?;
                xtenant_fakes::cloud::lock(&self.target.fakes.cloud)
                    .clock
                    .advance(time::Duration::try_from(duration).unwrap_or(time::Duration::MAX));
                for cluster in self.clusters.values_mut() {
                    cluster
                        .refresh_tokens()
                        .map_err(|e| StepError::Cluster(e.to_string()))?;
                }
                Ok(CommandOutput::json(Value::Null))
            }
        }
    }

    /// `az ... show`: reads `resource` under the provider path of `group`.
    async fn show(
        &self,
        group: &str,
        resource: &str,
        api_version: &str,
    ) -> Result<CommandOutput, StepError> {
        let session = self.session()?;
        let path = provider_path(session, group, resource);
        let (response, _) = session
            .arm
            .call(Method::GET, &path, api_version, None)
            .await?;
        Ok(CommandOutput::json(response.body))
    }

    /// `az login --service-principal --tenant T`: a token for ARM, then the subscription list.
    async fn login(&mut self, tenant: &str) -> Result<CommandOutput, StepError> {
        let credentials = self.target.operator(tenant)?;
        let token = credentials.token(&self.tokens, ARM_SCOPE).await?;
        let arm = self.target.arm_client(self.http.clone(), token);
        let (response, _) = arm
            .call(Method::GET, "/subscriptions", api::SUBSCRIPTIONS, None)
            .await?;
        let subscriptions = response.body["value"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let enabled = subscriptions
            .iter()
            .find(|s| s["state"] == "Enabled")
            .ok_or_else(|| {
                StepError::Precondition(format!(
                    "No subscriptions found for {}.",
                    credentials.client_id
                ))
            })?;
        let subscription = enabled["subscriptionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let subscription_name = enabled["displayName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.vars
            .insert("SUBSCRIPTION_ID".into(), subscription.clone());
        self.session = Some(Session {
            subscription,
            subscription_name,
            tenant: credentials.tenant_id.clone(),
            arm,
        });
        Ok(CommandOutput::json(Value::Array(subscriptions)))
    }

    async fn aks_create(&mut self, args: &AksCreateArgs) -> Result<CommandOutput, StepError> {
        let session = self.session()?;
        let path = provider_path(
            session,
            &args.group,
            &format!("Microsoft.ContainerService/managedClusters/{}", args.name),
        );
        match session
            .arm
            .call(Method::GET, &path, api::CONTAINER_SERVICE, None)
            .await
        {
            Err(crate::client::ClientError::Arm { status: 404, .. }) => {}
            Err(error) => return Err(error.into()),
            Ok(_) => {
                return Err(StepError::Precondition(format!(
                    "the managed cluster {} already exists",
                    args.name
                )));
            }
        }
        let location = match &args.location {
            Some(location) => location.clone(),
            None => group_location(&session.arm, &group_path(session, &args.group)).await?,
        };
        let mut properties = json!({
            "kubernetesVersion": "",
            "dnsPrefix": format!("{}-{}-{}", args.name, args.group, &session.subscription[..6]),
            "enableRBAC": true,
            "disableLocalAccounts": false,
            "agentPoolProfiles": [{ "name": "nodepool1", "count": args.node_count, "vmSize": "", "osType": "Linux", "mode": "System", "type": "VirtualMachineScaleSets" }],
            "networkProfile": { "loadBalancerSku": "standard", "outboundType": "loadBalancer" },
            "addonProfiles": {},
        });
        if args.oidc_issuer {
            properties["oidcIssuerProfile"] = json!({ "enabled": true });
        }
        if args.workload_identity {
            properties["securityProfile"] = json!({ "workloadIdentity": { "enabled": true } });
        }
        let body = json!({ "location": location, "identity": { "type": "SystemAssigned" }, "sku": { "name": "Base", "tier": "Free" }, "properties": properties });
        let response = session
            .arm
            .call_and_wait(Method::PUT, &path, api::CONTAINER_SERVICE, Some(&body))
            .await?;
        Ok(CommandOutput::json(response.body))
    }

    /// `az aks get-credentials`: the user kubeconfig, and an embedded cluster behind it.
    async fn aks_get_credentials(
        &mut self,
        group: &str,
        name: &str,
    ) -> Result<CommandOutput, StepError> {
        let session = self.session()?;
        let cluster_path = provider_path(
            session,
            group,
            &format!("Microsoft.ContainerService/managedClusters/{name}"),
        );
        let path = format!("{cluster_path}/listClusterUserCredential");
        let (response, _) = session
            .arm
            .call(Method::POST, &path, api::CONTAINER_SERVICE, None)
            .await?;
        let kubeconfig = response.body["kubeconfigs"][0]["value"]
            .as_str()
            .ok_or_else(|| StepError::Expectation {
                expected: "kubeconfigs[0].value in the listClusterUserCredential answer".into(),
                observed: super::expect::abbreviate(&response.body),
            })?;
        use base64::Engine;
        let kubeconfig = base64::engine::general_purpose::STANDARD
            .decode(kubeconfig)
            .map_err(|e| StepError::Expectation {
                expected: "a base64 kubeconfig".into(),
                observed: e.to_string(),
            })?;
        if !self.clusters.contains_key(name) {
            let cluster = self.target.cluster(&cluster_path, &kubeconfig).await?;
            self.clusters.insert(name.to_owned(), cluster);
        }
        self.current_cluster = Some(name.to_owned());
        Ok(CommandOutput {
            value: Value::Null,
            note: Some(format!("Merged \"{name}\" as current context")),
        })
    }

    async fn namespace_create(
        &mut self,
        args: &NamespaceCreateArgs,
    ) -> Result<CommandOutput, StepError> {
        let session = self.session()?;
        let location = match &args.location {
            Some(location) => location.clone(),
            None => group_location(&session.arm, &group_path(session, &args.group)).await?,
        };
        let path = provider_path(
            session,
            &args.group,
            &format!("Microsoft.ServiceBus/namespaces/{}", args.name),
        );
        let body = json!({
            "location": location,
            "sku": { "name": args.sku, "tier": args.sku },
            "identity": { "type": "None" },
            "properties": { "disableLocalAuth": args.disable_local_auth },
        });
        let response = session
            .arm
            .call_and_wait(Method::PUT, &path, api::SERVICE_BUS, Some(&body))
            .await?;
        Ok(CommandOutput::json(response.body))
    }

    async fn federated_credential_create(
        &mut self,
        args: &FederatedCredentialArgs,
    ) -> Result<CommandOutput, StepError> {
        let session = self.session()?;
        let path = provider_path(
            session,
            &args.group,
            &format!(
                "Microsoft.ManagedIdentity/userAssignedIdentities/{}/federatedIdentityCredentials/{}",
                args.identity_name, args.name
            ),
        );
        let body = json!({ "properties": { "audiences": args.audiences, "issuer": args.issuer, "subject": args.subject } });
        let (response, _) = session
            .arm
            .call(Method::PUT, &path, api::FEDERATED_CREDENTIALS, Some(&body))
            .await?;
        expect_status(&path, response.status, &[200, 201])?;
        Ok(CommandOutput::json(response.body))
    }

    /// `az role assignment create --assignee-object-id --assignee-principal-type --scope`:
    /// the role definition by name at the scope, then the assignment under a new GUID.
    async fn role_assignment_create(
        &mut self,
        args: &RoleAssignmentArgs,
    ) -> Result<CommandOutput, StepError> {
        let session = self.session()?;
        let scope = args.scope.trim_end_matches('/');
        let filter = format!("roleName eq '{}'", args.role);
        let definitions_path = format!(
            "{scope}/providers/Microsoft.Authorization/roleDefinitions?$filter={}",
            encode_query(&filter)
        );
        let (definitions, _) = session
            .arm
            .call(Method::GET, &definitions_path, api::ROLE_DEFINITIONS, None)
            .await?;
        let definition_id = definitions.body["value"][0]["id"]
            .as_str()
            .ok_or_else(|| StepError::Precondition(format!("Role '{}' doesn't exist.", args.role)))?
            .to_owned();
        let path = format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
            uuid::Uuid::new_v4()
        );
        let mut body = json!({ "properties": {
            "roleDefinitionId": definition_id,
            "principalId": args.assignee_object_id,
        } });
        if let Some(principal_type) = &args.assignee_principal_type {
            body["properties"]["principalType"] = json!(principal_type);
        }
        let (response, _) = session
            .arm
            .call(Method::PUT, &path, api::ROLE_ASSIGNMENTS, Some(&body))
            .await?;
        expect_status(&path, response.status, &[200, 201])?;
        Ok(CommandOutput::json(response.body))
    }

    async fn wait(&mut self, args: &crate::scenario::WaitArgs) -> Result<CommandOutput, StepError> {
        let timeout = super::expect::parse_duration(&args.timeout)?;
        let cluster = self.cluster()?;
        if let Some(text) = &args.log {
            return wait_for_log(cluster, args, text, timeout).await;
        }
        let condition = args
            .condition
            .unwrap_or(crate::scenario::JobCondition::Complete);
        let waited = cluster
            .wait_job(
                &args.job,
                &args.namespace,
                condition_type(condition),
                timeout,
            )
            .await;
        let logs = cluster
            .job_logs(&args.job, &args.namespace)
            .unwrap_or_default();
        let status = waited.map_err(|e| StepError::Workload {
            message: e.to_string(),
            log: format!("log of job/{} ends with:\n{}", args.job, log_tail(&logs, 6)),
        })?;
        let last_line = logs
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!("log: {}", l.trim()));
        Ok(CommandOutput {
            value: serde_json::to_value(format!("{status:?}")).unwrap_or(Value::Null),
            note: last_line,
        })
    }
}

/// Polls a job's log until it contains `text`, as a test would tail `kubectl logs -f`.
async fn wait_for_log(
    cluster: &crate::cluster::RunCluster,
    args: &crate::scenario::WaitArgs,
    text: &str,
    timeout: std::time::Duration,
) -> Result<CommandOutput, StepError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let logs = cluster
            .job_logs(&args.job, &args.namespace)
            .unwrap_or_default();
        if logs.contains(text) {
            return Ok(CommandOutput {
                value: Value::Null,
                note: Some(format!("log contains {text:?}")),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError::Workload {
                message: format!(
                    "the log of job/{} did not contain {text:?} within {}",
                    args.job, args.timeout
                ),
                log: format!("log ends with:\n{}", log_tail(&logs, 6)),
            });
        }
        tokio::time::sleep(LOG_POLL_INTERVAL).await;
    }
}

/// How often `wait` with `log` reads the job's log.
const LOG_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

fn log_tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn condition_type(condition: crate::scenario::JobCondition) -> crate::cluster::JobConditionType {
    match condition {
        crate::scenario::JobCondition::Complete => crate::cluster::JobConditionType::Complete,
        crate::scenario::JobCondition::Failed => crate::cluster::JobConditionType::Failed,
    }
}

/// Reads a resource group's location, as the CLI does when `--location` is omitted.
async fn group_location(arm: &ArmClient, group_path: &str) -> Result<String, StepError> {
    let (group, _) = arm
        .call(Method::GET, group_path, api::RESOURCES, None)
        .await?;
    group["location"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| StepError::Expectation {
            expected: "a location on the resource group".into(),
            observed: super::expect::abbreviate(&group.body),
        })
}

impl std::ops::Index<&str> for crate::client::ArmResponse {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.body[key]
    }
}

/// The CLI accepts only the status codes the API specification lists for an operation.
fn expect_status(path: &str, status: u16, allowed: &[u16]) -> Result<(), StepError> {
    if allowed.contains(&status) {
        return Ok(());
    }
    Err(StepError::Expectation {
        expected: format!("status {allowed:?} from PUT {path}"),
        observed: format!(
            "status {status} (the Azure CLI fails with \"Operation returned an invalid status\")"
        ),
    })
}

fn encode_query(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
