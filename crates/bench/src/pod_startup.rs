//! `rkube-bench pod-startup`: how fast a node starts pods, and how much memory its agent needs at rest.
//!
//! A two-node cluster of real nodes ([`rkube_e2e::nodes::NodeCluster`]: a server and one separate agent,
//! each in its own test-made network namespace, images from a `docker-registry` in the test network). The
//! measured node is the agent's, so its RSS is the agent alone. The image is pulled once by a warm-up pod
//! first ("image already present"); then `--pods` pods pinned to that node are created at once, and each
//! one's latency runs from just before its create request to the first watch event showing it Running and
//! Ready. Needs root; runs the `rkube` binary next to this one unless `RKUBE_BINARY` names another.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use rkube_e2e::images::BUSYBOX;
use rkube_e2e::netns;
use rkube_e2e::nodes::{NodeCluster, RegistryPlace};

const LABEL: &str = "rkube-bench";
const LABEL_VALUE: &str = "pod-startup";

#[derive(Args, Debug, Clone)]
pub struct PodStartupArgs {
    /// Pods created at once on the node.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// How long the agent sits idle (node registered, no pods) before its RSS is read.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Give up waiting for the pods after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout_secs: u64,
}

pub async fn run(args: PodStartupArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(args)).await?
}

fn run_blocking(args: PodStartupArgs) -> anyhow::Result<()> {
    let binary = match std::env::var_os("RKUBE_BINARY") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::current_exe()?.with_file_name("rkube"),
    };
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build rkube first",
        binary.display()
    );
    println!("starting a server and one agent in test network namespaces");
    let cluster = NodeCluster::start_using(&binary, 2, RegistryPlace::Underlay, &[]);
    let node = cluster.node_name(1).to_string();
    let image = cluster.image(BUSYBOX);
    let agent_pid = cluster.node_pid(1).context("agent process")?;

    std::thread::sleep(Duration::from_secs(args.idle_secs));
    let agent_idle_rss_mb = rss_mb(agent_pid).context("reading the agent's RSS")?;
    println!("agent idle RSS: {agent_idle_rss_mb:.1} MB");

    // Warm-up: the image gets pulled and unpacked once.
    let overrides = format!("{{\"spec\":{{\"nodeName\":\"{node}\"}}}}");
    let warm = cluster.kubectl(&[
        "run",
        "warm-up",
        &format!("--image={image}"),
        &format!("--overrides={overrides}"),
        "--",
        "sleep",
        "3600",
    ]);
    anyhow::ensure!(warm.code == Some(0), "creating the warm-up pod: {}", warm.stderr);
    cluster.wait_pod_ready("warm-up", Duration::from_secs(120));
    println!("image present on {node}; creating {} pods at once", args.pods);

    let kubeconfig = cluster.kubeconfig();
    let pods = args.pods;
    let timeout = Duration::from_secs(args.timeout_secs);
    let latencies = netns::in_netns(cluster.node_ns(0), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(measure(&kubeconfig, &node, &image, pods, timeout))
    })?;

    let mut hist = Histogram::<u64>::new(3)?;
    for l in &latencies {
        hist.record(l.as_millis() as u64)?;
    }
    let p50 = hist.value_at_quantile(0.5);
    let p99 = hist.value_at_quantile(0.99);
    println!(
        "create → Running and Ready: p50 {p50} ms, p99 {p99} ms, max {} ms",
        hist.max()
    );
    let (podman_p50_ms, podman_reason) = podman();
    drop(cluster);
    let result = serde_json::json!({
        "benchmark": "pod-startup",
        "pods": pods,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": hist.max(),
        "agent_idle_rss_mb": (agent_idle_rss_mb * 10.0).round() / 10.0,
        "podman_p50_ms": podman_p50_ms,
        "podman_reason": podman_reason,
    });
    println!("{result}");
    Ok(())
}

/// Creates the pods at once and returns each one's create → Running-and-Ready time.
async fn measure(
    kubeconfig: &std::path::Path,
    node: &str,
    image: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let api: Api<Pod> = Api::namespaced(client, "default");

    // The watch starts (and has listed) before the first create.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_api = api.clone();
    let watch = tokio::spawn(async move {
        let config = watcher::Config::default().labels(&format!("{LABEL}={LABEL_VALUE}"));
        let mut events = std::pin::pin!(watcher(watch_api, config));
        let mut listed = Some(listed_tx);
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = listed.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                _ => continue,
            };
            if running_and_ready(&pod) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if ready_tx.send((name, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    listed_rx.await.context("the pod watch ended before listing")?;

    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut requests = Vec::new();
    for i in 0..count {
        let name = format!("startup-{i}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {LABEL: LABEL_VALUE}},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                                "command": ["sleep", "3600"]}]
            }
        }))?;
        created.insert(name, Instant::now());
        let api = api.clone();
        requests.push(async move { api.create(&PostParams::default(), &pod).await });
    }
    for result in futures::future::join_all(requests).await {
        result.context("creating a pod")?;
    }

    let mut latencies = HashMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while latencies.len() < count {
        let (name, at) = tokio::time::timeout_at(deadline, ready_rx.recv())
            .await
            .with_context(|| format!("only {} of {count} pods Ready in time", latencies.len()))?
            .context("the pod watch ended")?;
        if let Some(start) = created.get(&name) {
            latencies.entry(name).or_insert(at - *start);
        }
    }
    watch.abort();
    Ok(latencies.into_values().collect())
}

fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The comparison with `podman run`: only when podman is installed and can run the image offline.
fn podman() -> (Option<u64>, Option<String>) {
    let installed = std::process::Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        (
            None,
            Some("podman is installed but the test image is not in its store; not measured".to_string()),
        )
    } else {
        (None, Some("podman is not installed on this machine".to_string()))
    }
}
