//! The live target's code path, offline: live-style settings point at fresh fakes, with
//! operator credentials passed as the environment would pass them, and the walkthrough runs
//! through the live target (run-id suffixes, tags, cleanup, drift recording). An embedded
//! cluster stands in for the AKS cluster, because the fakes' kubeconfig has no API server.
#![cfg(feature = "live-azure")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Method;
use xtenant_fakes::cloud::lock;
use xtenant_fakes::{Fakes, FakesConfig};
use xtenant_harness::cluster::RunCluster;
use xtenant_harness::drift::Recorder;
use xtenant_harness::runner::{RunOptions, run_file_on};
use xtenant_harness::target::live::{LiveSettings, StandInCluster, sweep};
use xtenant_harness::target::{ClusterBackend, FakesView, TargetKind, TargetOptions};

fn environment(fakes: &Fakes) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("XTENANT_ARM_URL".into(), fakes.endpoints.arm.clone());
    vars.insert("XTENANT_LOGIN_URL".into(), fakes.endpoints.login.clone());
    vars.insert(
        "XTENANT_CA_FILE".into(),
        fakes.ca_file().display().to_string(),
    );
    let cloud = lock(&fakes.cloud);
    for name in ["a", "b"] {
        let tenant = cloud.tenant(name).unwrap();
        let operator = cloud.operator(&tenant.id).unwrap();
        let prefix = format!("XTENANT_TENANT_{}", name.to_uppercase());
        vars.insert(format!("{prefix}_ID"), tenant.id.to_string());
        vars.insert(
            format!("{prefix}_CLIENT_ID"),
            operator.client_id.to_string(),
        );
        vars.insert(
            format!("{prefix}_CLIENT_SECRET"),
            operator.secret().unwrap().to_owned(),
        );
    }
    vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_runs_through_live_target() {
    let fakes = Fakes::start(FakesConfig::default()).await.unwrap();
    let vars = environment(&fakes);
    let mut settings =
        LiveSettings::from_lookup(&["a", "b"], |name| vars.get(name).cloned()).unwrap();
    settings.allow_aks = true;
    let workload_exe = PathBuf::from(env!("CARGO_BIN_EXE_xtenant"));
    let view = FakesView {
        cloud: fakes.cloud.clone(),
        endpoints: fakes.endpoints.clone(),
        ca_file: fakes.ca_file().to_path_buf(),
    };
    let clusters_dir = tempfile::tempdir().unwrap();
    let (exe, dir) = (workload_exe.clone(), clusters_dir.path().to_path_buf());
    settings.stand_in = Some(StandInCluster(Arc::new(move |cluster_id: &str| {
        let cluster = xtenant_harness::target::embedded_cluster(&view, cluster_id, &exe, &dir)?;
        Ok(RunCluster::Embedded(Box::new(cluster)))
    })));
    let run_id = settings.run_id.clone();
    let recorder = Recorder::default();
    let target_options = TargetOptions {
        kind: TargetKind::Live(settings.clone()),
        cluster: ClusterBackend::Embedded,
        recorder: Some(recorder.clone()),
        progress: None,
    };
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/cross-tenant-producer.yaml");
    let mut lines = Vec::new();

    let report = run_file_on(
        &file,
        &RunOptions { workload_exe },
        &target_options,
        |step| lines.push(step.render()),
    )
    .await
    .unwrap();

    assert!(
        report.passed(),
        "{}\n{}",
        lines.join("\n"),
        report.summary()
    );
    let recording = recorder.snapshot();
    let group_put = recording
        .operations
        .keys()
        .find(|key| key.starts_with("PUT /subscriptions/{guid}/resourcegroups/"))
        .expect("the run recorded a resource group PUT");
    assert!(
        !group_put.contains(&run_id),
        "the recording keeps the run id: {group_put}"
    );
    let remaining = sweep(&settings, |tags| tags["xtenant-run"] == run_id.as_str())
        .await
        .unwrap();
    assert!(
        remaining.is_empty(),
        "groups left after the run: {remaining:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_groups_get_suffix_and_tags() {
    let fakes = Fakes::start(FakesConfig::default()).await.unwrap();
    let vars = environment(&fakes);
    let settings = LiveSettings::from_lookup(&["a"], |name| vars.get(name).cloned()).unwrap();
    let target_options = TargetOptions {
        kind: TargetKind::Live(settings.clone()),
        ..TargetOptions::default()
    };
    let target = xtenant_harness::target::Target::start(
        &["a".to_owned()],
        Path::new(env!("CARGO_BIN_EXE_xtenant")),
        &target_options,
    )
    .await
    .unwrap();
    let http = xtenant_harness::client::http_client(target.ca_file()).unwrap();
    let tokens = xtenant_harness::client::TokenClient::new(http.clone(), target.login_url());
    let token = target
        .operator("a")
        .unwrap()
        .token(&tokens, "https://management.core.windows.net//.default")
        .await
        .unwrap();
    let arm = target.arm_client(http, token);
    let subscription = {
        let cloud = lock(&fakes.cloud);
        let tenant = cloud.tenant("a").unwrap().id.clone();
        cloud.subscriptions_of(&tenant)[0].id.to_string()
    };
    let path = format!("/subscriptions/{subscription}/resourcegroups/rg-x");

    let created = arm
        .call(
            Method::PUT,
            &path,
            "2024-11-01",
            Some(&serde_json::json!({"location": "eastus"})),
        )
        .await
        .unwrap()
        .0;
    let aks = arm
        .call(
            Method::PUT,
            &format!("{path}/providers/Microsoft.ContainerService/managedClusters/aks"),
            "2026-06-01",
            Some(&serde_json::json!({})),
        )
        .await;

    assert_eq!(created.body["name"], format!("rg-x-{}", settings.run_id));
    assert_eq!(
        created.body["tags"]["xtenant-run"],
        settings.run_id.as_str()
    );
    assert!(created.body["tags"]["xtenant-created"].is_string());
    let error = aks.unwrap_err().to_string();
    assert!(error.contains("--allow-aks"), "{error}");
    target.finish().await.unwrap();
    let (groups, _) = arm
        .call(
            Method::GET,
            &format!("/subscriptions/{subscription}/resourcegroups"),
            "2024-11-01",
            None,
        )
        .await
        .unwrap();
    let names: Vec<&str> = groups.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("rg-x")), "{names:?}");
}
