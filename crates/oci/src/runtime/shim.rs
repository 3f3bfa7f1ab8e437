//! `rkube shim`: the process that looks after one container, so the agent does not have to.
//!
//! The agent runs `<shim…> <container dir>` (the *launcher*), which starts `<shim…> --monitor <dir>` and
//! relays its verdict: one line, `ok <pid>` or `error <message>`. The launcher then exits, so the monitor is
//! nobody's child and outlives the agent. The *monitor* starts a new session, becomes a child subreaper,
//! runs `runc create` with pipes (or a pty) as the container's stdio, copies what comes out of them into
//! the CRI log, reaps the container's init process when it ends (it is reparented to the monitor once
//! `runc create` exits), records exit code, signal, time and OOM kill in `exit.json`, and exits.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::log::{self, CriLog};
use super::runc::{proc_stat, process_matches};
use super::{ExitRecord, RuntimeError, cgroups, io_err, read_json, write_json};

pub(crate) const SHIM_CONFIG: &str = "shim.json";
const SHIM_PID: &str = "shim.pid";
const INIT_PID: &str = "init.pid";
pub(crate) const ATTACH_DIR: &str = "attach";

/// What the monitor needs to know, written by the runtime into the container directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShimConfig {
    pub id: String,
    /// The container directory, which is also the OCI bundle.
    pub bundle: PathBuf,
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    pub log_path: PathBuf,
    pub stdin: bool,
    pub tty: bool,
    pub cgroup_path: String,
    /// How this binary is started as the shim (to start the monitor).
    pub shim: Vec<OsString>,
}

/// The `rkube shim` entry point: `<dir>` launches, `--monitor <dir>` monitors.
pub fn main(args: &[String]) -> Result<(), RuntimeError> {
    match args {
        [dir] => launch(Path::new(dir)).inspect_err(|e| {
            // The runtime reads the verdict from stdout (stderr carries the binary's own error report).
            match e {
                RuntimeError::Shim { message, .. } => println!("error {message}"),
                other => println!("error {other}"),
            }
        }),
        [flag, dir] if flag == "--monitor" => monitor(Path::new(dir)),
        _ => Err(RuntimeError::Invalid(format!(
            "usage: rkube shim [--monitor] CONTAINER_DIR (got {args:?})"
        ))),
    }
}

fn launch(dir: &Path) -> Result<(), RuntimeError> {
    let cfg: ShimConfig = read_json(&dir.join(SHIM_CONFIG))?;
    let log_path = dir.join("shim.log");
    let shim_log = File::create(&log_path).map_err(io_err(&log_path))?;
    let mut child = Command::new(&cfg.shim[0])
        .args(&cfg.shim[1..])
        .arg("--monitor")
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(shim_log)
        .spawn()
        .map_err(io_err(Path::new(&cfg.shim[0])))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let line = line.trim();
    if line.starts_with("ok") {
        println!("{line}");
        // Not waited for: the monitor must outlive us, and init adopts it.
        return Ok(());
    }
    let _ = child.wait();
    let message = if line.is_empty() {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        format!("the shim exited without a word: {}", log.trim())
    } else {
        line.trim_start_matches("error").trim().to_owned()
    };
    Err(RuntimeError::Shim { id: cfg.id, message })
}

