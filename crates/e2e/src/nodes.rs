//! Clusters of real nodes: `rkube server` (with its embedded agent) and `rkube agent`s, each in its own
//! network namespace on a test underlay ([`crate::netns::TestNet`]), with per-node data dirs in a temp dir,
//! running real containers from images in a real `docker-registry` ([`crate::images`]). kubectl runs inside
//! the server's node namespace (the API server listens there; nothing listens in the host namespace).
//!
//! Teardown ([`NodeCluster::teardown`], also on drop) leaves nothing on the host: it stops the processes,
//! deletes the runc containers of every node's runc root, kills the shims (processes naming our data dirs),
//! unmounts everything under the data dirs, removes the nodes' cgroups (`rkube-<node-name>` in every
//! hierarchy), the `/var/log/pods` directories of the pods the cluster ran, and the namespaces. Leftovers of a
//! crashed run (its pid is in the names) are swept when the next cluster starts.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::images::Registry;
use crate::netns::{self, TestNet};
use crate::{Output, Stream, rkube_binary, wait_until};

/// How long the server and the nodes get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped process gets after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Prefix of the data dirs (with the pid, for the stale sweep).
const DIR_PREFIX: &str = "rkube-e2e-nodes-";
/// The registry's port (inside a test namespace, so a fixed port cannot collide).
const REGISTRY_PORT: u16 = 5000;

/// Where the test registry runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryPlace {
    /// On 127.0.0.1 inside the server's node namespace: pulled over plain HTTP as a loopback registry.
    Loopback,
    /// On the uplink's underlay address, reachable from every node: agents get `--insecure-registry`.
    Underlay,
}

/// The pod-UID watch's kubectl ([`NodeCluster::watch_pod_uids`]).
#[derive(Default)]
struct UidWatch {
    pid: Option<u32>,
    stopped: bool,
}

/// A running cluster of real nodes. Node 0 runs `rkube server`; nodes 1.. run `rkube agent`.
pub struct NodeCluster {
    dir: tempfile::TempDir,
    registry: Option<Registry>,
    registry_host: String,
    procs: Vec<Option<Child>>,
    names: Vec<String>,
    pod_uids: Arc<Mutex<BTreeSet<String>>>,
    uid_watch: Arc<Mutex<UidWatch>>,
    server_args: Vec<String>,
    binary: PathBuf,
    torn_down: bool,
    // Dropped last: everything above lives in these namespaces.
    net: TestNet,
}

impl NodeCluster {
    /// One node (server with its embedded agent) and a loopback registry.
    pub fn single() -> NodeCluster {
        NodeCluster::start(1, RegistryPlace::Loopback, &[])
    }

    /// `nodes` nodes, the registry on the underlay, extra `rkube server` flags.
    pub fn start(nodes: usize, place: RegistryPlace, server_args: &[&str]) -> NodeCluster {
        NodeCluster::start_using(&rkube_binary(), nodes, place, server_args)
    }

