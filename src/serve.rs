//! `xtenant serve`: the fakes alone, for programs in any language and for the Azure CLI.
//!
//! It starts every fake, prepares an isolated Azure CLI configuration folder under the state
//! folder, and prints the shell lines a program needs to reach the fakes: the CA file, the
//! variables that keep the Azure CLI and the Azure SDKs on loopback, the `az cloud register`
//! and `az cloud set` commands, and each tenant's ids and operator credentials. The settings
//! follow what Azure CLI 2.91.0 needs to run against a non-Azure cloud: HTTPS for both ARM and
//! the login endpoint, a CA trusted through `REQUESTS_CA_BUNDLE`, and MSAL's instance
//! discovery turned off.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use time::OffsetDateTime;
use time::macros::format_description;
use xtenant_fakes::cloud::lock;
use xtenant_fakes::{Fakes, FakesConfig};

/// Name under which the fake cloud is registered with the Azure CLI.
pub const CLOUD_NAME: &str = "xtenant";

/// Azure CLI version recorded in `versionCheck.json`, the file of its last update check. The CLI skips the check,
/// a HEAD request to `azcliprod.blob.core.windows.net`, for one day after `update_time`.
const AZURE_CLI_VERSION: &str = "2.91.0";
/// Telemetry package version the CLI 2.91.0 writes next to its own in `versionCheck.json`.
const AZURE_CLI_TELEMETRY_VERSION: &str = "1.1.0";

/// Settings of `xtenant serve`.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub bind: IpAddr,
    pub tenants: Vec<String>,
    /// Folder for the CA file, the Azure CLI configuration and `HOME`; a temporary folder
    /// removed on exit when `None`.
    pub state_dir: Option<PathBuf>,
    /// File to write the `export` lines to, for `source`.
    pub env_file: Option<PathBuf>,
}

/// One tenant as a program logs into it: its ids and the operator application's credentials.
#[derive(Clone, Debug)]
pub struct TenantLogin {
    /// Scenario name of the tenant (`a`, `b`).
    pub name: String,
    pub tenant_id: String,
    pub subscription_id: String,
    pub client_id: String,
    /// The operator's client secret. It exists only in this run's fake cloud.
    pub client_secret: String,
}

impl TenantLogin {
    /// Prefix of this tenant's variables, `XTENANT_A_` for tenant `a`.
    pub fn variable_prefix(&self) -> String {
        let name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("XTENANT_{name}_")
    }

    /// Builds the arguments of `az login --service-principal` for this tenant's operator.
    pub fn az_login_args(&self) -> Vec<String> {
        vec![
            "login".into(),
            "--service-principal".into(),
            "-u".into(),
            self.client_id.clone(),
            "-p".into(),
            self.client_secret.clone(),
            "--tenant".into(),
            self.tenant_id.clone(),
        ]
    }
}

/// Everything a program needs to use a running set of fakes.
#[derive(Clone, Debug)]
pub struct ServeEnvironment {
    /// Variables to export, in print order.
    pub variables: Vec<(String, String)>,
    /// The arguments of `az cloud register` for the fake cloud.
    pub cloud_register_args: Vec<String>,
    pub tenants: Vec<TenantLogin>,
    /// `https://host:port` of the fake ARM, without a trailing slash.
    pub arm_url: String,
}

