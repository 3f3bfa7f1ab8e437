//! Reading `/proc/self/mountinfo` and unmounting what may or may not be mounted.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

use super::{RuntimeError, sys_err};

/// One line of mountinfo: where it is mounted and what filesystem it is.
#[derive(Debug, Clone)]
pub(crate) struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// The current mount table. Unreadable mountinfo reads as empty (callers then just try to unmount).
pub(crate) fn mounts() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = unescape(left.split(' ').nth(4)?);
    let fs_type = right.split(' ').next()?.to_owned();
    Some(MountEntry {
        mount_point: PathBuf::from(mount_point),
        fs_type,
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn is_mounted(path: &Path) -> bool {
    mounts().iter().any(|m| m.mount_point == path)
}

/// Detaches every mount stacked on `path`; nothing mounted (or no such path) is fine.
pub(crate) fn unmount_all(path: &Path) -> Result<(), RuntimeError> {
    for _ in 0..16 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(e) => return Err(sys_err(format!("umount {}", path.display()))(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escaped_spaces() {
        let line =
            "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        let m = parse_line(line).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m.fs_type, "ext3");
    }
}
