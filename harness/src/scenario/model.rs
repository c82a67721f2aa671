//! The scenario file format: YAML that reads like the walkthrough it automates.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_yaml::Value;

/// A scenario file: tenants, variables and the steps that run against them, or a base
/// scenario (`extends`) and the changes made to its steps.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "xtenant scenario")]
pub struct Scenario {
    pub name: String,
    /// One line that `xtenant list` shows.
    #[serde(default)]
    pub description: Option<String>,
    /// Path of a base scenario, relative to this file. Its tenants, variables and steps are
    /// taken over; `vars` here override its variables and `changes` edit its steps.
    #[serde(default)]
    pub extends: Option<String>,
    /// Scenario names of the tenants (`a`, `b`).
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// Variables available as `${NAME}` in every string of the steps.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The steps, in order. A scenario that `extends` another may list none and use
    /// `changes` instead.
    #[serde(default)]
    pub steps: Option<Vec<Step>>,
    /// Edits to the base scenario's steps, applied in order; each names a step by its `id`.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One step: a command plus optional id, captures, expectations and time limit.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(flatten)]
    pub command: Command,
    /// Name that `changes` in a scenario extending this one use to find the step.
    #[serde(default)]
    pub id: Option<String>,
    /// Values read from the command's JSON output into variables, by dotted path, as
    /// `az ... --query PATH` reads them.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// The step must fail with this error; the step passes when it does.
    #[serde(default)]
    pub expect_error: Option<ExpectedError>,
    /// Maximum duration of the step, e.g. `5s`. After it the step fails with "timed out".
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The commands a step can run. Names follow the `az` and `kubectl` commands they stand for.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
pub enum Command {
    /// Signs in as the operator of a tenant (`az login --service-principal --tenant`).
    #[serde(rename = "login")]
    Login(String),
    /// `az account show`: the signed-in subscription (`id`, `tenantId`, `name`).
    #[serde(rename = "account show")]
    AccountShow(AccountShowArgs),
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
    /// `az rest`: one ARM request with the signed-in operator's token.
    #[serde(rename = "rest")]
    Rest(RestArgs),
    /// `kubectl apply -f -` with inline manifests.
    #[serde(rename = "kubectl apply")]
    KubectlApply(String),
    /// Waits for a Job to reach a condition, or for its log to contain a text.
    #[serde(rename = "wait")]
    Wait(WaitArgs),
    /// Checks the state of the system.
    #[serde(rename = "expect")]
    Expect(Box<Expectations>),
    /// Moves the model's clock forward (fakes only), e.g. `90s`, `2h`.
    #[serde(rename = "advance clock")]
    AdvanceClock(String),
    /// Sets propagation delays of the fake cloud (fakes only).
    #[serde(rename = "set")]
    Set(DelaySettings),
    /// Injects a fault into a fake (fakes only) for the rest of the scenario.
    #[serde(rename = "fault")]
    Fault(Box<Fault>),
}

/// Options of `account show`; none are needed.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountShowArgs {}

/// One ARM request, as `az rest --method M --url U` sends it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestArgs {
    /// HTTP method, e.g. `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path below the ARM endpoint, e.g. `/subscriptions/ID/resourceGroups`.
    pub url: String,
    #[serde(default = "default_rest_api_version", rename = "api-version")]
    pub api_version: String,
    /// JSON body.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_rest_api_version() -> String {
    "2024-11-01".into()
}

/// Propagation delays of the fake cloud, each a duration such as `30s`; unset ones keep
/// their value (zero at the start).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DelaySettings {
    /// A new federated identity credential matches assertions only after this long.
    #[serde(default)]
    pub fic_propagation: Option<String>,
    /// A new role assignment grants its actions only after this long.
    #[serde(default)]
    pub role_assignment_propagation: Option<String>,
    /// A new managed identity is visible to role assignments only after this long.
    #[serde(default)]
    pub identity_replication: Option<String>,
    /// Asynchronous ARM operations stay `InProgress` for this long.
    #[serde(default)]
    pub operation_duration: Option<String>,
}

