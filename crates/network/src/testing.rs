//! Throw-away test networks: "nodes" as network namespaces on an underlay bridge, for the tests of this crate,
//! the service proxy and the end-to-end suite (NETWORKING.md §7).
//!
//! ```text
//!   netns rkt-t<pid>-<rand>-u (underlay, "uplink")      netns rkt-t<pid>-<rand>-n1 … -nN (nodes)
//!   br0 172.31.R.254/24 ── n1 ═══ veth ═══ eth0 172.31.R.1/24, default via 172.31.R.254, ip_forward=1
//!                       ── n2 ═══ veth ═══ eth0 172.31.R.2/24, …
//! ```
//!
//! **Nothing touches the host namespace:** every `ip` call carries `-n <our netns>` or runs under
//! `ip netns exec <our netns>`; veth pairs are created *inside* the underlay namespace with the peer placed
//! directly into the node namespace, so no link ever exists in the host namespace, not even for an instant;
//! sysctls are written from a thread that has `setns`-ed into the node namespace. The underlay has no route out
//! and does not forward, so the nodes' default route is a dead end inside the test: traffic cannot leave.
//!
//! Cleanup: dropping the [`TestNet`] kills the processes still running in its namespaces (never the test process
//! itself) and deletes the namespaces, which destroys every link in them. Namespaces of crashed runs are swept
//! at the next [`TestNet::new`]: only names of *our* pattern `rkt-t<pid>-<6 hex>-…` whose `<pid>` no longer runs.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sched::CloneFlags;

use crate::command::CommandError;

/// Where `ip netns` keeps its namespace files.
const NETNS_DIR: &str = "/run/netns";

/// Errors of building a test network.
#[derive(Debug, thiserror::Error)]
pub enum TestNetError {
    /// Not running as root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN).
    #[error("test networks need root (run the tests as root)")]
    NotRoot,
    /// An `ip` command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Opening a namespace or writing a sysctl failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// `setns` into a namespace failed.
    #[error("setns into {netns}: {source}")]
    Setns { netns: String, source: nix::Error },
}

/// One "node": a network namespace with `eth0` on the underlay.
#[derive(Debug, Clone)]
pub struct TestNode {
    /// The netns name (`ip netns exec <netns>`).
    pub netns: String,
    /// The node's address on the underlay.
    pub ip: Ipv4Addr,
    /// The node's uplink interface (`eth0`).
    pub uplink: String,
}

impl TestNode {
    /// Path of the namespace file (`/run/netns/<name>`), e.g. for `setns` or `CNI_NETNS`.
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// `ip netns exec <node> <program>`: a command that runs inside the node.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.netns, program)
    }

    /// Runs `f` on a fresh thread that has entered the node's network namespace (see [`run_in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in_netns(&self.netns_path(), f).expect("enter node netns")
    }

    /// Runs a future to completion on a current-thread tokio runtime inside the node's namespace.
    pub fn block_on<F: Future + Send>(&self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        block_on_in_netns(&self.netns_path(), fut).expect("enter node netns")
    }
}

/// A test network; see the module docs. Dropping it removes everything it made.
#[derive(Debug)]
pub struct TestNet {
    prefix: String,
    underlay: String,
    subnet: [u8; 3],
    nodes: Vec<TestNode>,
    /// Every namespace we created (underlay, nodes, extras), deleted in reverse order on drop.
    created: Mutex<Vec<String>>,
}

impl TestNet {
    /// `n_nodes` nodes on `172.31.<random>.0/24` (node K is `.K`, the underlay `.254`).
    pub fn new(n_nodes: usize) -> Result<Self, TestNetError> {
        let third: u8 = rand::random();
        Self::with_subnet(n_nodes, [172, 31, third])
    }

