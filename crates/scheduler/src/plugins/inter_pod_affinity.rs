//! InterPodAffinity: required pod affinity and anti-affinity (the incoming pod's, and existing pods'
//! anti-affinity against it) filter nodes by topology domain; preferred terms of both sides score them.
//! `namespaceSelector` is honoured only when empty (`{}` = all namespaces); a non-empty one would need
//! Namespace objects and is treated as selecting none beyond `namespaces`.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use super::helpers::Selector;
use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeScore, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, Status,
};
use crate::snapshot::{NodeInfo, Snapshot};

pub const NAME: &str = "InterPodAffinity";
/// kube's `ErrReasonAffinityRulesNotMatch`.
pub const ERR_REASON_AFFINITY_RULES_NOT_MATCH: &str = "node(s) didn't match pod affinity rules";
/// kube's `ErrReasonAntiAffinityRulesNotMatch`.
pub const ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH: &str = "node(s) didn't match pod anti-affinity rules";
/// kube's `ErrReasonExistingAntiAffinityRulesNotMatch`.
pub const ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Weight of an existing pod's *required* affinity term when scoring (kube's `hardPodAffinityWeight`).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

#[derive(Debug, Default)]
pub struct InterPodAffinity;

/// A pod affinity term prepared for matching against many pods.
struct Term {
    /// `None` = every namespace.
    namespaces: Option<HashSet<String>>,
    selector: Selector,
    topology_key: String,
    weight: i64,
}

impl Term {
    fn new(owner: &Pod, t: &PodAffinityTerm, weight: i64) -> Term {
        let listed: HashSet<String> = t.namespaces.iter().flatten().cloned().collect();
        let all = t.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        });
        let namespaces = if all {
            None
        } else if listed.is_empty() && t.namespace_selector.is_none() {
            Some(HashSet::from([owner
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into())]))
        } else {
            Some(listed)
        };
        let labels = owner.metadata.labels.as_ref();
        let selector = Selector::from_label_selector(t.label_selector.as_ref())
            .with_label_keys(t.match_label_keys.as_ref(), labels, false)
            .with_label_keys(t.mismatch_label_keys.as_ref(), labels, true);
        Term {
            namespaces,
            selector,
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    fn matches(&self, pod: &Pod) -> bool {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        self.namespaces.as_ref().is_none_or(|s| s.contains(ns))
            && self.selector.matches(pod.metadata.labels.as_ref())
    }
}

#[derive(Default)]
struct PodTerms {
    required_affinity: Vec<Term>,
    required_anti_affinity: Vec<Term>,
    preferred_affinity: Vec<Term>,
    preferred_anti_affinity: Vec<Term>,
}

fn pod_terms(pod: &Pod) -> PodTerms {
    let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return PodTerms::default();
    };
    let required = |ts: Option<&Vec<PodAffinityTerm>>| {
        ts.into_iter()
            .flatten()
            .map(|t| Term::new(pod, t, HARD_POD_AFFINITY_WEIGHT))
            .collect::<Vec<_>>()
    };
    let preferred = |ts: Option<&Vec<WeightedPodAffinityTerm>>| {
        ts.into_iter()
            .flatten()
            .map(|w| Term::new(pod, &w.pod_affinity_term, i64::from(w.weight)))
            .collect::<Vec<_>>()
    };
    let aff = a.pod_affinity.as_ref();
    let anti = a.pod_anti_affinity.as_ref();
    PodTerms {
        required_affinity: required(
            aff.and_then(|x| x.required_during_scheduling_ignored_during_execution.as_ref()),
        ),
        required_anti_affinity: required(
            anti.and_then(|x| x.required_during_scheduling_ignored_during_execution.as_ref()),
        ),
        preferred_affinity: preferred(
            aff.and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref()),
        ),
        preferred_anti_affinity: preferred(
            anti.and_then(|x| x.preferred_during_scheduling_ignored_during_execution.as_ref()),
        ),
    }
}

type TopologyCounts = HashMap<(String, String), i64>;

