//! The node's share of Services, started next to the pods: the nftables service proxy
//! ([`rkube_proxy::run`]), cluster DNS on the node IP ([`rkube_dns::run`]) published as this node's endpoint
//! of the `kube-dns` Service, and host-gw routes to the other nodes' pod CIDRs
//! ([`rkube_network::hostgw::run`]), and announcement (proxy ARP) of the LoadBalancer pool addresses this node
//! is elected for ([`rkube_network::announce::run`] with the servicelb controller's
//! [`announcer_for`](rkube_controllers::servicelb::announcer_for), so agent and controller agree; node addresses
//! are never announced). Each runs until `stop`; a failure is logged and does not stop the pods.

use std::net::{IpAddr, SocketAddr};

use rkube_network::RouteSync;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::AgentConfig;

/// The DNS port pods reach through the `kube-dns` ClusterIP.
const DNS_PORT: u16 = 53;

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

    let announce_client = client.clone();
    let announce_node = config.node_name.clone();
    let announce_stop = stop.clone();
    tasks.spawn(async move {
        // The uplink is whichever interface carries the node IP: that is where clients on the underlay ask.
        match rkube_network::Announcer::for_node_ip(node_ip).await {
            Ok(announcer) => {
                rkube_network::announce::run(
                    announce_client,
                    announce_node,
                    announcer,
                    rkube_controllers::servicelb::announcer_for,
                    announce_stop,
                )
                .await
            }
            Err(e) => tracing::error!(error = %e, "LoadBalancer IPs will not be announced from this node"),
        }
    });

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
