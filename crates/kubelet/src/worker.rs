//! One pod's worker: a loop that owns everything the node does for the pod — sandbox and network, volumes
//! and `/etc` files, image pulls, init containers in order, containers with restarts and back-off, probes,
//! graceful termination — and reports the pod's status when it changes.
//!
//! Each pass of [`Worker::sync`] first re-reads the runtime's view of the pod's containers (the kubelet's
//! PLEG relist), then acts on the difference between the spec and that view. Passes run when the pod
//! changes, right after an action, and once a second otherwise. The Kubernetes rules it follows live in
//! the pure modules: [`crate::status`], [`crate::backoff`], [`crate::env`], [`crate::volumes`],
//! [`crate::probe`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectReference, Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use rkube_controllers::events::Event;
use rkube_network::{PodNetRequest, PortMapping};
use rkube_oci::ImageRecord;
use rkube_oci::image_config::{ImageConfig, resolve_command};
use rkube_oci::policy::{PullDecision, PullPolicy, decide};
use rkube_oci::runtime::{
    BindMount, ContainerConfig, ContainerInfo, ContainerState, ProcessSpec, Resources, Sandbox, Signal,
};
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::env::{self, EnvSources};
use crate::pods::{Ctx, PodContainers};
use crate::probe::{self, ProbeKind, ProbeTracker};
use crate::status::{self, ContainerView, Current, PodView, Termination};
use crate::volumes::{self, FileSources, PlannedVolume, TokenSpec};
use crate::{ContainerRef, resources};

/// Container labels: who a container belongs to, so a restarted agent can adopt it.
pub const LABEL_POD_UID: &str = rkube_oci::runtime::POD_UID_LABEL;
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const LABEL_ATTEMPT: &str = "io.kubernetes.container.restartCount";
pub const LABEL_IMAGE: &str = "rkube.io/image";
pub const LABEL_IMAGE_ID: &str = "rkube.io/image-id";

/// How often a pod is re-synced without an outside change (the kubelet's PLEG relist period).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// How often files volumes (configMap, secret, downwardAPI, projected) are rewritten from the API.
const VOLUME_REFRESH_PERIOD: Duration = Duration::from_secs(60);
/// Default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: i64 = 30;
/// Grace for a pod force-deleted from the API (it is gone: finish quickly).
const FORCED_GRACE: Duration = Duration::from_secs(2);

/// What the worker remembers on disk next to the pod's volumes (`<pods>/<uid>/state.json`): enough to
/// adopt the pod after an agent restart without calling CNI ADD again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub pod_ips: Vec<String>,
    pub port_mappings: Vec<PortMapping>,
}

/// One attempt of a container.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    attempt: i32,
    log_path: PathBuf,
    state: ContainerState,
}

impl Instance {
    fn termination(&self, message: Option<String>) -> Option<Termination> {
        match &self.state {
            ContainerState::Exited {
                exit_code,
                started_at,
                finished_at,
                oom_killed,
                ..
            } => Some(Termination {
                container_id: self.id.clone(),
                exit_code: *exit_code,
                oom_killed: *oom_killed,
                started_at: Some(time(*started_at)),
                finished_at: Some(time(*finished_at)),
                reason: None,
                message,
            }),
            ContainerState::Unknown => Some(Termination {
                container_id: self.id.clone(),
                exit_code: 255,
                oom_killed: false,
                started_at: None,
                finished_at: None,
                reason: Some("Unknown".into()),
                message,
            }),
            _ => None,
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    fn exited(&self) -> bool {
        matches!(
            self.state,
            ContainerState::Exited { .. } | ContainerState::Unknown
        )
    }
}

/// The worker's knowledge of one container of the spec.
#[derive(Debug, Default)]
struct Slot {
    init: bool,
    current: Option<Instance>,
    previous: Option<Instance>,
    /// Why no attempt is running right now (pull errors, back-off, config errors).
    waiting: Option<(String, Option<String>)>,
    image: String,
    image_id: String,
    startup: Option<ProbeTracker>,
    liveness: Option<ProbeTracker>,
    readiness: Option<ProbeTracker>,
    /// The id of the instance the probes were set up for.
    probed: Option<String>,
    ready: bool,
    started: bool,
}

/// Whether the loop goes on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// The pod is gone from the API and from the node.
    Done,
}

pub(crate) struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    pod: Pod,
    /// The pod was removed from the API (or the watch says so).
    gone: bool,
    sandbox: Option<Sandbox>,
    network_ready: bool,
    state: PodState,
    volumes: Vec<PlannedVolume>,
    prepared: bool,
    /// When the files volumes were last written.
    volumes_written: Instant,
    /// Service account tokens of the pod's projected volumes: (token, expiry in Unix seconds), reused until
    /// [`volumes::token_needs_refresh`].
    tokens: BTreeMap<TokenSpec, (String, i64)>,
    slots: BTreeMap<String, Slot>,
    crash_backoff: Backoff<String>,
    pull_backoff: Backoff<String>,
    pull_failed_at: HashMap<String, Instant>,
    /// When creating or starting a container last failed (retried with the crash back-off).
    start_failed_at: HashMap<String, Instant>,
    reported: Option<PodStatus>,
    /// The pod reached Succeeded/Failed and its sandbox was torn down.
    finished: bool,
    failed_reason: Option<(String, String)>,
    /// Set while the pod's containers are being stopped for its deletion.
    terminating: bool,
    /// `(ready, started)` the API showed for adopted running containers, by container id.
    adopted_probes: HashMap<String, (bool, bool)>,
    /// A pod-level problem shown on the containers while they cannot be created (volumes, sandbox).
    pod_error: Option<(String, String)>,
}

fn time(t: DateTime<Utc>) -> Time {
    let ts = k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    Time(ts)
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// A fresh container id in the runtime's alphabet (64 hex digits, like containerd's).
fn new_container_id() -> String {
    format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>())
}

/// Whether a container that exited with `exit_code` is started again (init containers never restart on
/// success, and restart on failure unless the policy is Never).
pub fn should_restart(policy: &str, init: bool, exit_code: i32) -> bool {
    match (policy, init) {
        (_, true) => exit_code != 0 && policy != "Never",
        ("Never", false) => false,
        ("OnFailure", false) => exit_code != 0,
        _ => true,
    }
}

/// The container's user and group: the security context's, else the image's `USER` (numeric, or a name
/// looked up in the image's `/etc/passwd` and `/etc/group`).
pub fn resolve_user(
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    image_user: &str,
    passwd: &str,
    group: &str,
) -> (u32, u32) {
    let (user, grp) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let lookup = |table: &str, name: &str, field: usize| -> Option<u32> {
        table.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name))
                .then(|| f.get(field)?.parse().ok())
                .flatten()
        })
    };
    let mut uid = 0;
    let mut gid = 0;
    if !user.is_empty() {
        if let Ok(n) = user.parse() {
            uid = n;
        } else if let Some(n) = lookup(passwd, user, 2) {
            uid = n;
            gid = lookup(passwd, user, 3).unwrap_or(0);
        }
    }
    if let Some(g) = grp.filter(|g| !g.is_empty()) {
        gid = g.parse().ok().or_else(|| lookup(group, g, 2)).unwrap_or(gid);
    }
    if let Some(u) = run_as_user {
        uid = u as u32;
    }
    if let Some(g) = run_as_group {
        gid = g as u32;
    }
    (uid, gid)
}

