//! The agent's configuration and [`run`], which wires the node, the pod manager, image GC and the kubelet
//! API together and stops them all when `stop` turns true.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use rkube_oci::runtime::RuntimeConfig;

/// Everything the agent needs; `rkube agent` and `rkube server` fill it from their flags.
#[derive(Clone)]
pub struct AgentConfig {
    /// How to reach the API server (server URL, bearer token, cluster CA).
    pub kubeconfig: kube::Config,
    pub node_name: String,
    /// The node's InternalIP; `None`: the address of the interface with the default route.
    pub node_ip: Option<IpAddr>,
    /// `DIR/agent`: images, containers, pods, network state.
    pub data_dir: PathBuf,
    /// Where container logs go (`/var/log/pods` on a real node).
    pub pod_log_dir: PathBuf,
    /// The kubelet API's port (10250).
    pub kubelet_port: u16,
    /// Nameservers pods with `dnsPolicy: ClusterFirst` get (10.43.0.10).
    pub cluster_dns: Vec<IpAddr>,
    /// `cluster.local`.
    pub cluster_domain: String,
    /// All nodes' pod CIDRs together (10.42.0.0/16); the node's own block comes from `spec.podCIDR`.
    pub cluster_cidr: String,
    /// The Service ClusterIP range (10.43.0.0/16), for the proxy and the routing fallbacks.
    pub service_cidr: String,
    /// Also run the node's share of Services: the nftables service proxy, cluster DNS on the node IP
    /// (published as a `kube-dns` endpoint) and host-gw routes to the other nodes' pods.
    pub node_services: bool,
    /// Registries (`host:port`) pulled from over plain HTTP besides the loopback ones.
    pub insecure_registries: Vec<String>,
    pub runtime: RuntimeConfig,
    /// The CNI plugins (`/usr/lib/cni`).
    pub cni_bin_dir: PathBuf,
    /// The host's resolver configuration pods with `dnsPolicy: Default` inherit (`/etc/resolv.conf`).
    pub host_resolv_conf: PathBuf,
    /// Extra labels for the Node object.
    pub node_labels: BTreeMap<String, String>,
    /// Image GC starts above this much disk usage (percent of the image store's filesystem) …
    pub image_gc_high_percent: u8,
    /// … and frees down to this.
    pub image_gc_low_percent: u8,
}

impl AgentConfig {
    /// A configuration with Kubernetes' (and k3s') defaults for everything but the essentials.
    pub fn new(kubeconfig: kube::Config, node_name: &str, data_dir: PathBuf, runtime: RuntimeConfig) -> Self {
        AgentConfig {
            kubeconfig,
            node_name: node_name.into(),
            node_ip: None,
            data_dir,
            pod_log_dir: PathBuf::from("/var/log/pods"),
            kubelet_port: 10250,
            cluster_dns: vec![IpAddr::from([10, 43, 0, 10])],
            cluster_domain: "cluster.local".into(),
            cluster_cidr: "10.42.0.0/16".into(),
            service_cidr: "10.43.0.0/16".into(),
            node_services: true,
            insecure_registries: Vec::new(),
            runtime,
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            node_labels: BTreeMap::new(),
            image_gc_high_percent: 85,
            image_gc_low_percent: 80,
        }
    }
}

/// Runs the agent until `stop` turns true. Containers keep running after it returns (a restarted agent
/// adopts them). Fails when the node cannot be registered or the runtime cannot start.
pub async fn run(config: AgentConfig, stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    crate::pods::run_agent(config, stop).await
}
