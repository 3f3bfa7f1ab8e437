//! [`Announcer`]: makes this node answer ARP for LoadBalancer IPs without binding them to an interface
//! (NETWORKING.md §4, MetalLB's layer-2 mode).
//!
//! Per IP: a proxy-ARP entry on the uplink (`ip neigh add proxy <ip> dev <uplink>`), a /32 route to the IP via
//! `lo` (proxy ARP only answers for addresses routed through *another* device than the one asking, and only
//! with forwarding on), and a few gratuitous ARPs so neighbours that cached the previous owner switch to us.
//! Binding the IP instead would make `fib daddr type local` match it and leak NodePorts onto it.
//!
//! The gratuitous ARPs are sent from an `AF_PACKET` socket opened in the calling thread's namespace; the
//! interface address comes from `getifaddrs`, so no unsafe code is needed (busybox `arping` refuses to send
//! from an address that is not local).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, SockaddrLike, sendto, socket};

use crate::command::{self, CommandError};
use crate::routes::ROUTE_PROTOCOL;
use crate::watch::Cache;

/// How often the wanted IPs are re-announced without any change (refreshes neighbours, retries failures).
const RESYNC: Duration = Duration::from_secs(30);
/// How many gratuitous ARP frames (request + reply form each) one announcement sends.
const GARP_ROUNDS: usize = 2;

/// Errors of LoadBalancer IP announcement.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// Only IPv4 is announced (IPv6 would need proxy NDP and unsolicited neighbour advertisements).
    #[error("announcing {0} is not supported: only IPv4 LoadBalancer IPs are announced")]
    Unsupported(IpAddr),
    /// No interface in this namespace carries the node IP given to [`Announcer::for_node_ip`].
    #[error("no interface has address {0}")]
    NoUplink(IpAddr),
    /// The uplink has no link-layer address (not an Ethernet device).
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    /// `ip` failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Sending the gratuitous ARP failed.
    #[error("gratuitous ARP on {uplink}: {source}")]
    Garp { uplink: String, source: nix::Error },
    /// Turning on forwarding (needed for proxy ARP) failed.
    #[error("cannot enable net.ipv4.ip_forward: {0}")]
    Sysctl(std::io::Error),
    /// `ip -j` printed something we cannot read.
    #[error("cannot read `ip -j` output: {0}")]
    Parse(#[from] serde_json::Error),
}

/// Announces LoadBalancer IPs on one uplink interface of the calling thread's network namespace.
#[derive(Debug, Clone)]
pub struct Announcer {
    uplink: String,
}

impl Announcer {
    /// Announces on `uplink` (the interface facing the other nodes and clients).
    pub fn new(uplink: impl Into<String>) -> Self {
        Announcer {
            uplink: uplink.into(),
        }
    }

    /// Announces on whichever interface carries `node_ip` (the node's InternalIP).
    pub async fn for_node_ip(node_ip: IpAddr) -> Result<Self, AnnounceError> {
        #[derive(serde::Deserialize)]
        struct Link {
            ifname: String,
            #[serde(default)]
            addr_info: Vec<AddrInfo>,
        }
        #[derive(serde::Deserialize)]
        struct AddrInfo {
            local: Option<IpAddr>,
        }
        let links: Vec<Link> = serde_json::from_str(&command::ip(&["-j", "addr", "show"]).await?)?;
        links
            .into_iter()
            .find(|l| l.addr_info.iter().any(|a| a.local == Some(node_ip)))
            .map(|l| Announcer::new(l.ifname))
            .ok_or(AnnounceError::NoUplink(node_ip))
    }

    /// The interface we announce on.
    pub fn uplink(&self) -> &str {
        &self.uplink
    }

    /// Starts answering ARP for `ip` and tells the neighbours; idempotent (re-announcing re-sends the GARP,
    /// which is what a takeover needs).
    pub async fn announce(&self, ip: IpAddr) -> Result<(), AnnounceError> {
        let IpAddr::V4(v4) = ip else {
            return Err(AnnounceError::Unsupported(ip));
        };
        // Proxy ARP answers only when the namespace forwards (the node does anyway for its pods).
        crate::sysctl::ensure("net/ipv4/ip_forward", "1").map_err(AnnounceError::Sysctl)?;
        let host = format!("{v4}/32");
        command::ip(&[
            "route",
            "replace",
            &host,
            "dev",
            "lo",
            "proto",
            &ROUTE_PROTOCOL.to_string(),
        ])
        .await?;
        match command::ip(&["neigh", "add", "proxy", &v4.to_string(), "dev", &self.uplink]).await {
            Err(e) if e.stderr().contains("File exists") => {}
            other => {
                other?;
            }
        }
        send_gratuitous_arp(&self.uplink, v4)?;
        tracing::info!(%ip, uplink = %self.uplink, "announcing LoadBalancer IP");
        Ok(())
    }

