//! `rkube-bench scheduler`: the binding rate of the scheduler with the real API server, in the shape of
//! kube-scheduler's SchedulingBasic benchmark: N nodes registered (simulated nodes that heartbeat but run no
//! pods), M pods created by a few concurrent clients, and every binding observed on a pod watch.
//!
//! The server is a real `rkube server` process (release build by default) in a temporary directory, with
//! its own controller manager and scheduler; `pods_per_sec` is M over the time from the first pod created
//! to the last binding seen.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;

const NAMESPACE: &str = "bench-scheduler";

#[derive(Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// Simulated nodes to register.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods to create and have scheduled.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients creating pods (each with its own connection).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Pod creations in flight per client.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// The rkube binary to run the server with (default: `rkube` next to this binary, i.e. the same profile).
    #[arg(long, value_name = "PATH")]
    rkube: Option<PathBuf>,
    /// Give up when the pods are not all bound after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// A `rkube server` child process in its own temporary directory; killed on drop.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(binary: &Path) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new().prefix("rkube-bench-sched-").tempdir()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(binary)
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // A cluster CIDR with room for a /24 per node, so node IPAM does not fail for thousands of nodes.
            .args([
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--node-name",
                "bench",
                "--cluster-cidr",
                "10.0.0.0/8",
            ])
            .env("RKUBE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Server { child, dir })
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data").join("kubeconfig.yaml")
    }

    /// Resident memory of the server process, from /proc.
    fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    async fn client(&mut self, deadline: Instant) -> anyhow::Result<kube::Client> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "rkube server exited with {status}; see {}",
                    self.dir.path().join("server.log").display()
                );
            }
            if let Ok(client) = ready_client(&self.kubeconfig()).await {
                return Ok(client);
            }
            if Instant::now() > deadline {
                bail!("rkube server not ready in time");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ready_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    client.apiserver_version().await?;
    Ok(client)
}

fn default_rkube() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name("rkube"))
}

/// A pod like SchedulingBasic's `pod-default.yaml`: one pause container requesting 100m CPU and 500Mi.
fn bench_pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": NAMESPACE},
        "spec": {"containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}, "limits": {"cpu": "100m", "memory": "500Mi"}}
        }]}
    }))
    .expect("a valid pod")
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let binary = match &args.rkube {
        Some(p) => p.clone(),
        None => default_rkube()?,
    };
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p rkube`",
        binary.display()
    );
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut server = Server::start(&binary)?;
    let client = server.client(Instant::now() + Duration::from_secs(60)).await?;

    // Nodes: simulated, heartbeating, running no pods.
    let started = Instant::now();
    let options = rkube_sim::SimOptions {
        count: args.nodes,
        name_prefix: "bench".into(),
        cpu: "4".into(),
        memory: "32Gi".into(),
        pods: 110,
        manage_pods: false,
        max_concurrent_requests: 64,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sim = tokio::spawn(rkube_sim::run(client.clone(), options, async move {
        let _ = stopped.await;
    }));
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let list = nodes
            .list_metadata(&ListParams::default().labels("type=sim"))
            .await?;
        if list.items.len() >= args.nodes {
            break;
        }
        if sim.is_finished() || Instant::now() > deadline {
            bail!("only {} of {} nodes registered", list.items.len(), args.nodes);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let registration = started.elapsed();
    println!(
        "registered {} nodes in {:.1}s",
        args.nodes,
        registration.as_secs_f64()
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;

    // Bindings are seen on one watch, started before the first pod exists.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let (bound_tx, mut bound_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (watching_tx, watching_rx) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut watching = Some(watching_tx);
        let mut events = std::pin::pin!(watcher(pods, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = watching.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                _ => continue,
            };
            let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
            if bound
                && seen.insert(pod.metadata.name.unwrap_or_default())
                && bound_tx.send(Instant::now()).is_err()
            {
                return;
            }
        }
    });
    watching_rx.await.context("pod watch ended before it started")?;

    let create_start = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let client = ready_client(&server.kubeconfig()).await?;
        let (pods, in_flight) = (args.pods, args.in_flight);
        creators.spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, NAMESPACE);
            let mine = (c..pods).step_by(args.clients);
            futures::stream::iter(mine)
                .map(|i| {
                    let api = api.clone();
                    async move { api.create(&PostParams::default(), &bench_pod(i)).await.is_err() }
                })
                .buffer_unordered(in_flight)
                .filter(|failed| std::future::ready(*failed))
                .count()
                .await
        });
    }
    let mut create_errors = 0;
    while let Some(r) = creators.join_next().await {
        create_errors += r?;
    }
    let created = create_start.elapsed();
    println!(
        "created {} pods in {:.1}s ({} errors)",
        args.pods - create_errors,
        created.as_secs_f64(),
        create_errors
    );

    let expected = args.pods - create_errors;
    let mut bound = 0;
    let mut first_bind = None;
    let mut last_bind = create_start;
    while bound < expected {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, bound_rx.recv()).await {
            Ok(Some(at)) => {
                bound += 1;
                first_bind.get_or_insert(at);
                last_bind = at;
            }
            _ => break,
        }
    }
    let rss = server.rss_bytes();
    watch.abort();
    let _ = stop.send(());
    let _ = sim.await;

    let total = last_bind.duration_since(create_start).as_secs_f64();
    let pods_per_sec = if total > 0.0 { bound as f64 / total } else { 0.0 };
    let window = first_bind
        .map(|f| last_bind.duration_since(f).as_secs_f64())
        .unwrap_or(0.0);
    println!(
        "bound {bound} of {expected} pods in {total:.2}s after the first creation: {pods_per_sec:.0} pods/s"
    );
    let result = serde_json::json!({
        "benchmark": "scheduler",
        "nodes": args.nodes,
        "pods": args.pods,
        "clients": args.clients,
        "node_registration_secs": registration.as_secs_f64(),
        "create_secs": created.as_secs_f64(),
        "create_errors": create_errors,
        "bound": bound,
        "schedule_secs": total,
        "bind_window_secs": window,
        "pods_per_sec": pods_per_sec,
        "server_rss_bytes": rss,
    });
    println!("{result}");
    if bound < expected || create_errors > 0 {
        bail!(
            "{} pods not bound, {create_errors} creations failed",
            expected - bound
        );
    }
    Ok(())
}
