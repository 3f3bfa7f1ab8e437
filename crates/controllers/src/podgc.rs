//! The pod garbage collector: every `pod_gc_period` it deletes finished pods beyond
//! `--terminated-pod-gc-threshold` (oldest first), pods bound to nodes that no longer exist, and terminating
//! pods that were never scheduled (no kubelet will ever confirm their deletion). The choice is the pure
//! [`plan`]; the shell double-checks a missing node with a live read before deleting its pods.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::DeleteParams;
use kube::api::Preconditions;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::{Context, ControllerFuture, Error, pod};

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// Why a pod is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Finished, and more finished pods exist than the threshold allows.
    TerminatedOverThreshold,
    /// Bound to a node that does not exist.
    OrphanedNode,
    /// Being deleted but never scheduled.
    UnscheduledTerminating,
}

/// A pod to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collect {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub reason: Reason,
}

fn collect(p: &Pod, reason: Reason) -> Collect {
    Collect {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        reason,
    }
}

fn is_terminated(p: &Pod) -> bool {
    matches!(pod::phase(p), "Succeeded" | "Failed")
}

/// Kubernetes' `gcTerminated`, `gcOrphaned` and `gcUnscheduledTerminating`, in that order; a pod appears once.
/// `threshold` 0 disables the terminated-pod pass.
pub fn plan(pods: &[&Pod], node_exists: impl Fn(&str) -> bool, threshold: usize) -> Vec<Collect> {
    let mut out: Vec<Collect> = Vec::new();
    let mut terminated: Vec<&&Pod> = pods.iter().filter(|p| is_terminated(p)).collect();
    if threshold > 0 && terminated.len() > threshold {
        terminated.sort_by(|a, b| {
            let key = |p: &Pod| {
                (
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let excess = terminated.len() - threshold;
        out.extend(
            terminated[..excess]
                .iter()
                .map(|p| collect(p, Reason::TerminatedOverThreshold)),
        );
    }
    let chosen: HashSet<String> = out.iter().map(|c| c.uid.clone()).collect();
    for p in pods {
        if chosen.contains(p.metadata.uid.as_deref().unwrap_or("")) {
            continue;
        }
        let node = pod::node_name(p);
        if !node.is_empty() && !node_exists(node) {
            out.push(collect(p, Reason::OrphanedNode));
        } else if node.is_empty() && p.metadata.deletion_timestamp.is_some() {
            out.push(collect(p, Reason::UnscheduledTerminating));
        }
    }
    out
}

async fn run(ctx: Context) -> Result<(), Error> {
    let pod_informer = ctx.informers.get::<Pod>();
    let node_informer = ctx.informers.get::<Node>();
    pod_informer.wait_synced().await;
    node_informer.wait_synced().await;
    let options = ctx.options.cluster.clone();
    let mut tick = tokio::time::interval(options.pod_gc_period);
    loop {
        tick.tick().await;
        gc_pass(
            &ctx.client,
            pod_informer.store(),
            node_informer.store(),
            options.terminated_pod_gc_threshold,
        )
        .await;
    }
}

async fn gc_pass(client: &Client, pods: &Store<Pod>, nodes: &Store<Node>, threshold: usize) {
    let all = pods.state();
    let refs: Vec<&Pod> = all.iter().map(|p| &**p).collect();
    let plan = plan(&refs, |n| nodes.get(&ObjectRef::new(n)).is_some(), threshold);
    let node_api: Api<Node> = Api::all(client.clone());
    let mut confirmed_missing: HashSet<String> = HashSet::new();
    for c in plan {
        if c.reason == Reason::OrphanedNode {
            // The cache may not have seen a node that was just created: ask the API server.
            let Some(p) = pods.get(&ObjectRef::new(&c.name).within(&c.namespace)) else {
                continue;
            };
            let node = pod::node_name(&p).to_string();
            if !confirmed_missing.contains(&node) {
                match node_api.get_opt(&node).await {
                    Ok(None) => {
                        confirmed_missing.insert(node);
                    }
                    _ => continue,
                }
            }
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &c.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(c.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&c.name, &params).await {
            Ok(_) => tracing::info!(pod = %format!("{}/{}", c.namespace, c.name), reason = ?c.reason,
                "pod garbage collected"),
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {}
            Err(e) => tracing::info!(pod = %c.name, error = %e, "pod GC delete failed; retrying next pass"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::testing::{created_at, pod, ts, with_node};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn finished(name: &str, at: i64) -> Pod {
        let mut p = created_at(with_node(pod(name, &[]), "n1"), at);
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        p
    }

    fn names(c: &[Collect]) -> Vec<(&str, Reason)> {
        c.iter().map(|c| (c.name.as_str(), c.reason)).collect()
    }

    #[test]
    fn the_oldest_finished_pods_over_the_threshold_go() {
        let pods = [
            finished("c", 3),
            finished("a", 1),
            finished("b", 2),
            with_node(pod("running", &[]), "n1"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            names(&plan(&refs, |_| true, 2)),
            [("a", Reason::TerminatedOverThreshold)]
        );
        assert!(plan(&refs, |_| true, 3).is_empty());
        assert!(
            plan(&refs, |_| true, 0).is_empty(),
            "0 disables the terminated pass"
        );
    }

    #[test]
    fn pods_on_missing_nodes_and_unscheduled_terminating_pods_go() {
        let orphan = with_node(pod("orphan", &[]), "gone");
        let mut terminating = pod("unscheduled", &[]);
        terminating.metadata.deletion_timestamp = Some(Time(ts(1)));
        let pending = pod("pending", &[]);
        let fine = with_node(pod("fine", &[]), "n1");
        let pods = [orphan, terminating, pending, fine];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            names(&plan(&refs, |n| n == "n1", 100)),
            [
                ("orphan", Reason::OrphanedNode),
                ("unscheduled", Reason::UnscheduledTerminating)
            ]
        );
    }

    #[test]
    fn a_pod_is_collected_once() {
        let pods = [finished("old", 1), finished("new", 2)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let c = plan(&refs, |_| false, 1);
        assert_eq!(
            names(&c),
            [
                ("old", Reason::TerminatedOverThreshold),
                ("new", Reason::OrphanedNode)
            ]
        );
    }
}
