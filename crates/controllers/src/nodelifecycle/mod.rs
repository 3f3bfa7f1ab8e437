//! The node lifecycle controller: watches node heartbeats (Leases in `kube-node-lease` and the Ready
//! condition's `lastHeartbeatTime`); a node silent for longer than `--node-monitor-grace-period` has its
//! conditions set to Unknown, its pods marked not ready and a NodeNotReady event recorded; lifecycle taints
//! (`node.kubernetes.io/unreachable|not-ready`, NoSchedule and NoExecute) follow its Ready condition and are
//! removed on recovery; the taint manager evicts pods from NoExecute-tainted nodes once their tolerations
//! expire — except in full disruption (no node Ready), when no NoExecute taints are set. Decisions are pure
//! ([`sync`]); this shell keeps the heartbeat clock and writes.

pub mod sync;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use parking_lot::Mutex;
use serde_json::json;

use self::sync::Eviction;
use crate::events::{Event, EventRecorder};
use crate::informer::{Change, key_of, split_key};
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error, pod};

const NAME: &str = "node-controller";
/// The namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a node's Lease holds without renewal (the kubelet's `nodeLeaseDurationSeconds`).
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// The heartbeat Lease node `name` renews — the shape this controller reads, written by the node agent and
/// the simulated nodes alike. Owned by the Node so it goes away with it.
pub fn lease_object(name: &str, node_uid: Option<&str>, now: &MicroTime) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.into(),
                    uid: uid.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now.clone()),
            ..Default::default()
        }),
    }
}

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// The last heartbeat we observed for a node, on our own clock (so clock skew with the node does not matter).
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    renew_time: Option<String>,
    heartbeat: Option<String>,
}

struct Shell {
    client: Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    seen: Mutex<HashMap<String, Seen>>,
    recorder: EventRecorder,
    grace: Duration,
}

fn ready_heartbeat(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    ready.last_heartbeat_time.as_ref().map(|t| t.0.to_string())
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect()
}

async fn run(ctx: Context) -> Result<(), Error> {
    let node_informer = ctx.informers.get::<Node>();
    let lease_informer = ctx.informers.get::<Lease>();
    let pod_informer = ctx.informers.get::<Pod>();
    node_informer.wait_synced().await;
    lease_informer.wait_synced().await;
    pod_informer.wait_synced().await;
    let options = &ctx.options.cluster;
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        nodes: node_informer.store().clone(),
        pods: pod_informer.store().clone(),
        seen: Mutex::default(),
        recorder: ctx.recorder.for_component(NAME),
        grace: options.node_monitor_grace_period,
    });
    let evictions = WorkQueue::new();

    node_informer.add_handler({
        let (shell, queue) = (shell.clone(), evictions.clone());
        move |c: &Change<Node>| {
            let name = c.latest().metadata.name.clone().unwrap_or_default();
            let Some(node) = &c.new else {
                shell.seen.lock().remove(&name);
                return;
            };
            shell.observe(&name, None, ready_heartbeat(node));
            let old_taints = c.old.as_deref().map(no_execute_taints);
            if old_taints.as_ref() != Some(&no_execute_taints(node)) {
                for p in shell.pods.state_filter(|p| pod::node_name(p) == name) {
                    queue.add(key_of(&*p));
                }
            }
        }
    });
    lease_informer.add_handler({
        let shell = shell.clone();
        move |c: &Change<Lease>| {
            if let Some(lease) = &c.new
                && lease.metadata.namespace.as_deref() == Some(LEASE_NAMESPACE)
            {
                let renew = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .map(|t| t.0.to_string());
                shell.observe(lease.metadata.name.as_deref().unwrap_or(""), renew, None);
            }
        }
    });
    pod_informer.add_handler({
        let (shell, queue) = (shell.clone(), evictions.clone());
        move |c: &Change<Pod>| {
            let Some(p) = &c.new else { return };
            let node = pod::node_name(p);
            if !node.is_empty()
                && p.metadata.deletion_timestamp.is_none()
                && shell
                    .nodes
                    .get(&ObjectRef::new(node))
                    .is_some_and(|n| !no_execute_taints(&n).is_empty())
            {
                queue.add(key_of(&**p));
            }
        }
    });

    let monitor = {
        let shell = shell.clone();
        let period = options.node_monitor_period;
        async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                shell.monitor_nodes().await;
            }
        }
    };
    let worker = shell.clone();
    let taint_manager = run_workers(
        evictions,
        ctx.options.workers,
        "taint-eviction-controller",
        move |key| {
            let shell = worker.clone();
            async move { shell.sync_pod(&key).await }
        },
    );
    tokio::select! {
        () = monitor => {}
        () = taint_manager => {}
    }
    Err(Error::ControllerStopped("nodelifecycle"))
}

