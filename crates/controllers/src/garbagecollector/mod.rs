//! The garbage collector: deletes objects whose owners are gone (Background propagation), deletes the
//! dependents of an owner deleted in the foreground before letting it go (`foregroundDeletion` finalizer), and
//! releases the dependents of an owner deleted with `orphan`. The ownership graph and both decisions are pure
//! ([`graph`]); this shell feeds the graph from the shared informers of every kind that carries
//! ownerReferences and executes the decisions through the API.

pub mod graph;

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::Scope;
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;

use self::graph::{DependentAction, Graph, GraphNode, ObjectId, OwnerAction, OwnerState, Propagation};
use crate::informer::{Change, Watched};
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};

const NAME: &str = "garbage-collector-controller";

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// How to reach one kind through the API.
#[derive(Clone)]
struct Resolved {
    resource: ApiResource,
    namespaced: bool,
}

struct Shell {
    client: Client,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue>,
    /// Kinds by (apiVersion, kind): the watched ones up front, others found through discovery when an owner
    /// reference names them (`None`: the server does not serve it).
    kinds: Mutex<HashMap<(String, String), Option<Resolved>>>,
}

/// Start feeding the graph from `K`'s informer; returns a future that resolves once it is synced.
fn watch<K: Watched>(ctx: &Context, shell: &Arc<Shell>) -> impl Future<Output = ()> + use<K> {
    let informer = ctx.informers.get::<K>();
    let resolved = Resolved {
        resource: ApiResource::erase::<K>(&()),
        namespaced: TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>(),
    };
    let key = (K::api_version(&()).into_owned(), K::kind(&()).into_owned());
    shell.kinds.lock().insert(key.clone(), Some(resolved));
    let handler_shell = shell.clone();
    informer.add_handler(move |c: &Change<K>| {
        let meta = |o: &Arc<K>| o.meta().clone();
        handler_shell.changed(&key.0, &key.1, c.old.as_ref().map(meta), c.new.as_ref().map(meta));
    });
    async move { informer.wait_synced().await }
}

async fn run(ctx: Context) -> Result<(), Error> {
    let queue = WorkQueue::new();
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        graph: Mutex::default(),
        queue: queue.clone(),
        kinds: Mutex::default(),
    });
    let synced = [
        Box::pin(watch::<Pod>(&ctx, &shell)) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        Box::pin(watch::<ReplicaSet>(&ctx, &shell)),
        Box::pin(watch::<Deployment>(&ctx, &shell)),
        Box::pin(watch::<DaemonSet>(&ctx, &shell)),
        Box::pin(watch::<StatefulSet>(&ctx, &shell)),
        Box::pin(watch::<ControllerRevision>(&ctx, &shell)),
        Box::pin(watch::<Job>(&ctx, &shell)),
        Box::pin(watch::<CronJob>(&ctx, &shell)),
        Box::pin(watch::<Service>(&ctx, &shell)),
        Box::pin(watch::<EndpointSlice>(&ctx, &shell)),
        Box::pin(watch::<ConfigMap>(&ctx, &shell)),
        Box::pin(watch::<Secret>(&ctx, &shell)),
        Box::pin(watch::<Node>(&ctx, &shell)),
        Box::pin(watch::<Lease>(&ctx, &shell)),
    ];
    futures::future::join_all(synced).await;
    tracing::info!(
        objects = shell.graph.lock().len(),
        "garbage collector graph synced"
    );

    let worker = shell.clone();
    run_workers(queue, ctx.options.workers, NAME, move |uid| {
        let shell = worker.clone();
        async move { shell.sync(&uid).await }
    })
    .await;
    Err(Error::ControllerStopped("garbagecollector"))
}

impl Shell {
    /// Update the graph and enqueue whoever this change may concern: the object itself, its owners (an owner
    /// waiting on it), and its dependents (their owner changed state or went away).
    fn changed(&self, api_version: &str, kind: &str, old: Option<ObjectMeta>, new: Option<ObjectMeta>) {
        let mut touched = Vec::new();
        let mut graph = self.graph.lock();
        match new.and_then(|m| GraphNode::from_meta(api_version, kind, &m)) {
            Some(node) => {
                let uid = node.id.uid.clone();
                let previous = graph.upsert(node.clone());
                if !node.owners.is_empty() || node.deleting {
                    touched.push(uid.clone());
                }
                let state_changed = previous
                    .as_ref()
                    .is_none_or(|p| p.deleting != node.deleting || p.finalizers != node.finalizers);
                if state_changed {
                    touched.extend(graph.dependents_of(&uid).iter().map(|d| d.id.uid.clone()));
                    touched.extend(node.owners.iter().map(|r| r.uid.clone()));
                }
                if let Some(p) = previous.filter(|p| p.owners != node.owners) {
                    touched.extend(p.owners.iter().map(|r| r.uid.clone()));
                }
            }
            None => {
                let Some(uid) = old.and_then(|m| m.uid) else {
                    return;
                };
                let dependents: Vec<String> = graph
                    .dependents_of(&uid)
                    .iter()
                    .map(|d| d.id.uid.clone())
                    .collect();
                touched.extend(dependents);
                if let Some(gone) = graph.remove(&uid) {
                    touched.extend(gone.owners.iter().map(|r| r.uid.clone()));
                }
            }
        }
        drop(graph);
        for uid in touched {
            self.queue.add(uid);
        }
    }