/// The pod's `/etc/hosts` (the kubelet's managed hosts file).
pub fn hosts_file(pod: &Pod, pod_ips: &[String], hostname: &str, cluster_domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    for ip in pod_ips {
        match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => out.push_str(&format!(
                "{ip}\t{hostname}.{sub}.{namespace}.svc.{cluster_domain}\t{hostname}\n"
            )),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.unwrap_or_default().join("\t")
            ));
        }
    }
    out
}

/// The pod's hostname: `spec.hostname`, else its name (cut to 63 characters).
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// `hostPort` mappings of all containers.
pub fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
            Some(PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

impl Worker {
    /// A worker for `pod`, adopting `existing` containers of a previous agent run.
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        pod: Pod,
        existing: Vec<ContainerInfo>,
        sandbox: Option<Sandbox>,
    ) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let state_path = ctx.pod_dir(&uid).join("state.json");
        let saved: Option<PodState> = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut w = Worker {
            ctx,
            uid,
            gone: false,
            sandbox: None,
            network_ready: false,
            state: PodState {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                ..Default::default()
            },
            volumes: Vec::new(),
            prepared: false,
            volumes_written: Instant::now(),
            tokens: BTreeMap::new(),
            slots: BTreeMap::new(),
            crash_backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            pull_failed_at: HashMap::new(),
            start_failed_at: HashMap::new(),
            reported: pod.status.clone(),
            finished: false,
            failed_reason: None,
            terminating: false,
            adopted_probes: HashMap::new(),
            pod_error: None,
            pod,
        };
        let spec = w.pod.spec.clone().unwrap_or_default();
        for c in spec.init_containers.iter().flatten() {
            w.slots.insert(
                c.name.clone(),
                Slot {
                    init: true,
                    image: c.image.clone().unwrap_or_default(),
                    ..Default::default()
                },
            );
        }
        for c in &spec.containers {
            w.slots.insert(
                c.name.clone(),
                Slot {
                    image: c.image.clone().unwrap_or_default(),
                    ..Default::default()
                },
            );
        }
        w.adopt(existing, sandbox, saved);
        w
    }

    /// Takes over containers of a previous agent run: per container name the highest attempt is current,
    /// the one before it previous; older ones are removed.
    fn adopt(&mut self, existing: Vec<ContainerInfo>, sandbox: Option<Sandbox>, saved: Option<PodState>) {
        let mut by_name: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
        for c in existing {
            let name = c.labels.get(LABEL_CONTAINER_NAME).cloned().unwrap_or_default();
            by_name.entry(name).or_default().push(c);
        }
        for (name, mut infos) in by_name {
            let Some(slot) = self.slots.get_mut(&name) else {
                for c in infos {
                    self.ctx.remove_container_later(c.id);
                }
                continue;
            };
            infos.sort_by_key(attempt_of);
            let to_instance = |c: &ContainerInfo| Instance {
                id: c.id.clone(),
                attempt: attempt_of(c),
                log_path: c.log_path.clone(),
                state: c.state.clone(),
            };
            if let Some(cur) = infos.pop() {
                slot.image = cur.labels.get(LABEL_IMAGE).cloned().unwrap_or(slot.image.clone());
                slot.image_id = cur.labels.get(LABEL_IMAGE_ID).cloned().unwrap_or_default();
                slot.current = Some(to_instance(&cur));
            }
            if let Some(prev) = infos.pop() {
                slot.previous = Some(to_instance(&prev));
            }
            for old in infos {
                self.ctx.remove_container_later(old.id);
            }
            tracing::info!(pod = %self.state.name, container = %name, "adopted container");
        }
        for cs in self
            .pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            if let Some(id) = cs.container_id.as_deref().and_then(|i| i.strip_prefix("runc://")) {
                self.adopted_probes
                    .insert(id.to_string(), (cs.ready, cs.started.unwrap_or(false)));
            }
        }
        // The sandbox is kept even without saved state, so that termination removes it; its network is
        // only trusted when the saved state says the ADD finished.
        self.sandbox = sandbox.map(|s| self.effective_sandbox(s));
        if let (Some(_), Some(saved)) = (&self.sandbox, saved)
            && !saved.pod_ips.is_empty()
        {
            self.state = saved;
            self.network_ready = true;
        }
    }

    fn host_network(&self) -> bool {
        self.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
    }

    /// A `hostNetwork` pod's containers join the agent's own network namespace (the node's) instead of
    /// the sandbox's; IPC and UTS stay the sandbox's.
    fn effective_sandbox(&self, mut sandbox: Sandbox) -> Sandbox {
        if self.host_network() {
            sandbox.netns = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        }
        sandbox
    }

    pub(crate) fn update(&mut self, pod: Option<Pod>) {
        match pod {
            Some(p) => self.pod = p,
            None => self.gone = true,
        }
    }

    fn policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn spec_container(&self, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .find(|c| c.name == name)
            .cloned()
    }

    fn object_ref(&self, container: Option<(&str, bool)>) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: self.pod.metadata.name.clone(),
            namespace: self.pod.metadata.namespace.clone(),
            uid: self.pod.metadata.uid.clone(),
            resource_version: self.pod.metadata.resource_version.clone(),
            field_path: container.map(|(name, init)| {
                if init {
                    format!("spec.initContainers{{{name}}}")
                } else {
                    format!("spec.containers{{{name}}}")
                }
            }),
        }
    }

    /// Records an event in the background: events never hold up a pod.
    fn event(&self, container: Option<&str>, event: Event) {
        let init = container.is_some_and(|c| self.slots.get(c).is_some_and(|s| s.init));
        let reference = self.object_ref(container.map(|c| (c, init)));
        let recorder = self.ctx.events.clone();
        tokio::spawn(async move { recorder.record(&reference, &event).await });
    }

    fn grace(&self) -> Duration {
        if self.gone {
            return FORCED_GRACE;
        }
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref()?.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE);
        Duration::from_secs(secs.max(0) as u64)
    }

    /// One pass. Returns whether the worker goes on.
    pub(crate) async fn sync(&mut self) -> Flow {
        self.relist().await;
        if self.gone || self.pod.metadata.deletion_timestamp.is_some() {
            self.terminate().await;
            return Flow::Done;
        }
        let api_phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !self.finished && matches!(api_phase, Some("Succeeded" | "Failed")) {
            // A pod that finished stays finished (also across agent restarts): release what it holds.
            self.finish().await;
        }
        if !self.finished {
            self.check_deadline().await;
            if self.failed_reason.is_none() {
                self.run().await;
            }
            let view = self.view();
            let phase = status::phase(&self.pod, &view);
            if (phase == "Succeeded" || phase == "Failed") && !self.any_running() {
                self.finish().await;
            }
        }
        self.report().await;
        self.publish();
        Flow::Continue
    }

    /// The time until the next pass should run at the latest.
    pub(crate) fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        let mut wake = RELIST_PERIOD;
        for slot in self.slots.values() {
            for t in [&slot.startup, &slot.liveness, &slot.readiness]
                .into_iter()
                .flatten()
            {
                wake = wake.min(t.next_run().saturating_duration_since(now));
            }
        }
        wake.max(Duration::from_millis(50))
    }

    fn any_running(&self) -> bool {
        self.slots
            .values()
            .any(|s| s.current.as_ref().is_some_and(|c| !c.exited()))
    }

    /// Re-reads the state of every current container from the runtime.
    async fn relist(&mut self) {
        let ids: Vec<String> = self
            .slots
            .values()
            .filter_map(|s| s.current.as_ref())
            .filter(|c| !c.exited())
            .map(|c| c.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let runtime = self.ctx.runtime.clone();
        let states = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .map(|id| {
                    let state = runtime.container_state(&id).unwrap_or(ContainerState::Unknown);
                    (id, state)
                })
                .collect::<HashMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        for slot in self.slots.values_mut() {
            if let Some(cur) = slot.current.as_mut()
                && let Some(state) = states.get(&cur.id)
            {
                cur.state = state.clone();
            }
        }
    }

    async fn check_deadline(&mut self) {
        let Some(deadline) = self.pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else {
            return;
        };
        let Some(start) = self.pod.status.as_ref().and_then(|s| s.start_time.clone()) else {
            return;
        };
        let elapsed = k8s_openapi::jiff::Timestamp::now().as_second() - start.0.as_second();
        if elapsed >= deadline {
            let message = "Pod was active on the node longer than the specified deadline";
            self.event(None, Event::normal("DeadlineExceeded", message));
            self.failed_reason = Some(("DeadlineExceeded".into(), message.into()));
            self.stop_all(self.grace()).await;
        }
    }

    /// Sets up the sandbox and runs the containers that should run.
    async fn run(&mut self) {
        // A pod's first start (sandbox, network, volumes, create, start) is CPU work on the node: a burst of
        // new pods gets through it a few at a time, so each is Running sooner instead of all at the burst's
        // end. Pods that must pull first do not queue (pulls wait on the network, not on the cores).
        let _start_slot = if self.first_start() && self.images_present() {
            self.ctx.start_slots.clone().acquire_owned().await.ok()
        } else {
            None
        };
        if let Err((reason, message)) = self.ensure_sandbox().await {
            self.pod_error = Some((reason, message));
            return;
        }
        if let Err(message) = self.prepare().await {
            self.event(None, Event::warning("FailedMount", message.clone()));
            self.pod_error = Some(("ContainerCreating".into(), message));
            return;
        }
        self.pod_error = None;
        self.refresh_volumes().await;
        if !self.run_init_containers().await {
            return;
        }
        let names: Vec<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect();
        for name in names {
            self.run_container(&name).await;
        }
        self.run_probes().await;
    }

    /// Nothing of the pod was started yet (a new pod, not an adopted or restarting one).
    fn first_start(&self) -> bool {
        self.slots.values().all(|s| s.current.is_none())
    }

    /// Every image the pod's containers need is in the store and may be used without pulling.
    fn images_present(&self) -> bool {
        let Some(spec) = self.pod.spec.as_ref() else {
            return true;
        };
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .all(|c| {
                let image = c.image.as_deref().unwrap_or_default();
                let present = matches!(self.ctx.images.find_image(image), Ok(Some(_)));
                let policy = c.image_pull_policy.as_deref().and_then(PullPolicy::parse);
                present && matches!(decide(policy, image, present), PullDecision::UseLocal)
            })
    }

    /// Creates the sandbox and attaches it to the pod network (once).
    async fn ensure_sandbox(&mut self) -> Result<(), (String, String)> {
        if self.sandbox.is_some() && self.network_ready {
            return Ok(());
        }
        let runtime = self.ctx.runtime.clone();
        let uid = self.uid.clone();
        let hostname = pod_hostname(&self.pod);
        let t0 = Instant::now();
        let sandbox = tokio::task::spawn_blocking(move || runtime.create_sandbox(&uid, &hostname))
            .await
            .map_err(|e| ("ContainerCreating".to_string(), e.to_string()))?
            .map_err(|e| {
                let message = format!("Failed to create pod sandbox: {e}");
                self.event(None, Event::warning("FailedCreatePodSandBox", message.clone()));
                ("ContainerCreating".to_string(), message)
            })?;
        if self.host_network() {
            self.sandbox = Some(self.effective_sandbox(sandbox));
            self.state.pod_ips = vec![self.ctx.node_ip.to_string()];
            self.network_ready = true;
            self.save_state();
            return Ok(());
        }
        let mappings = port_mappings(&self.pod);
        let request = PodNetRequest {
            sandbox_id: self.uid.clone(),
            netns: sandbox.netns.clone(),
            pod_namespace: self.state.namespace.clone(),
            pod_name: self.state.name.clone(),
            pod_uid: self.uid.clone(),
            port_mappings: mappings.clone(),
        };
        self.sandbox = Some(sandbox);
        let t1 = Instant::now();
        let added = self.ctx.network.add(&request).await;
        tracing::debug!(pod = %self.state.name, sandbox_ms = (t1 - t0).as_millis() as u64,
            network_ms = t1.elapsed().as_millis() as u64, "sandbox ready");
        match added {
            Ok(net) => {
                self.state.pod_ips = net.ips.iter().map(IpAddr::to_string).collect();
                self.state.port_mappings = mappings;
                self.network_ready = true;
                self.save_state();
                Ok(())
            }
            Err(e) => {
                // Half an attachment must not hold the IP: release before the next try.
                if let Err(e) = self.ctx.network.del(&request).await {
                    tracing::warn!(pod = %self.state.name, error = %e, "CNI DEL after a failed ADD");
                }
                let message = format!("Failed to create pod sandbox: failed to set up pod network: {e}");
                self.event(None, Event::warning("FailedCreatePodSandBox", message.clone()));
                Err(("ContainerCreating".into(), message))
            }
        }
    }

    fn save_state(&self) {
        let dir = self.ctx.pod_dir(&self.uid);
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        let json = serde_json::to_vec(&self.state).expect("pod state serializes");
        if let Err(e) = std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot save pod state");
        }
    }

    /// The ConfigMaps and Secrets the pod refers to that exist.
    async fn fetch_references(&self) -> (BTreeMap<String, ConfigMap>, BTreeMap<String, Secret>) {
        let (cm_names, secret_names) = env::references(&self.pod);
        let ns = &self.state.namespace;
        let mut out_cms = BTreeMap::new();
        let mut out_secrets = BTreeMap::new();
        for name in cm_names {
            if let Some(cm) = self.ctx.config_map(ns, &name).await {
                out_cms.insert(name, cm);
            }
        }
        for name in secret_names {
            if let Some(s) = self.ctx.secret(ns, &name).await {
                out_secrets.insert(name, s);
            }
        }
        (out_cms, out_secrets)
    }

    /// Requests the tokens the pod's `serviceAccountToken` projections need that are missing or due for
    /// refresh (a TokenRequest bound to the pod, as the kubelet's token manager). A failed request keeps the
    /// old token while it lasts; one never obtained fails the volume, so the pod waits and retries.
    async fn refresh_tokens(&mut self) {
        use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let wanted = volumes::token_specs(&self.pod);
        self.tokens.retain(|spec, _| wanted.contains(spec));
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let sa = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), &self.state.namespace);
        for spec in wanted {
            let due = self.tokens.get(&spec).is_none_or(|(_, expires)| {
                volumes::token_needs_refresh(*expires, spec.expiration_seconds, now)
            });
            if !due {
                continue;
            }
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: spec.audience.iter().cloned().collect(),
                    expiration_seconds: Some(spec.expiration_seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(self.state.name.clone()),
                        uid: Some(self.uid.clone()),
                    }),
                },
                ..Default::default()
            };
            match api
                .create_subresource::<_, TokenRequest>("token", &sa, &PostParams::default(), &request)
                .await
            {
                Ok(TokenRequest {
                    status: Some(status), ..
                }) => {
                    let expires = status.expiration_timestamp.0.as_second();
                    self.tokens.insert(spec, (status.token, expires));
                }
                Ok(_) => tracing::debug!(pod = %self.state.name, "TokenRequest answered without a token"),
                Err(e) => {
                    tracing::debug!(pod = %self.state.name, account = %sa, error = %e, "TokenRequest failed")
                }
            }
        }
        // A token past its expiry is worse than none: the volume waits for a fresh one.
        self.tokens.retain(|_, (_, expires)| *expires > now);
    }

    /// Volumes and the `/etc` files (once per pod; files volumes are refreshed on every container start).
    async fn prepare(&mut self) -> Result<(), String> {
        if self.prepared {
            return Ok(());
        }
        let pod_dir = self.ctx.pod_dir(&self.uid);
        self.volumes = volumes::plan(&self.pod, &pod_dir).map_err(|e| e.to_string())?;
        self.write_volumes().await?;
        let etc = pod_dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
        let hostname = pod_hostname(&self.pod);
        let hosts = hosts_file(
            &self.pod,
            &self.state.pod_ips,
            &hostname,
            &self.ctx.cluster_domain,
        );
        let resolv = rkube_dns::resolv_conf(
            &self.pod,
            &self.ctx.cluster_dns,
            &self.ctx.cluster_domain,
            &self.ctx.host_resolv_conf,
        );
        for (name, content) in [
            ("hosts", hosts),
            ("hostname", format!("{hostname}\n")),
            ("resolv.conf", resolv),
        ] {
            std::fs::write(etc.join(name), content).map_err(|e| e.to_string())?;
        }
        self.prepared = true;
        self.volumes_written = Instant::now();
        Ok(())
    }

    /// Rewrites configMap, secret, downwardAPI and projected volumes now and then, so running containers
    /// see updates (as the kubelet's periodic volume sync does; `subPath` mounts keep the old file).
    async fn refresh_volumes(&mut self) {
        if self.volumes_written.elapsed() < VOLUME_REFRESH_PERIOD
            || !self.volumes.iter().any(|v| v.kind == volumes::VolumeKind::Files)
        {
            return;
        }
        self.volumes_written = Instant::now();
        if let Err(message) = self.write_volumes().await {
            tracing::debug!(pod = %self.state.name, %message, "volume refresh failed");
        }
    }

    async fn write_volumes(&mut self) -> Result<(), String> {
        let (cms, secrets) = self.fetch_references().await;
        self.refresh_tokens().await;
        let tokens: BTreeMap<TokenSpec, String> = self
            .tokens
            .iter()
            .map(|(spec, (token, _))| (spec.clone(), token.clone()))
            .collect();
        let spec_volumes = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let src = FileSources {
            config_maps: &cms,
            secrets: &secrets,
            tokens: &tokens,
            host_ip: &self.ctx.node_ip.to_string(),
            pod_ips: &self.state.pod_ips,
        };
        let mut work = Vec::new();
        for planned in &self.volumes {
            let spec = spec_volumes
                .iter()
                .find(|v| v.name == planned.name)
                .ok_or("volume vanished")?;
            let files = volumes::files(&self.pod, spec, &src)
                .map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", planned.name))?;
            work.push((planned.clone(), files));
        }
        tokio::task::spawn_blocking(move || {
            for (v, files) in work {
                volumes::materialize(&v, &files)
                    .map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Runs init containers one after the other; true once all succeeded.
    async fn run_init_containers(&mut self) -> bool {
        let names: Vec<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().map(|c| c.name.clone()))
            .collect();
        for name in names {
            let slot = &self.slots[&name];
            match slot.current.as_ref().map(|c| &c.state) {
                Some(ContainerState::Exited { exit_code: 0, .. }) => continue,
                Some(ContainerState::Running { .. }) | Some(ContainerState::Created) => return false,
                _ => {
                    self.run_container(&name).await;
                    return false;
                }
            }
        }
        true
    }

    /// Starts the container `name` when it has no attempt, or restarts it per policy and back-off.
    async fn run_container(&mut self, name: &str) {
        let policy = self.policy();
        let slot = self.slots.get(name).expect("slot per spec container");
        let init = slot.init;
        let (attempt, failed_at) = match &slot.current {
            None => (0, None),
            Some(cur) => match &cur.state {
                ContainerState::Running { .. } => return,
                ContainerState::Created => {
                    // Created but never started (the agent stopped in between): start it now.
                    let runtime = self.ctx.runtime.clone();
                    let id = cur.id.clone();
                    let _ = tokio::task::spawn_blocking(move || runtime.start_container(&id)).await;
                    return;
                }
                ContainerState::Exited {
                    exit_code,
                    finished_at,
                    ..
                } => {
                    if !should_restart(&policy, init, *exit_code) {
                        return;
                    }
                    (cur.attempt + 1, Some(*finished_at))
                }
                ContainerState::Unknown => (cur.attempt + 1, Some(Utc::now())),
            },
        };
        if let Some(finished_at) = failed_at {
            let ago = (Utc::now() - finished_at).to_std().unwrap_or_default();
            let now = Instant::now();
            let failed_instant = now.checked_sub(ago).unwrap_or(now);
            let key = name.to_string();
            if let Some(_wait) = self.crash_backoff.remaining(&key, failed_instant, now) {
                let delay = self.crash_backoff.delay(&key).unwrap_or_default().as_secs();
                let message = format!(
                    "back-off {delay}s restarting failed container={name} pod={}_{}({})",
                    self.state.name, self.state.namespace, self.uid
                );
                let slot = self.slots.get_mut(name).expect("slot");
                if slot.waiting.as_ref().map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                    self.event(
                        Some(name),
                        Event::warning(
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {name} in pod {}_{}({})",
                                self.state.name, self.state.namespace, self.uid
                            ),
                        ),
                    );
                }
                let slot = self.slots.get_mut(name).expect("slot");
                slot.waiting = Some(("CrashLoopBackOff".into(), Some(message)));
                return;
            }
            self.crash_backoff.next(&key, now);
        }
        let key = name.to_string();
        if let Some(failed_at) = self.start_failed_at.get(&key)
            && self
                .crash_backoff
                .remaining(&key, *failed_at, Instant::now())
                .is_some()
        {
            return;
        }
        self.start(name, attempt).await;
    }

    /// Creating or starting failed: retry after the container's back-off, like a crash.
    fn start_failed(&mut self, name: &str) {
        let now = Instant::now();
        self.crash_backoff.next(&name.to_string(), now);
        self.start_failed_at.insert(name.to_string(), now);
    }

    /// Makes sure the image of `container` is in the store, honouring its pull policy and back-off.
    async fn ensure_image(&mut self, container: &Container) -> Result<ImageRecord, (String, String)> {
        let image = container.image.clone().unwrap_or_default();
        let name = container.name.clone();
        let present = self
            .ctx
            .images
            .find_image(&image)
            .map_err(|e| ("InvalidImageName".to_string(), e.to_string()))?;
        let policy = container.image_pull_policy.as_deref().and_then(PullPolicy::parse);
        match decide(policy, &image, present.is_some()) {
            PullDecision::UseLocal => {
                let record = present.expect("UseLocal means present");
                if self.slots[&name].current.is_none() {
                    self.event(
                        Some(&name),
                        Event::normal(
                            "Pulled",
                            format!("Container image \"{image}\" already present on machine"),
                        ),
                    );
                }
                return Ok(record);
            }
            PullDecision::ErrImageNeverPull => {
                let message = format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(Some(&name), Event::warning("ErrImageNeverPull", message.clone()));
                return Err(("ErrImageNeverPull".into(), message));
            }
            PullDecision::Pull => {}
        }
        let key = format!("{name}/{image}");
        let now = Instant::now();
        if let Some(failed_at) = self.pull_failed_at.get(&key)
            && self.pull_backoff.remaining(&key, *failed_at, now).is_some()
        {
            let message = format!("Back-off pulling image \"{image}\"");
            if self.slots[&name].waiting.as_ref().map(|w| w.0.as_str()) != Some("ImagePullBackOff") {
                self.event(Some(&name), Event::normal("BackOff", message.clone()));
            }
            return Err(("ImagePullBackOff".into(), message));
        }
        self.event(
            Some(&name),
            Event::normal("Pulling", format!("Pulling image \"{image}\"")),
        );
        let started = Instant::now();
        let result = self.ctx.pull(&image, &self.pull_secrets(&image).await).await;
        match result {
            Ok(record) => {
                self.pull_backoff.forget(&key);
                self.pull_failed_at.remove(&key);
                self.event(
                    Some(&name),
                    Event::normal(
                        "Pulled",
                        format!(
                            "Successfully pulled image \"{image}\" in {:.3}s. Image size: {} bytes.",
                            started.elapsed().as_secs_f64(),
                            record.size
                        ),
                    ),
                );
                Ok(record)
            }
            Err(e) => {
                self.pull_backoff.next(&key, Instant::now());
                self.pull_failed_at.insert(key, Instant::now());
                let message = format!("Failed to pull image \"{image}\": {e}");
                self.event(Some(&name), Event::warning("Failed", message.clone()));
                self.event(Some(&name), Event::warning("Failed", "Error: ErrImagePull"));
                Err(("ErrImagePull".into(), message))
            }
        }
    }

    /// Registry credentials from the pod's `imagePullSecrets` for `image`'s registry.
    async fn pull_secrets(&self, image: &str) -> rkube_oci::pull::RegistryAuth {
        use rkube_oci::pull::RegistryAuth;
        let names: Vec<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten().map(|r| r.name.clone()))
            .collect();
        if names.is_empty() {
            return RegistryAuth::Anonymous;
        }
        let Ok(reference) = rkube_oci::pull::parse_reference(image) else {
            return RegistryAuth::Anonymous;
        };
        let registry = reference.resolve_registry().to_string();
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.state.namespace);
        for name in names {
            let Ok(Some(secret)) = api.get_opt(&name).await else {
                continue;
            };
            for key in [".dockerconfigjson", ".dockercfg"] {
                if let Some(data) = secret.data.as_ref().and_then(|d| d.get(key))
                    && let Ok(Some(auth)) = rkube_oci::credentials::from_docker_config(&data.0, &registry)
                {
                    return auth;
                }
            }
        }
        RegistryAuth::Anonymous
    }

    /// Pulls, creates and starts attempt `attempt` of container `name`.
    async fn start(&mut self, name: &str, attempt: i32) {
        let Some(container) = self.spec_container(name) else {
            return;
        };
        let record = match self.ensure_image(&container).await {
            Ok(r) => r,
            Err(waiting) => {
                self.slots.get_mut(name).expect("slot").waiting = Some((waiting.0, Some(waiting.1)));
                return;
            }
        };
        let repo = record
            .reference
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map(|(r, _)| r.to_string())
            .unwrap_or(record.reference.clone());
        let image_id = format!("{repo}@{}", record.manifest_digest);
        {
            let slot = self.slots.get_mut(name).expect("slot");
            slot.image = record.reference.clone();
            slot.image_id = image_id.clone();
        }
        let t_config = Instant::now();
        let config = match self
            .container_config(&container, attempt, &record, &image_id)
            .await
        {
            Ok(c) => c,
            Err(message) => {
                self.event(Some(name), Event::warning("Failed", format!("Error: {message}")));
                self.slots.get_mut(name).expect("slot").waiting =
                    Some(("CreateContainerConfigError".into(), Some(message)));
                self.start_failed(name);
                return;
            }
        };
        tracing::debug!(pod = %self.state.name, container = name, config_ms = t_config.elapsed().as_millis() as u64, "container config built");
        let t_create = Instant::now();
        let id = config.id.clone();
        let log_path = config.log_path.clone();
        let runtime = self.ctx.runtime.clone();
        let created = tokio::task::spawn_blocking(move || {
            runtime.create_container(&config)?;
            Ok::<_, rkube_oci::runtime::RuntimeError>(())
        })
        .await;
        let slot = self.slots.get_mut(name).expect("slot");
        let old_previous = std::mem::replace(&mut slot.previous, slot.current.take());
        slot.current = Some(Instance {
            id: id.clone(),
            attempt,
            log_path,
            state: ContainerState::Created,
        });
        if let Some(old) = old_previous {
            self.ctx.remove_container_later(old.id);
        }
        match created {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let message = e.to_string();
                self.ctx.remove_container_later(id);
                let slot = self.slots.get_mut(name).expect("slot");
                slot.current = slot.previous.take();
                slot.waiting = Some(("CreateContainerError".into(), Some(message.clone())));
                self.event(Some(name), Event::warning("Failed", format!("Error: {message}")));
                self.start_failed(name);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "create task failed");
                return;
            }
        }
        self.event(
            Some(name),
            Event::normal("Created", format!("Created container {name}")),
        );
        let runtime = self.ctx.runtime.clone();
        let start_id = id.clone();
        let started = tokio::task::spawn_blocking(move || {
            runtime.start_container(&start_id)?;
            runtime.container_state(&start_id)
        })
        .await;
        tracing::debug!(pod = %self.state.name, container = name, create_start_ms = t_create.elapsed().as_millis() as u64, "container started");
        let slot = self.slots.get_mut(name).expect("slot");
        slot.waiting = None;
        match started {
            Ok(Ok(state)) => {
                if let Some(cur) = slot.current.as_mut() {
                    cur.state = state;
                }
                self.event(
                    Some(name),
                    Event::normal("Started", format!("Started container {name}")),
                );
                self.start_failed_at.remove(name);
            }
            Ok(Err(e)) => {
                let message = e.to_string();
                if let Some(cur) = slot.current.as_mut() {
                    cur.state = ContainerState::Exited {
                        exit_code: 128,
                        started_at: Utc::now(),
                        finished_at: Utc::now(),
                        oom_killed: false,
                        signal: None,
                    };
                }
                self.event(Some(name), Event::warning("Failed", format!("Error: {message}")));
            }
            Err(e) => tracing::error!(error = %e, "start task failed"),
        }
    }

    /// Everything the runtime needs to create attempt `attempt` of `container`.
    async fn container_config(
        &self,
        container: &Container,
        attempt: i32,
        record: &ImageRecord,
        image_id: &str,
    ) -> Result<ContainerConfig, String> {
        let image = ImageConfig::load(&self.ctx.images, record).map_err(|e| e.to_string())?;
        let (cms, secrets) = self.fetch_references().await;
        let services = self.ctx.services(&self.state.namespace).await;
        let host_ip = self.ctx.node_ip.to_string();
        let src = EnvSources {
            pod: &self.pod,
            host_ip: &host_ip,
            pod_ips: &self.state.pod_ips,
            config_maps: &cms,
            secrets: &secrets,
            services: &services,
            node_cpu: self.ctx.facts.cpus as f64,
            node_memory: self.ctx.facts.memory_bytes as f64,
        };
        let mut env = env::container_env(container, &src).map_err(|e| e.to_string())?;
        // Container runtimes set HOSTNAME; the kubelet's own variables win.
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            env.insert(0, ("HOSTNAME".into(), pod_hostname(&self.pod)));
        }
        let command = env::expand_all(container.command.as_deref().unwrap_or_default(), &env);
        let args = env::expand_all(container.args.as_deref().unwrap_or_default(), &env);
        let argv = resolve_command(&image, &command, &args);
        if argv.is_empty() {
            return Err("no command specified".into());
        }
        let lower_dirs = self.ctx.images.lower_dirs(record);
        let read_etc = |file: &str| {
            lower_dirs
                .iter()
                .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
                .unwrap_or_default()
        };
        let pod_sc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let sc = container.security_context.clone().unwrap_or_default();
        let (uid, gid) = resolve_user(
            sc.run_as_user.or(pod_sc.run_as_user),
            sc.run_as_group.or(pod_sc.run_as_group),
            &image.user,
            &read_etc("etc/passwd"),
            &read_etc("etc/group"),
        );
        let mut additional_gids: Vec<u32> = pod_sc
            .supplemental_groups
            .iter()
            .flatten()
            .map(|g| *g as u32)
            .collect();
        if let Some(fs_group) = pod_sc.fs_group {
            additional_gids.push(fs_group as u32);
        }
        let pod_dir = self.ctx.pod_dir(&self.uid);
        let mut mounts: Vec<BindMount> = volumes::container_mounts(container, &self.volumes)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|m| BindMount {
                destination: m.destination,
                source: m.source,
                read_only: m.read_only,
            })
            .collect();
        let taken = |mounts: &[BindMount], d: &str| mounts.iter().any(|m| m.destination == d);
        for (dest, file) in [
            ("/etc/hosts", "hosts"),
            ("/etc/hostname", "hostname"),
            ("/etc/resolv.conf", "resolv.conf"),
        ] {
            if !taken(&mounts, dest) {
                mounts.push(BindMount {
                    destination: dest.into(),
                    source: pod_dir.join("etc").join(file),
                    read_only: false,
                });
            }
        }
        let termination_path = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        let termination_file = pod_dir
            .join("containers")
            .join(&container.name)
            .join(format!("{attempt}-termination-log"));
        if let Some(parent) = termination_file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&termination_file, b"").map_err(|e| e.to_string())?;
        if !taken(&mounts, &termination_path) {
            mounts.push(BindMount {
                destination: termination_path,
                source: termination_file,
                read_only: false,
            });
        }
        let limits = resources::limits(container);
        let caps = sc.capabilities.clone().unwrap_or_default();
        let labels = BTreeMap::from([
            (LABEL_POD_UID.to_string(), self.uid.clone()),
            (LABEL_POD_NAME.to_string(), self.state.name.clone()),
            (LABEL_POD_NAMESPACE.to_string(), self.state.namespace.clone()),
            (LABEL_CONTAINER_NAME.to_string(), container.name.clone()),
            (LABEL_ATTEMPT.to_string(), attempt.to_string()),
            (LABEL_IMAGE.to_string(), record.reference.clone()),
            (LABEL_IMAGE_ID.to_string(), image_id.to_string()),
        ]);
        Ok(ContainerConfig {
            id: new_container_id(),
            sandbox: self.sandbox.clone().expect("sandbox before containers"),
            labels,
            lower_dirs,
            process: ProcessSpec {
                args: argv,
                env: env::merge_with_image(&image.env, &env),
                cwd: container
                    .working_dir
                    .clone()
                    .filter(|w| !w.is_empty())
                    .unwrap_or(image.working_dir.clone()),
                uid,
                gid,
                additional_gids,
                tty: container.tty.unwrap_or(false),
                stdin: container.stdin.unwrap_or(false),
            },
            mounts,
            privileged: sc.privileged.unwrap_or(false),
            cap_add: caps.add.unwrap_or_default(),
            cap_drop: caps.drop.unwrap_or_default(),
            read_only_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
            resources: Resources {
                memory_limit: limits.memory_limit,
                cpu_shares: limits.cpu_shares,
                cpu_quota: limits.cpu_quota,
                cpu_period: limits.cpu_period,
                pids_limit: None,
            },
            log_path: self.ctx.log_path(
                &self.state.namespace,
                &self.state.name,
                &self.uid,
                &container.name,
                attempt,
            ),
            hostname: pod_hostname(&self.pod),
        })
    }

    /// Runs the probes that are due and acts on their verdicts.
    async fn run_probes(&mut self) {
        let now = Instant::now();
        let pod_ip: Option<IpAddr> = self.state.pod_ips.first().and_then(|ip| ip.parse().ok());
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            let Some(container) = self.spec_container(&name) else {
                continue;
            };
            let slot = self.slots.get_mut(&name).expect("slot");
            if slot.init {
                continue;
            }
            let Some(cur) = slot.current.clone().filter(Instance::running) else {
                slot.ready = false;
                slot.started = false;
                slot.probed = None;
                continue;
            };
            if slot.probed.as_deref() != Some(cur.id.as_str()) {
                let started = match &cur.state {
                    ContainerState::Running { started_at, .. } => {
                        let ago = (Utc::now() - *started_at).to_std().unwrap_or_default();
                        now.checked_sub(ago).unwrap_or(now)
                    }
                    _ => now,
                };
                slot.startup = container
                    .startup_probe
                    .as_ref()
                    .map(|p| ProbeTracker::new(ProbeKind::Startup, p, started));
                slot.liveness = container
                    .liveness_probe
                    .as_ref()
                    .map(|p| ProbeTracker::new(ProbeKind::Liveness, p, started));
                slot.readiness = container
                    .readiness_probe
                    .as_ref()
                    .map(|p| ProbeTracker::new(ProbeKind::Readiness, p, started));
                slot.probed = Some(cur.id.clone());
                slot.started = slot.startup.is_none();
                slot.ready = slot.started && slot.readiness.is_none();
                // An adopted container keeps what it reported before the agent restart until its probes
                // say otherwise (no readiness flap on every agent restart).
                if let Some((ready, started)) = self.adopted_probes.remove(&cur.id) {
                    slot.ready = ready;
                    slot.started = started || slot.started;
                }
            }
            let mut kill: Option<String> = None;
            let mut unhealthy: Vec<String> = Vec::new();
            for kind in [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness] {
                let slot = self.slots.get_mut(&name).expect("slot");
                if kind != ProbeKind::Startup && !slot.started {
                    continue;
                }
                if kind == ProbeKind::Startup && slot.started {
                    continue;
                }
                let (probe_spec, tracker) = match kind {
                    ProbeKind::Startup => (container.startup_probe.as_ref(), slot.startup.as_mut()),
                    ProbeKind::Liveness => (container.liveness_probe.as_ref(), slot.liveness.as_mut()),
                    ProbeKind::Readiness => (container.readiness_probe.as_ref(), slot.readiness.as_mut()),
                };
                let (Some(probe_spec), Some(tracker)) = (probe_spec, tracker) else {
                    continue;
                };
                if !tracker.due(Instant::now()) {
                    continue;
                }
                let timeout = tracker.timeout;
                let outcome = probe::check(
                    probe_spec,
                    &self.ctx.runtime,
                    &cur.id,
                    &container,
                    pod_ip,
                    timeout,
                )
                .await;
                let slot = self.slots.get_mut(&name).expect("slot");
                let tracker = match kind {
                    ProbeKind::Startup => slot.startup.as_mut(),
                    ProbeKind::Liveness => slot.liveness.as_mut(),
                    ProbeKind::Readiness => slot.readiness.as_mut(),
                }
                .expect("tracker");
                if let Err(message) = &outcome {
                    unhealthy.push(format!("{} probe failed: {message}", kind.name()));
                }
                match (kind, tracker.record(outcome.is_ok(), Instant::now())) {
                    (ProbeKind::Startup, Some(true)) => {
                        slot.started = true;
                        slot.ready = slot.readiness.is_none();
                    }
                    (ProbeKind::Startup, Some(false)) => {
                        kill = Some(format!(
                            "Container {name} failed startup probe, will be restarted"
                        ))
                    }
                    (ProbeKind::Liveness, Some(false)) => {
                        kill = Some(format!(
                            "Container {name} failed liveness probe, will be restarted"
                        ))
                    }
                    (ProbeKind::Readiness, Some(v)) => slot.ready = v,
                    _ => {}
                }
                if kill.is_some() {
                    break;
                }
            }
            for message in unhealthy {
                self.event(Some(&name), Event::warning("Unhealthy", message));
            }
            if let Some(message) = kill {
                self.event(Some(&name), Event::normal("Killing", message));
                let grace = Duration::from_secs(
                    self.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                        .unwrap_or(DEFAULT_GRACE)
                        .max(0) as u64,
                );
                self.stop_container(&name, grace).await;
                let slot = self.slots.get_mut(&name).expect("slot");
                slot.ready = false;
                slot.started = false;
                slot.probed = None;
            }
        }
    }

    /// Runs the container's preStop hook, then stops it with SIGTERM and SIGKILL after `grace`.
    async fn stop_container(&mut self, name: &str, grace: Duration) {
        let Some(cur) = self.slots.get(name).and_then(|s| s.current.clone()) else {
            return;
        };
        if cur.exited() {
            return;
        }
        let pod_ip: Option<IpAddr> = self.state.pod_ips.first().and_then(|ip| ip.parse().ok());
        let state = stop_one(
            self.ctx.runtime.clone(),
            cur.id,
            self.spec_container(name),
            pod_ip,
            grace,
        )
        .await;
        if let Some(cur) = self.slots.get_mut(name).and_then(|s| s.current.as_mut()) {
            cur.state = state;
        }
    }

    /// Stops every running container side by side (each with its preStop hook and `grace`).
    async fn stop_all(&mut self, grace: Duration) {
        let running: Vec<(String, String)> = self
            .slots
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.current.as_ref().filter(|c| !c.exited())?.id.clone())))
            .collect();
        let pod_ip: Option<IpAddr> = self.state.pod_ips.first().and_then(|ip| ip.parse().ok());
        let mut tasks = Vec::new();
        for (name, id) in running {
            self.event(
                Some(&name),
                Event::normal("Killing", format!("Stopping container {name}")),
            );
            let stop = stop_one(
                self.ctx.runtime.clone(),
                id,
                self.spec_container(&name),
                pod_ip,
                grace,
            );
            tasks.push(tokio::spawn(async move { (name, stop.await) }));
        }
        for task in tasks {
            if let Ok((name, state)) = task.await
                && let Some(cur) = self.slots.get_mut(&name).and_then(|s| s.current.as_mut())
            {
                cur.state = state;
            }
        }
    }

    /// The pod finished (Succeeded/Failed): release its network and sandbox, keep its containers for logs.
    async fn finish(&mut self) {
        self.release_network().await;
        self.finished = true;
    }

    async fn release_network(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            let request = PodNetRequest {
                sandbox_id: self.uid.clone(),
                netns: sandbox.netns.clone(),
                pod_namespace: self.state.namespace.clone(),
                pod_name: self.state.name.clone(),
                pod_uid: self.uid.clone(),
                port_mappings: self.state.port_mappings.clone(),
            };
            // Never DEL in the node's own namespace: that would take the node's interface.
            if !self.host_network()
                && let Err(e) = self.ctx.network.del(&request).await
            {
                tracing::warn!(pod = %self.state.name, error = %e, "CNI DEL failed");
            }
            let runtime = self.ctx.runtime.clone();
            let id = self.uid.clone();
            let _ = tokio::task::spawn_blocking(move || runtime.remove_sandbox(&id)).await;
        }
        self.network_ready = false;
    }

    /// Graceful termination of a deleted pod, then the final delete with grace period 0.
    async fn terminate(&mut self) {
        if !self.terminating {
            self.terminating = true;
            tracing::info!(pod = %self.state.name, namespace = %self.state.namespace, "terminating pod");
        }
        self.stop_all(self.grace()).await;
        if !self.gone {
            self.report().await;
        }
        self.release_network().await;
        let ids: Vec<String> = self
            .slots
            .values()
            .flat_map(|s| s.current.iter().chain(s.previous.iter()))
            .map(|c| c.id.clone())
            .collect();
        let runtime = self.ctx.runtime.clone();
        let pod_dir = self.ctx.pod_dir(&self.uid);
        let log_dir = self
            .ctx
            .pod_log_root(&self.state.namespace, &self.state.name, &self.uid);
        let _ = tokio::task::spawn_blocking(move || {
            for id in ids {
                if let Err(e) = runtime.remove_container(&id) {
                    tracing::warn!(container = %id, error = %e, "removing container failed");
                }
            }
            if let Err(e) = volumes::teardown(&pod_dir) {
                tracing::warn!(error = %e, "removing the pod directory failed");
            }
            let _ = std::fs::remove_dir_all(&log_dir);
        })
        .await;
        self.ctx
            .forget(&self.state.namespace, &self.state.name, &self.uid);
        if !self.gone {
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.state.namespace);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&self.state.name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => tracing::warn!(pod = %self.state.name, error = %e, "final pod delete failed"),
            }
        }
    }

    fn termination_message(&self, name: &str, inst: &Instance) -> Option<String> {
        let path = self
            .ctx
            .pod_dir(&self.uid)
            .join("containers")
            .join(name)
            .join(format!("{}-termination-log", inst.attempt));
        let text = std::fs::read_to_string(path).ok()?;
        (!text.is_empty()).then(|| text.chars().take(4096).collect())
    }

    fn container_view(&self, name: &str, pending_init: bool) -> ContainerView {
        let slot = &self.slots[name];
        let previous_termination = slot
            .previous
            .as_ref()
            .and_then(|p| p.termination(self.termination_message(name, p)));
        let default_waiting = || {
            if let Some((reason, message)) = &self.pod_error {
                return Current::Waiting {
                    reason: if reason == "ContainerCreating" || !slot.init {
                        "ContainerCreating".into()
                    } else {
                        reason.clone()
                    },
                    message: Some(message.clone()),
                };
            }
            match &slot.waiting {
                Some((reason, message)) => Current::Waiting {
                    reason: reason.clone(),
                    message: message.clone(),
                },
                None if pending_init && !slot.init => Current::Waiting {
                    reason: "PodInitializing".into(),
                    message: None,
                },
                None => Current::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                },
            }
        };
        let (current, last_termination) = match &slot.current {
            None => (default_waiting(), None),
            Some(inst) => match &inst.state {
                ContainerState::Created => (default_waiting(), previous_termination),
                ContainerState::Running { started_at, .. } => (
                    Current::Running {
                        container_id: inst.id.clone(),
                        started_at: Some(time(*started_at)),
                    },
                    previous_termination,
                ),
                ContainerState::Exited { .. } | ContainerState::Unknown => {
                    let term = inst
                        .termination(self.termination_message(name, inst))
                        .expect("exited has a termination");
                    match &slot.waiting {
                        Some((reason, message)) if !self.terminating && !self.finished => (
                            Current::Waiting {
                                reason: reason.clone(),
                                message: message.clone(),
                            },
                            Some(term),
                        ),
                        _ => (Current::Terminated(term), previous_termination),
                    }
                }
            },
        };
        ContainerView {
            name: name.to_string(),
            image: slot.image.clone(),
            image_id: slot.image_id.clone(),
            current,
            last_termination,
            restart_count: slot.current.as_ref().map(|c| c.attempt).unwrap_or(0),
            ready: slot.ready,
            started: slot.started,
        }
    }

    fn view(&self) -> PodView {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let init_names: Vec<&str> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        let pending_init = init_names.iter().any(|n| {
            !matches!(
                self.slots[*n].current.as_ref().map(|c| &c.state),
                Some(ContainerState::Exited { exit_code: 0, .. })
            )
        });
        PodView {
            sandbox_ready: self.sandbox.is_some() && self.network_ready,
            pod_ips: self.state.pod_ips.clone(),
            host_ip: Some(self.ctx.node_ip.to_string()),
            init_containers: init_names
                .iter()
                .map(|n| self.container_view(n, pending_init))
                .collect(),
            containers: spec
                .containers
                .iter()
                .map(|c| self.container_view(&c.name, pending_init))
                .collect(),
            terminal: self.terminating || self.finished,
            failed_reason: self.failed_reason.clone(),
        }
    }

    /// Patches the status subresource when the status changed.
    async fn report(&mut self) {
        let view = self.view();
        let mut pod = self.pod.clone();
        if let Some(reported) = &self.reported {
            pod.status = Some(reported.clone());
        }
        let status = status::pod_status(&pod, &view, &now_time());
        if !status::changed(self.reported.as_ref(), &status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.state.namespace);
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {"uid": self.uid},
            "status": status,
        }));
        let t = Instant::now();
        let patched = api
            .patch_status(&self.state.name, &PatchParams::default(), &patch)
            .await;
        tracing::debug!(pod = %self.state.name, patch_ms = t.elapsed().as_millis() as u64,
            phase = status.phase.as_deref().unwrap_or_default(), "status patched");
        match patched {
            Ok(updated) => {
                self.reported = Some(status);
                if let Some(s) = updated.status {
                    // Keep what other writers own (PodScheduled, qosClass) from the server's answer.
                    self.pod.status = Some(s);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => self.gone = true,
            Err(e) => tracing::warn!(pod = %self.state.name, error = %e, "status patch failed"),
        }
    }

    /// Tells the kubelet API where this pod's containers and logs are.
    fn publish(&self) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let default = self
            .pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubectl.kubernetes.io/default-container").cloned())
            .or_else(|| spec.containers.first().map(|c| c.name.clone()))
            .unwrap_or_default();
        let containers = self
            .slots
            .iter()
            .filter_map(|(name, slot)| {
                let cur = slot.current.as_ref()?;
                Some((
                    name.clone(),
                    ContainerRef {
                        container_id: cur.id.clone(),
                        log_path: cur.log_path.clone(),
                        previous_log_path: slot.previous.as_ref().map(|p| p.log_path.clone()),
                        running: cur.running(),
                    },
                ))
            })
            .collect();
        let names = self.slots.keys().cloned().collect();
        self.ctx.publish(
            &self.state.namespace,
            &self.state.name,
            PodContainers {
                uid: self.uid.clone(),
                default,
                names,
                containers,
            },
        );
    }
}

