//! `xtenant`: run Azure cross-tenant workload identity scenarios offline against fakes that
//! speak ARM, Entra ID, a cluster OIDC issuer and Service Bus AMQP.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use xtenant_harness::runner::{RunOptions, ScenarioReport, run_file};
use xtenant_harness::scenario::LoadedScenario;

#[derive(Parser)]
#[command(
    name = "xtenant",
    version,
    about = "Offline integration tests for Azure cross-tenant workload identity"
)]
#[command(
    long_about = "Runs scenario files that provision two Entra tenants, an AKS cluster, a \
managed identity with a federated credential and a Service Bus queue, then run a workload that \
trades its Kubernetes token for an Entra token and sends messages, all against local fakes that \
speak the real protocols over TLS.\n\nLogs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run scenario files against fresh fakes; exits 0 when every expectation holds, 1 otherwise.
    Run {
        /// Scenario files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check scenario files without running them.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the scenarios under a folder with their descriptions.
    List {
        /// Folder to search for `*.yaml` files.
        #[arg(default_value = "scenarios")]
        folder: PathBuf,
    },
    /// The demo workload the embedded cluster runs for the image
    /// ghcr.io/azure-samples/aks-app-samples/servicebusdemo; configured through its environment.
    #[command(hide = true)]
    Servicebusdemo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Run { files } => run(&files).await,
            Commands::Validate { files } => validate(&files),
            Commands::List { folder } => list(&folder),
            Commands::Servicebusdemo => xtenant::demo::run().await.map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(files: &[PathBuf]) -> anyhow::Result<bool> {
    let workload_exe = std::env::current_exe()
        .context("cannot find the xtenant executable to run workloads with")?;
    let options = RunOptions { workload_exe };
    let started = Instant::now();
    let mut reports: Vec<ScenarioReport> = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        println!("scenario {shown}");
        let report = run_file(file, &options, |step| println!("{}", step.render(&shown)))
            .await
            .with_context(|| format!("{shown}: the scenario could not start"))?;
        println!("{}\n", report.summary());
        reports.push(report);
    }
    let passed = reports.iter().filter(|r| r.passed()).count();
    if files.len() > 1 {
        println!("{passed} of {} scenarios passed", reports.len());
    }
    println!("total wall time {:.2} s", started.elapsed().as_secs_f64());
    Ok(passed == reports.len())
}

fn validate(files: &[PathBuf]) -> anyhow::Result<bool> {
    let mut valid = true;
    for file in files {
        match LoadedScenario::load(file) {
            Ok(scenario) => println!("{}: ok ({} steps)", file.display(), scenario.steps.len()),
            Err(error) => {
                println!("{error}");
                valid = false;
            }
        }
    }
    Ok(valid)
}

fn list(folder: &Path) -> anyhow::Result<bool> {
    let mut files = Vec::new();
    collect_yaml(folder, &mut files)
        .with_context(|| format!("cannot read {}", folder.display()))?;
    files.sort();
    for file in files {
        match LoadedScenario::load(&file) {
            Ok(scenario) => println!(
                "{:<56} {}",
                file.display(),
                scenario.description.as_deref().unwrap_or(&scenario.name)
            ),
            Err(error) => println!("{:<56} invalid: {error}", file.display()),
        }
    }
    Ok(true)
}

fn collect_yaml(folder: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    Ok(())
}
