//! Step and scenario reports, and their text form.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Outcome of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed {
        expected: String,
        observed: String,
    },
    /// An earlier step failed.
    NotRun,
}

#[derive(Clone, Debug)]
pub struct StepReport {
    pub index: usize,
    /// The file the step is written in (a base scenario's for a step it inherits).
    pub file: PathBuf,
    pub line: usize,
    pub title: String,
    pub duration: Duration,
    pub outcome: Outcome,
    /// Extra detail: the last log line, an expected error that was observed.
    pub note: Option<String>,
    /// What produced a failure: the HTTP request and its response, or the workload's log line
    /// with the AMQP or AADSTS error.
    pub evidence: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ScenarioReport {
    pub name: String,
    pub file: PathBuf,
    pub steps: Vec<StepReport>,
    pub duration: Duration,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.outcome == Outcome::Passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &StepReport> {
        self.steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed { .. }))
    }

    /// Returns the closing line: step counts and the total time.
    pub fn summary(&self) -> String {
        let passed = self
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::Passed)
            .count();
        let failed = self.failures().count();
        let not_run = self
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::NotRun)
            .count();
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let mut line = format!("{verdict} {}: {passed} passed, {failed} failed", self.name);
        if not_run > 0 {
            let _ = write!(line, ", {not_run} not run");
        }
        let _ = write!(line, " in {}", format_duration(self.duration));
        line
    }
}

impl StepReport {
    /// Renders the step as one or more lines of text, as `xtenant run` prints it.
    pub fn render(&self) -> String {
        let mark = match self.outcome {
            Outcome::Passed => "ok  ",
            Outcome::Failed { .. } => "FAIL",
            Outcome::NotRun => "skip",
        };
        let mut text = format!(
            "  {mark} {:>2} {:<56} {:>8}",
            self.index,
            self.title,
            format_duration(self.duration)
        );
        if let Some(note) = self.note.as_deref().filter(|n| !n.is_empty()) {
            let _ = write!(text, "  {}", shorten(note, NOTE_WIDTH));
        }
        if let Outcome::Failed { expected, observed } = &self.outcome {
            let _ = write!(
                text,
                "\n         at {}:{}\n         expected: {expected}\n         observed: {}",
                self.file.display(),
                self.line,
                observed.replace('\n', "\n                   ")
            );
            if let Some(evidence) = &self.evidence {
                let _ = write!(text, "\n         from:     {evidence}");
            }
        }
        text
    }
}

/// Characters of a step's note shown on its line.
const NOTE_WIDTH: usize = 160;

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let cut: String = text.chars().take(width).collect();
    format!("{cut}…")
}

/// `12 ms`, `1.23 s`.
pub fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}

impl ScenarioReport {
    /// Renders the report as JSON for `--report json`: the scenario, its verdict and every step.
    pub fn to_json(&self) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|step| {
                let (outcome, expected, observed) = match &step.outcome {
                    Outcome::Passed => ("passed", None, None),
                    Outcome::Failed { expected, observed } => {
                        ("failed", Some(expected.clone()), Some(observed.clone()))
                    }
                    Outcome::NotRun => ("not-run", None, None),
                };
                serde_json::json!({
                    "index": step.index,
                    "title": step.title,
                    "file": step.file.display().to_string(),
                    "line": step.line,
                    "outcome": outcome,
                    "durationMs": step.duration.as_secs_f64() * 1000.0,
                    "note": step.note,
                    "expected": expected,
                    "observed": observed,
                    "evidence": step.evidence,
                })
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "file": self.file.display().to_string(),
            "passed": self.passed(),
            "durationMs": self.duration.as_secs_f64() * 1000.0,
            "steps": steps,
        })
    }
}

/// Renders the reports as a JUnit XML document: one test suite per scenario, one test case per step.
pub fn junit_xml(reports: &[ScenarioReport]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for report in reports {
        let failures = report.failures().count();
        let skipped = report
            .steps
            .iter()
            .filter(|s| s.outcome == Outcome::NotRun)
            .count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\" file=\"{}\">",
            escape_xml(&report.name),
            report.steps.len(),
            report.duration.as_secs_f64(),
            escape_xml(&report.file.display().to_string()),
        );
        for step in &report.steps {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{} {}\" time=\"{:.3}\" file=\"{}\" line=\"{}\"",
                escape_xml(&report.name),
                step.index,
                escape_xml(&step.title),
                step.duration.as_secs_f64(),
                escape_xml(&step.file.display().to_string()),
                step.line,
            );
            match &step.outcome {
                Outcome::Passed => xml.push_str("/>\n"),
                Outcome::NotRun => xml.push_str(">\n      <skipped/>\n    </testcase>\n"),
                Outcome::Failed { expected, observed } => {
                    let mut detail = format!("expected: {expected}\nobserved: {observed}");
                    if let Some(evidence) = &step.evidence {
                        let _ = write!(detail, "\nfrom: {evidence}");
                    }
                    let _ = write!(
                        xml,
                        ">\n      <failure message=\"expected {}\">{}</failure>\n    </testcase>\n",
                        escape_xml(expected),
                        escape_xml(&detail),
                    );
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ScenarioReport {
        ScenarioReport {
            name: "s <1>".into(),
            file: PathBuf::from("s.yaml"),
            steps: vec![
                StepReport {
                    index: 1,
                    file: PathBuf::from("s.yaml"),
                    line: 3,
                    title: "login a".into(),
                    duration: Duration::from_millis(5),
                    outcome: Outcome::Passed,
                    note: None,
                    evidence: None,
                },
                StepReport {
                    index: 2,
                    file: PathBuf::from("base.yaml"),
                    line: 9,
                    title: "wait job/x complete".into(),
                    duration: Duration::from_millis(7),
                    outcome: Outcome::Failed {
                        expected: "error \"AADSTS700211\"".into(),
                        observed: "AADSTS700213 & more".into(),
                    },
                    note: None,
                    evidence: Some("POST /t/oauth2/v2.0/token -> 401 AADSTS700213".into()),
                },
            ],
            duration: Duration::from_millis(12),
        }
    }

    #[test]
    fn junit_escapes_and_counts_failures() {
        let xml = junit_xml(&[report()]);
        assert!(xml.contains("name=\"s &lt;1&gt;\""), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(xml.contains("AADSTS700213 &amp; more"), "{xml}");
        assert!(xml.contains("line=\"9\""), "{xml}");
    }

    #[test]
    fn json_report_has_expected_and_observed() {
        let json = report().to_json();
        assert_eq!(json["passed"], false);
        assert_eq!(json["steps"][1]["outcome"], "failed");
        assert_eq!(json["steps"][1]["observed"], "AADSTS700213 & more");
        assert_eq!(json["steps"][1]["file"], "base.yaml");
    }
}
