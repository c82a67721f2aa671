//! Runs a scenario's steps in order against a target, with captures and expectations, and
//! reports each step's outcome and duration.

mod commands;
mod expect;
mod faults;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{Instrument, info_span};

use crate::client::{ArmClient, ClientError, TokenClient, http_client};
use crate::cluster::RunCluster;
use crate::scenario::{Command, LoadedScenario, ScenarioError, Step, expand, tenant_id_variable};
use crate::target::{Target, TargetError, TargetOptions};
pub use report::{Outcome, ScenarioReport, StepReport, junit_xml};

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The `xtenant` executable; the embedded cluster runs the demo workload through it.
    pub workload_exe: PathBuf,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{0}")]
    Cluster(String),
    /// An expectation did not hold.
    #[error("expected {expected}, observed {observed}")]
    Expectation { expected: String, observed: String },
    /// The step needs state that an earlier step should have made.
    #[error("{0}")]
    Precondition(String),
    /// A workload ended otherwise than the step expected; `log` is the end of its log.
    #[error("{message}\n{log}")]
    Workload { message: String, log: String },
    /// The step ran past its `timeout`.
    #[error("the step timed out after {0}")]
    TimedOut(String),
}

/// The signed-in operator: tenant, subscription and an ARM client with its token.
struct Session {
    subscription: String,
    subscription_name: String,
    tenant: String,
    arm: ArmClient,
}

/// The state a scenario builds up as its steps run.
pub struct Runner {
    scenario: LoadedScenario,
    target: Target,
    vars: BTreeMap<String, String>,
    http: reqwest::Client,
    tokens: TokenClient,
    session: Option<Session>,
    clusters: BTreeMap<String, RunCluster>,
    current_cluster: Option<String>,
}

impl Runner {
    /// Starts the target for `scenario`.
    pub async fn start(scenario: LoadedScenario, options: &RunOptions) -> Result<Self, StepError> {
        Self::start_on(scenario, options, &TargetOptions::default()).await
    }