impl ServeEnvironment {
    /// Prepares `state_dir` for the Azure CLI and collects the settings of `fakes`.
    ///
    /// The Azure CLI folder `state_dir/azure` is emptied first, because its cloud registration
    /// and MSAL caches name the ports and tenants of an earlier run.
    pub fn prepare(fakes: &Fakes, state_dir: &Path) -> anyhow::Result<Self> {
        let config_dir = state_dir.join("azure");
        let home = state_dir.join("home");
        if config_dir.exists() {
            std::fs::remove_dir_all(&config_dir)
                .with_context(|| format!("failed to empty {}", config_dir.display()))?;
        }
        for dir in [&config_dir, &home.join(".cache")] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let version_check = config_dir.join("versionCheck.json");
        std::fs::write(
            &version_check,
            version_check_json(OffsetDateTime::now_utc()),
        )
        .with_context(|| format!("failed to write {}", version_check.display()))?;

        let endpoints = &fakes.endpoints;
        let ca = fakes.ca_file().display().to_string();
        let path = |p: &Path| p.display().to_string();
        let variables: Vec<(String, String)> = [
            ("XTENANT_CA_FILE", ca.clone()),
            ("REQUESTS_CA_BUNDLE", ca.clone()),
            ("SSL_CERT_FILE", ca),
            ("AZURE_CORE_INSTANCE_DISCOVERY", "false".into()),
            ("AZURE_CORE_COLLECT_TELEMETRY", "false".into()),
            ("AZURE_CORE_ONLY_SHOW_ERRORS", "true".into()),
            ("AZURE_CONFIG_DIR", path(&config_dir)),
            ("HOME", path(&home)),
            ("XDG_CACHE_HOME", path(&home.join(".cache"))),
            ("XTENANT_ARM_ENDPOINT", format!("{}/", endpoints.arm)),
            ("AZURE_AUTHORITY_HOST", format!("{}/", endpoints.login)),
            (
                "AZURE_SERVICEBUS_ENDPOINT",
                format!("amqps://{}", endpoints.servicebus_tls),
            ),
            (
                "XTENANT_SERVICEBUS_CUSTOM_ENDPOINT_ADDRESS",
                format!("sb://{}", endpoints.servicebus_tls),
            ),
            (
                "XTENANT_SERVICEBUS_PLAIN_ENDPOINT",
                format!("amqp://{}", endpoints.servicebus_plain),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();

        let tenants = {
            let cloud = lock(&fakes.cloud);
            cloud
                .tenants
                .iter()
                .map(|tenant| {
                    let subscription = cloud
                        .subscriptions_of(&tenant.id)
                        .first()
                        .map(|s| s.id.to_string())
                        .context("a tenant of the fake cloud has no subscription")?;
                    let operator = cloud
                        .operator(&tenant.id)
                        .context("a tenant of the fake cloud has no operator")?;
                    Ok(TenantLogin {
                        name: tenant.name.clone(),
                        tenant_id: tenant.id.to_string(),
                        subscription_id: subscription,
                        client_id: operator.client_id.to_string(),
                        client_secret: operator.secret().unwrap_or_default().to_owned(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };

        let cloud_register_args = vec![
            "cloud".into(),
            "register".into(),
            "-n".into(),
            CLOUD_NAME.into(),
            "--endpoint-resource-manager".into(),
            format!("{}/", endpoints.arm),
        ];
        Ok(Self {
            variables,
            cloud_register_args,
            tenants,
            arm_url: endpoints.arm.clone(),
        })
    }

    /// Looks up an exported variable.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Builds the `export` lines of every variable, tenants included.
    pub fn exports(&self) -> String {
        let mut text = String::new();
        for (name, value) in &self.variables {
            let _ = writeln!(text, "export {name}={}", shell_quote(value));
        }
        for tenant in &self.tenants {
            let prefix = tenant.variable_prefix();
            let _ = writeln!(text, "# tenant {}", tenant.name);
            for (suffix, value) in [
                ("TENANT_ID", &tenant.tenant_id),
                ("SUBSCRIPTION_ID", &tenant.subscription_id),
                ("CLIENT_ID", &tenant.client_id),
                ("CLIENT_SECRET", &tenant.client_secret),
            ] {
                let _ = writeln!(text, "export {prefix}{suffix}={}", shell_quote(value));
            }
        }
        text
    }

    /// Builds the text `xtenant serve` prints: the exports, then the Azure CLI commands.
    pub fn shell_script(&self) -> String {
        let mut text = String::from(
            "# xtenant fakes for this run: paste these lines into a shell.\n\
             # Tenant ids and operator secrets are made for this run and exist only here.\n",
        );
        text.push_str(&self.exports());
        text.push_str("\n# Point the Azure CLI at the fake cloud:\n");
        let _ = writeln!(text, "{}", command_line("az", &self.cloud_register_args));
        let _ = writeln!(text, "az cloud set -n {CLOUD_NAME}");
        text.push_str("\n# Log in as a tenant's operator, for example:\n");
        for tenant in &self.tenants {
            let prefix = tenant.variable_prefix();
            let _ = writeln!(
                text,
                "# az login --service-principal -u \"${prefix}CLIENT_ID\" -p \"${prefix}CLIENT_SECRET\" \
                 --tenant \"${prefix}TENANT_ID\" && az account set --subscription \"${prefix}SUBSCRIPTION_ID\""
            );
        }
        text.push_str(
            "\n# Service Bus: AZURE_SERVICEBUS_ENDPOINT is where the TCP connection goes; the\n\
             # namespace host name stays NAME.servicebus.windows.net. The Python client takes\n\
             # custom_endpoint_address=$XTENANT_SERVICEBUS_CUSTOM_ENDPOINT_ADDRESS with\n\
             # transport_type=TransportType.Amqp and connection_verify=$XTENANT_CA_FILE.\n",
        );
        text
    }

    /// Builds the sourceable file: the exports, and the Azure CLI commands as comments.
    pub fn env_file(&self) -> String {
        let mut text = String::from("# Written by `xtenant serve`; source it in a shell.\n");
        text.push_str(&self.exports());
        let _ = writeln!(
            text,
            "# {}\n# az cloud set -n {CLOUD_NAME}",
            command_line("az", &self.cloud_register_args)
        );
        text
    }
}

/// Rejects tenant names that would make broken or clashing `XTENANT_<NAME>_*` variables:
/// empty, repeated, or other than ASCII letters, digits and `_`.
fn check_tenant_names(tenants: &[String]) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for name in tenants {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            anyhow::bail!(
                "tenant name {name:?} is invalid; use letters, digits and _, e.g. --tenants a,b"
            );
        }
        if !seen.insert(name.to_ascii_uppercase()) {
            anyhow::bail!("tenant name {name:?} is given twice; each tenant needs its own name");
        }
    }
    Ok(())
}

/// Runs `xtenant serve` until Ctrl-C or SIGTERM.
pub async fn run(options: ServeOptions) -> anyhow::Result<bool> {
    check_tenant_names(&options.tenants)?;
    if let Some(parent) = options.env_file.as_deref().and_then(Path::parent)
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "cannot create {} for --env-file; choose a writable folder",
                parent.display()
            )
        })?;
    }
    let (state_dir, temporary) = match &options.state_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("xtenant-serve-{}", std::process::id())),
            true,
        ),
    };
    let state_dir = std::path::absolute(&state_dir)
        .with_context(|| format!("invalid state folder {}", state_dir.display()))?;
    let fakes = Fakes::start(FakesConfig {
        tenants: options.tenants.clone(),
        bind: options.bind,
        state_dir: Some(state_dir.clone()),
    })
    .await
    .context("the fakes failed to start")?;
    let environment = ServeEnvironment::prepare(&fakes, &state_dir)?;

    if let Some(path) = &options.env_file {
        write_atomically(path, &environment.env_file())
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    print!("{}", environment.shell_script());
    tracing::info!(arm = %environment.arm_url, state_dir = %state_dir.display(), "serving until Ctrl-C or SIGTERM");
    eprintln!(
        "xtenant serve: ready, health at {}/health; Ctrl-C or SIGTERM stops it",
        environment.arm_url
    );

    wait_for_shutdown().await?;
    eprintln!("xtenant serve: stopping");
    drop(fakes);
    if temporary && let Err(error) = std::fs::remove_dir_all(&state_dir) {
        tracing::warn!(%error, state_dir = %state_dir.display(), "failed to remove the state folder");
    }
    Ok(true)
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn wait_for_shutdown() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate =
            signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("failed to listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("failed to listen for Ctrl-C")?;
    Ok(())
}

/// Writes through a temporary sibling and a rename, so a reader that waits for the file never
/// reads half of it.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
}