/// A fault injected into one fake. HTTP faults apply to requests to `arm`, `entra` or
/// `issuer` that match `method` and `path`; AMQP faults apply to `servicebus`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub service: FaultService,
    /// HTTP method to match, e.g. `PUT`; any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Regular expression the request path must match (HTTP), e.g. `/federatedIdentityCredentials/`.
    #[serde(default)]
    pub path: Option<String>,
    /// HTTP status of the injected response.
    #[serde(default)]
    pub status: Option<u16>,
    /// Body of the injected response: text, or YAML that is sent as JSON.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Delay before the response, e.g. `2s`.
    #[serde(default)]
    pub delay: Option<String>,
    /// Leaves the request unanswered, as a reset connection looks to a client.
    #[serde(default)]
    pub reset: bool,
    /// AMQP: where the broker fails: `attach` (of a sender or receiver) or `transfer`.
    #[serde(default)]
    pub on: Option<AmqpFaultPoint>,
    /// AMQP: how the broker fails: detach the link with `condition`, close the connection,
    /// or reply busy.
    #[serde(default)]
    pub action: Option<AmqpFaultAction>,
    /// AMQP error condition, e.g. `com.microsoft:server-busy`.
    #[serde(default)]
    pub condition: Option<String>,
    /// AMQP error description.
    #[serde(default)]
    pub description: Option<String>,
    /// How many matching requests fail; every one when absent.
    #[serde(default)]
    pub times: Option<u32>,
    /// Chance from 0 to 1 that a matching request fails; 1 when absent.
    #[serde(default)]
    pub probability: Option<f64>,
}

/// The fake a fault is injected into.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FaultService {
    Arm,
    Entra,
    Issuer,
    Servicebus,
}

/// The point of the AMQP exchange where a fault applies.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AmqpFaultPoint {
    /// The link attach of a sender or receiver.
    Attach,
    /// A message transfer.
    Transfer,
}

/// The broker's response in place of the faulted operation.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AmqpFaultAction {
    /// Detaches the link with the fault's condition and description.
    Detach,
    /// Closes the connection with the fault's condition and description.
    CloseConnection,
    /// Rejects with `com.microsoft:server-busy`.
    ServerBusy,
}

/// An edit of the base scenario's steps. Exactly one of `replace`, `insert-before`,
/// `insert-after`, `remove` and `patch` names the step by its `id`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Change {
    /// Replaces the step with `steps`.
    #[serde(default)]
    pub replace: Option<String>,
    /// Inserts `steps` before the step.
    #[serde(default)]
    pub insert_before: Option<String>,
    /// Inserts `steps` after the step.
    #[serde(default)]
    pub insert_after: Option<String>,
    /// Removes the step.
    #[serde(default)]
    pub remove: Option<String>,
    /// Changes fields of the step: `set`, `expect_error`, `timeout`, `manifest`.
    #[serde(default)]
    pub patch: Option<String>,
    /// Steps for `replace`, `insert-before` and `insert-after`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<Step>>")]
    pub steps: Option<Vec<Value>>,
    /// Fields merged into the command's arguments (`patch`), e.g. `{subject: ...}`.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub set: Option<Value>,
    /// Sets the step's expected error (`patch`).
    #[serde(default, rename = "expect_error")]
    pub expect_error: Option<ExpectedError>,
    /// Sets the step's time limit (`patch`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Edits of the manifests of a `kubectl apply` step (`patch`).
    #[serde(default)]
    pub manifest: Vec<ManifestPatch>,
}

