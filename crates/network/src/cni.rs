//! [`CniNetwork`]: the standard CNI plugins (loopback, bridge + host-local, portmap) driven as the CNI 1.0.0
//! specification says, with a conflist written from the node's pod CIDR.
//!
//! Layout under `data_dir/cni` (nothing in `/etc/cni` or `/var/lib/cni`, so agents sharing a host never meet):
//! `net.d/10-rkube.conflist` (the config, for humans and for us), `ipam/<network>/` (host-local's leases),
//! `results/<sandbox>.json` (the request and ADD result, replayed on DEL).
//!
//! Rules from NETWORKING.md §1 this follows: `cniVersion` 1.0.0; `ipMasq: false` (pod source IPs must survive
//! across nodes; masquerade is the service proxy's nft rule); hairpin on; DEL in reverse order with the cached
//! ADD result as `prevResult` and the *same* `runtimeConfig` (else portmap leaks its DNAT chain); never CHECK.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::command::{self, CommandError};
use crate::{NodeNetConfig, PodNetRequest, PodNetStatus, PodNetwork, PortMapping, bridge_name, network_name};

/// The CNI spec version we speak; Debian's plugins 1.1.1 support up to 1.0.0.
pub const CNI_VERSION: &str = "1.0.0";
/// How long one plugin invocation may take (bridge waits for the veth and IPAM's file lock).
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Interface name of the pod's network device.
const POD_IFNAME: &str = "eth0";

/// Errors of the pod network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The node's pod CIDR is not an IPv4/IPv6 prefix.
    #[error("invalid pod CIDR {0:?}")]
    InvalidCidr(String),
    /// A plugin binary is missing from the CNI bin dir (install `containernetworking-plugins`).
    #[error("CNI plugin {0} not found (install Debian's containernetworking-plugins)")]
    PluginMissing(PathBuf),
    /// A plugin could not be run or did not finish.
    #[error("CNI plugin {plugin}: {source}")]
    Exec { plugin: String, source: CommandError },
    /// A plugin reported an error (CNI error object: code, msg, details).
    #[error("CNI {command} {plugin} failed (code {code}): {msg}{details}")]
    Plugin {
        command: &'static str,
        plugin: String,
        code: u64,
        msg: String,
        details: String,
    },
    /// A plugin printed something that is not a CNI result.
    #[error("CNI plugin {plugin} returned an unreadable result: {source}")]
    BadResult {
        plugin: String,
        source: serde_json::Error,
    },
    /// The ADD result names no address on the pod's interface.
    #[error("CNI result for sandbox {0} has no IP on the pod interface")]
    NoPodIp(String),
    /// Reading or writing the config, cache or state dirs failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Paths of one node's CNI files.
#[derive(Debug, Clone)]
struct CniPaths {
    conflist: PathBuf,
    ipam_dir: PathBuf,
    results_dir: PathBuf,
}

impl CniPaths {
    fn new(data_dir: &Path) -> Self {
        let root = data_dir.join("cni");
        CniPaths {
            conflist: root.join("net.d").join("10-rkube.conflist"),
            ipam_dir: root.join("ipam"),
            results_dir: root.join("results"),
        }
    }
}

/// One plugin invocation.
struct Call<'a> {
    command: &'static str,
    plugin_conf: &'a Value,
    ifname: &'a str,
    netns: &'a Path,
    prev_result: Option<&'a Value>,
    port_mappings: &'a [PortMapping],
}

impl<'a> Call<'a> {
    fn new(command: &'static str, plugin_conf: &'a Value, ifname: &'a str, netns: &'a Path) -> Self {
        Call {
            command,
            plugin_conf,
            ifname,
            netns,
            prev_result: None,
            port_mappings: &[],
        }
    }
}

/// What we remember between ADD and DEL of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedAttachment {
    request: PodNetRequest,
    /// The final ADD result (`None` while ADD is in progress or when it failed).
    result: Option<Value>,
}

/// The node's pod network through the standard CNI plugins. See the module docs.
#[derive(Debug, Clone)]
pub struct CniNetwork {
    config: NodeNetConfig,
    paths: CniPaths,
    conflist: Value,
}