fn monitor(dir: &Path) -> Result<(), RuntimeError> {
    // Signals meant for the agent's process group or terminal must not reach us.
    nix::unistd::setsid().map_err(super::sys_err("setsid"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(super::sys_err("set child subreaper"))?;
    let mut ready = io::stdout();
    let created = create(dir);
    let (cfg, init, readers) = match created {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(ready, "error {e}");
            let _ = ready.flush();
            return Err(e);
        }
    };
    let _ = writeln!(ready, "ok {init}");
    let _ = ready.flush();
    // The launcher is gone after this line; later writes would only fail.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }

    let status = reap_until(init);
    let finished_at = Utc::now();
    let oom_killed = cgroups::oom_killed(&cfg.cgroup_path);
    // When init dies the kernel kills the rest of its PID namespace, closing the pipes; a short bound
    // protects against a writer that escaped it.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for reader in readers {
        while !reader.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let (exit_code, signal) = match status {
        Some(WaitStatus::Exited(_, code)) => (code, None),
        Some(WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, Some(sig as i32)),
        _ => (-1, None),
    };
    let record = ExitRecord {
        exit_code,
        signal,
        finished_at,
        oom_killed,
    };
    write_json(&dir.join(super::EXIT), &record)?;
    tracing::info!(id = %cfg.id, exit_code, ?signal, oom_killed, "container exited");
    Ok(())
}

type Created = (ShimConfig, u32, Vec<std::thread::JoinHandle<()>>);

/// Runs `runc create` with our pipes as the container's stdio and starts copying them into the log.
fn create(dir: &Path) -> Result<Created, RuntimeError> {
    let cfg: ShimConfig = read_json(&dir.join(SHIM_CONFIG))?;
    let me = std::process::id();
    let start = proc_stat(me).map(|(_, s)| s).unwrap_or(0);
    let pid_path = dir.join(SHIM_PID);
    fs::write(&pid_path, format!("{me} {start}")).map_err(io_err(&pid_path))?;
    let cri = CriLog::open(&cfg.log_path, log::MAX_SIZE, log::MAX_FILES).map_err(io_err(&cfg.log_path))?;
    let cri = Arc::new(parking_lot::Mutex::new(cri));

    let runc_log = dir.join("runc.log");
    let mut command = Command::new(&cfg.runc);
    command
        .arg("--root")
        .arg(&cfg.runc_root)
        .arg("--log")
        .arg(&runc_log)
        .args(["--log-format", "json", "create"])
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--pid-file")
        .arg(dir.join(INIT_PID))
        .current_dir(&cfg.bundle);
    let mut readers = Vec::new();
    // Where attached clients' input goes: the pty master or the stdin pipe.
    let mut stdin_writer: Option<File> = None;
    let mut pty_master: Option<File> = None;
    let not_started = |e: io::Error| RuntimeError::Io {
        path: cfg.runc.clone(),
        source: e,
    };
    // With a terminal, runc makes the pty inside the container (so it is the process's controlling
    // terminal there) and hands us the master through a socket.
    let mut console = None;
    if cfg.tty {
        let sock_dir = tempfile::Builder::new()
            .prefix("rkube-console-")
            .tempdir()
            .map_err(not_started)?;
        let sock = sock_dir.path().join("s");
        let listener = UnixListener::bind(&sock).map_err(not_started)?;
        command
            .arg("--console-socket")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(listener.accept().and_then(|(stream, _)| receive_fd(&stream)));
        });
        console = Some((rx, sock_dir));
    } else {
        let (out_r, out_w) = io::pipe().map_err(not_started)?;
        let (err_r, err_w) = io::pipe().map_err(not_started)?;
        command.stdout(out_w).stderr(err_w);
        if cfg.stdin {
            let (in_r, in_w) = io::pipe().map_err(not_started)?;
            command.stdin(in_r);
            stdin_writer = Some(File::from(std::os::fd::OwnedFd::from(in_w)));
        } else {
            command.stdin(Stdio::null());
        }
        readers.push(spawn_pump(out_r, "stdout", &cri));
        readers.push(spawn_pump(err_r, "stderr", &cri));
    }
    command.arg(&cfg.id);
    let mut child = command.spawn().map_err(not_started)?;
    // Our copies of the container's ends must close, or the readers would never see EOF.
    drop(command);
    let status = child.wait().map_err(not_started)?;
    if !status.success() {
        let log = fs::read_to_string(&runc_log).unwrap_or_default();
        let message = runc_error(&log).unwrap_or_else(|| format!("runc create exited with {status}: {log}"));
        return Err(RuntimeError::Runc {
            op: "create",
            id: cfg.id.clone(),
            message,
        });
    }
    let init_path = dir.join(INIT_PID);
    let init: u32 = fs::read_to_string(&init_path)
        .map_err(io_err(&init_path))?
        .trim()
        .parse()
        .map_err(|_| RuntimeError::Invalid(format!("{} is not a pid", init_path.display())))?;
    if let Some((rx, _sock_dir)) = console {
        let master = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| RuntimeError::Shim {
                id: cfg.id.clone(),
                message: "runc sent no console".into(),
            })?
            .map_err(not_started)?;
        let master = File::from(master);
        let dup = |f: &File| f.try_clone().map_err(not_started);
        stdin_writer = cfg.stdin.then(|| dup(&master)).transpose()?;
        pty_master = Some(dup(&master)?);
        readers.push(spawn_pump(master, "stdout", &cri));
    }
    serve_attach(dir, stdin_writer, pty_master)?;
    Ok((cfg, init, readers))
}

