//! The proxy's side effects on the node: `nft -f -` transactions and `conntrack -D` flushes, behind
//! [`Kernel`] so the sync loop can be driven against a recording fake.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::compile::ConntrackFlush;

/// Errors talking to the kernel through nft / conntrack.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The tool could not be started (missing binary, no permission).
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    /// `nft -f` refused the transaction; nothing of it was applied (nft transactions are atomic).
    #[error("nft rejected the transaction: {stderr}")]
    Rejected { stderr: String },
    /// `conntrack` failed for a reason other than "no matching entries".
    #[error("conntrack {args:?} failed: {stderr}")]
    Conntrack { args: Vec<String>, stderr: String },
}

/// What the proxy does to the node.
pub trait Kernel: Send + Sync + 'static {
    /// Apply one `nft -f` script atomically: all of it or nothing.
    fn apply(&self, script: &str) -> Result<(), KernelError>;
    /// Delete matching UDP conntrack entries.
    fn flush_conntrack(&self, flush: &ConntrackFlush) -> Result<(), KernelError>;
}

/// The real kernel through the `nft` and `conntrack` command-line tools. Each command is a prefix list so
/// tests and the benchmark can run them in a network namespace (`ip netns exec NS nft`).
#[derive(Clone, Debug)]
pub struct NftCli {
    pub nft: Vec<String>,
    pub conntrack: Vec<String>,
}

impl Default for NftCli {
    fn default() -> Self {
        NftCli {
            nft: vec!["nft".into()],
            conntrack: vec!["conntrack".into()],
        }
    }
}

impl NftCli {
    /// Tools run inside the named network namespace (`/run/netns/<name>`).
    pub fn in_netns(netns: &str) -> NftCli {
        let prefix = |tool: &str| ["ip", "netns", "exec", netns, tool].map(String::from).to_vec();
        NftCli {
            nft: prefix("nft"),
            conntrack: prefix("conntrack"),
        }
    }

    /// Run an nft command (e.g. `["list", "table", "ip", "rkube"]`) and return its output.
    pub fn nft_output(&self, args: &[&str]) -> Result<String, KernelError> {
        let out = Command::new(&self.nft[0])
            .args(&self.nft[1..])
            .args(args)
            .output()
            .map_err(|source| KernelError::Spawn {
                program: self.nft[0].clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(KernelError::Rejected {
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Kernel for NftCli {
    fn apply(&self, script: &str) -> Result<(), KernelError> {
        let spawn_err = |source| KernelError::Spawn {
            program: self.nft[0].clone(),
            source,
        };
        let mut child = Command::new(&self.nft[0])
            .args(&self.nft[1..])
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(script.as_bytes()));
        let out = child.wait_with_output().map_err(spawn_err)?;
        if !out.status.success() {
            return Err(KernelError::Rejected {
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        if let Some(Err(source)) = written {
            return Err(spawn_err(source));
        }
        Ok(())
    }

    fn flush_conntrack(&self, flush: &ConntrackFlush) -> Result<(), KernelError> {
        let args = flush.args();
        let out = Command::new(&self.conntrack[0])
            .args(&self.conntrack[1..])
            .args(&args)
            .output()
            .map_err(|source| KernelError::Spawn {
                program: self.conntrack[0].clone(),
                source,
            })?;
        // conntrack exits 1 with "0 flow entries have been deleted" when nothing matched: not an error.
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() || stderr.contains("0 flow entries") {
            Ok(())
        } else {
            Err(KernelError::Conntrack { args, stderr })
        }
    }
}

/// A [`Kernel`] that records what it was asked to do, for tests; `fail_next` makes the next apply fail.
#[derive(Debug, Default)]
pub struct RecordingKernel {
    pub scripts: std::sync::Mutex<Vec<String>>,
    pub flushes: std::sync::Mutex<Vec<ConntrackFlush>>,
    pub fail_next: std::sync::atomic::AtomicBool,
}

impl Kernel for RecordingKernel {
    fn apply(&self, script: &str) -> Result<(), KernelError> {
        if self.fail_next.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(KernelError::Rejected {
                stderr: "injected failure".into(),
            });
        }
        self.scripts.lock().expect("lock").push(script.to_string());
        Ok(())
    }

    fn flush_conntrack(&self, flush: &ConntrackFlush) -> Result<(), KernelError> {
        self.flushes.lock().expect("lock").push(flush.clone());
        Ok(())
    }
}
