//! `xtenant serve` as a user runs it: the process starts, writes its settings, serves
//! `GET /health` on the ARM host, and stops on SIGTERM.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Time the fakes may take to start before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the `export NAME=VALUE` lines of an env file; values here need no unquoting.
fn exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

fn wait_for_file(path: &Path) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "xtenant serve wrote no {} within {START_TIMEOUT:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn serve_prints_settings_until_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let env_file = state.path().join("xtenant.env");
    let child = Command::new(env!("CARGO_BIN_EXE_xtenant"))
        .args(["serve", "--tenants", "a,b", "--state-dir"])
        .arg(state.path().join("state"))
        .arg("--env-file")
        .arg(&env_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the xtenant binary starts");

    let variables = exports(&wait_for_file(&env_file));
    for name in [
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "AZURE_CONFIG_DIR",
        "HOME",
        "XDG_CACHE_HOME",
        "AZURE_SERVICEBUS_ENDPOINT",
        "XTENANT_SERVICEBUS_CUSTOM_ENDPOINT_ADDRESS",
        "XTENANT_A_TENANT_ID",
        "XTENANT_A_SUBSCRIPTION_ID",
        "XTENANT_A_CLIENT_ID",
        "XTENANT_A_CLIENT_SECRET",
        "XTENANT_B_CLIENT_SECRET",
    ] {
        assert!(
            variables.contains_key(name),
            "{name} is missing; the file sets {:?}",
            variables.keys()
        );
    }
    assert_eq!(variables["AZURE_CORE_INSTANCE_DISCOVERY"], "false");
    assert_eq!(variables["AZURE_CORE_COLLECT_TELEMETRY"], "false");
    assert_ne!(
        variables["XTENANT_A_TENANT_ID"],
        variables["XTENANT_B_TENANT_ID"]
    );
    let config_dir = Path::new(&variables["AZURE_CONFIG_DIR"]);
    assert!(config_dir.starts_with(state.path()));
    assert!(config_dir.join("versionCheck.json").is_file());

    let ca = std::fs::read(&variables["REQUESTS_CA_BUNDLE"]).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let health = format!("{}health", variables["XTENANT_ARM_ENDPOINT"]);
    let response = http.get(&health).send().await.expect("the ARM host is up");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "Healthy"}));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "exit status {}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("az cloud register -n xtenant --endpoint-resource-manager https://"));
    assert!(stdout.contains("az cloud set -n xtenant"));
    assert!(stdout.contains(&variables["XTENANT_A_CLIENT_SECRET"]));
}
