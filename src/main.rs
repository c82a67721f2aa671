//! `xtenant`: run Azure cross-tenant workload identity scenarios offline against fakes that
//! speak ARM, Entra ID, a cluster OIDC issuer and Service Bus AMQP.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
mod run_target;

use xtenant_harness::runner::{RunOptions, ScenarioReport, junit_xml, run_file_on};
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
        /// Scenario files (YAML). Checked after `--report`, which may take the first one as
        /// its FILE.
        files: Vec<PathBuf>,
        /// Also write a machine-readable report: `json` (to stdout; the step list then goes
        /// to stderr) or `junit FILE` (JUnit XML written to FILE).
        #[arg(long, num_args = 1..=2, value_names = ["FORMAT", "FILE"])]
        report: Vec<String>,
        #[command(flatten)]
        target: run_target::TargetArgs,
    },
    /// Compare two recordings of `run --record` and print every difference; exits 1 when
    /// they differ.
    Drift {
        /// The baseline recording, such as a fake run.
        baseline: PathBuf,
        /// The recording compared with it, such as a live run.
        compared: PathBuf,
    },
    /// Delete resource groups tagged by xtenant (`xtenant-run`) that are older than AGE, in
    /// every tenant named by XTENANT_TENANT_<NAME>_ID (tenants a and b).
    #[cfg(feature = "live-azure")]
    Sweep {
        /// Minimum age, such as 6h or 90m.
        #[arg(long, value_name = "AGE")]
        older_than: String,
    },
    /// Check scenario files without running them; errors name the file, line, step and fix.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of scenario files to stdout.
    Schema,
    /// List the scenarios under a folder with their descriptions.
    List {
        /// Folder to search for `*.yaml` files.
        #[arg(default_value = "scenarios")]
        folder: PathBuf,
    },
    /// Start the fakes alone and print the shell settings (CA, endpoints, `az cloud register`,
    /// tenant credentials) that point a program or the Azure CLI at them; runs until Ctrl-C.
    Serve {
        /// Address every fake listens on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Comma-separated scenario names of the tenants to create.
        #[arg(long, value_delimiter = ',', default_value = "a,b")]
        tenants: Vec<String>,
        /// Folder for the CA file, the Azure CLI configuration and HOME; a temporary folder
        /// removed on exit when absent.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Also write the settings to this file, for `source`.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// The demo workload the embedded cluster runs for the image
    /// ghcr.io/azure-samples/aks-app-samples/servicebusdemo; configured through its environment.
    #[command(hide = true)]
    Servicebusdemo,
}

/// Renders an error and its causes, leaving out a cause whose text the message already
/// contains (errors that print their source would otherwise repeat it).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Restores the default action of SIGPIPE, which the Rust runtime ignores, so that
/// `xtenant list | head` ends quietly as other Unix tools do instead of panicking on the
/// closed pipe.
#[cfg(unix)]
fn restore_default_sigpipe() {
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    // SAFETY: `signal` with SIG_DFL for SIGPIPE changes no memory of this program, and runs
    // before any thread starts.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    restore_default_sigpipe();
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
            Commands::Run {
                files,
                report,
                target,
            } => run(files, report, target).await,
            Commands::Drift { baseline, compared } => run_target::drift(&baseline, &compared),
            #[cfg(feature = "live-azure")]
            Commands::Sweep { older_than } => run_target::sweep(&older_than, &["a", "b"]).await,
            Commands::Validate { files } => validate(&files),
            Commands::Schema => {
                print!("{}", xtenant_harness::scenario::json_schema());
                Ok(true)
            }
            Commands::List { folder } => list(&folder),
            Commands::Serve {
                bind,
                tenants,
                state_dir,
                env_file,
            } => {
                let options = xtenant::serve::ServeOptions {
                    bind,
                    tenants,
                    state_dir,
                    env_file,
                };
                xtenant::serve::run(options).await
            }
            Commands::Servicebusdemo => xtenant::demo::run().await.map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Where `xtenant run` writes its machine-readable report.
enum ReportFormat {
    Text,
    Json,
    Junit(PathBuf),
}

/// Reads `--report FORMAT [FILE]`. A second value after `json` is a scenario file that clap
/// took as the report's FILE.
fn report_format(values: Vec<String>, files: &mut Vec<PathBuf>) -> anyhow::Result<ReportFormat> {
    let mut values = values.into_iter();
    match (values.next().as_deref(), values.next()) {
        (None, _) => Ok(ReportFormat::Text),
        (Some("json"), extra) => {
            files.extend(extra.map(PathBuf::from));
            Ok(ReportFormat::Json)
        }
        (Some("junit"), Some(file)) => Ok(ReportFormat::Junit(PathBuf::from(file))),
        (Some("junit"), None) => {
            anyhow::bail!("--report junit needs a file to write, e.g. --report junit report.xml")
        }
        (Some(other), _) => {
            anyhow::bail!(
                "unknown report format '{other}'; use --report json or --report junit FILE"
            )
        }
    }
}

async fn run(
    mut files: Vec<PathBuf>,
    report: Vec<String>,
    target: run_target::TargetArgs,
) -> anyhow::Result<bool> {
    let target_options = target.options(&["a", "b"])?;
    let format = report_format(report, &mut files)?;
    if files.is_empty() {
        anyhow::bail!(
            "no scenario files given; name one or more, e.g. `xtenant run scenarios/cross-tenant-producer.yaml`"
        );
    }
    let workload_exe = std::env::current_exe()
        .context("cannot find the xtenant executable to run workloads with")?;
    let options = RunOptions { workload_exe };
    let started = Instant::now();
    let mut reports: Vec<ScenarioReport> = Vec::new();
    // The JSON report owns stdout, so the step list goes to stderr then.
    let show = |text: &str| match format {
        ReportFormat::Json => eprintln!("{text}"),
        _ => println!("{text}"),
    };
    for file in &files {
        let shown = file.display().to_string();
        show(&format!("scenario {shown}"));
        let running = run_file_on(file, &options, &target_options, |step| show(&step.render()));
        // Dropping the run on Ctrl-C drops its clusters: the embedded cluster kills its
        // processes and a kind cluster created for the run is deleted.
        let report = tokio::select! {
            report = running => report.with_context(|| format!("{shown}: the scenario could not start"))?,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted during {shown}; its clusters were cleaned up"),
        };
        show(&format!("{}\n", report.summary()));
        reports.push(report);
    }
    target.finish(&target_options)?;
    let passed = reports.iter().filter(|r| r.passed()).count();
    if files.len() > 1 {
        show(&format!("{passed} of {} scenarios passed", reports.len()));
    }
    show(&format!(
        "total wall time {:.2} s",
        started.elapsed().as_secs_f64()
    ));
    match &format {
        ReportFormat::Text => {}
        ReportFormat::Json => {
            let json: Vec<serde_json::Value> = reports.iter().map(|r| r.to_json()).collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        ReportFormat::Junit(path) => {
            std::fs::write(path, junit_xml(&reports))
                .with_context(|| format!("cannot write the JUnit report to {}", path.display()))?;
        }
    }
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