    async fn sync(&self, uid: &str) -> Result<Requeue, Error> {
        let (node, dependents) = {
            let graph = self.graph.lock();
            let Some(node) = graph.get(uid).cloned() else {
                return Ok(None);
            };
            let dependents: Vec<GraphNode> = graph.dependents_of(uid).into_iter().cloned().collect();
            (node, dependents)
        };
        let dependent_refs: Vec<&GraphNode> = dependents.iter().collect();
        match graph::owner_step(&node, &dependent_refs) {
            OwnerAction::Nothing => {}
            OwnerAction::Orphan(ids) => {
                for id in &ids {
                    self.remove_owner_refs(id, std::slice::from_ref(&node.id.uid))
                        .await?;
                }
                self.remove_finalizer(&node.id, graph::ORPHAN).await?;
            }
            OwnerAction::DeleteDependents(ids) => ids.into_iter().for_each(|id| self.queue.add(id.uid)),
            OwnerAction::RemoveFinalizer(f) => self.remove_finalizer(&node.id, f).await?,
        }
        if node.owners.is_empty() {
            return Ok(None);
        }
        let mut states = Vec::with_capacity(node.owners.len());
        for r in &node.owners {
            states.push((r, self.owner_state(&node, r).await?));
        }
        match graph::dependent_step(&node, &states, !dependents.is_empty()) {
            DependentAction::Nothing => {}
            DependentAction::RemoveOwnerRefs(uids) => self.remove_owner_refs(&node.id, &uids).await?,
            DependentAction::Delete(policy) => self.delete(&node.id, policy).await?,
        }
        Ok(None)
    }

    /// How to reach `(api_version, kind)`: known from the informers, else asked of discovery once.
    async fn resolve(&self, api_version: &str, kind: &str) -> Option<Resolved> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(known) = self.kinds.lock().get(&key) {
            return known.clone();
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resolved = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .ok()
            .map(|(resource, caps)| Resolved {
                resource,
                namespaced: caps.scope == Scope::Namespaced,
            });
        self.kinds.lock().insert(key, resolved.clone());
        resolved
    }

    fn api(&self, id_kind: &Resolved, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.filter(|_| id_kind.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &id_kind.resource),
            None => Api::all_with(self.client.clone(), &id_kind.resource),
        }
    }

    /// The state of one owner: from the graph when it is there, else from a live read — the cache may simply
    /// not have seen a new owner yet, and deleting a dependent on a stale cache cannot be undone.
    async fn owner_state(&self, node: &GraphNode, r: &OwnerReference) -> Result<OwnerState, Error> {
        if let Some(owner) = self.graph.lock().get(&r.uid) {
            return Ok(if owner.waiting_for_dependents() {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            });
        }
        let Some(kind) = self.resolve(&r.api_version, &r.kind).await else {
            tracing::debug!(kind = %r.kind, "owner kind not served; leaving the dependent alone");
            return Ok(OwnerState::Solid);
        };
        let live = self
            .api(&kind, node.id.namespace.as_deref())
            .get_opt(&r.name)
            .await?;
        Ok(match live {
            Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let meta = &o.metadata;
                let waiting = meta.deletion_timestamp.is_some()
                    && meta.finalizers.iter().flatten().any(|f| f == graph::FOREGROUND);
                if waiting {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                }
            }
            _ => OwnerState::Dangling,
        })
    }

    async fn delete(&self, id: &ObjectId, policy: Propagation) -> Result<(), Error> {
        let Some(kind) = self.resolve(&id.api_version, &id.kind).await else {
            return Ok(());
        };
        let params = DeleteParams {
            propagation_policy: Some(match policy {
                Propagation::Background => PropagationPolicy::Background,
                Propagation::Foreground => PropagationPolicy::Foreground,
                Propagation::Orphan => PropagationPolicy::Orphan,
            }),
            preconditions: Some(Preconditions {
                uid: Some(id.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::info!(kind = %id.kind, namespace = ?id.namespace, name = %id.name, policy = policy.as_str(),
            "deleting object whose owners are gone");
        ignore_gone(
            self.api(&kind, id.namespace.as_deref())
                .delete(&id.name, &params)
                .await,
        )
    }

    /// Drop the references to `owner_uids` from the object (a strategic merge patch keyed by uid, with the
    /// object's uid as precondition).
    async fn remove_owner_refs(&self, id: &ObjectId, owner_uids: &[String]) -> Result<(), Error> {
        let Some(kind) = self.resolve(&id.api_version, &id.kind).await else {
            return Ok(());
        };
        let refs: Vec<_> = owner_uids
            .iter()
            .map(|u| json!({"$patch": "delete", "uid": u}))
            .collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": id.uid}});
        let api = self.api(&kind, id.namespace.as_deref());
        ignore_gone(
            api.patch(&id.name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await,
        )
    }

    /// Remove one finalizer, guarded by the resourceVersion it was read at (a conflict retries the sync).
    async fn remove_finalizer(&self, id: &ObjectId, finalizer: &str) -> Result<(), Error> {
        let Some(kind) = self.resolve(&id.api_version, &id.kind).await else {
            return Ok(());
        };
        let api = self.api(&kind, id.namespace.as_deref());
        let Some(live) = api.get_opt(&id.name).await? else {
            return Ok(());
        };
        if live.metadata.uid.as_deref() != Some(id.uid.as_str()) {
            return Ok(());
        }
        let finalizers: Vec<String> = live
            .metadata
            .finalizers
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers,
            "resourceVersion": live.metadata.resource_version}});
        ignore_gone(
            api.patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
    }
}

/// The object is gone or was replaced by a namesake (uid precondition): nothing left to do.
fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || (s.code == 409 && s.message.contains("UID")) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