/// An edit of the objects of one kind in a `kubectl apply` step.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestPatch {
    /// Kind of the objects to edit: `ServiceAccount`, `Job`, `Pod`.
    pub kind: String,
    /// Name of the object; every object of the kind when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Environment variables of every container (Job, Pod).
    #[serde(default)]
    pub env: Option<MapPatch>,
    /// Annotations of the object (of the pod template for a Job).
    #[serde(default)]
    pub annotations: Option<MapPatch>,
    /// Labels of the object (of the pod template for a Job).
    #[serde(default)]
    pub labels: Option<MapPatch>,
    /// New `metadata.name`.
    #[serde(default)]
    pub rename: Option<String>,
    /// `spec.backoffLimit` of a Job.
    #[serde(default, rename = "backoff-limit")]
    pub backoff_limit: Option<u32>,
}

/// Entries to set and keys to remove.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapPatch {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupArgs {
    pub name: String,
    pub location: String,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    pub name: String,
    /// Returns at the 202 like `az group delete --no-wait`.
    #[serde(default, rename = "no-wait")]
    pub no_wait: bool,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Named {
    pub group: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
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

#[derive(Clone, Debug, Deserialize, JsonSchema)]
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

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueArgs {
    pub group: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
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

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignmentArgs {
    pub role: String,
    #[serde(rename = "assignee-object-id")]
    pub assignee_object_id: String,
    /// `ServicePrincipal`, `User` or `Group`; absent, the request carries no `principalType`
    /// and ARM looks the principal up, which fails while a new identity replicates.
    #[serde(default, rename = "assignee-principal-type")]
    pub assignee_principal_type: Option<String>,
    pub scope: String,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    pub job: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The job condition to wait for; give this or `log`.
    #[serde(default, rename = "for")]
    pub condition: Option<JobCondition>,
    /// Text the job's log must come to contain; give this or `for`.
    #[serde(default)]
    pub log: Option<String>,
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

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobCondition {
    Complete,
    Failed,
}

/// Checks made by an `expect` step; each one present must hold.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub logs: Option<LogExpectation>,
    #[serde(default)]
    pub queue: Option<QueueExpectation>,
    #[serde(default)]
    pub pod: Option<PodExpectation>,
    #[serde(default)]
    pub requests: Option<RequestExpectation>,
}

/// The phase of a job's newest pod, as `kubectl get pod` shows it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PodExpectation {
    pub job: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: String,
    /// Environment variable names the pod's first container must have.
    #[serde(default, rename = "env-has")]
    pub env_has: Vec<String>,
    /// Environment variable names the pod's first container must not have.
    #[serde(default, rename = "env-lacks")]
    pub env_lacks: Vec<String>,
}

/// How many requests a fake received (fakes only).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestExpectation {
    pub service: FaultService,
    /// HTTP method to count; any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Regular expression the path must match; any path when absent.
    #[serde(default)]
    pub path: Option<String>,
    /// Regular expression the body must match, e.g. `client_assertion=` for federated
    /// token requests; any body when absent.
    #[serde(default)]
    pub body: Option<String>,
    /// Number of matching requests since the fakes started.
    pub count: usize,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogExpectation {
    pub job: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Text the log must contain.
    #[serde(default)]
    pub contains: Option<String>,
    /// Text the log must not contain.
    #[serde(default, rename = "not-contains")]
    pub not_contains: Option<String>,
    /// Text the last non-empty log line must equal.
    #[serde(default, rename = "last-line")]
    pub last_line: Option<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
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

/// An error a step must end with: any field present must match. For a `wait` step the
/// job's log is part of the error, so a workload's AADSTS code or AMQP condition matches.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedError {
    /// ARM error code (`AuthorizationFailed`) or AADSTS code (`AADSTS700016`).
    #[serde(default)]
    pub code: Option<String>,
    /// HTTP status, or the `status-code` of a `$cbs` put-token reply.
    #[serde(default)]
    pub status: Option<u16>,
    /// AMQP error condition, e.g. `amqp:unauthorized-access`.
    #[serde(default)]
    pub condition: Option<String>,
    /// Text the error message must contain.
    #[serde(default)]
    pub message: Option<String>,
}