    /// `n_nodes` nodes on `<a.b.c>.0/24` (node K is `.K`, the underlay `.254`); at most 250 nodes.
    pub fn with_subnet(n_nodes: usize, subnet: [u8; 3]) -> Result<Self, TestNetError> {
        assert!(n_nodes <= 250, "a /24 holds at most 250 test nodes");
        if !nix::unistd::Uid::effective().is_root() {
            return Err(TestNetError::NotRoot);
        }
        sweep_stale();
        let prefix = format!(
            "rkt-t{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        );
        let net = TestNet {
            underlay: format!("{prefix}-u"),
            prefix,
            subnet,
            nodes: Vec::new(),
            created: Mutex::new(Vec::new()),
        };
        net.build(n_nodes)
    }

    fn build(mut self, n_nodes: usize) -> Result<Self, TestNetError> {
        let u = self.underlay.clone();
        self.add_netns_named(&u)?;
        let gw = self.underlay_ip().to_string();
        ip(&["-n", &u, "link", "set", "lo", "up"])?;
        ip(&["-n", &u, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &u, "addr", "add", &format!("{gw}/24"), "dev", "br0"])?;
        ip(&["-n", &u, "link", "set", "br0", "up"])?;
        run_in_netns(&netns_path(&u), || {
            crate::sysctl::ensure("net/ipv4/ip_forward", "0")
        })?
        .map_err(|source| TestNetError::Io {
            what: format!("{u}: ip_forward=0"),
            source,
        })?;
        for k in 1..=n_nodes {
            let ns = format!("{}-n{k}", self.prefix);
            self.add_netns_named(&ns)?;
            let port = format!("n{k}");
            let node_ip = Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], k as u8);
            ip(&[
                "-n", &u, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &u, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{node_ip}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "default", "via", &gw])?;
            run_in_netns(&netns_path(&ns), || -> std::io::Result<()> {
                crate::sysctl::ensure("net/ipv4/ip_forward", "1")?;
                // Absent when br_netfilter is not loaded; the CNI code warns about that case.
                let _ = crate::sysctl::ensure("net/bridge/bridge-nf-call-iptables", "1");
                Ok(())
            })?
            .map_err(|source| TestNetError::Io {
                what: format!("{ns}: sysctls"),
                source,
            })?;
            self.nodes.push(TestNode {
                netns: ns,
                ip: node_ip,
                uplink: "eth0".into(),
            });
        }
        Ok(self)
    }

    fn add_netns_named(&self, name: &str) -> Result<(), TestNetError> {
        ip(&["netns", "add", name])?;
        self.created.lock().expect("lock").push(name.to_string());
        Ok(())
    }

    /// The nodes, in order (`nodes()[0]` is `…-n1` at `.1`).
    pub fn nodes(&self) -> &[TestNode] {
        &self.nodes
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    /// The underlay namespace: a convenient "client outside the nodes" on the same L2 segment.
    pub fn underlay(&self) -> &str {
        &self.underlay
    }

    /// The underlay's address (`.254`), the nodes' default gateway.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 254)
    }

    /// The unique prefix of this network's namespace names (`rkt-t<pid>-<rand>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates an extra, empty namespace `<prefix>-<suffix>` (lo up), e.g. a pod sandbox; deleted on drop.
    /// Returns its name; its file is [`netns_path`] of that.
    pub fn add_netns(&self, suffix: &str) -> Result<String, TestNetError> {
        let name = format!("{}-{suffix}", self.prefix);
        self.add_netns_named(&name)?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Cuts node `i` (0-based) off the underlay, as a pulled cable would: its bridge port goes down, the node
    /// keeps running and keeps its addresses.
    pub fn disconnect(&self, i: usize) -> Result<(), TestNetError> {
        ip(&[
            "-n",
            &self.underlay,
            "link",
            "set",
            &format!("n{}", i + 1),
            "down",
        ])?;
        Ok(())
    }

    /// Plugs node `i` (0-based) back in after [`TestNet::disconnect`].
    pub fn reconnect(&self, i: usize) -> Result<(), TestNetError> {
        ip(&["-n", &self.underlay, "link", "set", &format!("n{}", i + 1), "up"])?;
        Ok(())
    }

    /// Deletes an extra namespace early (e.g. after CNI DEL, as a runtime would); no error if already gone.
    pub fn remove_netns(&self, name: &str) {
        self.created.lock().expect("lock").retain(|n| n != name);
        delete_netns(name);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names.iter().rev() {
            delete_netns(name);
        }
    }
}

/// `/run/netns/<name>`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// `ip netns exec <netns> <program>`.
pub fn command_in(netns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(program);
    cmd
}

