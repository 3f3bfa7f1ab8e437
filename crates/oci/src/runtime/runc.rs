//! The runc command line, and runc's own state files read directly (a `runc state` costs a Go process
//! start; the runtime asks for states often).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use serde::Deserialize;

use super::{RuntimeError, io_err};

#[derive(Debug, Clone)]
pub(crate) struct Runc {
    binary: PathBuf,
    root: PathBuf,
}

/// A container's state as runc keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuncStatus {
    /// `runc init` waits on the exec FIFO for `runc start`.
    Created {
        pid: u32,
    },
    Running {
        pid: u32,
        created: DateTime<Utc>,
    },
    /// runc knows the container but its init process is gone.
    Stopped,
    /// runc has no such container.
    Absent,
}

/// The fields of runc's `state.json` used here.
#[derive(Deserialize)]
struct StateFile {
    init_process_pid: u32,
    init_process_start: u64,
    created: DateTime<Utc>,
}

impl Runc {
    pub fn new(binary: PathBuf, root: PathBuf) -> Runc {
        Runc { binary, root }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `runc --root ROOT` with stdio detached.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c
    }

    fn run(&self, op: &'static str, id: &str, args: &[&str]) -> Result<(), RuntimeError> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(io_err(&self.binary))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Runc {
                op,
                id: id.to_owned(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", id, &["start", id])
    }

    pub fn kill(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        self.run("kill", id, &["kill", id, &(signal as i32).to_string()])
    }

    /// `runc delete --force`; a container runc does not know is fine. Removes runc's directory by hand if
    /// runc cannot (a corrupt state file from a crash).
    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.root.join(id);
        if !dir.exists() {
            return Ok(());
        }
        if let Err(e) = self.run("delete", id, &["delete", "--force", id]) {
            if !dir.exists() {
                return Ok(());
            }
            tracing::warn!(id, "{e}; removing runc's state by hand");
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(())
    }

    pub fn exists(&self, id: &str) -> bool {
        self.root.join(id).join("state.json").exists()
    }

    /// The ids of every container runc has state for.
    pub fn list(&self) -> Result<Vec<String>, RuntimeError> {
        super::dir_names(&self.root)
    }

    pub fn status(&self, id: &str) -> RuncStatus {
        let dir = self.root.join(id);
        let Ok(bytes) = fs::read(dir.join("state.json")) else {
            return RuncStatus::Absent;
        };
        let Ok(state) = serde_json::from_slice::<StateFile>(&bytes) else {
            // runc rewrites the file in place on some operations; treat a torn read as still there.
            return RuncStatus::Stopped;
        };
        if !process_matches(state.init_process_pid, state.init_process_start) {
            return RuncStatus::Stopped;
        }
        if dir.join("exec.fifo").exists() {
            RuncStatus::Created {
                pid: state.init_process_pid,
            }
        } else {
            RuncStatus::Running {
                pid: state.init_process_pid,
                created: state.created,
            }
        }
    }
}

/// Whether `pid` is alive (not a zombie) and is the process that started at `start` (clock ticks after
/// boot), not a later one that reused the pid.
pub(crate) fn process_matches(pid: u32, start: u64) -> bool {
    match proc_stat(pid) {
        Some((state, started)) => state != 'Z' && state != 'X' && started == start,
        None => false,
    }
}

/// State letter and start time of a process, from `/proc/<pid>/stat`.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain anything, including ") "; the fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_matches_its_start_time_only() {
        let pid = std::process::id();
        let (state, start) = proc_stat(pid).unwrap();
        assert_ne!(state, 'Z');
        assert!(process_matches(pid, start));
        assert!(!process_matches(pid, start + 1));
    }
}
