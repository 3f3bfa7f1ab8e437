//! The node agent (kubelet): registers its Node, watches the pods bound to it and runs them through
//! [`rkube_oci::runtime`], reports their status, and serves the kubelet HTTPS API ([`server`]).
//!
//! Start at [`run`] (the wiring), then [`node`] (registration, Lease, conditions) and [`pods`] (the pod
//! watch and one [`worker`] per pod). The Kubernetes rules a worker follows are pure functions you can read
//! on their own: [`status`] (what a pod reports), [`backoff`] (CrashLoopBackOff, ImagePullBackOff),
//! [`env`] (a container's environment), [`volumes`] (what each volume becomes on disk), [`resources`]
//! (cgroup limits) and [`probe`]. [`services`] starts the node's service proxy, DNS and host-gw routes;
//! [`host`] gathers what the Node reports about the machine.

pub mod agent;
pub mod backoff;
pub mod env;
pub mod host;
pub mod logs;
pub mod node;
pub mod pods;
pub mod probe;
pub mod resources;
pub mod server;
pub mod services;
pub mod status;
pub mod volumes;
pub mod worker;

use std::path::PathBuf;

pub use agent::{AgentConfig, run};

/// What the kubelet API ([`server`]) needs from the pod workers.
pub trait NodeContainers: Send + Sync + 'static {
    /// The container for `namespace/pod[/container]` (the pod's default container when `None`: the one named
    /// by the `kubectl.kubernetes.io/default-container` annotation, else the first), with its log files.
    fn find(&self, namespace: &str, pod: &str, container: Option<&str>) -> Result<ContainerRef, LookupError>;
    fn runtime(&self) -> &rkube_oci::runtime::Runtime;
}

/// One container of a pod running on this node, as the kubelet API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The runtime's id (what `containerID` shows after `runc://`).
    pub container_id: String,
    /// The CRI-format log of the current attempt: `<pod_log_dir>/<ns>_<pod>_<uid>/<container>/<attempt>.log`.
    pub log_path: PathBuf,
    /// The log of the attempt before, for `kubectl logs --previous`.
    pub previous_log_path: Option<PathBuf>,
    pub running: bool,
}

/// Why [`NodeContainers::find`] found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No pod of that name runs on this node.
    #[error("pod {namespace}/{pod} is not running on this node")]
    PodNotFound { namespace: String, pod: String },
    /// The pod has no container of that name.
    #[error("container {container} is not valid for pod {pod}")]
    ContainerNotFound { pod: String, container: String },
    /// The container exists in the spec but was never created (its image may still be pulling).
    #[error("container {container} in pod {pod} is waiting to start")]
    NotStarted { pod: String, container: String },
}
