//! NodeResourcesFit: the pod's effective requests (cpu, memory, ephemeral-storage, one pod slot) must fit in
//! the node's allocatable minus what the pods already there request; fitting nodes score by the
//! LeastAllocated strategy (more free cpu and memory after placing the pod is better).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{
    ClusterEvent, CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, Status,
};
use crate::resources::{PodRequests, pod_requests};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "NodeResourcesFit";

#[derive(Debug, Default)]
pub struct NodeResourcesFit;

/// The pod's requests, computed once per cycle.
struct PreFilterState(PodRequests);

fn requests(state: &CycleState, pod: &Pod) -> PodRequests {
    state
        .read::<PreFilterState>()
        .map(|s| s.0)
        .unwrap_or_else(|| pod_requests(pod))
}

/// The reasons the pod does not fit on the node, in kube's words (`Too many pods`, `Insufficient cpu`, …).
pub fn insufficient_resources(req: &PodRequests, node: &NodeInfo) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    let (alloc, used, want) = (&node.allocatable, &node.requested, &req.requested);
    if node.pods.len() as i64 + 1 > alloc.pods {
        reasons.push("Too many pods");
    }
    if want.milli_cpu > 0 && want.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        reasons.push("Insufficient cpu");
    }
    if want.memory > 0 && want.memory > alloc.memory - used.memory {
        reasons.push("Insufficient memory");
    }
    if want.ephemeral_storage > 0 && want.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    {
        reasons.push("Insufficient ephemeral-storage");
    }
    reasons
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::AssignedPodDelete,
        ]
    }
}

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        state.write(PreFilterState(pod_requests(pod)));
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let reasons = insufficient_resources(&requests(state, pod), node);
        if reasons.is_empty() {
            return Status::success();
        }
        let mut status = Status::unschedulable(reasons[0]);
        status.reasons = reasons.into_iter().map(String::from).collect();
        status
    }
}

/// `(allocatable - requested) * 100 / allocatable`, 0 when over-requested or nothing is allocatable.
pub fn least_requested_score(requested: i64, allocatable: i64) -> i64 {
    if allocatable == 0 || requested > allocatable {
        return 0;
    }
    (allocatable - requested) * MAX_NODE_SCORE / allocatable
}

impl PreScorePlugin for NodeResourcesFit {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _snapshot: &Snapshot,
        _nodes: &[&NodeInfo],
    ) -> Status {
        if state.read::<PreFilterState>().is_none() {
            state.write(PreFilterState(pod_requests(pod)));
        }
        Status::success()
    }
}

impl ScorePlugin for NodeResourcesFit {
    /// LeastAllocated over cpu and memory with weight 1 each, counting request-less containers with kube's
    /// defaults (100m, 200Mi) so best-effort pods still spread.
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let req = requests(state, pod).non_zero;
        let cpu = least_requested_score(
            node.non_zero_requested.milli_cpu + req.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let mem = least_requested_score(
            node.non_zero_requested.memory + req.memory,
            node.allocatable.memory,
        );
        Ok((cpu + mem) / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::*;

    fn filter(p: &Pod, n: &NodeInfo) -> Status {
        let mut state = CycleState::new();
        NodeResourcesFit.pre_filter(&mut state, p, &Snapshot::new());
        NodeResourcesFit.filter(&state, p, n)
    }

    #[test]
    fn insufficient_cpu_and_memory_are_both_reported() {
        let s = Snapshot::from_objects(
            [node("n1", "2", "4Gi", 110)],
            [bound(
                pod_with_requests("a", &[("cpu", "1500m"), ("memory", "3Gi")]),
                "n1",
            )],
        );
        let p = pod_with_requests("b", &[("cpu", "1"), ("memory", "2Gi")]);
        let st = filter(&p, s.get("n1").unwrap());
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(st.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
        let small = pod_with_requests("c", &[("cpu", "500m"), ("memory", "1Gi")]);
        assert!(
            filter(&small, s.get("n1").unwrap()).is_success(),
            "exactly fits the remainder"
        );
    }

    #[test]
    fn pod_count_is_limited() {
        let s = Snapshot::from_objects([node("n1", "2", "4Gi", 1)], [bound(pod("a"), "n1")]);
        assert_eq!(
            filter(&pod("b"), s.get("n1").unwrap()).reasons,
            vec!["Too many pods"]
        );
    }

    #[test]
    fn ephemeral_storage_counts() {
        let s = Snapshot::from_objects([node("n1", "2", "4Gi", 10)], []);
        let p = pod_with_requests("a", &[("ephemeral-storage", "200Gi")]);
        assert_eq!(
            filter(&p, s.get("n1").unwrap()).reasons,
            vec!["Insufficient ephemeral-storage"]
        );
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let s = Snapshot::from_objects(
            [node("busy", "4", "8Gi", 110), node("idle", "4", "8Gi", 110)],
            [bound(
                pod_with_requests("a", &[("cpu", "2"), ("memory", "4Gi")]),
                "busy",
            )],
        );
        let p = pod_with_requests("b", &[("cpu", "1"), ("memory", "2Gi")]);
        let state = CycleState::new();
        let busy = NodeResourcesFit
            .score(&state, &p, s.get("busy").unwrap())
            .unwrap();
        let idle = NodeResourcesFit
            .score(&state, &p, s.get("idle").unwrap())
            .unwrap();
        // busy: cpu (4-3)/4 = 25, mem 25 → 25; idle: (4-1)/4 = 75 → 75
        assert_eq!((busy, idle), (25, 75));
        assert_eq!(least_requested_score(5, 4), 0);
        assert_eq!(least_requested_score(0, 0), 0);
    }
}
