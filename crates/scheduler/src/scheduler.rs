//! The I/O shell around the pure core: watches Nodes and Pods into the [`Cache`] and [`SchedulingQueue`],
//! runs one scheduling cycle at a time in a single loop (which owns cache and queue, so no locks), binds
//! concurrently (a bounded number of binding requests in flight), and reports outcomes (Events, the
//! `PodScheduled` condition) off the loop. Leader election wraps it all when configured.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cache::{Cache, assigned_node};
use crate::core::{Outcome, reserve_and_permit, schedule_one, unreserve};
use crate::events::EventRecorder;
use crate::framework::{ClusterEvent, Code, CycleState, Profile, Status};
use crate::leader::{Ended, LeaderElector, LeaseConfig};
use crate::plugins::{DefaultBinder, default_profile};
use crate::queue::{PodLocation, QueueConfig, SchedulingQueue};
use crate::snapshot::pod_key;

/// The name pods use for the default scheduler.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The options name no profile.
    #[error("no scheduling profile configured")]
    NoProfiles,
    /// Two profiles share a scheduler name.
    #[error("duplicate profile for scheduler name {0:?}")]
    DuplicateProfile(String),
    /// The Node or Pod watch ended for good.
    #[error("watch of {0} ended")]
    WatchEnded(&'static str),
}

/// How to run the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// One profile per scheduler name served; a pod is scheduled by the profile named in its
    /// `spec.schedulerName`. Profiles without Bind plugins get [`DefaultBinder`].
    pub profiles: Vec<Profile>,
    /// `None` schedules at once; `Some` only while holding the Lease.
    pub leader_election: Option<LeaseConfig>,
    /// Binding requests in flight at most.
    pub max_in_flight_bindings: usize,
    pub queue: QueueConfig,
    /// Identity in Events (`reportingInstance`) and the default lease identity.
    pub identity: String,
}

/// A unique identity for this process: host name plus a random suffix (like client-go's `id_uuid`).
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rkube".into());
    format!("{host}_{:08x}", rand::random::<u32>())
}

impl Default for SchedulerOptions {
    /// The default profile as `default-scheduler`, leader-elected on `kube-system/rkube-scheduler`.
    fn default() -> Self {
        let identity = default_identity();
        SchedulerOptions {
            profiles: vec![default_profile(DEFAULT_SCHEDULER_NAME)],
            leader_election: Some(LeaseConfig::new(
                "kube-system",
                "rkube-scheduler",
                identity.clone(),
            )),
            max_in_flight_bindings: 256,
            queue: QueueConfig::default(),
            identity,
        }
    }
}

