//! Pod sandboxes without a pause process: a throwaway thread unshares network, IPC and UTS namespaces,
//! sets the hostname, brings loopback up and bind-mounts its namespace files, which keeps the namespaces
//! alive until they are unmounted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use super::{RuntimeError, Sandbox, io_err, mounts, sys_err};

const KINDS: [&str; 3] = ["net", "ipc", "uts"];

fn sandbox_at(dir: &Path, id: &str) -> Sandbox {
    let d = dir.join(id);
    Sandbox {
        id: id.to_owned(),
        netns: d.join("net"),
        ipcns: d.join("ipc"),
        utsns: d.join("uts"),
    }
}

/// The tmpfs the sandbox's containers share as `/dev/shm` (they share the IPC namespace, so POSIX shared
/// memory must be shared too).
pub(crate) fn shm_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(id).join("shm")
}

pub(crate) fn create(dir: &Path, id: &str, hostname: &str) -> Result<Sandbox, RuntimeError> {
    let sandbox = sandbox_at(dir, id);
    let shm = shm_dir(dir, id);
    let table = mounts::mounts();
    let mounted = |p: &Path| table.iter().any(|m| m.mount_point == p);
    let files = [&sandbox.netns, &sandbox.ipcns, &sandbox.utsns];
    if files.iter().all(|f| mounted(f)) && mounted(&shm) {
        return Ok(sandbox);
    }
    // Half made by a crashed create: start over.
    remove(dir, id)?;
    let sdir = dir.join(id);
    fs::create_dir_all(&shm).map_err(io_err(&shm))?;
    for f in files {
        fs::File::create(f).map_err(io_err(f))?;
    }
    let made = (|| {
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=1777,size=65536k"),
        )
        .map_err(sys_err(format!("mount tmpfs on {}", shm.display())))?;
        let hostname = hostname.to_owned();
        let targets: Vec<PathBuf> = files.iter().map(|f| (*f).clone()).collect();
        std::thread::spawn(move || pin_new_namespaces(&hostname, &targets))
            .join()
            .unwrap_or_else(|_| Err(RuntimeError::Invalid("sandbox thread panicked".into())))
    })();
    if let Err(e) = made {
        let _ = remove(dir, id);
        return Err(e);
    }
    tracing::debug!(id, dir = %sdir.display(), "sandbox created");
    Ok(sandbox)
}

/// Runs on a thread of its own: namespaces are per thread, and this thread ends right after, taking its
/// namespaces with it — except for the bind mounts that pin them.
fn pin_new_namespaces(hostname: &str, targets: &[PathBuf]) -> Result<(), RuntimeError> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(sys_err("unshare net/ipc/uts"))?;
    if !hostname.is_empty() {
        nix::unistd::sethostname(hostname).map_err(sys_err(format!("sethostname {hostname}")))?;
    }
    // A child started from this thread is born in its network namespace.
    match Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        other => tracing::warn!("bringing up loopback in a sandbox: {other:?}"),
    }
    let tid = nix::unistd::gettid();
    for (kind, target) in KINDS.iter().zip(targets) {
        let source = format!("/proc/self/task/{tid}/ns/{kind}");
        mount(
            Some(source.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys_err(format!("bind {source} to {}", target.display())))?;
    }
    Ok(())
}

pub(crate) fn remove(dir: &Path, id: &str) -> Result<(), RuntimeError> {
    let sandbox = sandbox_at(dir, id);
    for f in [&sandbox.netns, &sandbox.ipcns, &sandbox.utsns, &shm_dir(dir, id)] {
        mounts::unmount_all(f)?;
    }
    let sdir = dir.join(id);
    match fs::remove_dir_all(&sdir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RuntimeError::Io { path: sdir, source }),
    }
}

pub(crate) fn list(dir: &Path) -> Result<Vec<Sandbox>, RuntimeError> {
    Ok(super::dir_names(dir)?
        .iter()
        .map(|id| sandbox_at(dir, id))
        .collect())
}
