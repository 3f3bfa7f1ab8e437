//! Matching rules shared by several plugins: label selectors, node selector terms, tolerations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

type Labels = BTreeMap<String, String>;

/// One parsed label selector requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    /// An operator we don't know: matches nothing, as an invalid selector does in Kubernetes.
    Invalid,
}

/// A label selector prepared for repeated matching. `None`-selectors (absent in the API object) match
/// nothing; an empty selector matches everything — Kubernetes' rules for affinity and spread terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Option<Vec<Requirement>>,
}

impl Selector {
    pub fn nothing() -> Selector {
        Selector { requirements: None }
    }

    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Selector {
        let Some(sel) = sel else {
            return Selector::nothing();
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            reqs.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                _ => Requirement::Invalid,
            });
        }
        Selector {
            requirements: Some(reqs),
        }
    }

    /// Adds `key in (labels[key])` for every key of `keys` present in `labels` (`matchLabelKeys`), or
    /// `key notin (…)` when `negate` (`mismatchLabelKeys`).
    pub fn with_label_keys(
        mut self,
        keys: Option<&Vec<String>>,
        labels: Option<&Labels>,
        negate: bool,
    ) -> Selector {
        if let (Some(reqs), Some(keys), Some(labels)) = (self.requirements.as_mut(), keys, labels) {
            for k in keys {
                if let Some(v) = labels.get(k) {
                    reqs.push(if negate {
                        Requirement::NotIn(k.clone(), vec![v.clone()])
                    } else {
                        Requirement::In(k.clone(), vec![v.clone()])
                    });
                }
            }
        }
        self
    }

    pub fn matches(&self, labels: Option<&Labels>) -> bool {
        let Some(reqs) = &self.requirements else {
            return false;
        };
        reqs.iter().all(|r| {
            let get = |k: &str| labels.and_then(|l| l.get(k));
            match r {
                Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => get(k).is_some(),
                Requirement::DoesNotExist(k) => get(k).is_none(),
                Requirement::Invalid => false,
            }
        })
    }
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                return false;
            };
            if op == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// Whether a node satisfies one node selector term: every expression on its labels and every field
/// (`metadata.name`) requirement. A term with no requirements matches nothing, as in Kubernetes.
pub fn node_matches_term(node: &Node, term: &NodeSelectorTerm) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key))))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_ref()))
}

/// Whether a node satisfies any of the terms (terms are ORed).
pub fn node_matches_any_term(node: &Node, terms: &[NodeSelectorTerm]) -> bool {
    terms.iter().any(|t| node_matches_term(node, t))
}

/// The pod's `nodeSelector` and required node affinity together (kube's `RequiredNodeAffinity`).
pub fn pod_matches_node_selector_and_affinity(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = spec.node_selector.as_ref() {
        let labels = node.metadata.labels.as_ref();
        if !sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    required.is_none_or(|r| node_matches_any_term(node, &r.node_selector_terms))
}

/// Kubernetes' `Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of the tolerations tolerates the taint.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The pod's tolerations (empty when none).
pub fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Node taints (empty when none).
pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// kube's `DefaultNormalizeScore`: scales scores so the highest becomes `max`; with `reverse`, the
/// lowest raw score becomes the best. When every score is 0, all become `max` if `reverse`, else stay 0.
pub fn default_normalize(scores: &mut [crate::framework::NodeScore], max: i64, reverse: bool) {
    let highest = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if highest == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| s.score = max);
        }
        return;
    }
    for s in scores.iter_mut() {
        s.score = max * s.score / highest;
        if reverse {
            s.score = max - s.score;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_follow_kubernetes_rules() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(
            !Selector::from_label_selector(None).matches(Some(&l)),
            "absent selector matches nothing"
        );
        assert!(Selector::from_label_selector(Some(&LabelSelector::default())).matches(Some(&l)));
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into()]),
                },
                LabelSelectorRequirement {
                    key: "x".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["prod".into()]),
                },
            ]),
        };
        let s = Selector::from_label_selector(Some(&sel));
        assert!(s.matches(Some(&l)));
        assert!(!s.matches(Some(&labels(&[("app", "web")]))));
        let s = s.with_label_keys(Some(&vec!["app".into()]), Some(&labels(&[("app", "db")])), false);
        assert!(!s.matches(Some(&l)), "matchLabelKeys adds app in (db)");
    }

    #[test]
    fn node_selector_terms_support_set_and_numeric_operators() {
        let n = with_labels(node("n1", "1", "1Gi", 10), &[("zone", "a"), ("cores", "8")]);
        let term = |key: &str, op: &str, vals: &[&str]| NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(vals.iter().map(|v| v.to_string()).collect()),
            }]),
            match_fields: None,
        };
        assert!(node_matches_term(&n, &term("zone", "In", &["a", "b"])));
        assert!(!node_matches_term(&n, &term("zone", "NotIn", &["a"])));
        assert!(node_matches_term(&n, &term("cores", "Gt", &["4"])));
        assert!(!node_matches_term(&n, &term("cores", "Lt", &["4"])));
        assert!(
            !node_matches_term(&n, &term("zone", "Gt", &["4"])),
            "non-numeric label"
        );
        assert!(node_matches_term(&n, &term("gpu", "DoesNotExist", &[])));
        assert!(
            !node_matches_term(&n, &NodeSelectorTerm::default()),
            "empty term matches nothing"
        );
        let by_name = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec!["n1".into()]),
            }]),
        };
        assert!(node_matches_term(&n, &by_name));
    }

    #[test]
    fn tolerations_match_like_kubernetes() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        let tol =
            |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| Toleration {
                key: key.map(Into::into),
                operator: op.map(Into::into),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                toleration_seconds: None,
            };
        assert!(tolerates(&tol(Some("dedicated"), None, Some("gpu"), None), &t));
        assert!(!tolerates(
            &tol(Some("dedicated"), Some("Equal"), Some("cpu"), None),
            &t
        ));
        assert!(tolerates(
            &tol(Some("dedicated"), Some("Exists"), None, Some("NoSchedule")),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("dedicated"), Some("Exists"), None, Some("NoExecute")),
            &t
        ));
        assert!(
            tolerates(&tol(None, Some("Exists"), None, None), &t),
            "empty key + Exists tolerates all"
        );
    }

    #[test]
    fn default_normalize_scales_and_reverses() {
        let mk = |v: &[i64]| {
            v.iter()
                .enumerate()
                .map(|(i, &s)| crate::framework::NodeScore {
                    name: i.to_string().into(),
                    score: s,
                })
                .collect::<Vec<_>>()
        };
        let mut s = mk(&[1, 2, 4]);
        default_normalize(&mut s, 100, false);
        assert_eq!(s.iter().map(|s| s.score).collect::<Vec<_>>(), vec![25, 50, 100]);
        let mut s = mk(&[0, 1, 2]);
        default_normalize(&mut s, 100, true);
        assert_eq!(s.iter().map(|s| s.score).collect::<Vec<_>>(), vec![100, 50, 0]);
        let mut s = mk(&[0, 0]);
        default_normalize(&mut s, 100, true);
        assert_eq!(s.iter().map(|s| s.score).collect::<Vec<_>>(), vec![100, 100]);
    }
}
