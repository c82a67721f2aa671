//! Scenario files: loading, reuse of a base scenario, validation with file and line numbers,
//! and variables.
//!
//! A file is parsed in two passes. The outer document (name, tenants, vars, the list of
//! steps) is read first; each step is then checked against the step types, so an error names
//! the step and its line. A file that `extends` another takes over the base's steps and edits
//! them by step `id` (see [`Change`]). At run time a step's strings get `${NAME}` replaced by
//! variables and captures before the step is read again.

mod checks;
mod extend;
mod model;
mod vars;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use checks::parse_duration;
pub use model::*;
pub use vars::{expand, referenced_variables};

/// How many `extends` links a scenario may follow before the chain counts as a cycle.
const MAX_EXTENDS_DEPTH: usize = 8;

/// Failure to load a scenario file or read one of its steps.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read the scenario: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The YAML or its outer structure is invalid.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// One step does not match any step type or has wrong fields.
    #[error("{file}:{line}: step {index} ({command}): {message}")]
    Step {
        file: PathBuf,
        line: usize,
        index: usize,
        command: String,
        message: String,
    },
    /// A step uses a variable that is neither in `vars` nor captured by an earlier step.
    #[error(
        "{file}:{line}: step {index} ({command}) uses ${{{variable}}}, which no `vars` entry or earlier `capture` defines; add it to `vars` or capture it in an earlier step"
    )]
    UnknownVariable {
        file: PathBuf,
        line: usize,
        index: usize,
        command: String,
        variable: String,
    },
    /// An entry of `changes` is invalid or names no step of the base scenario.
    #[error("{file}:{line}: change {index}: {message}")]
    Change {
        file: PathBuf,
        line: usize,
        index: usize,
        message: String,
    },
}

/// A scenario as read from disk, with the raw steps kept for variable expansion.
#[derive(Clone, Debug)]
pub struct LoadedScenario {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    /// The base scenario's file, when this one extends another.
    pub extends: Option<PathBuf>,
    pub tenants: Vec<String>,
    pub vars: BTreeMap<String, String>,
    pub steps: Vec<RawStep>,
}

/// One step as written, with the file and line it comes from.
#[derive(Clone, Debug)]
pub struct RawStep {
    /// Position in the scenario after `changes`, from 1.
    pub index: usize,
    /// The file the step is written in: this scenario's or a base scenario's.
    pub file: PathBuf,
    pub line: usize,
    /// The step's `id`, if it has one.
    pub id: Option<String>,
    /// The command key, e.g. `aks create`.
    pub command: String,
    pub value: serde_yaml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    extends: Option<String>,
    #[serde(default)]
    tenants: Option<Vec<String>>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    steps: Option<Vec<serde_yaml::Value>>,
    #[serde(default)]
    changes: Vec<serde_yaml::Value>,
}

fn default_tenants() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

