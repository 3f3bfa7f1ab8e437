//! The pod lifecycle of a simulated node as pure functions: what to do with a pod bound to one of our nodes
//! ([`next_action`]) and the status a running pod reports ([`running_status`]).
//!
//! Simulated pods start at once and then run forever: `restartPolicy` does not matter because no container
//! ever exits. Init containers are reported as completed. Graceful deletion is honoured by "terminating"
//! the containers immediately and deleting the pod with a grace period of 0, as the kubelet does once its
//! containers have stopped.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, HostIP, Pod,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the simulator must do with a pod bound to one of its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    /// Nothing: the pod already reports what it should, or has finished.
    None,
    /// Start it: allocate an address (unless it has one) and report it Running.
    Start,
    /// Its deletion was requested: finish it with grace period 0 and free its address.
    Delete,
}

/// The kubelet's decision for `pod`: delete when a deletion is pending, start when it does not yet report
/// Running and Ready with an address, otherwise leave it alone. Pods that finished (Succeeded/Failed) are
/// left as they are.
pub fn next_action(pod: &Pod) -> PodAction {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodAction::Delete;
    }
    let status = pod.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") | Some("Failed") => PodAction::None,
        Some("Running") if is_ready(pod) && status.and_then(|s| s.pod_ip.as_ref()).is_some() => {
            PodAction::None
        }
        _ => PodAction::Start,
    }
}

/// The address a pod reports, if any (kept across simulator restarts so it is not handed out again).
pub fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status of `pod` running on a node at `host_ip` with address `pod_ip`, as of `now`. Conditions that
/// already hold keep their transition time; `PodScheduled` (set by the binding) is kept as it is.
pub fn running_status(pod: &Pod, host_ip: Ipv4Addr, pod_ip: Ipv4Addr, now: &Time) -> PodStatus {
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(|| now.clone());
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let container_id = |name: &str| format!("sim://{uid}/{name}");
    let image_id = |image: &str| format!("sim://{image}");
    let container_statuses = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            ContainerStatus {
                name: c.name.clone(),
                container_id: Some(container_id(&c.name)),
                image_id: image_id(&image),
                image,
                ready: true,
                started: Some(true),
                restart_count: 0,
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(start_time.clone()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let init_container_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            ContainerStatus {
                name: c.name.clone(),
                container_id: Some(container_id(&c.name)),
                image_id: image_id(&image),
                image,
                ready: true,
                started: Some(false),
                restart_count: 0,
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 0,
                        reason: Some("Completed".into()),
                        started_at: Some(start_time.clone()),
                        finished_at: Some(start_time.clone()),
                        container_id: Some(container_id(&c.name)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let true_condition = |type_: &str| PodCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: match condition(pod, type_) {
            Some(c) if c.status == "True" => c.last_transition_time.clone(),
            _ => Some(now.clone()),
        },
        ..Default::default()
    };
    let mut conditions = vec![
        true_condition("PodReadyToStartContainers"),
        true_condition("Initialized"),
        true_condition("Ready"),
        true_condition("ContainersReady"),
    ];
    conditions.push(
        condition(pod, "PodScheduled")
            .cloned()
            .unwrap_or_else(|| true_condition("PodScheduled")),
    );
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_string(),
        }]),
        pod_ip: Some(pod_ip.to_string()),
        pod_ips: Some(vec![PodIP {
            ip: pod_ip.to_string(),
        }]),
        start_time: Some(start_time),
        container_statuses: Some(container_statuses),
        init_container_statuses: (!init_container_statuses.is_empty()).then_some(init_container_statuses),
        ..pod.status.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u-1"},
            "spec": {
                "nodeName": "sim-0",
                "initContainers": [{"name": "setup", "image": "busybox"}],
                "containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "fluentd"}]
            },
            "status": {
                "phase": "Pending",
                "qosClass": "BestEffort",
                "conditions": [{"type": "PodScheduled", "status": "True",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }
        }))
        .unwrap()
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn pending_pod_is_started_running_pod_is_left_alone() {
        let mut p = pod();
        assert_eq!(next_action(&p), PodAction::Start);
        p.status = Some(running_status(
            &p,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(10, 42, 0, 2),
            &at(100),
        ));
        assert_eq!(next_action(&p), PodAction::None);
        assert_eq!(pod_ip(&p), Some(Ipv4Addr::new(10, 42, 0, 2)));
    }

    #[test]
    fn running_but_not_ready_pod_is_started_again() {
        let mut p = pod();
        let mut status = running_status(
            &p,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(10, 42, 0, 2),
            &at(1),
        );
        for c in status.conditions.iter_mut().flatten() {
            if c.type_ == "Ready" {
                c.status = "False".into();
            }
        }
        p.status = Some(status);
        assert_eq!(next_action(&p), PodAction::Start);
    }

    #[test]
    fn deletion_requested_means_delete_even_when_running() {
        let mut p = pod();
        p.status = Some(running_status(
            &p,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(10, 42, 0, 2),
            &at(1),
        ));
        p.metadata.deletion_timestamp = Some(at(5));
        assert_eq!(next_action(&p), PodAction::Delete);
    }

    #[test]
    fn finished_pods_are_left_alone() {
        for phase in ["Succeeded", "Failed"] {
            let mut p = pod();
            p.status.as_mut().unwrap().phase = Some(phase.into());
            assert_eq!(next_action(&p), PodAction::None, "{phase}");
        }
    }

    #[test]
    fn running_status_reports_what_kubectl_shows() {
        let p = pod();
        let s = running_status(
            &p,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(10, 42, 0, 7),
            &at(100),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.7"));
        assert_eq!(s.pod_ips.unwrap()[0].ip, "10.42.0.7");
        assert_eq!(s.host_ip.as_deref(), Some("198.18.0.1"));
        assert_eq!(s.start_time, Some(at(100)));
        assert_eq!(
            s.qos_class.as_deref(),
            Some("BestEffort"),
            "fields the kubelet does not own are kept"
        );
        let conditions = s.conditions.unwrap();
        for t in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
            let c = conditions
                .iter()
                .find(|c| c.type_ == t)
                .unwrap_or_else(|| panic!("{t} missing"));
            assert_eq!(c.status, "True", "{t}");
        }
        let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled").unwrap();
        assert_eq!(
            scheduled.last_transition_time,
            Some(Time("2026-01-01T00:00:00Z".parse().unwrap()))
        );
        let containers = s.container_statuses.unwrap();
        assert_eq!(containers.len(), 2);
        let web = &containers[0];
        assert_eq!((web.name.as_str(), web.image.as_str()), ("web", "nginx:1.27"));
        assert!(web.ready && web.started == Some(true) && web.restart_count == 0);
        assert_eq!(web.container_id.as_deref(), Some("sim://u-1/web"));
        assert_eq!(web.image_id, "sim://nginx:1.27");
        assert!(web.state.as_ref().unwrap().running.is_some());
        let init = s.init_container_statuses.unwrap();
        let done = init[0].state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((done.exit_code, done.reason.as_deref()), (0, Some("Completed")));
    }

    #[test]
    fn restarting_keeps_start_time_and_transition_times() {
        let mut p = pod();
        p.status = Some(running_status(
            &p,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(10, 42, 0, 2),
            &at(100),
        ));
        let again = running_status(
            &p,
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(10, 42, 0, 2),
            &at(900),
        );
        assert_eq!(again.start_time, Some(at(100)));
        let ready = again
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.last_transition_time, Some(at(100)));
    }
}
