//! Conformance of the fakes with the real Azure CLI: the cross-tenant walkthrough's `az`
//! commands, run as an operator would type them, against the fakes in this process.
//!
//! Needs `azure-cli==2.91.0` from `ci/requirements-clients.txt`: run `ci/setup-clients`,
//! then `XTENANT_PYTHON=$PWD/.venv/bin/python cargo test --features conformance --test
//! conformance_cli -- --nocapture` (or set `XTENANT_AZ` to an `az` executable), or
//! `ci/conformance` for every conformance test. A missing CLI fails the test.
//!
//! The CLI runs with a cleared environment: its configuration, `HOME` and caches live in a
//! temporary folder, and `HTTPS_PROXY` points at a loopback proxy that rejects every
//! `CONNECT` and records it, so the test proves that no command tried to leave the machine.

#![cfg(feature = "conformance")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use xtenant::serve::{ServeEnvironment, TenantLogin};
use xtenant_fakes::cloud::{ProvisioningState, lock};
use xtenant_fakes::{Fakes, FakesConfig};

const GROUP_A: &str = "rg-cluster";
const CLUSTER: &str = "aks-xtenant";
const GROUP_B: &str = "rg-servicebus";
const NAMESPACE: &str = "sbns-xtenant01";
const QUEUE: &str = "myqueue";
const IDENTITY: &str = "myidentity";
const CREDENTIAL: &str = "myfederatedcredential";
const SUBJECT: &str = "system:serviceaccount:default:myserviceaccount";
const FEDERATION_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Built-in role id of "Azure Service Bus Data Owner", the same in every tenant.
const DATA_OWNER: &str = "090c5cfd-751d-490a-894a-3ce6f1109419";
/// Time one `az` command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A loopback HTTP proxy that returns 403 to every request and records its request line.
struct BlackHoleProxy {
    url: String,
    attempts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHoleProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let recorded = attempts.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = vec![0; 4096];
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&buffer[..read]);
                let line = text.lines().next().unwrap_or_default().to_owned();
                recorded.lock().unwrap().push(line);
                let _ = socket
                    .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        Self {
            url,
            attempts,
            task,
        }
    }

    fn attempts(&self) -> Vec<String> {
        self.attempts.lock().unwrap().clone()
    }
}

impl Drop for BlackHoleProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Returns the `az` executable: `XTENANT_AZ`, or the `az` next to `XTENANT_PYTHON`. Fails the
/// test, with the command that fixes it, when neither names an existing file.
fn az_executable() -> PathBuf {
    let fix = "run ci/setup-clients, then set XTENANT_PYTHON=$PWD/.venv/bin/python \
               (ci/conformance does both), or set XTENANT_AZ to an az 2.91.0 executable";
    let az = match (
        std::env::var_os("XTENANT_AZ"),
        std::env::var_os("XTENANT_PYTHON"),
    ) {
        (Some(az), _) => PathBuf::from(az),
        (None, Some(python)) => Path::new(&python)
            .parent()
            .map(|bin| bin.join("az"))
            .unwrap_or_default(),
        (None, None) => panic!("neither XTENANT_AZ nor XTENANT_PYTHON is set: {fix}"),
    };
    assert!(
        az.is_file(),
        "the Azure CLI is missing: {} does not exist; {fix}",
        az.display()
    );
    az
}

/// One command of the transcript and how long it took.
struct Step {
    line: String,
    elapsed: Duration,
    success: bool,
}

/// Runs `az` with the environment of `xtenant serve` and records a transcript.
struct Az {
    executable: PathBuf,
    environment: Vec<(String, String)>,
    /// Values replaced by `***` in the transcript.
    secrets: Vec<String>,
    transcript: Vec<Step>,
}

