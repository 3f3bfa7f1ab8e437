//! The ReplicaSet controller: keeps `spec.replicas` pods matching each ReplicaSet. The pure step is
//! [`sync::plan`]; this shell wires informer handlers to a work queue and executes plans through the API, with
//! [`Expectations`] so creations still in flight are never repeated.

pub mod sync;

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::claim::{self, controller_of};
use crate::events::{Event, EventRecorder};
use crate::expectations::Expectations;
use crate::informer::{Change, key_of, split_key};
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error, pod};

const NAME: &str = "replicaset-controller";

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// The controller's I/O side. It holds stores and a client, never the [`Context`]: the informers keep their
/// handlers, the handlers keep the shell, so a shell holding the informers would keep them alive forever.
struct Shell {
    client: kube::Client,
    workers: usize,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
    recorder: EventRecorder,
}

async fn run(ctx: Context) -> Result<(), Error> {
    let rs_informer = ctx.informers.get::<ReplicaSet>();
    let pod_informer = ctx.informers.get::<Pod>();
    let queue = WorkQueue::new();
    let expectations = Arc::new(Expectations::default());
    let shell = Arc::new(Shell {
        recorder: ctx.recorder.for_component(NAME),
        replica_sets: rs_informer.store().clone(),
        pods: pod_informer.store().clone(),
        expectations: expectations.clone(),
        client: ctx.client.clone(),
        workers: ctx.options.workers,
    });
    rs_informer.wait_synced().await;
    pod_informer.wait_synced().await;

    rs_informer.add_handler({
        let (queue, expectations) = (queue.clone(), expectations.clone());
        move |c: &Change<ReplicaSet>| {
            let key = key_of(&**c.latest());
            if c.new.is_none() {
                expectations.forget(&key);
            }
            queue.add(key);
        }
    });
    pod_informer.add_handler({
        let (queue, shell) = (queue.clone(), shell.clone());
        move |c: &Change<Pod>| shell.pod_changed(c, &queue)
    });

    let sync_shell = shell.clone();
    run_workers(queue, shell.workers, NAME, move |key| {
        let shell = sync_shell.clone();
        async move { shell.sync(&key).await }
    })
    .await;
    Err(Error::ControllerStopped("replicaset"))
}

impl Shell {
    /// The ReplicaSet controlling `meta`'s object, if it exists (same name and UID).
    fn controller_rs(&self, meta: &ObjectMeta) -> Option<Arc<ReplicaSet>> {
        let r = controller_of(meta).filter(|r| r.kind == "ReplicaSet")?;
        let rs = self
            .replica_sets
            .get(&ObjectRef::new(&r.name).within(meta.namespace.as_deref()?))?;
        (rs.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(rs)
    }

    /// Every ReplicaSet in the pod's namespace whose selector matches it (for orphans).
    fn matching_rs(&self, pod: &Pod) -> Vec<Arc<ReplicaSet>> {
        let ns = pod.metadata.namespace.as_deref();
        self.replica_sets.state_filter(|rs| {
            rs.metadata.namespace.as_deref() == ns
                && claim::selector_matches(
                    rs.spec.as_ref().map(|s| &s.selector),
                    pod.metadata.labels.as_ref(),
                )
        })
    }

    /// Kubernetes' addPod/updatePod/deletePod: lower expectations and enqueue the owner (or, for an orphan,
    /// every ReplicaSet that may adopt it).
    fn pod_changed(&self, c: &Change<Pod>, queue: &WorkQueue) {
        let pod_key = key_of(&**c.latest());
        match (&c.old, &c.new) {
            (None, Some(new)) => {
                if let Some(rs) = self.controller_rs(&new.metadata) {
                    let key = key_of(&*rs);
                    if new.metadata.deletion_timestamp.is_some() {
                        self.expectations.deletion_observed(&key, &pod_key);
                    } else {
                        self.expectations.creation_observed(&key);
                    }
                    queue.add(key);
                } else {
                    self.matching_rs(new)
                        .iter()
                        .for_each(|rs| queue.add(key_of(&**rs)));
                }
            }
            (Some(old), Some(new)) => {
                let old_rs = self.controller_rs(&old.metadata);
                let new_rs = self.controller_rs(&new.metadata);
                if new.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none()
                    && let Some(rs) = &new_rs
                {
                    self.expectations.deletion_observed(&key_of(&**rs), &pod_key);
                }
                let old_key = old_rs.as_ref().map(|rs| key_of(&**rs));
                let new_key = new_rs.as_ref().map(|rs| key_of(&**rs));
                if old_key != new_key {
                    old_key.into_iter().for_each(|k| queue.add(k));
                }
                match new_key {
                    Some(k) => queue.add(k),
                    None => {
                        let relabeled = old.metadata.labels != new.metadata.labels;
                        if relabeled || old_rs.is_some() {
                            self.matching_rs(new)
                                .iter()
                                .for_each(|rs| queue.add(key_of(&**rs)));
                        }
                    }
                }
            }
            (Some(old), None) => {
                if let Some(rs) = self.controller_rs(&old.metadata) {
                    let key = key_of(&*rs);
                    self.expectations.deletion_observed(&key, &pod_key);
                    queue.add(key);
                }
            }
            (None, None) => {}
        }
    }

    async fn sync(&self, key: &str) -> Result<Requeue, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let Some(rs) = self.replica_sets.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let satisfied = self.expectations.satisfied(key, Instant::now());
        let pods = self
            .pods
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(ns));
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let related = self.related_pods(&rs, &pods);
        let plan = sync::plan(&rs, &pod_refs, &related, satisfied, Timestamp::now());
        tracing::debug!(
            key,
            satisfied,
            adopt = plan.adopt.len(),
            release = plan.release.len(),
            create = plan.create,
            delete = plan.delete.len(),
            replicas = plan.status.replicas,
            ready = ?plan.status.ready_replicas,
            "replicaset sync"
        );

        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let owner = sync::owner(&rs);
        if !plan.adopt.is_empty() {
            // Adopt only if the ReplicaSet we saw is still the live one and not being deleted.
            let live = rs_api.get(name).await?;
            if live.metadata.uid == rs.metadata.uid && live.metadata.deletion_timestamp.is_none() {
                for p in &plan.adopt {
                    let patch = claim::adopt_patch(&owner, &p.uid);
                    ignore_gone(
                        pod_api
                            .patch(&p.name, &PatchParams::default(), &Patch::Strategic(&patch))
                            .await,
                    )?;
                }
            }
        }
        for p in &plan.release {
            let patch = claim::release_patch(owner.uid, &p.uid);
            ignore_gone(
                pod_api
                    .patch(&p.name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await,
            )?;
        }
        let mut result = Ok(());
        if plan.create > 0 {
            result = self.create_pods(key, &rs, &pod_api, plan.create).await;
        } else if !plan.delete.is_empty() {
            result = self.delete_pods(key, &rs, &pod_api, &plan.delete).await;
        }
        let failure = result.as_ref().err().map(|e| {
            let reason = if plan.create > 0 {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            (reason, api_message(e))
        });
        let mut status = plan.status.clone();
        sync::set_replica_failure(&mut status, failure, Timestamp::now());
        if rs.status.as_ref() != Some(&status) {
            let patch = json!({"status": status});
            match rs_api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        result.map(|_| plan.requeue_after)
    }

    /// Active pods of the ReplicaSets that share this one's controller (a Deployment's other revisions).
    fn related_pods<'p>(&self, rs: &ReplicaSet, pods: &'p [Arc<Pod>]) -> Vec<&'p Pod> {
        let Some(owner) = controller_of(&rs.metadata) else {
            return Vec::new();
        };
        let siblings: Vec<String> = self
            .replica_sets
            .state_filter(|other| {
                other.metadata.namespace == rs.metadata.namespace
                    && other.metadata.uid != rs.metadata.uid
                    && controller_of(&other.metadata).is_some_and(|o| o.uid == owner.uid)
            })
            .iter()
            .filter_map(|o| o.metadata.uid.clone())
            .collect();
        pods.iter()
            .map(|p| &**p)
            .filter(|p| {
                pod::is_active(p) && controller_of(&p.metadata).is_some_and(|o| siblings.contains(&o.uid))
            })
            .collect()
    }

