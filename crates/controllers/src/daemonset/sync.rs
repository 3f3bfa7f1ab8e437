//! The DaemonSet controller's pure step: from a DaemonSet, the nodes and the pods in its namespace, decide which
//! pods to adopt, on which nodes to create a daemon pod, which pods to delete (misscheduled, duplicate, failed,
//! orphaned by a deleted node, or replaced by a RollingUpdate within `maxUnavailable`) and the new status.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::claim::{self, Claim, Owner};
use crate::deployment::util::pod_template_hash;
use crate::nodelifecycle::sync::tolerates;
use crate::pod;

/// Label carrying the template hash a daemon pod was created from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// A pod named by the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

fn pod_ref(p: &Pod) -> PodRef {
    PodRef {
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
    }
}

/// What one sync of a DaemonSet should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub adopt: Vec<PodRef>,
    pub release: Vec<PodRef>,
    /// Nodes to create a daemon pod for.
    pub create_on: Vec<String>,
    pub delete: Vec<PodRef>,
    pub status: DaemonSetStatus,
}

/// The owner identity of a DaemonSet for claiming pods.
pub fn owner(ds: &DaemonSet) -> Owner<'_> {
    Owner {
        api_version: "apps/v1",
        kind: "DaemonSet",
        name: ds.metadata.name.as_deref().unwrap_or(""),
        uid: ds.metadata.uid.as_deref().unwrap_or(""),
        deleting: ds.metadata.deletion_timestamp.is_some(),
    }
}

fn template(ds: &DaemonSet) -> PodTemplateSpec {
    ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()
}

/// The hash of the current template (the `controller-revision-hash` of up-to-date pods).
pub fn current_hash(ds: &DaemonSet) -> String {
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    pod_template_hash(&template(ds), collisions)
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// The tolerations Kubernetes adds to every daemon pod, so daemons survive node trouble and run on nodes the
/// scheduler would otherwise avoid (`unschedulable`, pressure).
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut t = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        t.push(toleration("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    t
}

/// The template's tolerations plus the daemon defaults it does not already have.
fn pod_tolerations(ds: &DaemonSet) -> Vec<Toleration> {
    let spec = template(ds).spec.unwrap_or_default();
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    for d in default_tolerations(spec.host_network.unwrap_or(false)) {
        if !tolerations.iter().any(|t| t.key == d.key && t.effect == d.effect) {
            tolerations.push(d);
        }
    }
    tolerations
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(|v| v.parse::<i64>().ok()), values.first()) else {
                return false;
            };
            let Ok(bound) = bound.parse::<i64>() else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref();
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, name))
}

/// The template's nodeSelector and required node affinity admit the node.
fn node_selected(ds: &DaemonSet, node: &Node) -> bool {
    let spec = template(ds).spec.unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok =
        required.is_none_or(|sel| sel.node_selector_terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

/// Kubernetes' `NodeShouldRunDaemonPod`: (should run a new pod, should keep an existing one). A new pod needs
/// every NoSchedule and NoExecute taint tolerated; an existing one is only pushed out by NoExecute.
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    if !node_selected(ds, node) {
        return (false, false);
    }
    let tolerations = pod_tolerations(ds);
    let tolerated = |effects: &[&str]| {
        taints(node)
            .iter()
            .filter(|t| effects.contains(&t.effect.as_str()))
            .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    (tolerated(&["NoSchedule", "NoExecute"]), tolerated(&["NoExecute"]))
}

/// The pod to create for `node`: the template with the revision-hash label, the daemon tolerations, the
/// DaemonSet as controller, and a required node affinity on `metadata.name` so the scheduler places it there
/// (Kubernetes' `ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub fn pod_for_node(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = template(ds);
    let meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    spec.tolerations = Some(pod_tolerations(ds));
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or(""))),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![owner(ds).controller_ref()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The node a daemon pod is for: where it is bound, else the `metadata.name` of its required node affinity.
pub fn target_node(p: &Pod) -> Option<String> {
    let bound = pod::node_name(p);
    if !bound.is_empty() {
        return Some(bound.to_string());
    }
    let required = p
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    required.node_selector_terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            (r.key == "metadata.name" && r.operator == "In")
                .then(|| r.values.as_ref()?.first().cloned())
                .flatten()
        })
    })
}

