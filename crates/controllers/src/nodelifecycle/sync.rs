//! The pure part of the node lifecycle controller: what a node's conditions and taints should be given how long
//! it has been silent ([`node_step`]), whether the cluster is in full disruption ([`full_disruption`]), and when
//! a pod on a NoExecute-tainted node must be evicted ([`eviction`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose Ready condition is Unknown (it stopped reporting).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The conditions a silent node's kubelet would own, all set to Unknown.
pub const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The node's `Ready` condition status (`True`/`False`/`Unknown`), `None` if it never reported one.
pub fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// What to write to one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeUpdate {
    /// The full new `status.conditions`, when they change.
    pub conditions: Option<Vec<NodeCondition>>,
    /// The full new `spec.taints`, when they change.
    pub taints: Option<Vec<Taint>>,
    /// The node just went from Ready to not ready (for the NodeNotReady event and marking its pods).
    pub became_not_ready: bool,
}

/// Conditions of a node silent for longer than the grace period: every kubelet condition Unknown.
fn unknown_conditions(node: &Node, now: Timestamp) -> Vec<NodeCondition> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == *type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
            }
            None => conditions.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    conditions
}

fn is_lifecycle_taint(t: &Taint) -> bool {
    t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE
}

/// The lifecycle taints for a Ready status: NoSchedule always while not ready, NoExecute too unless the
/// cluster is in full disruption (then nothing is evicted).
fn lifecycle_taints(ready: Option<&str>, evict: bool, now: Timestamp) -> Vec<Taint> {
    let key = match ready {
        Some("True") => return Vec::new(),
        Some("False") => TAINT_NOT_READY,
        _ => TAINT_UNREACHABLE,
    };
    let mut taints = vec![Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }];
    if evict {
        taints.push(Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(now)),
            ..Default::default()
        });
    }
    taints
}

/// One monitoring pass over a node: a node silent for more than `grace` gets its conditions set to Unknown;
/// its lifecycle taints follow its (possibly just updated) Ready condition; other taints are kept, and taints
/// already right keep their `timeAdded`.
pub fn node_step(
    node: &Node,
    silent_for: Duration,
    grace: Duration,
    evictions: bool,
    now: Timestamp,
) -> NodeUpdate {
    let mut update = NodeUpdate::default();
    let before = ready_status(node);
    let mut effective = node.clone();
    if silent_for > grace {
        let conditions = unknown_conditions(node, now);
        let current = node.status.as_ref().and_then(|s| s.conditions.as_ref());
        if current != Some(&conditions) {
            effective.status.get_or_insert_with(Default::default).conditions = Some(conditions.clone());
            update.conditions = Some(conditions);
            update.became_not_ready = before == Some("True");
        }
    }
    let ready = ready_status(&effective);
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !is_lifecycle_taint(t))
        .cloned()
        .collect();
    for wanted in lifecycle_taints(ready, evictions, now) {
        let existing = current
            .iter()
            .find(|t| t.key == wanted.key && t.effect == wanted.effect);
        taints.push(existing.cloned().unwrap_or(wanted));
    }
    let same = taints.len() == current.len() && taints.iter().all(|t| current.contains(t));
    if !same {
        update.taints = Some(taints);
    }
    update
}

/// Kubernetes' full disruption: there are nodes and none of them is Ready. Evicting then would only move pods
/// nowhere (the likely cause is the control plane's own network), so NoExecute taints are withheld.
pub fn full_disruption<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> bool {
    let mut any = false;
    for n in nodes {
        any = true;
        if ready_status(n) == Some("True") {
            return false;
        }
    }
    any
}

/// Whether the toleration tolerates the taint (Kubernetes' `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            !key.is_empty() && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// When a pod on a node with these taints has to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Never,
    Now,
    At(Timestamp),
}

