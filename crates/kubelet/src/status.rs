//! What a pod reports, from what the worker knows about its containers: a pure function of the pod and a
//! [`PodView`], following the kubelet's `generateAPIPodStatus` and `getPhase`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How a container's latest attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub container_id: String,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    /// The exit reason a user would rather see, e.g. from a failed start (`StartError`).
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl Termination {
    /// `Completed`, `Error` or `OOMKilled`, as Kubernetes names them.
    pub fn reason(&self) -> String {
        if let Some(r) = &self.reason {
            return r.clone();
        }
        if self.oom_killed {
            "OOMKilled".into()
        } else if self.exit_code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        }
    }

    fn state(&self) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(runc_id(&self.container_id)),
                exit_code: self.exit_code,
                reason: Some(self.reason()),
                message: self.message.clone(),
                started_at: self.started_at.clone(),
                finished_at: self.finished_at.clone(),
                signal: None,
            }),
            ..Default::default()
        }
    }
}

/// What a container is doing right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// No attempt exists (or it is being replaced): `reason` is `ContainerCreating`, `PodInitializing`,
    /// `ErrImagePull`, `ImagePullBackOff`, `CrashLoopBackOff`, `CreateContainerConfigError` …
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        container_id: String,
        started_at: Option<Time>,
    },
    Terminated(Termination),
}

/// The worker's knowledge of one container of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    /// The image as the pod names it, normalized (`docker.io/library/busybox:latest`) once pulled.
    pub image: String,
    /// `repo@sha256:…` once the image is known.
    pub image_id: String,
    pub current: Current,
    pub last_termination: Option<Termination>,
    pub restart_count: i32,
    /// Readiness probe passed (or none defined) while running.
    pub ready: bool,
    /// Startup probe passed (or none defined) while running.
    pub started: bool,
}

/// The worker's knowledge of the whole pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    /// The sandbox exists and its network is up.
    pub sandbox_ready: bool,
    pub pod_ips: Vec<String>,
    pub host_ip: Option<String>,
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    /// The pod was stopped for good (finished, or its deletion is being carried out); set the phase from
    /// what the containers did, never Running.
    pub terminal: bool,
    /// The pod failed without its containers failing (e.g. `activeDeadlineSeconds`): phase Failed with this
    /// reason.
    pub failed_reason: Option<(String, String)>,
}

/// The `runc://<id>` form of a container id.
pub fn runc_id(id: &str) -> String {
    format!("runc://{id}")
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn init_succeeded(c: &ContainerView) -> bool {
    matches!(&c.current, Current::Terminated(t) if t.exit_code == 0)
}

/// An init container that failed for good: only with `restartPolicy: Never` (otherwise it is retried).
fn init_failed(pod: &Pod, c: &ContainerView) -> bool {
    restart_policy(pod) == "Never" && matches!(&c.current, Current::Terminated(t) if t.exit_code != 0)
}

/// The pod phase (the kubelet's `getPhase`).
pub fn phase(pod: &Pod, view: &PodView) -> &'static str {
    if view.failed_reason.is_some() {
        return "Failed";
    }
    if view.init_containers.iter().any(|c| init_failed(pod, c)) {
        return "Failed";
    }
    let pending_init = view.init_containers.iter().any(|c| !init_succeeded(c));
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.containers {
        match &c.current {
            Current::Running { .. } => running += 1,
            Current::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // A container waiting to restart has run before: it counts as stopped, so a crash-looping pod
            // stays Running.
            Current::Waiting { .. } => match &c.last_termination {
                Some(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            },
        }
    }
    if pending_init && !view.terminal {
        return "Pending";
    }
    if waiting > 0 && !view.terminal {
        return "Pending";
    }
    if running > 0 && !view.terminal {
        return "Running";
    }
    if stopped > 0 {
        let policy = restart_policy(pod);
        if !view.terminal && policy == "Always" {
            return "Running";
        }
        if stopped == succeeded && running == 0 && waiting == 0 {
            return "Succeeded";
        }
        if view.terminal || policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    if view.terminal {
        return "Failed";
    }
    "Pending"
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    let (state, container_id) = match &c.current {
        Current::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            // A waiting container still reports the id of its last attempt.
            c.last_termination.as_ref().map(|t| runc_id(&t.container_id)),
        ),
        Current::Running {
            container_id,
            started_at,
        } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: started_at.clone(),
                }),
                ..Default::default()
            },
            Some(runc_id(container_id)),
        ),
        Current::Terminated(t) => (t.state(), Some(runc_id(&t.container_id))),
    };
    let running = matches!(c.current, Current::Running { .. });
    ContainerStatus {
        name: c.name.clone(),
        state: Some(state),
        last_state: Some(
            c.last_termination
                .as_ref()
                .map(Termination::state)
                .unwrap_or_default(),
        ),
        ready: running && c.ready,
        started: Some(running && c.started),
        restart_count: c.restart_count,
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id,
        ..Default::default()
    }
}

