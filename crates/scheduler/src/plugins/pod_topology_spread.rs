//! PodTopologySpread: `spec.topologySpreadConstraints`. Hard constraints (`DoNotSchedule`) filter out nodes
//! whose topology domain would exceed `maxSkew` over the least-loaded domain; soft ones (`ScheduleAnyway`)
//! score nodes in domains with fewer matching pods higher. Counted pods are those in the pod's namespace
//! matching the constraint's selector (plus `matchLabelKeys`), on nodes that pass the pod's node affinity
//! (`nodeAffinityPolicy: Honor`, the default) and, with `nodeTaintsPolicy: Honor`, whose taints it tolerates.
//! kube's cluster-level default constraints (derived from Services/ReplicaSets) are not applied.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};

use super::helpers::{
    Selector, node_taints, pod_matches_node_selector_and_affinity, pod_tolerations, tolerated,
};
use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeScore, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, Status,
};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "PodTopologySpread";
/// kube's `ErrReasonConstraintsNotMatch`.
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// kube's `ErrReasonNodeLabelNotMatch`.
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

#[derive(Debug, Default)]
pub struct PodTopologySpread;

struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: Selector,
    min_domains: usize,
    honor_affinity: bool,
    honor_taints: bool,
}

fn constraints(pod: &Pod, when_unsatisfiable: &str) -> Vec<Constraint> {
    let list: &[TopologySpreadConstraint] = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default();
    list.iter()
        .filter(|c| c.when_unsatisfiable == when_unsatisfiable)
        .map(|c| Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            selector: Selector::from_label_selector(c.label_selector.as_ref()).with_label_keys(
                c.match_label_keys.as_ref(),
                pod.metadata.labels.as_ref(),
                false,
            ),
            min_domains: c.min_domains.map_or(1, |m| m.max(1) as usize),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        })
        .collect()
}

/// Whether the node's pods count for the constraints (inclusion policies) and it has every topology key.
fn node_counts(cs: &[Constraint], pod: &Pod, node: &NodeInfo) -> bool {
    let n = node.node();
    let labels = n.metadata.labels.as_ref();
    if !cs
        .iter()
        .all(|c| labels.is_some_and(|l| l.contains_key(&c.topology_key)))
    {
        return false;
    }
    if cs.iter().any(|c| c.honor_affinity) && !pod_matches_node_selector_and_affinity(pod, n) {
        return false;
    }
    if cs.iter().any(|c| c.honor_taints) {
        let tolerations = pod_tolerations(pod);
        let blocked = node_taints(n)
            .iter()
            .any(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(tolerations, t));
        if blocked {
            return false;
        }
    }
    true
}

fn count_matching(c: &Constraint, namespace: Option<&str>, node: &NodeInfo) -> i64 {
    node.pods
        .iter()
        .filter(|p| {
            p.pod.metadata.namespace.as_deref() == namespace
                && p.pod.metadata.deletion_timestamp.is_none()
                && c.selector.matches(p.pod.metadata.labels.as_ref())
        })
        .count() as i64
}

fn topology_value<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a String> {
    node.labels().and_then(|l| l.get(key))
}