/// Runs the scheduler until `shutdown` resolves: campaigns for the lease if configured, then schedules every
/// pending pod whose `spec.schedulerName` has a profile. Losing the lease stops scheduling and campaigns again.
/// Returns an error only for bad options or a watch that ended for good.
///
/// ```no_run
/// # async fn demo(client: kube::Client) -> Result<(), rkube_scheduler::SchedulerError> {
/// // `default-scheduler` with kube's default plugins, leader-elected on kube-system/rkube-scheduler.
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let scheduler = tokio::spawn(rkube_scheduler::run(client, Default::default(), async move {
///     let _ = stopped.await;
/// }));
/// // … on SIGTERM:
/// let _ = stop.send(());
/// scheduler.await.expect("scheduler task panicked")
/// # }
/// ```
pub async fn run(
    client: kube::Client,
    options: SchedulerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedulerError> {
    let shutdown = shutdown.boxed().shared();
    let Some(lease) = options.leader_election.clone() else {
        return run_leading(client, options, shutdown).await;
    };
    let elector = LeaderElector::new(client.clone(), lease);
    loop {
        let (c, o) = (client.clone(), options.clone());
        let ended = elector.run(shutdown.clone(), |mut leading| async move {
            run_leading(c, o, async move { leading.lost().await }).await
        });
        match ended.await {
            Ended::Shutdown(out) => return out.unwrap_or(Ok(())),
            Ended::Finished(out) => return out,
            Ended::Lost(_) => continue,
        }
    }
}

/// What the scheduling loop reacts to.
enum Input {
    Pod(Box<watcher::Event<Pod>>),
    PodsListed(Vec<Pod>),
    Node(Box<watcher::Event<Node>>),
    NodesListed(Vec<Node>),
    WatchEnded(&'static str),
    BindingDone(Box<BindingDone>),
}

struct BindingDone {
    pod: Arc<Pod>,
    key: String,
    node: String,
    profile: Arc<Profile>,
    state: CycleState,
    status: Status,
}

/// Work for the reporter tasks, off the scheduling loop.
enum Report {
    Scheduled {
        pod: Arc<Pod>,
        node: String,
    },
    Failed {
        pod: Arc<Pod>,
        reason: &'static str,
        message: String,
    },
    /// Delete `victims` so `preemptor` fits on `node`, and nominate that node for it.
    Preempt {
        preemptor: Arc<Pod>,
        node: String,
        victims: Vec<Arc<Pod>>,
    },
}

/// Forwards a watcher stream into the loop, turning re-lists into one `*Listed` batch.
fn forward<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    tx: mpsc::UnboundedSender<Input>,
    name: &'static str,
    single: fn(watcher::Event<K>) -> Input,
    listed: fn(Vec<K>) -> Input,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    tasks.spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut buffer: Option<Vec<K>> = None;
        while let Some(item) = stream.next().await {
            let input = match item {
                Ok(watcher::Event::Init) => {
                    buffer = Some(Vec::new());
                    continue;
                }
                Ok(watcher::Event::InitApply(obj)) => {
                    buffer.get_or_insert_with(Vec::new).push(obj);
                    continue;
                }
                Ok(watcher::Event::InitDone) => listed(buffer.take().unwrap_or_default()),
                Ok(event) => single(event),
                Err(e) => {
                    tracing::warn!(error = %e, watch = name, "scheduler watch error");
                    continue;
                }
            };
            if tx.send(input).is_err() {
                return;
            }
        }
        let _ = tx.send(Input::WatchEnded(name));
    });
}

/// The scheduling loop with its watches, binders and reporters, until `stop` resolves.
async fn run_leading(
    client: kube::Client,
    options: SchedulerOptions,
    stop: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    if options.profiles.is_empty() {
        return Err(SchedulerError::NoProfiles);
    }
    let mut profiles: HashMap<String, Arc<Profile>> = HashMap::new();
    for p in &options.profiles {
        let mut p = p.clone();
        if p.bind.is_empty() {
            p = p.with_bind(Arc::new(DefaultBinder::new(client.clone())));
        }
        if profiles.insert(p.scheduler_name.clone(), Arc::new(p)).is_some() {
            return Err(SchedulerError::DuplicateProfile(p_name(&options.profiles)));
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    forward(
        &mut tasks,
        Api::<Node>::all(client.clone()),
        tx.clone(),
        "nodes",
        |e| Input::Node(Box::new(e)),
        Input::NodesListed,
    );
    forward(
        &mut tasks,
        Api::<Pod>::all(client.clone()),
        tx.clone(),
        "pods",
        |e| Input::Pod(Box::new(e)),
        Input::PodsListed,
    );
    let component = options.profiles[0].scheduler_name.clone();
    let reports = spawn_reporter(&mut tasks, client.clone(), &component, &options.identity);

    let mut looper = Loop::new(profiles, &options, tx, reports);
    tokio::pin!(stop);
    loop {
        // Checked every cycle, not only when idle: a lost lease must stop a busy scheduler promptly.
        if (&mut stop).now_or_never().is_some() {
            return Ok(());
        }
        while let Ok(input) = rx.try_recv() {
            looper.handle(input)?;
        }
        looper.queue.flush(Instant::now());
        if looper.synced.len() == 2
            && let Some(qp) = looper.queue.pop()
        {
            looper.schedule(qp).await;
            continue;
        }
        let wake = looper
            .queue
            .next_wakeup()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        tokio::select! {
            _ = &mut stop => return Ok(()),
            input = rx.recv() => match input {
                Some(input) => looper.handle(input)?,
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

fn p_name(profiles: &[Profile]) -> String {
    let mut seen = HashSet::new();
    profiles
        .iter()
        .map(|p| p.scheduler_name.clone())
        .find(|n| !seen.insert(n.clone()))
        .unwrap_or_default()
}

/// Sends reports to a task that writes them with bounded concurrency. Reports are dropped when the
/// backlog is full (like client-go's event broadcaster), never blocking scheduling.
fn spawn_reporter(
    tasks: &mut JoinSet<()>,
    client: kube::Client,
    component: &str,
    identity: &str,
) -> mpsc::Sender<Report> {
    let (tx, mut rx) = mpsc::channel::<Report>(4096);
    let recorder = Arc::new(EventRecorder::new(client.clone(), component, identity));
    tasks.spawn(async move {
        let limit = Arc::new(Semaphore::new(16));
        let mut writers = JoinSet::new();
        while let Some(report) = rx.recv().await {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (recorder, client) = (recorder.clone(), client.clone());
            writers.spawn(async move {
                write_report(&recorder, &client, report).await;
                drop(permit);
            });
            while writers.try_join_next().is_some() {}
        }
    });
    tx
}

async fn write_report(recorder: &EventRecorder, client: &kube::Client, report: Report) {
    match report {
        Report::Scheduled { pod, node } => {
            let msg = format!("Successfully assigned {} to {node}", pod_key(&pod));
            if let Err(e) = recorder.record(&pod, "Normal", "Scheduled", &msg).await {
                tracing::debug!(error = %e, "recording Scheduled event failed");
            }
        }
        Report::Preempt {
            preemptor,
            node,
            victims,
        } => {
            let uid = preemptor.metadata.uid.clone().unwrap_or_default();
            for victim in victims {
                let ns = victim.metadata.namespace.as_deref().unwrap_or("default");
                let name = victim.metadata.name.as_deref().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                match api.delete(name, &kube::api::DeleteParams::default()).await {
                    Ok(_) => {
                        let msg = format!("Preempted by pod {uid} on node {node}");
                        if let Err(e) = recorder.record(&victim, "Normal", "Preempted", &msg).await {
                            tracing::debug!(error = %e, "recording Preempted event failed");
                        }
                    }
                    Err(e) => tracing::info!(error = %e, pod = name, "deleting preemption victim failed"),
                }
            }
            let ns = preemptor.metadata.namespace.as_deref().unwrap_or("default");
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let patch = serde_json::json!({"status": {"nominatedNodeName": node}});
            let name = preemptor.metadata.name.as_deref().unwrap_or_default();
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(error = %e, pod = name, "setting nominatedNodeName failed");
            }
        }
        Report::Failed { pod, reason, message } => {
            if let Err(e) = recorder
                .record(&pod, "Warning", "FailedScheduling", &message)
                .await
            {
                tracing::debug!(error = %e, "recording FailedScheduling event failed");
            }
            let api: Api<Pod> = Api::namespaced(
                client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": reason,
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now()),
            }]}});
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            // Strategic merge: conditions merge by `type`, so the pod's other conditions stay.
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::debug!(error = %e, pod = name, "setting PodScheduled=False failed");
            }
        }
    }
}

/// How often the same failure message is re-reported for one pod.
const FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(60);

struct Loop {
    cache: Cache,
    queue: SchedulingQueue,
    profiles: HashMap<String, Arc<Profile>>,
    next_start: usize,
    bindings: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Input>,
    reports: mpsc::Sender<Report>,
    /// Last failure message reported per pod, to report changes and not every retry.
    last_failure_report: HashMap<String, (String, Instant)>,
    /// Which watches have delivered their initial list (scheduling waits for both).
    synced: HashSet<&'static str>,
}

fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(DEFAULT_SCHEDULER_NAME)
}

