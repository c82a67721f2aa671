//! The walkthrough logged at TRACE level, with every crate's logs on, contains no access
//! token, assertion or client secret, and every fake listens on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use xtenant_harness::runner::{RunOptions, Runner};
use xtenant_harness::scenario::LoadedScenario;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_logs_hold_no_secrets() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .init();

    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/cross-tenant-producer.yaml");
    let scenario = LoadedScenario::load(&file).unwrap();
    let options = RunOptions {
        workload_exe: PathBuf::from(env!("CARGO_BIN_EXE_xtenant")),
    };
    let mut runner = Runner::start(scenario, &options).await.unwrap();
    let secrets: Vec<String> = ["a", "b"]
        .iter()
        .map(|t| {
            runner
                .target()
                .operator(t)
                .unwrap()
                .secret()
                .unwrap()
                .to_owned()
        })
        .collect();
    let endpoints = runner.target().fakes.endpoints.clone();
    let report = runner.run(|_| {}).await;
    assert!(report.passed(), "{}", report.summary());

    for url in [&endpoints.arm, &endpoints.login, &endpoints.issuer] {
        assert!(
            url.starts_with("https://127.0.0.1:"),
            "{url} is not on loopback"
        );
    }
    assert!(endpoints.servicebus_tls.ip().is_loopback());
    assert!(endpoints.servicebus_plain.ip().is_loopback());

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.lines().count() > 100,
        "expected TRACE output, got {} lines",
        logs.lines().count()
    );
    // Every JWT starts with the base64url of `{"`, whatever its header holds.
    if let Some(at) = logs.find("eyJ") {
        panic!(
            "a JWT reached the logs: {}",
            &logs[logs[..at].rfind('\n').unwrap_or(0)..(at + 80).min(logs.len())]
        );
    }
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "an operator secret reached the logs"
        );
    }
}
