//! Test-made network namespaces: an underlay bridge in an "uplink" namespace and one namespace per node
//! joined to it by a veth, each node with an address on the underlay and a default route through the uplink
//! (which leads nowhere: nothing the tests send can leave the test's own namespaces). Nothing is created in
//! the host namespace. Names carry the test process id, so leftovers of a crashed run are recognised and
//! swept ([`sweep_stale`]).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;

use crate::Output;

/// Prefix of every namespace this crate creates.
pub const PREFIX: &str = "rkt-e2e-";
/// The underlay: the uplink is `.1`, node `i` (from 1) is `.10+i`.
pub const UNDERLAY_PREFIX: [u8; 3] = [172, 30, 0];

/// Runs `ip ARGS`, panicking with its stderr when it fails.
#[track_caller]
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// A command that runs `program` inside the network namespace `ns` only (the mount namespace stays the
/// host's, unlike `ip netns exec`, so mounts the agent makes outlive it and are visible to its successor).
pub fn command_in(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(ns).display()))
        .arg("--")
        .arg(program);
    cmd
}

/// Runs `f` on a thread that has entered the network namespace `ns` (only that thread moves).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = netns_path(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
        f()
    })
    .join()
    .expect("thread in a test namespace panicked")
}

/// An HTTP/1.0 GET of `url` (`http://IP:PORT/path`) from inside `ns`, 5 s to connect and 5 s per read:
/// what a client on that node sees. `code` is `Some(0)` for a 200 answer (body in `stdout`), `Some(1)` for
/// any other answer or failure (described in `stderr`).
pub fn http_get(ns: &str, url: &str) -> Output {
    let url = url.to_string();
    in_netns(ns, move || match get(&url) {
        Ok((200, body)) => Output {
            stdout: body,
            stderr: String::new(),
            code: Some(0),
        },
        Ok((status, body)) => Output {
            stdout: body,
            stderr: format!("HTTP {status}"),
            code: Some(1),
        },
        Err(e) => Output {
            stdout: String::new(),
            stderr: e,
            code: Some(1),
        },
    })
}

fn get(url: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr: std::net::SocketAddr = authority.parse().map_err(|e| format!("{authority}: {e}"))?;
    let timeout = std::time::Duration::from_secs(5);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// An underlay with an uplink namespace and `nodes` node namespaces. Dropping it deletes them all.
pub struct TestNet {
    pub id: String,
    pub uplink: String,
    pub nodes: Vec<String>,
}

impl TestNet {
    pub fn new(nodes: usize) -> TestNet {
        sweep_stale();
        let id = format!("{}-{}", std::process::id(), next_id());
        let uplink = format!("{PREFIX}{id}-up");
        let mut net = TestNet {
            id: id.clone(),
            uplink: uplink.clone(),
            nodes: Vec::new(),
        };
        ip(&["netns", "add", &uplink]);
        ip(&["-n", &uplink, "link", "set", "lo", "up"]);
        ip(&["-n", &uplink, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &uplink,
            "addr",
            "add",
            &format!("{}/24", net.uplink_ip()),
            "dev",
            "br0",
        ]);
        ip(&["-n", &uplink, "link", "set", "br0", "up"]);
        sysctl(&uplink, "net/ipv4/ip_forward", "1");
        for i in 1..=nodes {
            let ns = format!("{PREFIX}{id}-n{i}");
            ip(&["netns", "add", &ns]);
            net.nodes.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("v{i}");
            ip(&[
                "-n", &uplink, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["-n", &uplink, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.node_ip(i - 1)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &net.uplink_ip().to_string(),
            ]);
            sysctl(&ns, "net/ipv4/ip_forward", "1");
            // Only present once br_netfilter is loaded; the CNI bridge needs it for pod → ClusterIP → pod.
            let _ = try_sysctl(&ns, "net/bridge/bridge-nf-call-iptables", "1");
        }
        net
    }

    /// The uplink's address on the underlay (where a shared registry listens).
    pub fn uplink_ip(&self) -> Ipv4Addr {
        let [a, b, c] = UNDERLAY_PREFIX;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Node `index`'s (from 0) address on the underlay.
    pub fn node_ip(&self, index: usize) -> Ipv4Addr {
        let [a, b, c] = UNDERLAY_PREFIX;
        Ipv4Addr::new(a, b, c, 11 + index as u8)
    }

    /// Cuts node `index` off the underlay (its veth goes down): what a lost machine looks like.
    pub fn cut_off(&self, index: usize) {
        ip(&[
            "-n",
            &self.uplink,
            "link",
            "set",
            &format!("v{}", index + 1),
            "down",
        ]);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain([&self.uplink]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn sysctl(ns: &str, key: &str, value: &str) {
    assert!(try_sysctl(ns, key, value), "setting {key} in {ns}");
}

/// Writes `/proc/sys/KEY` from inside `ns` (network sysctls are per namespace, chosen by the writer's).
fn try_sysctl(ns: &str, key: &str, value: &str) -> bool {
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    in_netns(ns, move || std::fs::write(path, value).is_ok())
}

/// Deletes `rkt-e2e-<pid>-…` namespaces whose test process is gone (a crashed or killed earlier run).
pub fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// Namespaces of this process that still exist (for the "nothing left" check).
pub fn own_namespaces() -> Vec<String> {
    let mine = format!("{PREFIX}{}-", std::process::id());
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&mine))
                .collect()
        })
        .unwrap_or_default()
}

/// A number unique within this process, so concurrent tests never share names.
pub(crate) fn next_id() -> u32 {
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
