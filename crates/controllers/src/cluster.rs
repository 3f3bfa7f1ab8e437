//! Settings of the cluster-level controllers (node IPAM, node lifecycle, pod GC — the `rkube server` flags
//! `--cluster-cidr`, `--node-monitor-grace-period`, …) and the start-up step they share.

use std::time::Duration;

use crate::informer::{Informer, Watched};

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
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            cluster_cidr: "10.42.0.0/16".into(),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(50),
            node_monitor_period: Duration::from_secs(5),
            terminated_pod_gc_threshold: 12_500,
        }
    }
}

/// Wait until the informer's first list is cached. kube-rs' readiness future keeps only the waker of its last
/// poller, so when several controllers wait on one informer at once some would never wake; polling it again
/// every few milliseconds makes each waiter notice on its own.
pub async fn wait_synced<K: Watched>(informer: &Informer<K>) {
    while tokio::time::timeout(Duration::from_millis(50), informer.wait_synced())
        .await
        .is_err()
    {}
}
