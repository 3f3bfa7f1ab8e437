//! NodeName: a pod that names a node in `spec.nodeName` fits only that node.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{ClusterEvent, CycleState, FilterPlugin, Plugin, Status};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "NodeName";
/// kube's `nodename.ErrReason`.
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

#[derive(Debug, Default)]
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd]
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(wanted) if !wanted.is_empty() && wanted != &*node.name => Status::unresolvable(ERR_REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn only_the_named_node_fits() {
        let p = bound(pod("p"), "n2");
        let s = CycleState::new();
        assert!(
            !NodeName
                .filter(&s, &p, &NodeInfo::new(node("n1", "1", "1Gi", 10)))
                .is_success()
        );
        assert!(
            NodeName
                .filter(&s, &p, &NodeInfo::new(node("n2", "1", "1Gi", 10)))
                .is_success()
        );
        assert!(
            NodeName
                .filter(&s, &pod("q"), &NodeInfo::new(node("n1", "1", "1Gi", 10)))
                .is_success()
        );
    }
}