/// preStop (exec, httpGet or sleep) within `grace`, then SIGTERM and SIGKILL when the rest of the grace
/// period is over. Returns the container's state afterwards.
async fn stop_one(
    runtime: Arc<rkube_oci::runtime::Runtime>,
    id: String,
    container: Option<Container>,
    pod_ip: Option<IpAddr>,
    grace: Duration,
) -> ContainerState {
    let deadline = Instant::now() + grace;
    if let Some(c) = &container
        && let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone())
    {
        let hook = async {
            if let Some(exec) = &handler.exec {
                let rt = runtime.clone();
                let id = id.clone();
                let cmd = exec.command.clone().unwrap_or_default();
                let _ = tokio::task::spawn_blocking(move || rt.exec_sync(&id, &cmd, grace)).await;
            } else if let Some(http) = &handler.http_get {
                let probe = k8s_openapi::api::core::v1::Probe {
                    http_get: Some(http.clone()),
                    ..Default::default()
                };
                let _ = probe::check(&probe, &runtime, &id, c, pod_ip, grace).await;
            } else if let Some(sleep) = &handler.sleep {
                tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            }
        };
        if tokio::time::timeout(grace, hook).await.is_err() {
            tracing::info!(container = %id, "preStop hook did not finish within the grace period");
        }
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = runtime.stop_container(&id, Signal::SIGTERM, remaining) {
            tracing::warn!(container = %id, error = %e, "stopping container failed");
        }
        runtime.container_state(&id).unwrap_or(ContainerState::Unknown)
    })
    .await
    .unwrap_or(ContainerState::Unknown)
}

