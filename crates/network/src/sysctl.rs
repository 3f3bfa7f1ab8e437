//! Per-network-namespace sysctls, written from the calling thread so they land in *its* namespace.
//! Keys are paths below `/proc/sys` (`net/ipv4/ip_forward`) so interface names with dots stay intact.

use std::io;
use std::path::PathBuf;

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key)
}

/// Reads a sysctl such as `net/ipv4/ip_forward`.
pub(crate) fn get(key: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(path(key))?.trim().to_string())
}

/// Sets a sysctl unless it already has `value` (so a read-only /proc/sys that is already right is no error).
pub(crate) fn ensure(key: &str, value: &str) -> io::Result<()> {
    if get(key)? == value {
        return Ok(());
    }
    std::fs::write(path(key), value)
}
