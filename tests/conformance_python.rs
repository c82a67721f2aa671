//! Conformance of the fakes with the real Python clients: azure-identity's credentials
//! against the fake Entra ID, and azure-servicebus against the Service Bus broker over TLS
//! and plain AMQP.
//!
//! Needs the pinned clients of `ci/requirements-clients.txt`: run `ci/setup-clients`, then
//! `XTENANT_PYTHON=$PWD/.venv/bin/python cargo test --features conformance --test
//! conformance_python`, or `ci/conformance` for both. A missing interpreter or package
//! fails the test. Every client setting points at 127.0.0.1, so no request leaves the
//! machine.

#![cfg(feature = "conformance")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use xtenant_fakes::cloud::servicebus::{MessageState, SubQueue};
use xtenant_fakes::cloud::{
    ClientId, ClusterIssuer, FederatedCredential, Namespace, ObjectId, Principal, PrincipalKind,
    Queue, QueueProperties, ResourceId, TenantId, UserAssignedIdentity, lock,
};
use xtenant_fakes::crypto::{PublicKey, SigningKey};
use xtenant_fakes::jwt::{self, DecodedJwt};
use xtenant_fakes::{Fakes, FakesConfig};

const ISSUER: &str = "https://oidc.test/tenant-a/cluster-a/";
const SUBJECT: &str = "system:serviceaccount:default:myserviceaccount";
const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
const NAMESPACE: &str = "ns1";
const NAMESPACE_HOST: &str = "ns1.servicebus.windows.net";
const QUEUE: &str = "myqueue";
const SESSION_QUEUE: &str = "sessionqueue";
/// Time a client script may take before the test fails.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The fakes with the state of the cross-tenant flow already provisioned in tenant b: a
/// managed identity that trusts `ISSUER`, a namespace with a queue and a session queue,
/// and "Azure Service Bus Data Owner" for the identity on the namespace.
struct World {
    fakes: Fakes,
    tenant_a: TenantId,
    tenant_b: TenantId,
    identity_client_id: ClientId,
    issuer_key: Arc<SigningKey>,
    scratch: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let fakes = Fakes::start(FakesConfig::default())
            .await
            .expect("the fakes start");
        let (tenant_a, tenant_b, identity_client_id, issuer_key) = {
            let mut cloud = lock(&fakes.cloud);
            let tenant_a = cloud.tenant("a").unwrap().id.clone();
            let tenant_b = cloud.tenant("b").unwrap().id.clone();
            let issuer_key = cloud.take_key();
            cloud.issuers.push(ClusterIssuer {
                url: ISSUER.into(),
                tenant: tenant_a.clone(),
                keys: vec![issuer_key.clone()],
                reachable: true,
            });
            let subscription = cloud.subscriptions_of(&tenant_b)[0].resource_id();
            let group = subscription.join("resourceGroups/rg-b");
            let client_id = add_identity(&mut cloud, &group, &tenant_b);
            (tenant_a, tenant_b, client_id, issuer_key)
        };
        let scratch = tempfile::Builder::new()
            .prefix("xtenant-conformance-")
            .tempdir()
            .unwrap();
        Self {
            fakes,
            tenant_a,
            tenant_b,
            identity_client_id,
            issuer_key,
            scratch,
        }
    }

    /// Writes a projected service-account token signed by the cluster issuer's key, as
    /// kubelet does, and returns its path.
    fn write_projected_token(&self) -> PathBuf {
        let now = lock(&self.fakes.cloud).now().unix_timestamp();
        let claims = serde_json::json!({
            "aud": [FEDERATION_AUDIENCE], "iss": ISSUER, "sub": SUBJECT,
            "iat": now, "nbf": now, "exp": now + 3600,
        });
        let token = jwt::encode(serde_json::Map::new(), &claims, &self.issuer_key);
        let path = self.scratch.path().join("azure-identity-token");
        std::fs::write(&path, token).unwrap();
        path
    }

    /// Environment every script gets: the credential and Service Bus settings, all aimed
    /// at the fakes on 127.0.0.1.
    fn environment(&self, tls: bool) -> Vec<(String, String)> {
        let endpoints = &self.fakes.endpoints;
        let (operator_client, operator_secret) = {
            let cloud = lock(&self.fakes.cloud);
            let operator = cloud.operator(&self.tenant_a).unwrap();
            (
                operator.client_id.to_string(),
                operator.secret().unwrap().to_owned(),
            )
        };
        let service_bus = if tls {
            endpoints.servicebus_tls
        } else {
            endpoints.servicebus_plain
        };
        let ca = self.fakes.ca_file().display().to_string();
        let token_file = self.write_projected_token().display().to_string();
        [
            ("REQUESTS_CA_BUNDLE", ca.clone()),
            ("AZURE_AUTHORITY_HOST", endpoints.login.clone()),
            ("AZURE_TENANT_ID", self.tenant_b.to_string()),
            ("AZURE_CLIENT_ID", self.identity_client_id.to_string()),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file),
            ("XTENANT_OPERATOR_TENANT_ID", self.tenant_a.to_string()),
            ("XTENANT_OPERATOR_CLIENT_ID", operator_client),
            ("XTENANT_OPERATOR_SECRET", operator_secret),
            ("XTENANT_CA_FILE", ca),
            ("XTENANT_SB_NAMESPACE", NAMESPACE_HOST.to_owned()),
            ("XTENANT_SB_ENDPOINT", format!("sb://{service_bus}")),
            ("XTENANT_SB_TLS", if tls { "1" } else { "0" }.to_owned()),
            ("XTENANT_SB_QUEUE", QUEUE.to_owned()),
            ("XTENANT_SB_SESSION_QUEUE", SESSION_QUEUE.to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Fetches a tenant's signing keys from the fake Entra ID's JWKS endpoint.
    async fn tenant_keys(&self, tenant: &TenantId) -> Vec<PublicKey> {
        let ca = std::fs::read(self.fakes.ca_file()).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let url = format!(
            "{}/{tenant}/discovery/v2.0/keys",
            self.fakes.endpoints.login
        );
        let jwks: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        jwks["keys"]
            .as_array()
            .expect("JWKS has keys")
            .iter()
            .map(|jwk| PublicKey::from_jwk(jwk).unwrap())
            .collect()
    }

    fn queue<T>(&self, name: &str, read: impl FnOnce(&mut Queue) -> T) -> T {
        let mut cloud = lock(&self.fakes.cloud);
        let now = cloud.now();
        let queue = cloud
            .namespace_by_host_mut(NAMESPACE_HOST)
            .and_then(|n| n.queue_mut(name))
            .expect("the queue exists");
        queue.apply_time(now);
        read(queue)
    }
}

/// Adds a user-assigned identity in `tenant` with a federated credential for `ISSUER` and
/// `SUBJECT`, a namespace with `QUEUE` and `SESSION_QUEUE`, and the Data Owner role for
/// the identity on the namespace. Returns the identity's client id.
fn add_identity(
    cloud: &mut xtenant_fakes::cloud::Cloud,
    group: &ResourceId,
    tenant: &TenantId,
) -> ClientId {
    let now = cloud.now();
    let identity_id =
        group.join("providers/Microsoft.ManagedIdentity/userAssignedIdentities/producer");
    let client_id = ClientId::random();
    let object_id = ObjectId::random();
    cloud.principals.push(Principal {
        object_id: object_id.clone(),
        client_id: client_id.clone(),
        tenant: tenant.clone(),
        display_name: "producer".into(),
        kind: PrincipalKind::ManagedIdentity {
            resource_id: identity_id.clone(),
        },
        created_at: now,
    });
    cloud.identities.insert(
        identity_id.key(),
        UserAssignedIdentity {
            id: identity_id.clone(),
            tenant: tenant.clone(),
            location: "eastus".into(),
            tags: Value::Null,
            principal_id: object_id.clone(),
            client_id: client_id.clone(),
            created_at: now,
        },
    );
    let credential_id = identity_id.join("federatedIdentityCredentials/cluster-a");
    cloud.federated_credentials.insert(
        credential_id.key(),
        FederatedCredential {
            id: credential_id,
            identity: identity_id,
            issuer: ISSUER.into(),
            subject: SUBJECT.into(),
            audiences: vec![FEDERATION_AUDIENCE.into()],
            created_at: now - time::Duration::minutes(1),
        },
    );

    let namespace_id = group.join(&format!(
        "providers/Microsoft.ServiceBus/namespaces/{NAMESPACE}"
    ));
    let queue = Queue::new(
        namespace_id.join(&format!("queues/{QUEUE}")),
        QueueProperties::default(),
        now,
    );
    let session_properties = QueueProperties {
        requires_session: true,
        ..QueueProperties::default()
    };
    let session_queue = Queue::new(
        namespace_id.join(&format!("queues/{SESSION_QUEUE}")),
        session_properties,
        now,
    );
    let mut namespace = Namespace::new(namespace_id.clone(), tenant.clone(), "eastus", now);
    namespace.disable_local_auth = true;
    namespace.queues.insert(QUEUE.to_owned(), queue);
    namespace
        .queues
        .insert(SESSION_QUEUE.to_owned(), session_queue);
    cloud.namespaces.insert(NAMESPACE.into(), namespace);

    cloud.assign_role(&object_id, "Azure Service Bus Data Owner", &namespace_id);
    client_id
}

/// Returns the interpreter of the client virtual environment, from `XTENANT_PYTHON`. Fails the
/// test, with the command that fixes it, when the variable or the packages are missing.
fn python() -> PathBuf {
    let fix = "run ci/setup-clients, then set XTENANT_PYTHON=$PWD/.venv/bin/python \
               (ci/conformance does both)";
    let Some(python) = std::env::var_os("XTENANT_PYTHON") else {
        panic!("XTENANT_PYTHON is not set: {fix}");
    };
    let python = PathBuf::from(python);
    let check = std::process::Command::new(&python)
        .args(["-c", "import azure.identity, azure.servicebus"])
        .output();
    match check {
        Ok(output) if output.status.success() => python,
        Ok(output) => panic!(
            "{} cannot import azure.identity and azure.servicebus ({}): {fix}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("{} could not be run ({error}): {fix}", python.display()),
    }
}

/// Runs a script of `tests/conformance` with `environment` and returns the JSON object it
/// printed last. Fails the test with the script's output when it exits with an error.
async fn run_script(script: &str, environment: &[(String, String)]) -> Value {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let child = tokio::process::Command::new(python())
        .arg(directory.join(script))
        .current_dir(&directory)
        .envs(environment.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the Python interpreter starts");
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} timed out after {SCRIPT_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let last_line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last_line)
        .unwrap_or_else(|error| panic!("{script} printed no JSON ({error}):\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_credentials_get_verified_tokens() {
    let world = World::start().await;
    let result = run_script("identity_tokens.py", &world.environment(true)).await;

    let workload = DecodedJwt::decode(result["workload"].as_str().unwrap()).unwrap();
    let keys_b = world.tenant_keys(&world.tenant_b).await;
    assert_eq!(workload.verify(&keys_b), Ok(()));
    assert_eq!(
        workload.claim_str("aud"),
        Some("https://servicebus.azure.net")
    );
    assert_eq!(workload.claim_str("tid"), Some(world.tenant_b.as_str()));
    assert_eq!(
        workload.claim_str("appid"),
        Some(world.identity_client_id.as_str())
    );
    let keys_a = world.tenant_keys(&world.tenant_a).await;
    assert!(workload.verify(&keys_a).is_err());

    let operator = DecodedJwt::decode(result["operator"].as_str().unwrap()).unwrap();
    assert_eq!(operator.verify(&keys_a), Ok(()));
    assert_eq!(operator.claim_str("tid"), Some(world.tenant_a.as_str()));
    assert!(
        operator
            .audiences()
            .iter()
            .any(|aud| aud.starts_with("https://management.")),
        "operator token audiences: {:?}",
        operator.audiences()
    );
}

/// Runs the queue script over one endpoint and checks the summary and the model.
async fn queue_operations_work(tls: bool) {
    let world = World::start().await;
    let result = run_script("servicebus_queue.py", &world.environment(tls)).await;

    assert_eq!(
        result["peeked"],
        serde_json::json!(["single", "batch-0", "batch-1", "batch-2"])
    );
    assert_eq!(
        result["peeked_sequence_numbers"],
        serde_json::json!([1, 2, 3, 4])
    );
    assert_eq!(result["received"], result["peeked"]);
    assert_eq!(result["single_kind"], "single");
    assert_eq!(result["lock_token_length"], 36, "a UUID lock token");
    assert_eq!(result["lock_renewed"], true);
    assert_eq!(result["abandoned_again"], "batch-0");
    assert_eq!(result["abandoned_delivery_count"], 1);
    assert_eq!(result["deferred"], "batch-2");
    assert_eq!(result["dead_letter_body"], "batch-1");
    assert_eq!(result["dead_letter_reason"], "bad-payload");
    assert_eq!(result["dead_letter_description"], "could not parse");

    let kept = result["scheduled_kept"].as_i64().unwrap();
    world.queue(QUEUE, |queue| {
        assert_eq!(queue.active_count(), 0);
        assert_eq!(queue.deferred_count(), 0);
        assert_eq!(queue.scheduled_count(), 1);
        let scheduled = &queue.messages[0];
        assert_eq!(scheduled.sequence_number, kept);
        assert_eq!(scheduled.state, MessageState::Scheduled);
        assert_eq!(queue.dead_letter_count(), 1);
        let letter = &queue.dead_letters[0];
        let info = letter.dead_letter.as_ref().expect("dead-letter details");
        assert_eq!(info.reason.as_deref(), Some("bad-payload"));
        assert_eq!(info.description.as_deref(), Some("could not parse"));
        assert!(
            letter.lock.is_none(),
            "the abandoned dead letter is unlocked"
        );
        let peeked = queue.peek(
            SubQueue::DeadLetter,
            1,
            10,
            None,
            time::OffsetDateTime::now_utc(),
        );
        assert_eq!(peeked.len(), 1);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_queue_over_tls() {
    queue_operations_work(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_queue_over_plain_amqp() {
    queue_operations_work(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_session_queue() {
    let world = World::start().await;
    let result = run_script("servicebus_sessions.py", &world.environment(true)).await;

    assert_eq!(result["session_id"], "s1");
    assert_eq!(result["state"], "step-1");
    assert_eq!(result["session_lock_renewed"], true);
    assert_eq!(
        result["received"],
        serde_json::json!(["s1-first", "s1-second"])
    );
    assert_eq!(result["session_ids"], serde_json::json!(["s1", "s1"]));

    world.queue(SESSION_QUEUE, |queue| {
        assert_eq!(queue.active_count(), 1);
        assert_eq!(queue.messages[0].session_id.as_deref(), Some("s2"));
        let s1 = queue.sessions.get("s1").expect("session s1 is known");
        assert_eq!(s1.state.as_deref(), Some(&b"step-1"[..]));
        assert!(
            s1.lock.is_none(),
            "closing the receiver releases the session"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicebus_rejects_oversized_message() {
    let world = World::start().await;
    let result = run_script("servicebus_limits.py", &world.environment(false)).await;

    assert_eq!(result["size_exceeded"], true, "{result}");
    world.queue(QUEUE, |queue| assert_eq!(queue.active_count(), 1));
}
