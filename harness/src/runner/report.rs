//! Step and scenario reports, and their text form.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// How a step ended.
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
    pub line: usize,
    pub title: String,
    pub duration: Duration,
    pub outcome: Outcome,
    /// Extra detail: the last log line, an expected error that was observed.
    pub note: Option<String>,
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

    /// The closing line: step counts and the total time.
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
    /// The step as one or more lines of text, as `xtenant run` prints it.
    pub fn render(&self, file: &str) -> String {
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
                "\n         at {file}:{}\n         expected: {expected}\n         observed: {}",
                self.line,
                observed.replace('\n', "\n                   ")
            );
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
