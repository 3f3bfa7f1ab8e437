//! The scheduler's cache: the [`Snapshot`] kept current from Node and Pod watch events, plus pods *assumed*
//! on a node between Reserve and their binding being observed, so that consecutive decisions see each
//! other's resources and don't overcommit a node. All methods are synchronous and side-effect free; they
//! report which [`ClusterEvent`] (if any) the change amounts to, for the queue.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::framework::ClusterEvent;
use crate::snapshot::{PodInfo, Snapshot, pod_key};

/// Where the cache has a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CachedPod {
    node: String,
    /// Placed by this scheduler; the API server has not shown it bound yet.
    assumed: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Cache {
    snapshot: Snapshot,
    pods: HashMap<String, CachedPod>,
}

/// The node a pod is bound to, if it holds resources there (bound and not finished).
pub fn assigned_node(pod: &Pod) -> Option<&str> {
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (!matches!(phase, Some("Succeeded" | "Failed"))).then_some(node)
}

/// Whether a node update can change any scheduling decision (heartbeats and condition timestamps can't).
fn node_changed_for_scheduling(old: &Node, new: &Node) -> bool {
    let alloc = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    let spec = |n: &Node| n.spec.as_ref().map(|s| (s.unschedulable, s.taints.clone()));
    old.metadata.labels != new.metadata.labels || alloc(old) != alloc(new) || spec(old) != spec(new)
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Adds or updates a node. `None` when nothing a plugin looks at changed.
    pub fn update_node(&mut self, node: Node) -> Option<ClusterEvent> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let event = match self.snapshot.get(&name) {
            None => Some(ClusterEvent::NodeAdd),
            Some(old) if node_changed_for_scheduling(old.node(), &node) => Some(ClusterEvent::NodeUpdate),
            Some(_) => None,
        };
        self.snapshot.set_node(node);
        event
    }

    pub fn remove_node(&mut self, name: &str) {
        self.snapshot.remove_node(name);
    }

    /// Applies an observed pod. Bound, unfinished pods are placed on their node (confirming an assumed pod);
    /// others are removed if the cache held them as bound. Unbound pods the scheduler assumed stay assumed
    /// (the watch may show a pod before its binding).
    pub fn update_pod(&mut self, pod: Pod) -> Option<ClusterEvent> {
        let key = pod_key(&pod);
        let Some(node) = assigned_node(&pod).map(str::to_string) else {
            return match self.pods.get(&key) {
                Some(c) if !c.assumed => self.remove_pod(&key),
                _ => None,
            };
        };
        let previous = self.pods.insert(
            key.clone(),
            CachedPod {
                node: node.clone(),
                assumed: false,
            },
        );
        let old_info = previous
            .as_ref()
            .and_then(|c| self.snapshot.remove_pod(&c.node, &key));
        let event = match (&previous, &old_info) {
            (None, _) | (Some(CachedPod { assumed: true, .. }), _) => Some(ClusterEvent::AssignedPodAdd),
            (Some(_), Some(old)) if old.pod.metadata.labels == pod.metadata.labels => None,
            (Some(_), _) => Some(ClusterEvent::AssignedPodUpdate),
        };
        self.snapshot.add_pod(&node, PodInfo::new(Arc::new(pod)));
        event
    }

    /// Forgets a deleted pod (assumed or bound).
    pub fn remove_pod(&mut self, key: &str) -> Option<ClusterEvent> {
        let cached = self.pods.remove(key)?;
        self.snapshot.remove_pod(&cached.node, key);
        Some(ClusterEvent::AssignedPodDelete)
    }

    /// Places `pod` on `node` ahead of the binding, so the next cycles account for it. The pod object is
    /// shared, not copied, so its `spec.nodeName` stays empty until the binding is observed.
    pub fn assume(&mut self, pod: Arc<Pod>, node: &str) {
        let key = pod_key(&pod);
        if let Some(old) = self.pods.remove(&key) {
            self.snapshot.remove_pod(&old.node, &key);
        }
        self.snapshot.add_pod(node, PodInfo::new(pod));
        self.pods.insert(
            key,
            CachedPod {
                node: node.to_string(),
                assumed: true,
            },
        );
    }

    /// Undoes [`assume`](Self::assume) after a failed binding. A pod already confirmed bound is kept.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|c| c.assumed) {
            self.remove_pod(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|c| c.assumed)
    }

    /// Replaces all nodes after a (re-)list.
    pub fn replace_nodes(&mut self, nodes: Vec<Node>) {
        let keep: HashSet<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
        let gone: Vec<String> = self
            .snapshot
            .nodes()
            .map(|n| n.name.to_string())
            .filter(|n| !keep.contains(n))
            .collect();
        for name in gone {
            self.snapshot.remove_node(&name);
        }
        for n in nodes {
            self.update_node(n);
        }
    }

    /// Replaces all bound pods after a (re-)list; assumed pods not in the list stay assumed.
    pub fn replace_pods(&mut self, pods: Vec<Pod>) {
        let listed: HashSet<String> = pods.iter().map(pod_key).collect();
        let gone: Vec<String> = self
            .pods
            .iter()
            .filter(|(k, c)| !c.assumed && !listed.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.remove_pod(&key);
        }
        for p in pods {
            self.update_pod(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn assumed_pod_holds_resources_until_confirmed() {
        let mut c = Cache::new();
        assert_eq!(
            c.update_node(node("n1", "2", "4Gi", 110)),
            Some(ClusterEvent::NodeAdd)
        );
        let p = pod_with_requests("a", &[("cpu", "1")]);
        c.assume(Arc::new(p.clone()), "n1");
        assert!(c.is_assumed("default/a"));
        assert_eq!(c.snapshot().get("n1").unwrap().requested.milli_cpu, 1000);
        // The watch shows the pod still unbound (e.g. an earlier update): it stays assumed.
        assert_eq!(c.update_pod(p.clone()), None);
        assert_eq!(c.snapshot().get("n1").unwrap().requested.milli_cpu, 1000);
        // Then bound: confirmed, counted once.
        assert_eq!(c.update_pod(bound(p, "n1")), Some(ClusterEvent::AssignedPodAdd));
        assert!(!c.is_assumed("default/a"));
        let n1 = c.snapshot().get("n1").unwrap();
        assert_eq!((n1.requested.milli_cpu, n1.pods.len()), (1000, 1));
    }

    #[test]
    fn forget_releases_an_assumed_pod_but_not_a_bound_one() {
        let mut c = Cache::new();
        c.update_node(node("n1", "2", "4Gi", 110));
        let p = pod_with_requests("a", &[("cpu", "1")]);
        c.assume(Arc::new(p.clone()), "n1");
        c.forget("default/a");
        assert_eq!(c.snapshot().get("n1").unwrap().requested.milli_cpu, 0);
        c.update_pod(bound(p, "n1"));
        c.forget("default/a");
        assert_eq!(c.snapshot().get("n1").unwrap().requested.milli_cpu, 1000);
    }

    #[test]
    fn finished_and_deleted_pods_free_their_node() {
        let mut c = Cache::new();
        c.update_node(node("n1", "2", "4Gi", 110));
        let mut p = bound(pod_with_requests("a", &[("cpu", "1")]), "n1");
        c.update_pod(p.clone());
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert_eq!(c.update_pod(p), Some(ClusterEvent::AssignedPodDelete));
        assert_eq!(c.snapshot().get("n1").unwrap().requested.milli_cpu, 0);
        c.update_pod(bound(pod_with_requests("b", &[("cpu", "1")]), "n1"));
        assert_eq!(c.remove_pod("default/b"), Some(ClusterEvent::AssignedPodDelete));
        assert_eq!(c.snapshot().get("n1").unwrap().pods.len(), 0);
    }

    #[test]
    fn node_heartbeats_are_not_cluster_events() {
        let mut c = Cache::new();
        let n = node("n1", "2", "4Gi", 110);
        c.update_node(n.clone());
        let mut beat = n.clone();
        beat.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].reason = Some("KubeletReady".into());
        assert_eq!(c.update_node(beat), None);
        let relabeled = with_labels(n, &[("zone", "a")]);
        assert_eq!(c.update_node(relabeled), Some(ClusterEvent::NodeUpdate));
    }

    #[test]
    fn relist_drops_vanished_objects_but_keeps_assumed_pods() {
        let mut c = Cache::new();
        c.update_node(node("n1", "2", "4Gi", 110));
        c.update_node(node("n2", "2", "4Gi", 110));
        c.update_pod(bound(pod_with_requests("gone", &[("cpu", "1")]), "n1"));
        c.assume(Arc::new(pod_with_requests("mine", &[("cpu", "1")])), "n1");
        c.replace_nodes(vec![node("n1", "2", "4Gi", 110)]);
        c.replace_pods(vec![]);
        assert_eq!(c.snapshot().num_nodes(), 1);
        assert_eq!(
            c.snapshot().get("n1").unwrap().requested.milli_cpu,
            1000,
            "only the assumed pod"
        );
    }
}
