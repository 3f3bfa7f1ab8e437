//! NodePorts: a pod's `hostPort`s must be free on the node (same protocol and port, overlapping IP).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreFilterResult, Status,
};
use crate::snapshot::{HostPort, NodeInfo, Snapshot, pod_host_ports};

pub const NAME: &str = "NodePorts";
/// kube's `nodeports.ErrReason`.
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

#[derive(Debug, Default)]
pub struct NodePorts;

struct WantedPorts(Vec<HostPort>);

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::AssignedPodDelete]
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let ports = pod_host_ports(pod);
        if ports.is_empty() {
            return (PreFilterResult::default(), Status::skip());
        }
        state.write(WantedPorts(ports));
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let computed;
        let wanted = match state.read::<WantedPorts>() {
            Some(w) => &w.0,
            None => {
                computed = pod_host_ports(pod);
                &computed
            }
        };
        let conflict = wanted
            .iter()
            .any(|w| node.used_ports.iter().any(|u| u.conflicts(w)));
        if conflict {
            Status::unschedulable(ERR_REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::*;

    #[test]
    fn used_host_port_rejects_and_free_port_passes() {
        let mut existing = pod("a");
        with_host_port(&mut existing, 8080);
        let s = Snapshot::from_objects([node("n1", "1", "1Gi", 10)], [bound(existing, "n1")]);
        let mut p = pod("b");
        with_host_port(&mut p, 8080);
        let mut state = CycleState::new();
        assert!(NodePorts.pre_filter(&mut state, &p, &s).1.is_success());
        let st = NodePorts.filter(&state, &p, s.get("n1").unwrap());
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(st.reasons, vec![ERR_REASON]);

        let mut q = pod("c");
        with_host_port(&mut q, 9090);
        let mut state = CycleState::new();
        NodePorts.pre_filter(&mut state, &q, &s);
        assert!(NodePorts.filter(&state, &q, s.get("n1").unwrap()).is_success());
    }

    #[test]
    fn pod_without_host_ports_skips() {
        let s = Snapshot::new();
        assert!(
            NodePorts
                .pre_filter(&mut CycleState::new(), &pod("p"), &s)
                .1
                .is_skip()
        );
    }
}