fn add_for_node(counts: &mut TopologyCounts, node: &NodeInfo, key: &str, by: i64) {
    if let Some(value) = node.labels().and_then(|l| l.get(key)) {
        *counts.entry((key.to_string(), value.clone())).or_insert(0) += by;
    }
}

struct PreFilterState {
    terms: PodTerms,
    /// Topology pairs where existing pods' required anti-affinity forbids the incoming pod.
    existing_anti: TopologyCounts,
    /// Pairs holding pods that match *all* the incoming pod's required affinity terms.
    affinity: TopologyCounts,
    /// Pairs holding pods matching one of the incoming pod's required anti-affinity terms.
    anti_affinity: TopologyCounts,
    self_matches_affinity: bool,
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let terms = pod_terms(pod);
        let own = !terms.required_affinity.is_empty() || !terms.required_anti_affinity.is_empty();
        if !own && snapshot.pods_with_required_anti_affinity() == 0 {
            return (PreFilterResult::default(), Status::skip());
        }
        let mut existing_anti = TopologyCounts::new();
        let mut affinity = TopologyCounts::new();
        let mut anti_affinity = TopologyCounts::new();
        for node in snapshot.nodes() {
            if node.pods_with_required_anti_affinity > 0 {
                for existing in node.pods.iter().filter(|p| p.has_required_anti_affinity) {
                    for t in pod_terms(&existing.pod).required_anti_affinity {
                        if t.matches(pod) {
                            add_for_node(&mut existing_anti, node, &t.topology_key, 1);
                        }
                    }
                }
            }
            if !own {
                continue;
            }
            for existing in &node.pods {
                let all = &terms.required_affinity;
                if !all.is_empty() && all.iter().all(|t| t.matches(&existing.pod)) {
                    for t in all {
                        add_for_node(&mut affinity, node, &t.topology_key, 1);
                    }
                }
                for t in terms
                    .required_anti_affinity
                    .iter()
                    .filter(|t| t.matches(&existing.pod))
                {
                    add_for_node(&mut anti_affinity, node, &t.topology_key, 1);
                }
            }
        }
        let self_matches_affinity = terms.required_affinity.iter().all(|t| t.matches(pod));
        state.write(PreFilterState {
            terms,
            existing_anti,
            affinity,
            anti_affinity,
            self_matches_affinity,
        });
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>() else {
            return Status::error("InterPodAffinity: PreFilter state missing");
        };
        let labels = node.labels();
        let pair = |key: &str| {
            labels
                .and_then(|l| l.get(key))
                .map(|v| (key.to_string(), v.clone()))
        };

        let mut pods_exist = true;
        for t in &s.terms.required_affinity {
            match pair(&t.topology_key) {
                None => return Status::unresolvable(ERR_REASON_AFFINITY_RULES_NOT_MATCH),
                Some(p) => pods_exist &= s.affinity.get(&p).is_some_and(|&n| n > 0),
            }
        }
        // The first pod of a group with affinity to itself may go anywhere that has the topology keys.
        if !(pods_exist || s.affinity.is_empty() && s.self_matches_affinity) {
            return Status::unresolvable(ERR_REASON_AFFINITY_RULES_NOT_MATCH);
        }
        for t in &s.terms.required_anti_affinity {
            if pair(&t.topology_key).is_some_and(|p| s.anti_affinity.get(&p).is_some_and(|&n| n > 0)) {
                return Status::unschedulable(ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH);
            }
        }
        if !s.existing_anti.is_empty()
            && labels.into_iter().flatten().any(|(k, v)| {
                s.existing_anti
                    .get(&(k.clone(), v.clone()))
                    .is_some_and(|&n| n > 0)
            })
        {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH);
        }
        Status::success()
    }
}

