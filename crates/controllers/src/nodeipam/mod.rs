//! Node IPAM: each Node without `spec.podCIDR` gets the next free block of the cluster CIDR (`spec.podCIDR` and
//! `spec.podCIDRs`); the set of taken blocks is rebuilt from the existing nodes at start and a block is released
//! when its node is deleted. The allocator is the pure [`cidrset::CidrSet`].

pub mod cidrset;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;

use self::cidrset::CidrSet;
use crate::informer::Change;
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};

const NAME: &str = "node-ipam-controller";

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// The node's pod CIDR, if it has one.
pub fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec.as_ref()?.pod_cidr.as_deref().filter(|c| !c.is_empty())
}

struct Allocations {
    set: CidrSet,
    /// What we assigned per node name, so a node seen again before the cache shows our patch gets the same
    /// block rather than a second one.
    assigned: HashMap<String, String>,
}

struct Shell {
    client: Client,
    nodes: Store<Node>,
    alloc: Mutex<Allocations>,
}

async fn run(ctx: Context) -> Result<(), Error> {
    let options = &ctx.options.cluster;
    let set = match CidrSet::new(&options.cluster_cidr, options.node_cidr_mask_size) {
        Ok(set) => set,
        Err(e) => {
            tracing::error!(error = %e, "node IPAM disabled: bad cluster CIDR");
            return std::future::pending().await;
        }
    };
    let informer = ctx.informers.get::<Node>();
    informer.wait_synced().await;
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        nodes: informer.store().clone(),
        alloc: Mutex::new(Allocations {
            set,
            assigned: HashMap::new(),
        }),
    });
    {
        let mut alloc = shell.alloc.lock();
        for node in shell.nodes.state() {
            if let Some(cidr) = pod_cidr(&node)
                && let Err(e) = alloc.set.occupy(cidr)
            {
                tracing::warn!(node = ?node.metadata.name, error = %e, "node has a pod CIDR outside the cluster CIDR");
            }
        }
    }
    let queue = WorkQueue::new();
    informer.add_handler({
        let (queue, shell) = (queue.clone(), shell.clone());
        move |c: &Change<Node>| {
            let name = c.latest().metadata.name.clone().unwrap_or_default();
            match &c.new {
                Some(node) if pod_cidr(node).is_none() => queue.add(name),
                Some(_) => {}
                None => shell.release(&name, c.latest()),
            }
        }
    });
    let worker = shell.clone();
    run_workers(queue, ctx.options.workers, NAME, move |name| {
        let shell = worker.clone();
        async move { shell.sync(&name).await }
    })
    .await;
    Err(Error::ControllerStopped("nodeipam"))
}

impl Shell {
    fn release(&self, name: &str, node: &Node) {
        let mut alloc = self.alloc.lock();
        let cidr = alloc
            .assigned
            .remove(name)
            .or_else(|| pod_cidr(node).map(String::from));
        if let Some(cidr) = cidr {
            let _ = alloc.set.release(&cidr);
        }
    }

    async fn sync(&self, name: &str) -> Result<Requeue, Error> {
        let Some(node) = self.nodes.get(&ObjectRef::new(name)) else {
            return Ok(None);
        };
        if let Some(cidr) = pod_cidr(&node) {
            let _ = self.alloc.lock().set.occupy(cidr);
            return Ok(None);
        }
        let cidr = {
            let mut alloc = self.alloc.lock();
            match alloc.assigned.get(name) {
                Some(c) => c.clone(),
                None => {
                    let c = match alloc.set.allocate_next() {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(node = name, error = %e, "cannot allocate a pod CIDR");
                            return Ok(Some(std::time::Duration::from_secs(10)));
                        }
                    };
                    alloc.assigned.insert(name.to_string(), c.clone());
                    c
                }
            }
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = name, cidr = %cidr, "assigned pod CIDR");
                Ok(None)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.release(name, &node);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}
