//! A custom scheduler built on the rkube scheduling framework, running beside the default one.
//!
//! It serves pods with `spec.schedulerName: my-scheduler` using kube's default plugins plus one custom
//! Filter plugin, `NodePool`, that only admits nodes labelled `rkube.example/pool=<pool>`:
//!
//! ```text
//! cargo run -p rkube-scheduler --example custom_scheduler -- --kubeconfig /var/lib/rkube/kubeconfig.yaml --pool gpu
//! kubectl label node node-1 rkube.example/pool=gpu
//! kubectl run demo --image=busybox --overrides='{"spec":{"schedulerName":"my-scheduler"}}'
//! ```
//!
//! Pods the filter rejects everywhere stay Pending with a FailedScheduling event such as
//! `0/3 nodes are available: 3 node(s) are not in pool gpu. preemption: 0/3 nodes are available:
//! 3 Preemption is not helpful for scheduling.`, and are retried when a node is added or relabelled (the
//! plugin registers those cluster events).

use std::sync::Arc;

use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rkube_scheduler::framework::{ClusterEvent, CycleState, FilterPlugin, Plugin, Status};
use rkube_scheduler::leader::LeaseConfig;
use rkube_scheduler::plugins::default_profile;
use rkube_scheduler::scheduler::default_identity;
use rkube_scheduler::snapshot::NodeInfo;
use rkube_scheduler::{SchedulerOptions, run};

/// The label the custom plugin looks at.
const POOL_LABEL: &str = "rkube.example/pool";

/// The custom plugin: a node fits only if it is in the configured pool.
struct NodePool {
    pool: String,
    reason: String,
}

impl Plugin for NodePool {
    fn name(&self) -> &'static str {
        "NodePool"
    }

    /// Only a node appearing or changing can put a new node into the pool.
    fn events_to_register(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
}

impl FilterPlugin for NodePool {
    fn filter(&self, _state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Status {
        match node.labels().and_then(|l| l.get(POOL_LABEL)) {
            Some(pool) if *pool == self.pool => Status::success(),
            // Evicting pods cannot move a node into the pool: UnschedulableAndUnresolvable tells
            // DefaultPreemption not to try. Relabelling can, hence the NodeUpdate event above.
            _ => Status::unresolvable(self.reason.clone()),
        }
    }
}

#[derive(Parser)]
struct Args {
    /// Admin kubeconfig of the cluster (e.g. DATA_DIR/kubeconfig.yaml written by `rkube server`).
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// Scheduler name pods select with `spec.schedulerName`.
    #[arg(long, default_value = "my-scheduler")]
    name: String,
    /// Node pool (value of the `rkube.example/pool` label) this scheduler places pods in.
    #[arg(long, default_value = "custom")]
    pool: String,
    /// Run without leader election (a single replica).
    #[arg(long)]
    no_leader_elect: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;

    let plugin = Arc::new(NodePool {
        reason: format!("node(s) are not in pool {}", args.pool),
        pool: args.pool,
    });
    let profile = default_profile(&args.name).with_filter(plugin);

    let identity = default_identity();
    let options = SchedulerOptions {
        profiles: vec![profile],
        // Its own lease, so it never competes with the default scheduler's.
        leader_election: (!args.no_leader_elect)
            .then(|| LeaseConfig::new("kube-system", &args.name, &identity)),
        identity,
        ..SchedulerOptions::default()
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run(client, options, shutdown).await?;
    Ok(())
}
