//! The Node this agent runs: registration, the heartbeat Lease in `kube-node-lease`, conditions and the
//! wait for `spec.podCIDR`. [`node_object`] and [`node_status`] are pure; [`NodeAgent`] sends them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::Mutex;
use rkube_oci::ImageStore;
use serde_json::json;

use crate::host::{self, HostFacts, Pressure};

pub use rkube_controllers::nodelifecycle::{LEASE_DURATION_SECONDS, LEASE_NAMESPACE, lease_object};

/// The version this kubelet reports: the Kubernetes version whose API rkube serves.
pub const KUBELET_VERSION: &str = "v1.33.0+rkube";
/// How often the Lease is renewed (a quarter of its duration, as the kubelet does).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// The status is posted at once when it changes and at least this often otherwise
/// (`nodeStatusReportFrequency`).
pub const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Pods a node takes (`maxPods`).
pub const MAX_PODS: u32 = 110;
const FIELD_MANAGER: &str = "kubelet";

/// Why the node could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API refused or failed a request.
    #[error("{what}: {source}")]
    Api { what: &'static str, source: kube::Error },
    /// The agent was stopped before the node got its pod CIDR.
    #[error("stopped while waiting for the node's pod CIDR")]
    Stopped,
}

/// Everything the Node's status is computed from, besides the clock.
#[derive(Debug, Clone)]
pub struct NodeInputs {
    pub name: String,
    pub ip: IpAddr,
    pub kubelet_port: u16,
    pub facts: HostFacts,
    pub pressure: Pressure,
    /// The CNI network is configured (the node's pod CIDR arrived).
    pub network_ready: bool,
    pub images: Vec<ContainerImage>,
}

/// The Node to create.
pub fn node_object(name: &str, extra_labels: &BTreeMap<String, String>) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    labels.extend(extra_labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// One condition as reported now; `since` keeps its transition time while its status holds.
fn condition(
    old: &BTreeMap<String, NodeCondition>,
    type_: &str,
    ok_status: bool,
    (reason, message): (&str, &str),
    now: &Time,
) -> NodeCondition {
    let status = if ok_status { "True" } else { "False" };
    let last_transition_time = match old.get(type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time,
    }
}

/// The node's status at `now`, keeping the transition times of `old` conditions that did not change.
pub fn node_status(inputs: &NodeInputs, old: &[NodeCondition], now: &Time) -> NodeStatus {
    let old: BTreeMap<String, NodeCondition> = old.iter().map(|c| (c.type_.clone(), c.clone())).collect();
    let f = &inputs.facts;
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(f.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", f.memory_bytes / 1024)),
        ),
        ("pods".to_string(), Quantity(MAX_PODS.to_string())),
        (
            "ephemeral-storage".to_string(),
            Quantity(format!("{}Ki", f.ephemeral_storage_bytes / 1024)),
        ),
    ]);
    let p = inputs.pressure;
    let ready = inputs.network_ready;
    let conditions = vec![
        condition(
            &old,
            "MemoryPressure",
            p.memory,
            if p.memory {
                (
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                )
            } else {
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                )
            },
            now,
        ),
        condition(
            &old,
            "DiskPressure",
            p.disk,
            if p.disk {
                ("KubeletHasDiskPressure", "kubelet has disk pressure")
            } else {
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            },
            now,
        ),
        condition(
            &old,
            "PIDPressure",
            p.pid,
            if p.pid {
                (
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                )
            } else {
                ("KubeletHasSufficientPID", "kubelet has sufficient PID available")
            },
            now,
        ),
        condition(
            &old,
            "Ready",
            ready,
            if ready {
                ("KubeletReady", "kubelet is posting ready status")
            } else {
                (
                    "KubeletNotReady",
                    "container runtime network not ready: NetworkReady=false \
                     reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
                )
            },
            now,
        ),
    ];
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: inputs.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: inputs.name.clone(),
            },
        ]),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: inputs.kubelet_port as i32,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            os_image: f.os_image.clone(),
            kernel_version: f.kernel_version.clone(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            container_runtime_version: f.container_runtime_version.clone(),
            machine_id: f.machine_id.clone(),
            system_uuid: f.machine_id.clone(),
            boot_id: f.boot_id.clone(),
            ..Default::default()
        }),
        images: Some(inputs.images.clone()),
        ..Default::default()
    }
}

/// The status without heartbeat times, to tell a real change from a heartbeat.
fn without_heartbeats(s: &NodeStatus) -> NodeStatus {
    let mut s = s.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
    }
    s
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[derive(Default)]
struct State {
    uid: Option<String>,
    network_ready: bool,
    conditions: Vec<NodeCondition>,
    last_sent: Option<NodeStatus>,
}

