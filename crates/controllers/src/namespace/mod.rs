//! The namespace controller: a terminating namespace (deletionTimestamp set, `kubernetes` in
//! `spec.finalizers`) has every namespaced object in it deleted — the resource types found through discovery —
//! and, once nothing is left, is finalized (`PUT namespaces/{name}/finalize` without `kubernetes`) so the API
//! server removes it. The decisions are pure ([`sync`]); this shell does discovery, deletes and status writes.

pub mod sync;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, Discovery, Scope, verbs};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;

use crate::informer::Change;
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};

const NAME: &str = "namespace-controller";
/// How long one discovery result is reused across passes.
const DISCOVERY_TTL: Duration = Duration::from_secs(30);
/// How soon a namespace with content left is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// The namespaced resource types that can be listed and deleted, and the groups discovery failed for.
#[derive(Clone, Default)]
struct Discovered {
    resources: Vec<(ApiResource, ApiCapabilities)>,
    failures: Vec<String>,
}

struct Shell {
    client: Client,
    namespaces: Store<Namespace>,
    discovered: Mutex<Option<(Instant, Discovered)>>,
}

async fn run(ctx: Context) -> Result<(), Error> {
    let informer = ctx.informers.get::<Namespace>();
    informer.wait_synced().await;
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        namespaces: informer.store().clone(),
        discovered: Mutex::default(),
    });
    let queue = WorkQueue::new();
    informer.add_handler({
        let queue = queue.clone();
        move |c: &Change<Namespace>| {
            if let Some(ns) = &c.new
                && sync::needs_cleanup(ns)
            {
                queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        }
    });
    let worker = shell.clone();
    run_workers(queue, ctx.options.workers, NAME, move |name| {
        let shell = worker.clone();
        async move { shell.sync(&name).await }
    })
    .await;
    Err(Error::ControllerStopped("namespace"))
}

impl Shell {
    async fn sync(&self, name: &str) -> Result<Requeue, Error> {
        let Some(ns) = self
            .namespaces
            .get(&ObjectRef::new(name))
            .filter(|ns| sync::needs_cleanup(ns))
        else {
            return Ok(None);
        };
        let discovered = self.discover().await;
        let mut remaining = sync::Remaining {
            discovery_failures: discovered.failures.clone(),
            ..Default::default()
        };
        for (resource, caps) in &discovered.resources {
            self.delete_content(name, resource, caps, &mut remaining).await;
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        if remaining.is_empty() {
            let mut finalized = (*ns).clone();
            finalized.spec.get_or_insert_with(Default::default).finalizers = Some(sync::finalized(&ns));
            return match api
                .replace_subresource("finalize", name, &PostParams::default(), &finalized)
                .await
            {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        let conditions = sync::conditions(&remaining, Timestamp::now());
        if !sync::same_conditions(&ns, &conditions) {
            let patch = json!({"status": {"conditions": conditions}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(Some(RECHECK))
    }

    /// Namespaced resource types that support list and delete (reused for [`DISCOVERY_TTL`]).
    async fn discover(&self) -> Discovered {
        if let Some((at, d)) = self.discovered.lock().as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return d.clone();
        }
        let mut found = Discovered::default();
        match Discovery::new(self.client.clone()).run().await {
            Ok(discovery) => {
                for group in discovery.groups() {
                    for (resource, caps) in group.recommended_resources() {
                        if caps.scope == Scope::Namespaced
                            && caps.supports_operation(verbs::LIST)
                            && caps.supports_operation(verbs::DELETE)
                        {
                            found.resources.push((resource, caps));
                        }
                    }
                }
            }
            Err(e) => found.failures.push(e.to_string()),
        }
        if found.failures.is_empty() {
            *self.discovered.lock() = Some((Instant::now(), found.clone()));
        }
        found
    }

    /// Delete every object of one type in the namespace, then record what is still there.
    async fn delete_content(
        &self,
        ns: &str,
        resource: &ApiResource,
        caps: &ApiCapabilities,
        remaining: &mut sync::Remaining,
    ) {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, resource);
        let label = if resource.group.is_empty() {
            resource.plural.clone()
        } else {
            format!("{}.{}", resource.plural, resource.group)
        };
        let deleted = if caps.supports_operation(verbs::DELETE_COLLECTION) {
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
                .map(|_| ())
        } else {
            self.delete_each(&api).await
        };
        if let Err(e) = deleted {
            remaining.delete_failures.push(format!("{label}: {e}"));
            return;
        }
        match api.list_metadata(&ListParams::default()).await {
            Ok(left) if left.items.is_empty() => {}
            Ok(left) => {
                remaining.resources.insert(label, left.items.len());
                for item in &left.items {
                    for f in item.metadata.finalizers.iter().flatten() {
                        *remaining.finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
            Err(e) => remaining.delete_failures.push(format!("{label}: {e}")),
        }
    }

    async fn delete_each(&self, api: &Api<DynamicObject>) -> Result<(), kube::Error> {
        for item in api.list_metadata(&ListParams::default()).await?.items {
            let name = item.metadata.name.unwrap_or_default();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