/// The condition `type_`, keeping the transition time of `old` when its status did not change.
fn condition(
    old: &BTreeMap<String, PodCondition>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = match old.get(type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: if ok { None } else { reason.map(Into::into) },
        message: if ok { None } else { message },
        last_transition_time,
        last_probe_time: None,
        observed_generation: None,
    }
}

/// The status to report for `pod` at `now`. Fields the kubelet does not own (`qosClass`, `nominatedNodeName`,
/// `PodScheduled`, other components' conditions) are kept from the pod's current status.
pub fn pod_status(pod: &Pod, view: &PodView, now: &Time) -> PodStatus {
    let old_status = pod.status.clone().unwrap_or_default();
    let old: BTreeMap<String, PodCondition> = old_status
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.clone()))
        .collect();
    let phase = phase(pod, view);
    let completed = phase == "Succeeded" || phase == "Failed";

    let not_initialized: Vec<&str> = view
        .init_containers
        .iter()
        .filter(|c| !init_succeeded(c))
        .map(|c| c.name.as_str())
        .collect();
    let not_ready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !(c.ready && matches!(c.current, Current::Running { .. })))
        .map(|c| c.name.as_str())
        .collect();
    let initialized = not_initialized.is_empty() || (completed && phase == "Succeeded");
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let (ready_reason, ready_message) = if completed {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!("containers with unready status: {}", list(&not_ready))),
        )
    };
    let containers_ready = !completed && not_ready.is_empty();
    let kubelet_owned = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
    ];
    let mut conditions = vec![
        condition(
            &old,
            "PodReadyToStartContainers",
            view.sandbox_ready,
            None,
            None,
            now,
        ),
        condition(
            &old,
            "Initialized",
            initialized,
            Some(if completed && !not_initialized.is_empty() {
                "PodCompleted"
            } else {
                "ContainersNotInitialized"
            }),
            Some(format!(
                "containers with incomplete status: {}",
                list(&not_initialized)
            )),
            now,
        ),
        condition(
            &old,
            "Ready",
            containers_ready,
            Some(ready_reason),
            ready_message.clone(),
            now,
        ),
        condition(
            &old,
            "ContainersReady",
            containers_ready,
            Some(ready_reason),
            ready_message,
            now,
        ),
    ];
    if completed && !not_initialized.is_empty() && phase == "Failed" {
        conditions[1].reason = Some("ContainersNotInitialized".into());
    }
    conditions.extend(
        old_status
            .conditions
            .iter()
            .flatten()
            .filter(|c| !kubelet_owned.contains(&c.type_.as_str()))
            .cloned(),
    );

    let init_statuses: Vec<ContainerStatus> = view.init_containers.iter().map(container_status).collect();
    let (reason, message) = match &view.failed_reason {
        Some((r, m)) => (Some(r.clone()), Some(m.clone())),
        None => (None, None),
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: view.host_ip.clone(),
        host_ips: view.host_ip.as_ref().map(|ip| vec![HostIP { ip: ip.clone() }]),
        pod_ip: view.pod_ips.first().cloned(),
        pod_ips: (!view.pod_ips.is_empty())
            .then(|| view.pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: old_status.start_time.clone().or_else(|| Some(now.clone())),
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        reason,
        message,
        ..old_status
    }
}

