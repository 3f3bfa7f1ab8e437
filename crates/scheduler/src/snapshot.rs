//! The cluster as one scheduling cycle sees it: a [`NodeInfo`] per node (the node, the pods on it, what they
//! request, which host ports they use) collected in a [`Snapshot`]. The snapshot is plain data; the
//! [`Cache`](crate::cache::Cache) keeps it current from watches, and the pure core reads it.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{PodRequests, Resource, node_allocatable, pod_requests};

/// `namespace/name`, the identity of a pod inside the scheduler.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// A host port a pod claims on its node. An empty or `0.0.0.0` IP means every address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two claims collide: same protocol and port, and the same IP or a wildcard on either side.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// The host ports a pod's containers ask for (`hostPort` > 0), with kube's defaults (TCP, 0.0.0.0).
pub fn pod_host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&p| p > 0)?;
            Some(HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
            })
        })
        .collect()
}

/// A pod as the scheduler keeps it: the object plus what was derived from it once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub requests: PodRequests,
    pub host_ports: Vec<HostPort>,
    /// The pod has pod affinity or anti-affinity terms of any kind.
    pub has_affinity: bool,
    /// The pod has required anti-affinity terms (which other pods must respect).
    pub has_required_anti_affinity: bool,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let has_affinity =
            affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        let has_required_anti_affinity = affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .is_some_and(|t| !t.is_empty());
        PodInfo {
            key: pod_key(&pod),
            requests: pod_requests(&pod),
            host_ports: pod_host_ports(&pod),
            has_affinity,
            has_required_anti_affinity,
            pod,
        }
    }
}

/// One node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node's name (also known for a node whose object was deleted while pods remain on it). Shared so
    /// per-node results (scores) can carry it without copying.
    pub name: Arc<str>,
    node: Option<Arc<Node>>,
    pub allocatable: Resource,
    /// Sum of the requests of the pods on this node (`pods` = their number).
    pub requested: Resource,
    /// Sum of the pods' requests with kube's scoring defaults for request-less containers.
    pub non_zero_requested: Resource,
    pub pods: Vec<PodInfo>,
    pub used_ports: Vec<HostPort>,
    /// How many of `pods` have pod affinity/anti-affinity terms.
    pub pods_with_affinity: usize,
    /// How many of `pods` have required anti-affinity terms.
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    pub fn new(node: Node) -> NodeInfo {
        let mut info = NodeInfo::empty(node.metadata.name.as_deref().unwrap_or_default().into());
        info.set_node(node);
        info
    }

    fn empty(name: Arc<str>) -> NodeInfo {
        NodeInfo {
            name,
            node: None,
            allocatable: Resource::default(),
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            pods: Vec::new(),
            used_ports: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
        }
    }

    /// The Node object. Only absent for a deleted node that still has pods; the snapshot never hands such an
    /// info to plugins.
    pub fn node(&self) -> &Node {
        self.node
            .as_deref()
            .expect("NodeInfo without a Node is never handed to plugins")
    }

    pub fn has_node(&self) -> bool {
        self.node.is_some()
    }

    pub fn set_node(&mut self, node: Node) {
        self.allocatable = node_allocatable(&node);
        self.node = Some(Arc::new(node));
    }

    pub fn labels(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        self.node.as_ref().and_then(|n| n.metadata.labels.as_ref())
    }

    pub fn add_pod(&mut self, pod: PodInfo) {
        self.requested.add(&pod.requests.requested);
        self.non_zero_requested.add(&pod.requests.non_zero);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        self.pods_with_affinity += usize::from(pod.has_affinity);
        self.pods_with_required_anti_affinity += usize::from(pod.has_required_anti_affinity);
        self.pods.push(pod);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<PodInfo> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests.requested);
        self.non_zero_requested.sub(&pod.requests.non_zero);
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        self.pods_with_affinity -= usize::from(pod.has_affinity);
        self.pods_with_required_anti_affinity -= usize::from(pod.has_required_anti_affinity);
        Some(pod)
    }
}