impl LoadedScenario {
    /// Reads and validates a scenario file, with the scenarios it extends.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let scenario = Self::load_unchecked(path, 0)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Parses and validates scenario text; `path` names the file in errors and anchors a
    /// relative `extends`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        let scenario = Self::parse_unchecked(path, text, 0)?;
        scenario.validate()?;
        Ok(scenario)
    }

    fn load_unchecked(path: &Path, depth: usize) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse_unchecked(path, &text, depth)
    }

    fn parse_unchecked(path: &Path, text: &str, depth: usize) -> Result<Self, ScenarioError> {
        let file = path.to_path_buf();
        let document: Document = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            ScenarioError::Syntax {
                file: file.clone(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let syntax = |line: usize, message: String| ScenarioError::Syntax {
            file: file.clone(),
            line,
            column: 1,
            message,
        };
        let own_steps = document.steps.map(|steps| {
            let lines = list_item_lines(text, "steps");
            steps
                .into_iter()
                .enumerate()
                .map(|(index, value)| {
                    RawStep::new(&file, lines.get(index).copied().unwrap_or(1), value)
                })
                .collect::<Vec<_>>()
        });
        let (extends, tenants, vars, steps) = match &document.extends {
            None => {
                if !document.changes.is_empty() {
                    return Err(syntax(
                        key_line(text, "changes"),
                        "`changes` edit a base scenario; add `extends: BASE.yaml` or list the steps under `steps`".into(),
                    ));
                }
                let steps = own_steps.ok_or_else(|| {
                    syntax(1, "missing field `steps`; list the steps, or name a base scenario with `extends`".into())
                })?;
                (
                    None,
                    document.tenants.unwrap_or_else(default_tenants),
                    document.vars,
                    steps,
                )
            }
            Some(base) => {
                let line = key_line(text, "extends");
                if depth >= MAX_EXTENDS_DEPTH {
                    return Err(syntax(
                        line,
                        format!(
                            "`extends` goes more than {MAX_EXTENDS_DEPTH} files deep; remove the cycle through {base}"
                        ),
                    ));
                }
                if own_steps.is_some() {
                    return Err(syntax(
                        key_line(text, "steps"),
                        "a scenario that `extends` another edits its steps with `changes`; move these steps into `insert-after` or `replace` changes".into(),
                    ));
                }
                let base_path = path.parent().unwrap_or(Path::new(".")).join(base);
                let base_scenario = match Self::load_unchecked(&base_path, depth + 1) {
                    Err(ScenarioError::Io { source, .. }) => {
                        return Err(syntax(
                            line,
                            format!(
                                "cannot read the base scenario {}: {source}; `extends` is relative to this file",
                                base_path.display()
                            ),
                        ));
                    }
                    other => other?,
                };
                let mut vars = base_scenario.vars;
                vars.extend(document.vars);
                let change_lines = list_item_lines(text, "changes");
                let steps = extend::apply_changes(
                    &file,
                    base_scenario.steps,
                    document.changes,
                    &change_lines,
                )?;
                (
                    Some(base_path),
                    document.tenants.unwrap_or(base_scenario.tenants),
                    vars,
                    steps,
                )
            }
        };
        let steps = steps
            .into_iter()
            .enumerate()
            .map(|(index, step)| RawStep {
                index: index + 1,
                ..step
            })
            .collect();
        Ok(Self {
            file,
            name: document.name,
            description: document.description,
            extends,
            tenants,
            vars,
            steps,
        })
    }

    /// Checks every step's type and fields, and that each `${NAME}` is defined before use.
    fn validate(&self) -> Result<(), ScenarioError> {
        let mut defined: Vec<String> = self.vars.keys().cloned().collect();
        defined.extend(self.built_in_variables());
        for step in &self.steps {
            for variable in referenced_variables(&step.value) {
                if !defined.contains(&variable) {
                    return Err(ScenarioError::UnknownVariable {
                        file: step.file.clone(),
                        line: step.line,
                        index: step.index,
                        command: step.command.clone(),
                        variable,
                    });
                }
            }
            let typed = self.read_step(step, &step.value)?;
            checks::check_step(&typed).map_err(|message| step.error(message))?;
            if let Command::Login(tenant) = &typed.command
                && !tenant.contains("${")
                && !self.tenants.contains(tenant)
            {
                return Err(step.error(format!(
                    "`login: {tenant}` names a tenant the scenario does not have; add it to `tenants` ({})",
                    self.tenants.join(", ")
                )));
            }
            defined.extend(typed.capture.keys().cloned());
        }
        Ok(())
    }

    /// Variables every run defines: `TENANT_<NAME>_ID` per tenant, and `SUBSCRIPTION_ID`, the
    /// subscription of the last `login`.
    pub fn built_in_variables(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tenants.iter().map(|t| tenant_id_variable(t)).collect();
        names.push("SUBSCRIPTION_ID".into());
        names
    }

    /// Reads a step (after variable expansion) into its type.
    pub fn read_step(
        &self,
        step: &RawStep,
        value: &serde_yaml::Value,
    ) -> Result<Step, ScenarioError> {
        let error = |message: String| step.error(message);
        let Some(map) = value.as_mapping() else {
            return Err(error(
                "a step is a mapping with one command key, e.g. `- login: a`".into(),
            ));
        };
        let commands: Vec<&str> = map
            .keys()
            .filter_map(|k| k.as_str())
            .filter(|k| !STEP_OPTIONS.contains(k))
            .collect();
        match commands.as_slice() {
            [] => {
                return Err(error(format!(
                    "the step has no command; use one of: {}",
                    COMMAND_NAMES.join(", ")
                )));
            }
            [command] if !COMMAND_NAMES.contains(command) => {
                let hint = closest(command)
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                return Err(error(format!(
                    "unknown step `{command}`; {hint}known steps: {}",
                    COMMAND_NAMES.join(", ")
                )));
            }
            [_] => {}
            several => {
                return Err(error(format!(
                    "a step runs one command, found {}",
                    several.join(", ")
                )));
            }
        }
        serde_yaml::from_value(value.clone()).map_err(|e| {
            let field = field_of_error(map, commands[0]);
            error(format!(
                "{field}{e}; docs/scenarios.md shows each step's fields, and docs/scenario.schema.json lists them"
            ))
        })
    }
}

impl RawStep {
    fn new(file: &Path, line: usize, value: serde_yaml::Value) -> Self {
        let id = value
            .get("id")
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        Self {
            index: 0,
            file: file.to_path_buf(),
            line,
            id,
            command: command_name(&value),
            value,
        }
    }

    /// Builds an error about this step, naming its file, line and command.
    pub fn error(&self, message: String) -> ScenarioError {
        ScenarioError::Step {
            file: self.file.clone(),
            line: self.line,
            index: self.index,
            command: self.command.clone(),
            message,
        }
    }
}

/// A step's command without its other keys. serde_yaml reads an externally tagged enum from a
/// map only through `flatten`, as in [`Step`].
#[derive(serde::Deserialize)]
struct CommandOnly {
    #[serde(flatten)]
    _command: Command,
}

/// Names the field behind a step's type error, as `field `oidc-issuer`: `. serde reports no
/// path through the step's flattened command, so each argument is left out in turn: the one
/// whose absence makes the command read, or be reported missing, is the culprit. Empty when
/// no single argument explains the error.
fn field_of_error(step: &serde_yaml::Mapping, command: &str) -> String {
    let Some(arguments) = step.get(command).and_then(|a| a.as_mapping()) else {
        return String::new();
    };
    for (key, _) in arguments {
        let Some(name) = key.as_str() else { continue };
        let mut rest = arguments.clone();
        rest.remove(key);
        let mut only_command = serde_yaml::Mapping::new();
        only_command.insert(command.into(), serde_yaml::Value::Mapping(rest));
        match serde_yaml::from_value::<CommandOnly>(serde_yaml::Value::Mapping(only_command)) {
            Ok(_) => return format!("field `{name}`: "),
            Err(error)
                if error
                    .to_string()
                    .contains(&format!("missing field `{name}`")) =>
            {
                return format!("field `{name}`: ");
            }
            Err(_) => {}
        }
    }
    String::new()
}

/// Keys a step may carry beside its command.
const STEP_OPTIONS: &[&str] = &["id", "capture", "expect_error", "timeout"];

/// Every step command, as written in scenario files.
pub const COMMAND_NAMES: &[&str] = &[
    "login",
    "account show",
    "group create",
    "group delete",
    "aks create",
    "aks show",
    "aks get-credentials",
    "servicebus namespace create",
    "servicebus namespace show",
    "servicebus queue create",
    "servicebus queue show",
    "identity create",
    "identity show",
    "identity federated-credential create",
    "role assignment create",
    "rest",
    "kubectl apply",
    "wait",
    "expect",
    "advance clock",
    "set",
    "fault",
];

/// Finds the known command nearest to a misspelt one, when it is close enough to be a typo.
fn closest(command: &str) -> Option<&'static str> {
    COMMAND_NAMES
        .iter()
        .map(|name| (edit_distance(command, name), *name))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// The variable holding the id of the tenant named `tenant` in the scenario.
pub fn tenant_id_variable(tenant: &str) -> String {
    format!("TENANT_{}_ID", tenant.to_ascii_uppercase())
}

fn command_name(value: &serde_yaml::Value) -> String {
    let Some(map) = value.as_mapping() else {
        return "not a mapping".into();
    };
    map.keys()
        .filter_map(|k| k.as_str())
        .find(|k| !STEP_OPTIONS.contains(k))
        .unwrap_or("no command")
        .to_owned()
}

/// Line numbers (1-based) of the items of the top-level list under `key:`.
fn list_item_lines(text: &str, key: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut in_list = false;
    let mut item_indent: Option<usize> = None;
    let prefix = format!("{key}:");
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let is_item = trimmed.starts_with("- ") || trimmed == "-";
        if indent == 0 && !is_item {
            in_list = trimmed.starts_with(&prefix);
            continue;
        }
        if !in_list || !is_item {
            continue;
        }
        match item_indent {
            None => {
                item_indent = Some(indent);
                lines.push(number + 1);
            }
            Some(expected) if expected == indent => lines.push(number + 1),
            Some(_) => {}
        }
    }
    lines
}

