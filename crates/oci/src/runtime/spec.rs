//! The OCI runtime-spec `config.json` for a container, with the defaults container runtimes use:
//! containerd's capability set, runc's masked and read-only paths, the usual `/dev` and `/proc` mounts.

use std::path::Path;

use serde_json::{Value, json};

use super::ContainerConfig;

/// The capabilities a non-privileged container gets (containerd's and Docker's default set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux defines, in bit order (privileged containers and `add: [ALL]`).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// runc's default masked paths: kernel information a container has no business reading.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cap_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The capability set after Kubernetes' rules: privileged gets all; otherwise the default set, minus
/// `drop` (`ALL` drops everything), plus `add` (`ALL` adds everything).
pub fn capabilities(privileged: bool, add: &[String], drop: &[String]) -> Vec<String> {
    if privileged {
        return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    let is_all = |n: &String| n.trim().eq_ignore_ascii_case("ALL");
    let mut caps: Vec<String> = if drop.iter().any(is_all) {
        Vec::new()
    } else {
        let drop: Vec<String> = drop.iter().map(|d| cap_name(d)).collect();
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    let add: Vec<String> = if add.iter().any(is_all) {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        add.iter().map(|a| cap_name(a)).collect()
    };
    for cap in add {
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    caps
}

/// The capabilities in this process's bounding set, from `/proc/self/status`.
fn own_bounding_set() -> Option<Vec<String>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?.trim();
    let mask = u64::from_str_radix(hex, 16).ok()?;
    Some(
        ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, name)| name.to_string())
            .collect(),
    )
}