impl CniNetwork {
    /// Writes the node's conflist and state dirs, sets the node sysctls the data path needs and routes the
    /// cluster CIDR to `unreachable` (a fallback, so pod traffic never leaves by the default route). Acts in
    /// the calling thread's network namespace.
    pub fn new(config: NodeNetConfig) -> Result<Self, NetworkError> {
        crate::routes::parse_cidr(&config.pod_cidr)
            .ok_or_else(|| NetworkError::InvalidCidr(config.pod_cidr.clone()))?;
        let paths = CniPaths::new(&config.data_dir);
        let conflist = conflist(
            &network_name(&config.node_name),
            &bridge_name(&config.node_name),
            &config.pod_cidr,
            &paths.ipam_dir,
        );
        for dir in [
            paths.conflist.parent().expect("conflist has a parent"),
            &paths.ipam_dir,
            &paths.results_dir,
        ] {
            std::fs::create_dir_all(dir).map_err(|source| NetworkError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let text = serde_json::to_string_pretty(&conflist).expect("conflist serializes");
        write_atomic(&paths.conflist, text.as_bytes())?;
        for plugin in ["loopback", "bridge", "host-local", "portmap"] {
            let bin = config.cni_bin_dir.join(plugin);
            if !bin.exists() {
                return Err(NetworkError::PluginMissing(bin));
            }
        }
        prepare_node_sysctls();
        if let Err(e) = crate::routes::ensure_unreachable_blocking(&config.cluster_cidr) {
            tracing::warn!(cidr = %config.cluster_cidr, error = %e, "cannot add the unreachable fallback route");
        }
        Ok(CniNetwork {
            config,
            paths,
            conflist,
        })
    }

    /// The conflist this network was configured with.
    pub fn conflist(&self) -> &Value {
        &self.conflist
    }

    /// Sandboxes with a cached attachment (ADD started or finished, DEL not yet done): at agent start, DEL the
    /// ones whose pod no longer exists to release their IPs and host ports.
    pub fn cached_attachments(&self) -> Result<Vec<PodNetRequest>, NetworkError> {
        let dir = &self.paths.results_dir;
        let entries = std::fs::read_dir(dir).map_err(|source| NetworkError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(cached) = read_cache(&path)
            {
                out.push(cached.request);
            }
        }
        Ok(out)
    }

    fn cache_path(&self, sandbox_id: &str) -> PathBuf {
        let safe = sandbox_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let name = if safe && !sandbox_id.is_empty() && !sandbox_id.starts_with('.') {
            sandbox_id.to_string()
        } else {
            use sha2::Digest;
            sha2::Sha256::digest(sandbox_id.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        self.paths.results_dir.join(format!("{name}.json"))
    }

    fn write_cache(&self, cached: &CachedAttachment) -> Result<(), NetworkError> {
        let text = serde_json::to_vec(cached).expect("cache serializes");
        write_atomic(&self.cache_path(&cached.request.sandbox_id), &text)
    }

    fn loopback_conf(&self) -> Value {
        json!({"cniVersion": CNI_VERSION, "name": self.conflist["name"], "type": "loopback"})
    }

    fn plugins(&self) -> Vec<Value> {
        self.conflist["plugins"].as_array().cloned().unwrap_or_default()
    }

    /// Runs one plugin; returns its stdout parsed as JSON (`Null` when it printed nothing, as DEL may).
    async fn invoke(&self, call: Call<'_>, req: &PodNetRequest) -> Result<Value, NetworkError> {
        let Call {
            command,
            plugin_conf,
            ifname,
            netns,
            prev_result,
            port_mappings,
        } = call;
        let plugin = plugin_conf["type"].as_str().unwrap_or_default().to_string();
        let stdin = plugin_stdin(&self.conflist, plugin_conf, prev_result, port_mappings);
        let mut cmd = tokio::process::Command::new(self.config.cni_bin_dir.join(&plugin));
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &req.sandbox_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.config.cni_bin_dir)
            .env("CNI_ARGS", cni_args(req));
        let input = serde_json::to_vec(&stdin).expect("plugin config serializes");
        let out = command::output(cmd, Some(&input), PLUGIN_TIMEOUT)
            .await
            .map_err(|source| NetworkError::Exec {
                plugin: plugin.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(plugin_error(command, &plugin, &out.stdout, &out.stderr));
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|source| NetworkError::BadResult { plugin, source })
    }

    async fn add_chain(&self, req: &PodNetRequest) -> Result<PodNetStatus, NetworkError> {
        let loopback = self.loopback_conf();
        self.invoke(Call::new("ADD", &loopback, "lo", &req.netns), req)
            .await?;
        let mut result: Option<Value> = None;
        for plugin in self.plugins() {
            let call = Call {
                prev_result: result.as_ref(),
                port_mappings: &req.port_mappings,
                ..Call::new("ADD", &plugin, POD_IFNAME, &req.netns)
            };
            let out = self.invoke(call, req).await?;
            // A plugin that prints nothing passes the previous result through.
            if !out.is_null() {
                result = Some(out);
            }
        }
        let result = result.unwrap_or(Value::Null);
        self.write_cache(&CachedAttachment {
            request: req.clone(),
            result: Some(result.clone()),
        })?;
        pod_status(&result).ok_or_else(|| NetworkError::NoPodIp(req.sandbox_id.clone()))
    }
}

#[async_trait::async_trait]
impl PodNetwork for CniNetwork {
    async fn add(&self, req: &PodNetRequest) -> Result<PodNetStatus, NetworkError> {
        // Cache the request first: if we crash during ADD, DEL still gets the same runtimeConfig.
        self.write_cache(&CachedAttachment {
            request: req.clone(),
            result: None,
        })?;
        match self.add_chain(req).await {
            Ok(status) => Ok(status),
            Err(e) => {
                if let Err(del) = self.del(req).await {
                    tracing::warn!(sandbox = %req.sandbox_id, error = %del, "cleanup after failed CNI ADD failed");
                }
                Err(e)
            }
        }
    }

    async fn del(&self, req: &PodNetRequest) -> Result<(), NetworkError> {
        let cache_path = self.cache_path(&req.sandbox_id);
        let cached = read_cache(&cache_path);
        let prev_result = cached.as_ref().and_then(|c| c.result.clone());
        let port_mappings = cached
            .as_ref()
            .map(|c| c.request.port_mappings.clone())
            .unwrap_or_else(|| req.port_mappings.clone());
        // Plugins treat an empty CNI_NETNS on DEL as "the namespace is gone: release state only". A leftover
        // plain file (the bind mount already undone) would make them fail instead, forever.
        let netns = if is_netns(&req.netns) {
            req.netns.clone()
        } else {
            PathBuf::new()
        };
        let mut first_error = None;
        let mut chain: Vec<(Value, &str)> = self.plugins().into_iter().map(|p| (p, POD_IFNAME)).collect();
        chain.insert(0, (self.loopback_conf(), "lo"));
        for (plugin, ifname) in chain.iter().rev() {
            let mut call = Call::new("DEL", plugin, ifname, &netns);
            if *ifname != "lo" {
                call.prev_result = prev_result.as_ref();
                call.port_mappings = &port_mappings;
            }
            if let Err(e) = self.invoke(call, req).await {
                tracing::warn!(sandbox = %req.sandbox_id, error = %e, "CNI DEL");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            // Keep the cache on failure so a retry replays the same prevResult and runtimeConfig.
            Some(e) => Err(e),
            None => match std::fs::remove_file(&cache_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetworkError::Io {
                    path: cache_path,
                    source: e,
                }),
                _ => Ok(()),
            },
        }
    }
}

/// The node's conflist (NETWORKING.md §1), with host-local's leases in `ipam_dir`.
pub fn conflist(network: &str, bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> Value {
    let default_route = if pod_cidr.contains(':') {
        "::/0"
    } else {
        "0.0.0.0/0"
    };
    json!({
        "cniVersion": CNI_VERSION,
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": default_route}],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// The stdin of one plugin in the list: its entry plus the list's name and version, the previous result and
/// the runtimeConfig for the capabilities it declares.
fn plugin_stdin(
    list: &Value,
    plugin: &Value,
    prev_result: Option<&Value>,
    port_mappings: &[PortMapping],
) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = json!(CNI_VERSION);
    if let Some(prev) = prev_result {
        conf["prevResult"] = prev.clone();
    }
    let wants_ports = plugin["capabilities"]["portMappings"].as_bool().unwrap_or(false);
    if wants_ports && !port_mappings.is_empty() {
        let mappings: Vec<Value> = port_mappings
            .iter()
            .map(|m| {
                json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol.to_ascii_lowercase(),
                    "hostIP": m.host_ip,
                })
            })
            .collect();
        conf["runtimeConfig"] = json!({"portMappings": mappings});
    }
    conf
}

/// Kubernetes' CNI_ARGS (what kubelet's dockershim/containerd pass).
fn cni_args(req: &PodNetRequest) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        req.pod_namespace, req.pod_name, req.sandbox_id, req.pod_uid
    )
}

/// Reads a CNI error object (`{code, msg, details}`) from a failed plugin, falling back to its stderr.
fn plugin_error(command: &'static str, plugin: &str, stdout: &[u8], stderr: &[u8]) -> NetworkError {
    #[derive(Deserialize)]
    struct CniError {
        #[serde(default)]
        code: u64,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    match serde_json::from_slice::<CniError>(stdout) {
        Ok(e) => NetworkError::Plugin {
            command,
            plugin: plugin.to_string(),
            code: e.code,
            msg: e.msg,
            details: if e.details.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.details)
            },
        },
        Err(_) => NetworkError::Plugin {
            command,
            plugin: plugin.to_string(),
            code: 0,
            msg: String::from_utf8_lossy(if stdout.is_empty() { stderr } else { stdout })
                .trim()
                .to_string(),
            details: String::new(),
        },
    }
}

/// The pod's IPs from a CNI 1.0.0 result: entries of `ips` whose interface is inside the sandbox.
pub fn pod_status(result: &Value) -> Option<PodNetStatus> {
    let interfaces = result["interfaces"].as_array();
    let in_sandbox = |idx: Option<u64>| match (idx, interfaces) {
        (Some(i), Some(ifs)) => ifs
            .get(i as usize)
            .is_some_and(|itf| itf["sandbox"].as_str().is_some_and(|s| !s.is_empty())),
        // Without interface information every IP is the pod's (as the spec allows).
        (None, _) | (_, None) => true,
    };
    let mut status = PodNetStatus {
        ips: Vec::new(),
        gateway: None,
    };
    for entry in result["ips"].as_array()? {
        if !in_sandbox(entry["interface"].as_u64()) {
            continue;
        }
        let Some(ip) = entry["address"]
            .as_str()
            .and_then(|a| a.split('/').next()?.parse::<IpAddr>().ok())
        else {
            continue;
        };
        status.ips.push(ip);
        if status.gateway.is_none() {
            status.gateway = entry["gateway"].as_str().and_then(|g| g.parse().ok());
        }
    }
    (!status.ips.is_empty()).then_some(status)
}

/// Whether `path` is a network namespace file (an nsfs bind mount or `/proc/<pid>/ns/net`).
fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

fn read_cache(path: &Path) -> Option<CachedAttachment> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable CNI cache entry");
            None
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NetworkError> {
    let tmp = path.with_extension("tmp");
    let io = |source| NetworkError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// `bridge-nf-call-iptables` (per network namespace on this kernel) makes pod → ClusterIP → pod on the same
/// bridge pass the nat hooks. The knob exists only once `br_netfilter` is loaded; we try `modprobe` and
/// otherwise warn, since only that case (hairpin through a Service) breaks without it.
fn prepare_node_sysctls() {
    const BRIDGE_NF: &str = "net/bridge/bridge-nf-call-iptables";
    if crate::sysctl::get(BRIDGE_NF).is_err() {
        let loaded = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !loaded {
            tracing::warn!(
                "br_netfilter is not loaded and modprobe failed: pods reaching a Service backed by a pod on the \
                 same node may fail; run `modprobe br_netfilter`"
            );
        }
    }
    for (key, value) in [(BRIDGE_NF, "1"), ("net/ipv4/ip_forward", "1")] {
        if let Err(e) = crate::sysctl::ensure(key, value) {
            tracing::warn!(key, error = %e, "cannot set sysctl");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_matches_the_verified_layout() {
        let c = conflist("rkube-n1", "rk-n1", "10.42.1.0/24", Path::new("/d/cni/ipam"));
        assert_eq!(c["cniVersion"], "1.0.0");
        let bridge = &c["plugins"][0];
        assert_eq!(bridge["bridge"], "rk-n1");
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["hairpinMode"], true);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.42.1.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/d/cni/ipam");
        assert_eq!(c["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn runtime_config_only_for_plugins_with_the_capability() {
        let list = conflist("n", "b", "10.42.1.0/24", Path::new("/x"));
        let pm = vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "TCP".into(),
            host_ip: String::new(),
        }];
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let bridge = plugin_stdin(&list, &list["plugins"][0], None, &pm);
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());
        assert_eq!(bridge["name"], "n");
        let portmap = plugin_stdin(&list, &list["plugins"][1], Some(&prev), &pm);
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["protocol"], "tcp");
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(portmap["prevResult"], prev);
    }

    #[test]
    fn pod_ip_is_the_one_on_the_sandbox_interface() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "rk-n1", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:00"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"interface": 0, "address": "10.42.1.1/24"},
                {"interface": 2, "address": "10.42.1.5/24", "gateway": "10.42.1.1"}
            ]
        });
        let status = pod_status(&result).unwrap();
        assert_eq!(status.ips, vec!["10.42.1.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(status.gateway, Some("10.42.1.1".parse().unwrap()));
        assert!(pod_status(&json!({"ips": []})).is_none());
    }

    #[test]
    fn plugin_errors_carry_the_cni_error_object() {
        let e = plugin_error(
            "ADD",
            "bridge",
            br#"{"code":11,"msg":"no IP addresses available"}"#,
            b"",
        );
        assert_eq!(
            e.to_string(),
            "CNI ADD bridge failed (code 11): no IP addresses available"
        );
        let e = plugin_error("DEL", "portmap", b"", b"boom\n");
        assert!(e.to_string().contains("boom"));
    }
}
