//! rkube-e2e: end-to-end tests against a real `rkube server` process, driven the way users drive a cluster —
//! the real `kubectl`, the official Python client, kube-rs.
//!
//! Start at [`Cluster::start`]: it runs `target/debug/rkube server` (built beforehand by
//! `cargo build --workspace --bins`, which `scripts/test` does) in a temporary data directory on a free
//! loopback port, with the embedded store or a real etcd ([`Datastore`]), waits for `/readyz`, and stops
//! the server when dropped. [`Cluster::kubectl`] runs kubectl against it and returns what the user would
//! see ([`Output`]). The tests live in `tests/`.
//!
//! Those clusters run simulated nodes only (`--disable-agent`). For real containers, start at
//! [`nodes::NodeCluster`]: a server and agents each in a test-made network namespace ([`netns`]), pulling
//! busybox-based test images ([`images`]) from a real `docker-registry`.

pub mod images;
pub mod netns;
pub mod nodes;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rkube_store::testing::EtcdServer;

/// How long a server gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datastore {
    /// The embedded SQLite store under the data directory (the default).
    Embedded,
    /// A real etcd (`/usr/bin/etcd`) on a free loopback port, started for this cluster.
    Etcd,
}

/// What a command printed and how it exited.
#[derive(Clone, Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
}

impl Output {
    /// The stdout of a command that must have succeeded; panics with everything it printed otherwise.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// The stderr of a command that must have failed.
    #[track_caller]
    pub fn err(&self) -> &str {
        assert_ne!(
            self.code,
            Some(0),
            "command should have failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }
}

/// The `rkube` binary of this workspace (`$CARGO_TARGET_DIR` or `target/`, debug profile).
pub fn rkube_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let bin = target.join("debug").join("rkube");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A running single-server cluster in a temporary directory. Dropping it stops the server (SIGTERM, then
/// SIGKILL) and removes the directory and any etcd it started.
pub struct Cluster {
    dir: tempfile::TempDir,
    datastore: Datastore,
    etcd: Option<EtcdServer>,
    server: Option<Child>,
    url: String,
    /// Extra `rkube server` flags ([`Cluster::start_with`]).
    extra_args: Vec<String>,
    /// An etcd owned by someone else that this server uses ([`Cluster::start_on_etcd`]).
    shared_endpoint: Option<String>,
}

impl Cluster {
    /// Starts a server on `datastore` and waits until it is ready.
    pub fn start(datastore: Datastore) -> Cluster {
        Cluster::start_with(datastore, &[])
    }

    /// Starts a server on `datastore` with extra `rkube server` flags (`--node-monitor-grace-period 5s` …).
    pub fn start_with(datastore: Datastore, args: &[&str]) -> Cluster {
        Cluster::start_inner(datastore, None, args)
    }

    /// Starts a server on an etcd that the caller owns (so several servers can share one datastore), with
    /// extra `rkube server` flags. Each server keeps its own data directory, PKI and kubeconfig.
    pub fn start_on_etcd(etcd: &EtcdServer, args: &[&str]) -> Cluster {
        Cluster::start_inner(Datastore::Etcd, Some(etcd.endpoint().to_string()), args)
    }

    fn start_inner(datastore: Datastore, shared_endpoint: Option<String>, args: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("rkube-e2e-")
            .tempdir()
            .expect("temp dir");
        let etcd = match datastore {
            Datastore::Embedded => None,
            Datastore::Etcd if shared_endpoint.is_some() => None,
            Datastore::Etcd => Some(EtcdServer::start().expect("starting etcd for the test")),
        };
        let mut cluster = Cluster {
            dir,
            datastore,
            etcd,
            server: None,
            url: String::new(),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            shared_endpoint,
        };
        cluster.spawn();
        cluster
    }

    /// Which store this cluster runs on.
    pub fn datastore(&self) -> Datastore {
        self.datastore
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("kubeconfig.yaml")
    }

    /// A kube-rs client with the admin kubeconfig. No waiting: the server answered `/readyz` (after
    /// creating the default namespaces) before [`Cluster::start`] returned.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("reading the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .expect("a client config from the kubeconfig");
        kube::Client::try_from(config).expect("a kube client")
    }

    /// The API server URL (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A scratch directory for the test's own files (manifests, scripts).
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// Writes `contents` to a scratch file and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.scratch().join(name);
        std::fs::write(&p, contents).expect("writing a scratch file");
        p
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last lines the server logged (for failure messages).
    pub fn server_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn spawn(&mut self) {
        let data = self.data_dir();
        // A kubeconfig left by an earlier run names an old port: wait for the new one.
        let _ = std::fs::remove_file(self.kubeconfig());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log");
        let mut cmd = Command::new(rkube_binary());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--node-name",
                "e2e-node",
            ])
            .env("RKUBE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        if let Some(etcd) = &self.etcd {
            cmd.arg("--datastore-endpoint").arg(etcd.endpoint());
        }
        if let Some(endpoint) = &self.shared_endpoint {
            cmd.arg("--datastore-endpoint").arg(endpoint);
        }
        cmd.args(&self.extra_args);
        self.server = Some(cmd.spawn().expect("starting rkube server"));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.server.as_mut().and_then(|s| s.try_wait().ok().flatten()) {
                panic!(
                    "rkube server exited with {status} before becoming ready:\n{}",
                    self.server_log_tail()
                );
            }
            if let Some(url) = self.read_server_url() {
                self.url = url;
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.code == Some(0) && out.stdout.trim() == "ok" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "rkube server not ready after {READY_TIMEOUT:?}:\n{}",
                self.server_log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read_server_url(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.kubeconfig()).ok()?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited in time. Returns whether it exited
    /// by itself, successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.server.take() else {
            return true;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Stops the server gracefully and starts it again on the same data and datastore.
    pub fn restart(&mut self) {
        assert!(
            self.stop(),
            "rkube server did not stop cleanly on SIGTERM:\n{}",
            self.server_log_tail()
        );
        self.spawn();
    }

    /// Kills the server with SIGKILL (no shutdown at all) and starts it again on the same data: what an
    /// acknowledged write must survive.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// The server's process id (`None` once stopped or killed).
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and leaves it down: what a crashed machine looks like to the others.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `rkube simulate-nodes` against this cluster: `count` nodes named `<prefix>-0 …`, until the
    /// returned handle is killed or dropped.
    pub fn simulate_nodes(&self, prefix: &str, count: usize) -> SimulatedNodes {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("sim-{prefix}.log")))
            .expect("simulator log");
        let child = Command::new(rkube_binary())
            .arg("simulate-nodes")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["--count", &count.to_string(), "--name-prefix", prefix])
            .env("RKUBE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting rkube simulate-nodes");
        SimulatedNodes { child: Some(child) }
    }

    /// Runs `kubectl --kubeconfig … ARGS`.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    /// Runs kubectl with `input` on its stdin (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        self.kubectl_with_stdin(args, Some(input))
    }

    /// Runs another kubectl binary (`kubectl.1.27` …) the same way as [`Cluster::kubectl`].
    pub fn kubectl_version(&self, program: &Path, args: &[&str]) -> Output {
        let cmd = self.kubectl_command(args);
        let mut versioned = Command::new(program);
        versioned
            .args(cmd.get_args())
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG");
        collect(
            versioned
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", program.display())),
        )
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            // Keep kubectl from reading or writing the user's ~/.kube.
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG");
        cmd
    }

    fn kubectl_with_stdin(&self, args: &[&str], input: Option<&str>) -> Output {
        run_with_stdin(self.kubectl_command(args), input)
    }

    /// Starts a long-running kubectl (`get -w`, `logs -f`) whose stdout lines can be awaited.
    pub fn kubectl_stream(&self, args: &[&str]) -> Stream {
        Stream::spawn(self.kubectl_command(args))
    }

    /// Runs any program with the cluster's kubeconfig in `KUBECONFIG` (the Python client's tests).
    pub fn run_with_kubeconfig(&self, program: &str, args: &[&str]) -> Output {
        let out = Command::new(program)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        collect(out)
    }
}