/// Line (1-based) of a top-level `key:`, or 1 when it is absent.
fn key_line(text: &str, key: &str) -> usize {
    let prefix = format!("{key}:");
    text.lines()
        .position(|line| line.starts_with(&prefix))
        .map_or(1, |index| index + 1)
}

/// Generates the JSON Schema of scenario files from [`Scenario`].
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Scenario);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes to JSON");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadedScenario, ScenarioError> {
        LoadedScenario::parse(Path::new("test.yaml"), text)
    }

    #[test]
    fn steps_get_their_line_numbers() {
        let scenario = parse("name: t\nsteps:\n  - login: a\n\n  - group create:\n      name: rg\n      location: eastus\n").unwrap();
        assert_eq!(scenario.steps[0].line, 3);
        assert_eq!(scenario.steps[1].line, 5);
        assert_eq!(scenario.steps[1].command, "group create");
    }

    #[test]
    fn unknown_step_names_file_line_and_step() {
        let error = parse("name: t\nsteps:\n  - login: a\n  - grup create: {name: rg}\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("test.yaml:4: step 2 (grup create): unknown step `grup create`; did you mean `group create`?"), "{error}");
    }

    #[test]
    fn login_to_undeclared_tenant_is_rejected() {
        let error = parse("name: t\ntenants: [a, b]\nsteps:\n  - login: c\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("names a tenant the scenario does not have"),
            "{error}"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = "name: t\nsteps:\n  - aks create: {group: g, name: c, oidc-issuer: maybe}\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(
            error.contains("field `oidc-issuer`: invalid type"),
            "{error}"
        );
    }

    #[test]
    fn missing_field_is_reported() {
        let error = parse("name: t\nsteps:\n  - group create: {name: rg}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing field `location`"), "{error}");
    }

    #[test]
    fn bad_yaml_has_line_and_column() {
        let error = parse("name: t\nsteps: [\n").unwrap_err();
        assert!(
            matches!(error, ScenarioError::Syntax { line: 3, .. }),
            "{error}"
        );
    }

    #[test]
    fn undefined_variable_is_rejected() {
        let error = parse("name: t\nsteps:\n  - login: ${TENANT}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("uses ${TENANT}"), "{error}");
    }

    #[test]
    fn captured_variable_is_defined_for_later_steps() {
        let text = "name: t\nsteps:\n  - identity show: {group: g, name: i}\n    capture: {ID: principalId}\n  - login: ${ID}\n";
        parse(text).unwrap();
    }
}
