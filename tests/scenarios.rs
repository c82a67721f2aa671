//! Every scenario file under `scenarios/` is a test: each runs against its own fakes, and
//! passes when every step's expectation holds.

use std::path::PathBuf;

use rstest::rstest;
use xtenant_harness::runner::{RunOptions, run_file};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_passes(#[files("scenarios/**/*.yaml")] path: PathBuf) {
    let options = RunOptions {
        workload_exe: PathBuf::from(env!("CARGO_BIN_EXE_xtenant")),
    };
    let shown = path.display().to_string();
    let mut lines = Vec::new();
    let report = run_file(&path, &options, |step| lines.push(step.render(&shown)))
        .await
        .unwrap_or_else(|error| panic!("{shown}: the scenario could not start: {error}"));
    println!("{}\n{}", lines.join("\n"), report.summary());
    assert!(
        report.passed(),
        "{shown} failed:\n{}\n{}",
        lines.join("\n"),
        report.summary()
    );
}
