//! The EndpointSlice controller and the legacy Endpoints controller: each Service with a selector gets
//! EndpointSlices (and an Endpoints object) listing the IPs of the pods it selects with their readiness. The
//! pure steps are [`sync::plan`] and [`endpoints::plan`]; this shell enqueues the Services a pod, slice or
//! Endpoints change touches and writes only what differs.

pub mod endpoints;
pub mod sync;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use parking_lot::Mutex;

use crate::informer::{Change, key_of, split_key};
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx, Target::Slices))
}

pub fn start_endpoints(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx, Target::Endpoints))
}

/// Which object kind a controller instance maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Slices,
    Endpoints,
}

struct Shell {
    client: Client,
    target: Target,
    services: Store<Service>,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    /// Per Service key: when and what we last wrote, until the cache shows it.
    written: Mutex<HashMap<String, (Instant, sync::Written)>>,
}

/// How long a write may stay invisible in the cache before we stop waiting for it and act anyway.
const STALE_CACHE_LIMIT: Duration = Duration::from_secs(10);

async fn run(ctx: Context, target: Target) -> Result<(), Error> {
    let svc_informer = ctx.informers.get::<Service>();
    let pod_informer = ctx.informers.get::<Pod>();
    let slice_informer = ctx.informers.get::<EndpointSlice>();
    let ep_informer = ctx.informers.get::<Endpoints>();
    svc_informer.wait_synced().await;
    pod_informer.wait_synced().await;
    match target {
        Target::Slices => slice_informer.wait_synced().await,
        Target::Endpoints => ep_informer.wait_synced().await,
    }
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        target,
        services: svc_informer.store().clone(),
        pods: pod_informer.store().clone(),
        slices: slice_informer.store().clone(),
        endpoints: ep_informer.store().clone(),
        written: Mutex::default(),
    });
    let queue = WorkQueue::new();

    svc_informer.add_handler({
        let queue = queue.clone();
        move |c: &Change<Service>| queue.add(key_of(&**c.latest()))
    });
    pod_informer.add_handler({
        let (queue, shell) = (queue.clone(), shell.clone());
        move |c: &Change<Pod>| {
            for pod in c.old.iter().chain(c.new.iter()) {
                let ns = pod.metadata.namespace.as_deref();
                for svc in shell
                    .services
                    .state_filter(|s| s.metadata.namespace.as_deref() == ns && sync::selects(s, pod))
                {
                    queue.add(key_of(&*svc));
                }
            }
        }
    });
    match target {
        Target::Slices => slice_informer.add_handler({
            let queue = queue.clone();
            move |c: &Change<EndpointSlice>| {
                let slice = c.latest();
                let labels = slice.metadata.labels.as_ref();
                if let (Some(ns), Some(svc)) = (
                    slice.metadata.namespace.as_deref(),
                    labels.and_then(|l| l.get(sync::SERVICE_NAME_LABEL)),
                ) && labels
                    .and_then(|l| l.get(sync::MANAGED_BY_LABEL))
                    .map(String::as_str)
                    == Some(sync::MANAGED_BY)
                {
                    queue.add(format!("{ns}/{svc}"));
                }
            }
        }),
        Target::Endpoints => ep_informer.add_handler({
            let queue = queue.clone();
            move |c: &Change<Endpoints>| queue.add(key_of(&**c.latest()))
        }),
    }

    let name = match target {
        Target::Slices => "endpointslice-controller",
        Target::Endpoints => "endpoint-controller",
    };
    let worker = shell.clone();
    run_workers(queue, ctx.options.workers, name, move |key| {
        let shell = worker.clone();
        async move { shell.sync(&key).await }
    })
    .await;
    Err(Error::ControllerStopped(name))
}

impl Shell {
    async fn sync(&self, key: &str) -> Result<Requeue, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        tracing::debug!(target = ?self.target, key, "sync");
        let svc = self
            .services
            .get(&ObjectRef::new(name).within(ns))
            .filter(|s| sync::manages(s) && s.metadata.deletion_timestamp.is_none());
        let pods = self
            .pods
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(ns));
        let pods: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        match self.target {
            Target::Slices => self.sync_slices(key, svc.as_deref(), &pods).await,
            Target::Endpoints => self
                .sync_endpoints(ns, name, svc.as_deref(), &pods)
                .await
                .map(|()| None),
        }
    }

    async fn sync_slices(&self, key: &str, svc: Option<&Service>, pods: &[&Pod]) -> Result<Requeue, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let existing = self
            .slices
            .state_filter(|s| s.metadata.namespace.as_deref() == Some(ns) && sync::is_managed_slice(s, name));
        let existing: Vec<&EndpointSlice> = existing.iter().map(|s| &**s).collect();
        {
            let mut written = self.written.lock();
            if let Some((at, w)) = written.get(key) {
                if !sync::cache_caught_up(w, &existing) && at.elapsed() < STALE_CACHE_LIMIT {
                    return Ok(Some(Duration::from_millis(100)));
                }
                written.remove(key);
            }
        }
        let plan = match svc {
            Some(svc) => sync::plan(svc, pods, &existing),
            // The Service is gone (or no longer selects): its managed slices go with it.
            None => sync::Plan {
                delete: existing.iter().filter_map(|s| s.metadata.name.clone()).collect(),
                ..Default::default()
            },
        };
        let mut written = sync::Written::new();
        let result = self.write_slices(&api, &plan, &mut written).await;
        if !written.is_empty() {
            self.written
                .lock()
                .insert(key.to_string(), (Instant::now(), written));
        }
        result.map(|()| None)
    }

    async fn write_slices(
        &self,
        api: &Api<EndpointSlice>,
        plan: &sync::Plan,
        written: &mut sync::Written,
    ) -> Result<(), Error> {
        for s in &plan.update {
            let slice_name = s.metadata.name.clone().unwrap_or_default();
            if let Some(new) = ignore_not_found(api.replace(&slice_name, &PostParams::default(), s).await)? {
                written.push((slice_name, new.metadata.resource_version));
            }
        }
        for s in &plan.create {
            let new = api.create(&PostParams::default(), s).await?;
            written.push((
                new.metadata.name.unwrap_or_default(),
                new.metadata.resource_version,
            ));
        }
        for slice_name in &plan.delete {
            ignore_not_found(api.delete(slice_name, &DeleteParams::default()).await)?;
            written.push((slice_name.clone(), None));
        }
        Ok(())
    }

    async fn sync_endpoints(
        &self,
        ns: &str,
        name: &str,
        svc: Option<&Service>,
        pods: &[&Pod],
    ) -> Result<(), Error> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let current = self.endpoints.get(&ObjectRef::new(name).within(ns));
        let Some(svc) = svc else {
            // Only Endpoints this controller wrote go with their Service; others belong to whoever wrote them.
            let service_exists = self.services.get(&ObjectRef::new(name).within(ns)).is_some();
            if current.as_deref().is_some_and(endpoints::is_managed) && !service_exists {
                ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
            }
            return Ok(());
        };
        match endpoints::plan(svc, pods, current.as_deref()) {
            None => Ok(()),
            Some(ep) if current.is_some() => {
                ignore_not_found(api.replace(name, &PostParams::default(), &ep).await).map(|_| ())
            }
            Some(ep) => match api.create(&PostParams::default(), &ep).await {
                // Created by a writer our cache has not seen yet: the informer event requeues us.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                r => r.map(|_| ()).map_err(Error::from),
            },
        }
    }
}

/// The result, or `None` when the object was already gone.
fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
