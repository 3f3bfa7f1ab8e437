//! The node's share of Services, started next to the pods: the nftables service proxy
//! ([`rkube_proxy::run`]), cluster DNS on the node IP ([`rkube_dns::run`]) published as this node's endpoint
//! of the `kube-dns` Service, and host-gw routes to the other nodes' pod CIDRs
//! ([`rkube_network::hostgw::run`]), and announcement (proxy ARP, [`rkube_network::Announcer`]) of the
//! LoadBalancer pool addresses this node is elected for by the servicelb controller's
//! [`announced_by`](rkube_controllers::servicelb::announced_by): the same election the controller documents
//! (excluded nodes and, for `externalTrafficPolicy: Local`, nodes without a ready endpoint never announce; node
//! addresses are never announced). Each runs until `stop`; a failure is logged and does not stop the pods.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use rkube_network::RouteSync;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::AgentConfig;

/// The DNS port pods reach through the `kube-dns` ClusterIP.
const DNS_PORT: u16 = 53;
/// How often the LoadBalancer addresses are announced again without a change (the gratuitous ARP refreshes
/// neighbours; a failed announcement is retried).
const ANNOUNCE_RESYNC: Duration = Duration::from_secs(30);

pub(crate) fn start(
    tasks: &mut JoinSet<()>,
    client: kube::Client,
    config: &AgentConfig,
    node_ip: IpAddr,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let routes = RouteSync::new(std::slice::from_ref(&config.cluster_cidr))?
        .with_local_fallbacks(std::slice::from_ref(&config.service_cidr))?;
    tasks.spawn(rkube_network::hostgw::run(
        client.clone(),
        config.node_name.clone(),
        routes,
        stop.clone(),
    ));

    let proxy = rkube_proxy::ProxyConfig::new(
        config.node_name.clone(),
        vec![node_ip],
        &config.cluster_cidr,
        &config.service_cidr,
    );
    let proxy_client = client.clone();
    let proxy_stop = stop.clone();
    tasks.spawn(async move {
        if let Err(e) = rkube_proxy::run(proxy_client, proxy, proxy_stop).await {
            tracing::error!(error = %e, "service proxy stopped");
        }
    });

    tasks.spawn(announce(
        client.clone(),
        config.node_name.clone(),
        node_ip,
        stop.clone(),
    ));

    let mut dns = rkube_dns::DnsConfig::new(vec![SocketAddr::new(node_ip, DNS_PORT)]);
    dns.zone = config.cluster_domain.clone();
    let node_name = config.node_name.clone();
    tasks.spawn(async move {
        let serve = rkube_dns::run(client.clone(), dns, stop);
        let publish = async {
            if let Err(e) = rkube_dns::publish_node_endpoint(client.clone(), &node_name, node_ip).await {
                tracing::warn!(error = %e, "publishing this node's kube-dns endpoint failed");
            }
        };
        let (served, ()) = tokio::join!(serve, publish);
        if let Err(e) = served {
            tracing::error!(error = %e, "cluster DNS stopped");
        }
    });
    Ok(())
}

/// Keeps this node announcing exactly the LoadBalancer addresses it is elected for, from reflectors of
/// Services, EndpointSlices and Nodes (the election depends on all three), until `stop`.
async fn announce(client: kube::Client, node_name: String, node_ip: IpAddr, mut stop: watch::Receiver<bool>) {
    // The uplink is whichever interface carries the node IP: that is where clients on the underlay ask.
    let announcer = match rkube_network::Announcer::for_node_ip(node_ip).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "LoadBalancer IPs will not be announced from this node");
            return;
        }
    };
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let config = watcher::Config::default();
    let changes = futures::stream::select_all([
        reflector(
            services_writer,
            watcher(Api::<Service>::all(client.clone()), config.clone()),
        )
        .default_backoff()
        .map(|e| e.map(drop))
        .boxed(),
        reflector(
            slices_writer,
            watcher(Api::<EndpointSlice>::all(client.clone()), config.clone()),
        )
        .default_backoff()
        .map(|e| e.map(drop))
        .boxed(),
        reflector(nodes_writer, watcher(Api::<Node>::all(client), config))
            .default_backoff()
            .map(|e| e.map(drop))
            .boxed(),
    ]);
    let mut changes = std::pin::pin!(changes);
    let mut applied: Option<Vec<IpAddr>> = None;
    let mut resync = tokio::time::interval(ANNOUNCE_RESYNC);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            change = changes.next() => match change {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "watching for LoadBalancer IPs"),
                None => return,
            },
            _ = resync.tick() => applied = None,
        }
        // Announce nothing (and withdraw nothing) before every reflector has listed once.
        let listed = [
            services.wait_until_ready().now_or_never(),
            slices.wait_until_ready().now_or_never(),
            nodes.wait_until_ready().now_or_never(),
        ];
        if !listed.iter().all(|l| matches!(l, Some(Ok(())))) {
            continue;
        }
        // Only IPv4 is announced (IPv6 would need proxy NDP); the controller hands out what the pool holds.
        let want: Vec<IpAddr> = rkube_controllers::servicelb::announced_by(
            &node_name,
            &services.state(),
            &slices.state(),
            &nodes.state(),
        )
        .into_iter()
        .filter(IpAddr::is_ipv4)
        .collect();
        if applied.as_ref() != Some(&want) {
            match announcer.sync(&want).await {
                Ok(()) => applied = Some(want),
                Err(e) => tracing::warn!(error = %e, "announcing LoadBalancer IPs"),
            }
        }
    }
}
