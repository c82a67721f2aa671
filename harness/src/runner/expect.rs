//! Expectations: checks on logs and queues, expected errors, and `--query`-style paths.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{CommandOutput, Runner, StepError};
use crate::scenario::{Expectations, ExpectedError};

/// A one-line description of an `expect` step.
pub fn title(expectations: &Expectations) -> String {
    let mut parts = Vec::new();
    if let Some(logs) = &expectations.logs {
        parts.push(format!("logs of job/{}", logs.job));
    }
    if let Some(queue) = &expectations.queue {
        parts.push(format!("queue {}/{}", queue.namespace, queue.queue));
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
        Ok(CommandOutput {
            value: Value::Null,
            note: Some(notes.join(", ")),
        })
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
    let status_ok = expected.status.is_none_or(|s| status == Some(s));
    let message_ok = expected
        .message
        .as_ref()
        .is_none_or(|m| text.contains(m.as_str()));
    if code_ok && status_ok && message_ok {
        Ok(())
    } else {
        Err(short(error))
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

/// Parses `90s`, `2m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, StepError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || {
        StepError::Precondition(format!(
            "invalid duration {text:?}; write a number with ms, s, m or h, e.g. 60s"
        ))
    };
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(invalid()),
    };
    Ok(Duration::from_secs_f64(seconds))
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

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
    }
}