/// Whether two statuses differ in anything a reader would notice (the patch is skipped otherwise).
pub fn changed(old: Option<&PodStatus>, new: &PodStatus) -> bool {
    old != Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"restartPolicy": policy, "nodeName": "n1",
                     "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort",
                       "conditions": [{"type": "PodScheduled", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn running(name: &str, ready: bool) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "docker.io/library/busybox:latest".into(),
            image_id: "docker.io/library/busybox@sha256:ab".into(),
            current: Current::Running {
                container_id: format!("id-{name}"),
                started_at: Some(at(10)),
            },
            last_termination: None,
            restart_count: 0,
            ready,
            started: true,
        }
    }

    fn exited(name: &str, code: i32) -> ContainerView {
        ContainerView {
            current: Current::Terminated(Termination {
                container_id: format!("id-{name}"),
                exit_code: code,
                oom_killed: false,
                started_at: Some(at(10)),
                finished_at: Some(at(20)),
                reason: None,
                message: None,
            }),
            ..running(name, false)
        }
    }

    fn waiting(name: &str, reason: &str) -> ContainerView {
        ContainerView {
            current: Current::Waiting {
                reason: reason.into(),
                message: None,
            },
            ..running(name, false)
        }
    }

    fn view(containers: Vec<ContainerView>) -> PodView {
        PodView {
            sandbox_ready: true,
            pod_ips: vec!["10.42.0.5".into()],
            host_ip: Some("192.168.1.2".into()),
            init_containers: vec![],
            containers,
            terminal: false,
            failed_reason: None,
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn running_and_ready() {
        let p = pod("Always");
        let s = pod_status(&p, &view(vec![running("a", true), running("b", true)]), &at(30));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");
        assert_eq!(
            cond(&s, "PodScheduled").last_transition_time,
            Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
            "the scheduler's condition is kept"
        );
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.5"));
        assert_eq!(s.host_ips.as_ref().unwrap()[0].ip, "192.168.1.2");
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.container_id.as_deref(), Some("runc://id-a"));
        assert_eq!(cs.started, Some(true));
        assert!(cs.ready);
        assert!(cs.state.as_ref().unwrap().running.is_some());
    }

    #[test]
    fn unready_container_is_named_and_transition_times_are_kept() {
        let mut p = pod("Always");
        let s1 = pod_status(&p, &view(vec![running("a", true), running("b", false)]), &at(30));
        let ready = cond(&s1, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        p.status = Some(s1.clone());
        let s2 = pod_status(&p, &view(vec![running("a", true), running("b", false)]), &at(40));
        assert_eq!(cond(&s2, "Ready").last_transition_time, Some(at(30)));
        assert!(!changed(Some(&s1), &s2), "nothing changed: no patch");
        p.status = Some(s2);
        let s3 = pod_status(&p, &view(vec![running("a", true), running("b", true)]), &at(50));
        assert_eq!(cond(&s3, "Ready").last_transition_time, Some(at(50)));
        assert_eq!(s3.start_time, Some(at(30)), "startTime is set once");
    }

    #[test]
    fn phases_follow_restart_policy() {
        let done = vec![exited("a", 0), exited("b", 0)];
        let failed = vec![exited("a", 0), exited("b", 1)];
        assert_eq!(phase(&pod("Never"), &view(done.clone())), "Succeeded");
        assert_eq!(phase(&pod("OnFailure"), &view(done.clone())), "Succeeded");
        assert_eq!(phase(&pod("Always"), &view(done)), "Running");
        assert_eq!(phase(&pod("Never"), &view(failed.clone())), "Failed");
        assert_eq!(phase(&pod("OnFailure"), &view(failed)), "Running");
        assert_eq!(
            phase(
                &pod("Always"),
                &view(vec![running("a", true), waiting("b", "ContainerCreating")])
            ),
            "Pending"
        );
        let mut looping = waiting("b", "CrashLoopBackOff");
        looping.last_termination = Some(match exited("b", 1).current {
            Current::Terminated(t) => t,
            _ => unreachable!(),
        });
        assert_eq!(
            phase(&pod("Always"), &view(vec![running("a", true), looping])),
            "Running",
            "a crash-looping container does not make the pod Pending"
        );
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let p = pod("Always");
        let mut v = view(vec![
            waiting("a", "PodInitializing"),
            waiting("b", "PodInitializing"),
        ]);
        v.init_containers = vec![exited("setup", 0), running("migrate", false)];
        let s = pod_status(&p, &v, &at(30));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let init = cond(&s, "Initialized");
        assert_eq!(init.status, "False");
        assert_eq!(
            init.message.as_deref(),
            Some("containers with incomplete status: [migrate]")
        );
        assert_eq!(s.init_container_statuses.as_ref().unwrap().len(), 2);
        let mut v = view(vec![waiting("a", "PodInitializing")]);
        v.init_containers = vec![exited("setup", 2)];
        assert_eq!(phase(&pod("Never"), &v), "Failed");
        assert_eq!(
            phase(&pod("Always"), &v),
            "Pending",
            "retried with other policies"
        );
    }

    #[test]
    fn completed_pod_reports_pod_completed() {
        let p = pod("Never");
        let s = pod_status(&p, &view(vec![exited("a", 0), exited("b", 0)]), &at(30));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let ready = cond(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
        let t = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
    }

    #[test]
    fn oom_and_errors_are_named() {
        let mut t = Termination {
            container_id: "x".into(),
            exit_code: 137,
            oom_killed: true,
            started_at: None,
            finished_at: None,
            reason: None,
            message: None,
        };
        assert_eq!(t.reason(), "OOMKilled");
        t.oom_killed = false;
        assert_eq!(t.reason(), "Error");
        t.exit_code = 0;
        assert_eq!(t.reason(), "Completed");
    }
}