/// The `versionCheck.json` the Azure CLI writes after checking for updates, dated `now`.
fn version_check_json(now: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]");
    let update_time = now.format(&format).unwrap_or_default();
    serde_json::json!({
        "versions": {
            "azure-cli": {"local": AZURE_CLI_VERSION},
            "core": {"local": AZURE_CLI_VERSION},
            "telemetry": {"local": AZURE_CLI_TELEMETRY_VERSION},
        },
        "update_time": update_time,
    })
    .to_string()
}

fn command_line(program: &str, args: &[String]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    line
}

/// Quotes a value for POSIX shells unless it consists only of characters that need none.
fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn shell_quote_leaves_plain_values() {
        assert_eq!(
            shell_quote("https://127.0.0.1:443/"),
            "https://127.0.0.1:443/"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn version_check_has_cli_time_format() {
        let text = version_check_json(datetime!(2026-12-04 17:05:09.123456 UTC));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["update_time"], "2026-12-04 17:05:09.123456");
        assert_eq!(value["versions"]["azure-cli"]["local"], "2.91.0");
    }

    #[test]
    fn tenant_prefix_is_a_variable_name() {
        let tenant = TenantLogin {
            name: "b-2".into(),
            tenant_id: String::new(),
            subscription_id: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
        };
        assert_eq!(tenant.variable_prefix(), "XTENANT_B_2_");
    }
}
