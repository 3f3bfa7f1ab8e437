//! The host-gw loop an agent runs: watches Nodes and keeps [`RouteSync`] in step — a route to every other
//! node's `spec.podCIDR` via its InternalIP, removed when the Node object goes away.
//!
//! NotReady nodes keep their route: their pods may still be running (a late lease is no reason to cut traffic
//! to them); eviction moves the pods, and deleting the Node removes the route.

use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};

use crate::routes::{RouteSync, parse_cidr};
use crate::watch::Cache;

/// How often the routes are re-applied even without Node changes (repairs drift and retries failures).
const RESYNC: Duration = Duration::from_secs(10);

/// `(pod CIDR, node IP)` of every node except `self_name` that has a pod CIDR and an address of the same family
/// (InternalIP preferred). Sorted by pod CIDR, so equal inputs give equal outputs.
pub fn peers<'a>(nodes: impl IntoIterator<Item = &'a Node>, self_name: &str) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(self_name) {
            continue;
        }
        let spec = node.spec.as_ref();
        let cidrs = spec
            .and_then(|s| s.pod_cidrs.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default();
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        let addresses: Vec<(&str, IpAddr)> = addresses
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a.type_.as_str(), a.address.parse().ok()?)))
            .collect();
        for cidr in cidrs {
            let Some(parsed) = parse_cidr(&cidr) else { continue };
            let same_family = |ip: &IpAddr| ip.is_ipv4() == parsed.addr.is_ipv4();
            let ip = addresses
                .iter()
                .find(|(t, ip)| *t == "InternalIP" && same_family(ip))
                .or_else(|| addresses.iter().find(|(_, ip)| same_family(ip)));
            if let Some((_, ip)) = ip {
                out.push((parsed.to_string(), *ip));
            }
        }
    }
    out.sort();
    out
}

/// Watches Nodes through `client` and keeps this node's host-gw routes (in the calling thread's network
/// namespace) in step, until `stop` turns true. Sync failures are logged and retried every few seconds.
pub async fn run(
    client: kube::Client,
    node_name: String,
    routes: RouteSync,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(client);
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut nodes: Cache<Node> = Cache::default();
    let mut applied: Option<Vec<(String, IpAddr)>> = None;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { return },
            event = events.next() => match event {
                Some(Ok(event)) => nodes.apply(event),
                Some(Err(e)) => tracing::warn!(error = %e, "watching nodes for pod CIDR routes"),
                None => return,
            },
            _ = resync.tick() => applied = None,
        }
        if !nodes.listed {
            continue;
        }
        let want = peers(nodes.objects.values(), &node_name);
        if applied.as_ref() != Some(&want) {
            match routes.sync(&want).await {
                Ok(_) => applied = Some(want),
                Err(e) => tracing::warn!(error = %e, "syncing pod CIDR routes"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: Option<&str>, addrs: &[(&str, &str)]) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(String::from),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn peers_are_other_nodes_with_a_cidr_via_their_internal_ip() {
        let nodes = [
            node("me", Some("10.42.0.0/24"), &[("InternalIP", "172.31.0.1")]),
            node(
                "b",
                Some("10.42.2.0/24"),
                &[
                    ("Hostname", "b"),
                    ("ExternalIP", "192.0.2.9"),
                    ("InternalIP", "172.31.0.2"),
                ],
            ),
            node("a", Some("10.42.1.0/24"), &[("InternalIP", "172.31.0.3")]),
            node("no-cidr-yet", None, &[("InternalIP", "172.31.0.4")]),
            node("no-address", Some("10.42.4.0/24"), &[]),
        ];
        assert_eq!(
            peers(&nodes, "me"),
            vec![
                ("10.42.1.0/24".to_string(), "172.31.0.3".parse().unwrap()),
                ("10.42.2.0/24".to_string(), "172.31.0.2".parse().unwrap()),
            ]
        );
    }
}
