//! TaintToleration: nodes with a `NoSchedule`/`NoExecute` taint the pod doesn't tolerate are filtered out;
//! untolerated `PreferNoSchedule` taints lower a node's score.

use k8s_openapi::api::core::v1::{Pod, Toleration};

use super::helpers::{default_normalize, node_taints, pod_tolerations, tolerated};
use crate::framework::{
    ClusterEvent, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeScore, Plugin, PreScorePlugin, ScorePlugin,
    Status,
};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "TaintToleration";

#[derive(Debug, Default)]
pub struct TaintToleration;

/// The pod's tolerations that matter for scoring (empty effect or PreferNoSchedule).
struct PreferNoScheduleTolerations(Vec<Toleration>);

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let tolerations = pod_tolerations(pod);
        let untolerated = node_taints(node.node())
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|t| !tolerated(tolerations, t));
        match untolerated {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _snapshot: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status {
        if !nodes.iter().any(|n| {
            node_taints(n.node())
                .iter()
                .any(|t| t.effect == "PreferNoSchedule")
        }) {
            return Status::skip();
        }
        let tolerations = pod_tolerations(pod)
            .iter()
            .filter(|t| matches!(t.effect.as_deref(), None | Some("") | Some("PreferNoSchedule")))
            .cloned()
            .collect();
        state.write(PreferNoScheduleTolerations(tolerations));
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let tolerations = state
            .read::<PreferNoScheduleTolerations>()
            .ok_or_else(|| Status::error("TaintToleration: PreScore state missing"))?;
        Ok(node_taints(node.node())
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&tolerations.0, t))
            .count() as i64)
    }

    fn normalize_score(&self, _state: &CycleState, _pod: &Pod, scores: &mut [NodeScore]) -> Status {
        default_normalize(scores, MAX_NODE_SCORE, true);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::*;

    #[test]
    fn untolerated_noschedule_taint_is_reported_like_kube() {
        let n = NodeInfo::new(with_taints(
            node("cp", "1", "1Gi", 10),
            vec![taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")],
        ));
        let s = TaintToleration.filter(&CycleState::new(), &pod("p"), &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
        let p = with_tolerations(
            pod("p"),
            vec![toleration("node-role.kubernetes.io/control-plane", "", "")],
        );
        assert!(TaintToleration.filter(&CycleState::new(), &p, &n).is_success());
    }

    #[test]
    fn prefer_no_schedule_does_not_filter_but_scores_lower() {
        let tainted = NodeInfo::new(with_taints(
            node("a", "1", "1Gi", 10),
            vec![taint("k", "v", "PreferNoSchedule")],
        ));
        let clean = NodeInfo::new(node("b", "1", "1Gi", 10));
        let p = pod("p");
        assert!(
            TaintToleration
                .filter(&CycleState::new(), &p, &tainted)
                .is_success()
        );
        let mut state = CycleState::new();
        assert!(
            TaintToleration
                .pre_score(&mut state, &p, &Snapshot::new(), &[&tainted, &clean])
                .is_success()
        );
        let mut scores = vec![
            NodeScore {
                name: "a".into(),
                score: TaintToleration.score(&state, &p, &tainted).unwrap(),
            },
            NodeScore {
                name: "b".into(),
                score: TaintToleration.score(&state, &p, &clean).unwrap(),
            },
        ];
        TaintToleration.normalize_score(&state, &p, &mut scores);
        assert_eq!((scores[0].score, scores[1].score), (0, 100));

        let tolerant = with_tolerations(pod("q"), vec![toleration("k", "v", "PreferNoSchedule")]);
        let mut state = CycleState::new();
        TaintToleration.pre_score(&mut state, &tolerant, &Snapshot::new(), &[&tainted, &clean]);
        assert_eq!(TaintToleration.score(&state, &tolerant, &tainted).unwrap(), 0);
    }

    #[test]
    fn no_execute_taint_filters() {
        let n = NodeInfo::new(with_taints(
            node("a", "1", "1Gi", 10),
            vec![taint("node.kubernetes.io/not-ready", "", "NoExecute")],
        ));
        assert!(
            !TaintToleration
                .filter(&CycleState::new(), &pod("p"), &n)
                .is_success()
        );
    }
}