fn attempt_of(c: &ContainerInfo) -> i32 {
    c.labels
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_rules() {
        assert!(should_restart("Always", false, 0));
        assert!(should_restart("Always", false, 1));
        assert!(!should_restart("OnFailure", false, 0));
        assert!(should_restart("OnFailure", false, 2));
        assert!(!should_restart("Never", false, 1));
        assert!(
            !should_restart("Always", true, 0),
            "a finished init container stays finished"
        );
        assert!(should_restart("Always", true, 1));
        assert!(!should_restart("Never", true, 1));
    }

    #[test]
    fn users_from_security_context_or_image() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(resolve_user(None, None, "", passwd, group), (0, 0));
        assert_eq!(resolve_user(None, None, "1000:1000", passwd, group), (1000, 1000));
        assert_eq!(resolve_user(None, None, "www", passwd, group), (33, 34));
        assert_eq!(resolve_user(None, None, "www:staff", passwd, group), (33, 50));
        assert_eq!(resolve_user(Some(7), Some(8), "www", passwd, group), (7, 8));
        assert_eq!(resolve_user(Some(7), None, "", passwd, group), (7, 0));
    }

    #[test]
    fn hosts_file_and_hostname() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"containers": [], "hostname": "web-0", "subdomain": "web",
                     "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}
        }))
        .unwrap();
        let hosts = hosts_file(&pod, &["10.42.0.7".into()], &pod_hostname(&pod), "cluster.local");
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("10.42.0.7\tweb-0.web.shop.svc.cluster.local\tweb-0\n"));
        assert!(hosts.ends_with("10.1.2.3\tfoo.local\tbar.local\n"));
        let long: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{}-x", "a".repeat(62))}, "spec": {"containers": []}}))
        .unwrap();
        assert_eq!(pod_hostname(&long), "a".repeat(62));
    }

    #[test]
    fn host_ports_become_port_mappings() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "protocol": "UDP"}]}]}
        }))
        .unwrap();
        let m = port_mappings(&pod);
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].host_port, m[0].container_port, m[0].protocol.as_str()),
            (8080, 80, "TCP")
        );
    }
}
