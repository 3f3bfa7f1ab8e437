//! NodeResourcesBalancedAllocation: prefers nodes whose cpu and memory would be used in similar
//! proportions after placing the pod (score = (1 − standard deviation of the fractions) × 100).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, MAX_NODE_SCORE, Plugin, PreScorePlugin, ScorePlugin, Status};
use crate::resources::{Resource, pod_requests};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

#[derive(Debug, Default)]
pub struct BalancedAllocation;

struct PodRequest(Resource);

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreScorePlugin for BalancedAllocation {
    /// Skips pods that request neither cpu nor memory: they would not change any node's balance.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _snapshot: &Snapshot,
        _nodes: &[&NodeInfo],
    ) -> Status {
        let req = pod_requests(pod).requested;
        if req.milli_cpu == 0 && req.memory == 0 {
            return Status::skip();
        }
        state.write(PodRequest(req));
        Status::success()
    }
}

/// The balanced-allocation score for fractions of cpu and memory in use.
pub fn balanced_score(fractions: &[f64]) -> i64 {
    let n = fractions.len() as f64;
    if fractions.is_empty() {
        return 0;
    }
    let std = if fractions.len() == 2 {
        (fractions[0] - fractions[1]).abs() / 2.0
    } else {
        let mean = fractions.iter().sum::<f64>() / n;
        (fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n).sqrt()
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let req = state
            .read::<PodRequest>()
            .map(|r| r.0)
            .unwrap_or_else(|| pod_requests(pod).requested);
        let fraction = |used: i64, want: i64, alloc: i64| {
            if alloc == 0 {
                0.0
            } else {
                ((used + want) as f64 / alloc as f64).min(1.0)
            }
        };
        let cpu = fraction(
            node.requested.milli_cpu,
            req.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let mem = fraction(node.requested.memory, req.memory, node.allocatable.memory);
        Ok(balanced_score(&[cpu, mem]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn balanced_nodes_score_higher() {
        // cpu-heavy node: placing a balanced pod keeps it unbalanced
        let s = Snapshot::from_objects(
            [node("cpu-heavy", "4", "4Gi", 110), node("even", "4", "4Gi", 110)],
            [
                bound(
                    pod_with_requests("a", &[("cpu", "3"), ("memory", "0")]),
                    "cpu-heavy",
                ),
                bound(pod_with_requests("b", &[("cpu", "1"), ("memory", "1Gi")]), "even"),
            ],
        );
        let p = pod_with_requests("p", &[("cpu", "1"), ("memory", "1Gi")]);
        let mut state = CycleState::new();
        assert!(BalancedAllocation.pre_score(&mut state, &p, &s, &[]).is_success());
        let heavy = BalancedAllocation
            .score(&state, &p, s.get("cpu-heavy").unwrap())
            .unwrap();
        let even = BalancedAllocation
            .score(&state, &p, s.get("even").unwrap())
            .unwrap();
        // heavy: cpu 1.0, mem 0.25 → std 0.375 → 62; even: 0.5/0.5 → 100
        assert_eq!((heavy, even), (62, 100));
    }

    #[test]
    fn best_effort_pods_skip() {
        assert!(
            BalancedAllocation
                .pre_score(&mut CycleState::new(), &pod("p"), &Snapshot::new(), &[])
                .is_skip()
        );
    }

    #[test]
    fn standard_deviation_for_more_resources() {
        assert_eq!(balanced_score(&[0.5, 0.5, 0.5]), 100);
        assert_eq!(balanced_score(&[]), 0);
    }
}
