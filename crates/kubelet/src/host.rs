//! Facts about the host the Node reports: CPUs, memory, disk, kernel, OS, runc's version, the node address,
//! and the pressure signals behind the MemoryPressure / DiskPressure / PIDPressure conditions.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// What the Node's capacity and nodeInfo are made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Size of the filesystem holding the agent's data dir.
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    /// `runc://1.1.5`.
    pub container_runtime_version: String,
    pub machine_id: String,
    pub boot_id: String,
}

/// Pressure signals, as the kubelet's eviction manager would see them (default hard thresholds:
/// memory.available < 100Mi, nodefs.available < 10%, and PIDs above 90 % of `pid_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `MemTotal` or another `/proc/meminfo` field, in bytes.
pub fn meminfo(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// `PRETTY_NAME` of an os-release file.
pub fn os_pretty_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// The version in `runc --version`'s first line (`runc version 1.1.5+ds1`).
pub fn runc_version_from(output: &str) -> Option<String> {
    output
        .lines()
        .next()?
        .strip_prefix("runc version ")
        .map(|v| v.trim().to_string())
}

/// Total and available bytes of the filesystem holding `path`.
pub fn disk(path: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let frag = s.fragment_size();
            (s.blocks() * frag, s.blocks_available() * frag)
        }
        Err(_) => (0, 0),
    }
}

/// Gathers the facts once at start.
pub fn facts(data_dir: &Path, runc: &Path) -> HostFacts {
    let runc_version = std::process::Command::new(runc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| runc_version_from(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_else(|| "unknown".into());
    HostFacts {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: meminfo(&read("/proc/meminfo"), "MemTotal").unwrap_or(0),
        ephemeral_storage_bytes: disk(data_dir).0,
        kernel_version: read("/proc/sys/kernel/osrelease"),
        os_image: os_pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
        container_runtime_version: format!("runc://{runc_version}"),
        machine_id: read("/etc/machine-id"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
    }
}

/// The current pressure signals.
pub fn pressure(data_dir: &Path) -> Pressure {
    let available = meminfo(&read("/proc/meminfo"), "MemAvailable").unwrap_or(u64::MAX);
    let (total, free) = disk(data_dir);
    let pid_max: u64 = read("/proc/sys/kernel/pid_max").parse().unwrap_or(u64::MAX);
    let pids = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    Pressure {
        memory: available < 100 * 1024 * 1024,
        disk: total > 0 && free * 10 < total,
        pid: pids * 10 > pid_max * 9,
    }
}

/// The interface of the default route in `/proc/net/route`, if any.
pub fn default_route_interface(route_table: &str) -> Option<String> {
    route_table.lines().skip(1).find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        (fields.len() > 2 && fields[1] == "00000000").then(|| fields[0].to_string())
    })
}

/// The node's address: the IPv4 address of the default route's interface, else the first non-loopback
/// IPv4 address, else 127.0.0.1. Looked up in the calling thread's network namespace; sends nothing.
pub fn detect_node_ip() -> IpAddr {
    let default_if = default_route_interface(&read("/proc/net/route"));
    let mut first = None;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(ip) = a
                .address
                .as_ref()
                .and_then(|s| s.as_sockaddr_in())
                .map(|s| s.ip())
            else {
                continue;
            };
            if ip.is_loopback() {
                continue;
            }
            if Some(&a.interface_name) == default_if.as_ref() {
                return IpAddr::V4(ip);
            }
            first.get_or_insert(ip);
        }
    }
    IpAddr::V4(first.unwrap_or(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_etc_files() {
        let meminfo_text = "MemTotal:       16318412 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(meminfo(meminfo_text, "MemTotal"), Some(16318412 * 1024));
        assert_eq!(meminfo(meminfo_text, "MemAvailable"), Some(8000000 * 1024));
        assert_eq!(meminfo(meminfo_text, "Nope"), None);
        assert_eq!(
            os_pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            runc_version_from("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\nspec: 1.0.2-dev\n").as_deref(),
            Some("1.1.5+ds1")
        );
        let routes = "Iface\tDestination\tGateway\tFlags\nveth0\t002AA8C0\t00000000\t0001\neth0\t00000000\t0101A8C0\t0003\n";
        assert_eq!(default_route_interface(routes).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn facts_of_this_host_are_plausible() {
        let f = facts(Path::new("/"), Path::new("/usr/sbin/runc"));
        assert!(f.cpus >= 1);
        assert!(f.memory_bytes > 0);
        assert!(f.ephemeral_storage_bytes > 0);
        assert!(f.container_runtime_version.starts_with("runc://"));
    }
}