impl Az {
    fn new(environment: &ServeEnvironment, proxy: &BlackHoleProxy) -> Self {
        let mut variables = environment.variables.clone();
        for (name, value) in [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HTTPS_PROXY", proxy.url.clone()),
            ("HTTP_PROXY", proxy.url.clone()),
            ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
        ] {
            variables.push((name.to_owned(), value));
        }
        Self {
            executable: az_executable(),
            environment: variables,
            secrets: environment
                .tenants
                .iter()
                .map(|t| t.client_secret.clone())
                .collect(),
            transcript: Vec::new(),
        }
    }

    async fn output(&mut self, args: &[&str]) -> std::process::Output {
        let mut line = format!("az {}", args.join(" "));
        for secret in &self.secrets {
            line = line.replace(secret.as_str(), "***");
        }
        let started = Instant::now();
        let child = tokio::process::Command::new(&self.executable)
            .args(args)
            .env_clear()
            .envs(self.environment.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("{} could not start: {error}", self.executable.display())
            });
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`{line}` timed out after {COMMAND_TIMEOUT:?}"))
            .unwrap();
        let step = Step {
            line,
            elapsed: started.elapsed(),
            success: output.status.success(),
        };
        println!(
            "{:>6.2} s  {}  {}",
            step.elapsed.as_secs_f64(),
            if step.success { "ok  " } else { "fail" },
            step.line
        );
        self.transcript.push(step);
        output
    }

    /// Runs a command that must succeed and returns its trimmed standard output.
    async fn run(&mut self, args: &[&str]) -> String {
        let output = self.output(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success(),
            "`{}` failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
            self.transcript.last().unwrap().line,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Runs a command that must fail and returns its standard error.
    async fn run_failing(&mut self, args: &[&str]) -> String {
        let output = self.output(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success(),
            "`{}` succeeded but should have failed\nstdout:\n{}",
            self.transcript.last().unwrap().line,
            String::from_utf8_lossy(&output.stdout)
        );
        stderr
    }

    async fn login(&mut self, tenant: &TenantLogin) {
        let mut args = tenant.az_login_args();
        args.extend(["-o".to_owned(), "none".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).await;
        self.run(&["account", "set", "--subscription", &tenant.subscription_id])
            .await;
    }

    fn total(&self) -> Duration {
        self.transcript.iter().map(|step| step.elapsed).sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_runs_with_real_cli() {
    let started = Instant::now();
    let fakes = Fakes::start(FakesConfig::default())
        .await
        .expect("the fakes start");
    let state = tempfile::Builder::new()
        .prefix("xtenant-cli-")
        .tempdir()
        .unwrap();
    let environment = ServeEnvironment::prepare(&fakes, state.path()).unwrap();
    let proxy = BlackHoleProxy::start().await;
    let mut az = Az::new(&environment, &proxy);
    let tenant = |name: &str| {
        environment
            .tenants
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .unwrap()
    };
    let (tenant_a, tenant_b) = (tenant("a"), tenant("b"));

    // Register the fake cloud; `cloud register` reads the ARM metadata endpoint.
    let register: Vec<&str> = environment
        .cloud_register_args
        .iter()
        .map(String::as_str)
        .collect();
    az.run(&register).await;
    az.run(&["cloud", "set", "-n", xtenant::serve::CLOUD_NAME])
        .await;

    // Tenant A: the cluster with its OIDC issuer and workload identity.
    az.login(&tenant_a).await;
    az.run(&[
        "group", "create", "-n", GROUP_A, "-l", "eastus", "-o", "none",
    ])
    .await;
    az.run(&[
        "aks",
        "create",
        "-g",
        GROUP_A,
        "-n",
        CLUSTER,
        "--enable-oidc-issuer",
        "--enable-workload-identity",
        "--generate-ssh-keys",
        "--node-count",
        "1",
        "-o",
        "none",
    ])
    .await;
    let issuer_url = az
        .run(&[
            "aks",
            "show",
            "-g",
            GROUP_A,
            "-n",
            CLUSTER,
            "--query",
            "oidcIssuerProfile.issuerUrl",
            "-o",
            "tsv",
        ])
        .await;
    let model_issuer = {
        let cloud = lock(&fakes.cloud);
        let cluster = cloud
            .clusters
            .values()
            .find(|c| c.id.name() == CLUSTER)
            .expect("the cluster is in the model");
        cluster.issuer_url.clone()
    };
    assert_eq!(Some(issuer_url.clone()), model_issuer);
    assert!(
        issuer_url.ends_with('/'),
        "AKS issuer URLs end with a slash: {issuer_url}"
    );
    assert!(
        state.path().join("home/.ssh/id_rsa.pub").is_file(),
        "--generate-ssh-keys writes under the isolated HOME"
    );

    // Tenant B: the namespace, queue, identity, role assignment and federated credential.
    az.run(&["logout"]).await;
    az.login(&tenant_b).await;
    az.run(&[
        "group", "create", "-n", GROUP_B, "-l", "eastus", "-o", "none",
    ])
    .await;
    let endpoint = az
        .run(&[
            "servicebus",
            "namespace",
            "create",
            "-g",
            GROUP_B,
            "-n",
            NAMESPACE,
            "--disable-local-auth",
            "--query",
            "serviceBusEndpoint",
            "-o",
            "tsv",
        ])
        .await;
    assert_eq!(
        endpoint,
        format!("https://{NAMESPACE}.servicebus.windows.net:443/")
    );
    az.run(&[
        "servicebus",
        "queue",
        "create",
        "-g",
        GROUP_B,
        "--namespace-name",
        NAMESPACE,
        "-n",
        QUEUE,
        "-o",
        "none",
    ])
    .await;
    az.run(&[
        "identity", "create", "-g", GROUP_B, "-n", IDENTITY, "-o", "none",
    ])
    .await;
    let principal_id = az
        .run(&[
            "identity",
            "show",
            "-g",
            GROUP_B,
            "-n",
            IDENTITY,
            "--query",
            "principalId",
            "-o",
            "tsv",
        ])
        .await;
    let client_id = az
        .run(&[
            "identity", "show", "-g", GROUP_B, "-n", IDENTITY, "--query", "clientId", "-o", "tsv",
        ])
        .await;
    let namespace_id = az
        .run(&[
            "servicebus",
            "namespace",
            "show",
            "-g",
            GROUP_B,
            "-n",
            NAMESPACE,
            "--query",
            "id",
            "-o",
            "tsv",
        ])
        .await;
    {
        let cloud = lock(&fakes.cloud);
        let identity = cloud
            .identities
            .values()
            .find(|i| i.id.name() == IDENTITY)
            .expect("the identity is in the model");
        assert_eq!(principal_id, identity.principal_id.as_str());
        assert_eq!(client_id, identity.client_id.as_str());
        assert_eq!(identity.tenant.as_str(), tenant_b.tenant_id);
        let namespace = cloud
            .namespaces
            .get(NAMESPACE)
            .expect("the namespace is in the model");
        assert_eq!(namespace_id, namespace.id.as_str());
        assert!(namespace.disable_local_auth);
        assert!(namespace.queues.contains_key(QUEUE));
    }
    az.run(&[
        "role",
        "assignment",
        "create",
        "--role",
        "Azure Service Bus Data Owner",
        "--assignee-object-id",
        &principal_id,
        "--assignee-principal-type",
        "ServicePrincipal",
        "--scope",
        &namespace_id,
        "-o",
        "none",
    ])
    .await;
    az.run(&[
        "identity",
        "federated-credential",
        "create",
        "--name",
        CREDENTIAL,
        "--identity-name",
        IDENTITY,
        "-g",
        GROUP_B,
        "--issuer",
        &issuer_url,
        "--subject",
        SUBJECT,
        "--audience",
        FEDERATION_AUDIENCE,
        "-o",
        "none",
    ])
    .await;
    {
        let cloud = lock(&fakes.cloud);
        let assignment = cloud
            .role_assignments
            .values()
            .find(|a| a.principal_id.as_str() == principal_id)
            .expect("the role assignment is in the model");
        assert_eq!(assignment.scope.as_str(), namespace_id);
        assert!(
            assignment.role_definition_id.ends_with(DATA_OWNER),
            "role definition {}",
            assignment.role_definition_id
        );
        assert_eq!(assignment.principal_type, "ServicePrincipal");
        let credential = cloud
            .federated_credentials
            .values()
            .find(|c| c.name() == CREDENTIAL)
            .expect("the federated credential is in the model");
        assert_eq!(credential.issuer, issuer_url);
        assert_eq!(credential.subject, SUBJECT);
        assert_eq!(credential.audiences, vec![FEDERATION_AUDIENCE.to_owned()]);
        assert_eq!(credential.identity.name(), IDENTITY);
    }

    // Back in tenant A: cluster credentials into a file.
    az.run(&["logout"]).await;
    az.login(&tenant_a).await;
    let kubeconfig = state.path().join("kubeconfig");
    let kubeconfig_arg = kubeconfig.display().to_string();
    az.run(&[
        "aks",
        "get-credentials",
        "-g",
        GROUP_A,
        "-n",
        CLUSTER,
        "-f",
        &kubeconfig_arg,
    ])
    .await;
    let written = std::fs::read_to_string(&kubeconfig).expect("the kubeconfig file is written");
    assert!(
        written.contains("current-context"),
        "kubeconfig:\n{written}"
    );
    assert!(written.contains(CLUSTER), "kubeconfig:\n{written}");

    // Tenant A's login against tenant B's subscription: ARM rejects the token's issuer. The
    // CLI picks each subscription's token by the tenant it logged in to, so the test passes
    // tenant A's ARM token to `az rest` itself.
    let token_a = az
        .run(&[
            "account",
            "get-access-token",
            "--query",
            "accessToken",
            "-o",
            "tsv",
        ])
        .await;
    az.secrets.push(token_a.clone());
    let foreign_group = format!(
        "{}/subscriptions/{}/resourceGroups/{GROUP_B}?api-version=2024-11-01",
        environment.arm_url, tenant_b.subscription_id
    );
    let authorization = format!("Authorization=Bearer {token_a}");
    let stderr = az
        .run_failing(&[
            "rest",
            "--method",
            "get",
            "--url",
            &foreign_group,
            "--skip-authorization-header",
            "--headers",
            &authorization,
        ])
        .await;
    assert!(
        stderr.contains("InvalidAuthenticationTokenTenant"),
        "stderr:\n{stderr}"
    );

    // Clean-up: tenant A's group waits for the deletion, tenant B's returns at once.
    az.run(&["group", "delete", "-n", GROUP_A, "--yes"]).await;
    {
        let cloud = lock(&fakes.cloud);
        assert!(!cloud.resource_groups.values().any(|g| g.name == GROUP_A));
        assert!(cloud.clusters.is_empty(), "the cluster went with its group");
    }
    az.run(&["logout"]).await;
    az.login(&tenant_b).await;
    az.run(&["group", "delete", "-n", GROUP_B, "--yes", "--no-wait"])
        .await;
    {
        let cloud = lock(&fakes.cloud);
        let remaining = cloud.resource_groups.values().find(|g| g.name == GROUP_B);
        // The model's operations take no time by default, so even --no-wait finds it gone.
        assert!(
            remaining.is_none_or(|g| g.state == ProvisioningState::Deleting),
            "group {GROUP_B} is neither deleted nor being deleted"
        );
        assert!(
            cloud.identities.is_empty(),
            "the identity went with its group"
        );
        assert!(cloud.federated_credentials.is_empty());
        assert!(cloud.namespaces.is_empty());
    }

    assert_eq!(
        proxy.attempts(),
        Vec::<String>::new(),
        "the CLI tried to reach hosts outside loopback"
    );
    println!(
        "transcript: {} az commands, {:.1} s in az, wall time {:.1} s including the fakes' start",
        az.transcript.len(),
        az.total().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
