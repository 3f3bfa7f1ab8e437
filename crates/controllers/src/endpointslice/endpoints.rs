//! The pure part of the (legacy) Endpoints controller: the `subsets` of a Service's Endpoints object. Pods are
//! grouped by resolved port set like slices are; ready pods go to `addresses`, the others to
//! `notReadyAddresses`; terminating pods are left out unless the Service publishes not-ready addresses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::sync::{endpoint_ports, pod_hostname, pod_ipv4, selects, target_ref};
use crate::pod;

/// Label marking Endpoints objects this controller writes (only those are deleted with their Service).
pub const MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpoint-controller";

/// Whether this controller wrote the Endpoints object.
pub fn is_managed(ep: &Endpoints) -> bool {
    let labels = ep.metadata.labels.as_ref();
    labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY)
}

fn address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let node = pod::node_name(pod);
    Some(EndpointAddress {
        ip: pod_ipv4(pod)?.to_string(),
        hostname: pod_hostname(svc, pod),
        node_name: (!node.is_empty()).then(|| node.to_string()),
        target_ref: Some(target_ref(pod)),
    })
}

/// (name, port, protocol) of each port: what groups pods into subsets.
type PortKey = Vec<(String, i32, String)>;
/// Ready and not-ready addresses of one subset.
type Addresses = (Vec<EndpointAddress>, Vec<EndpointAddress>);

/// The subsets the Service's Endpoints object should have, in a canonical order.
pub fn desired_subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut groups: BTreeMap<PortKey, (Vec<EndpointPort>, Addresses)> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(svc, p)) {
        let phase = pod::phase(pod);
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        if pod.metadata.deletion_timestamp.is_some() && !publish_not_ready {
            continue;
        }
        let Some(addr) = address(svc, pod) else { continue };
        let ports: Vec<EndpointPort> = endpoint_ports(svc, pod)
            .into_iter()
            .map(|p| EndpointPort {
                name: p.name.filter(|n| !n.is_empty()),
                port: p.port.unwrap_or_default(),
                protocol: p.protocol,
                app_protocol: p.app_protocol,
            })
            .collect();
        let key = ports
            .iter()
            .map(|p| {
                let name = p.name.clone().unwrap_or_default();
                (name, p.port, p.protocol.clone().unwrap_or_default())
            })
            .collect();
        let (_, (ready, not_ready)) = groups.entry(key).or_insert_with(|| (ports, Default::default()));
        if publish_not_ready || pod::is_ready(pod) {
            ready.push(addr);
        } else {
            not_ready.push(addr);
        }
    }
    groups
        .into_values()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// The Endpoints object to write, or `None` when `current` already says it (no identical rewrites).
pub fn plan(svc: &Service, pods: &[&Pod], current: Option<&Endpoints>) -> Option<Endpoints> {
    let subsets = desired_subsets(svc, pods);
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let labels = Some(labels);
    if let Some(cur) = current {
        let cur_subsets = cur.subsets.clone().unwrap_or_default();
        if cur_subsets == subsets && cur.metadata.labels == labels {
            return None;
        }
    }
    Some(Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels,
            resource_version: current.and_then(|c| c.metadata.resource_version.clone()),
            annotations: current.and_then(|c| c.metadata.annotations.clone()),
            ..Default::default()
        },
        subsets: Some(subsets),
    })
}

#[cfg(test)]
mod tests {
    use super::super::sync::testing::*;
    use super::*;
    use crate::pod::testing::ts;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ips(a: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        a.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_are_split_and_terminating_ones_dropped() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(80));
        let a = web_pod("a", "10.42.0.3", 80, true);
        let b = web_pod("b", "10.42.0.2", 80, false);
        let mut c = web_pod("c", "10.42.0.4", 80, true);
        c.metadata.deletion_timestamp = Some(Time(ts(1)));
        let subsets = desired_subsets(&svc, &[&a, &b, &c]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.42.0.3"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.42.0.2"]);
        let port = &subsets[0].ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 80));
    }

    #[test]
    fn named_ports_give_one_subset_per_number() {
        let svc = service("web", &[("app", "web")], IntOrString::String("http".into()));
        let a = web_pod("a", "10.42.0.2", 8080, true);
        let b = web_pod("b", "10.42.0.3", 9090, true);
        assert_eq!(desired_subsets(&svc, &[&a, &b]).len(), 2);
    }

    #[test]
    fn identical_endpoints_are_not_rewritten() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(80));
        let a = web_pod("a", "10.42.0.2", 80, true);
        let mut written = plan(&svc, &[&a], None).expect("created at first");
        written.metadata.resource_version = Some("3".into());
        assert_eq!(plan(&svc, &[&a], Some(&written)), None);
        let b = web_pod("b", "10.42.0.5", 80, true);
        assert!(is_managed(&written));
        let update = plan(&svc, &[&a, &b], Some(&written)).expect("a new pod changes it");
        assert_eq!(update.metadata.resource_version.as_deref(), Some("3"));
        assert_eq!(
            ips(&update.subsets.unwrap()[0].addresses),
            ["10.42.0.2", "10.42.0.5"]
        );
    }

    #[test]
    fn no_pods_means_empty_subsets() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(80));
        assert_eq!(plan(&svc, &[], None).unwrap().subsets, Some(vec![]));
    }
}
