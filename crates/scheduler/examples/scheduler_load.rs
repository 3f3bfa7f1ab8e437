//! End-to-end scheduling throughput against a running API server, in the shape of kube-scheduler's
//! SchedulingBasic: register `--nodes` nodes (4 cpu, 32Gi, 110 pods; plain API objects, no agents), create
//! `--pods` pending pods (100m cpu, 500Mi each) for scheduler name `--scheduler-name`, then start this
//! crate's scheduler in-process and time until every pod is bound (observed through a watch).
//! Prints one JSON line with `pods_per_sec`.
//!
//! ```text
//! rkube server --data-dir /tmp/s --listen 127.0.0.1:6443 --disable-agent &
//! cargo run --release -p rkube-scheduler --example scheduler_load -- --kubeconfig /tmp/s/kubeconfig.yaml
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use rkube_scheduler::plugins::default_profile;
use rkube_scheduler::{SchedulerOptions, run};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    #[arg(long, default_value_t = 10000)]
    pods: usize,
    /// Scheduler name of the created pods (not the default, so an in-server scheduler leaves them alone).
    #[arg(long, default_value = "load-scheduler")]
    scheduler_name: String,
    /// Concurrent create requests while setting up.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Binding requests in flight.
    #[arg(long, default_value_t = 256)]
    bindings: usize,
    /// Namespace of the pods.
    #[arg(long, default_value = "default")]
    namespace: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let kc = Kubeconfig::read_from(&args.kubeconfig)?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?,
    )?;

    let nodes: Api<Node> = Api::all(client.clone());
    let setup = Instant::now();
    stream::iter(0..args.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("load-node-{i}");
                let r = json!({"cpu": "4", "memory": "32Gi", "pods": "110"});
                let status = json!({"capacity": r, "allocatable": r,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]});
                let node: Node = serde_json::from_value(json!({"metadata": {"name": name,
                    "labels": {"kubernetes.io/hostname": name}}, "status": status}))?;
                nodes.create(&PostParams::default(), &node).await?;
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": status})),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    stream::iter(0..args.pods)
        .map(|i| {
            let (pods, scheduler) = (pods.clone(), args.scheduler_name.clone());
            async move {
                let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("load-pod-{i}")},
                    "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "pause",
                        "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}}))?;
                pods.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let setup_secs = setup.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = SchedulerOptions {
        profiles: vec![default_profile(&args.scheduler_name)],
        leader_election: None,
        max_in_flight_bindings: args.bindings,
        ..SchedulerOptions::default()
    };
    let started = Instant::now();
    let scheduler = tokio::spawn(run(client.clone(), options, async move {
        let _ = stop_rx.await;
    }));

    let bound = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut first_bound: Option<Duration> = None;
    let mut events = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(pod) = events.try_next().await? {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ours = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()) == Some(&args.scheduler_name);
        if ours
            && name.starts_with("load-pod-")
            && pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        {
            let mut set = bound.lock().unwrap();
            set.insert(name);
            first_bound.get_or_insert_with(|| started.elapsed());
            if set.len() >= args.pods {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    scheduler.await??;
    let first = first_bound.map(|d| d.as_secs_f64()).unwrap_or(0.0);
    println!(
        "{}",
        json!({
            "nodes": args.nodes, "pods": args.pods, "setup_seconds": setup_secs,
            "seconds": secs, "first_bound_seconds": first,
            "pods_per_sec": args.pods as f64 / secs,
            "pods_per_sec_after_first_bind": args.pods as f64 / (secs - first).max(1e-9),
        })
    );
    Ok(())
}
