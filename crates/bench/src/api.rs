//! `rkube-bench api`: the API server as its clients see it, against a real `rkube server` process (release
//! build by default) in a temporary data dir on a free loopback port.
//!
//! Phases, in order: readiness of a fresh start (PKI generation included) and of a restart on the same dir;
//! idle memory of the empty cluster once it has settled; pod creation by many concurrent HTTPS clients; the
//! full pod list as a server-side Table (what `kubectl get pods` asks for); and watch fan-out — many watchers
//! on one namespace while a writer creates pods at a fixed rate, every event checked at every watcher.
//! Pods name a scheduler nobody runs (`bench-none`) so the in-process scheduler leaves them alone.
//!
//! CPU seconds of the server and of this benchmark process are printed per phase: both share the machine,
//! so a phase that is client-bound shows up there.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::{AsyncBufReadExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CREATE_NAMESPACE: &str = "bench-api";
const WATCH_NAMESPACE: &str = "bench-watch";
/// What `kubectl get pods` sends as Accept.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
/// Watchers sharing one client (one connection pool; a watch holds its own HTTP/1.1 connection or h2 stream).
const WATCHERS_PER_CLIENT: usize = 50;

#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Pods to create (and then list).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients creating pods, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// How many times to list all pods as a Table.
    #[arg(long, default_value_t = 50)]
    lists: usize,
    /// Watchers on the watch namespace.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Writes (pod creations) per second during the watch phase.
    #[arg(long, default_value_t = 1000)]
    watch_rate: u64,
    /// Seconds of writes during the watch phase.
    #[arg(long, default_value_t = 3)]
    watch_secs: u64,
    /// Give up (and stop the server) when its RSS passes this many MB while watchers connect.
    #[arg(long, default_value_t = 4096.0)]
    max_server_rss_mb: f64,
    /// The rkube binary to run the server with (default: `rkube` next to this binary, i.e. the same profile).
    #[arg(long, value_name = "PATH")]
    rkube: Option<PathBuf>,
}

/// A `rkube server` child process; SIGKILLed on drop if still running.
struct Server {
    child: Child,
    spawned: Instant,
    port: u16,
}

impl Server {
    fn start(binary: &Path, data_dir: &Path, log: &Path) -> anyhow::Result<Server> {
        let port = free_port()?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let spawned = Instant::now();
        let child = Command::new(binary)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--disable-agent"])
            .env("RKUBE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Server { child, spawned, port })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time from spawn to the first 200 from `/readyz`, polled every 2 ms.
    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(probe_tls_config()?));
        let deadline = self.spawned + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("rkube server exited with {status} before it was ready");
            }
            if readyz_ok(&tls, self.port).await {
                return Ok(self.spawned.elapsed());
            }
            if Instant::now() > deadline {
                bail!("rkube server not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGTERM, then wait for the exit (SIGKILL after 20 s).
    async fn stop(&mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                println!("server ignored SIGTERM for 20 s; killing it");
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback port nobody listens on right now (the server binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The readiness probe cannot verify the serving certificate: its CA is generated by the process being
/// timed. `/readyz` carries no secrets and the peer is our own child on loopback.
fn probe_tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(rkube_apiserver::tls::AnyServerCert::new(provider)))
        .with_no_client_auth())
}

/// One HTTPS/1.1 `GET /readyz` on a new connection; true on status 200.
async fn readyz_ok(tls: &tokio_rustls::TlsConnector, port: u16) -> bool {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a valid DNS name");
        let mut stream = tls.connect(name, tcp).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        std::io::Result::Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .is_ok_and(|r| r.unwrap_or(false))
}

/// A field of `/proc/PID/status` in kB (e.g. "VmRSS").
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&status, field)
}

fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn rss_mb(pid: u32) -> Option<f64> {
    proc_status_kb(pid, "VmRSS").map(|kb| kb as f64 / 1024.0)
}

/// User + system CPU seconds of a process (`/proc/PID/stat` fields 14 and 15, in 100 Hz ticks).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU used by the server and by this process between two points.
struct CpuMeter {
    server_pid: String,
    server: f64,
    bench: f64,
}

impl CpuMeter {
    fn start(server_pid: u32) -> CpuMeter {
        let server_pid = server_pid.to_string();
        CpuMeter {
            server: cpu_secs(&server_pid),
            bench: cpu_secs("self"),
            server_pid,
        }
    }