    /// Starts the target that `target_options` selects (fakes or live Azure, and the cluster
    /// backend) for `scenario`.
    pub async fn start_on(
        scenario: LoadedScenario,
        options: &RunOptions,
        target_options: &TargetOptions,
    ) -> Result<Self, StepError> {
        let target =
            Target::start(&scenario.tenants, &options.workload_exe, target_options).await?;
        let http = http_client(target.ca_file())?;
        let tokens = TokenClient::new(http.clone(), target.login_url());
        let mut vars = scenario.vars.clone();
        for tenant in &scenario.tenants {
            if let Some(id) = target.tenant_id(tenant) {
                vars.insert(tenant_id_variable(tenant), id);
            }
        }
        Ok(Self {
            scenario,
            target,
            vars,
            http,
            tokens,
            session: None,
            clusters: BTreeMap::new(),
            current_cluster: None,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs every step; stops at the first failure and marks the rest as not run.
    pub async fn run(&mut self, mut on_step: impl FnMut(&StepReport)) -> ScenarioReport {
        let started = Instant::now();
        let mut steps = Vec::new();
        let mut failed = false;
        for raw in self.scenario.steps.clone() {
            let mut report = StepReport {
                index: raw.index,
                file: raw.file.clone(),
                line: raw.line,
                title: raw.command.clone(),
                duration: Duration::ZERO,
                outcome: Outcome::NotRun,
                note: None,
                evidence: None,
            };
            if failed {
                on_step(&report);
                steps.push(report);
                continue;
            }
            let span = info_span!("step", index = raw.index, command = %raw.command);
            let step_started = Instant::now();
            let value = expand(&raw.value, &self.vars);
            match self.scenario.read_step(&raw, &value) {
                Ok(step) => {
                    report.title = commands::title(&step.command);
                    let result = self.run_step(&step).instrument(span).await;
                    report.outcome = result.outcome;
                    report.note = result.note;
                    report.evidence = result.evidence;
                }
                Err(error) => {
                    report.outcome = Outcome::Failed {
                        expected: "a valid step".into(),
                        observed: error.to_string(),
                    };
                }
            }
            report.duration = step_started.elapsed();
            failed = matches!(report.outcome, Outcome::Failed { .. });
            on_step(&report);
            steps.push(report);
        }
        ScenarioReport {
            name: self.scenario.name.clone(),
            file: self.scenario.file.clone(),
            steps,
            duration: started.elapsed(),
        }
    }

    /// Runs one step within its `timeout` and judges the result against `expect_error`.
    async fn run_step(&mut self, step: &Step) -> StepResult {
        let result = match step.timeout.as_deref().map(crate::scenario::parse_duration) {
            Some(Ok(limit)) => {
                let label = step.timeout.clone().unwrap_or_default();
                match tokio::time::timeout(limit, self.execute(&step.command)).await {
                    Ok(result) => result,
                    Err(_) => Err(StepError::TimedOut(label)),
                }
            }
            Some(Err(message)) => Err(StepError::Precondition(message)),
            None => self.execute(&step.command).await,
        };
        let evidence = match &result {
            Err(error) => self.evidence(error).await,
            Ok(_) => None,
        };
        let (outcome, note) = match (&step.expect_error, result) {
            (None, Ok(output)) => match self.capture(step, &output.value) {
                Ok(()) => (Outcome::Passed, output.note),
                Err(error) => (
                    Outcome::Failed {
                        expected: "captured values".into(),
                        observed: error.to_string(),
                    },
                    output.note,
                ),
            },
            (None, Err(StepError::Expectation { expected, observed })) => {
                (Outcome::Failed { expected, observed }, None)
            }
            (None, Err(error)) => (
                Outcome::Failed {
                    expected: "success".into(),
                    observed: expect::short(&error),
                },
                None,
            ),
            (Some(expected), Ok(_)) => (
                Outcome::Failed {
                    expected: expect::describe_error(expected),
                    observed: "the step succeeded".into(),
                },
                None,
            ),
            (Some(expected), Err(error)) => match expect::match_error(expected, &error) {
                Ok(()) => (
                    Outcome::Passed,
                    Some(format!("failed as expected: {}", expect::headline(&error))),
                ),
                Err(observed) => (
                    Outcome::Failed {
                        expected: expect::describe_error(expected),
                        observed,
                    },
                    None,
                ),
            },
        };
        StepResult {
            outcome,
            note,
            evidence,
        }
    }

    fn capture(&mut self, step: &Step, output: &Value) -> Result<(), StepError> {
        for (name, path) in &step.capture {
            let value = expect::query(output, path).ok_or_else(|| StepError::Expectation {
                expected: format!("a value at `{path}` to capture into {name}"),
                observed: format!("no such field in {}", expect::abbreviate(output)),
            })?;
            self.vars.insert(name.clone(), value);
        }
        Ok(())
    }

    fn session(&self) -> Result<&Session, StepError> {
        self.session.as_ref().ok_or_else(|| {
            StepError::Precondition("no tenant is signed in; add a `login` step first".into())
        })
    }

    fn cluster(&mut self) -> Result<&mut RunCluster, StepError> {
        let name = self.current_cluster.clone().ok_or_else(|| {
            StepError::Precondition(
                "no cluster credentials; add an `aks get-credentials` step first".into(),
            )
        })?;
        self.clusters
            .get_mut(&name)
            .ok_or_else(|| StepError::Precondition(format!("cluster {name} is gone")))
    }
}

/// How a step ended, with what the report shows beside it.
struct StepResult {
    outcome: Outcome,
    note: Option<String>,
    evidence: Option<String>,
}

/// What a command returns: JSON for captures, and a note for the report.
pub struct CommandOutput {
    pub value: Value,
    pub note: Option<String>,
}

impl CommandOutput {
    fn json(value: Value) -> Self {
        Self { value, note: None }
    }
}

/// Loads and runs one scenario file against fresh fakes.
pub async fn run_file(
    file: &std::path::Path,
    options: &RunOptions,
    on_step: impl FnMut(&StepReport),
) -> Result<ScenarioReport, StepError> {
    run_file_on(file, options, &TargetOptions::default(), on_step).await
}

/// Loads and runs one scenario file against the target `target_options` selects, then
/// deletes what the run created (live resource groups, kind clusters).
pub async fn run_file_on(
    file: &std::path::Path,
    options: &RunOptions,
    target_options: &TargetOptions,
    on_step: impl FnMut(&StepReport),
) -> Result<ScenarioReport, StepError> {
    let scenario = LoadedScenario::load(file)?;
    let mut runner = Runner::start_on(scenario, options, target_options).await?;
    let report = runner.run(on_step).await;
    runner.clusters.clear();
    runner.target.finish().await?;
    Ok(report)
}

impl Command {
    /// Whether the step acts on the fakes only (clock, faults) and is skipped on live Azure.
    pub fn fake_only(&self) -> bool {
        matches!(
            self,
            Command::AdvanceClock(_) | Command::Set(_) | Command::Fault(_)
        )
    }
}
