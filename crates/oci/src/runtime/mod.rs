//! Running containers with runc: pod sandboxes (namespaces kept alive as bind-mounted files, no pause
//! process), overlayfs root filesystems, OCI bundles, and one detached shim per container that owns the
//! container's stdio, writes its CRI log and records how it ended.
//!
//! Nothing here lives in memory only: every answer ([`Runtime::list_containers`], [`Runtime::container_state`])
//! is read back from `state_dir` and runc's `--root`, so the agent can restart at any time while containers
//! keep running under their shims.
//!
//! Layout under [`RuntimeConfig::state_dir`]:
//! - `sandboxes/<id>/{net,ipc,uts}`: nsfs bind mounts; `sandboxes/<id>/shm`: the tmpfs the pod's containers
//!   share as `/dev/shm`.
//! - `containers/<id>/`: the OCI bundle (`config.json`, `rootfs/` = overlay of the image layers with `upper/`
//!   and `work/`), `meta.json` (what [`Runtime::list_containers`] reports), `shim.json` / `shim.pid` /
//!   `shim.log` (the monitor), `attach/` (FIFOs into the container's stdin and terminal size),
//!   `started_at` and `exit.json` (the container's life).
//!
//! Start reading at [`Runtime`]; [`shim`] is the process side, [`spec`] the `config.json` rules.
//!
//! The shims start their own sessions, so signals to the agent's process group do not reach them, but they
//! stay in the agent's cgroup: under systemd the agent's unit needs `KillMode=process` (as k3s' has), or
//! stopping the unit kills every shim (the containers keep running, but lose their log and exit record).

mod attach;
pub mod cgroups;
mod exec;
mod log;
mod mounts;
mod rootfs;
mod runc;
mod sandbox;
pub mod shim;
pub mod spec;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use attach::{Attach, LogFollower, Stream};
pub use exec::ExecProcess;
pub use nix::sys::signal::Signal;

use runc::{Runc, RuncStatus};

/// Failures of the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Reading or writing the runtime's files failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A system call (mount, unshare, kill, …) failed.
    #[error("{op}: {source}")]
    Sys { op: String, source: nix::Error },
    /// A state file could not be parsed.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// runc refused or failed; `message` is what it said.
    #[error("runc {op} {id}: {message}")]
    Runc {
        op: &'static str,
        id: String,
        message: String,
    },
    /// The shim could not create the container.
    #[error("starting the shim for {id}: {message}")]
    Shim { id: String, message: String },
    /// No container (or sandbox) with this id.
    #[error("{0} not found")]
    NotFound(String),
    /// A container with this id already exists.
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// The caller's configuration cannot be turned into a container.
    #[error("invalid container config: {0}")]
    Invalid(String),
    /// A container did not reach the state asked for in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn sys_err(op: impl Into<String>) -> impl FnOnce(nix::Error) -> RuntimeError {
    let op = op.into();
    move |source| RuntimeError::Sys { op, source }
}

/// Where the runtime keeps its state and how it starts runc and the shim.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `DIR/agent/containers`: sandboxes and one directory per container.
    pub state_dir: PathBuf,
    /// `DIR/agent/runc`: runc's `--root`.
    pub runc_root: PathBuf,
    /// Cgroup directory (below each hierarchy's root) that holds the pods, e.g. `rkube-<node-name>`.
    pub cgroup_parent: String,
    /// The runc binary, e.g. `/usr/sbin/runc`.
    pub runc: PathBuf,
    /// How to start the shim, e.g. `["/path/rkube", "shim"]`; the container directory is appended.
    pub shim: Vec<OsString>,
}

/// A pod's shared namespaces, as files that can be joined by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub netns: PathBuf,
    pub ipcns: PathBuf,
    pub utsns: PathBuf,
}

/// The process a container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `K=V`; `PATH` gets the usual default when missing.
    pub env: Vec<String>,
    /// Empty means `/`.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// stdin/stdout/stderr are a terminal (the log gets its output as `stdout`).
    pub tty: bool,
    /// Keep stdin open (a pipe the shim holds).
    pub stdin: bool,
}

