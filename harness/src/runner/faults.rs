//! Fake-only steps: propagation delays, faults injected into the fakes, and counts of the
//! requests a fake received. Also the evidence a failed step's report shows: the request
//! or workload log line that produced the failure.
//!
//! HTTP faults are wiremock mocks mounted above the model-backed responder (which sits at
//! the lowest priority), so they apply to matching requests only and end with the scenario's
//! fakes. A `reset` is modelled as a response delayed by an hour: the client gets no response,
//! as after a reset connection, and the step fails at its `timeout`. wiremock always writes
//! well-formed HTTP, so a malformed response is not modelled.

use std::time::Duration;

use regex::Regex;
use serde_json::Value;
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};
use xtenant_fakes::cloud::faults::{
    AmqpFault, AmqpFaultAction as FakeAction, AmqpFaultPoint as FakePoint, SERVER_BUSY,
    SERVER_BUSY_DESCRIPTION,
};
use xtenant_fakes::cloud::lock;

use super::{CommandOutput, Runner, StepError};
use crate::client::ClientError;
use crate::scenario::{
    AmqpFaultAction, AmqpFaultPoint, DelaySettings, Fault, FaultService, RequestExpectation,
    parse_duration,
};

/// Priority of injected faults: above the model's responder, below nothing a test mounts
/// itself at priority 1.
const FAULT_PRIORITY: u8 = 2;
/// Delay of the response to a request that a `reset` fault matches.
const RESET_DELAY: Duration = Duration::from_secs(3600);

/// Matches requests by method and path, and picks each with a probability.
struct FaultMatcher {
    method: Option<String>,
    path: Option<Regex>,
    probability: f64,
}

impl Match for FaultMatcher {
    fn matches(&self, request: &Request) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| request.method.as_str().eq_ignore_ascii_case(m));
        let path_ok = self
            .path
            .as_ref()
            .is_none_or(|p| p.is_match(request.url.path()));
        method_ok
            && path_ok
            && (self.probability >= 1.0 || rand::random_bool(self.probability.max(0.0)))
    }
}

fn duration(text: &str) -> Result<Duration, StepError> {
    parse_duration(text).map_err(StepError::Precondition)
}

fn model_duration(text: &str) -> Result<time::Duration, StepError> {
    Ok(time::Duration::try_from(duration(text)?).unwrap_or(time::Duration::MAX))
}

impl Runner {
    fn server(&self, service: FaultService) -> Option<&MockServer> {
        let fakes = &self.target.fakes;
        match service {
            FaultService::Arm => Some(&fakes.arm.server),
            FaultService::Entra => Some(&fakes.entra.server),
            FaultService::Issuer => Some(&fakes.issuer.server),
            FaultService::Servicebus => None,
        }
    }

    /// Sets the model's propagation delays; unset fields keep their value.
    pub(super) fn set_delays(
        &mut self,
        settings: &DelaySettings,
    ) -> Result<CommandOutput, StepError> {
        let mut cloud = lock(&self.target.fakes.cloud);
        let delays = &mut cloud.delays;
        let mut notes = Vec::new();
        for (name, value, slot) in [
            (
                "fic-propagation",
                &settings.fic_propagation,
                &mut delays.fic_propagation,
            ),
            (
                "role-assignment-propagation",
                &settings.role_assignment_propagation,
                &mut delays.role_assignment_propagation,
            ),
            (
                "identity-replication",
                &settings.identity_replication,
                &mut delays.identity_replication,
            ),
            (
                "operation-duration",
                &settings.operation_duration,
                &mut delays.operation_duration,
            ),
        ] {
            if let Some(text) = value {
                *slot = model_duration(text)?;
                notes.push(format!("{name} {text}"));
            }
        }
        Ok(CommandOutput {
            value: Value::Null,
            note: Some(notes.join(", ")),
        })
    }

    /// Injects a fault into one fake for the rest of the scenario.
    pub(super) async fn inject_fault(&mut self, fault: &Fault) -> Result<CommandOutput, StepError> {
        if fault.service == FaultService::Servicebus {
            return self.inject_amqp_fault(fault);
        }
        let path = fault
            .path
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| StepError::Precondition(format!("invalid `path` regex: {e}")))?;
        let mut response = ResponseTemplate::new(fault.status.unwrap_or(200));
        match &fault.body {
            Some(Value::String(text)) => response = response.set_body_string(text.clone()),
            Some(json) => response = response.set_body_json(json.clone()),
            None => {}
        }
        for (name, value) in &fault.headers {
            response = response.insert_header(name.as_str(), value.as_str());
        }
        if let Some(delay) = &fault.delay {
            response = response.set_delay(duration(delay)?);
        }
        if fault.reset {
            response = response.set_delay(RESET_DELAY);
        }
        let matcher = FaultMatcher {
            method: fault.method.clone(),
            path,
            probability: fault.probability.unwrap_or(1.0),
        };
        let mut mock = Mock::given(matcher)
            .respond_with(response)
            .with_priority(FAULT_PRIORITY)
            .named(format!("scenario fault on {:?}", fault.service));
        if let Some(times) = fault.times {
            mock = mock.up_to_n_times(u64::from(times));
        }
        let server = self
            .server(fault.service)
            .expect("HTTP services have a wiremock server");
        mock.mount(server).await;