fn max_unavailable(ds: &DaemonSet, desired: i32) -> i32 {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    let value = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let n = match value {
        IntOrString::Int(n) => n,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * i64::from(desired) + 99) / 100) as i32
        }
    };
    n.max(if desired > 0 { 1 } else { 0 })
}

fn is_rolling_update(ds: &DaemonSet) -> bool {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// Plan one sync. `expectations_satisfied` false means earlier creations/deletions are still in flight: then
/// only the status is refreshed.
pub fn plan(
    ds: &DaemonSet,
    nodes: &[&Node],
    pods: &[&Pod],
    expectations_satisfied: bool,
    now: Timestamp,
) -> Plan {
    let mut plan = Plan::default();
    let owner = owner(ds);
    let selector = ds.spec.as_ref().map(|s| &s.selector);
    let hash = current_hash(ds);
    let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);

    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut orphaned_by_node: Vec<&Pod> = Vec::new();
    for p in pods {
        match claim::claim(&owner, selector, &p.metadata) {
            Claim::Owned => {}
            Claim::Adopt => plan.adopt.push(pod_ref(p)),
            Claim::Release => {
                plan.release.push(pod_ref(p));
                continue;
            }
            Claim::Ignore => continue,
        }
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match target_node(p) {
            Some(n) => by_node.entry(n).or_default().push(p),
            None => orphaned_by_node.push(p),
        }
    }
    let node_names: HashMap<&str, &Node> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, *n)))
        .collect();

    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        ..Default::default()
    };
    let mut delete: Vec<PodRef> = orphaned_by_node.iter().map(|p| pod_ref(p)).collect();
    // Nodes running an old-hash pod, with whether that pod is available.
    let mut old: Vec<(&Pod, bool)> = Vec::new();
    let mut unavailable = 0;
    for (name, node) in &node_names {
        let (run, keep) = should_run(ds, node);
        let mut daemons: Vec<&Pod> = by_node.remove(*name).unwrap_or_default();
        // A failed daemon pod is deleted and replaced.
        let (failed, mut live): (Vec<&Pod>, Vec<&Pod>) =
            daemons.drain(..).partition(|p| pod::phase(p) == "Failed");
        delete.extend(failed.iter().map(|p| pod_ref(p)));
        if run {
            status.desired_number_scheduled += 1;
        }
        if !live.is_empty() && run {
            status.current_number_scheduled += 1;
        }
        if !live.is_empty() && !run {
            status.number_misscheduled += 1;
        }
        if !keep {
            delete.extend(live.iter().map(|p| pod_ref(p)));
            continue;
        }
        if live.is_empty() {
            if run {
                plan.create_on.push(name.to_string());
                unavailable += 1;
            }
            continue;
        }
        // Keep the oldest daemon pod on a node, delete the duplicates.
        live.sort_by_key(|p| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.name.clone(),
            )
        });
        delete.extend(live[1..].iter().map(|p| pod_ref(p)));
        let daemon = live[0];
        let available = pod::is_available(daemon, min_ready, now);
        if pod::is_ready(daemon) {
            status.number_ready += 1;
        }
        if available {
            status.number_available = Some(status.number_available.unwrap_or(0) + 1);
        } else {
            unavailable += 1;
        }
        let updated = daemon
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL))
            == Some(&hash);
        if updated {
            status.updated_number_scheduled = Some(status.updated_number_scheduled.unwrap_or(0) + 1);
        } else {
            old.push((daemon, available));
        }
    }
    // Pods for nodes that no longer exist.
    for pods in by_node.values() {
        delete.extend(pods.iter().map(|p| pod_ref(p)));
    }

    if is_rolling_update(ds) {
        // Unavailable old pods go at once; available ones only while the unavailable count stays within budget.
        let budget = max_unavailable(ds, status.desired_number_scheduled);
        let mut allowed = (budget - unavailable).max(0);
        old.sort_by_key(|(p, _)| p.metadata.name.clone());
        for (p, available) in old {
            if !available {
                delete.push(pod_ref(p));
            } else if allowed > 0 {
                delete.push(pod_ref(p));
                allowed -= 1;
            }
        }
    }
    let unavailable_count = status.desired_number_scheduled - status.number_available.unwrap_or(0);
    status.number_unavailable = (unavailable_count > 0).then_some(unavailable_count);

    plan.create_on.sort();
    if expectations_satisfied && !owner.deleting {
        delete.sort_by(|a, b| a.name.cmp(&b.name));
        delete.dedup();
        plan.delete = delete;
    } else {
        plan.create_on.clear();
    }
    plan.status = status;
    plan
}

