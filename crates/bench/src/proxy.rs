//! `rkube-bench proxy`: the service proxy's sync speed, against a real `rkube server` (loopback, temporary
//! data dir) and a network namespace this benchmark creates for the `ip rkube` table (run as root).
//!
//! Phases: create `--services` selector-less ClusterIP Services (every tenth a NodePort) with one
//! EndpointSlice of `--endpoints-per-service` ready endpoints each; a **full sync** — list everything, compile
//! and load the whole table with one `nft -f` — into the empty namespace, then again over the existing table
//! (what an agent restart does); then `rkube_proxy::run` watching the API, and **incremental syncs**: one
//! EndpointSlice changed per iteration (a new endpoint address), timed from just before the API write to the
//! moment `nft monitor` in the namespace reports the rule carrying the new address — i.e. in the kernel.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rkube_proxy::{Kernel, Model, NftCli, NodeInfo, ProxyConfig, Ruleset};
use tokio::io::AsyncBufReadExt;

const NAMESPACE: &str = "default";
const NODE_NAME: &str = "bench-node";

#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Services to create.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Ready endpoints per Service (one EndpointSlice each).
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: usize,
    /// Incremental changes to time.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// The rkube binary to run the server with (default: `rkube` next to this binary).
    #[arg(long, value_name = "PATH")]
    rkube: Option<PathBuf>,
}

/// The namespace holding the benchmark's nft table; deleted (with the table) on drop.
struct Netns(String);

impl Netns {
    fn create() -> anyhow::Result<Netns> {
        let name = format!("rkt-bench-{}-{:06x}", std::process::id(), rand_suffix());
        let status = Command::new("ip").args(["netns", "add", &name]).status()?;
        anyhow::ensure!(
            status.success(),
            "ip netns add {name} failed (rkube-bench proxy needs root)"
        );
        Ok(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos & 0xff_ffff
}

/// An `rkube server` child; killed on drop.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Server {
    fn start(binary: &Path) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(binary)
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--disable-agent"])
            .env("RKUBE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        Ok(Server {
            child,
            _dir: dir,
            kubeconfig,
        })
    }

    async fn client(&mut self) -> anyhow::Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("rkube server exited with {status}");
            }
            if let Ok(file) = kube::config::Kubeconfig::read_from(&self.kubeconfig)
                && let Ok(config) = kube::Config::from_custom_kubeconfig(file, &Default::default()).await
                && let Ok(client) = Client::try_from(config)
                && Api::<Service>::namespaced(client.clone(), NAMESPACE)
                    .list(&ListParams::default())
                    .await
                    .is_ok()
            {
                return Ok(client);
            }
            anyhow::ensure!(Instant::now() < deadline, "rkube server not ready after 60 s");
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

fn service(i: usize) -> Service {
    let node_port = i.is_multiple_of(10);
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(if node_port { "NodePort" } else { "ClusterIP" }.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Endpoint `j` of service `i`: distinct addresses in 10.42.0.0/16 (wrapping after 65k).
fn endpoint_ip(i: usize, j: usize, per_service: usize) -> String {
    let n = (i * per_service + j) % 65_000 + 2;
    format!("10.42.{}.{}", n / 250, n % 250 + 1)
}

fn endpoints(ips: impl IntoIterator<Item = String>) -> Vec<Endpoint> {
    ips.into_iter()
        .map(|ip| Endpoint {
            addresses: vec![ip],
            node_name: Some(NODE_NAME.into()),
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        })
        .collect()
}

fn slice(i: usize, per_service: usize) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}-bench")),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/service-name".to_string(), format!("svc-{i}")),
                (
                    "endpointslice.kubernetes.io/managed-by".to_string(),
                    "rkube-bench".to_string(),
                ),
            ])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        endpoints: endpoints((0..per_service).map(|j| endpoint_ip(i, j, per_service))),
    }
}

