//! The scenario file format: YAML that reads like the walkthrough it automates.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A scenario: tenants, variables and the steps that run against them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// One line that `xtenant list` shows.
    #[serde(default)]
    pub description: Option<String>,
    /// Scenario names of the tenants (`a`, `b`).
    #[serde(default = "default_tenants")]
    pub tenants: Vec<String>,
    /// Variables available as `${NAME}` in every string of the steps.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    pub steps: Vec<Step>,
}

fn default_tenants() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

/// One step: a command plus optional captures and expectations.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(flatten)]
    pub command: Command,
    /// Values read from the command's JSON output into variables, by dotted path, as
    /// `az ... --query PATH` reads them.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// The step must fail with this error; the step passes when it does.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
}

/// The commands a step can run. Names follow the `az` and `kubectl` commands they stand for.
#[derive(Clone, Debug, Deserialize)]
pub enum Command {
    /// Signs in as the operator of a tenant (`az login --service-principal --tenant`).
    #[serde(rename = "login")]
    Login(String),
    #[serde(rename = "group create")]
    GroupCreate(GroupArgs),
    #[serde(rename = "group delete")]
    GroupDelete(GroupRef),
    #[serde(rename = "aks create")]
    AksCreate(AksCreateArgs),
    #[serde(rename = "aks show")]
    AksShow(Named),
    #[serde(rename = "aks get-credentials")]
    AksGetCredentials(Named),
    #[serde(rename = "servicebus namespace create")]
    ServiceBusNamespaceCreate(NamespaceCreateArgs),
    #[serde(rename = "servicebus namespace show")]
    ServiceBusNamespaceShow(Named),
    #[serde(rename = "servicebus queue create")]
    ServiceBusQueueCreate(QueueArgs),
    #[serde(rename = "servicebus queue show")]
    ServiceBusQueueShow(QueueArgs),
    #[serde(rename = "identity create")]
    IdentityCreate(Named),
    #[serde(rename = "identity show")]
    IdentityShow(Named),
    #[serde(rename = "identity federated-credential create")]
    FederatedCredentialCreate(FederatedCredentialArgs),
    #[serde(rename = "role assignment create")]
    RoleAssignmentCreate(RoleAssignmentArgs),
    /// `kubectl apply -f -` with inline manifests.
    #[serde(rename = "kubectl apply")]
    KubectlApply(String),
    /// Waits for a Job to reach a condition.
    #[serde(rename = "wait")]
    Wait(WaitArgs),
    /// Checks the state of the system.
    #[serde(rename = "expect")]
    Expect(Expectations),
    /// Moves the model's clock forward (fakes only), e.g. `90s`, `2h`.
    #[serde(rename = "advance clock")]
    AdvanceClock(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupArgs {
    pub name: String,
    pub location: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    pub name: String,
    /// Returns at the 202 like `az group delete --no-wait`.
    #[serde(default, rename = "no-wait")]
    pub no_wait: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    pub group: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AksCreateArgs {
    pub group: String,
    pub name: String,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default, rename = "oidc-issuer")]
    pub oidc_issuer: bool,
    #[serde(default, rename = "workload-identity")]
    pub workload_identity: bool,
    #[serde(default = "default_node_count", rename = "node-count")]
    pub node_count: u32,
}

fn default_node_count() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceCreateArgs {
    pub group: String,
    pub name: String,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default, rename = "disable-local-auth")]
    pub disable_local_auth: bool,
    #[serde(default = "default_sku")]
    pub sku: String,
}

fn default_sku() -> String {
    "Standard".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueArgs {
    pub group: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredentialArgs {
    pub group: String,
    #[serde(rename = "identity-name")]
    pub identity_name: String,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

fn default_audiences() -> Vec<String> {
    vec!["api://AzureADTokenExchange".into()]
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignmentArgs {
    pub role: String,
    #[serde(rename = "assignee-object-id")]
    pub assignee_object_id: String,
    #[serde(default = "default_principal_type", rename = "assignee-principal-type")]
    pub assignee_principal_type: String,
    pub scope: String,
}

fn default_principal_type() -> String {
    "ServicePrincipal".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    pub job: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(rename = "for")]
    pub condition: JobCondition,
    /// How long to wait, e.g. `60s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

fn default_namespace() -> String {
    "default".into()
}

fn default_timeout() -> String {
    "60s".into()
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobCondition {
    Complete,
    Failed,
}

/// Checks made by an `expect` step; each one present must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub logs: Option<LogExpectation>,
    #[serde(default)]
    pub queue: Option<QueueExpectation>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogExpectation {
    pub job: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Text the log must contain.
    #[serde(default)]
    pub contains: Option<String>,
    /// Text the last non-empty log line must equal.
    #[serde(default, rename = "last-line")]
    pub last_line: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueExpectation {
    pub group: String,
    pub namespace: String,
    pub queue: String,
    /// Active messages the queue must hold (`countDetails.activeMessageCount`).
    #[serde(default)]
    pub active: Option<u64>,
    #[serde(default, rename = "dead-letter")]
    pub dead_letter: Option<u64>,
}

/// An error a step must end with: any field present must match.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedError {
    /// ARM error code (`AuthorizationFailed`) or AADSTS code (`AADSTS700016`).
    #[serde(default)]
    pub code: Option<String>,
    /// HTTP status.
    #[serde(default)]
    pub status: Option<u16>,
    /// Text the error message must contain.
    #[serde(default)]
    pub message: Option<String>,
}
