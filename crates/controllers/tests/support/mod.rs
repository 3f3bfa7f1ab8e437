//! Shared by the cluster-controller integration tests: a real `rkube server` process on a free loopback port
//! (which runs the controller manager with every controller, leader-elected), optionally a second controller
//! manager in this process with test-only settings, and waiting on conditions with a deadline.
//! Needs `target/debug/rkube` (`cargo build -p rkube --bin rkube`).

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rkube_controllers::ControllerOptions;
use tokio::time::{Instant, sleep};

pub const DEADLINE: Duration = Duration::from_secs(90);

fn rkube_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(workspace.join("target"));
    let bin = target.join("debug").join("rkube");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p rkube --bin rkube` first",
        bin.display()
    );
    bin
}

/// An `rkube server` in a temporary data dir; killed and removed on drop.
pub struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Start with extra `rkube server` flags (e.g. `--node-monitor-grace-period 3s`).
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(rkube_binary())
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rkube server");
        Server { child, dir }
    }

    /// Kill the server (no graceful shutdown, as a crash) and start it again on the same data dir with `extra`
    /// flags; the kubeconfig is removed first so [`Server::client`] waits for the new process's.
    pub fn restart_with(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.kubeconfig());
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        self.child = Command::new(rkube_binary())
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--disable-agent",
                "--data-dir",
            ])
            .arg(self.dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rkube server");
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A client from the written kubeconfig, once the API answers.
    pub async fn client(&mut self) -> Client {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < DEADLINE,
                "server not ready in time:\n{}",
                self.log()
            );
            if let Some(status) = self.child.try_wait().expect("server status") {
                panic!("server exited with {status}:\n{}", self.log());
            }
            if let Ok(kc) = Kubeconfig::read_from(self.kubeconfig())
                && let Ok(config) = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await
                && let Ok(client) = Client::try_from(config)
                && Api::<Namespace>::all(client.clone()).get("default").await.is_ok()
            {
                return client;
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Run the real kubectl against the server; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The controller manager running in this process; stopped on drop.
pub struct Manager {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), rkube_controllers::Error>>,
}

impl Manager {
    /// Run the manager with `options` (without leader election, beside the server's own: only for settings
    /// the server has no flag for, with controllers that tolerate a twin).
    pub fn start_with(client: Client, options: ControllerOptions) -> Manager {
        let options = ControllerOptions {
            leader_election: false,
            ..options
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(rkube_controllers::run(client, options, async {
            let _ = stopped.await;
        }));
        Manager {
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Poll `probe` until it returns `Some`, or panic after [`DEADLINE`] with `what` and the last observation.
pub async fn wait_for<T, O, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, O>>,
    O: std::fmt::Debug,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > DEADLINE => {
                panic!("timed out waiting for {what}; last seen: {last:?}")
            }
            Err(_) => sleep(Duration::from_millis(100)).await,
        }
    }
}