impl Loop {
    fn new(
        profiles: HashMap<String, Arc<Profile>>,
        options: &SchedulerOptions,
        tx: mpsc::UnboundedSender<Input>,
        reports: mpsc::Sender<Report>,
    ) -> Loop {
        Loop {
            cache: Cache::new(),
            queue: SchedulingQueue::new(options.queue.clone()),
            profiles,
            next_start: 0,
            bindings: Arc::new(Semaphore::new(options.max_in_flight_bindings.max(1))),
            tx,
            reports,
            last_failure_report: HashMap::new(),
            synced: HashSet::new(),
        }
    }

    fn ours(&self, pod: &Pod) -> bool {
        self.profiles.contains_key(scheduler_name(pod))
    }

    fn cluster_event(&mut self, event: Option<ClusterEvent>) {
        let Some(event) = event else { return };
        let profiles = &self.profiles;
        self.queue.on_cluster_event(event, Instant::now(), |plugins, e| {
            profiles.values().any(|p| p.event_may_help(plugins, e))
        });
    }

    /// A pod the scheduler should place: pending, ours, not being deleted.
    fn pending(&self, pod: &Pod) -> bool {
        let unbound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        unbound
            && !matches!(phase, Some("Succeeded" | "Failed"))
            && pod.metadata.deletion_timestamp.is_none()
            && self.ours(pod)
    }