fn node_info() -> anyhow::Result<NodeInfo> {
    Ok(ProxyConfig::new(NODE_NAME, vec![], "10.42.0.0/16", "10.43.0.0/16").node_info()?)
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let binary = match &args.rkube {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("rkube"),
    };
    anyhow::ensure!(
        binary.exists(),
        "{} not found (build rkube or pass --rkube)",
        binary.display()
    );
    let netns = Netns::create()?;
    let tools = NftCli::in_netns(&netns.0);
    let mut server = Server::start(&binary)?;
    let client = server.client().await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);

    let started = Instant::now();
    futures::stream::iter(0..args.services)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            let per = args.endpoints_per_service;
            async move {
                services.create(&PostParams::default(), &service(i)).await?;
                slices.create(&PostParams::default(), &slice(i, per)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "created {} services with {} endpoints each in {:.1} s",
        args.services,
        args.endpoints_per_service,
        started.elapsed().as_secs_f64()
    );

    // Full sync, as the proxy does it at start: list, compile, one nft transaction.
    let mut model = Model::new(node_info()?);
    let listed = Instant::now();
    for svc in services.list(&ListParams::default()).await?.items {
        model.apply_service(svc);
    }
    for s in slices.list(&ListParams::default()).await?.items {
        model.apply_slice(s);
    }
    let list_ms = ms(listed.elapsed());
    let mut full = Vec::new();
    let mut compile_ms = 0.0;
    for round in 0..3 {
        let t0 = Instant::now();
        let script = Ruleset::from_model(&model).render_full();
        compile_ms = ms(t0.elapsed());
        let tools = tools.clone();
        tokio::task::spawn_blocking(move || tools.apply(&script)).await??;
        let total = ms(t0.elapsed());
        println!(
            "full sync {round} ({}): compile {compile_ms:.1} ms, compile + nft {total:.1} ms",
            if round == 0 {
                "empty kernel table"
            } else {
                "replacing the table"
            }
        );
        full.push(total);
    }
    let chains = tools
        .nft_output(&["-t", "list", "table", "ip", "rkube"])?
        .matches("\tchain ")
        .count();
    println!("table ip rkube holds {chains} chains");

    // The proxy itself, watching the API.
    let mut config = ProxyConfig::new(NODE_NAME, vec![], "10.42.0.0/16", "10.43.0.0/16");
    config.tools = tools.clone();
    let mut monitor = tokio::process::Command::new("ip")
        .args(["netns", "exec", &netns.0, "nft", "monitor", "rules"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(monitor.stdout.take().context("monitor stdout")?).lines();
    // Let nft monitor subscribe before anything happens: an empty transaction it must report nothing for.
    tools.apply("add table ip rkube\n")?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let proxy_started = Instant::now();
    let proxy = tokio::spawn(rkube_proxy::run(client.clone(), config, stop));
    // The proxy's first (full) sync: the last service's chain appears (first full sync → rules added).
    let last_chain = format!("cluster-{NAMESPACE}/svc-{}/tcp/80", args.services - 1);
    wait_for_line(&mut lines, &last_chain, Duration::from_secs(60))
        .await
        .context("proxy's first sync")?;
    let startup_ms = ms(proxy_started.elapsed());
    println!("proxy start → whole table in the kernel: {startup_ms:.1} ms");

    let mut hist = Histogram::<u64>::new(3)?;
    // Until the API server answered the write: its share of the end-to-end time.
    let mut ack = Histogram::<u64>::new(3)?;
    for n in 0..args.iterations {
        let i = n * 7919 % args.services;
        let new_ip = format!("10.99.{}.{}", n / 250, n % 250 + 1);
        let mut ips: Vec<String> = (1..args.endpoints_per_service)
            .map(|j| endpoint_ip(i, j, args.endpoints_per_service))
            .collect();
        ips.insert(0, new_ip.clone());
        let patch = serde_json::json!({ "endpoints": endpoints(ips) });
        let t0 = Instant::now();
        slices
            .patch(
                &format!("svc-{i}-bench"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        ack.record(t0.elapsed().as_micros() as u64)?;
        wait_for_line(&mut lines, &format!("{new_ip} . 8080"), Duration::from_secs(10))
            .await
            .with_context(|| format!("iteration {n}: {new_ip} never reached the kernel"))?;
        hist.record(t0.elapsed().as_micros() as u64)?;
    }
    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), proxy).await???;
    let _ = monitor.kill().await;

    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let result = serde_json::json!({
        "services": args.services,
        "endpoints_per_service": args.endpoints_per_service,
        "chains": chains,
        "list_ms": round1(list_ms),
        "compile_ms": round1(compile_ms),
        "full_sync_ms": round1(full[0]),
        "full_sync_replace_ms": round1(full[1..].iter().copied().fold(0.0, f64::max)),
        "proxy_start_to_rules_ms": round1(startup_ms),
        "incremental_iterations": args.iterations,
        "incremental_sync_p50_ms": round1(q(0.5)),
        "incremental_sync_p99_ms": round1(q(0.99)),
        "incremental_sync_max_ms": round1(hist.max() as f64 / 1000.0),
        "api_write_ack_p50_ms": round1(ack.value_at_quantile(0.5) as f64 / 1000.0),
        "api_write_ack_p99_ms": round1(ack.value_at_quantile(0.99) as f64 / 1000.0),
    });
    println!("{result}");
    Ok(())
}

/// Read `nft monitor` lines until one contains `needle`.
async fn wait_for_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(needle) {
                return anyhow::Ok(());
            }
        }
        bail!("nft monitor ended")
    })
    .await
    .with_context(|| format!("no `{needle}` from nft monitor within {timeout:?}"))?
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