/// A host path mounted into the container (volumes, `/etc/hosts`, `/etc/resolv.conf`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub destination: String,
    pub source: PathBuf,
    pub read_only: bool,
}

/// Cgroup limits; `None` leaves the kernel default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Bytes.
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// Microseconds per `cpu_period`.
    pub cpu_quota: Option<i64>,
    /// Microseconds; 100000 when a quota is set without one.
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub sandbox: Sandbox,
    /// Pod uid/namespace/name, container name, attempt. The pod's cgroup is named after the label
    /// [`POD_UID_LABEL`] (the sandbox id when absent).
    pub labels: BTreeMap<String, String>,
    /// Unpacked layer directories in overlayfs `lowerdir` order: **top layer first**, as
    /// [`crate::ImageStore::lower_dirs`] returns them.
    pub lower_dirs: Vec<PathBuf>,
    pub process: ProcessSpec,
    pub mounts: Vec<BindMount>,
    pub privileged: bool,
    /// Capability names with or without `CAP_` (`NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_rootfs: bool,
    pub resources: Resources,
    /// CRI-format log file the shim writes (rotated at 10 MiB, 5 files, like the kubelet's defaults).
    pub log_path: PathBuf,
    /// Set in the (shared) UTS namespace when not empty; the sandbox's hostname otherwise.
    pub hostname: String,
}

/// The label that names a container's pod cgroup (`<cgroup_parent>/pod<uid>/<id>`).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created by runc, process not started yet.
    Created,
    Running {
        pid: u32,
        started_at: DateTime<Utc>,
    },
    Exited {
        /// The exit status, or 128 + signal number.
        exit_code: i32,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        oom_killed: bool,
        /// The signal that killed the process, if one did.
        signal: Option<i32>,
    },
    /// Half-created, or its shim died without recording an exit: remove it.
    Unknown,
}

/// One container as [`Runtime::list_containers`] finds it on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Empty for leftovers without metadata.
    pub sandbox_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub log_path: PathBuf,
    pub created_at: Option<DateTime<Utc>>,
}

/// What `meta.json` holds: the parts of a [`ContainerConfig`] that are needed after creation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    sandbox_id: String,
    labels: BTreeMap<String, String>,
    log_path: PathBuf,
    cgroup_path: String,
    created_at: DateTime<Utc>,
}

/// What the shim records in `exit.json` once the container's init process is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub finished_at: DateTime<Utc>,
    pub oom_killed: bool,
}

const META: &str = "meta.json";
const EXIT: &str = "exit.json";
const STARTED_AT: &str = "started_at";

/// The container runtime. Holds no state beyond its configuration: cheap to clone, safe to drop and
/// recreate while containers run.
#[derive(Debug, Clone)]
pub struct Runtime {
    cfg: RuntimeConfig,
    runc: Runc,
}