    fn describe(&self) -> String {
        format!(
            "CPU: server {:.1}s, bench client {:.1}s",
            cpu_secs(&self.server_pid) - self.server,
            cpu_secs("self") - self.bench
        )
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Waits until the RSS has stayed within 256 kB over ten consecutive samples 100 ms apart (at most 20 s);
/// returns the last sample and whether it settled.
async fn settled_rss_mb(pid: u32) -> (Option<f64>, bool) {
    const WINDOW: usize = 10;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut samples: Vec<u64> = Vec::new();
    loop {
        let Some(kb) = proc_status_kb(pid, "VmRSS") else {
            return (None, false);
        };
        samples.push(kb);
        let recent = &samples[samples.len().saturating_sub(WINDOW)..];
        let spread = recent.iter().max().unwrap_or(&0) - recent.iter().min().unwrap_or(&0);
        if recent.len() == WINDOW && spread <= 256 {
            return (Some(kb as f64 / 1024.0), true);
        }
        if Instant::now() > deadline {
            return (Some(kb as f64 / 1024.0), false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kube_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn post_json(path: &str, body: &[u8]) -> http::Request<Vec<u8>> {
    http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(body.to_vec())
        .expect("a valid request")
}

fn get(path: &str, accept: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path)
        .header(http::header::ACCEPT, accept)
        .body(Vec::new())
        .expect("a valid request")
}

async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let body = serde_json::to_vec(
        &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )?;
    client
        .request_text(post_json("/api/v1/namespaces", &body))
        .await?;
    Ok(())
}

/// A small pod that no scheduler serves, so it stays Pending and untouched.
fn pod_body(namespace: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {
            "schedulerName": "bench-none",
            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]
        }
    }))
    .expect("serializable")
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Microseconds → milliseconds at a quantile, rounded to µs.
fn hist_ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1000.0
}

/// Nearest-rank percentile (`q` in 0..=1) of a sorted slice; None when empty.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct CreateResult {
    per_sec: f64,
    errors: usize,
    latency: Histogram<u64>,
}

