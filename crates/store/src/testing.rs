//! Real etcd processes for tests and benchmarks: [`EtcdServer`] (one member) and [`EtcdCluster`] (n members),
//! each on free loopback ports in a fresh temp dir, killed and removed on drop.
//!
//! They run `/usr/bin/etcd` (override with `RKUBE_ETCD_BIN`) with a 1 s watch progress-notify interval so
//! progress notifications are testable, and log to a file in the temp dir so test output stays readable.
//! Ports come from binding `127.0.0.1:0` and releasing the port; if etcd then loses the race for a port to
//! another process, the start is retried with new ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a member (or every member of a cluster) has to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a start is retried after losing a port race.
const START_ATTEMPTS: usize = 5;

/// Why a test etcd could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The etcd binary could not be run (not installed? `apt-get install etcd-server`).
    #[error("cannot run {binary}: {source}")]
    Spawn { binary: String, source: std::io::Error },
    /// Creating the temp dir or finding free ports failed.
    #[error("test etcd: i/o: {0}")]
    Io(#[from] std::io::Error),
    /// etcd exited while starting; the tail of its log says why.
    #[error("test etcd member {member} exited while starting ({status}); log tail:\n{log}")]
    Exited {
        member: String,
        status: String,
        log: String,
    },
    /// etcd did not become healthy in time; the tail of its log says why.
    #[error("test etcd did not become healthy within {timeout:?}; log tail of {member}:\n{log}")]
    NotHealthy {
        timeout: Duration,
        member: String,
        log: String,
    },
    /// The member index is out of range or the member is not running.
    #[error("test etcd member {0} does not exist or is not running")]
    NoSuchMember(usize),
    /// No running member reports a leader.
    #[error("no running member knows a leader")]
    NoLeader,
    /// Asking a member over the etcd API failed.
    #[error("test etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One running etcd member, single-node cluster. Dropping it kills the process and removes its data.
pub struct EtcdServer {
    cluster: EtcdCluster,
}

impl EtcdServer {
    /// Starts one member and waits until it answers `/health`.
    pub fn start() -> Result<EtcdServer> {
        Ok(EtcdServer {
            cluster: EtcdCluster::start(1)?,
        })
    }

    /// The client URL, e.g. `http://127.0.0.1:41235`.
    pub fn endpoint(&self) -> String {
        self.cluster.members[0].client_url.clone()
    }

    /// Kills the process with SIGKILL (no clean shutdown); the data stays for [`EtcdServer::restart`].
    pub fn kill(&mut self) {
        self.cluster.members[0].kill();
    }

    /// Starts the killed member again on the same ports and data, and waits until it is healthy.
    pub fn restart(&mut self) -> Result<()> {
        self.cluster.restart_member(0)
    }

    /// The directory holding the member's data and log.
    pub fn dir(&self) -> &Path {
        self.cluster.dir.path()
    }
}

/// `n` etcd members forming one cluster on loopback. Dropping it kills every process and removes the data.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

/// One member's process and addresses.
struct Member {
    name: String,
    client_url: String,
    client_addr: SocketAddr,
    peer_url: String,
    data_dir: PathBuf,
    log_file: PathBuf,
    /// The flags that start this member (reused unchanged by a restart: etcd ignores the `--initial-*`
    /// flags once its data dir holds a cluster).
    args: Vec<String>,
    child: Option<Child>,
    /// Kills `child` and removes its files should this process die without running `Drop` (a test
    /// binary killed by a timeout): a shell that polls whether we are still alive.
    watchdog: Option<Child>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until all of them report a healthy cluster (a leader elected).
    pub fn start(n: usize) -> Result<EtcdCluster> {
        assert!(n > 0, "a cluster needs at least one member");
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut cluster = Self::spawn(n)?;
            match cluster.wait_healthy(&(0..n).collect::<Vec<_>>()) {
                Ok(()) => return Ok(cluster),
                Err(error) if lost_port_race(&error) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.expect("at least one attempt ran"))
    }

    /// The client URLs of all members, in member order (also of killed members).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url.clone()
    }

    /// The index of the current leader: a running member that a running member names as its leader.
    /// [`Error::NoLeader`] while an election is under way (or a survivor still names a dead leader): ask
    /// again.
    pub async fn leader_index(&self) -> Result<usize> {
        let mut ids = Vec::with_capacity(self.members.len());
        let mut leaders = Vec::new();
        for member in &self.members {
            if member.child.is_none() {
                ids.push(None);
                continue;
            }
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(5));
            let status = async {
                let mut client = etcd_client::Client::connect([&member.client_url], Some(options)).await?;
                client.status().await
            }
            .await;
            match status {
                Ok(status) => {
                    ids.push(status.header().map(|h| h.member_id()));
                    leaders.push(status.leader());
                }
                Err(_) => ids.push(None),
            }
        }
        leaders
            .iter()
            .find_map(|leader| ids.iter().position(|id| *leader != 0 && *id == Some(*leader)))
            .ok_or(Error::NoLeader)
    }

    /// Kills member `i` with SIGKILL; its data stays for [`EtcdCluster::restart_member`].
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        let member = self.members.get_mut(i).ok_or(Error::NoSuchMember(i))?;
        if member.child.is_none() {
            return Err(Error::NoSuchMember(i));
        }
        member.kill();
        Ok(())
    }

    /// Starts killed member `i` again with its data and ports and waits until it is healthy.
    pub fn restart_member(&mut self, i: usize) -> Result<()> {
        let member = self.members.get_mut(i).ok_or(Error::NoSuchMember(i))?;
        member.kill();
        member.spawn()?;
        self.wait_healthy(&[i])
    }

    /// The temp dir holding every member's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(n: usize) -> Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("rkube-etcd-").tempdir()?;
        let ports = free_ports(2 * n)?;
        let token = unique_token();
        let mut members: Vec<Member> = (0..n)
            .map(|i| {
                let client_addr = SocketAddr::from(([127, 0, 0, 1], ports[2 * i]));
                Member {
                    name: format!("m{i}"),
                    client_url: format!("http://{client_addr}"),
                    client_addr,
                    peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                    data_dir: dir.path().join(format!("m{i}.data")),
                    log_file: dir.path().join(format!("m{i}.log")),
                    args: Vec::new(),
                    child: None,
                    watchdog: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for member in &mut members {
            member.args = [
                ("--name", member.name.as_str()),
                ("--data-dir", &member.data_dir.to_string_lossy()),
                ("--listen-client-urls", &member.client_url),
                ("--advertise-client-urls", &member.client_url),
                ("--listen-peer-urls", &member.peer_url),
                ("--initial-advertise-peer-urls", &member.peer_url),
                ("--initial-cluster", &initial_cluster),
                ("--initial-cluster-state", "new"),
                ("--initial-cluster-token", &token),
                ("--experimental-watch-progress-notify-interval", "1s"),
                ("--logger", "zap"),
                ("--log-outputs", &member.log_file.to_string_lossy()),
            ]
            .iter()
            .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
            .collect();
        }
        let mut cluster = EtcdCluster { members, dir };
        for member in &mut cluster.members {
            member.spawn()?;
        }
        Ok(cluster)
    }

    /// Polls `/health` of the given members until each answers healthy, a member exits, or the deadline.
    fn wait_healthy(&mut self, which: &[usize]) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pending: Vec<usize> = which.to_vec();
        while !pending.is_empty() {
            for &i in &pending {
                let member = &mut self.members[i];
                if let Some(child) = member.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    member.child = None;
                    return Err(Error::Exited {
                        member: member.name.clone(),
                        status: status.to_string(),
                        log: log_tail(&member.log_file),
                    });
                }
            }
            pending.retain(|&i| !is_healthy(self.members[i].client_addr));
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let member = &self.members[pending[0]];
                return Err(Error::NotHealthy {
                    timeout: START_TIMEOUT,
                    member: member.name.clone(),
                    log: log_tail(&member.log_file),
                });
            }
            // A poll interval, not a wait for the condition: the condition is re-checked each round.
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }
}

