//! What the proxy knows: the node it runs on, the cluster's address ranges, and the Services and
//! EndpointSlices it watched — plus the endpoint selection rules kube-proxy applies per service port.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours, as Kubernetes).
pub const DEFAULT_AFFINITY_TIMEOUT: i32 = 10_800;

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// The text is not an IPv4 CIDR (`a.b.c.d/n`).
    #[error("{0:?} is not an IPv4 CIDR")]
    InvalidCidr(String),
}

/// An IPv4 network, kept normalized (host bits cleared) so it renders as nft expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let invalid = || ModelError::InvalidCidr(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix > 32 {
            return Err(invalid());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        Ok(Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `namespace/name` of a Service (and of the EndpointSlices that belong to it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of_service(svc: &Service) -> Option<ServiceKey> {
        Some(ServiceKey::new(
            svc.metadata.namespace.clone()?,
            svc.metadata.name.clone()?,
        ))
    }

    /// The Service an EndpointSlice belongs to (by its `kubernetes.io/service-name` label).
    pub fn of_slice(slice: &EndpointSlice) -> Option<ServiceKey> {
        let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        Some(ServiceKey::new(slice.metadata.namespace.clone()?, name.clone()))
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Node-wide settings that shape the base ruleset; they do not change while the proxy runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The nftables table (family `ip`), normally `rkube`.
    pub table: String,
    pub node_name: String,
    /// The node's addresses. NodePorts match every local address through `fib daddr type local`, so these
    /// are informational (kept for LB source-range allowances and logs).
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod network: traffic from it is "internal"; `ip saddr <cidr> ip daddr != <cidr>` is masqueraded.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// Addresses in it that are no live ClusterIP are dropped.
    pub service_cidr: Option<Ipv4Cidr>,
}

/// Everything [`crate::compile`] needs: the node and the watched objects.
#[derive(Clone, Debug)]
pub struct Model {
    pub node: NodeInfo,
    pub services: BTreeMap<ServiceKey, Service>,
    /// EndpointSlices per Service, by slice name.
    pub slices: BTreeMap<ServiceKey, BTreeMap<String, EndpointSlice>>,
}

impl Model {
    pub fn new(node: NodeInfo) -> Model {
        Model {
            node,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
        }
    }

    /// Add or replace a Service; objects without namespace or name are ignored.
    pub fn apply_service(&mut self, svc: Service) -> Option<ServiceKey> {
        let key = ServiceKey::of_service(&svc)?;
        self.services.insert(key.clone(), svc);
        Some(key)
    }

    /// Add or replace an EndpointSlice; a slice whose service label changed moves to its new Service.
    /// Returns the Services whose endpoints changed.
    pub fn apply_slice(&mut self, slice: EndpointSlice) -> Vec<ServiceKey> {
        let Some(name) = slice.metadata.name.clone() else {
            return Vec::new();
        };
        let mut touched = self.remove_slice_named(slice.metadata.namespace.as_deref(), &name);
        if let Some(key) = ServiceKey::of_slice(&slice) {
            self.slices.entry(key.clone()).or_default().insert(name, slice);
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        touched
    }

    /// Remove an EndpointSlice; returns the Services it belonged to.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) -> Vec<ServiceKey> {
        match &slice.metadata.name {
            Some(name) => self.remove_slice_named(slice.metadata.namespace.as_deref(), name),
            None => Vec::new(),
        }
    }

    fn remove_slice_named(&mut self, namespace: Option<&str>, name: &str) -> Vec<ServiceKey> {
        let mut touched = Vec::new();
        self.slices.retain(|key, slices| {
            if Some(key.namespace.as_str()) == namespace && slices.remove(name).is_some() {
                touched.push(key.clone());
            }
            !slices.is_empty()
        });
        touched
    }
}

/// One endpoint of one service port, after reading an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub node_name: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// The IPv4 endpoints of the service port `port` (matched by port name and protocol, as kube-proxy does),
/// deduplicated by address and port and sorted so that the rules are stable.
/// With `publishNotReadyAddresses` every endpoint counts as ready.
pub fn endpoints_for_port<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: &ServicePort,
    publish_not_ready: bool,
) -> Vec<Endpoint> {
    let want_name = port.name.as_deref().unwrap_or("");
    let want_protocol = port.protocol.as_deref().unwrap_or("TCP");
    let mut found: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(target) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == want_name
                && p.protocol.as_deref().unwrap_or("TCP") == want_protocol
        }) else {
            continue;
        };
        let Some(target_port) = target
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            // kube-proxy uses the first address only: the others are "for future use" in the API.
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let endpoint = Endpoint {
                ip,
                port: target_port,
                node_name: ep.node_name.clone(),
                ready: ready || publish_not_ready,
                serving: cond.and_then(|c| c.serving).unwrap_or(ready),
                terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
            };
            // A duplicate (an endpoint moving between slices) keeps its most usable form.
            found
                .entry((ip, target_port))
                .and_modify(|old| {
                    if endpoint.ready && !old.ready {
                        *old = endpoint.clone();
                    }
                })
                .or_insert(endpoint);
        }
    }
    found.into_values().collect()
}

/// kube-proxy's choice among `candidates` (already filtered by traffic policy): the ready endpoints; when
/// there are none, the ones still serving while terminating (so connections drain during a rollout).
pub fn usable(candidates: Vec<&Endpoint>) -> Vec<&Endpoint> {
    let ready: Vec<&Endpoint> = candidates
        .iter()
        .copied()
        .filter(|e| e.ready && !e.terminating)
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    let ready_terminating: Vec<&Endpoint> = candidates.iter().copied().filter(|e| e.ready).collect();
    if !ready_terminating.is_empty() {
        return ready_terminating;
    }
    candidates
        .into_iter()
        .filter(|e| e.serving && e.terminating)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_normalizes_and_matches() {
        let cidr: Ipv4Cidr = "10.42.3.7/16".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.42.0.0/16");
        assert!(cidr.contains("10.42.200.1".parse().unwrap()));
        assert!(!cidr.contains("10.43.0.1".parse().unwrap()));
        assert!("10.42.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.42.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("fd00::/8".parse::<Ipv4Cidr>().is_err());
    }

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port: 80,
            node_name: None,
            ready,
            serving,
            terminating,
        }
    }

    #[test]
    fn ready_endpoints_win_over_terminating_ones() {
        let all = [
            ep("10.0.0.1", true, true, false),
            ep("10.0.0.2", false, true, true),
        ];
        let chosen = usable(all.iter().collect());
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].ip.to_string(), "10.0.0.1");
    }

    #[test]
    fn serving_terminating_endpoints_are_used_when_none_is_ready() {
        let all = [
            ep("10.0.0.1", false, false, false),
            ep("10.0.0.2", false, true, true),
            ep("10.0.0.3", false, false, true),
        ];
        let chosen = usable(all.iter().collect());
        assert_eq!(
            chosen.iter().map(|e| e.ip.to_string()).collect::<Vec<_>>(),
            ["10.0.0.2"]
        );
    }
}
