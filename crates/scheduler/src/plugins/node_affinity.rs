//! NodeAffinity: `spec.nodeSelector` and required node affinity filter nodes; preferred node affinity
//! terms score them by the sum of the weights of the terms a node matches.

use k8s_openapi::api::core::v1::{Pod, PreferredSchedulingTerm};

use super::helpers::{default_normalize, node_matches_term, pod_matches_node_selector_and_affinity};
use crate::framework::{
    ClusterEvent, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeScore, Plugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ScorePlugin, Status,
};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "NodeAffinity";
/// kube's `ErrReasonPod`.
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

#[derive(Debug, Default)]
pub struct NodeAffinity;

fn preferred_terms(pod: &Pod) -> &[PreferredSchedulingTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default()
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &Pod,
        _snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let spec = pod.spec.as_ref();
        let has_selector = spec
            .and_then(|s| s.node_selector.as_ref())
            .is_some_and(|s| !s.is_empty());
        let has_required = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .is_some_and(|na| na.required_during_scheduling_ignored_during_execution.is_some());
        let status = if has_selector || has_required {
            Status::success()
        } else {
            Status::skip()
        };
        (PreFilterResult::default(), status)
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        if pod_matches_node_selector_and_affinity(pod, node.node()) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        _state: &mut CycleState,
        pod: &Pod,
        _snapshot: &Snapshot,
        _nodes: &[&NodeInfo],
    ) -> Status {
        if preferred_terms(pod).is_empty() {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        Ok(preferred_terms(pod)
            .iter()
            .filter(|t| t.weight != 0 && node_matches_term(node.node(), &t.preference))
            .map(|t| i64::from(t.weight))
            .sum())
    }

    fn normalize_score(&self, _state: &CycleState, _pod: &Pod, scores: &mut [NodeScore]) -> Status {
        default_normalize(scores, MAX_NODE_SCORE, false);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::*;
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity as NodeAffinitySpec, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    };
    use std::collections::BTreeMap;

    fn term(key: &str, value: &str) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.into(),
                operator: "In".into(),
                values: Some(vec![value.into()]),
            }]),
            match_fields: None,
        }
    }

    fn with_node_affinity(mut p: Pod, na: NodeAffinitySpec) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(na),
            ..Affinity::default()
        });
        p
    }

    #[test]
    fn node_selector_must_match_all_labels() {
        let mut p = pod("p");
        p.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())]));
        let ssd = NodeInfo::new(with_labels(node("a", "1", "1Gi", 10), &[("disk", "ssd")]));
        let hdd = NodeInfo::new(with_labels(node("b", "1", "1Gi", 10), &[("disk", "hdd")]));
        let mut state = CycleState::new();
        assert!(
            NodeAffinity
                .pre_filter(&mut state, &p, &Snapshot::new())
                .1
                .is_success()
        );
        assert!(NodeAffinity.filter(&state, &p, &ssd).is_success());
        let s = NodeAffinity.filter(&state, &p, &hdd);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            vec!["node(s) didn't match Pod's node affinity/selector"]
        );
    }

    #[test]
    fn required_terms_are_ored() {
        let p = with_node_affinity(
            pod("p"),
            NodeAffinitySpec {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![term("zone", "a"), term("zone", "b")],
                }),
                ..NodeAffinitySpec::default()
            },
        );
        let state = CycleState::new();
        let node_in = |z: &str| NodeInfo::new(with_labels(node("n", "1", "1Gi", 10), &[("zone", z)]));
        assert!(NodeAffinity.filter(&state, &p, &node_in("a")).is_success());
        assert!(NodeAffinity.filter(&state, &p, &node_in("b")).is_success());
        assert!(!NodeAffinity.filter(&state, &p, &node_in("c")).is_success());
    }

    #[test]
    fn preferred_terms_score_by_weight_normalized() {
        let p = with_node_affinity(
            pod("p"),
            NodeAffinitySpec {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 10,
                        preference: term("zone", "a"),
                    },
                    PreferredSchedulingTerm {
                        weight: 30,
                        preference: term("disk", "ssd"),
                    },
                ]),
                ..NodeAffinitySpec::default()
            },
        );
        let nodes = [
            NodeInfo::new(with_labels(
                node("a", "1", "1Gi", 10),
                &[("zone", "a"), ("disk", "ssd")],
            )),
            NodeInfo::new(with_labels(node("b", "1", "1Gi", 10), &[("zone", "a")])),
            NodeInfo::new(node("c", "1", "1Gi", 10)),
        ];
        let state = CycleState::new();
        let mut scores: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.clone(),
                score: NodeAffinity.score(&state, &p, n).unwrap(),
            })
            .collect();
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            vec![40, 10, 0]
        );
        NodeAffinity.normalize_score(&state, &p, &mut scores);
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            vec![100, 25, 0]
        );
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        assert!(
            NodeAffinity
                .pre_score(&mut CycleState::new(), &pod("q"), &Snapshot::new(), &refs)
                .is_skip()
        );
    }
}
