//! The ReplicaSet controller's pure step: from a ReplicaSet and the pods in its namespace, decide which pods to
//! adopt or release, how many to create, which to delete (in Kubernetes' order) and the new status.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::claim::{self, Claim, Owner};
use crate::pod;

/// At most this many creations or deletions per sync (Kubernetes' `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// Annotation by which users rank pods for scale-down (lower cost goes first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A pod named by the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

impl PodRef {
    fn of(pod: &Pod) -> Self {
        PodRef {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// What one sync of a ReplicaSet should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Orphans matching the selector: set our controller reference.
    pub adopt: Vec<PodRef>,
    /// Owned pods whose labels no longer match: drop our reference (a replacement gets created).
    pub release: Vec<PodRef>,
    /// Pods to create from the template.
    pub create: usize,
    /// Pods to delete, most expendable first.
    pub delete: Vec<PodRef>,
    /// The status the ReplicaSet should have.
    pub status: ReplicaSetStatus,
    /// Sync again after this long (a ready pod becomes available once `minReadySeconds` pass).
    pub requeue_after: Option<Duration>,
}

/// The owner identity of a ReplicaSet for claiming pods.
pub fn owner(rs: &ReplicaSet) -> Owner<'_> {
    Owner {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        name: rs.metadata.name.as_deref().unwrap_or(""),
        uid: rs.metadata.uid.as_deref().unwrap_or(""),
        deleting: rs.metadata.deletion_timestamp.is_some(),
    }
}

/// Plan one sync. `pods` are the pods in the ReplicaSet's namespace; `related` are the active pods of sibling
/// ReplicaSets (same controlling Deployment), which make a node "doubled up" in the deletion ranking.
/// `expectations_satisfied` is false while earlier creations/deletions have not been observed: then the replica
/// count is not managed (only the status is refreshed).
pub fn plan(
    rs: &ReplicaSet,
    pods: &[&Pod],
    related: &[&Pod],
    expectations_satisfied: bool,
    now: Timestamp,
) -> Plan {
    let spec = rs.spec.as_ref();
    let selector = claim::Matcher::new(spec.map(|s| &s.selector));
    let owner = owner(rs);
    let mut plan = Plan::default();
    let mut claimed: Vec<&Pod> = Vec::new();
    for &p in pods.iter().filter(|p| pod::is_active(p)) {
        match claim::claim_with(&owner, &selector, &p.metadata) {
            Claim::Owned => claimed.push(p),
            Claim::Adopt => {
                plan.adopt.push(PodRef::of(p));
                claimed.push(p);
            }
            Claim::Release => plan.release.push(PodRef::of(p)),
            Claim::Ignore => {}
        }
    }

    let desired = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    if expectations_satisfied && !owner.deleting {
        if claimed.len() < desired {
            plan.create = (desired - claimed.len()).min(BURST_REPLICAS);
        } else if claimed.len() > desired {
            let n = (claimed.len() - desired).min(BURST_REPLICAS);
            let mut ranked = claimed.clone();
            rank_for_deletion(&mut ranked, related, now);
            plan.delete = ranked.iter().take(n).map(|p| PodRef::of(p)).collect();
        }
    }

    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    plan.status = status(rs, &claimed, now);
    if min_ready > 0 && plan.status.available_replicas != Some(plan.status.replicas) {
        plan.requeue_after = claimed
            .iter()
            .filter(|p| pod::is_ready(p) && !pod::is_available(p, min_ready, now))
            .filter_map(|p| pod::available_at(p, min_ready))
            .min()
            .map(|at| {
                Duration::try_from(at.duration_since(now)).unwrap_or_default() + Duration::from_secs(1)
            });
    }
    plan
}

/// The ReplicaSet status for its claimed pods (Kubernetes' `calculateStatus`).
pub fn status(rs: &ReplicaSet, claimed: &[&Pod], now: Timestamp) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref()?.labels.as_ref());
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let fully_labeled = claimed
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels.is_none_or(|tl| tl.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)))
        })
        .count();
    let ready = claimed.iter().filter(|p| pod::is_ready(p)).count();
    let available = claimed
        .iter()
        .filter(|p| pod::is_available(p, min_ready, now))
        .count();
    ReplicaSetStatus {
        replicas: claimed.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: rs.status.as_ref().and_then(|s| s.terminating_replicas),
    }
}

/// Kubernetes' `ReplicaFailure` condition: added (an existing one is kept as is) when creating or deleting pods
/// failed — `failure` is (reason `FailedCreate`/`FailedDelete`, the API's message) — and removed once replicas
/// are managed without error.
pub fn set_replica_failure(status: &mut ReplicaSetStatus, failure: Option<(&str, String)>, now: Timestamp) {
    let exists = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "ReplicaFailure");
    match failure {
        Some((reason, message)) if !exists => {
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(ReplicaSetCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_transition_time: Some(Time(now)),
                });
        }
        Some(_) => {}
        None => {
            if let Some(conditions) = status.conditions.as_mut() {
                conditions.retain(|c| c.type_ != "ReplicaFailure");
            }
        }
    }
}

