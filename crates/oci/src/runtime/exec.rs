//! Processes started in a running container with `runc exec`. With a terminal, runc allocates the
//! container-side pty (`-t`) and copies between it and its own stdio, which is the slave side of a pty of
//! ours: the caller reads, writes and resizes our master, and a resize reaches the container because runc
//! re-reads its terminal's size on SIGWINCH.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::runc::Runc;
use super::{RuntimeError, io_err, sys_err};

/// A process running in a container. Read its output from `stdout`/`stderr` (with a terminal, `stdout`
/// carries both and `stderr` is `None`), write to `stdin`; drop `stdin` to send EOF. Dropping the
/// `ExecProcess` before it ended kills the process.
pub struct ExecProcess {
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    child: Child,
    pty: Option<Arc<OwnedFd>>,
    pid_file: PathBuf,
    reaped: bool,
}

pub(crate) fn spawn(
    runc: &Runc,
    id: &str,
    dir: &Path,
    cmd: &[String],
    tty: bool,
) -> Result<ExecProcess, RuntimeError> {
    let pid_file = dir.join(format!("exec-{}.pid", uuid_like()));
    let mut command = runc.command();
    command.arg("exec").arg("--pid-file").arg(&pid_file);
    if tty {
        command.arg("-t");
    }
    command.arg(id).args(cmd);
    if tty {
        let pty = nix::pty::openpty(None, None).map_err(sys_err("openpty"))?;
        let slave = File::from(pty.slave);
        let clone = |f: &File| f.try_clone().map_err(io_err(Path::new("/dev/pts")));
        command
            .stdin(Stdio::from(clone(&slave)?))
            .stdout(Stdio::from(clone(&slave)?))
            .stderr(Stdio::from(slave));
        let child = command.spawn().map_err(io_err(runc.binary()))?;
        drop(command);
        let master = File::from(pty.master);
        let writer = master.try_clone().map_err(io_err(Path::new("/dev/ptmx")))?;
        let resize = master.try_clone().map_err(io_err(Path::new("/dev/ptmx")))?;
        Ok(ExecProcess {
            stdin: Some(writer),
            stdout: Some(master),
            stderr: None,
            child,
            pty: Some(Arc::new(OwnedFd::from(resize))),
            pid_file,
            reaped: false,
        })
    } else {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(io_err(runc.binary()))?;
        Ok(ExecProcess {
            stdin: child.stdin.take().map(|s| File::from(OwnedFd::from(s))),
            stdout: child.stdout.take().map(|s| File::from(OwnedFd::from(s))),
            stderr: child.stderr.take().map(|s| File::from(OwnedFd::from(s))),
            child,
            pty: None,
            pid_file,
            reaped: false,
        })
    }
}

/// A name unique enough for a per-exec file: pid, time and a counter.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl ExecProcess {
    /// Waits for the process; its exit code (128 + signal when killed by one).
    pub fn wait(&mut self) -> Result<i32, RuntimeError> {
        let status = self.child.wait().map_err(io_err(Path::new("runc exec")))?;
        self.reaped = true;
        let _ = fs::remove_file(&self.pid_file);
        Ok(exit_code(status))
    }

    /// The exit code if the process has ended.
    pub fn try_wait(&mut self) -> Result<Option<i32>, RuntimeError> {
        let status = self.child.try_wait().map_err(io_err(Path::new("runc exec")))?;
        if status.is_some() {
            self.reaped = true;
            let _ = fs::remove_file(&self.pid_file);
        }
        Ok(status.map(exit_code))
    }

    /// Sets the terminal size (no-op without a terminal).
    pub fn resize(&self, width: u16, height: u16) -> Result<(), RuntimeError> {
        let Some(pty) = &self.pty else { return Ok(()) };
        if width == 0 || height == 0 {
            return Ok(());
        }
        let size = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(pty.as_ref(), size).map_err(|e| RuntimeError::Sys {
            op: "resize terminal".into(),
            source: nix::Error::from_raw(e.raw_os_error()),
        })?;
        // Our pty is nobody's controlling terminal, so the kernel signals no one: tell runc ourselves. runc
        // is our unreaped child, so its pid cannot have been reused.
        if !self.reaped {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGWINCH);
        }
        Ok(())
    }

    /// Kills the process in the container (not just runc, which would leave it running).
    pub fn kill(&mut self) -> Result<(), RuntimeError> {
        if let Some(pid) = fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        Ok(())
    }

    /// Closes stdin, collects stdout and stderr (interleaved as they arrive) and waits, for at most
    /// `timeout`.
    pub(crate) fn run_to_end(mut self, timeout: Duration) -> Result<(i32, Vec<u8>), RuntimeError> {
        drop(self.stdin.take());
        let output = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        for stream in [self.stdout.take(), self.stderr.take()].into_iter().flatten() {
            let output = output.clone();
            let done = done_tx.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().extend_from_slice(&buf[..n]);
                }
                drop(done);
            });
        }
        drop(done_tx);
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        let code = loop {
            if let Some(code) = self.try_wait()? {
                break code;
            }
            if Instant::now() >= deadline {
                self.kill()?;
                let _ = self.wait();
                return Err(RuntimeError::Timeout(format!(
                    "exec did not finish within {timeout:?}"
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        // Output written just before the exit is still in the pipes; a process that left children holding
        // them open gets a short grace, not a hang.
        let _ = done_rx.recv_timeout(Duration::from_secs(1));
        let out = std::mem::take(&mut *output.lock());
        Ok((code, out))
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Reap in the background: the caller dropped a process it no longer cares about.
            let _ = self.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_file(&self.pid_file);
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}
