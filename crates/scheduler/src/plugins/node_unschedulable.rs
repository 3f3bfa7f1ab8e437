//! NodeUnschedulable: nodes with `spec.unschedulable` (cordoned) only take pods that tolerate the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::{Pod, Taint};

use super::helpers::{pod_tolerations, tolerated};
use crate::framework::{ClusterEvent, CycleState, FilterPlugin, Plugin, Status};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "NodeUnschedulable";
/// kube's `ErrReasonUnschedulable`.
pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";

#[derive(Debug, Default)]
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let cordoned = node
            .node()
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        };
        if tolerated(pod_tolerations(pod), &taint) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_UNSCHEDULABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::*;

    fn cordoned() -> NodeInfo {
        let mut n = node("n1", "1", "1Gi", 10);
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        NodeInfo::new(n)
    }

    #[test]
    fn cordoned_node_rejects_pods() {
        let s = NodeUnschedulable.filter(&CycleState::new(), &pod("p"), &cordoned());
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec!["node(s) were unschedulable"]);
    }

    #[test]
    fn toleration_of_unschedulable_taint_passes() {
        let p = with_tolerations(
            pod("p"),
            vec![toleration("node.kubernetes.io/unschedulable", "", "NoSchedule")],
        );
        assert!(
            NodeUnschedulable
                .filter(&CycleState::new(), &p, &cordoned())
                .is_success()
        );
    }

    #[test]
    fn schedulable_node_passes() {
        let n = NodeInfo::new(node("n1", "1", "1Gi", 10));
        assert!(
            NodeUnschedulable
                .filter(&CycleState::new(), &pod("p"), &n)
                .is_success()
        );
    }
}