/// The ControllerRevision recording the current template (what `kubectl rollout history daemonset` lists), or
/// `None` when `revisions` (the DaemonSet's own) already hold one for `hash`. Its revision number is one more
/// than the highest so far.
pub fn missing_revision(
    ds: &DaemonSet,
    hash: &str,
    revisions: &[&ControllerRevision],
) -> Option<ControllerRevision> {
    let name = format!("{}-{hash}", ds.metadata.name.as_deref().unwrap_or(""));
    if revisions
        .iter()
        .any(|r| r.metadata.name.as_deref() == Some(name.as_str()))
    {
        return None;
    }
    let mut template = serde_json::to_value(template(ds)).unwrap_or_default();
    template["$patch"] = serde_json::json!("replace");
    let mut labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    Some(ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner(ds).controller_ref()]),
            ..Default::default()
        },
        data: Some(RawExtension(serde_json::json!({"spec": {"template": template}}))),
        revision: revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::testing::{pod, ready_at, ts, with_node};
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn ds() -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some("uid-agent".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "agent".to_string())].into()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "agent".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec::default()),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    /// A ready daemon pod of `d` on `node` with the given template hash.
    fn daemon(d: &DaemonSet, name: &str, node: &str, hash: &str) -> Pod {
        let mut p = ready_at(with_node(pod(name, &[("app", "agent")]), node), 0);
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(REVISION_HASH_LABEL.into(), hash.into());
        p.metadata.owner_references = Some(vec![owner(d).controller_ref()]);
        p
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds();
        let nodes = [node("n1", &[], vec![]), node("n2", &[], vec![])];
        let refs: Vec<&Node> = nodes.iter().collect();
        let p = plan(&d, &refs, &[], true, ts(10));
        assert_eq!(p.create_on, ["n1", "n2"]);
        assert_eq!(p.status.desired_number_scheduled, 2);
        assert_eq!(p.status.current_number_scheduled, 0);
        assert_eq!(p.status.observed_generation, Some(2));

        let hash = current_hash(&d);
        let a = daemon(&d, "a", "n1", &hash);
        let p = plan(&d, &refs, &[&a], true, ts(10));
        assert_eq!(p.create_on, ["n2"]);
        assert_eq!(p.status.number_ready, 1);
        assert_eq!(p.status.updated_number_scheduled, Some(1));
    }

    #[test]
    fn node_selector_affinity_and_taints_limit_the_nodes() {
        let mut d = ds();
        let spec = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        spec.node_selector = Some([("role".to_string(), "edge".to_string())].into());
        let edge = node("edge", &[("role", "edge")], vec![]);
        let other = node("other", &[("role", "core")], vec![]);
        let tainted = node(
            "tainted",
            &[("role", "edge")],
            vec![taint("dedicated", "NoSchedule")],
        );
        let cordoned = node(
            "cordoned",
            &[("role", "edge")],
            vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")],
        );
        assert_eq!(should_run(&d, &edge), (true, true));
        assert_eq!(should_run(&d, &other), (false, false));
        assert_eq!(
            should_run(&d, &tainted),
            (false, true),
            "an existing pod survives a NoSchedule taint"
        );
        assert_eq!(
            should_run(&d, &cordoned),
            (true, true),
            "daemons tolerate unschedulable by default"
        );
        let evicting = node(
            "evicting",
            &[("role", "edge")],
            vec![taint("dedicated", "NoExecute")],
        );
        assert_eq!(should_run(&d, &evicting), (false, false));

        let mut d = ds();
        d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().affinity =
            pod_for_node(&ds(), "edge", "h").spec.unwrap().affinity;
        assert!(should_run(&d, &edge).0);
        assert!(!should_run(&d, &other).0);
    }

    #[test]
    fn created_pods_target_their_node_through_affinity() {
        let d = ds();
        let p = pod_for_node(&d, "n7", "abc");
        assert_eq!(target_node(&p).as_deref(), Some("n7"));
        assert!(pod::node_name(&p).is_empty(), "the scheduler binds it");
        assert_eq!(p.metadata.labels.as_ref().unwrap()[REVISION_HASH_LABEL], "abc");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        let tolerations = p.spec.unwrap().tolerations.unwrap();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
        );
    }

    #[test]
    fn misscheduled_duplicate_and_orphaned_pods_are_deleted() {
        let d = ds();
        let hash = current_hash(&d);
        let nodes = [
            node("n1", &[], vec![]),
            node("bad", &[], vec![taint("x", "NoExecute")]),
        ];
        let refs: Vec<&Node> = nodes.iter().collect();
        let keep = daemon(&d, "keep", "n1", &hash);
        let mut dup = daemon(&d, "dup", "n1", &hash);
        dup.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(5)));
        let mis = daemon(&d, "mis", "bad", &hash);
        let gone = daemon(&d, "gone", "deleted-node", &hash);
        let p = plan(&d, &refs, &[&keep, &dup, &mis, &gone], true, ts(10));
        let names: Vec<&str> = p.delete.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["dup", "gone", "mis"]);
        assert_eq!(p.status.number_misscheduled, 1);
        assert!(p.create_on.is_empty());
    }

    #[test]
    fn rolling_update_replaces_within_max_unavailable() {
        let mut d = ds();
        d.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: Some(IntOrString::Int(1)),
                ..Default::default()
            }),
        });
        let nodes = [
            node("n1", &[], vec![]),
            node("n2", &[], vec![]),
            node("n3", &[], vec![]),
        ];
        let refs: Vec<&Node> = nodes.iter().collect();
        let old: Vec<Pod> = (1..=3)
            .map(|i| daemon(&d, &format!("p{i}"), &format!("n{i}"), "old"))
            .collect();
        let old_refs: Vec<&Pod> = old.iter().collect();
        let p = plan(&d, &refs, &old_refs, true, ts(10));
        assert_eq!(p.delete.len(), 1, "one at a time");
        assert_eq!(p.status.updated_number_scheduled, None);

        // p1 replaced by a new pod that is not ready yet: nothing more may go.
        let hash = current_hash(&d);
        let mut fresh = daemon(&d, "q1", "n1", &hash);
        fresh.status.as_mut().unwrap().conditions = None;
        let p = plan(&d, &refs, &[&fresh, &old[1], &old[2]], true, ts(10));
        assert!(p.delete.is_empty());
        assert_eq!(p.status.updated_number_scheduled, Some(1));
        assert_eq!(p.status.number_unavailable, Some(1));
    }

    #[test]
    fn each_template_gets_one_numbered_revision() {
        let d = ds();
        let hash = current_hash(&d);
        let first = missing_revision(&d, &hash, &[]).expect("the first revision");
        assert_eq!(first.revision, 1);
        assert_eq!(first.metadata.name, Some(format!("agent-{hash}")));
        assert_eq!(
            first.data.as_ref().unwrap().0["spec"]["template"]["$patch"],
            "replace"
        );
        assert!(missing_revision(&d, &hash, &[&first]).is_none());
        assert_eq!(missing_revision(&d, "other", &[&first]).unwrap().revision, 2);
    }

    #[test]
    fn nothing_is_created_while_expectations_are_pending() {
        let d = ds();
        let nodes = [node("n1", &[], vec![])];
        let refs: Vec<&Node> = nodes.iter().collect();
        let p = plan(&d, &refs, &[], false, ts(0));
        assert!(p.create_on.is_empty());
        assert_eq!(p.status.desired_number_scheduled, 1);
    }
}
