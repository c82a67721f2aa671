//! Expectations: checks on logs and queues, expected errors, and `--query`-style paths.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{CommandOutput, Runner, StepError};
use crate::scenario::{Expectations, ExpectedError, PodExpectation};

/// A one-line description of an `expect` step.
pub fn title(expectations: &Expectations) -> String {
    let mut parts = Vec::new();
    if let Some(logs) = &expectations.logs {
        parts.push(format!("logs of job/{}", logs.job));
    }
    if let Some(queue) = &expectations.queue {
        parts.push(format!("queue {}/{}", queue.namespace, queue.queue));
    }
    if let Some(pod) = &expectations.pod {
        parts.push(format!("pod of job/{}", pod.job));
    }
    if let Some(requests) = &expectations.requests {
        parts.push(format!("requests to {:?}", requests.service).to_lowercase());
    }
    format!("expect {}", parts.join(", "))
}

impl Runner {
    pub(super) async fn check(
        &mut self,
        expectations: &Expectations,
    ) -> Result<CommandOutput, StepError> {
        let mut notes = Vec::new();
        if let Some(expected) = &expectations.logs {
            let logs = self
                .cluster()?
                .job_logs(&expected.job, &expected.namespace)
                .map_err(|e| StepError::Cluster(e.to_string()))?;
            if let Some(text) = &expected.contains {
                if !logs.contains(text.as_str()) {
                    return Err(StepError::Expectation {
                        expected: format!("the log of job/{} to contain {text:?}", expected.job),
                        observed: format!("log ends with:\n{}", tail(&logs, 8)),
                    });
                }
                notes.push(format!("log contains {text:?}"));
            }
            if let Some(text) = &expected.not_contains {
                if logs.contains(text.as_str()) {
                    return Err(StepError::Expectation {
                        expected: format!(
                            "the log of job/{} not to contain {text:?}",
                            expected.job
                        ),
                        observed: format!("log ends with:\n{}", tail(&logs, 8)),
                    });
                }
                notes.push(format!("log lacks {text:?}"));
            }
            if let Some(line) = &expected.last_line {
                let last = logs
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim();
                if last != line {
                    return Err(StepError::Expectation {
                        expected: format!(
                            "the last log line of job/{} to be {line:?}",
                            expected.job
                        ),
                        observed: format!("{last:?}"),
                    });
                }
                notes.push(format!("last log line {line:?}"));
            }
        }
        if let Some(expected) = &expectations.queue {
            let session = self.session()?;
            let path = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ServiceBus/namespaces/{}/queues/{}",
                session.subscription, expected.group, expected.namespace, expected.queue
            );
            let (queue, _) = session
                .arm
                .call(Method::GET, &path, "2026-01-01", None)
                .await?;
            let counts = &queue.body["properties"]["countDetails"];
            for (field, wanted) in [
                ("activeMessageCount", expected.active),
                ("deadLetterMessageCount", expected.dead_letter),
            ] {
                let Some(wanted) = wanted else { continue };
                let actual = counts[field].as_u64();
                if actual != Some(wanted) {
                    return Err(StepError::Expectation {
                        expected: format!("{field} {wanted} in queue {}", expected.queue),
                        observed: format!(
                            "{field} {}",
                            actual
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| "missing".into())
                        ),
                    });
                }
                notes.push(format!("{field} {wanted}"));
            }
        }
        if let Some(expected) = &expectations.pod {
            notes.push(self.check_pod(expected)?);
        }
        if let Some(expected) = &expectations.requests {
            notes.push(self.count_requests(expected).await?);
        }
        Ok(CommandOutput {
            value: Value::Null,
            note: Some(notes.join(", ")),
        })
    }

    /// Checks the phase and environment of a job's newest pod.
    fn check_pod(&mut self, expected: &PodExpectation) -> Result<String, StepError> {
        let cluster = self.cluster()?;
        let name = cluster
            .job_pods(&expected.job, &expected.namespace)
            .pop()
            .ok_or_else(|| StepError::Expectation {
                expected: format!("a pod of job/{}", expected.job),
                observed: "the job has no pods".into(),
            })?;
        let pod = cluster
            .pods()
            .into_iter()
            .find(|p| {
                p.metadata.name.as_deref() == Some(name.as_str())
                    && p.metadata.namespace.as_deref() == Some(expected.namespace.as_str())
            })
            .ok_or_else(|| StepError::Expectation {
                expected: format!("pod {name}"),
                observed: "the pod is gone".into(),
            })?;
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        if phase != expected.phase {
            return Err(StepError::Expectation {
                expected: format!("pod {name} in phase {}", expected.phase),
                observed: format!("phase {phase}"),
            });
        }
        let env: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.env.as_ref())
            .map(|env| env.iter().map(|v| v.name.clone()).collect())
            .unwrap_or_default();
        for name in &expected.env_has {
            if !env.contains(name) {
                return Err(StepError::Expectation {
                    expected: format!("environment variable {name} in the pod"),
                    observed: format!("the pod's variables are {}", env.join(", ")),
                });
            }
        }
        for name in &expected.env_lacks {
            if env.contains(name) {
                return Err(StepError::Expectation {
                    expected: format!("no environment variable {name} in the pod"),
                    observed: format!("the pod's variables are {}", env.join(", ")),
                });
            }
        }
        Ok(format!("pod {name} {phase}"))
    }
}