/// The taint manager's decision: a NoExecute taint the pod does not tolerate evicts it now; otherwise the
/// shortest `tolerationSeconds` among the tolerations used, counted from when the taint was added, sets the
/// deadline; tolerations without seconds tolerate forever.
pub fn eviction(pod: &Pod, taints: &[Taint], now: Timestamp) -> Eviction {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let mut deadline: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        if used.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let seconds = used
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let at = added + SignedDuration::from_secs(seconds);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        None => Eviction::Never,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn node(ready: Option<&str>, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: ready.map(|s| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    const GRACE: Duration = Duration::from_secs(50);

    fn keys(u: &NodeUpdate) -> Vec<(String, String)> {
        u.taints
            .iter()
            .flatten()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    #[test]
    fn a_silent_node_goes_unknown_and_gets_unreachable_taints() {
        let n = node(Some("True"), vec![]);
        let u = node_step(&n, Duration::from_secs(51), GRACE, true, ts(0));
        let conditions = u.conditions.clone().unwrap();
        assert_eq!(conditions.len(), 4);
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert!(u.became_not_ready);
        assert_eq!(
            keys(&u),
            [
                (TAINT_UNREACHABLE.into(), "NoSchedule".into()),
                (TAINT_UNREACHABLE.into(), "NoExecute".into())
            ]
        );
    }

    #[test]
    fn a_node_within_grace_is_left_alone() {
        let n = node(Some("True"), vec![]);
        assert_eq!(
            node_step(&n, Duration::from_secs(10), GRACE, true, ts(0)),
            NodeUpdate::default()
        );
    }

    #[test]
    fn not_ready_gets_not_ready_taints_and_recovery_removes_them_keeping_others() {
        let n = node(Some("False"), vec![]);
        let u = node_step(&n, Duration::ZERO, GRACE, true, ts(0));
        assert!(u.conditions.is_none());
        assert_eq!(keys(&u)[1], (TAINT_NOT_READY.into(), "NoExecute".into()));

        let other = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let mut taints = u.taints.unwrap();
        taints.push(other.clone());
        let recovered = node(Some("True"), taints);
        let u = node_step(&recovered, Duration::ZERO, GRACE, true, ts(5));
        assert_eq!(u.taints, Some(vec![other]));
    }

    #[test]
    fn taints_already_in_place_keep_their_time_and_are_not_rewritten() {
        let n = node(Some("Unknown"), vec![]);
        let first = node_step(&n, Duration::ZERO, GRACE, true, ts(0)).taints.unwrap();
        let n = node(Some("Unknown"), first);
        assert_eq!(
            node_step(&n, Duration::ZERO, GRACE, true, ts(30)),
            NodeUpdate::default()
        );
    }

    #[test]
    fn full_disruption_withholds_no_execute() {
        let down = [node(Some("Unknown"), vec![]), node(Some("False"), vec![])];
        assert!(full_disruption(&down));
        assert!(!full_disruption(&[
            node(Some("True"), vec![]),
            node(None, vec![])
        ]));
        assert!(!full_disruption(&[]));
        let u = node_step(&down[0], Duration::ZERO, GRACE, false, ts(0));
        assert_eq!(keys(&u), [(TAINT_UNREACHABLE.into(), "NoSchedule".into())]);
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn unreachable_at(s: i64) -> Taint {
        Taint {
            key: TAINT_UNREACHABLE.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(ts(s))),
            ..Default::default()
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            ..Default::default()
        }
    }

    #[test]
    fn evictions_follow_toleration_seconds_from_the_taint_time() {
        let taints = [unreachable_at(0)];
        assert_eq!(eviction(&pod(vec![]), &taints, ts(1)), Eviction::Now);
        let p = pod(vec![toleration(TAINT_UNREACHABLE, Some(300))]);
        assert_eq!(eviction(&p, &taints, ts(1)), Eviction::At(ts(300)));
        assert_eq!(eviction(&p, &taints, ts(300)), Eviction::Now);
        let forever = pod(vec![toleration(TAINT_UNREACHABLE, None)]);
        assert_eq!(eviction(&forever, &taints, ts(10_000)), Eviction::Never);
        let other = pod(vec![toleration(TAINT_NOT_READY, Some(300))]);
        assert_eq!(
            eviction(&other, &taints, ts(1)),
            Eviction::Now,
            "tolerates a different taint only"
        );
        let no_schedule = Taint {
            effect: "NoSchedule".into(),
            ..unreachable_at(0)
        };
        assert_eq!(eviction(&pod(vec![]), &[no_schedule], ts(1)), Eviction::Never);
    }

    #[test]
    fn toleration_matching_rules() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let equal = |v: &str| Toleration {
            key: Some("k".into()),
            value: Some(v.into()),
            ..Default::default()
        };
        assert!(tolerates(&equal("v"), &taint));
        assert!(!tolerates(&equal("w"), &taint));
        let everything = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&everything, &taint));
        let wrong_effect = Toleration {
            effect: Some("NoSchedule".into()),
            ..equal("v")
        };
        assert!(!tolerates(&wrong_effect, &taint));
    }
}