/// Attach points in the container directory: FIFO `attach/stdin` (whatever is written reaches the
/// container's stdin) and, with a terminal, FIFO `attach/resize` (lines `<width> <height>`). The shim holds
/// both open for reading *and* writing, so a client that goes away never means EOF to the container.
fn serve_attach(dir: &Path, stdin: Option<File>, pty: Option<File>) -> Result<(), RuntimeError> {
    let attach = dir.join(ATTACH_DIR);
    fs::create_dir_all(&attach).map_err(io_err(&attach))?;
    let fifo = |name: &str| -> Result<File, RuntimeError> {
        let path = attach.join(name);
        let _ = fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(super::sys_err(format!("mkfifo {}", path.display())))?;
        File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))
    };
    if let Some(mut writer) = stdin {
        let mut input = fifo("stdin")?;
        std::thread::spawn(move || {
            let _ = io::copy(&mut input, &mut writer);
        });
    }
    if let Some(master) = pty {
        let input = fifo("resize")?;
        std::thread::spawn(move || {
            for line in BufReader::new(input).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace().map(|p| p.parse::<u16>());
                if let (Some(Ok(w)), Some(Ok(h))) = (parts.next(), parts.next()) {
                    let size = rustix::termios::Winsize {
                        ws_row: h,
                        ws_col: w,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = rustix::termios::tcsetwinsize(&master, size);
                }
            }
        });
    }
    Ok(())
}

/// The pty master runc sends over its console socket.
fn receive_fd(stream: &UnixStream) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    // runc sends the terminal's name along with the descriptor.
    let mut name = [0u8; 4096];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        stream,
        &mut [io::IoSliceMut::new(&mut name)],
        &mut control,
        RecvFlags::empty(),
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::other(
        "runc's console socket carried no file descriptor",
    ))
}

/// The last error runc logged (`--log` writes JSON lines with `level` and `msg`).
fn runc_error(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().unwrap_or_default().to_owned())
    })
}

fn spawn_pump(
    reader: impl io::Read + Send + 'static,
    stream: &'static str,
    cri: &Arc<parking_lot::Mutex<CriLog>>,
) -> std::thread::JoinHandle<()> {
    let cri = cri.clone();
    std::thread::spawn(move || {
        if let Err(e) = log::pump(reader, stream, &cri) {
            tracing::warn!("copying container {stream} into the log: {e}");
        }
    })
}

/// Reaps every child (we are a subreaper: orphans of the container's setup land here) until `init` is
/// among them.
fn reap_until(init: u32) -> Option<WaitStatus> {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)))
                if pid.as_raw() as u32 == init =>
            {
                return Some(status);
            }
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!("waiting for the container's init ({init}): {e}");
                return None;
            }
        }
    }
}

/// Whether the container directory's monitor is still running.
pub(crate) fn alive(dir: &Path) -> bool {
    shim_pid(dir).is_some()
}

fn shim_pid(dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(dir.join(SHIM_PID)).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    process_matches(pid, start).then_some(pid)
}

/// Kills a monitor that does not go away by itself.
pub(crate) fn kill_monitor(dir: &Path) {
    if let Some(pid) = shim_pid(dir) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_error_in_runcs_log() {
        let log = r#"{"level":"warning","msg":"meh","time":"x"}
{"level":"error","msg":"first","time":"x"}
{"level":"error","msg":"container_linux.go: exec: \"nope\": executable file not found in $PATH","time":"x"}
"#;
        assert_eq!(
            runc_error(log).unwrap(),
            "container_linux.go: exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(runc_error("not json"), None);
    }
}
