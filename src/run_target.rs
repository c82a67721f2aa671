//! Command-line settings of `xtenant run` that choose the target and cluster backend, and the
//! `drift` and `sweep` subcommands.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "live-azure")]
use anyhow::Context;
use clap::{Args, ValueEnum};
#[cfg(feature = "k3s")]
use xtenant_harness::cluster::k3s::K3sOptions;
use xtenant_harness::cluster::kind::KindOptions;
use xtenant_harness::drift::{Recorder, Recording, compare, render_report};
use xtenant_harness::target::{ClusterBackend, TargetKind, TargetOptions};

/// The cluster backend that runs the scenario's workloads.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum ClusterChoice {
    /// In-process, no Docker.
    #[default]
    Embedded,
    /// A kind cluster (needs Docker, `kind` and `kubectl`).
    Kind,
    /// A K3s container started through testcontainers (needs Docker and `kubectl`).
    #[cfg(feature = "k3s")]
    K3s,
}

/// The cloud the scenarios run against.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum TargetChoice {
    /// Fresh fakes per scenario.
    #[default]
    Fake,
    /// Real Azure (build with `--features live-azure`); credentials from XTENANT_TENANT_*.
    Live,
}

#[derive(Args, Clone, Debug, Default)]
pub struct TargetArgs {
    /// Cluster backend that replaces AKS clusters.
    #[arg(long, value_enum, default_value_t)]
    pub cluster: ClusterChoice,
    /// Use this existing kind cluster and keep it after the run.
    #[arg(long, value_name = "NAME")]
    pub reuse_kind_cluster: Option<String>,
    /// kind node image, such as kindest/node:v1.35.1.
    #[arg(long, value_name = "IMAGE")]
    pub kind_node_image: Option<String>,
    /// Demo workload image built from the Dockerfile, loaded into kind or K3s.
    #[arg(long, value_name = "IMAGE")]
    pub kind_workload_image: Option<String>,
    /// K3s image, such as rancher/k3s:v1.35.1-k3s1.
    #[cfg(feature = "k3s")]
    #[arg(long, value_name = "IMAGE")]
    pub k3s_image: Option<String>,
    /// Address the fakes listen on for kind or K3s; by default the gateway of the Docker
    /// network `kind` (`xtenant-k3s` for K3s).
    #[arg(long, value_name = "IP")]
    pub fakes_bind: Option<IpAddr>,
    /// Record each ARM operation's status, error code and field paths to FILE, for `drift`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Cloud to run against.
    #[arg(long, value_enum, default_value_t)]
    pub target: TargetChoice,
    /// Allow `aks create` on live Azure, which costs money per hour.
    #[arg(long)]
    pub allow_aks: bool,
}

impl TargetArgs {
    /// Builds the harness's target options; `tenants` are the scenario tenants whose
    /// credentials a live run reads from the environment.
    pub fn options(&self, tenants: &[&str]) -> anyhow::Result<TargetOptions> {
        let cluster = match self.cluster {
            ClusterChoice::Embedded => ClusterBackend::Embedded,
            ClusterChoice::Kind => ClusterBackend::Kind(KindOptions {
                reuse: self.reuse_kind_cluster.clone(),
                node_image: self.kind_node_image.clone(),
                workload_image: self.kind_workload_image.clone(),
                fakes_bind: self.fakes_bind,
            }),
            #[cfg(feature = "k3s")]
            ClusterChoice::K3s => ClusterBackend::K3s(K3sOptions {
                image: self.k3s_image.clone(),
                workload_image: self.kind_workload_image.clone(),
                fakes_bind: self.fakes_bind,
            }),
        };
        let kind = match self.target {
            TargetChoice::Fake => TargetKind::Fake,
            TargetChoice::Live => live_kind(tenants, self.allow_aks)?,
        };
        Ok(TargetOptions {
            kind,
            cluster,
            recorder: self.record.as_ref().map(|_| Recorder::default()),
            progress: Some(Arc::new(|line: &str| eprintln!("{line}"))),
        })
    }

    /// Writes the recording when `--record` was given.
    pub fn finish(&self, options: &TargetOptions) -> anyhow::Result<()> {
        if let (Some(path), Some(recorder)) = (&self.record, &options.recorder) {
            recorder.write(path)?;
        }
        Ok(())
    }
}

#[cfg(feature = "live-azure")]
fn live_kind(tenants: &[&str], allow_aks: bool) -> anyhow::Result<TargetKind> {
    let mut settings = xtenant_harness::target::live::LiveSettings::from_lookup(tenants, |name| {
        std::env::var(name).ok()
    })?;
    settings.allow_aks = allow_aks;
    Ok(TargetKind::Live(settings))
}

#[cfg(not(feature = "live-azure"))]
fn live_kind(_tenants: &[&str], _allow_aks: bool) -> anyhow::Result<TargetKind> {
    anyhow::bail!("this xtenant was built without live Azure; rebuild with --features live-azure")
}

/// `xtenant drift A B`: prints the report and returns whether the runs match.
pub fn drift(baseline: &Path, compared: &Path) -> anyhow::Result<bool> {
    let a = Recording::read(baseline)?;
    let b = Recording::read(compared)?;
    let differences = compare(&a, &b);
    print!(
        "{}",
        render_report(
            &baseline.display().to_string(),
            &compared.display().to_string(),
            &differences
        )
    );
    Ok(differences.is_empty())
}

/// `xtenant sweep --older-than AGE`: deletes tagged resource groups older than AGE.
#[cfg(feature = "live-azure")]
pub async fn sweep(older_than: &str, tenants: &[&str]) -> anyhow::Result<bool> {
    use xtenant_harness::target::live::{LiveSettings, created_before, sweep};
    let age = xtenant_harness::scenario::parse_duration(older_than)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("invalid --older-than {older_than}"))?;
    let settings = LiveSettings::from_lookup(tenants, |name| std::env::var(name).ok())?;
    let deleted = sweep(&settings, |tags| created_before(tags, age)).await?;
    for id in &deleted {
        println!("deleted {id}");
    }
    println!("{} resource groups deleted", deleted.len());
    Ok(true)
}