    /// [`NodeCluster::start`] with another `rkube` binary (benchmarks run a release build).
    pub fn start_using(
        binary: &Path,
        nodes: usize,
        place: RegistryPlace,
        server_args: &[&str],
    ) -> NodeCluster {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "real-node tests need root (containers, namespaces, cgroups)"
        );
        sweep_stale();
        let net = TestNet::new(nodes);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("temp dir");
        let names = (0..nodes)
            .map(|i| format!("e2e-{}-n{}", net.id, i + 1))
            .collect::<Vec<_>>();
        let (registry, registry_host) = match place {
            RegistryPlace::Loopback => {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, REGISTRY_PORT));
                (Registry::start(&net.nodes[0], addr), addr.to_string())
            }
            RegistryPlace::Underlay => {
                let addr = SocketAddr::from((net.uplink_ip(), REGISTRY_PORT));
                (Registry::start(&net.uplink, addr), addr.to_string())
            }
        };
        let mut cluster = NodeCluster {
            dir,
            registry: Some(registry),
            registry_host,
            procs: (0..nodes).map(|_| None).collect(),
            names,
            pod_uids: Arc::default(),
            uid_watch: Arc::default(),
            server_args: server_args.iter().map(|s| s.to_string()).collect(),
            binary: binary.to_path_buf(),
            torn_down: false,
            net,
        };
        cluster.start_node(0);
        cluster.wait_api();
        cluster.watch_pod_uids();
        for i in 1..nodes {
            cluster.start_node(i);
        }
        cluster.wait_nodes_ready();
        cluster
    }

    pub fn net(&self) -> &TestNet {
        &self.net
    }

    /// Node `i`'s name.
    pub fn node_name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Node `i`'s network namespace.
    pub fn node_ns(&self, i: usize) -> &str {
        &self.net.nodes[i]
    }

    /// Node `i`'s address on the underlay (its InternalIP).
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.net.node_ip(i)
    }

    /// Node `i`'s data dir (`--data-dir`).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}", i + 1))
    }

    /// The admin kubeconfig (server URL on the server node's loopback).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir(0).join("kubeconfig.yaml")
    }

    /// A test image's full reference in the cluster's registry (`images::BUSYBOX` …).
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.registry_host)
    }

    /// The registry's `HOST:PORT`.
    pub fn registry_host(&self) -> &str {
        &self.registry_host
    }

    /// A scratch file for manifests.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("writing a scratch file");
        p
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.log", i + 1))
    }

    /// The last lines node `i`'s process logged (for failure messages).
    pub fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn start_node(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("node log");
        let mut cmd = netns::command_in(self.node_ns(i), &self.binary);
        if i == 0 {
            // A kubeconfig left by an earlier start must not be mistaken for this one.
            let _ = std::fs::remove_file(self.kubeconfig());
            cmd.arg("server").args(["--listen", "0.0.0.0:6443"]);
        } else {
            let token = std::fs::read_to_string(self.data_dir(0).join("token")).expect("server token");
            cmd.arg("agent")
                .arg("--server")
                .arg(format!("https://{}:6443", self.node_ip(0)))
                .arg("--token")
                .arg(token.trim());
        }
        cmd.arg("--data-dir")
            .arg(self.data_dir(i))
            .arg("--node-name")
            .arg(&self.names[i])
            .arg("--node-ip")
            .arg(self.node_ip(i).to_string());
        if self.registry_host != SocketAddr::from((Ipv4Addr::LOCALHOST, REGISTRY_PORT)).to_string() {
            cmd.arg("--insecure-registry").arg(&self.registry_host);
        }
        if i == 0 {
            cmd.args(&self.server_args);
        }
        cmd.env("RKUBE_LOG", "info,rkube_kubelet=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        self.procs[i] = Some(cmd.spawn().expect("starting rkube"));
    }

    fn wait_api(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.procs[0].as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "rkube server exited with {status} before becoming ready:\n{}",
                    self.log_tail(0)
                );
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.code == Some(0) && out.stdout.trim() == "ok" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "rkube server not ready after {READY_TIMEOUT:?}:\n{}",
                self.log_tail(0)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every node of the cluster is registered and Ready.
    pub fn wait_nodes_ready(&self) {
        wait_until("every node Ready", READY_TIMEOUT, |last| {
            let out = self.kubectl(&["get", "nodes", "-o", "json"]);
            *last = format!("{}{}", out.stdout, out.stderr);
            let nodes = serde_json::from_str::<serde_json::Value>(&out.stdout).ok()?;
            let ready: BTreeSet<String> = nodes["items"]
                .as_array()?
                .iter()
                .filter(|n| {
                    n["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                })
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            let missing: Vec<&String> = self.names.iter().filter(|n| !ready.contains(*n)).collect();
            if missing.is_empty() {
                return Some(());
            }
            *last += &format!("\nnot Ready: {missing:?}\nserver log:\n{}", self.log_tail(0));
            None
        })
    }

    /// Records the UID of every pod the cluster runs, so teardown can remove their `/var/log/pods` dirs.
    /// The watch is started again whenever it ends (the server may close long watches).
    fn watch_pod_uids(&mut self) {
        let base = self.kubectl_base();
        let uids = self.pod_uids.clone();
        let watch = self.uid_watch.clone();
        std::thread::spawn(move || {
            loop {
                let mut cmd = netns::command_in(&base.0, "kubectl");
                cmd.args(&base.1)
                    .args([
                        "get",
                        "pods",
                        "-A",
                        "--watch",
                        "--no-headers",
                        "-o",
                        "custom-columns=UID:.metadata.uid",
                    ])
                    .env("HOME", &base.2)
                    .env_remove("KUBECONFIG")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null());
                let mut child = {
                    let mut slot = watch.lock().expect("watch");
                    if slot.stopped {
                        return;
                    }
                    let Ok(mut child) = cmd.spawn() else { return };
                    let stdout = child.stdout.take();
                    slot.pid = Some(child.id());
                    (child, stdout)
                };
                if let Some(stdout) = child.1.take() {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        let uid = line.trim().to_string();
                        if !uid.is_empty() && uid != "<none>" {
                            uids.lock().expect("uids").insert(uid);
                        }
                    }
                }
                // Forget the pid before reaping it, so teardown never signals a reused pid.
                watch.lock().expect("watch").pid = None;
                let _ = child.0.wait();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    /// What every kubectl of this cluster runs with: (namespace, flags, HOME).
    fn kubectl_base(&self) -> (String, Vec<std::ffi::OsString>, PathBuf) {
        let flags = vec![
            "--kubeconfig".into(),
            self.kubeconfig().into_os_string(),
            "--cache-dir".into(),
            self.dir.path().join("kube-cache").into_os_string(),
        ];
        (self.node_ns(0).to_string(), flags, self.dir.path().to_path_buf())
    }

    /// `kubectl --kubeconfig … ARGS` inside the server's node namespace.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let (ns, flags, home) = self.kubectl_base();
        let mut cmd = netns::command_in(&ns, "kubectl");
        cmd.args(flags)
            .args(args)
            .env("HOME", home)
            .env_remove("KUBECONFIG");
        cmd
    }

    /// Runs kubectl and returns what it printed.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin_opt(args, None)
    }

    /// Runs kubectl with `input` on stdin (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        self.kubectl_stdin_opt(args, Some(input))
    }

    fn kubectl_stdin_opt(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut with_timeout = vec!["--request-timeout", "60s"];
        with_timeout.extend_from_slice(args);
        crate::run_with_stdin(self.kubectl_command(&with_timeout), input)
    }

    /// A long-running kubectl (`logs -f`, `get -w`) whose lines can be awaited.
    pub fn kubectl_stream(&self, args: &[&str]) -> Stream {
        Stream::spawn(self.kubectl_command(args))
    }

    /// A `jsonpath` query on one object (`kubectl get KIND NAME -o jsonpath=…`); `None` when it fails.
    pub fn jsonpath(&self, kind: &str, name: &str, path: &str) -> Option<String> {
        let out = self.kubectl(&["get", kind, name, "-o", &format!("jsonpath={path}")]);
        (out.code == Some(0)).then_some(out.stdout)
    }

    /// Waits until pod `name` is Running with every container ready; returns its pod IP.
    #[track_caller]
    pub fn wait_pod_ready(&self, name: &str, timeout: Duration) -> String {
        wait_until(&format!("pod {name} Running and Ready"), timeout, |last| {
            let out = self.kubectl(&["get", "pod", name, "-o", "json"]);
            *last = format!("{}{}\nserver log:\n{}", out.stdout, out.stderr, self.log_tail(0));
            let pod: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            let ready = pod["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (pod["status"]["phase"] == "Running" && ready)
                .then(|| pod["status"]["podIP"].as_str().map(str::to_string))
                .flatten()
        })
    }

    /// `busybox wget` from inside node `i`'s namespace.
    pub fn http_get(&self, i: usize, url: &str) -> Output {
        netns::http_get(self.node_ns(i), url)
    }

    /// The process id of node `i`'s `rkube` (nsenter execs it, so this is rkube itself).
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Child::id)
    }

    /// Stops node `i`'s process (SIGTERM, then SIGKILL); containers keep running. Returns whether it
    /// exited cleanly by itself.
    pub fn stop_node(&mut self, i: usize) -> bool {
        stop(self.procs[i].take())
    }

    /// Kills node `i`'s process with SIGKILL (containers keep running).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i`'s process again on the same data dir.
    pub fn restart_node(&mut self, i: usize) {
        self.stop_node(i);
        self.start_node(i);
        if i == 0 {
            self.wait_api();
        }
    }

    /// Everything of this cluster still on the host (mounts, cgroups, processes, namespaces, pod log
    /// dirs); empty after a complete teardown.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let root = self.dir.path();
        found.extend(
            mounts_under(root)
                .into_iter()
                .map(|m| format!("mount {}", m.display())),
        );
        for name in &self.names {
            found.extend(
                cgroup_dirs(name)
                    .into_iter()
                    .map(|d| format!("cgroup {}", d.display())),
            );
        }
        found.extend(processes_naming(root).into_iter().map(|p| format!("process {p}")));
        let mine = format!("{}{}-", netns::PREFIX, self.net.id);
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for e in dir.filter_map(Result::ok) {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&mine) && !self.net.nodes.contains(&n) && n != self.net.uplink {
                    found.push(format!("netns {n}"));
                }
            }
        }
        let uids = self.pod_uids.lock().expect("uids").clone();
        found.extend(
            pod_log_dirs(&uids)
                .into_iter()
                .map(|d| format!("pod logs {}", d.display())),
        );
        found
    }

    /// Stops everything and removes what the cluster left on the host; returns what could not be removed
    /// (see [`NodeCluster::leftovers`]), also checking the network namespaces are gone.
    pub fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        {
            let mut watch = self.uid_watch.lock().expect("watch");
            watch.stopped = true;
            if let Some(pid) = watch.pid.take() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        for i in (0..self.procs.len()).rev() {
            stop(self.procs[i].take());
        }
        for i in 0..self.names.len() {
            let runc_root = self.data_dir(i).join("agent").join("runc");
            delete_runc_containers(&runc_root);
        }
        let root = self.dir.path().to_path_buf();
        for pid in processes_naming(&root) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        unmount_under(&root);
        for name in &self.names {
            remove_cgroups(name);
        }
        let uids = self.pod_uids.lock().expect("uids").clone();
        remove_pod_logs(&uids);
        self.registry.take();
        let mut left = self.leftovers();
        let namespaces: Vec<String> = self.net.nodes.iter().chain([&self.net.uplink]).cloned().collect();
        // The namespaces go with the TestNet; delete them now so the check below sees the final state.
        for ns in &namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        left.extend(
            namespaces
                .iter()
                .filter(|ns| netns::netns_path(ns).exists())
                .map(|ns| format!("netns {ns}")),
        );
        left
    }

    /// The pod UIDs seen so far.
    pub fn pod_uids(&self) -> BTreeSet<String> {
        self.pod_uids.lock().expect("uids").clone()
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("rkube-e2e: left on the host after teardown: {left:?}");
        }
    }
}