struct PreFilterState {
    constraints: Vec<Constraint>,
    /// Per constraint: matching pods per topology value, with a 0 entry for every eligible domain.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: the global minimum the skew is measured against (0 below `minDomains` domains).
    min: Vec<i64>,
    self_match: Vec<bool>,
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let cs = constraints(pod, "DoNotSchedule");
        if cs.is_empty() {
            return (PreFilterResult::default(), Status::skip());
        }
        let ns = pod.metadata.namespace.as_deref();
        let mut counts = vec![HashMap::new(); cs.len()];
        for node in snapshot.nodes().filter(|n| node_counts(&cs, pod, n)) {
            for (c, m) in cs.iter().zip(counts.iter_mut()) {
                let Some(value) = topology_value(node, &c.topology_key) else {
                    continue;
                };
                *m.entry(value.clone()).or_insert(0) += count_matching(c, ns, node);
            }
        }
        let self_match = cs
            .iter()
            .map(|c| c.selector.matches(pod.metadata.labels.as_ref()))
            .collect();
        // No eligible domain at all: nothing to be skewed against, every node passes.
        let min = cs
            .iter()
            .zip(&counts)
            .map(|(c, m)| {
                if m.len() < c.min_domains {
                    0
                } else {
                    m.values().copied().min().unwrap_or(i64::MAX / 2)
                }
            })
            .collect();
        state.write(PreFilterState {
            constraints: cs,
            counts,
            min,
            self_match,
        });
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>() else {
            return Status::error("PodTopologySpread: PreFilter state missing");
        };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = topology_value(node, &c.topology_key) else {
                return Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH);
            };
            let matching = s.counts[i].get(value).copied().unwrap_or(0);
            let skew = matching + i64::from(s.self_match[i]) - s.min[i];
            if skew > c.max_skew {
                return Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

struct PreScoreState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
    /// Feasible nodes lacking a topology key: scored 0.
    ignored: HashSet<Arc<str>>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status {
        let cs = constraints(pod, "ScheduleAnyway");
        if cs.is_empty() {
            return Status::skip();
        }
        let has_keys = |n: &NodeInfo| cs.iter().all(|c| topology_value(n, &c.topology_key).is_some());
        let ignored: HashSet<Arc<str>> = nodes
            .iter()
            .filter(|n| !has_keys(n))
            .map(|n| n.name.clone())
            .collect();
        let mut domains: Vec<HashSet<&String>> = vec![HashSet::new(); cs.len()];
        for n in nodes.iter().filter(|n| has_keys(n)) {
            for (c, d) in cs.iter().zip(domains.iter_mut()) {
                d.extend(topology_value(n, &c.topology_key));
            }
        }
        let ns = pod.metadata.namespace.as_deref();
        let mut counts = vec![HashMap::new(); cs.len()];
        for node in snapshot.nodes().filter(|n| node_counts(&cs, pod, n)) {
            for (i, c) in cs.iter().enumerate() {
                let Some(value) = topology_value(node, &c.topology_key) else {
                    continue;
                };
                if domains[i].contains(value) {
                    *counts[i].entry(value.clone()).or_insert(0) += count_matching(c, ns, node);
                }
            }
        }
        let weights = domains.iter().map(|d| ((d.len() + 2) as f64).ln()).collect();
        state.write(PreScoreState {
            constraints: cs,
            counts,
            weights,
            ignored,
        });
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let s = state
            .read::<PreScoreState>()
            .ok_or_else(|| Status::error("PodTopologySpread: PreScore state missing"))?;
        if s.ignored.contains(&node.name) {
            return Ok(0);
        }
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            if let Some(value) = topology_value(node, &c.topology_key) {
                let n = s.counts[i].get(value).copied().unwrap_or(0);
                score += n as f64 * s.weights[i] + (c.max_skew - 1) as f64;
            }
        }
        Ok(score.round() as i64)
    }

    /// Fewer matching pods is better: `100 × (max + min − score) / max` over the scored nodes.
    fn normalize_score(&self, state: &CycleState, _pod: &Pod, scores: &mut [NodeScore]) -> Status {
        let Some(s) = state.read::<PreScoreState>() else {
            return Status::success();
        };
        let considered = || {
            scores
                .iter()
                .filter(|n| !s.ignored.contains(&n.name))
                .map(|n| n.score)
        };
        let (min, max) = (considered().min().unwrap_or(0), considered().max().unwrap_or(0));
        for n in scores.iter_mut() {
            n.score = if s.ignored.contains(&n.name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - n.score) / max
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::collections::BTreeMap;

    fn spread(p: Pod, key: &str, max_skew: i32, when: &str) -> Pod {
        let mut p = pod_labels(p, &[("app", "web")]);
        p.spec.as_mut().unwrap().topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                match_expressions: None,
            }),
            ..TopologySpreadConstraint::default()
        }]);
        p
    }

    fn zoned(name: &str, zone: &str) -> k8s_openapi::api::core::v1::Node {
        with_labels(node(name, "8", "16Gi", 110), &[("zone", zone)])
    }

    fn web(name: &str, node: &str) -> Pod {
        bound(pod_labels(pod(name), &[("app", "web")]), node)
    }

    #[test]
    fn hard_constraint_rejects_the_crowded_zone() {
        let s = Snapshot::from_objects(
            [
                zoned("a1", "a"),
                zoned("b1", "b"),
                with_labels(node("nolabel", "8", "16Gi", 110), &[]),
            ],
            [web("w1", "a1"), web("w2", "a1")],
        );
        let p = spread(pod("new"), "zone", 1, "DoNotSchedule");
        let mut state = CycleState::new();
        assert!(PodTopologySpread.pre_filter(&mut state, &p, &s).1.is_success());
        let st = PodTopologySpread.filter(&state, &p, s.get("a1").unwrap());
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(st.reasons, vec![ERR_REASON_CONSTRAINTS_NOT_MATCH]);
        assert!(
            PodTopologySpread
                .filter(&state, &p, s.get("b1").unwrap())
                .is_success()
        );
        let st = PodTopologySpread.filter(&state, &p, s.get("nolabel").unwrap());
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
    }

    #[test]
    fn pods_in_other_namespaces_or_not_matching_do_not_count() {
        let mut other_ns = web("x", "a1");
        other_ns.metadata.namespace = Some("other".into());
        let s = Snapshot::from_objects(
            [zoned("a1", "a"), zoned("b1", "b")],
            [other_ns, bound(pod_labels(pod("y"), &[("app", "db")]), "a1")],
        );
        let p = spread(pod("new"), "zone", 1, "DoNotSchedule");
        let mut state = CycleState::new();
        PodTopologySpread.pre_filter(&mut state, &p, &s);
        assert!(
            PodTopologySpread
                .filter(&state, &p, s.get("a1").unwrap())
                .is_success()
        );
    }

    #[test]
    fn min_domains_forces_zero_minimum() {
        let s = Snapshot::from_objects([zoned("a1", "a")], [web("w1", "a1")]);
        let mut p = spread(pod("new"), "zone", 1, "DoNotSchedule");
        p.spec
            .as_mut()
            .unwrap()
            .topology_spread_constraints
            .as_mut()
            .unwrap()[0]
            .min_domains = Some(2);
        let mut state = CycleState::new();
        PodTopologySpread.pre_filter(&mut state, &p, &s);
        // one domain < minDomains 2: min is 0, skew 1 + 1 - 0 = 2 > 1
        assert!(
            !PodTopologySpread
                .filter(&state, &p, s.get("a1").unwrap())
                .is_success()
        );
    }

    #[test]
    fn soft_constraint_scores_emptier_domains_higher() {
        let s = Snapshot::from_objects(
            [zoned("a1", "a"), zoned("b1", "b"), zoned("c1", "c")],
            [web("w1", "a1"), web("w2", "a1"), web("w3", "b1")],
        );
        let p = spread(pod("new"), "zone", 1, "ScheduleAnyway");
        let nodes: Vec<&NodeInfo> = s.nodes().collect();
        let mut state = CycleState::new();
        assert!(
            PodTopologySpread
                .pre_score(&mut state, &p, &s, &nodes)
                .is_success()
        );
        let mut scores: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.clone(),
                score: PodTopologySpread.score(&state, &p, n).unwrap(),
            })
            .collect();
        PodTopologySpread.normalize_score(&state, &p, &mut scores);
        let by = |n: &str| scores.iter().find(|s| &*s.name == n).unwrap().score;
        assert!(by("c1") > by("b1") && by("b1") > by("a1"), "{scores:?}");
        assert_eq!(by("c1"), 100);
    }
}