    /// Create `count` pods in slow-start batches (1, 2, 4, …): a failing batch stops the rest, so a quota or
    /// admission error costs one request, not hundreds.
    async fn create_pods(
        &self,
        key: &str,
        rs: &ReplicaSet,
        api: &Api<Pod>,
        count: usize,
    ) -> Result<(), Error> {
        self.expectations.expect_creations(key, count, Instant::now());
        let template = pod_from_template(rs);
        let reference = rs.object_ref(&());
        let params = PostParams::default();
        let mut remaining = count;
        let mut batch = 1;
        while remaining > 0 {
            let n = batch.min(remaining);
            let results = join_all((0..n).map(|_| api.create(&params, &template))).await;
            remaining -= n;
            let mut first_error = None;
            for r in results {
                match r {
                    Ok(created) => {
                        let msg = format!("Created pod: {}", created.name_any());
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
            if let Some(e) = first_error {
                for _ in 0..remaining {
                    self.expectations.creation_observed(key);
                }
                return Err(e.into());
            }
            batch *= 2;
        }
        Ok(())
    }

    async fn delete_pods(
        &self,
        key: &str,
        rs: &ReplicaSet,
        api: &Api<Pod>,
        pods: &[sync::PodRef],
    ) -> Result<(), Error> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let pod_keys = pods.iter().map(|p| format!("{ns}/{}", p.name));
        self.expectations.expect_deletions(key, pod_keys, Instant::now());
        let reference = rs.object_ref(&());
        let deletes = pods.iter().map(|p| {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(p.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            async move { (p, api.delete(&p.name, &params).await) }
        });
        let mut first_error = None;
        for (p, result) in join_all(deletes).await {
            match result {
                Ok(_) => {
                    let msg = format!("Deleted pod: {}", p.name);
                    self.recorder
                        .record(&reference, &Event::normal("SuccessfulDelete", msg))
                        .await;
                }
                Err(e) if is_not_found(&e) => self
                    .expectations
                    .deletion_observed(key, &format!("{ns}/{}", p.name)),
                Err(e) => {
                    self.expectations
                        .deletion_observed(key, &format!("{ns}/{}", p.name));
                    let msg = format!("Error deleting: {e}");
                    self.recorder
                        .record(&reference, &Event::warning("FailedDelete", msg))
                        .await;
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}

/// A pod for the ReplicaSet's template: `generateName: <rs>-`, the template's labels and annotations, and the
/// ReplicaSet as its controller.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or(""))),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![sync::owner(rs).controller_ref()]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The API server's own words for a failed request (what Kubernetes puts in condition messages).
fn api_message(e: &Error) -> String {
    match e {
        Error::Api(kube::Error::Api(status)) => status.message.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A pod deleted (404) or changed identity (409/422 on the uid precondition) since we looked: nothing to do.
fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