impl Shell {
    /// Note a heartbeat if the Lease's renewTime or the Ready condition's lastHeartbeatTime moved (a node seen
    /// for the first time starts its grace period now).
    fn observe(&self, name: &str, renew_time: Option<String>, heartbeat: Option<String>) {
        let mut seen = self.seen.lock();
        let entry = seen.entry(name.to_string()).or_insert_with(|| Seen {
            at: Instant::now(),
            renew_time: None,
            heartbeat: None,
        });
        let renewed = renew_time.is_some() && renew_time != entry.renew_time;
        let beat = heartbeat.is_some() && heartbeat != entry.heartbeat;
        if renewed {
            entry.renew_time = renew_time;
        }
        if beat {
            entry.heartbeat = heartbeat;
        }
        if renewed || beat {
            entry.at = Instant::now();
        }
    }

    fn silent_for(&self, name: &str) -> Duration {
        let mut seen = self.seen.lock();
        let entry = seen.entry(name.to_string()).or_insert_with(|| Seen {
            at: Instant::now(),
            renew_time: None,
            heartbeat: None,
        });
        entry.at.elapsed()
    }

    /// One pass of Kubernetes' `monitorNodeHealth` over every node.
    async fn monitor_nodes(&self) {
        let nodes = self.nodes.state();
        let evictions = !sync::full_disruption(nodes.iter().map(|n| &**n));
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let update = sync::node_step(
                node,
                self.silent_for(&name),
                self.grace,
                evictions,
                Timestamp::now(),
            );
            if let Err(e) = self.apply(node, &update).await {
                tracing::info!(node = %name, error = %e, "node update failed; retrying next pass");
            }
        }
    }

    async fn apply(&self, node: &Node, update: &sync::NodeUpdate) -> Result<(), Error> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Node> = Api::all(self.client.clone());
        if let Some(conditions) = &update.conditions {
            let patch = json!({"status": {"conditions": conditions}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        if update.became_not_ready {
            let event = Event::normal("NodeNotReady", format!("Node {name} status is now: NodeNotReady"));
            self.recorder.record(&node.object_ref(&()), &event).await;
            self.mark_pods_not_ready(name).await;
        }
        if let Some(taints) = &update.taints {
            let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": taints}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }

    /// Kubernetes' `MarkPodsNotReady`: the node can no longer vouch for its pods, so Services stop sending them
    /// traffic.
    async fn mark_pods_not_ready(&self, node: &str) {
        let now = Timestamp::now().to_string();
        for p in self
            .pods
            .state_filter(|p| pod::node_name(p) == node && pod::is_ready(p))
        {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or(""));
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now}]}});
            let name = p.metadata.name.as_deref().unwrap_or_default();
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::info!(pod = %name, error = %e, "could not mark pod not ready");
            }
        }
    }

    /// The taint manager for one pod: evict now, later, or never.
    async fn sync_pod(&self, key: &str) -> Result<Requeue, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let Some(p) = self.pods.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        if p.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(node) = self.nodes.get(&ObjectRef::new(pod::node_name(&p))) else {
            return Ok(None);
        };
        let now = Timestamp::now();
        match sync::eviction(&p, &no_execute_taints(&node), now) {
            Eviction::Never => Ok(None),
            Eviction::At(at) => {
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::from_secs(1));
                Ok(Some(wait))
            }
            Eviction::Now => {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: p.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(name, &params).await {
                    Ok(_) => {
                        let event = Event::normal(
                            "TaintManagerEviction",
                            format!("Marking for deletion Pod {ns}/{name}"),
                        );
                        self.recorder.record(&p.object_ref(&()), &event).await;
                        Ok(None)
                    }
                    Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}
