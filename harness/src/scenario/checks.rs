//! Checks of a step's values that its type cannot express: durations, one of two fields,
//! regular expressions and fault settings.

use std::time::Duration;

use super::{Command, Fault, FaultService, Step};

/// Parses `90s`, `2m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid =
        || format!("invalid duration {text:?}; write a number with ms, s, m or h, e.g. 60s");
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(invalid()),
    };
    if seconds > MAX_DURATION_SECONDS {
        return Err(format!(
            "duration {text:?} is too long; write at most 876000h (100 years)"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid())
}

/// Parses inline manifests as `kubectl apply` would, so a misspelt kind or broken YAML fails
/// validation instead of the run. A manifest with `${NAME}` is parsed with the placeholders in
/// place, then with each replaced by `0`. If both fail, the manifest is reported as invalid.
fn check_manifests(manifests: &str) -> Result<(), String> {
    match crate::cluster::parse_manifests(manifests) {
        Ok(_) => Ok(()),
        Err(_)
            if manifests.contains("${")
                && crate::cluster::parse_manifests(&without_placeholders(manifests)).is_ok() =>
        {
            Ok(())
        }
        Err(error) => Err(format!("the manifest is invalid: {error}")),
    }
}

/// Replaces each `${NAME}` with `0`, for placeholders that stand for numbers. A quoted
/// placeholder stays a string.
fn without_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push('0');
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Maximum duration a scenario may write: 100 years, in seconds.
const MAX_DURATION_SECONDS: f64 = 100.0 * 365.0 * 24.0 * 3600.0;

/// Checks a step or `wait` timeout: a valid duration above zero.
fn check_timeout(text: Option<&str>) -> Result<(), String> {
    let Some(text) = text.filter(|t| !t.contains("${")) else {
        return Ok(());
    };
    if parse_duration(text)?.is_zero() {
        return Err(format!(
            "timeout {text:?} is zero, so the step could never finish; write e.g. 60s"
        ));
    }
    Ok(())
}

/// Checks what serde cannot: durations parse, `wait` has one condition, faults are complete.
/// Values that still hold `${NAME}` are checked at run time, after expansion.
pub(super) fn check_step(step: &Step) -> Result<(), String> {
    check_timeout(step.timeout.as_deref())?;
    match &step.command {
        Command::Wait(args) => {
            check_timeout(Some(&args.timeout))?;
            match (&args.condition, &args.log) {
                (Some(_), None) | (None, Some(_)) => Ok(()),
                _ => {
                    Err("`wait` needs exactly one of `for: complete|failed` and `log: TEXT`".into())
                }
            }
        }
        Command::AdvanceClock(by) => check_duration(Some(by)),
        Command::KubectlApply(manifests) => check_manifests(manifests),
        Command::Set(delays) => {
            for value in [
                &delays.fic_propagation,
                &delays.role_assignment_propagation,
                &delays.identity_replication,
                &delays.operation_duration,
            ] {
                check_duration(value.as_deref())?;
            }
            Ok(())
        }
        Command::Fault(fault) => check_fault(fault),
        Command::Expect(expectations) => {
            if let Some(requests) = &expectations.requests {
                check_regex(requests.path.as_deref())?;
                check_regex(requests.body.as_deref())?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_fault(fault: &Fault) -> Result<(), String> {
    check_duration(fault.delay.as_deref())?;
    check_regex(fault.path.as_deref())?;
    if let Some(p) = fault.probability
        && !(0.0..=1.0).contains(&p)
    {
        return Err(format!("`probability` is {p}; write a number from 0 to 1"));
    }
    if fault.times == Some(0) {
        return Err(
            "`times: 0` injects nothing; remove the fault or give a count of 1 or more".into(),
        );
    }
    if fault.service == FaultService::Servicebus {
        if fault.on.is_none() || fault.action.is_none() {
            return Err(
                "a `servicebus` fault needs `on` (attach, transfer) and `action` (detach, close-connection, server-busy)"
                    .into(),
            );
        }
        if fault.status.is_some() || fault.path.is_some() || fault.reset {
            return Err("`status`, `path` and `reset` are HTTP fault fields; a `servicebus` fault uses `on`, `action`, `condition` and `description`".into());
        }
        return Ok(());
    }
    if fault.on.is_some() || fault.action.is_some() || fault.condition.is_some() {
        return Err("`on`, `action` and `condition` are `servicebus` fault fields; an HTTP fault uses `status`, `body`, `delay` or `reset`".into());
    }
    if fault.status.is_none() && !fault.reset && fault.delay.is_none() {
        return Err("an HTTP fault needs `status`, `delay` or `reset: true`".into());
    }
    Ok(())
}

fn check_duration(text: Option<&str>) -> Result<(), String> {
    match text {
        Some(text) if !text.contains("${") => parse_duration(text).map(|_| ()),
        _ => Ok(()),
    }
}

fn check_regex(pattern: Option<&str>) -> Result<(), String> {
    match pattern {
        Some(pattern) => regex::Regex::new(pattern)
            .map(|_| ())
            .map_err(|e| format!("`path` is not a valid regular expression: {e}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_manifest_kind_is_rejected() {
        let error =
            check_manifests("apiVersion: batch/v1\nkind: Jbo\nmetadata: {name: x}\n").unwrap_err();
        assert!(error.contains("Jbo"), "{error}");
        let with_variable = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: \"${SA}\"}\n";
        assert_eq!(check_manifests(with_variable), Ok(()));
    }

    #[test]
    fn huge_durations_are_rejected() {
        let error = parse_duration("99999999999999999999s").unwrap_err();
        assert!(error.contains("too long"), "{error}");
        assert!(parse_duration("10000000000h").is_err());
        assert!(parse_duration("876000h").is_ok());
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let error = check_timeout(Some("0s")).unwrap_err();
        assert!(error.contains("is zero"), "{error}");
        assert!(check_timeout(Some("1ms")).is_ok());
        assert!(check_timeout(Some("${TIMEOUT}")).is_ok());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
    }
}