/// Describes an expected error for a report.
pub fn describe_error(expected: &ExpectedError) -> String {
    let mut parts = Vec::new();
    if let Some(code) = &expected.code {
        parts.push(format!("error {code}"));
    }
    if let Some(status) = expected.status {
        parts.push(format!("status {status}"));
    }
    if let Some(condition) = &expected.condition {
        parts.push(format!("condition {condition}"));
    }
    if let Some(message) = &expected.message {
        parts.push(format!("message containing {message:?}"));
    }
    if parts.is_empty() {
        "an error".into()
    } else {
        parts.join(", ")
    }
}

/// Checks an error against the expectation; returns what was observed when it does not match.
pub fn match_error(expected: &ExpectedError, error: &StepError) -> Result<(), String> {
    let (code, status) = match error {
        StepError::Client(client) => (client.code().map(str::to_owned), client.status()),
        _ => (None, None),
    };
    let text = error.to_string();
    let code_ok = expected
        .code
        .as_ref()
        .is_none_or(|c| code.as_deref() == Some(c.as_str()) || text.contains(c.as_str()));
    let status_ok = expected
        .status
        .is_none_or(|s| status == Some(s) || text.contains(&format!("status-code: {s}")));
    let condition_ok = expected
        .condition
        .as_ref()
        .is_none_or(|c| text.contains(c.as_str()));
    let message_ok = expected
        .message
        .as_ref()
        .is_none_or(|m| text.contains(m.as_str()));
    if code_ok && status_ok && condition_ok && message_ok {
        Ok(())
    } else {
        Err(short(error))
    }
}

/// The first line of an error with its code and status, for the note of a step that failed
/// as expected.
pub fn headline(error: &StepError) -> String {
    match error {
        StepError::Workload { log, .. } => log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned(),
        other => short(other).lines().next().unwrap_or("").to_owned(),
    }
}

/// The error with its code and status first, for reports.
pub fn short(error: &StepError) -> String {
    match error {
        StepError::Client(client) => match (client.code(), client.status()) {
            (Some(code), Some(status)) => format!("{code} ({status}): {client}"),
            _ => client.to_string(),
        },
        other => other.to_string(),
    }
}

/// Reads a dotted path from JSON as `az --query` shows it: keys match without regard to case,
/// and a key missing at the top level is looked up under `properties`, because the CLI
/// flattens it.
pub fn query(value: &Value, path: &str) -> Option<String> {
    let found = walk(value, path).or_else(|| walk(&value["properties"], path))?;
    match found {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn walk<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |current, key| {
        let map = current.as_object()?;
        map.get(key).or_else(|| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    })
}

/// JSON shortened for error messages.
pub fn abbreviate(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 300 {
        format!("{}…", &text[..text.floor_char_boundary(300)])
    } else {
        text
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Parses a duration as [`crate::scenario::parse_duration`] does, as a step error.
pub fn parse_duration(text: &str) -> Result<Duration, StepError> {
    crate::scenario::parse_duration(text).map_err(StepError::Precondition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_reads_flattened_properties_without_case() {
        let value = json!({"properties": {"oidcIssuerProfile": {"issuerURL": "https://i/"}, "principalId": "p"}, "id": "x"});
        assert_eq!(
            query(&value, "oidcIssuerProfile.issuerUrl").as_deref(),
            Some("https://i/")
        );
        assert_eq!(query(&value, "principalId").as_deref(), Some("p"));
        assert_eq!(query(&value, "id").as_deref(), Some("x"));
        assert_eq!(query(&value, "missing"), None);
    }
}
