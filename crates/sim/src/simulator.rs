//! The I/O shell: registers the nodes, renews their Leases and status spread over time, and follows ONE
//! watch on all pods, acting on those bound to our nodes with the decisions of [`crate::pod`].
//!
//! All nodes share one [`State`] behind a mutex (decisions are quick and never await while holding it) and
//! one semaphore bounding the API requests in flight, so thousands of nodes cost a few tasks, not thousands.
//! Stopping (or killing) the process leaves the nodes registered: they go silent and the node lifecycle
//! controller marks them NotReady, as for a lost machine.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::ipam::{Cidr, IpPool};
use crate::node::{
    LEASE_NAMESPACE, SIMULATED_LABEL, lease_object, node_index, node_ip, node_name, node_object, node_status,
    now, slot_members,
};
use crate::pod::{PodAction, next_action, pod_ip, running_status};
use crate::{SimError, SimOptions};

const FIELD_MANAGER: &str = "rkube-sim";
/// Attempts of one request before it is given up (the next heartbeat or watch event tries again).
const ATTEMPTS: u32 = 5;
/// At most this many heartbeat slots per period: a tick every period/100 at the finest.
const MAX_SLOTS: usize = 100;

/// Runs `options.count` simulated nodes until `shutdown` resolves. Fails only when the nodes cannot be
/// registered; later API errors are retried and logged.
pub async fn run(
    client: Client,
    options: SimOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SimError> {
    if options.count == 0 || options.name_prefix.is_empty() || options.max_concurrent_requests == 0 {
        return Err(SimError::InvalidOptions(
            "count, name prefix and request concurrency must not be empty".into(),
        ));
    }
    let sim = Arc::new(Simulator {
        nodes: Api::all(client.clone()),
        leases: Api::namespaced(client.clone(), LEASE_NAMESPACE),
        client,
        requests: Semaphore::new(options.max_concurrent_requests),
        state: Mutex::new(State::new(options.count)),
        options,
    });
    let work = async {
        sim.register_all().await?;
        tracing::info!(count = sim.options.count, prefix = %sim.options.name_prefix, "simulated nodes registered");
        tokio::join!(
            sim.clone()
                .heartbeat(sim.options.lease_renew_interval, Heartbeat::Lease),
            sim.clone()
                .heartbeat(sim.options.status_report_interval, Heartbeat::Status),
            sim.clone().watch_nodes(),
            async {
                if sim.options.manage_pods {
                    sim.clone().watch_pods().await
                }
            },
        );
        Ok(())
    };
    tokio::select! {
        r = work => r,
        _ = shutdown => Ok(()),
    }
}

struct Simulator {
    client: Client,
    nodes: Api<Node>,
    leases: Api<Lease>,
    options: SimOptions,
    requests: Semaphore,
    state: Mutex<State>,
}

/// What the simulator remembers about its nodes and their pods.
struct State {
    nodes: Vec<NodeState>,
    /// Pods (by uid) seen during a relist of the pod watch; at its end, pods not seen are gone.
    relisting: Option<HashSet<String>>,
}

#[derive(Default)]
struct NodeState {
    uid: Option<String>,
    ready_since: Option<Time>,
    /// A status post is under way because the node was seen not Ready.
    status_pending: bool,
    /// `None` until node IPAM has set `spec.podCIDR`.
    pool: Option<IpPool>,
    /// Pods that arrived before the pod CIDR, handled when it comes.
    waiting: HashMap<String, Pod>,
    pods: HashMap<String, PodRecord>,
}

struct PodRecord {
    ip: Option<Ipv4Addr>,
    /// A Running status was posted (or is being posted) for this pod.
    started: bool,
    /// The final delete was sent (or is being sent).
    deleting: bool,
}

impl State {
    fn new(count: usize) -> State {
        State {
            nodes: (0..count).map(|_| NodeState::default()).collect(),
            relisting: None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Heartbeat {
    Lease,
    Status,
}

/// Whether a failed request may succeed when sent again (server or transport trouble, throttling).
fn retriable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Simulator {
    /// Sends one request with a permit, retrying retriable failures with backoff.
    async fn request<T, F, Fut>(&self, mut send: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = self.requests.acquire().await.expect("semaphore never closed");
                send().await
            };
            match result {
                Err(e) if attempt < ATTEMPTS && retriable(&e) => {
                    tracing::debug!(error = %e, attempt, "request failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn register_all(self: &Arc<Self>) -> Result<(), SimError> {
        futures::stream::iter(0..self.options.count)
            .map(|i| self.register(i))
            .buffer_unordered(self.options.max_concurrent_requests)
            .try_collect::<()>()
            .await
    }

    /// Creates node `index` (or adopts the existing one), posts its status and creates its Lease.
    async fn register(&self, index: usize) -> Result<(), SimError> {
        let name = node_name(&self.options.name_prefix, index);
        let err = |source| SimError::Register {
            node: name.clone(),
            source,
        };
        let desired = node_object(&self.options, index);
        let post = PostParams::default();
        let created = self.request(|| self.nodes.create(&post, &desired)).await;
        let (node, fresh) = match created {
            Ok(node) => (node, true),
            Err(e) if is_status(&e, 409) => {
                (self.request(|| self.nodes.get(&name)).await.map_err(err)?, false)
            }
            Err(e) => return Err(err(e)),
        };
        let ready_since = ready_condition(&node)
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time.clone());
        {
            let mut state = self.state.lock();
            let ns = &mut state.nodes[index];
            ns.uid = node.metadata.uid.clone();
            ns.ready_since = ready_since.clone();
        }
        // A node we just created kept the status it was created with, unless the server dropped it; an
        // adopted node may report another capacity or be NotReady: post ours.
        if !fresh || ready_since.is_none() {
            self.post_status(index).await.map_err(err)?;
        }
        let lease = lease_object(&name, node.metadata.uid.as_deref(), &micro_now());
        match self.request(|| self.leases.create(&post, &lease)).await {
            Err(e) if is_status(&e, 409) => self.renew_lease(index).await.map_err(err)?,
            r => drop(r.map_err(err)?),
        }
        Ok(())
    }

    /// Posts node `index`'s full status: a heartbeat, and the repair of a status someone else changed.
    async fn post_status(&self, index: usize) -> Result<(), kube::Error> {
        let name = node_name(&self.options.name_prefix, index);
        let now = now();
        let since = self.state.lock().nodes[index]
            .ready_since
            .clone()
            .unwrap_or_else(|| now.clone());
        let status = node_status(&self.options, index, Some(&since), &now);
        let patch = Patch::Strategic(json!({ "status": status }));
        let params = patch_params();
        self.request(|| self.nodes.patch_status(&name, &params, &patch))
            .await?;
        self.state.lock().nodes[index].ready_since = Some(since);
        Ok(())
    }

    /// Renews node `index`'s Lease, creating it when missing.
    async fn renew_lease(&self, index: usize) -> Result<(), kube::Error> {
        let name = node_name(&self.options.name_prefix, index);
        let patch = Patch::Merge(json!({ "spec": { "renewTime": micro_now(), "holderIdentity": name } }));
        let params = patch_params();
        match self.request(|| self.leases.patch(&name, &params, &patch)).await {
            Err(e) if is_status(&e, 404) => {
                let uid = self.state.lock().nodes[index].uid.clone();
                let lease = lease_object(&name, uid.as_deref(), &micro_now());
                let post = PostParams::default();
                match self.request(|| self.leases.create(&post, &lease)).await {
                    Err(e) if is_status(&e, 409) => Ok(()),
                    r => r.map(drop),
                }
            }
            r => r.map(drop),
        }
    }

    /// Every `period`, does `kind` for every node, spread over up to [`MAX_SLOTS`] ticks of the period.
    async fn heartbeat(self: Arc<Self>, period: Duration, kind: Heartbeat) {
        let count = self.options.count;
        let slots = count.clamp(1, MAX_SLOTS);
        let mut tick = tokio::time::interval(period / slots as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        for slot in (0..slots).cycle() {
            tick.tick().await;
            futures::stream::iter(slot_members(count, slots, slot))
                .for_each_concurrent(self.options.max_concurrent_requests, |i| {
                    let sim = self.clone();
                    async move {
                        let result = match kind {
                            Heartbeat::Lease => sim.renew_lease(i).await,
                            Heartbeat::Status => sim.heartbeat_status(i).await,
                        };
                        if let Err(e) = result {
                            tracing::warn!(node = i, ?kind, error = %e, "heartbeat failed");
                        }
                    }
                })
                .await;
        }
    }

    /// A status heartbeat; a node deleted behind our back registers again, as a kubelet does.
    async fn heartbeat_status(&self, index: usize) -> Result<(), kube::Error> {
        match self.post_status(index).await {
            Err(e) if is_status(&e, 404) => match self.register(index).await {
                Err(SimError::Register { source, .. }) => Err(source),
                _ => Ok(()),
            },
            r => r,
        }
    }

    /// Follows our nodes for their pod CIDR (then starts the pods that waited for it) and posts the status
    /// of a node seen not Ready at once (recovery after the simulator was down).
    async fn watch_nodes(self: Arc<Self>) {
        let config = watcher::Config::default().labels(&format!("{SIMULATED_LABEL}=true"));
        let mut events = std::pin::pin!(watcher(self.nodes.clone(), config).default_backoff());
        while let Some(event) = events.next().await {
            let node = match event {
                Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => node,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "node watch failed");
                    continue;
                }
            };
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let Some(index) = node_index(&self.options.name_prefix, self.options.count, name) else {
                continue;
            };
            self.node_changed(index, &node);
        }
    }

    fn node_changed(self: &Arc<Self>, index: usize, node: &Node) {
        let ready = ready_condition(node).is_some_and(|c| c.status == "True");
        let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref());
        let mut state = self.state.lock();
        let ns = &mut state.nodes[index];
        if ns.uid.is_some() && ns.uid != node.metadata.uid {
            // Deleted and registered again: its pods went with the old node.
            *ns = NodeState::default();
        }
        ns.uid = node.metadata.uid.clone();
        if !ready && !ns.status_pending {
            ns.status_pending = true;
            ns.ready_since = None;
            let sim = self.clone();
            tokio::spawn(async move {
                if let Err(e) = sim.post_status(index).await {
                    tracing::warn!(node = index, error = %e, "posting node status failed");
                }
                sim.state.lock().nodes[index].status_pending = false;
            });
        }
        if ns.pool.is_none() {
            match cidr.map(Cidr::parse) {
                Some(Ok(cidr)) => ns.pool = Some(IpPool::new(cidr)),
                Some(Err(e)) => tracing::warn!(node = index, error = %e, "unusable pod CIDR"),
                None => {}
            }
            if ns.pool.is_some() {
                let waiting: Vec<Pod> = ns.waiting.drain().map(|(_, p)| p).collect();
                drop(state);
                for pod in waiting {
                    self.pod_changed(index, pod);
                }
            }
        }
    }

    /// ONE watch on all pods; only pods bound to our nodes are acted on.
    async fn watch_pods(self: Arc<Self>) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let mut events = std::pin::pin!(watcher(pods, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => self.state.lock().relisting = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let Some(seen) = self.state.lock().relisting.as_mut() {
                        seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                    }
                    self.pod_event(pod);
                }
                Ok(watcher::Event::InitDone) => self.relist_done(),
                Ok(watcher::Event::Apply(pod)) => self.pod_event(pod),
                Ok(watcher::Event::Delete(pod)) => self.pod_gone(&pod),
                Err(e) => tracing::warn!(error = %e, "pod watch failed"),
            }
        }
    }

    fn our_node(&self, pod: &Pod) -> Option<usize> {
        let name = pod.spec.as_ref()?.node_name.as_deref()?;
        node_index(&self.options.name_prefix, self.options.count, name)
    }

    fn pod_event(self: &Arc<Self>, pod: Pod) {
        if let Some(index) = self.our_node(&pod) {
            self.pod_changed(index, pod);
        }
    }

    /// Pods deleted while the watch was down: forget them and free their addresses.
    fn relist_done(&self) {
        let mut state = self.state.lock();
        let Some(seen) = state.relisting.take() else {
            return;
        };
        for node in &mut state.nodes {
            let gone: Vec<String> = node
                .pods
                .keys()
                .filter(|uid| !seen.contains(*uid))
                .cloned()
                .collect();
            for uid in gone {
                if let (Some(ip), Some(pool)) =
                    (node.pods.remove(&uid).and_then(|r| r.ip), node.pool.as_mut())
                {
                    pool.release(ip);
                }
            }
            node.waiting.retain(|uid, _| seen.contains(uid));
        }
    }

    fn pod_gone(&self, pod: &Pod) {
        let Some(index) = self.our_node(pod) else { return };
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let mut state = self.state.lock();
        let node = &mut state.nodes[index];
        node.waiting.remove(uid);
        if let (Some(ip), Some(pool)) = (node.pods.remove(uid).and_then(|r| r.ip), node.pool.as_mut()) {
            pool.release(ip);
        }
    }

    /// Decides under the lock (address allocation must not race), then sends the request in a task.
    fn pod_changed(self: &Arc<Self>, index: usize, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let action = next_action(&pod);
        let mut state = self.state.lock();
        let node = &mut state.nodes[index];
        match action {
            PodAction::Delete => {
                let record = node.pods.entry(uid.clone()).or_insert(PodRecord {
                    ip: None,
                    started: false,
                    deleting: false,
                });
                if record.deleting {
                    return;
                }
                record.deleting = true;
                node.waiting.remove(&uid);
                drop(state);
                let sim = self.clone();
                tokio::spawn(async move { sim.delete_pod(index, pod).await });
            }
            PodAction::None | PodAction::Start => {
                let Some(pool) = node.pool.as_mut() else {
                    node.waiting.insert(uid, pod);
                    return;
                };
                let record = match node.pods.entry(uid.clone()) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        // An address the pod already reports (from before a restart) stays its own.
                        let ip = pod_ip(&pod).filter(|ip| pool.allocate(*ip).is_ok());
                        e.insert(PodRecord {
                            ip,
                            started: action == PodAction::None,
                            deleting: false,
                        })
                    }
                };
                if action == PodAction::None || record.started || record.deleting {
                    return;
                }
                let ip = match record.ip {
                    Some(ip) => ip,
                    None => match pool.allocate_next() {
                        Ok(ip) => *record.ip.insert(ip),
                        Err(e) => {
                            tracing::warn!(node = index, error = %e, "no address for pod");
                            return;
                        }
                    },
                };
                record.started = true;
                drop(state);
                let sim = self.clone();
                tokio::spawn(async move { sim.start_pod(index, pod, ip).await });
            }
        }
    }

    async fn start_pod(&self, index: usize, pod: Pod, ip: Ipv4Addr) {
        let (ns, name) = pod_key(&pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let status = running_status(&pod, node_ip(index), ip, &now());
        let patch = Patch::Strategic(json!({ "status": status }));
        let params = patch_params();
        let result = self.request(|| api.patch_status(&name, &params, &patch)).await;
        match result {
            Ok(_) => tracing::debug!(pod = %format!("{ns}/{name}"), %ip, "pod running"),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "reporting pod running failed");
                // Let the next event of this pod try again.
                let uid = pod.metadata.uid.unwrap_or_default();
                if let Some(r) = self.state.lock().nodes[index].pods.get_mut(&uid) {
                    r.started = false;
                }
            }
        }
    }

    /// The containers "stop" at once, so the pod is removed for good (grace period 0), guarded by its uid
    /// so a new pod of the same name is never hit. Its address is freed when the watch reports it gone.
    async fn delete_pod(&self, index: usize, pod: Pod) {
        let (ns, name) = pod_key(&pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.request(|| api.delete(&name, &params)).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting pod failed");
                let uid = pod.metadata.uid.unwrap_or_default();
                if let Some(r) = self.state.lock().nodes[index].pods.get_mut(&uid) {
                    r.deleting = false;
                }
            }
        }
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn pod_key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}
