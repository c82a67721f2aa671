//! The scenario format itself: the committed JSON Schema, validation errors on broken files,
//! and a broken expectation failing with the expected and observed values.

use std::path::{Path, PathBuf};

use xtenant_harness::runner::{Outcome, RunOptions, run_file};
use xtenant_harness::scenario::{LoadedScenario, json_schema};

#[test]
fn committed_schema_matches_types() {
    let committed = std::fs::read_to_string("docs/scenario.schema.json")
        .expect("docs/scenario.schema.json exists; write it with `xtenant schema`");
    assert!(
        committed == json_schema(),
        "docs/scenario.schema.json is out of date; run `cargo run -- schema > docs/scenario.schema.json`"
    );
}

/// Each broken file, the line its error must name, and a phrase of the fix.
const INVALID: &[(&str, usize, &str)] = &[
    ("bad-yaml.yaml", 5, "did not find expected ','"),
    ("unknown-step.yaml", 4, "did you mean `group create`?"),
    ("missing-field.yaml", 4, "missing field `location`"),
    ("undefined-variable.yaml", 6, "add it to `vars`"),
    ("wrong-type.yaml", 4, "expected u32"),
    ("unknown-change-id.yaml", 8, "the base scenario's ids are"),
    ("bad-duration.yaml", 4, "e.g. 60s"),
    ("two-commands.yaml", 3, "a step runs one command"),
    ("incomplete-fault.yaml", 4, "needs `on`"),
    ("wait-without-condition.yaml", 4, "exactly one of `for"),
];

#[test]
fn invalid_scenarios_name_file_line_and_fix() {
    let folder = Path::new("tests/invalid-scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), INVALID.len(), "one table row per file");
    for (name, line, fix) in INVALID {
        let path = folder.join(name);
        let error = LoadedScenario::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{name} loaded, but it is broken on purpose"))
            .to_string();
        let location = format!("{}:{line}:", path.display());
        assert!(
            error.starts_with(&location),
            "{name}: the error should start with {location}\n{error}"
        );
        assert!(error.contains(fix), "{name}: no {fix:?} in\n{error}");
    }
}

#[test]
fn validate_command_reports_every_invalid_file() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtenant"))
        .arg("validate")
        .args(
            INVALID
                .iter()
                .map(|(name, ..)| format!("tests/invalid-scenarios/{name}")),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stdout.lines().count(), INVALID.len(), "{stdout}");
}

#[test]
fn every_scenario_file_validates() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtenant"))
        .args(["list", "scenarios"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("invalid:"), "{stdout}");
    assert!(
        stdout.contains("fic-issuer-missing-trailing-slash.yaml"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_expected_code_fails_with_both_values() {
    let original = Path::new("scenarios/failures/fic-issuer-missing-trailing-slash.yaml");
    let base = std::fs::canonicalize("scenarios/cross-tenant-producer.yaml").unwrap();
    let text = std::fs::read_to_string(original)
        .unwrap()
        .replace("../cross-tenant-producer.yaml", &base.display().to_string())
        .replace("AADSTS700211", "AADSTS700213");
    let folder = tempfile::tempdir().unwrap();
    let copy = folder.path().join("broken.yaml");
    std::fs::write(&copy, text).unwrap();

    let options = RunOptions {
        workload_exe: PathBuf::from(env!("CARGO_BIN_EXE_xtenant")),
    };
    let report = run_file(&copy, &options, |_| {}).await.unwrap();

    assert!(!report.passed());
    let failed = report.failures().next().expect("one step fails");
    let Outcome::Failed { expected, observed } = &failed.outcome else {
        unreachable!("failures() returns failed steps")
    };
    assert!(expected.contains("AADSTS700213"), "{expected}");
    assert!(observed.contains("AADSTS700211"), "{observed}");
    assert_eq!(failed.file, copy);
    let rendered = failed.render();
    assert!(rendered.contains("expected:"), "{rendered}");
    assert!(rendered.contains("observed:"), "{rendered}");
}
