//! Settings of the cluster-level controllers (node IPAM, node lifecycle, pod GC, LoadBalancer addresses — the
//! `rkube server` flags `--cluster-cidr`, `--node-monitor-grace-period`, `--lb-ip-pool`, …).

use std::time::Duration;

/// Cluster-wide settings, as kube-controller-manager takes them from its flags.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--cluster-cidr`: the pod network each node gets a `/node_cidr_mask_size` block of.
    pub cluster_cidr: String,
    /// `--node-cidr-mask-size`: the prefix length of each node's pod CIDR.
    pub node_cidr_mask_size: u8,
    /// `--node-monitor-grace-period`: how long a node may go without renewing its Lease before it is Unknown.
    pub node_monitor_grace_period: Duration,
    /// How often the node lifecycle controller looks at every node (`--node-monitor-period`).
    pub node_monitor_period: Duration,
    /// `--terminated-pod-gc-threshold`: finished pods kept before the oldest are deleted (0 disables).
    pub terminated_pod_gc_threshold: usize,
    /// How often the pod garbage collector runs (Kubernetes' `gcCheckPeriod`).
    pub pod_gc_period: Duration,
    /// `--lb-ip-pool`: addresses for LoadBalancer Services, each entry `CIDR` or `A-B` (comma lists allowed);
    /// empty means the nodes' own addresses serve as ingress (see [`crate::servicelb`]).
    pub lb_ip_pool: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            cluster_cidr: "10.42.0.0/16".into(),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(50),
            node_monitor_period: Duration::from_secs(5),
            terminated_pod_gc_threshold: 12_500,
            pod_gc_period: Duration::from_secs(20),
            lb_ip_pool: Vec::new(),
        }
    }
}
