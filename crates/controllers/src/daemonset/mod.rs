//! The DaemonSet controller: one daemon pod on every eligible node, created with a required node affinity on
//! the node's name so the scheduler places it, replaced by RollingUpdate within `maxUnavailable`. The pure step
//! is [`sync::plan`]; this shell enqueues DaemonSets on DaemonSet, pod and node changes and executes plans with
//! [`Expectations`] so creations in flight are never repeated.

pub mod sync;

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use serde_json::json;

use crate::claim::{self, controller_of};
use crate::events::{Event, EventRecorder};
use crate::expectations::Expectations;
use crate::informer::{Change, key_of, split_key};
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};

const NAME: &str = "daemonset-controller";

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

struct Shell {
    client: kube::Client,
    daemon_sets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Arc<Expectations>,
    recorder: EventRecorder,
}

async fn run(ctx: Context) -> Result<(), Error> {
    let ds_informer = ctx.informers.get::<DaemonSet>();
    let pod_informer = ctx.informers.get::<Pod>();
    let node_informer = ctx.informers.get::<Node>();
    let revision_informer = ctx.informers.get::<ControllerRevision>();
    revision_informer.wait_synced().await;
    ds_informer.wait_synced().await;
    pod_informer.wait_synced().await;
    node_informer.wait_synced().await;
    let queue = WorkQueue::new();
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        daemon_sets: ds_informer.store().clone(),
        pods: pod_informer.store().clone(),
        nodes: node_informer.store().clone(),
        revisions: revision_informer.store().clone(),
        expectations: Arc::new(Expectations::default()),
        recorder: ctx.recorder.for_component(NAME),
    });

    ds_informer.add_handler({
        let (queue, shell) = (queue.clone(), shell.clone());
        move |c: &Change<DaemonSet>| {
            let key = key_of(&**c.latest());
            if c.new.is_none() {
                shell.expectations.forget(&key);
            }
            queue.add(key);
        }
    });
    pod_informer.add_handler({
        let (queue, shell) = (queue.clone(), shell.clone());
        move |c: &Change<Pod>| shell.pod_changed(c, &queue)
    });
    node_informer.add_handler({
        let (queue, shell) = (queue.clone(), shell.clone());
        move |c: &Change<Node>| {
            let relevant = match (&c.old, &c.new) {
                (Some(old), Some(new)) => {
                    old.metadata.labels != new.metadata.labels
                        || old.spec.as_ref().map(|s| &s.taints) != new.spec.as_ref().map(|s| &s.taints)
                }
                _ => true,
            };
            if relevant {
                shell
                    .daemon_sets
                    .state()
                    .iter()
                    .for_each(|ds| queue.add(key_of(&**ds)));
            }
        }
    });

    let worker = shell.clone();
    run_workers(queue, ctx.options.workers, NAME, move |key| {
        let shell = worker.clone();
        async move { shell.sync(&key).await }
    })
    .await;
    Err(Error::ControllerStopped("daemonset"))
}

impl Shell {
    fn controller_ds(&self, pod: &Pod) -> Option<Arc<DaemonSet>> {
        let r = controller_of(&pod.metadata).filter(|r| r.kind == "DaemonSet")?;
        let ds = self
            .daemon_sets
            .get(&ObjectRef::new(&r.name).within(pod.metadata.namespace.as_deref()?))?;
        (ds.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(ds)
    }

    fn pod_changed(&self, c: &Change<Pod>, queue: &WorkQueue) {
        let p = c.latest();
        let pod_key = key_of(&**p);
        if let Some(ds) = self.controller_ds(p) {
            let key = key_of(&*ds);
            match (&c.old, &c.new) {
                (None, Some(new)) if new.metadata.deletion_timestamp.is_none() => {
                    self.expectations.creation_observed(&key)
                }
                (_, None) => self.expectations.deletion_observed(&key, &pod_key),
                (Some(old), Some(new))
                    if old.metadata.deletion_timestamp.is_none()
                        && new.metadata.deletion_timestamp.is_some() =>
                {
                    self.expectations.deletion_observed(&key, &pod_key)
                }
                _ => {}
            }
            queue.add(key);
        } else if controller_of(&p.metadata).is_none() {
            for ds in self.daemon_sets.state_filter(|ds| {
                ds.metadata.namespace == p.metadata.namespace
                    && claim::selector_matches(
                        ds.spec.as_ref().map(|s| &s.selector),
                        p.metadata.labels.as_ref(),
                    )
            }) {
                queue.add(key_of(&*ds));
            }
        }
    }

    async fn sync(&self, key: &str) -> Result<Requeue, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let Some(ds) = self.daemon_sets.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let satisfied = self.expectations.satisfied(key, Instant::now());
        let nodes = self.nodes.state();
        let node_refs: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
        let pods = self
            .pods
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(ns));
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let plan = sync::plan(&ds, &node_refs, &pod_refs, satisfied, Timestamp::now());

