//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets. The pure step is
//! [`sync::plan`] (with the helpers in [`util`]); this shell wires informer handlers to a work queue and
//! performs the planned writes in order.

pub mod sync;
pub mod util;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use serde_json::json;

use crate::claim::{self, controller_of};
use crate::events::EventRecorder;
use crate::informer::{Change, key_of, split_key};
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};
use sync::Action;

const NAME: &str = "deployment-controller";

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// The controller's I/O side; like the ReplicaSet shell it never holds the [`Context`] (see there).
struct Shell {
    client: kube::Client,
    workers: usize,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    recorder: EventRecorder,
}

async fn run(ctx: Context) -> Result<(), Error> {
    let d_informer = ctx.informers.get::<Deployment>();
    let rs_informer = ctx.informers.get::<ReplicaSet>();
    let pod_informer = ctx.informers.get::<Pod>();
    let queue = WorkQueue::new();
    let shell = Arc::new(Shell {
        recorder: ctx.recorder.for_component(NAME),
        deployments: d_informer.store().clone(),
        replica_sets: rs_informer.store().clone(),
        pods: pod_informer.store().clone(),
        client: ctx.client.clone(),
        workers: ctx.options.workers,
    });
    d_informer.wait_synced().await;
    rs_informer.wait_synced().await;
    pod_informer.wait_synced().await;

    d_informer.add_handler({
        let queue = queue.clone();
        move |c: &Change<Deployment>| queue.add(key_of(&**c.latest()))
    });
    rs_informer.add_handler({
        let (queue, shell) = (queue.clone(), shell.clone());
        move |c: &Change<ReplicaSet>| shell.replica_set_changed(c, &queue)
    });
    pod_informer.add_handler({
        let (queue, shell) = (queue.clone(), shell.clone());
        move |c: &Change<Pod>| {
            // Recreate waits for old pods to be gone: their deletion is what lets it continue.
            if c.new.is_some() {
                return;
            }
            let Some(old) = &c.old else { return };
            let Some(rs) = shell.controller_of_kind::<ReplicaSet>(&old.metadata, &shell.replica_sets) else {
                return;
            };
            if let Some(d) = shell.controller_of_kind::<Deployment>(&rs.metadata, &shell.deployments)
                && util::is_recreate(&d)
            {
                queue.add(key_of(&*d));
            }
        }
    });

    let sync_shell = shell.clone();
    run_workers(queue, shell.workers, NAME, move |key| {
        let shell = sync_shell.clone();
        async move { shell.sync(&key).await }
    })
    .await;
    Err(Error::ControllerStopped("deployment"))
}

impl Shell {
    /// The live controller of `meta`'s object from `store`, when it is a `K` with the referenced UID.
    fn controller_of_kind<K>(&self, meta: &ObjectMeta, store: &Store<K>) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let r = controller_of(meta).filter(|r| r.kind == K::kind(&()))?;
        let obj = store.get(&ObjectRef::new(&r.name).within(meta.namespace.as_deref()?))?;
        (obj.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(obj)
    }

    fn matching_deployments(&self, rs: &ReplicaSet) -> Vec<Arc<Deployment>> {
        let ns = rs.metadata.namespace.as_deref();
        self.deployments.state_filter(|d| {
            d.metadata.namespace.as_deref() == ns
                && claim::selector_matches(d.spec.as_ref().map(|s| &s.selector), rs.metadata.labels.as_ref())
        })
    }

    fn replica_set_changed(&self, c: &Change<ReplicaSet>, queue: &WorkQueue) {
        let owner_key = |rs: &ReplicaSet| {
            self.controller_of_kind::<Deployment>(&rs.metadata, &self.deployments)
                .map(|d| key_of(&*d))
        };
        let new_owner = c.new.as_deref().and_then(owner_key);
        let old_owner = c.old.as_deref().and_then(owner_key);
        if old_owner != new_owner {
            old_owner.into_iter().for_each(|k| queue.add(k));
        }
        match (new_owner, &c.new) {
            (Some(k), _) => queue.add(k),
            (None, Some(new)) => {
                let changed = c.old.as_ref().is_none_or(|old| {
                    old.metadata.labels != new.metadata.labels || controller_of(&old.metadata).is_some()
                });
                if changed {
                    self.matching_deployments(new)
                        .iter()
                        .for_each(|d| queue.add(key_of(&**d)));
                }
            }
            (None, None) => {}
        }
    }

    async fn sync(&self, key: &str) -> Result<Requeue, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let Some(d) = self.deployments.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        let in_ns = |m: &ObjectMeta| m.namespace.as_deref() == Some(ns);
        let rss = self.replica_sets.state_filter(|rs| in_ns(&rs.metadata));
        let pods = self.pods.state_filter(|p| in_ns(&p.metadata));
        let rs_refs: Vec<&ReplicaSet> = rss.iter().map(|r| &**r).collect();
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        // Whole seconds: that is what the API stores, so a condition written now compares equal when read back.
        let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now());
        let plan = sync::plan(&d, &rs_refs, &pod_refs, now);
        tracing::debug!(key, actions = ?plan.actions.iter().map(Action::name).collect::<Vec<_>>(), "deployment sync");

        let client = self.client.clone();
        let d_api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let rs_api: Api<ReplicaSet> = Api::namespaced(client, ns);
        let reference = d.object_ref(&());
        let owner_uid = d.metadata.uid.clone().unwrap_or_default();
        for action in plan.actions {
            match action {
                Action::AdoptReplicaSet(r) => {
                    let live = d_api.get(name).await?;
                    if live.metadata.uid != d.metadata.uid || live.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let owner = claim::Owner {
                        api_version: "apps/v1",
                        kind: "Deployment",
                        name,
                        uid: &owner_uid,
                        deleting: false,
                    };
                    let patch = claim::adopt_patch(&owner, &r.uid);
                    rs_api
                        .patch(&r.name, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await?;
                }
                Action::ReleaseReplicaSet(r) => {
                    let patch = claim::release_patch(&owner_uid, &r.uid);
                    match rs_api
                        .patch(&r.name, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await
                    {
                        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
                        other => drop(other?),
                    }
                }
                Action::CreateReplicaSet(rs) => {
                    rs_api.create(&PostParams::default(), &rs).await?;
                }
                Action::UpdateReplicaSet(rs) => {
                    let rs_name = rs.metadata.name.clone().unwrap_or_default();
                    rs_api.replace(&rs_name, &PostParams::default(), &rs).await?;
                }
                Action::DeleteReplicaSet(r) => {
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: Some(r.uid),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match rs_api.delete(&r.name, &params).await {
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        other => drop(other?),
                    }
                }
                Action::UpdateAnnotations(annotations) => {
                    let patch = json!({"metadata": {"annotations": annotations}});
                    d_api
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                Action::UpdateStatus(status) => {
                    let patch = json!({"status": status});
                    d_api
                        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                Action::Record(event) => self.recorder.record(&reference, &event).await,
            }
        }
        Ok(plan.requeue_after)
    }
}