/// Runs `cmd` to completion, feeding it `input` on stdin (or no stdin at all), and collects its output.
pub(crate) fn run_with_stdin(mut cmd: Command, input: Option<&str>) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running kubectl");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("kubectl stdin");
        stdin.write_all(input.as_bytes()).expect("writing kubectl stdin");
    }
    collect(child.wait_with_output().expect("waiting for kubectl"))
}

fn collect(out: std::process::Output) -> Output {
    Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// The versioned kubectl binaries (`kubectl.1.27` … `kubectl.1.33`) installed beside the `kubectl`
/// dispatcher, oldest first; empty when kubectl is a plain binary.
pub fn versioned_kubectls() -> Vec<PathBuf> {
    let Ok(dispatcher) = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
    else {
        return Vec::new();
    };
    let path = PathBuf::from(String::from_utf8_lossy(&dispatcher.stdout).trim());
    let Some(dir) = path.parent().and_then(|d| std::fs::read_dir(d).ok()) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let minor = name.strip_prefix("kubectl.1.")?.parse().ok()?;
            Some((minor, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `rkube simulate-nodes` process ([`Cluster::simulate_nodes`]). Killed when dropped.
pub struct SimulatedNodes {
    child: Option<Child>,
}

impl SimulatedNodes {
    /// Kills the simulator with SIGKILL: its nodes stop heartbeating, as if their machines were lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SimulatedNodes {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Calls `probe` every 200 ms until it returns `Some`, and returns that; panics naming `what` (and the
/// last thing `probe` reported through `last`) when `timeout` passes first.
#[track_caller]
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut(&mut String) -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Some(found) = probe(&mut last) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running kubectl whose output is read line by line. Killed when dropped.
pub struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Stream {
    /// Starts `cmd` with its stdout read line by line.
    pub fn spawn(mut cmd: Command) -> Stream {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running kubectl");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("kubectl stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Stream {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the process to exit (up to `timeout`) and returns its exit code (`None` on timeout or
    /// signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
    /// Waits (up to `timeout`) for a line containing every one of `needles`, and returns it.
    #[track_caller]
    pub fn wait_for_line(&mut self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needles:?} within {timeout:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The next line (up to `timeout`), or `None` when none came or the process ended.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits a kubectl table into rows of whitespace-separated cells (header included). Cells with spaces
/// (like `2 (5m ago)`) are not split apart reliably; tests look those up by substring instead.
pub fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The row of a kubectl table whose first cell (or second, with a NAMESPACE column) is `name`.
#[track_caller]
pub fn row(text: &str, name: &str) -> Vec<String> {
    table(text)
        .into_iter()
        .find(|r| r.first().map(String::as_str) == Some(name) || r.get(1).map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{text}"))
}

/// Parses JSON printed by `kubectl … -o json`.
#[track_caller]
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}
