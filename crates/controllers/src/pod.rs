//! Pod predicates shared by the controllers (Kubernetes' `podutil`): activity, readiness, availability.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// A pod still counts toward its owner's replicas: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = phase(pod);
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's phase, `""` when the status has none yet.
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The pod's `Ready` condition, if it has one.
pub fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// `Ready=True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last became ready (`None` when not ready or unknown).
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = ready_condition(pod).filter(|c| c.status == "True")?;
    c.last_transition_time.as_ref().map(|t| t.0)
}

/// Ready for at least `min_ready_seconds` at `now` (Kubernetes' `IsPodAvailable`). With a zero
/// `min_ready_seconds` every ready pod is available; without a transition time it never becomes so.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(since) => since + SignedDuration::from_secs(i64::from(min_ready_seconds)) < now,
        None => false,
    }
}

/// When a ready pod that is not yet available becomes available (for a delayed resync).
pub fn available_at(pod: &Pod, min_ready_seconds: i32) -> Option<Timestamp> {
    ready_since(pod).map(|t| t + SignedDuration::from_secs(i64::from(min_ready_seconds)))
}

/// The node the pod is bound to, `""` when unscheduled.
pub fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// The highest restart count over the pod's containers.
pub fn max_container_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-built pods for the controllers' unit tests.
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    pub fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    pub fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                creation_timestamp: Some(Time(ts(0))),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            }),
        }
    }

    pub fn with_node(mut p: Pod, node: &str) -> Pod {
        p.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        p
    }

    pub fn running(mut p: Pod) -> Pod {
        p.status.get_or_insert_with(Default::default).phase = Some("Running".into());
        p
    }

    pub fn ready_at(p: Pod, secs: i64) -> Pod {
        let mut p = running(p);
        p.status.get_or_insert_with(Default::default).conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(ts(secs))),
            ..Default::default()
        }]);
        p
    }

    pub fn created_at(mut p: Pod, secs: i64) -> Pod {
        p.metadata.creation_timestamp = Some(Time(ts(secs)));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = ready_at(pod("a", &[]), 10);
        assert!(is_available(&p, 0, ts(10)));
        assert!(!is_available(&p, 5, ts(14)));
        assert!(is_available(&p, 5, ts(16)));
        assert!(
            !is_available(&pod("b", &[]), 0, ts(100)),
            "a pod that is not ready is never available"
        );
    }

    #[test]
    fn finished_and_deleting_pods_are_inactive() {
        let mut p = pod("a", &[]);
        assert!(is_active(&p));
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!is_active(&p));
        let mut q = pod("b", &[]);
        q.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(1)));
        assert!(!is_active(&q));
    }
}
