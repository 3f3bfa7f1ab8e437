//! A real `rkube server` process for the controller-manager tests (`rollout.rs`, `leader.rs`): a free loopback
//! port, a temporary data dir, a kube-rs client from the kubeconfig it writes, and kubectl pointed at it.
//! Needs `target/debug/rkube` (`cargo build -p rkube --bin rkube`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::time::{Instant, sleep};

pub const DEADLINE: Duration = Duration::from_secs(90);

/// The workspace's `rkube` binary (`$CARGO_TARGET_DIR` or `target/`, debug profile).
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

/// An `rkube server` on a free loopback port in a temporary data dir; killed and removed on drop.
pub struct Server {
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rkube server");
        Server { child, dir }
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