fn stop(child: Option<Child>) -> bool {
    let Some(mut child) = child else {
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

/// `runc --root ROOT delete --force` for every container runc knows there.
fn delete_runc_containers(root: &Path) {
    if !root.exists() {
        return;
    }
    let Ok(out) = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
    else {
        return;
    };
    for id in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", id.trim()])
            .output();
    }
}

/// Pids of processes whose command line names a path under `root` (shims, agents), never our own.
fn processes_naming(root: &Path) -> Vec<i32> {
    let needle = root.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Mount points at or below `root`, deepest first (from `/proc/self/mountinfo`).
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

fn unmount_under(root: &Path) {
    // A mount can hide another below it; repeat until nothing is left or nothing changes.
    for _ in 0..5 {
        let mounts = mounts_under(root);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The cgroup directories of node `name` (`rkube-<name>`) in every mounted hierarchy.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let parent = format!("rkube-{name}");
    let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .map(|e| e.path().join(&parent))
        .filter(|p| p.is_dir())
        .collect();
    // cgroup v2 alone: the node's directory sits at the top.
    let top = Path::new("/sys/fs/cgroup").join(&parent);
    if top.is_dir() && !found.contains(&top) {
        found.push(top);
    }
    found
}

/// Kills what still runs in node `name`'s cgroups and removes them, deepest first.
fn remove_cgroups(name: &str) {
    for dir in cgroup_dirs(name) {
        let mut all = Vec::new();
        collect_dirs(&dir, &mut all);
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in &all {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        for d in &all {
            // A cgroup whose last process just died can take a moment to become removable.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// `/var/log/pods/<ns>_<pod>_<uid>` directories of these pods.
fn pod_log_dirs(uids: &BTreeSet<String>) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/var/log/pods") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.rsplit_once('_').is_some_and(|(_, uid)| uids.contains(uid))
        })
        .map(|e| e.path())
        .collect()
}

fn remove_pod_logs(uids: &BTreeSet<String>) {
    let dirs = pod_log_dirs(uids);
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    // kubelet-style `/var/log/containers` links into the removed dirs.
    if let Ok(links) = std::fs::read_dir("/var/log/containers") {
        for l in links.filter_map(Result::ok) {
            if let Ok(target) = std::fs::read_link(l.path())
                && dirs.iter().any(|d| target.starts_with(d))
            {
                let _ = std::fs::remove_file(l.path());
            }
        }
    }
}

/// Removes what crashed earlier runs of this suite left: data dirs (and their mounts, runc containers and
/// shims) whose test process is gone, and their nodes' cgroups.
pub fn sweep_stale() {
    netns::sweep_stale();
    let tmp = std::env::temp_dir();
    let Ok(dir) = std::fs::read_dir(&tmp) else {
        return;
    };
    for e in dir.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let root = e.path();
        if let Ok(nodes) = std::fs::read_dir(&root) {
            for n in nodes.filter_map(Result::ok) {
                delete_runc_containers(&n.path().join("agent").join("runc"));
            }
        }
        for p in processes_naming(&root) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        unmount_under(&root);
        let _ = std::fs::remove_dir_all(&root);
    }
    // Node cgroups of dead runs: rkube-e2e-<pid>-…
    if let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup") {
        let mut names = BTreeSet::new();
        for h in dir.filter_map(Result::ok) {
            if let Ok(children) = std::fs::read_dir(h.path()) {
                for c in children.filter_map(Result::ok) {
                    let n = c.file_name().to_string_lossy().into_owned();
                    if let Some(pid) = n
                        .strip_prefix("rkube-e2e-")
                        .and_then(|r| r.split('-').next())
                        .and_then(|p| p.parse::<u32>().ok())
                        && !Path::new(&format!("/proc/{pid}")).exists()
                    {
                        names.insert(n["rkube-".len()..].to_string());
                    }
                }
            }
        }
        for n in names {
            remove_cgroups(&n);
        }
    }
}