async fn create_phase(kubeconfig: &Path, args: &ApiArgs) -> anyhow::Result<CreateResult> {
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(kube_client(kubeconfig).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let path = format!("/api/v1/namespaces/{CREATE_NAMESPACE}/pods");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (next, path, total) = (next.clone(), path.clone(), args.pods);
        tasks.spawn(async move {
            let mut latency = histogram();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = pod_body(CREATE_NAMESPACE, &format!("pod-{i}"));
                let sent = Instant::now();
                match client.request_text(post_json(&path, &body)).await {
                    Ok(_) => latency.saturating_record(sent.elapsed().as_micros() as u64),
                    Err(e) => {
                        if errors == 0 {
                            println!("create pod-{i} failed: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            (latency, errors)
        });
    }
    let mut latency = histogram();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, e) = r?;
        latency.add(&h)?;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(CreateResult {
        per_sec: (args.pods - errors) as f64 / elapsed,
        errors,
        latency,
    })
}

/// List durations in ms, sorted, of `count` GETs of every pod in the namespace as a Table.
async fn list_phase(
    client: &kube::Client,
    query: &str,
    count: usize,
    expect_rows: usize,
) -> anyhow::Result<Vec<f64>> {
    let path = format!("/api/v1/namespaces/{CREATE_NAMESPACE}/pods{query}");
    let first = client.request_text(get(&path, TABLE_ACCEPT)).await?;
    let table: serde_json::Value = serde_json::from_str(&first)?;
    anyhow::ensure!(
        table["kind"] == "Table",
        "expected a Table, got kind {}",
        table["kind"]
    );
    let rows = table["rows"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        rows == expect_rows,
        "the Table has {rows} rows, expected {expect_rows}"
    );
    let mut durations = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let body = client.request_text(get(&path, TABLE_ACCEPT)).await?;
        durations.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(body.len() > 100, "short list response");
    }
    durations.sort_by(f64::total_cmp);
    Ok(durations)
}

#[derive(serde::Deserialize)]
struct WatchLine {
    #[serde(rename = "type")]
    kind: String,
    object: WatchObject,
}

#[derive(serde::Deserialize)]
struct WatchObject {
    #[serde(default)]
    metadata: WatchMeta,
}

#[derive(serde::Deserialize, Default)]
struct WatchMeta {
    #[serde(default)]
    name: String,
}

/// What one watcher received: (write sequence number, when), plus lines it could not account for.
#[derive(Default)]
struct Received {
    events: Vec<(usize, Instant)>,
    other: usize,
}

/// When a watched write was sent and when it was acknowledged.
type WriteTimes = (Instant, Instant);

struct WatchResult {
    writes: usize,
    write_errors: usize,
    write_secs: f64,
    latency: Histogram<u64>,
    from_send: Histogram<u64>,
    early: u64,
    misses: usize,
    duplicates: usize,
    watchers_incomplete: usize,
    watchers_failed: usize,
}

async fn watch_phase(kubeconfig: &Path, args: &ApiArgs, server_pid: u32) -> anyhow::Result<WatchResult> {
    let total = usize::try_from(args.watch_rate * args.watch_secs)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut watchers = tokio::task::JoinSet::new();
    // Like an informer: list for a resourceVersion, then watch from it (no synthetic initial events).
    let lister = kube_client(kubeconfig).await?;
    let list: serde_json::Value = serde_json::from_str(
        &lister
            .request_text(get(
                &format!("/api/v1/namespaces/{WATCH_NAMESPACE}/pods"),
                "application/json",
            ))
            .await?,
    )?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("list without resourceVersion")?;
    let watch_path = format!("/api/v1/namespaces/{WATCH_NAMESPACE}/pods?watch=true&resourceVersion={rv}");
    let mut client = None;
    let mut established = Vec::with_capacity(args.watchers);
    for w in 0..args.watchers {
        if w % WATCHERS_PER_CLIENT == 0 {
            client = Some(kube_client(kubeconfig).await?);
        }
        let client = client.clone().expect("set on the first watcher");
        let (path, mut stop) = (watch_path.clone(), stop_rx.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<bool>();
        established.push(ready_rx);
        watchers.spawn(async move {
            let mut received = Received::default();
            let stream = match client.request_stream(get(&path, "application/json")).await {
                Ok(s) => s,
                Err(e) => {
                    println!("watch failed to start: {e}");
                    let _ = ready_tx.send(false);
                    return None;
                }
            };
            let _ = ready_tx.send(true);
            let mut lines = std::pin::pin!(stream.lines());
            let mut seen = 0;
            while seen < total {
                let line = tokio::select! {
                    line = lines.next() => line,
                    _ = stop.wait_for(|s| *s) => break,
                };
                let Some(Ok(line)) = line else { break };
                let at = Instant::now();
                match serde_json::from_str::<WatchLine>(&line) {
                    Ok(WatchLine { kind, object }) if kind == "ADDED" => {
                        match object
                            .metadata
                            .name
                            .strip_prefix("w-")
                            .and_then(|n| n.parse().ok())
                        {
                            Some(seq) => {
                                received.events.push((seq, at));
                                seen += 1;
                            }
                            None => received.other += 1,
                        }
                    }
                    _ => received.other += 1,
                }
            }
            Some(received)
        });
    }
    let mut watchers_failed = 0;
    for (w, ready) in established.into_iter().enumerate() {
        if !ready.await.unwrap_or(false) {
            watchers_failed += 1;
        }
        // The machine is shared: stop before a server that balloons per watcher takes it down.
        let rss = rss_mb(server_pid).unwrap_or(0.0);
        if rss > args.max_server_rss_mb {
            bail!(
                "server RSS {rss:.0} MB above --max-server-rss-mb after {} watchers; stopping",
                w + 1
            );
        }
    }
    println!(
        "{} watchers established ({watchers_failed} failed); load average {}",
        args.watchers,
        load_average()
    );

    // The writer: one pod creation every 1/rate s, spread over a few connections, at most 512 in flight.
    let mut writers = Vec::new();
    for _ in 0..8 {
        writers.push(kube_client(kubeconfig).await?);
    }
    let acks: Arc<Mutex<Vec<Option<WriteTimes>>>> = Arc::new(Mutex::new(vec![None; total]));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.watch_rate.max(1)));
    let path = format!("/api/v1/namespaces/{WATCH_NAMESPACE}/pods");
    let started = Instant::now();
    let mut writes = tokio::task::JoinSet::new();
    for seq in 0..total {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, acks, path) = (writers[seq % writers.len()].clone(), acks.clone(), path.clone());
        writes.spawn(async move {
            let body = pod_body(WATCH_NAMESPACE, &format!("w-{seq}"));
            let sent = Instant::now();
            let ok = client.request_text(post_json(&path, &body)).await.is_ok();
            if ok {
                acks.lock().expect("not poisoned")[seq] = Some((sent, Instant::now()));
            }
            drop(permit);
            ok
        });
    }
    let mut write_errors = 0;
    while let Some(ok) = writes.join_next().await {
        if !ok? {
            write_errors += 1;
        }
    }
    let write_secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {total} pods in {write_secs:.2}s ({:.0}/s, {write_errors} errors); waiting for delivery",
        total as f64 / write_secs
    );

    // Watchers stop by themselves once they have every event; the rest get 30 s more.
    let grace = tokio::time::sleep(Duration::from_secs(30));
    let mut grace = std::pin::pin!(grace);
    let mut results = Vec::with_capacity(args.watchers);
    loop {
        tokio::select! {
            joined = watchers.join_next() => match joined {
                Some(r) => results.push(r?),
                None => break,
            },
            _ = &mut grace, if !*stop_tx.borrow() => { let _ = stop_tx.send(true); }
        }
    }

    let acks = std::mem::take(&mut *acks.lock().expect("not poisoned"));
    let mut latency = histogram();
    let mut from_send = histogram();
    let (mut early, mut misses, mut duplicates, mut watchers_incomplete) = (0u64, 0usize, 0usize, 0usize);
    for received in results.iter().flatten() {
        let mut seen = HashSet::with_capacity(received.events.len());
        for &(seq, at) in &received.events {
            if !seen.insert(seq) {
                duplicates += 1;
                continue;
            }
            if let Some(Some((sent, ack))) = acks.get(seq) {
                // An event may beat its write's acknowledgement to the client; that counts as 0 (and the
                // latency from the write's send is reported too, as an upper bound).
                if at < *ack {
                    early += 1;
                }
                latency.saturating_record(at.saturating_duration_since(*ack).as_micros() as u64);
                from_send.saturating_record(at.saturating_duration_since(*sent).as_micros() as u64);
            }
        }
        let missed = acks
            .iter()
            .enumerate()
            .filter(|(seq, a)| a.is_some() && !seen.contains(seq))
            .count();
        misses += missed;
        if missed > 0 {
            watchers_incomplete += 1;
        }
    }
    Ok(WatchResult {
        writes: total,
        write_errors,
        write_secs,
        latency,
        from_send,
        early,
        misses,
        duplicates,
        watchers_incomplete: watchers_incomplete + watchers_failed,
        watchers_failed,
    })
}