/// Registers the node and keeps it alive.
pub struct NodeAgent {
    name: String,
    ip: IpAddr,
    kubelet_port: u16,
    labels: BTreeMap<String, String>,
    facts: HostFacts,
    data_dir: PathBuf,
    images: Arc<ImageStore>,
    nodes: Api<Node>,
    leases: Api<Lease>,
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

impl NodeAgent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        name: &str,
        ip: IpAddr,
        kubelet_port: u16,
        labels: BTreeMap<String, String>,
        facts: HostFacts,
        data_dir: PathBuf,
        images: Arc<ImageStore>,
    ) -> NodeAgent {
        NodeAgent {
            name: name.into(),
            ip,
            kubelet_port,
            labels,
            facts,
            data_dir,
            images,
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client, LEASE_NAMESPACE),
            state: Mutex::default(),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    fn inputs(&self) -> NodeInputs {
        let mut images: Vec<ContainerImage> = self
            .images
            .list_images()
            .unwrap_or_default()
            .into_iter()
            .map(|i| {
                let repo = i
                    .reference
                    .rsplit_once(':')
                    .map(|(r, _)| r)
                    .unwrap_or(&i.reference);
                ContainerImage {
                    names: Some(vec![format!("{repo}@{}", i.manifest_digest), i.reference.clone()]),
                    size_bytes: Some(i.size as i64),
                }
            })
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
        images.truncate(50);
        NodeInputs {
            name: self.name.clone(),
            ip: self.ip,
            kubelet_port: self.kubelet_port,
            facts: self.facts.clone(),
            pressure: host::pressure(&self.data_dir),
            network_ready: self.state.lock().network_ready,
            images,
        }
    }

    /// Creates the Node (or adopts the existing one), posts its status and creates its Lease.
    pub async fn register(&self) -> Result<Node, NodeError> {
        let api = |what| move |source| NodeError::Api { what, source };
        let node = match self
            .nodes
            .create(&PostParams::default(), &node_object(&self.name, &self.labels))
            .await
        {
            Ok(n) => n,
            Err(e) if is_status(&e, 409) => self.nodes.get(&self.name).await.map_err(api("get node"))?,
            Err(e) => return Err(api("create node")(e)),
        };
        {
            let mut s = self.state.lock();
            s.uid = node.metadata.uid.clone();
            s.conditions = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            s.last_sent = None;
        }
        // A node that already has its pod CIDR (an agent restart) keeps reporting what it reported until the
        // network is set up again a moment later: posting NotReady in between would make the node lifecycle
        // controller mark every pod on it unready.
        let has_cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .is_some_and(|c| !c.is_empty());
        if !has_cidr {
            self.post_status().await.map_err(api("post node status"))?;
        }
        self.renew_lease().await.map_err(api("create lease"))?;
        Ok(node)
    }

    /// Posts the status when it changed (or `force`).
    async fn post_status_if(&self, force: bool) -> Result<(), kube::Error> {
        let inputs = self.inputs();
        let status = {
            let s = self.state.lock();
            node_status(&inputs, &s.conditions, &now())
        };
        let same = self
            .state
            .lock()
            .last_sent
            .as_ref()
            .is_some_and(|old| without_heartbeats(old) == without_heartbeats(&status));
        if same && !force {
            return Ok(());
        }
        let patch = Patch::Strategic(json!({ "status": status }));
        let params = PatchParams::apply(FIELD_MANAGER);
        let params = PatchParams {
            field_manager: params.field_manager,
            ..Default::default()
        };
        match self.nodes.patch_status(&self.name, &params, &patch).await {
            Err(e) if is_status(&e, 404) => {
                // Deleted behind our back: register again, as the kubelet does.
                tracing::warn!(node = %self.name, "node object was deleted; registering again");
                self.nodes
                    .create(&PostParams::default(), &node_object(&self.name, &self.labels))
                    .await?;
                self.state.lock().last_sent = None;
                Box::pin(self.post_status_if(true)).await
            }
            Err(e) => Err(e),
            Ok(node) => {
                let mut s = self.state.lock();
                s.uid = node.metadata.uid.clone();
                s.conditions = status.conditions.clone().unwrap_or_default();
                s.last_sent = Some(status);
                Ok(())
            }
        }
    }

    async fn post_status(&self) -> Result<(), kube::Error> {
        self.post_status_if(true).await
    }

    /// Renews the Lease, creating it when missing.
    async fn renew_lease(&self) -> Result<(), kube::Error> {
        let patch = Patch::Merge(json!({ "spec": {
            "renewTime": micro_now(), "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS } }));
        match self
            .leases
            .patch(&self.name, &PatchParams::default(), &patch)
            .await
        {
            Err(e) if is_status(&e, 404) => {
                let uid = self.state.lock().uid.clone();
                let lease = lease_object(&self.name, uid.as_deref(), &micro_now());
                match self.leases.create(&PostParams::default(), &lease).await {
                    Err(e) if is_status(&e, 409) => Ok(()),
                    r => r.map(drop),
                }
            }
            r => r.map(drop),
        }
    }

    /// Marks the pod network ready (or not) and posts the status at once.
    pub fn set_network_ready(&self, ready: bool) {
        self.state.lock().network_ready = ready;
        self.changed.notify_one();
    }

    /// Renews the Lease every 10 s and posts the status on change (checked every 10 s, or when notified)
    /// and every minute, until `stop`.
    pub async fn heartbeat(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut lease = tokio::time::interval(LEASE_RENEW_INTERVAL);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_full = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = lease.tick() => {
                    if let Err(e) = self.renew_lease().await {
                        tracing::warn!(error = %e, "renewing the node lease failed");
                    }
                }
                _ = self.changed.notified() => {}
                _ = stop.changed() => return,
            }
            let force = last_full.elapsed() >= STATUS_REPORT_INTERVAL;
            match self.post_status_if(force).await {
                Ok(()) if force => last_full = tokio::time::Instant::now(),
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "posting the node status failed"),
            }
        }
    }

    /// Waits for node IPAM to give the node `spec.podCIDR`.
    pub async fn wait_pod_cidr(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, NodeError> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut events = std::pin::pin!(
            watcher(self.nodes.clone(), config)
                .default_backoff()
                .applied_objects()
        );
        loop {
            tokio::select! {
                e = events.next() => match e {
                    Some(Ok(node)) => {
                        if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                            return Ok(cidr);
                        }
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "node watch failed"),
                    None => return Err(NodeError::Stopped),
                },
                _ = stop.changed() => return Err(NodeError::Stopped),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(network_ready: bool) -> NodeInputs {
        NodeInputs {
            name: "n1".into(),
            ip: "192.168.1.2".parse().unwrap(),
            kubelet_port: 10250,
            facts: HostFacts {
                cpus: 4,
                memory_bytes: 8 << 30,
                ephemeral_storage_bytes: 100 << 30,
                kernel_version: "6.18.0".into(),
                os_image: "Debian GNU/Linux 12 (bookworm)".into(),
                container_runtime_version: "runc://1.1.5".into(),
                machine_id: "m".into(),
                boot_id: "b".into(),
            },
            pressure: Pressure::default(),
            network_ready,
            images: vec![],
        }
    }

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn cond<'a>(s: &'a NodeStatus, t: &str) -> &'a NodeCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn status_reports_the_host() {
        let s = node_status(&inputs(true), &[], &at(10));
        let cap = s.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8388608Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["ephemeral-storage"].0, "104857600Ki");
        let info = s.node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert_eq!(info.container_runtime_version, "runc://1.1.5");
        assert_eq!(info.kernel_version, "6.18.0");
        assert_eq!(s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10250);
        let addrs = s.addresses.unwrap();
        assert_eq!(
            (addrs[0].type_.as_str(), addrs[0].address.as_str()),
            ("InternalIP", "192.168.1.2")
        );
        assert_eq!(
            (addrs[1].type_.as_str(), addrs[1].address.as_str()),
            ("Hostname", "n1")
        );
    }

    #[test]
    fn ready_waits_for_the_network_and_keeps_transition_times() {
        let s1 = node_status(&inputs(false), &[], &at(10));
        let ready = cond(&s1, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert_eq!(cond(&s1, "MemoryPressure").status, "False");
        let s2 = node_status(&inputs(true), s1.conditions.as_ref().unwrap(), &at(20));
        assert_eq!(cond(&s2, "Ready").status, "True");
        assert_eq!(cond(&s2, "Ready").last_transition_time, Some(at(20)));
        assert_eq!(
            cond(&s2, "DiskPressure").last_transition_time,
            Some(at(10)),
            "unchanged"
        );
        let s3 = node_status(&inputs(true), s2.conditions.as_ref().unwrap(), &at(30));
        assert_eq!(cond(&s3, "Ready").last_heartbeat_time, Some(at(30)));
        assert_eq!(
            without_heartbeats(&s2),
            without_heartbeats(&s3),
            "a heartbeat is not a change"
        );
    }

    #[test]
    fn node_and_lease_objects() {
        let n = node_object("n1", &BTreeMap::from([("zone".to_string(), "a".to_string())]));
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["zone"], "a");
        let l = lease_object(
            "n1",
            Some("uid-1"),
            &MicroTime(k8s_openapi::jiff::Timestamp::now()),
        );
        assert_eq!(l.spec.unwrap().lease_duration_seconds, Some(40));
        assert_eq!(l.metadata.owner_references.unwrap()[0].kind, "Node");
    }
}