impl Member {
    fn spawn(&mut self) -> Result<()> {
        let binary = std::env::var_os("RKUBE_ETCD_BIN").unwrap_or_else(|| "/usr/bin/etcd".into());
        let child = Command::new(&binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // etcd writes only startup noise to stderr once `--log-outputs` points at a file.
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: binary.to_string_lossy().into_owned(),
                source,
            })?;
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("rkube-etcd-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .arg(&self.data_dir)
            .arg(&self.log_file)
            .arg(self.data_dir.parent().unwrap_or(&self.data_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        self.child = Some(child);
        // Without a watchdog the member still works; only a crash of this process would leak it.
        self.watchdog = watchdog.ok();
        Ok(())
    }

    /// SIGKILL (what `Child::kill` sends) and reap, so no zombie outlives the test.
    fn kill(&mut self) {
        for mut child in [self.child.take(), self.watchdog.take()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `$1` our pid, `$2` etcd's pid, `$3` its data dir, `$4` its log, `$5` the cluster dir (removed once empty).
const WATCHDOG_SCRIPT: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill -9 "$2" 2>/dev/null
rm -rf "$3" "$4"
rmdir "$5" 2>/dev/null
exit 0"#;

/// Whether etcd's `/health` endpoint answers `"health":"true"` (which needs an elected leader).
fn is_healthy(addr: SocketAddr) -> bool {
    let probe = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    probe().is_ok_and(|response| response.contains("\"health\":\"true\""))
}

/// Distinct ports that were free a moment ago (all bound at once so none is handed out twice).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// A cluster token no other run shares, so members of a crashed earlier run never join this cluster.
fn unique_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "rkube-test-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn lost_port_race(error: &Error) -> bool {
    match error {
        Error::Exited { log, .. } | Error::NotHealthy { log, .. } => log.contains("address already in use"),
        _ => false,
    }
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