fn default_rkube() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("rkube"))
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let binary = match &args.rkube {
        Some(p) => p.clone(),
        None => default_rkube()?,
    };
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p rkube --bin rkube`",
        binary.display()
    );
    let load_before = load_average();
    println!("load average at start: {load_before}");
    let dir = tempfile::Builder::new().prefix("rkube-bench-api-").tempdir()?;
    let data_dir = dir.path().join("data");
    let log = dir.path().join("server.log");
    let ready_timeout = Duration::from_secs(60);

    let mut server = Server::start(&binary, &data_dir, &log)?;
    let ready = server
        .wait_ready(ready_timeout)
        .await
        .with_context(|| format!("see {}", log.display()))?;
    println!(
        "fresh start: /readyz 200 after {:.1} ms (includes PKI generation)",
        ms(ready)
    );
    server.stop().await?;
    let mut server = Server::start(&binary, &data_dir, &log)?;
    let ready_restart = server
        .wait_ready(ready_timeout)
        .await
        .with_context(|| format!("see {}", log.display()))?;
    println!(
        "restart on the same data dir: /readyz 200 after {:.1} ms",
        ms(ready_restart)
    );
    let pid = server.pid();

    let (idle_rss, settled) = settled_rss_mb(pid).await;
    println!(
        "idle RSS (empty cluster, {}): {:.1} MB",
        if settled {
            "settled"
        } else {
            "NOT settled after 20 s"
        },
        idle_rss.unwrap_or(f64::NAN)
    );

    let kubeconfig = data_dir.join("kubeconfig.yaml");
    let admin = kube_client(&kubeconfig).await?;
    create_namespace(&admin, CREATE_NAMESPACE).await?;
    create_namespace(&admin, WATCH_NAMESPACE).await?;

    let cpu = CpuMeter::start(pid);
    let creates = create_phase(&kubeconfig, &args).await?;
    println!(
        "created {} pods with {} clients: {:.0}/s, latency p50 {:.1} ms p99 {:.1} ms ({} errors); {}; load {}",
        args.pods - creates.errors,
        args.clients,
        creates.per_sec,
        hist_ms(&creates.latency, 0.5),
        hist_ms(&creates.latency, 0.99),
        creates.errors,
        cpu.describe(),
        load_average()
    );
    let expect_rows = args.pods - creates.errors;

    let cpu = CpuMeter::start(pid);
    let full = list_phase(&admin, "", args.lists, expect_rows).await?;
    println!(
        "list {expect_rows} pods as Table x{}: p50 {:.1} ms p99 {:.1} ms; {}",
        args.lists,
        percentile(&full, 0.5).unwrap_or(f64::NAN),
        percentile(&full, 0.99).unwrap_or(f64::NAN),
        cpu.describe()
    );
    let paged = list_phase(&admin, "?limit=500", args.lists, expect_rows.min(500)).await?;
    println!(
        "first page (limit=500) as Table x{}: p50 {:.1} ms p99 {:.1} ms",
        args.lists,
        percentile(&paged, 0.5).unwrap_or(f64::NAN),
        percentile(&paged, 0.99).unwrap_or(f64::NAN)
    );

    let cpu = CpuMeter::start(pid);
    let watch = watch_phase(&kubeconfig, &args, pid).await?;
    println!(
        "watch: {} watchers x {} writes: delivery p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {} missed, {} duplicated, \
         {} watchers incomplete, {} events beat their ack; {}",
        args.watchers,
        watch.writes,
        hist_ms(&watch.latency, 0.5),
        hist_ms(&watch.latency, 0.99),
        watch.latency.max() as f64 / 1000.0,
        watch.misses,
        watch.duplicates,
        watch.watchers_incomplete,
        watch.early,
        cpu.describe()
    );
    println!(
        "watch delivery from the write's send instead: p50 {:.1} ms p99 {:.1} ms",
        hist_ms(&watch.from_send, 0.5),
        hist_ms(&watch.from_send, 0.99)
    );
    let rss_after = rss_mb(pid);
    println!(
        "server RSS after: {:.1} MB; load average {}",
        rss_after.unwrap_or(f64::NAN),
        load_average()
    );
    server.stop().await?;

    let result = serde_json::json!({
        "benchmark": "api",
        "pods": args.pods,
        "clients": args.clients,
        "watchers": args.watchers,
        "watch_rate": args.watch_rate,
        "ready_ms": round3(ms(ready)),
        "ready_restart_ms": round3(ms(ready_restart)),
        "idle_rss_mb": idle_rss.map(round3),
        "idle_rss_settled": settled,
        "creates_per_sec": creates.per_sec.round(),
        "create_p50_ms": hist_ms(&creates.latency, 0.5),
        "create_p99_ms": hist_ms(&creates.latency, 0.99),
        "create_errors": creates.errors,
        "list_10k_table_p50_ms": percentile(&full, 0.5).map(round3),
        "list_10k_table_p99_ms": percentile(&full, 0.99).map(round3),
        "list_page500_table_p99_ms": percentile(&paged, 0.99).map(round3),
        "watch_writes": watch.writes,
        "watch_write_errors": watch.write_errors,
        "watch_write_rate": (watch.writes as f64 / watch.write_secs).round(),
        "watch_delivery_p50_ms": hist_ms(&watch.latency, 0.5),
        "watch_delivery_p99_ms": hist_ms(&watch.latency, 0.99),
        "watch_delivery_max_ms": watch.latency.max() as f64 / 1000.0,
        "watch_delivery_from_send_p99_ms": hist_ms(&watch.from_send, 0.99),
        "watch_events_before_ack": watch.early,
        "watch_missed": watch.misses,
        "watch_duplicates": watch.duplicates,
        "watchers_incomplete": watch.watchers_incomplete,
        "watchers_failed": watch.watchers_failed,
        "server_rss_after_mb": rss_after.map(round3),
        "load_average_start": load_before,
        "load_average_end": load_average(),
    });
    println!("{result}");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), Some(50.0));
        assert_eq!(percentile(&samples, 0.99), Some(99.0));
        assert_eq!(percentile(&samples, 1.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        // With 50 samples p99 is the largest: one slow list out of 50 shows.
        let fifty: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&fifty, 0.99), Some(50.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn status_field_in_kb() {
        let status = "Name:\trkube\nVmPeak:\t  123456 kB\nVmRSS:\t   20480 kB\nVmRSSx:\t1 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(20480));
        assert_eq!(parse_status_kb(status, "VmHWM"), None);
    }
}