/// Builds `config.json`. `rootfs` is the mounted overlay, `cgroups_path` absolute (cgroupfs style), `shm`
/// the sandbox's shared `/dev/shm` (a private tmpfs when `None`).
pub fn build(c: &ContainerConfig, rootfs: &Path, cgroups_path: &str, shm: Option<&Path>) -> Value {
    let p = &c.process;
    let mut env = p.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    if p.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    let mut caps = capabilities(c.privileged, &c.cap_add, &c.cap_drop);
    // A capability outside our own bounding set cannot be granted (runc fails the create); "all" means all
    // we have, as with containerd.
    if let Some(bounding) = own_bounding_set() {
        caps.retain(|c| bounding.contains(c));
    }
    let cwd = if p.cwd.is_empty() { "/" } else { p.cwd.as_str() };
    let sys_options = if c.privileged {
        json!(["nosuid", "noexec", "nodev", "rw"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", if c.privileged { "rw" } else { "ro" }]}),
    ];
    mounts.push(match shm {
        Some(shm) => json!({"destination": "/dev/shm", "type": "bind", "source": shm,
                            "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev"]}),
        None => json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    });
    for m in &c.mounts {
        let mut options = vec!["rbind", "rprivate"];
        if m.read_only {
            options.push("ro");
        }
        mounts.push(
            json!({"destination": m.destination, "type": "bind", "source": m.source, "options": options}),
        );
    }

    let mut resources = json!({});
    let r = &c.resources;
    if let Some(limit) = r.memory_limit {
        resources["memory"] = json!({"limit": limit});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(quota) = r.cpu_quota {
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
    } else if let Some(period) = r.cpu_period {
        cpu.insert("period".into(), json!(period));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = r.pids_limit {
        resources["pids"] = json!({"limit": limit});
    }
    let mut linux = json!({
        "namespaces": [
            {"type": "pid"},
            {"type": "mount"},
            {"type": "network", "path": c.sandbox.netns},
            {"type": "ipc", "path": c.sandbox.ipcns},
            {"type": "uts", "path": c.sandbox.utsns},
        ],
        "cgroupsPath": cgroups_path,
        "resources": resources,
    });
    if c.privileged {
        linux["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        linux["devices"] = Value::Array(host_devices());
    } else {
        linux["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": p.tty,
            "user": {"uid": p.uid, "gid": p.gid, "additionalGids": p.additional_gids},
            "args": p.args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false,
            "oomScoreAdj": 0,
        },
        "root": {"path": rootfs, "readonly": c.read_only_rootfs},
        "mounts": mounts,
        "linux": linux,
    });
    if !c.hostname.is_empty() {
        spec["hostname"] = json!(c.hostname);
    }
    spec
}

/// The host's device nodes under /dev (one level of subdirectories), for privileged containers.
fn host_devices() -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("/dev")];
    let mut depth = 0;
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            // /dev/pts and /dev/shm are mounted by the spec; the container's console is its own.
            if ft.is_dir() && depth == 0 && !["pts", "shm", "mqueue"].iter().any(|n| path.ends_with(n)) {
                dirs.push(path);
                continue;
            }
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
                continue;
            }
            let rdev = meta.rdev();
            out.push(json!({
                "path": path, "type": kind,
                "major": nix::sys::stat::major(rdev), "minor": nix::sys::stat::minor(rdev),
                "fileMode": meta.mode() & 0o777, "uid": meta.uid(), "gid": meta.gid(),
            }));
        }
        depth = 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{BindMount, ProcessSpec, Resources, Sandbox};

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "c1".into(),
            sandbox: Sandbox {
                id: "s1".into(),
                netns: "/s/net".into(),
                ipcns: "/s/ipc".into(),
                utsns: "/s/uts".into(),
            },
            process: ProcessSpec {
                args: vec!["sh".into()],
                uid: 1000,
                gid: 1000,
                additional_gids: vec![5],
                ..Default::default()
            },
            mounts: vec![BindMount {
                destination: "/etc/hosts".into(),
                source: "/pod/hosts".into(),
                read_only: true,
            }],
            resources: Resources {
                memory_limit: Some(64 << 20),
                cpu_quota: Some(50_000),
                pids_limit: Some(100),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn joins_the_sandbox_and_owns_pid_and_mount_namespaces() {
        let spec = build(&config(), Path::new("/b/rootfs"), "/p/podu/c1", None);
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/s/net"})));
        assert!(ns.contains(&json!({"type": "uts", "path": "/s/uts"})));
        assert!(ns.contains(&json!({"type": "pid"})));
        assert!(ns.contains(&json!({"type": "mount"})));
        assert_eq!(spec["linux"]["cgroupsPath"], "/p/podu/c1");
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(
            spec["linux"]["resources"]["cpu"],
            json!({"quota": 50_000, "period": 100_000})
        );
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 100);
        assert_eq!(
            spec["process"]["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [5]})
        );
        assert!(spec["process"]["env"][0].as_str().unwrap().starts_with("PATH="));
        assert!(
            spec.get("hostname").is_none(),
            "empty hostname keeps the sandbox's"
        );
        let hosts = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/etc/hosts")
            .unwrap();
        assert_eq!(hosts["options"], json!(["rbind", "rprivate", "ro"]));
        assert!(
            spec["linux"]["maskedPaths"]
                .as_array()
                .unwrap()
                .contains(&json!("/proc/kcore"))
        );
    }

    #[test]
    fn privileged_gets_every_capability_device_and_a_writable_sys() {
        let mut c = config();
        c.privileged = true;
        let spec = build(&c, Path::new("/b/rootfs"), "/p", None);
        assert_eq!(
            spec["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            own_bounding_set().unwrap().len()
        );
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        assert!(spec["linux"].get("maskedPaths").is_none());
        let sys = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(sys["options"].as_array().unwrap().contains(&json!("rw")));
    }

    #[test]
    fn capability_add_and_drop_follow_kubernetes() {
        let caps = capabilities(false, &["NET_ADMIN".into()], &["KILL".into(), "cap_chown".into()]);
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert!(caps.contains(&"CAP_SETUID".to_string()));
        assert_eq!(
            capabilities(false, &["NET_BIND_SERVICE".into()], &["ALL".into()]),
            ["CAP_NET_BIND_SERVICE"]
        );
        assert_eq!(
            capabilities(false, &["ALL".into()], &[]).len(),
            ALL_CAPABILITIES.len()
        );
    }
}