    /// Stops answering for `ip`: removes the proxy entry and the route; idempotent.
    pub async fn withdraw(&self, ip: IpAddr) -> Result<(), AnnounceError> {
        let IpAddr::V4(v4) = ip else {
            return Err(AnnounceError::Unsupported(ip));
        };
        let gone = |e: &CommandError| {
            let s = e.stderr();
            s.contains("No such file") || s.contains("No such process") || s.contains("not found")
        };
        match command::ip(&["neigh", "del", "proxy", &v4.to_string(), "dev", &self.uplink]).await {
            Err(e) if !gone(&e) => return Err(e.into()),
            _ => {}
        }
        let host = format!("{v4}/32");
        match command::ip(&[
            "route",
            "del",
            &host,
            "dev",
            "lo",
            "proto",
            &ROUTE_PROTOCOL.to_string(),
        ])
        .await
        {
            Err(e) if !gone(&e) => return Err(e.into()),
            _ => {}
        }
        tracing::info!(%ip, uplink = %self.uplink, "withdrew LoadBalancer IP");
        Ok(())
    }

    /// The IPs we currently announce on our uplink (a proxy-ARP entry plus our `/32 dev lo` route).
    pub async fn announced(&self) -> Result<Vec<IpAddr>, AnnounceError> {
        #[derive(serde::Deserialize)]
        struct Entry {
            dst: String,
        }
        async fn list(args: &[&str]) -> Result<Vec<String>, AnnounceError> {
            let text = command::ip(args).await?;
            let entries: Vec<Entry> = if text.trim().is_empty() {
                Vec::new()
            } else {
                serde_json::from_str(&text)?
            };
            Ok(entries.into_iter().map(|e| e.dst).collect())
        }
        let proxied = list(&["-j", "-4", "neigh", "show", "proxy", "dev", &self.uplink]).await?;
        // Only entries with our /32 route count: proxy entries someone else made are not ours to withdraw.
        let proto = ROUTE_PROTOCOL.to_string();
        let routed = list(&["-j", "-4", "route", "show", "dev", "lo", "proto", &proto]).await?;
        let mut ips: Vec<IpAddr> = proxied
            .iter()
            .filter(|ip| {
                routed
                    .iter()
                    .any(|r| r == *ip || r.strip_suffix("/32") == Some(ip.as_str()))
            })
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }

    /// Announces exactly `ips` (this node's share of the LoadBalancer IPs): withdraws the others.
    pub async fn sync(&self, ips: &[IpAddr]) -> Result<(), AnnounceError> {
        for old in self.announced().await? {
            if !ips.contains(&old) {
                self.withdraw(old).await?;
            }
        }
        for ip in ips {
            self.announce(*ip).await?;
        }
        Ok(())
    }
}

/// The LoadBalancer IPs this node must announce: every `status.loadBalancer.ingress[].ip` of a LoadBalancer
/// Service for which `elect(ip, ready nodes)` names `self_name`. IPs that are node addresses (the no-pool
/// fallback, as k3s ServiceLB) are skipped: their node already answers ARP for them. Sorted, no duplicates.
/// `elect` is the controllers' `servicelb::announcer_for`, so the agent and the controller agree.
pub fn wanted<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    nodes: impl IntoIterator<Item = &'a Node>,
    self_name: &str,
    elect: impl Fn(IpAddr, &[String]) -> Option<String>,
) -> Vec<IpAddr> {
    let mut ready = Vec::new();
    let mut node_ips = Vec::new();
    for node in nodes {
        let status = node.status.as_ref();
        node_ips.extend(
            status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|a| a.address.parse::<IpAddr>().ok()),
        );
        let is_ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if let (true, Some(name)) = (is_ready, node.metadata.name.clone()) {
            ready.push(name);
        }
    }
    ready.sort();
    let mut out: Vec<IpAddr> = services
        .into_iter()
        .filter(|svc| svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
        .filter_map(|svc| svc.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref())
        .flatten()
        .filter_map(|ing| ing.ip.as_deref()?.parse::<IpAddr>().ok())
        .filter(|ip| ip.is_ipv4() && !node_ips.contains(ip))
        .filter(|ip| elect(*ip, &ready).as_deref() == Some(self_name))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Watches Services and Nodes through `client` and keeps `announcer` announcing exactly [`wanted`] for this
/// node, until `stop` turns true. Re-announces periodically (the gratuitous ARP refreshes neighbours) and
/// retries failures.
pub async fn run(
    client: kube::Client,
    node_name: String,
    announcer: Announcer,
    elect: impl Fn(IpAddr, &[String]) -> Option<String> + Send,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{Config, watcher};

    let services = watcher(kube::Api::<Service>::all(client.clone()), Config::default()).default_backoff();
    let nodes = watcher(kube::Api::<Node>::all(client), Config::default()).default_backoff();
    let (mut services, mut nodes) = (std::pin::pin!(services), std::pin::pin!(nodes));
    let mut service_cache: Cache<Service> = Cache::default();
    let mut node_cache: Cache<Node> = Cache::default();
    let mut applied: Option<Vec<IpAddr>> = None;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { return },
            event = services.next() => match event {
                Some(Ok(event)) => service_cache.apply(event),
                Some(Err(e)) => tracing::warn!(error = %e, "watching services for LoadBalancer IPs"),
                None => return,
            },
            event = nodes.next() => match event {
                Some(Ok(event)) => node_cache.apply(event),
                Some(Err(e)) => tracing::warn!(error = %e, "watching nodes for LoadBalancer IPs"),
                None => return,
            },
            _ = resync.tick() => applied = None,
        }
        if !service_cache.listed || !node_cache.listed {
            continue;
        }
        let want = wanted(
            service_cache.objects.values(),
            node_cache.objects.values(),
            &node_name,
            &elect,
        );
        if applied.as_ref() != Some(&want) {
            match announcer.sync(&want).await {
                Ok(()) => applied = Some(want),
                Err(e) => tracing::warn!(error = %e, "announcing LoadBalancer IPs"),
            }
        }
    }
}

