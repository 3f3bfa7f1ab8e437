//! The container's root filesystem: an overlay of the image's unpacked layers with a private upper dir.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use super::{RuntimeError, io_err, mounts, sys_err};

/// The kernel takes mount options in one page; longer `lowerdir` lists need shorter paths.
const MAX_OPTIONS: usize = 4000;

/// Mounts `dir/rootfs` as overlay of `lower` (top layer first) with `dir/upper` and `dir/work`.
/// Already mounted (a retried create) is fine.
pub(crate) fn mount_overlay(lower: &[PathBuf], dir: &Path) -> Result<PathBuf, RuntimeError> {
    let rootfs = dir.join("rootfs");
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&rootfs, &upper, &work] {
        fs::create_dir_all(d).map_err(io_err(d))?;
    }
    if mounts::is_mounted(&rootfs) {
        return Ok(rootfs);
    }
    let mut lower = lower.to_vec();
    if lower.is_empty() {
        // overlayfs needs a lower layer even for an image without any.
        let empty = dir.join("empty");
        fs::create_dir_all(&empty).map_err(io_err(&empty))?;
        lower.push(empty);
    }
    for d in lower.iter().chain([&upper, &work]) {
        let s = d.to_string_lossy();
        if s.contains([',', ':']) {
            return Err(RuntimeError::Invalid(format!(
                "overlay path {s:?} contains ',' or ':'"
            )));
        }
        if !d.is_dir() {
            return Err(RuntimeError::Invalid(format!(
                "layer directory {s} does not exist"
            )));
        }
    }
    let lowerdir: Vec<_> = lower.iter().map(|d| d.to_string_lossy().into_owned()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    if options.len() > MAX_OPTIONS {
        return Err(RuntimeError::Invalid(format!(
            "{} layers: overlay options too long ({} bytes)",
            lower.len(),
            options.len()
        )));
    }
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(sys_err(format!("mount overlay on {}", rootfs.display())))?;
    Ok(rootfs)
}

/// Unmounts `dir/rootfs` if mounted.
pub(crate) fn unmount(dir: &Path) -> Result<(), RuntimeError> {
    mounts::unmount_all(&dir.join("rootfs"))
}
