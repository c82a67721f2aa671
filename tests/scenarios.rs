//! Every scenario file under `scenarios/` is a test: each runs against its own fakes, in
//! parallel with the others, and passes when every step's expectation holds. Each test prints
//! its step list and elapsed time (`cargo test -- --nocapture` shows them).

use std::path::PathBuf;
use std::time::Instant;

use rstest::rstest;
use xtenant_harness::runner::{RunOptions, run_file};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_passes(#[files("scenarios/**/*.yaml")] path: PathBuf) {
    let options = RunOptions {
        workload_exe: PathBuf::from(env!("CARGO_BIN_EXE_xtenant")),
    };
    let shown = path.display().to_string();
    let started = Instant::now();
    let mut lines = Vec::new();
    let report = run_file(&path, &options, |step| lines.push(step.render()))
        .await
        .unwrap_or_else(|error| panic!("{shown}: the scenario could not start: {error}"));
    println!(
        "{}\n{}\nscenario {shown} took {:.2} s",
        lines.join("\n"),
        report.summary(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.passed(),
        "{shown} failed:\n{}\n{}",
        lines.join("\n"),
        report.summary()
    );
}