        let ds_api: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let owner = sync::owner(&ds);
        for p in &plan.adopt {
            let patch = claim::adopt_patch(&owner, &p.uid);
            ignore_gone(
                pod_api
                    .patch(&p.name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await,
            )?;
        }
        for p in &plan.release {
            let patch = claim::release_patch(owner.uid, &p.uid);
            ignore_gone(
                pod_api
                    .patch(&p.name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await,
            )?;
        }
        self.record_revision(&ds).await?;
        let reference = ds.object_ref(&());
        let mut first_error = None;
        if !plan.create_on.is_empty() {
            self.expectations
                .expect_creations(key, plan.create_on.len(), Instant::now());
            let hash = sync::current_hash(&ds);
            let creates = plan.create_on.iter().map(|node| {
                let pod = sync::pod_for_node(&ds, node, &hash);
                let api = &pod_api;
                async move { api.create(&PostParams::default(), &pod).await }
            });
            for r in join_all(creates).await {
                match r {
                    Ok(p) => {
                        let msg = format!("Created pod: {}", p.metadata.name.unwrap_or_default());
                        self.recorder
                            .record(&reference, &Event::normal("SuccessfulCreate", msg))
                            .await;
                    }
                    Err(e) => {
                        self.expectations.creation_observed(key);
                        let msg = format!("Error creating: {e}");
                        self.recorder
                            .record(&reference, &Event::warning("FailedCreate", msg))
                            .await;
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if !plan.delete.is_empty() {
            let keys = plan.delete.iter().map(|p| format!("{ns}/{}", p.name));
            self.expectations.expect_deletions(key, keys, Instant::now());
            for p in &plan.delete {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(p.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match pod_api.delete(&p.name, &params).await {
                    Ok(_) => {
                        let msg = format!("Deleted pod: {}", p.name);
                        self.recorder
                            .record(&reference, &Event::normal("SuccessfulDelete", msg))
                            .await;
                    }
                    Err(e) => {
                        self.expectations
                            .deletion_observed(key, &format!("{ns}/{}", p.name));
                        if !matches!(&e, kube::Error::Api(s) if matches!(s.code, 404 | 409)) {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        if ds.status.as_ref() != Some(&plan.status) {
            let patch = json!({"status": plan.status});
            match ds_api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            // Pods become available only after minReadySeconds: look again then.
            None => Ok(ds
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .filter(|s| *s > 0)
                .map(|s| std::time::Duration::from_secs(s as u64))),
        }
    }
}

impl Shell {
    /// Make sure the current template has its ControllerRevision (for `kubectl rollout history`).
    async fn record_revision(&self, ds: &DaemonSet) -> Result<(), Error> {
        let ns = ds.metadata.namespace.as_deref().unwrap_or("default");
        let uid = ds.metadata.uid.as_deref();
        let owned = self.revisions.state_filter(|r| {
            r.metadata.namespace.as_deref() == Some(ns)
                && controller_of(&r.metadata).is_some_and(|o| Some(o.uid.as_str()) == uid)
        });
        let owned: Vec<&ControllerRevision> = owned.iter().map(|r| &**r).collect();
        let Some(revision) = sync::missing_revision(ds, &sync::current_hash(ds), &owned) else {
            return Ok(());
        };
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), &revision).await {
            Ok(_) => Ok(()),
            // Already written (our cache lags): the informer will show it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A pod deleted (404) or replaced (409/422 on the uid precondition) since we looked: nothing to do.
fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