        // Entra reads a cluster issuer's documents from the model, not over HTTP, so a fault
        // on the issuer that fails every request also marks the issuers unreachable there.
        let persistent = fault.times.is_none() && fault.probability.is_none_or(|p| p >= 1.0);
        let failing = fault.reset || fault.status.is_some_and(|s| s >= 400);
        if fault.service == FaultService::Issuer && persistent && failing {
            let mut cloud = lock(&self.target.fakes.cloud);
            for issuer in cloud.issuers.iter_mut() {
                issuer.reachable = false;
            }
        }
        Ok(CommandOutput {
            value: Value::Null,
            note: Some(describe_http_fault(fault)),
        })
    }

    fn inject_amqp_fault(&mut self, fault: &Fault) -> Result<CommandOutput, StepError> {
        let point = match fault.on {
            Some(AmqpFaultPoint::Attach) => FakePoint::Attach,
            Some(AmqpFaultPoint::Transfer) => FakePoint::Transfer,
            None => {
                return Err(StepError::Precondition(
                    "a `servicebus` fault needs `on`".into(),
                ));
            }
        };
        let action = fault
            .action
            .ok_or_else(|| StepError::Precondition("a `servicebus` fault needs `action`".into()))?;
        let (fake_action, default_condition, default_description) = match action {
            AmqpFaultAction::Detach => (FakeAction::Detach, "amqp:internal-error", ""),
            AmqpFaultAction::CloseConnection => {
                (FakeAction::CloseConnection, "amqp:connection:forced", "")
            }
            AmqpFaultAction::ServerBusy => {
                (FakeAction::Detach, SERVER_BUSY, SERVER_BUSY_DESCRIPTION)
            }
        };
        let condition = fault
            .condition
            .clone()
            .unwrap_or_else(|| default_condition.to_owned());
        let description = fault
            .description
            .clone()
            .unwrap_or_else(|| default_description.to_owned());
        let note = format!("servicebus {:?} fails with {condition}", fault.on);
        lock(&self.target.fakes.cloud).amqp_faults.add(AmqpFault {
            point,
            action: fake_action,
            condition,
            description,
            remaining: fault.times,
            probability: fault.probability.unwrap_or(1.0),
        });
        Ok(CommandOutput {
            value: Value::Null,
            note: Some(note.to_lowercase()),
        })
    }

    /// Counts the requests a fake received that match the expectation.
    pub(super) async fn count_requests(
        &self,
        expected: &RequestExpectation,
    ) -> Result<String, StepError> {
        let server = self.server(expected.service).ok_or_else(|| {
            StepError::Precondition(
                "request counts exist for the HTTP fakes: arm, entra, issuer".into(),
            )
        })?;
        let path = expected
            .path
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| StepError::Precondition(format!("invalid `path` regex: {e}")))?;
        let body = expected
            .body
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| StepError::Precondition(format!("invalid `body` regex: {e}")))?;
        let requests = server.received_requests().await.unwrap_or_default();
        let count = requests
            .iter()
            .filter(|r| {
                expected
                    .method
                    .as_deref()
                    .is_none_or(|m| r.method.as_str().eq_ignore_ascii_case(m))
            })
            .filter(|r| path.as_ref().is_none_or(|p| p.is_match(r.url.path())))
            .filter(|r| {
                body.as_ref()
                    .is_none_or(|b| b.is_match(&String::from_utf8_lossy(&r.body)))
            })
            .count();
        let what = format!(
            "{} {} requests to {:?}{}",
            count,
            expected.method.as_deref().unwrap_or("any"),
            expected.service,
            expected
                .path
                .as_deref()
                .map(|p| format!(" matching {p}"))
                .unwrap_or_default()
        )
        .to_lowercase();
        if count != expected.count {
            return Err(StepError::Expectation {
                expected: format!("{} such requests", expected.count),
                observed: what,
            });
        }
        Ok(what)
    }

    /// Finds the request or workload log line behind a failed step, for the report.
    pub(super) async fn evidence(&self, error: &StepError) -> Option<String> {
        match error {
            StepError::Client(client) => {
                let service = match client {
                    ClientError::Entra { .. } => FaultService::Entra,
                    _ => FaultService::Arm,
                };
                let server = self.server(service)?;
                let last = last_request(server).await?;
                let answer = match (client.status(), client.code()) {
                    (Some(status), Some(code)) => format!(" -> {status} {code}"),
                    (Some(status), None) => format!(" -> {status}"),
                    _ => " -> no answer".to_owned(),
                };
                Some(format!("{last}{answer}"))
            }
            StepError::Workload { log, .. } => log
                .lines()
                .rev()
                .find(|line| {
                    line.contains("amqp:")
                        || line.contains("com.microsoft:")
                        || line.contains("AADSTS")
                        || line.contains("Put token failed")
                })
                .map(|line| format!("workload log: {}", line.trim())),
            _ => None,
        }
    }
}

/// Formats the last request a wiremock server received as `METHOD /path`.
async fn last_request(server: &MockServer) -> Option<String> {
    let requests = server.received_requests().await?;
    let request = requests.last()?;
    Some(format!("{} {}", request.method, request.url.path()))
}

fn describe_http_fault(fault: &Fault) -> String {
    let mut text = format!(
        "{} {} on {}",
        fault.method.as_deref().unwrap_or("any"),
        fault.path.as_deref().unwrap_or("path"),
        format!("{:?}", fault.service).to_lowercase()
    );
    if let Some(status) = fault.status {
        text.push_str(&format!(" -> {status}"));
    }
    if fault.reset {
        text.push_str(" -> no answer");
    }
    if let Some(delay) = &fault.delay {
        text.push_str(&format!(" after {delay}"));
    }
    if let Some(times) = fault.times {
        text.push_str(&format!(", {times} times"));
    }
    if let Some(probability) = fault.probability {
        text.push_str(&format!(", probability {probability}"));
    }
    text
}