/// A gratuitous ARP frame (Ethernet broadcast, sender = target = `ip`): `op` 1 is the request form, 2 the
/// reply form; Linux neighbours update an existing entry on either (they never create one: `arp_accept=0`).
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr, op: u16) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); // ARP
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target MAC: zero in the request form (RFC 5227 announcement); our own in the reply form, which is what
    // Linux requires to treat a reply as gratuitous.
    if op == 2 {
        f[32..38].copy_from_slice(&mac);
    }
    f[38..42].copy_from_slice(&ip.octets());
    f
}

fn send_gratuitous_arp(uplink: &str, ip: Ipv4Addr) -> Result<(), AnnounceError> {
    let err = |source| AnnounceError::Garp {
        uplink: uplink.to_string(),
        source,
    };
    // The AF_PACKET address of the uplink (ifindex + MAC) as the kernel reports it: no hand-built sockaddr.
    let link = nix::ifaddrs::getifaddrs()
        .map_err(err)?
        .filter(|a| a.interface_name == uplink)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
        .ok_or_else(|| AnnounceError::NoMac(uplink.to_string()))?;
    let mac = link
        .addr()
        .filter(|m| m.iter().any(|b| *b != 0))
        .ok_or_else(|| AnnounceError::NoMac(uplink.to_string()))?;
    debug_assert_eq!(link.family(), Some(AddressFamily::Packet));
    let sock = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None).map_err(err)?;
    for _ in 0..GARP_ROUNDS {
        for op in [1, 2] {
            sendto(
                sock.as_raw_fd(),
                &garp_frame(mac, ip, op),
                &link,
                MsgFlags::empty(),
            )
            .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_is_a_broadcast_announcement_of_the_ip() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = garp_frame(mac, Ipv4Addr::new(10, 0, 0, 7), 1);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[10, 0, 0, 7]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 7]);
        let reply = garp_frame(mac, Ipv4Addr::new(10, 0, 0, 7), 2);
        assert_eq!(&reply[20..22], &[0, 2]);
        assert_eq!(&reply[32..38], &mac);
    }

    fn node(name: &str, ip: &str, ready: bool) -> Node {
        use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeStatus};
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(type_: &str, ips: &[&str]) -> Service {
        use k8s_openapi::api::core::v1::{
            LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
        };
        Service {
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ips.iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn wanted_are_the_pool_ips_elected_to_this_node() {
        let nodes = [
            node("a", "172.31.0.1", true),
            node("b", "172.31.0.2", true),
            node("c", "172.31.0.3", false),
        ];
        let services = [
            service("LoadBalancer", &["172.31.0.200", "172.31.0.201"]),
            service("LoadBalancer", &["172.31.0.2"]), // no pool: a node's own IP, nothing to announce
            service("LoadBalancer", &["fd00::5"]),    // IPv6 is not announced
            service("ClusterIP", &["172.31.0.202"]),
        ];
        // Elect by the last octet's parity among the ready nodes; record who was a candidate.
        let candidates = std::sync::Mutex::new(Vec::new());
        let elect = |ip: IpAddr, ready: &[String]| {
            candidates.lock().unwrap().push(ready.to_vec());
            let IpAddr::V4(v4) = ip else { return None };
            ready.get(v4.octets()[3] as usize % ready.len()).cloned()
        };
        assert_eq!(
            wanted(&services, &nodes, "a", elect),
            vec!["172.31.0.200".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            wanted(&services, &nodes, "b", elect),
            vec!["172.31.0.201".parse::<IpAddr>().unwrap()]
        );
        assert!(wanted(&services, &nodes, "c", elect).is_empty());
        assert!(
            candidates
                .lock()
                .unwrap()
                .iter()
                .all(|c| c == &["a".to_string(), "b".to_string()])
        );
    }
}