    fn apply_pod(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        if self.pending(&pod) {
            if !self.cache.is_assumed(&key) {
                self.queue.add(pod, Instant::now());
            }
            return;
        }
        if assigned_node(&pod).is_some() && self.queue.location(&key) != Some(PodLocation::InFlight) {
            self.queue.delete(&key);
            self.last_failure_report.remove(&key);
        } else if assigned_node(&pod).is_none() {
            self.queue.delete(&key);
        }
        let event = self.cache.update_pod(pod);
        self.cluster_event(event);
    }

    fn handle(&mut self, input: Input) -> Result<(), SchedulerError> {
        match input {
            Input::Pod(event) => match *event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => self.apply_pod(pod),
                watcher::Event::Delete(pod) => {
                    let key = pod_key(&pod);
                    self.queue.delete(&key);
                    self.last_failure_report.remove(&key);
                    let event = self.cache.remove_pod(&key);
                    self.cluster_event(event);
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
            Input::PodsListed(pods) => {
                let (pending, other): (Vec<Pod>, Vec<Pod>) = pods.into_iter().partition(|p| self.pending(p));
                self.cache.replace_pods(other);
                // Pods deleted while the watch was down are not in the new list.
                let listed: HashSet<String> = pending.iter().map(pod_key).collect();
                let vanished: Vec<String> = self
                    .queue
                    .keys()
                    .filter(|k| !listed.contains(*k) && self.queue.location(k) != Some(PodLocation::InFlight))
                    .cloned()
                    .collect();
                for key in vanished {
                    self.queue.delete(&key);
                }
                for p in pending {
                    self.apply_pod(p);
                }
                self.synced.insert("pods");
                self.cluster_event(Some(ClusterEvent::AssignedPodDelete));
            }
            Input::Node(event) => match *event {
                watcher::Event::Apply(node) | watcher::Event::InitApply(node) => {
                    let event = self.cache.update_node(node);
                    self.cluster_event(event);
                }
                watcher::Event::Delete(node) => {
                    self.cache
                        .remove_node(node.metadata.name.as_deref().unwrap_or_default());
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
            Input::NodesListed(nodes) => {
                self.cache.replace_nodes(nodes);
                self.synced.insert("nodes");
                self.cluster_event(Some(ClusterEvent::NodeAdd));
            }
            Input::WatchEnded(what) => return Err(SchedulerError::WatchEnded(what)),
            Input::BindingDone(done) => self.binding_done(*done),
        }
        Ok(())
    }

    fn report_failure(&mut self, pod: Arc<Pod>, key: &str, reason: &'static str, message: String) {
        let now = Instant::now();
        let repeat = self
            .last_failure_report
            .get(key)
            .is_some_and(|(m, at)| *m == message && now < *at + FAILURE_REPORT_INTERVAL);
        if repeat {
            return;
        }
        self.last_failure_report
            .insert(key.to_string(), (message.clone(), now));
        tracing::debug!(pod = key, %message, "FailedScheduling");
        let _ = self.reports.try_send(Report::Failed { pod, reason, message });
    }

    async fn schedule(&mut self, qp: crate::queue::QueuedPod) {
        let Some(profile) = self.profiles.get(scheduler_name(&qp.pod)).cloned() else {
            self.queue.delete(&qp.key);
            return;
        };
        let result = schedule_one(&qp.pod, self.cache.snapshot(), &profile, self.next_start);
        self.next_start = result.next_start;
        let mut state = result.state;
        let now = Instant::now();
        match result.outcome {
            Outcome::Scheduled { node } => {
                self.cache.assume(qp.pod.clone(), &node);
                let status = reserve_and_permit(&profile, &mut state, &qp.pod, &node);
                if !status.is_success() {
                    self.cache.forget(&qp.key);
                    if status.is_rejected() {
                        self.queue
                            .requeue_unschedulable(&qp.key, HashSet::from([status.plugin]), now);
                    } else {
                        self.queue.requeue_backoff(&qp.key, now);
                    }
                    let reason = if status.code == Code::Error {
                        "SchedulerError"
                    } else {
                        "Unschedulable"
                    };
                    self.report_failure(qp.pod.clone(), &qp.key, reason, status.to_string());
                    return;
                }
                let Ok(permit) = self.bindings.clone().acquire_owned().await else {
                    return;
                };
                let tx = self.tx.clone();
                let (pod, key) = (qp.pod.clone(), qp.key.clone());
                tokio::spawn(async move {
                    let mut status = Status::skip();
                    for binder in &profile.bind {
                        status = binder.bind(&pod, &node).await.with_plugin(binder.name());
                        if !status.is_skip() {
                            break;
                        }
                    }
                    drop(permit);
                    let done = BindingDone {
                        pod,
                        key,
                        node,
                        profile,
                        state,
                        status,
                    };
                    let _ = tx.send(Input::BindingDone(Box::new(done)));
                });
            }
            Outcome::Unschedulable(fit) => {
                let message = fit.to_string();
                if let Some(res) = &fit.post_filter_result
                    && let Some(node) = res.nominated_node.clone()
                    && !res.victims.is_empty()
                {
                    tracing::info!(pod = %qp.key, %node, victims = res.victims.len(), "preempting");
                    let report = Report::Preempt {
                        preemptor: qp.pod.clone(),
                        node,
                        victims: res.victims.clone(),
                    };
                    let _ = self.reports.try_send(report);
                }
                self.queue
                    .requeue_unschedulable(&qp.key, fit.diagnosis.unschedulable_plugins, now);
                self.report_failure(qp.pod, &qp.key, "Unschedulable", message);
            }
            Outcome::NoNodes => {
                self.queue.requeue_unschedulable(&qp.key, HashSet::new(), now);
                let message = "no nodes available to schedule pods".to_string();
                self.report_failure(qp.pod, &qp.key, "Unschedulable", message);
            }
            Outcome::Error(status) => {
                self.queue.requeue_backoff(&qp.key, now);
                self.report_failure(qp.pod, &qp.key, "SchedulerError", status.to_string());
            }
        }
    }

    fn binding_done(&mut self, mut done: BindingDone) {
        if done.status.is_success() {
            self.queue.done(&done.key);
            self.last_failure_report.remove(&done.key);
            let _ = self.reports.try_send(Report::Scheduled {
                pod: done.pod,
                node: done.node,
            });
            return;
        }
        tracing::info!(pod = %done.key, node = %done.node, status = %done.status, "binding failed");
        unreserve(&done.profile, &mut done.state, &done.pod, &done.node);
        self.cache.forget(&done.key);
        self.queue.requeue_backoff(&done.key, Instant::now());
        let message = format!("Binding rejected: {}", done.status);
        self.report_failure(done.pod, &done.key, "SchedulerError", message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{BindPlugin, Plugin};
    use crate::testing::*;
    use std::sync::Mutex;

    /// Records bindings instead of posting them; fails for pods named in `refuse`.
    #[derive(Default)]
    struct RecordingBinder {
        bound: Mutex<Vec<(String, String)>>,
        refuse: Vec<String>,
    }

    impl Plugin for RecordingBinder {
        fn name(&self) -> &'static str {
            "RecordingBinder"
        }
    }

    #[async_trait::async_trait]
    impl BindPlugin for RecordingBinder {
        async fn bind(&self, pod: &Pod, node: &str) -> Status {
            let key = pod_key(pod);
            if self.refuse.contains(&key) {
                return Status::error("conflict");
            }
            self.bound.lock().unwrap().push((key, node.to_string()));
            Status::success()
        }
    }

    struct Harness {
        looper: Loop,
        rx: mpsc::UnboundedReceiver<Input>,
        reports: mpsc::Receiver<Report>,
        binder: Arc<RecordingBinder>,
    }

    fn harness(binder: RecordingBinder) -> Harness {
        let binder = Arc::new(binder);
        let profile = default_profile("mine").with_bind(binder.clone());
        let profiles = HashMap::from([("mine".to_string(), Arc::new(profile))]);
        let (tx, rx) = mpsc::unbounded_channel();
        let (rtx, reports) = mpsc::channel(100);
        let options = SchedulerOptions {
            leader_election: None,
            ..SchedulerOptions::default()
        };
        Harness {
            looper: Loop::new(profiles, &options, tx, rtx),
            rx,
            reports,
            binder,
        }
    }

    fn mine(mut p: Pod) -> Pod {
        p.spec.as_mut().unwrap().scheduler_name = Some("mine".into());
        p
    }

    impl Harness {
        /// Schedules everything poppable and feeds the binding results back, like the loop does.
        async fn run_once(&mut self) {
            while let Some(qp) = self.looper.queue.pop() {
                self.looper.schedule(qp).await;
            }
            while self.looper.bindings.available_permits() < 256 || !self.rx.is_empty() {
                let input = self.rx.recv().await.unwrap();
                self.looper.handle(input).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn pending_pods_of_our_scheduler_are_bound_and_reported() {
        let mut h = harness(RecordingBinder::default());
        h.looper
            .handle(Input::NodesListed(vec![node("n1", "1", "4Gi", 110)]))
            .unwrap();
        let pods = vec![
            mine(pod_with_requests("a", &[("cpu", "600m")])),
            mine(pod_with_requests("b", &[("cpu", "600m")])),
            pod("default-scheduler-pod"),
            bound(mine(pod("already-bound")), "n1"),
        ];
        h.looper.handle(Input::PodsListed(pods)).unwrap();
        assert_eq!(h.looper.queue.len(), 2, "only our pending pods are queued");
        h.run_once().await;

        let bound = h.binder.bound.lock().unwrap().clone();
        assert_eq!(bound.len(), 1, "one 600m pod fits the 1-cpu node: {bound:?}");
        assert_eq!(bound[0].1, "n1");
        let mut scheduled = Vec::new();
        let mut failed = Vec::new();
        while let Ok(report) = h.reports.try_recv() {
            match report {
                Report::Scheduled { pod, node } => scheduled.push((pod_key(&pod), node)),
                Report::Failed { reason, message, .. } => failed.push((reason, message)),
                Report::Preempt { .. } => panic!("nothing to preempt at equal priority"),
            }
        }
        assert_eq!(scheduled, bound);
        assert_eq!(
            failed,
            vec![(
                "Unschedulable",
                "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
                 1 No preemption victims found for incoming pod."
                    .to_string()
            )]
        );
        let waiting = if bound[0].0 == "default/a" {
            "default/b"
        } else {
            "default/a"
        };
        assert!(matches!(
            h.looper.queue.location(waiting),
            Some(PodLocation::Unschedulable { .. })
        ));
        // The bound pod's binding shows up in the watch: confirmed in the cache, still one pod's worth used.
        let confirmed = bound_pod(&bound[0].0, "n1");
        h.looper
            .handle(Input::Pod(Box::new(watcher::Event::Apply(confirmed))))
            .unwrap();
        assert_eq!(
            h.looper.cache.snapshot().get("n1").unwrap().requested.milli_cpu,
            600
        );
    }

    fn bound_pod(key: &str, node: &str) -> Pod {
        let name = key.trim_start_matches("default/");
        bound(mine(pod_with_requests(name, &[("cpu", "600m")])), node)
    }

    #[tokio::test]
    async fn deleting_a_bound_pod_lets_the_waiting_pod_in() {
        let mut h = harness(RecordingBinder::default());
        h.looper
            .handle(Input::NodesListed(vec![node("n1", "1", "4Gi", 110)]))
            .unwrap();
        let holder = bound(pod_with_requests("holder", &[("cpu", "1")]), "n1");
        h.looper
            .handle(Input::PodsListed(vec![
                holder.clone(),
                mine(pod_with_requests("w", &[("cpu", "1")])),
            ]))
            .unwrap();
        h.run_once().await;
        assert!(h.binder.bound.lock().unwrap().is_empty());
        h.looper
            .handle(Input::Pod(Box::new(watcher::Event::Delete(holder))))
            .unwrap();
        // Moved on by the AssignedPodDelete event; it may still be backing off (1 s after its failure).
        h.looper.queue.flush(Instant::now() + Duration::from_secs(2));
        h.run_once().await;
        assert_eq!(
            *h.binder.bound.lock().unwrap(),
            vec![("default/w".to_string(), "n1".to_string())]
        );
    }

    #[tokio::test]
    async fn higher_priority_pod_preempts_a_lower_priority_one() {
        let mut h = harness(RecordingBinder::default());
        h.looper
            .handle(Input::NodesListed(vec![node("n1", "1", "4Gi", 110)]))
            .unwrap();
        let mut low = bound(pod_with_requests("low", &[("cpu", "1")]), "n1");
        low.spec.as_mut().unwrap().priority = Some(1);
        let mut high = mine(pod_with_requests("high", &[("cpu", "1")]));
        high.spec.as_mut().unwrap().priority = Some(1000);
        h.looper.handle(Input::PodsListed(vec![low, high])).unwrap();
        h.run_once().await;
        let mut preempted = None;
        while let Ok(report) = h.reports.try_recv() {
            if let Report::Preempt {
                preemptor,
                node,
                victims,
            } = report
            {
                let victims: Vec<String> = victims.iter().map(|v| pod_key(v)).collect();
                preempted = Some((pod_key(&preemptor), node, victims));
            }
        }
        assert_eq!(
            preempted,
            Some((
                "default/high".into(),
                "n1".into(),
                vec!["default/low".to_string()]
            ))
        );
        // Once the victim's deletion is observed the preemptor is retried and bound there.
        let victim = bound(pod_with_requests("low", &[("cpu", "1")]), "n1");
        h.looper
            .handle(Input::Pod(Box::new(watcher::Event::Delete(victim))))
            .unwrap();
        h.looper.queue.flush(Instant::now() + Duration::from_secs(2));
        h.run_once().await;
        assert_eq!(
            *h.binder.bound.lock().unwrap(),
            vec![("default/high".to_string(), "n1".to_string())]
        );
    }

    #[tokio::test]
    async fn relist_drops_queued_pods_that_vanished() {
        let mut h = harness(RecordingBinder::default());
        h.looper
            .handle(Input::PodsListed(vec![mine(pod("a")), mine(pod("b"))]))
            .unwrap();
        h.looper.handle(Input::PodsListed(vec![mine(pod("b"))])).unwrap();
        assert_eq!(h.looper.queue.location("default/a"), None);
        assert_eq!(h.looper.queue.location("default/b"), Some(PodLocation::Active));
    }

    #[tokio::test]
    async fn failed_binding_releases_the_node_and_backs_off() {
        let mut h = harness(RecordingBinder {
            refuse: vec!["default/a".into()],
            ..Default::default()
        });
        h.looper
            .handle(Input::NodesListed(vec![node("n1", "1", "4Gi", 110)]))
            .unwrap();
        h.looper
            .handle(Input::PodsListed(vec![mine(pod_with_requests(
                "a",
                &[("cpu", "1")],
            ))]))
            .unwrap();
        h.run_once().await;
        assert_eq!(
            h.looper.cache.snapshot().get("n1").unwrap().requested.milli_cpu,
            0,
            "assumption forgotten"
        );
        assert!(matches!(
            h.looper.queue.location("default/a"),
            Some(PodLocation::Backoff { .. })
        ));
        let Ok(Report::Failed { reason, message, .. }) = h.reports.try_recv() else {
            panic!("no failure report")
        };
        assert_eq!(
            (reason, message.as_str()),
            ("SchedulerError", "Binding rejected: conflict")
        );
    }
}