/// Runs `f` on a new thread that first enters the network namespace at `netns`. Sockets it opens, sysctls it
/// writes and processes it spawns belong to that namespace; the thread ends with `f`, so the namespace switch
/// never leaks into other threads. (Work `f` hands to *other* threads — e.g. `tokio::spawn_blocking` — runs in
/// the namespace of those threads instead.)
pub fn run_in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, TestNetError> {
    let file = std::fs::File::open(netns).map_err(|source| TestNetError::Io {
        what: format!("open {}", netns.display()),
        source,
    })?;
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| TestNetError::Setns {
                netns: netns.display().to_string(),
                source,
            })?;
            Ok(f())
        });
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// [`run_in_netns`] with a current-thread tokio runtime (timers and child processes enabled) around `fut`.
pub fn block_on_in_netns<F: Future + Send>(netns: &Path, fut: F) -> Result<F::Output, TestNetError>
where
    F::Output: Send,
{
    run_in_netns(netns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(fut)
    })
}

/// A TCP server inside a namespace that answers every connection with the client's address as it sees it
/// (`"10.42.1.5:41234\n"`) and closes: shows reachability *and* whether the source IP survived the path.
/// Stops when dropped.
#[derive(Debug)]
pub struct PeerEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerEchoServer {
    /// Listens on `bind` (port 0 picks a free port) inside `netns`.
    pub fn start(netns: &Path, bind: SocketAddr) -> Result<Self, TestNetError> {
        let io = |what: &str, source| TestNetError::Io {
            what: what.to_string(),
            source,
        };
        // The socket belongs to the namespace it was created in, whichever thread uses it later.
        let listener = run_in_netns(netns, || TcpListener::bind(bind))?.map_err(|e| io("bind", e))?;
        let addr = listener.local_addr().map_err(|e| io("local_addr", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io("set_nonblocking", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(format!("{peer}\n").as_bytes());
                    }
                    // Polling keeps the server stoppable without waking it through the namespace.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(PeerEchoServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PeerEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `netns` to `to` and reads until the server closes; every step bounded by `timeout`.
pub fn tcp_read(netns: &Path, to: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let attempt = || -> std::io::Result<String> {
        let mut conn = TcpStream::connect_timeout(&to, timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        Ok(text)
    };
    run_in_netns(netns, attempt).map_err(std::io::Error::other)?
}

fn ip(args: &[&str]) -> Result<String, CommandError> {
    crate::command::ip_blocking(args)
}

/// Kills what still runs in the namespace (never ourselves), then deletes it.
fn delete_netns(name: &str) {
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        let me = std::process::id();
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            if pid as u32 != me {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    if let Err(e) = ip(&["netns", "del", name])
        && netns_path(name).exists()
    {
        eprintln!("testnet: cannot delete netns {name}: {e}");
    }
}

/// Whether `name` is one of ours (`rkt-t<pid>-<6 hex>-…`) and its creating process is gone.
fn is_stale(name: &str, pid_alive: impl Fn(u32) -> bool) -> bool {
    let Some(rest) = name.strip_prefix("rkt-t") else {
        return false;
    };
    let mut parts = rest.splitn(3, '-');
    let (Some(pid), Some(rand), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    rand.len() == 6 && rand.bytes().all(|b| b.is_ascii_hexdigit()) && !tail.is_empty() && !pid_alive(pid)
}

/// Deletes namespaces left by crashed runs of these tests (and only those; see [`is_stale`]).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_stale(&name, |pid| Path::new(&format!("/proc/{pid}")).exists()) {
            eprintln!("testnet: removing stale netns {name}");
            // The runs that made them are gone; what still runs inside (if anything) is left alone.
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_pattern_with_a_dead_pid_is_stale() {
        let dead = |_| false;
        let alive = |_| true;
        assert!(is_stale("rkt-t4242-00ab12-n1", dead));
        assert!(is_stale("rkt-t4242-00ab12-u", dead));
        assert!(!is_stale("rkt-t4242-00ab12-n1", alive));
        assert!(!is_stale("rkt-abc123", dead), "another helper's rkt- name");
        assert!(!is_stale("rkt-t4242-zzzzzz-n1", dead));
        assert!(!is_stale("rkt-t4242-00ab12", dead));
        assert!(!is_stale("cni-1234", dead));
    }
}