/// Sort pods so the most expendable come first (Kubernetes' `ActivePodsWithRanks` with logarithmic scale-down):
/// unscheduled < scheduled; Pending < Unknown < Running; not ready < ready; lower deletion cost first; more pods
/// of the same owner family on the node first; ready more recently first; more restarts first; newer first.
pub fn rank_for_deletion(pods: &mut [&Pod], related: &[&Pod], now: Timestamp) {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in pods.iter().chain(related.iter()) {
        let node = pod::node_name(p);
        if !node.is_empty() {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| per_node.get(pod::node_name(p)).copied().unwrap_or(0);
    pods.sort_by(|a, b| compare_for_deletion(a, b, rank(a), rank(b), now));
}

fn compare_for_deletion(a: &Pod, b: &Pod, rank_a: usize, rank_b: usize, now: Timestamp) -> Ordering {
    let (na, nb) = (pod::node_name(a), pod::node_name(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let phase = |p: &Pod| match pod::phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let by_phase = phase(a).cmp(&phase(b));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (ra, rb) = (pod::is_ready(a), pod::is_ready(b));
    if ra != rb {
        return if ra { Ordering::Greater } else { Ordering::Less };
    }
    let cost = |p: &Pod| -> i32 {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|m| m.get(POD_DELETION_COST)?.parse().ok())
            .unwrap_or(0)
    };
    let by_cost = cost(a).cmp(&cost(b));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    if ra && rb {
        let by_ready = newer_first(pod::ready_since(a), pod::ready_since(b), now);
        if by_ready != Ordering::Equal {
            return by_ready;
        }
    }
    let by_restarts = pod::max_container_restarts(b).cmp(&pod::max_container_restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    newer_first(created(a), created(b), now)
}

/// Missing timestamps first, then more recent first, comparing ages on a log2 scale so pods of similar age count
/// as equal (then the UID breaks ties elsewhere — here the stable sort keeps the input order).
fn newer_first(a: Option<Timestamp>, b: Option<Timestamp>, now: Timestamp) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) if a == b => Ordering::Equal,
        (Some(a), Some(b)) => {
            let log_age = |t: Timestamp| {
                let nanos = now.duration_since(t).as_nanos();
                if nanos > 0 {
                    (nanos as f64).log2() as i64
                } else {
                    -1
                }
            };
            log_age(a).cmp(&log_age(b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::testing::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

    fn rs(replicas: i32) -> ReplicaSet {
        let labels: std::collections::BTreeMap<String, String> =
            [("app".to_string(), "web".to_string())].into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                min_ready_seconds: None,
            }),
            status: None,
        }
    }

    fn owned(mut p: Pod) -> Pod {
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web".into(),
            uid: "rs-uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        p
    }

    fn names(refs: &[PodRef]) -> Vec<&str> {
        refs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn creates_missing_replicas_and_reports_status() {
        let a = owned(ready_at(with_node(pod("a", &[("app", "web")]), "n1"), 0));
        let plan = plan(&rs(3), &[&a], &[], true, ts(100));
        assert_eq!(plan.create, 2);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.status.replicas, 1);
        assert_eq!(plan.status.ready_replicas, Some(1));
        assert_eq!(plan.status.available_replicas, Some(1));
        assert_eq!(plan.status.observed_generation, Some(3));
    }

    #[test]
    fn unsatisfied_expectations_never_over_create() {
        let plan = plan(&rs(3), &[], &[], false, ts(0));
        assert_eq!(plan.create, 0, "creations still in flight must be observed first");
        assert_eq!(plan.status.replicas, 0);
    }

    #[test]
    fn burst_limits_one_sync() {
        let plan = plan(&rs(2000), &[], &[], true, ts(0));
        assert_eq!(plan.create, BURST_REPLICAS);
    }

    #[test]
    fn adopts_orphans_and_releases_relabeled_pods() {
        let orphan = pod("orphan", &[("app", "web")]);
        let relabeled = owned(pod("relabeled", &[("app", "debug")]));
        let foreign = pod("foreign", &[("app", "db")]);
        let plan = plan(&rs(2), &[&orphan, &relabeled, &foreign], &[], true, ts(0));
        assert_eq!(names(&plan.adopt), ["orphan"]);
        assert_eq!(names(&plan.release), ["relabeled"]);
        assert_eq!(plan.create, 1, "the released pod is replaced");
        assert_eq!(plan.status.replicas, 1);
    }

    #[test]
    fn finished_pods_do_not_count() {
        let mut done = owned(pod("done", &[("app", "web")]));
        done.status.as_mut().unwrap().phase = Some("Failed".into());
        let plan = plan(&rs(1), &[&done], &[], true, ts(0));
        assert_eq!(plan.create, 1);
    }

    #[test]
    fn deletes_in_kubernetes_order() {
        let l = [("app", "web")];
        let unscheduled = owned(pod("unscheduled", &l));
        let pending = owned(with_node(pod("pending", &l), "n1"));
        let mut unknown = owned(with_node(pod("unknown", &l), "n2"));
        unknown.status.as_mut().unwrap().phase = Some("Unknown".into());
        let not_ready = owned(running(with_node(pod("not-ready", &l), "n3")));
        let ready_old = owned(ready_at(with_node(pod("ready-old", &l), "n4"), 0));
        let ready_new = owned(ready_at(with_node(pod("ready-new", &l), "n5"), 990));
        let all = [
            &ready_old,
            &ready_new,
            &not_ready,
            &unknown,
            &pending,
            &unscheduled,
        ];
        let plan = plan(&rs(0), &all, &[], true, ts(1000));
        assert_eq!(
            names(&plan.delete),
            [
                "unscheduled",
                "pending",
                "unknown",
                "not-ready",
                "ready-new",
                "ready-old"
            ]
        );
        let plan = super::plan(&rs(4), &all, &[], true, ts(1000));
        assert_eq!(names(&plan.delete), ["unscheduled", "pending"]);
    }

    #[test]
    fn doubled_up_nodes_and_deletion_cost_rank_first() {
        let l = [("app", "web")];
        let alone = owned(ready_at(with_node(pod("alone", &l), "n1"), 0));
        let crowded = owned(ready_at(with_node(pod("crowded", &l), "n2"), 0));
        let sibling = ready_at(with_node(pod("sibling", &[("app", "web")]), "n2"), 0);
        let plan = plan(&rs(1), &[&alone, &crowded], &[&sibling], true, ts(1000));
        assert_eq!(names(&plan.delete), ["crowded"]);

        let mut cheap = owned(ready_at(with_node(pod("cheap", &l), "n2"), 0));
        cheap.metadata.annotations = Some([(POD_DELETION_COST.to_string(), "-10".to_string())].into());
        let plan = super::plan(&rs(2), &[&alone, &crowded, &cheap], &[], true, ts(1000));
        assert_eq!(names(&plan.delete), ["cheap"]);
    }

    #[test]
    fn newer_pods_go_before_older_on_a_log_scale() {
        let l = [("app", "web")];
        let old = owned(created_at(with_node(pod("old", &l), "n1"), 0));
        let new = owned(created_at(with_node(pod("new", &l), "n2"), 900));
        let plan = plan(&rs(1), &[&old, &new], &[], true, ts(1000));
        assert_eq!(names(&plan.delete), ["new"]);
    }

    #[test]
    fn min_ready_seconds_delays_availability_and_requeues() {
        let mut set = rs(1);
        set.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let p = owned(ready_at(with_node(pod("a", &[("app", "web")]), "n1"), 100));
        let plan = plan(&set, &[&p], &[], true, ts(104));
        assert_eq!(plan.status.ready_replicas, Some(1));
        assert_eq!(plan.status.available_replicas, Some(0));
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(7)));
        let later = super::plan(&set, &[&p], &[], true, ts(111));
        assert_eq!(later.status.available_replicas, Some(1));
        assert_eq!(later.requeue_after, None);
    }

    #[test]
    fn replica_failure_is_set_once_and_cleared_on_success() {
        let mut status = ReplicaSetStatus::default();
        set_replica_failure(
            &mut status,
            Some(("FailedCreate", "quota exceeded".into())),
            ts(1),
        );
        set_replica_failure(&mut status, Some(("FailedCreate", "again".into())), ts(2));
        let conditions = status.conditions.clone().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].message.as_deref(),
            Some("quota exceeded"),
            "the first failure is kept"
        );
        set_replica_failure(&mut status, None, ts(3));
        assert_eq!(status.conditions, Some(vec![]));
    }

    #[test]
    fn fully_labeled_counts_template_labels() {
        let mut set = rs(2);
        let tmpl = set.spec.as_mut().unwrap().template.as_mut().unwrap();
        tmpl.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("tier".into(), "front".into());
        let a = owned(pod("a", &[("app", "web"), ("tier", "front")]));
        let b = owned(pod("b", &[("app", "web")]));
        let plan = plan(&set, &[&a, &b], &[], true, ts(0));
        assert_eq!(plan.status.replicas, 2);
        assert_eq!(plan.status.fully_labeled_replicas, Some(1));
    }
}
