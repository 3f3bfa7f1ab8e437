//! The cgroup facts the runtime needs itself (runc does the rest): OOM kills and removal, on v1 and v2.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::mounts;

/// Every mounted cgroup hierarchy (v1 controllers, v1 named hierarchies, the v2 unified tree).
fn hierarchies() -> Vec<PathBuf> {
    mounts::mounts()
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect()
}

fn join(root: &Path, cgroup: &str) -> PathBuf {
    root.join(cgroup.trim_start_matches('/'))
}

/// Whether the kernel OOM-killed a process in the cgroup (`cgroup` is absolute below the hierarchy
/// roots, as in `cgroupsPath`).
pub(crate) fn oom_killed(cgroup: &str) -> bool {
    // v2 (unified or the only hierarchy): memory.events counts kills.
    let v2 = join(Path::new("/sys/fs/cgroup"), cgroup).join("memory.events");
    if let Some(n) = counter(&v2, "oom_kill") {
        return n > 0;
    }
    let v1 = join(Path::new("/sys/fs/cgroup/memory"), cgroup);
    match counter(&v1.join("memory.oom_control"), "oom_kill") {
        Some(n) => n > 0,
        // Kernels before 4.13 have no oom_kill count: hitting the limit is the best evidence there is.
        None => fs::read_to_string(v1.join("memory.failcnt"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0),
    }
}

fn counter(file: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Removes the cgroup from every hierarchy, then its parent if that became empty (the pod's cgroup).
/// Best effort: a cgroup that still has tasks stays.
pub(crate) fn remove(cgroup: &str) {
    let parent = Path::new(cgroup)
        .parent()
        .map(|p| p.to_string_lossy().into_owned());
    for root in hierarchies() {
        rmdir_tree(&join(&root, cgroup));
        if let Some(parent) = &parent
            && parent != "/"
        {
            let _ = fs::remove_dir(join(&root, parent));
        }
    }
}

/// Removes a cgroup directory and its children, deepest first. A just-killed cgroup can stay busy for a
/// moment while its tasks exit, hence the retries.
pub(crate) fn rmdir_tree(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&entry.path());
        }
    }
    for attempt in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == 49 => tracing::warn!("removing cgroup {}: {e}", dir.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Removes `cgroup` and everything below it from every hierarchy (tests, node teardown).
pub fn remove_tree(cgroup: &str) {
    for root in hierarchies() {
        rmdir_tree(&join(&root, cgroup));
    }
}

/// Whether `cgroup` exists in any hierarchy.
pub fn exists(cgroup: &str) -> bool {
    hierarchies().iter().any(|root| join(root, cgroup).is_dir())
}