/// Every node the scheduler knows, in a stable order (so sampling can rotate through them), with
/// cluster-wide counters plugins use to skip work.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    infos: Vec<NodeInfo>,
    index: HashMap<Arc<str>, usize>,
    num_nodes: usize,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// A snapshot of these nodes with these pods placed by their `spec.nodeName` (for tests and tools).
    pub fn from_objects(
        nodes: impl IntoIterator<Item = Node>,
        pods: impl IntoIterator<Item = Pod>,
    ) -> Snapshot {
        let mut s = Snapshot::new();
        for n in nodes {
            s.set_node(n);
        }
        for p in pods {
            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                s.add_pod(&node, PodInfo::new(Arc::new(p)));
            }
        }
        s
    }

    /// Number of nodes that exist (what "0/N nodes are available" counts).
    pub fn num_nodes(&self) -> usize {
        self.num_nodes
    }

    /// All slots in their stable order, including deleted nodes that still carry pods (`has_node() == false`).
    pub fn slots(&self) -> &[NodeInfo] {
        &self.infos
    }

    /// Every existing node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.infos.iter().filter(|i| i.has_node())
    }

    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.index
            .get(name)
            .map(|&i| &self.infos[i])
            .filter(|i| i.has_node())
    }

    pub fn pods_with_affinity(&self) -> usize {
        self.pods_with_affinity
    }

    pub fn pods_with_required_anti_affinity(&self) -> usize {
        self.pods_with_required_anti_affinity
    }

    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let name: Arc<str> = name.into();
                self.infos.push(NodeInfo::empty(name.clone()));
                self.index.insert(name, self.infos.len() - 1);
                self.infos.len() - 1
            }
        };
        &mut self.infos[i]
    }

    /// Adds or replaces a node object, keeping the pods already placed on it.
    pub fn set_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let slot = self.slot(&name);
        let was_present = slot.has_node();
        slot.set_node(node);
        if !was_present {
            self.num_nodes += 1;
        }
    }

    /// Removes a node. Its pods stay accounted (as kube does) until their own deletions are observed.
    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else { return };
        if self.infos[i].node.take().is_some() {
            self.num_nodes -= 1;
        }
        if self.infos[i].pods.is_empty() {
            self.drop_slot(i);
        }
    }

    fn drop_slot(&mut self, i: usize) {
        let removed = self.infos.swap_remove(i);
        self.index.remove(&removed.name);
        if let Some(moved) = self.infos.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
    }

    pub fn add_pod(&mut self, node_name: &str, pod: PodInfo) {
        self.pods_with_affinity += usize::from(pod.has_affinity);
        self.pods_with_required_anti_affinity += usize::from(pod.has_required_anti_affinity);
        self.slot(node_name).add_pod(pod);
    }

    pub fn remove_pod(&mut self, node_name: &str, key: &str) -> Option<PodInfo> {
        let &i = self.index.get(node_name)?;
        let pod = self.infos[i].remove_pod(key)?;
        self.pods_with_affinity -= usize::from(pod.has_affinity);
        self.pods_with_required_anti_affinity -= usize::from(pod.has_required_anti_affinity);
        if !self.infos[i].has_node() && self.infos[i].pods.is_empty() {
            self.drop_slot(i);
        }
        Some(pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn pods_are_accounted_on_their_node_and_removed_again() {
        let mut s = Snapshot::from_objects([node("n1", "4", "8Gi", 110), node("n2", "4", "8Gi", 110)], []);
        let mut p = pod_with_requests("a", &[("cpu", "1"), ("memory", "1Gi")]);
        with_host_port(&mut p, 8080);
        s.add_pod("n1", PodInfo::new(Arc::new(p)));
        let n1 = s.get("n1").unwrap();
        assert_eq!(n1.requested.milli_cpu, 1000);
        assert_eq!(n1.requested.memory, 1 << 30);
        assert_eq!(n1.requested.pods, 1);
        assert_eq!(n1.used_ports.len(), 1);
        s.remove_pod("n1", "default/a").unwrap();
        let n1 = s.get("n1").unwrap();
        assert_eq!(n1.requested, Resource::default());
        assert!(n1.used_ports.is_empty());
    }

    #[test]
    fn deleted_node_with_pods_is_hidden_until_its_pods_go() {
        let mut s = Snapshot::from_objects([node("n1", "4", "8Gi", 110)], []);
        s.add_pod("n1", PodInfo::new(Arc::new(pod_with_requests("a", &[]))));
        s.remove_node("n1");
        assert_eq!(s.num_nodes(), 0);
        assert!(s.get("n1").is_none());
        assert_eq!(s.slots().len(), 1);
        s.remove_pod("n1", "default/a");
        assert!(s.slots().is_empty());
    }

    #[test]
    fn host_ports_conflict_on_wildcard_or_same_ip() {
        let hp = |ip: &str, port| HostPort {
            ip: ip.into(),
            protocol: "TCP".into(),
            port,
        };
        assert!(hp("0.0.0.0", 80).conflicts(&hp("10.0.0.1", 80)));
        assert!(hp("10.0.0.1", 80).conflicts(&hp("10.0.0.1", 80)));
        assert!(!hp("10.0.0.1", 80).conflicts(&hp("10.0.0.2", 80)));
        assert!(!hp("0.0.0.0", 80).conflicts(&hp("0.0.0.0", 81)));
        let udp = HostPort {
            ip: "0.0.0.0".into(),
            protocol: "UDP".into(),
            port: 80,
        };
        assert!(!udp.conflicts(&hp("0.0.0.0", 80)));
    }
}
