//! Pod networking for the rkube node agent: the standard CNI plugins behind the [`PodNetwork`] trait, host-gw
//! routes between nodes ([`RouteSync`]) and LoadBalancer IP announcement by proxy ARP ([`Announcer`]).
//!
//! Start reading at [`PodNetwork`] and [`CniNetwork`] (module [`cni`]); [`hostgw::run`] and
//! [`announce::run`] are the agent's loops that keep [`RouteSync`] and [`Announcer`] in step with the API;
//! [`testing`] builds throw-away network namespaces for the tests of this crate, the service proxy and the
//! end-to-end suite.
//!
//! Every operation here acts on the network namespace of the *calling thread*: the agent runs in its node's
//! namespace, so that is the node's. Child processes (`ip`, CNI plugins) inherit it; sysctls are written with
//! `std::fs` from the calling thread (never `tokio::fs`, whose worker threads could sit in another namespace).

pub mod announce;
pub mod cni;
mod command;
pub mod hostgw;
mod names;
pub mod routes;
mod sysctl;
pub mod testing;
mod watch;

use std::net::IpAddr;
use std::path::PathBuf;

pub use announce::{AnnounceError, Announcer};
pub use cni::{CniNetwork, NetworkError};
pub use names::{bridge_name, network_name};
pub use routes::{ROUTE_PROTOCOL, RouteError, RouteSync};

/// A pod's network attachment, driven by the pod workers.
///
/// Contract for callers: call [`PodNetwork::del`] **before** removing the pod's network namespace (the bridge
/// plugin cleans up inside it), and call it even when `add` failed half-way. `del` is idempotent and also works
/// when the namespace is already gone (then only IP and port-mapping state is released).
#[async_trait::async_trait]
pub trait PodNetwork: Send + Sync {
    /// Attaches the pod's sandbox to the node network; returns the pod's IPs.
    async fn add(&self, req: &PodNetRequest) -> Result<PodNetStatus, NetworkError>;
    /// Detaches the sandbox and releases its IP and host ports; idempotent, works after the netns is gone.
    async fn del(&self, req: &PodNetRequest) -> Result<(), NetworkError>;
}

/// What the network needs to know about one pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodNetRequest {
    /// The sandbox id (CNI container id); keys the IP allocation and the cached result.
    pub sandbox_id: String,
    /// Path of the sandbox's network namespace file (e.g. a bind mount under the runtime's state dir).
    pub netns: PathBuf,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    /// `hostPort`s of the pod's containers, handed to the portmap plugin.
    pub port_mappings: Vec<PortMapping>,
}

/// One `containers[].ports[]` entry with a `hostPort`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `TCP`, `UDP` or `SCTP` as in the pod spec (case does not matter).
    pub protocol: String,
    /// Host address to bind the port on; empty for all addresses.
    pub host_ip: String,
}

/// The outcome of attaching a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetStatus {
    /// The pod's IPs (`status.podIPs`), first one is `status.podIP`.
    pub ips: Vec<IpAddr>,
    /// The pod's default gateway (the node's bridge address).
    pub gateway: Option<IpAddr>,
}

/// Per-node network settings; everything on disk and every name is derived from `data_dir` and `node_name`, so
/// several agents on one host (each in its own network namespace) never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetConfig {
    /// The agent's data dir (`DIR/agent`); CNI config and state live in `data_dir/cni`.
    pub data_dir: PathBuf,
    pub node_name: String,
    /// This node's `spec.podCIDR`, e.g. `10.42.1.0/24`.
    pub pod_cidr: String,
    /// The whole cluster's pod range, e.g. `10.42.0.0/16`.
    pub cluster_cidr: String,
    /// Where the CNI plugin binaries are (Debian: `/usr/lib/cni`).
    pub cni_bin_dir: PathBuf,
}
