//! What every cluster starts with: the namespaces `default`, `kube-system`, `kube-public`,
//! `kube-node-lease`, the `kubernetes` Service (first address of the service CIDR, 443 → 6443) with its
//! Endpoints and EndpointSlice pointing at the API server, and the `kube-dns` Service of the cluster DNS (tenth
//! address, 53/UDP and 53/TCP; each node agent publishes its own endpoint). Idempotent: run at every start.

use serde_json::{Value, json};

use crate::ApiState;
use crate::request::Params;
use crate::rest::{Decision, create_object, guaranteed_update, object_key};
use crate::status::ApiError;

/// Why bootstrapping failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Writing a bootstrap object failed.
    #[error("creating {what}: {source}")]
    Write { what: String, source: ApiError },
}

/// The first usable address of a CIDR (`10.43.0.0/16` → `10.43.0.1`).
pub fn first_address(cidr: &str) -> Option<std::net::Ipv4Addr> {
    let (net, _) = cidr.split_once('/')?;
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(net) + 1))
}

/// The `n`th address of a CIDR counting the network address as 0 (`10.43.0.0/16`, 10 → `10.43.0.10`), if the
/// CIDR is that large.
pub fn nth_address(cidr: &str, n: u128) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let (network, prefix) = crate::alloc::parse_cidr(cidr)?;
    let host_bits = if network.is_ipv4() { 32 } else { 128 } - u32::from(prefix);
    if host_bits < 128 && n >> host_bits != 0 {
        return None;
    }
    Some(match network {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) + n as u32)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) + n)),
    })
}

/// The `kube-dns` Service: selector-less (the node agents' DNS servers publish their own EndpointSlices) with
/// `internalTrafficPolicy: Local` so each node's pods ask their own node. The labels are kube-dns' and CoreDNS'
/// so `kubectl cluster-info` lists it ("CoreDNS is running at …"), as on kubeadm and k3s clusters.
fn kube_dns_service(ip: std::net::IpAddr) -> Value {
    let ip = ip.to_string();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns",
            "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "internalTrafficPolicy": "Local",
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
    })
}

async fn ensure(
    state: &ApiState,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
    obj: Value,
) -> Result<(), BootstrapError> {
    let kind = state
        .registry
        .get(group, "v1", plural)
        .expect("bootstrap kinds are served");
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let what = format!("{} {name}", kind.group_resource());
    let wrap = |source| BootstrapError::Write {
        what: what.clone(),
        source,
    };
    let key = object_key(namespace, &name);
    // An existing object is never re-created: a Service's explicit ClusterIP would be refused as taken.
    let exists = crate::rest::read(state, kind, &key)
        .await
        .map_err(wrap)?
        .is_some();
    let created = if exists {
        Err(ApiError::AlreadyExists {
            resource: kind.group_resource(),
            name: name.clone(),
        })
    } else {
        create_object(state, kind, namespace, obj.clone(), &Params::default()).await
    };
    match created {
        Ok(_) => Ok(()),
        Err(ApiError::AlreadyExists { .. }) if plural == "namespaces" || plural == "services" => Ok(()),
        Err(ApiError::AlreadyExists { .. }) => {
            // Endpoints follow the server's address, which may have changed since the last start.
            guaranteed_update(state, kind, &key, false, |current| {
                let Some(current) = current else {
                    return Ok(Decision::Unchanged);
                };
                let mut new = current.value.clone();
                for (k, v) in obj.as_object().into_iter().flatten() {
                    if k != "metadata" {
                        new[k] = v.clone();
                    }
                }
                Ok(if new == current.value {
                    Decision::Unchanged
                } else {
                    Decision::Write(new)
                })
            })
            .await
            .map(|_| ())
            .map_err(wrap)
        }
        Err(e) => Err(wrap(e)),
    }
}

/// Creates the default namespaces, the `kubernetes` Service with its endpoints and the `kube-dns` Service.
pub async fn bootstrap(state: &ApiState) -> Result<(), BootstrapError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(state, "", "namespaces", None, json!({"metadata": {"name": ns}})).await?;
    }
    let ip = first_address(&state.options.service_cidr)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let port = state.options.advertise_port;
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    ensure(state, "", "services", Some("default"), service).await?;
    let address = state.options.advertise_address.to_string();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    ensure(state, "", "endpoints", Some("default"), endpoints).await?;
    let family = if state.options.advertise_address.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": "rkube-apiserver"}},
        "addressType": family,
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    ensure(
        state,
        "discovery.k8s.io",
        "endpointslices",
        Some("default"),
        slice,
    )
    .await?;
    // Created before the API serves anyone, so its address is still free; if a user took it (after deleting
    // kube-dns) the cluster still starts, only without cluster DNS.
    match nth_address(&state.options.service_cidr, 10) {
        Some(ip) => {
            let created = ensure(state, "", "services", Some("kube-system"), kube_dns_service(ip)).await;
            if let Err(e) = created {
                tracing::warn!(error = %e, "no kube-dns Service: cluster DNS is unreachable by its ClusterIP");
            }
        }
        None => tracing::warn!(
            service_cidr = %state.options.service_cidr,
            "the service CIDR has no tenth address: no kube-dns Service"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_address_of_the_service_cidr() {
        assert_eq!(first_address("10.43.0.0/16").unwrap().to_string(), "10.43.0.1");
        assert_eq!(first_address("nonsense"), None);
    }

    #[test]
    fn kube_dns_gets_the_tenth_address() {
        assert_eq!(nth_address("10.43.0.0/16", 10).unwrap().to_string(), "10.43.0.10");
        assert_eq!(nth_address("10.96.0.0/12", 10).unwrap().to_string(), "10.96.0.10");
        assert_eq!(
            nth_address("fd00:43::/112", 10).unwrap().to_string(),
            "fd00:43::a"
        );
        assert_eq!(nth_address("10.43.0.0/29", 10), None, "a /29 has 8 addresses");
        assert_eq!(nth_address("10.43.0.0/28", 10).unwrap().to_string(), "10.43.0.10");
        let svc = kube_dns_service(nth_address("10.43.0.0/16", 10).unwrap());
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.43.0.10"]));
        assert_eq!(svc["metadata"]["labels"]["kubernetes.io/cluster-service"], "true");
        assert!(svc["spec"].get("selector").is_none());
    }
}