/// Score per topology pair, summed over the node's labels.
struct PreScoreState(TopologyCounts);

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
        _nodes: &[&NodeInfo],
    ) -> Status {
        let terms = pod_terms(pod);
        let has_preferred = !terms.preferred_affinity.is_empty() || !terms.preferred_anti_affinity.is_empty();
        if !has_preferred && snapshot.pods_with_affinity() == 0 {
            return Status::skip();
        }
        let mut scores = TopologyCounts::new();
        for node in snapshot
            .nodes()
            .filter(|n| has_preferred || n.pods_with_affinity > 0)
        {
            for existing in &node.pods {
                if has_preferred {
                    for t in terms
                        .preferred_affinity
                        .iter()
                        .filter(|t| t.matches(&existing.pod))
                    {
                        add_for_node(&mut scores, node, &t.topology_key, t.weight);
                    }
                    for t in terms
                        .preferred_anti_affinity
                        .iter()
                        .filter(|t| t.matches(&existing.pod))
                    {
                        add_for_node(&mut scores, node, &t.topology_key, -t.weight);
                    }
                }
                if existing.has_affinity {
                    let theirs = pod_terms(&existing.pod);
                    for t in theirs.required_affinity.iter().chain(&theirs.preferred_affinity) {
                        if t.matches(pod) {
                            add_for_node(&mut scores, node, &t.topology_key, t.weight);
                        }
                    }
                    for t in theirs.preferred_anti_affinity.iter().filter(|t| t.matches(pod)) {
                        add_for_node(&mut scores, node, &t.topology_key, -t.weight);
                    }
                }
            }
        }
        if scores.is_empty() {
            return Status::skip();
        }
        state.write(PreScoreState(scores));
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &Pod, node: &NodeInfo) -> Result<i64, Status> {
        let s = state
            .read::<PreScoreState>()
            .ok_or_else(|| Status::error("InterPodAffinity: PreScore state missing"))?;
        let labels = node.labels();
        Ok(s.0
            .iter()
            .filter(|((k, v), _)| labels.and_then(|l| l.get(k)) == Some(v))
            .map(|(_, score)| score)
            .sum())
    }

    /// `100 × (score − min) / (max − min)`; all 0 when every node scored the same.
    fn normalize_score(&self, _state: &CycleState, _pod: &Pod, scores: &mut [NodeScore]) -> Status {
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        for s in scores.iter_mut() {
            s.score = if max > min {
                MAX_NODE_SCORE * (s.score - min) / (max - min)
            } else {
                0
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
    use k8s_openapi::api::core::v1::{Affinity, PodAffinity, PodAntiAffinity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::collections::BTreeMap;

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
                match_expressions: None,
            }),
            topology_key: key.into(),
            ..PodAffinityTerm::default()
        }
    }

    fn with_affinity(mut p: Pod, affinity: Option<PodAffinity>, anti: Option<PodAntiAffinity>) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_affinity: affinity,
            pod_anti_affinity: anti,
            ..Affinity::default()
        });
        p
    }

    fn required_affinity(t: PodAffinityTerm) -> Option<PodAffinity> {
        Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![t]),
            ..Default::default()
        })
    }

    fn required_anti(t: PodAffinityTerm) -> Option<PodAntiAffinity> {
        Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![t]),
            ..Default::default()
        })
    }

    fn zoned(name: &str, zone: &str) -> k8s_openapi::api::core::v1::Node {
        with_labels(node(name, "8", "16Gi", 110), &[("zone", zone)])
    }

    fn run_filter(p: &Pod, s: &Snapshot, node: &str) -> Status {
        let mut state = CycleState::new();
        let (_, st) = InterPodAffinity.pre_filter(&mut state, p, s);
        if st.is_skip() {
            return Status::success();
        }
        InterPodAffinity.filter(&state, p, s.get(node).unwrap())
    }

    #[test]
    fn required_affinity_needs_a_matching_pod_in_the_zone() {
        let s = Snapshot::from_objects(
            [zoned("a1", "a"), zoned("b1", "b")],
            [bound(pod_labels(pod("db"), &[("app", "db")]), "a1")],
        );
        let p = with_affinity(pod("web"), required_affinity(term("db", "zone")), None);
        assert!(run_filter(&p, &s, "a1").is_success());
        let st = run_filter(&p, &s, "b1");
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec![ERR_REASON_AFFINITY_RULES_NOT_MATCH]);
    }

    #[test]
    fn first_pod_with_affinity_to_itself_may_go_anywhere() {
        let s = Snapshot::from_objects([zoned("a1", "a")], []);
        let p = with_affinity(
            pod_labels(pod("web"), &[("app", "web")]),
            required_affinity(term("web", "zone")),
            None,
        );
        assert!(run_filter(&p, &s, "a1").is_success());
        let other = with_affinity(pod("x"), required_affinity(term("web", "zone")), None);
        assert!(
            !run_filter(&other, &s, "a1").is_success(),
            "doesn't match its own term"
        );
    }

    #[test]
    fn required_anti_affinity_keeps_pods_apart() {
        let s = Snapshot::from_objects(
            [zoned("a1", "a"), zoned("b1", "b")],
            [bound(pod_labels(pod("w1"), &[("app", "web")]), "a1")],
        );
        let p = with_affinity(
            pod_labels(pod("w2"), &[("app", "web")]),
            None,
            required_anti(term("web", "zone")),
        );
        assert_eq!(
            run_filter(&p, &s, "a1").reasons,
            vec![ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH]
        );
        assert!(run_filter(&p, &s, "b1").is_success());
    }

    #[test]
    fn existing_pods_anti_affinity_is_respected() {
        let existing = with_affinity(
            pod_labels(pod("loner"), &[("app", "loner")]),
            None,
            required_anti(term("web", "kubernetes.io/hostname")),
        );
        let s = Snapshot::from_objects([zoned("a1", "a"), zoned("a2", "a")], [bound(existing, "a1")]);
        let p = pod_labels(pod("w"), &[("app", "web")]);
        let st = run_filter(&p, &s, "a1");
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(
            st.reasons,
            vec![ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH]
        );
        assert!(run_filter(&p, &s, "a2").is_success());
    }

    #[test]
    fn other_namespace_pods_do_not_match_by_default() {
        let mut db = bound(pod_labels(pod("db"), &[("app", "db")]), "a1");
        db.metadata.namespace = Some("other".into());
        let s = Snapshot::from_objects([zoned("a1", "a")], [db]);
        let p = with_affinity(pod("web"), required_affinity(term("db", "zone")), None);
        assert!(!run_filter(&p, &s, "a1").is_success());
        let mut t = term("db", "zone");
        t.namespaces = Some(vec!["other".into()]);
        let p = with_affinity(pod("web"), required_affinity(t), None);
        assert!(run_filter(&p, &s, "a1").is_success());
    }

    #[test]
    fn preferred_affinity_scores_the_zone_with_matches() {
        let s = Snapshot::from_objects(
            [zoned("a1", "a"), zoned("b1", "b")],
            [bound(pod_labels(pod("db"), &[("app", "db")]), "b1")],
        );
        let p = with_affinity(
            pod("web"),
            Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                    weight: 50,
                    pod_affinity_term: term("db", "zone"),
                }]),
                ..Default::default()
            }),
            None,
        );
        let nodes: Vec<&NodeInfo> = s.nodes().collect();
        let mut state = CycleState::new();
        assert!(
            InterPodAffinity
                .pre_score(&mut state, &p, &s, &nodes)
                .is_success()
        );
        let mut scores: Vec<NodeScore> = nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.clone(),
                score: InterPodAffinity.score(&state, &p, n).unwrap(),
            })
            .collect();
        InterPodAffinity.normalize_score(&state, &p, &mut scores);
        let by = |n: &str| scores.iter().find(|s| &*s.name == n).unwrap().score;
        assert_eq!((by("a1"), by("b1")), (0, 100));
    }

    #[test]
    fn nothing_to_do_skips() {
        let s = Snapshot::from_objects([zoned("a1", "a")], [bound(pod("x"), "a1")]);
        let mut state = CycleState::new();
        assert!(InterPodAffinity.pre_filter(&mut state, &pod("p"), &s).1.is_skip());
        assert!(
            InterPodAffinity
                .pre_score(&mut state, &pod("p"), &s, &[])
                .is_skip()
        );
    }
}
