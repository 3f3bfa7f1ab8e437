//! Running the helper programs this crate drives (`ip`, CNI plugins) with a deadline.

use std::ffi::OsStr;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// How long an `ip` invocation may take before we give up on it.
pub(crate) const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// A helper program could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (missing binary, permissions).
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    /// Talking to the program's pipes failed.
    #[error("i/o with {program}: {source}")]
    Io { program: String, source: std::io::Error },
    /// The program did not finish in time and was killed.
    #[error("{program} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    /// The program exited unsuccessfully.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
}

impl CommandError {
    /// The program's stderr when it ran and failed (for "already exists"-style checks).
    pub(crate) fn stderr(&self) -> &str {
        match self {
            CommandError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// Runs `cmd` (stdin fed from `input`), waits at most `timeout`, returns its output whatever the exit status.
/// The child is spawned from the calling thread, so it inherits that thread's network namespace.
pub(crate) async fn output(
    mut cmd: tokio::process::Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, CommandError> {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    let run = async {
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input).await?;
            drop(stdin);
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(source)) => Err(CommandError::Io { program, source }),
        Err(_) => Err(CommandError::Timeout { program, timeout }),
    }
}

/// Runs `ip <args>` and returns its stdout; a non-zero exit is an error carrying stderr.
pub(crate) async fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String, CommandError> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(args);
    let out = output(cmd, None, IP_TIMEOUT).await?;
    if !out.status.success() {
        return Err(CommandError::Failed {
            program: "ip".into(),
            args: args
                .iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Blocking variant of [`ip`] for constructors that are not async.
pub(crate) fn ip_blocking<S: AsRef<OsStr>>(args: &[S]) -> Result<String, CommandError> {
    let out = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            program: "ip".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(CommandError::Failed {
            program: "ip".into(),
            args: args
                .iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
