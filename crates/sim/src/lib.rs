//! rkube-sim: simulated nodes, like kwok. One process registers many Nodes that run no containers, keeps
//! their Leases and status fresh, and moves the pods bound to them through their lifecycle (Running and
//! Ready with an address from the node's `spec.podCIDR`; deletion honoured) — for scale tests, node-loss
//! tests and benchmarks. Everything goes through the Kubernetes HTTP API.
//!
//! Start reading at [`run`]; the pure rules are in [`pod`] (lifecycle), [`node`] (what a node reports)
//! and [`ipam`] (pod addresses); [`simulator`] is the I/O shell.

pub mod ipam;
pub mod node;
pub mod pod;
pub mod simulator;

use std::time::Duration;

pub use simulator::run;

/// How many nodes to simulate and what they look like.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Nodes `<name_prefix>-0 … <name_prefix>-<count-1>`.
    pub count: usize,
    pub name_prefix: String,
    /// Capacity (= allocatable) of every node, as Kubernetes quantities.
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    /// How often each node renews its Lease (the kubelet: every 10 s, a quarter of the 40 s duration).
    pub lease_renew_interval: Duration,
    /// How often each node re-posts its status although nothing changed (the kubelet's
    /// `nodeStatusReportFrequency`, 5 min). A node that is seen not Ready posts at once.
    pub status_report_interval: Duration,
    /// API requests in flight at most, for all nodes together.
    pub max_concurrent_requests: usize,
    /// Run the pods bound to the nodes. Off, the nodes only heartbeat: pods stay Pending on them, as in
    /// kube-scheduler's benchmarks without node agents.
    pub manage_pods: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            count: 1,
            name_prefix: "sim".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
            lease_renew_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(300),
            max_concurrent_requests: 32,
            manage_pods: true,
        }
    }
}

/// Why the simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The options cannot describe a set of nodes.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A node could not be registered even after retries.
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
}