impl Runtime {
    /// Checks the configuration and creates the state directories.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        if cfg.shim.is_empty() {
            return Err(RuntimeError::Invalid("RuntimeConfig::shim is empty".into()));
        }
        if !cfg.runc.exists() {
            return Err(RuntimeError::Invalid(format!(
                "runc not found at {}",
                cfg.runc.display()
            )));
        }
        if cfg.cgroup_parent.is_empty() || cfg.cgroup_parent.contains("..") {
            return Err(RuntimeError::Invalid(format!(
                "bad cgroup parent {:?}",
                cfg.cgroup_parent
            )));
        }
        for dir in [
            cfg.state_dir.join("containers"),
            cfg.state_dir.join("sandboxes"),
            cfg.runc_root.clone(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let runc = Runc::new(cfg.runc.clone(), cfg.runc_root.clone());
        Ok(Runtime { cfg, runc })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    fn sandboxes_dir(&self) -> PathBuf {
        self.cfg.state_dir.join("sandboxes")
    }

    fn container_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        check_id(id)?;
        Ok(self.cfg.state_dir.join("containers").join(id))
    }

    /// Creates (or finds) the pod sandbox `id`: new network, IPC and UTS namespaces with `hostname` set and
    /// loopback up, pinned by bind mounts so they outlive every process. Idempotent.
    pub fn create_sandbox(&self, id: &str, hostname: &str) -> Result<Sandbox, RuntimeError> {
        check_id(id)?;
        sandbox::create(&self.sandboxes_dir(), id, hostname)
    }

    /// Unmounts and deletes the sandbox's namespace files. Idempotent; containers still joined to the
    /// namespaces keep them alive until they exit.
    pub fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        check_id(id)?;
        sandbox::remove(&self.sandboxes_dir(), id)
    }

    pub fn list_sandboxes(&self) -> Result<Vec<Sandbox>, RuntimeError> {
        sandbox::list(&self.sandboxes_dir())
    }

    fn cgroup_path(&self, c: &ContainerConfig) -> String {
        let pod = c.labels.get(POD_UID_LABEL).unwrap_or(&c.sandbox.id);
        let pod: String = pod
            .chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                    ch
                } else {
                    '_'
                }
            })
            .collect();
        format!(
            "/{}/pod{}/{}",
            self.cfg.cgroup_parent.trim_matches('/'),
            pod,
            c.id
        )
    }

    /// Mounts the container's root filesystem, writes its bundle and starts its shim, which runs
    /// `runc create`. Returns once the container exists (state [`ContainerState::Created`]). On failure
    /// nothing is left behind.
    pub fn create_container(&self, c: &ContainerConfig) -> Result<(), RuntimeError> {
        let dir = self.container_dir(&c.id)?;
        if dir.join(META).exists() || self.runc.exists(&c.id) {
            return Err(RuntimeError::AlreadyExists(c.id.clone()));
        }
        if dir.exists() {
            // A create that crashed before writing its metadata.
            self.remove_container(&c.id)?;
        }
        if c.process.args.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "container {} has no command",
                c.id
            )));
        }
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let result = self.create_in(&dir, c);
        if result.is_err()
            && let Err(e) = self.remove_container(&c.id)
        {
            tracing::warn!(id = %c.id, "cleaning up a failed create: {e}");
        }
        result
    }

    fn create_in(&self, dir: &Path, c: &ContainerConfig) -> Result<(), RuntimeError> {
        let meta = Meta {
            id: c.id.clone(),
            sandbox_id: c.sandbox.id.clone(),
            labels: c.labels.clone(),
            log_path: c.log_path.clone(),
            cgroup_path: self.cgroup_path(c),
            created_at: Utc::now(),
        };
        write_json(&dir.join(META), &meta)?;
        let rootfs = rootfs::mount_overlay(&c.lower_dirs, dir)?;
        let shm = sandbox::shm_dir(&self.sandboxes_dir(), &c.sandbox.id);
        let spec = spec::build(
            c,
            &rootfs,
            &meta.cgroup_path,
            shm.is_dir().then_some(shm.as_path()),
        );
        write_json(&dir.join("config.json"), &spec)?;
        let shim_cfg = shim::ShimConfig {
            id: c.id.clone(),
            bundle: dir.to_owned(),
            runc: self.cfg.runc.clone(),
            runc_root: self.cfg.runc_root.clone(),
            log_path: c.log_path.clone(),
            stdin: c.process.stdin,
            tty: c.process.tty,
            cgroup_path: meta.cgroup_path.clone(),
            shim: self.cfg.shim.clone(),
        };
        write_json(&dir.join(shim::SHIM_CONFIG), &shim_cfg)?;
        let out = Command::new(&self.cfg.shim[0])
            .args(&self.cfg.shim[1..])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(io_err(Path::new(&self.cfg.shim[0])))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.starts_with("ok") {
            return Ok(());
        }
        let message = match stdout.lines().find_map(|l| l.strip_prefix("error ")) {
            Some(verdict) => verdict.to_owned(),
            None => format!(
                "{} {}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        Err(RuntimeError::Shim {
            id: c.id.clone(),
            message: message.trim().to_owned(),
        })
    }

    /// Starts the process of a created container. Starting a running container is a no-op.
    pub fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.container_dir(id)?;
        match self.runc.status(id) {
            RuncStatus::Created { .. } => {}
            RuncStatus::Running { .. } => return Ok(()),
            RuncStatus::Stopped | RuncStatus::Absent => {
                return Err(RuntimeError::Runc {
                    op: "start",
                    id: id.to_owned(),
                    message: "container is not in the created state".into(),
                });
            }
        }
        // Written before the start so that an exit record can never precede it.
        let started = dir.join(STARTED_AT);
        fs::write(
            &started,
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        )
        .map_err(io_err(&started))?;
        self.runc.start(id).inspect_err(|_| {
            let _ = fs::remove_file(&started);
        })
    }

    /// Sends `signal`, waits up to `grace` for the container to exit, then kills it. Returns once the exit
    /// is recorded. Stopping a container that is not running is a no-op.
    pub fn stop_container(&self, id: &str, signal: Signal, grace: Duration) -> Result<(), RuntimeError> {
        let dir = self.container_dir(id)?;
        match self.runc.status(id) {
            RuncStatus::Running { .. } if signal != Signal::SIGKILL => {
                self.runc.kill(id, signal)?;
                if self.wait_exit(id, &dir, grace) {
                    return Ok(());
                }
                tracing::info!(id, "grace period over; killing");
            }
            RuncStatus::Running { .. } | RuncStatus::Created { .. } => {}
            RuncStatus::Stopped | RuncStatus::Absent => return Ok(()),
        }
        if let Err(e) = self.runc.kill(id, Signal::SIGKILL)
            && !matches!(self.runc.status(id), RuncStatus::Stopped | RuncStatus::Absent)
        {
            return Err(e);
        }
        if self.wait_exit(id, &dir, Duration::from_secs(10)) {
            Ok(())
        } else {
            Err(RuntimeError::Timeout(format!(
                "container {id} did not exit after SIGKILL"
            )))
        }
    }

    /// Whether the container's end is recorded (or no shim is left to record it) within `timeout`.
    fn wait_exit(&self, id: &str, dir: &Path, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            if dir.join(EXIT).exists() {
                return true;
            }
            if !shim::alive(dir) && matches!(self.runc.status(id), RuncStatus::Stopped | RuncStatus::Absent) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Kills the container if needed and removes everything but its logs: runc state, rootfs mount,
    /// cgroups, the container directory. Idempotent, and works on half-created leftovers.
    pub fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.container_dir(id)?;
        let meta: Option<Meta> = read_json(&dir.join(META)).ok();
        if matches!(
            self.runc.status(id),
            RuncStatus::Running { .. } | RuncStatus::Created { .. }
        ) {
            let _ = self.runc.kill(id, Signal::SIGKILL);
        }
        // The shim must be gone before the directory is, or it would write its exit record into nothing.
        let deadline = Instant::now() + Duration::from_secs(10);
        while shim::alive(&dir) {
            if Instant::now() >= deadline {
                shim::kill_monitor(&dir);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.runc.delete(id)?;
        rootfs::unmount(&dir)?;
        if let Some(meta) = &meta {
            cgroups::remove(&meta.cgroup_path);
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RuntimeError::Io { path: dir, source }),
        }
    }

    /// The container's state, from its state directory and runc's.
    pub fn container_state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let dir = self.container_dir(id)?;
        if !dir.exists() && !self.runc.exists(id) {
            return Err(RuntimeError::NotFound(format!("container {id}")));
        }
        Ok(self.state_in(id, &dir))
    }

    fn state_in(&self, id: &str, dir: &Path) -> ContainerState {
        if let Some(state) = self.exited(dir) {
            return state;
        }
        match self.runc.status(id) {
            RuncStatus::Created { .. } => ContainerState::Created,
            RuncStatus::Running { pid, created } => ContainerState::Running {
                pid,
                started_at: read_started(dir).unwrap_or(created),
            },
            RuncStatus::Stopped => {
                // The process is gone; the shim is about to record how (it flushes the log first).
                if shim::alive(dir) && self.wait_exit(id, dir, Duration::from_secs(3)) {
                    return self.exited(dir).unwrap_or(ContainerState::Unknown);
                }
                ContainerState::Unknown
            }
            RuncStatus::Absent if shim::alive(dir) => ContainerState::Created,
            RuncStatus::Absent => ContainerState::Unknown,
        }
    }

    fn exited(&self, dir: &Path) -> Option<ContainerState> {
        let exit: ExitRecord = read_json(&dir.join(EXIT)).ok()?;
        let started_at = read_started(dir)
            .or_else(|| read_json::<Meta>(&dir.join(META)).ok().map(|m| m.created_at))
            .unwrap_or(exit.finished_at);
        Some(ContainerState::Exited {
            exit_code: exit.exit_code,
            started_at,
            finished_at: exit.finished_at,
            oom_killed: exit.oom_killed,
            signal: exit.signal,
        })
    }

    /// Every container in the state directory, plus runc containers that have none (leftovers to remove).
    pub fn list_containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut found = BTreeMap::new();
        let containers = self.cfg.state_dir.join("containers");
        for id in dir_names(&containers)?.into_iter().chain(self.runc.list()?) {
            if found.contains_key(&id) || check_id(&id).is_err() {
                continue;
            }
            let dir = containers.join(&id);
            let meta: Option<Meta> = read_json(&dir.join(META)).ok();
            let state = match &meta {
                Some(_) => self.state_in(&id, &dir),
                None => ContainerState::Unknown,
            };
            let info = match meta {
                Some(m) => ContainerInfo {
                    id: id.clone(),
                    sandbox_id: m.sandbox_id,
                    labels: m.labels,
                    state,
                    log_path: m.log_path,
                    created_at: Some(m.created_at),
                },
                None => ContainerInfo {
                    id: id.clone(),
                    sandbox_id: String::new(),
                    labels: BTreeMap::new(),
                    state,
                    log_path: PathBuf::new(),
                    created_at: None,
                },
            };
            found.insert(id, info);
        }
        Ok(found.into_values().collect())
    }

    /// Runs `cmd` in the running container with piped stdio (or one terminal for all three when `tty`).
    pub fn exec(&self, id: &str, cmd: &[String], tty: bool) -> Result<ExecProcess, RuntimeError> {
        let dir = self.container_dir(id)?;
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("exec without a command".into()));
        }
        if !matches!(self.runc.status(id), RuncStatus::Running { .. }) {
            return Err(RuntimeError::Runc {
                op: "exec",
                id: id.to_owned(),
                message: "container is not running".into(),
            });
        }
        exec::spawn(&self.runc, id, &dir, cmd, tty)
    }

    /// Attaches to the running container's own stdio: its stdin (if created with `stdin`), its output from
    /// now on (followed in the CRI log), and terminal resize.
    pub fn attach(&self, id: &str) -> Result<Attach, RuntimeError> {
        let dir = self.container_dir(id)?;
        let meta: Meta =
            read_json(&dir.join(META)).map_err(|_| RuntimeError::NotFound(format!("container {id}")))?;
        Attach::open(&dir, &meta.log_path)
    }

    /// Runs `cmd` to completion (exec probes): its exit code and combined stdout+stderr. On timeout the
    /// process is killed and [`RuntimeError::Timeout`] returned.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), RuntimeError> {
        let process = self.exec(id, cmd, false)?;
        process.run_to_end(timeout)
    }
}

fn read_started(dir: &Path) -> Option<DateTime<Utc>> {
    let text = fs::read_to_string(dir.join(STARTED_AT)).ok()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Ids become path components and runc names: keep them to runc's alphabet.
fn check_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!("bad id {id:?}")))
    }
}

pub(crate) fn dir_names(dir: &Path) -> Result<Vec<String>, RuntimeError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RuntimeError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Writes `value` as JSON through a temporary file and a rename, so readers never see half a file.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| RuntimeError::Json {
        path: path.to_owned(),
        source,
    })?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, RuntimeError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| RuntimeError::Json {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_limited_to_a_safe_alphabet() {
        assert!(check_id("abc-123_x.y").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
