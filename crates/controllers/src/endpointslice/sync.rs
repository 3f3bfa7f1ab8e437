//! The pure part of the EndpointSlice controller: a Service and its pods in, the slices to create, update and
//! delete out. Endpoints are grouped by their resolved port set (a named `targetPort` can resolve to different
//! numbers on different pods), each group cut into slices of at most [`MAX_ENDPOINTS_PER_SLICE`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pod;

/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Endpoints grouped by port set, ordered by the ports.
pub type PortGroups = Vec<(Vec<EndpointPort>, Vec<Endpoint>)>;

type PortKey = Vec<(Option<String>, Option<i32>, Option<String>)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
    ports
        .iter()
        .map(|p| (p.name.clone(), p.port, p.protocol.clone()))
        .collect()
}

/// What to write so the Service's slices match its pods.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    /// Existing slices (name and resourceVersion kept) with new content.
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// A Service whose endpoints the controllers manage: it has a non-empty selector and is not `ExternalName`.
pub fn manages(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() != Some("ExternalName") && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// Whether the Service's selector picks the pod (same namespace, every selector label equal).
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    if !manages(svc) || svc.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    let labels = pod.metadata.labels.as_ref();
    selector.is_some_and(|sel| sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)))
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The pod's IPv4 address, if it has one.
pub fn pod_ipv4(pod: &Pod) -> Option<&str> {
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    (!ip.is_empty() && !ip.contains(':')).then_some(ip)
}

/// A pod that can back a Service at all: has an IP and has not finished.
fn is_candidate(pod: &Pod) -> bool {
    let phase = pod::phase(pod);
    pod_ipv4(pod).is_some() && phase != "Succeeded" && phase != "Failed"
}

/// The port number `port`'s target resolves to on `pod`: a number as is, a name looked up in the pod's
/// containers (same protocol); `None` when the name is not declared by the pod.
pub fn resolve_target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let spec = pod.spec.as_ref()?;
            spec.containers.iter().find_map(|c| {
                c.ports.as_ref()?.iter().find_map(|p| {
                    let proto = p.protocol.as_deref().unwrap_or("TCP");
                    (p.name.as_deref() == Some(name.as_str()) && proto == protocol)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

/// The Service's ports as resolved for one pod (ports the pod does not declare are left out).
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
    let mut out: Vec<EndpointPort> = ports
        .iter()
        .filter_map(|p| {
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(resolve_target_port(p, pod)?),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
    out
}

/// A reference to the pod, as endpoints carry it.
pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The DNS hostname a pod has under the Service (`<hostname>.<service>.<ns>.svc`): its `spec.hostname` when
/// its `spec.subdomain` names this Service in its namespace (Kubernetes' `ShouldSetHostname`), as for the
/// pods of a StatefulSet behind its headless Service.
pub fn pod_hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_namespace = svc.metadata.namespace == pod.metadata.namespace;
    (same_namespace && spec.subdomain.is_some() && spec.subdomain == svc.metadata.name)
        .then(|| hostname.to_string())
}

/// The pod as a slice endpoint: `ready` means ready and not terminating (always true with
/// `publishNotReadyAddresses`), `serving` is the pod's readiness even while terminating.
pub fn endpoint(svc: &Service, pod: &Pod) -> Option<Endpoint> {
    let ip = pod_ipv4(pod)?;
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = pod::is_ready(pod);
    let ready = publish_not_ready(svc) || (serving && !terminating);
    let node = pod::node_name(pod);
    Some(Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving || publish_not_ready(svc)),
            terminating: Some(terminating),
        }),
        node_name: (!node.is_empty()).then(|| node.to_string()),
        target_ref: Some(target_ref(pod)),
        hostname: pod_hostname(svc, pod),
        ..Default::default()
    })
}

/// The desired endpoints of the Service, grouped by resolved port set, each group sorted by pod name.
pub fn desired_groups(svc: &Service, pods: &[&Pod]) -> PortGroups {
    let mut groups: BTreeMap<PortKey, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(svc, p) && is_candidate(p)) {
        if let Some(ep) = endpoint(svc, pod) {
            let ports = endpoint_ports(svc, pod);
            groups
                .entry(port_key(&ports))
                .or_insert_with(|| (ports, Vec::new()))
                .1
                .push(ep);
        }
    }
    let mut groups: PortGroups = groups.into_values().collect();
    for (_, eps) in &mut groups {
        eps.sort_by(|a, b| endpoint_sort_key(a).cmp(&endpoint_sort_key(b)));
    }
    groups
}

fn endpoint_sort_key(e: &Endpoint) -> (Option<&str>, &[String]) {
    let name = e.target_ref.as_ref().and_then(|r| r.name.as_deref());
    (name, &e.addresses)
}

/// The owner reference every managed slice carries.
pub fn service_owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The labels of a managed slice: the Service's own labels plus the service-name and managed-by labels.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

/// Whether this controller manages the slice for the Service.
pub fn is_managed_slice(slice: &EndpointSlice, service_name: &str) -> bool {
    let labels = slice.metadata.labels.as_ref();
    labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY)
        && labels.and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str) == Some(service_name)
}

fn sorted_ports(slice: &EndpointSlice) -> Vec<EndpointPort> {
    let mut ports = slice.ports.clone().unwrap_or_default();
    ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
    ports
}

fn sorted_endpoints(eps: &[Endpoint]) -> Vec<Endpoint> {
    let mut eps = eps.to_vec();
    eps.sort_by(|a, b| endpoint_sort_key(a).cmp(&endpoint_sort_key(b)));
    eps
}

/// Whether an existing slice already says what a desired one says (ports, endpoints, labels, owner).
fn same_content(existing: &EndpointSlice, desired: &EndpointSlice) -> bool {
    existing.address_type == desired.address_type
        && sorted_ports(existing) == sorted_ports(desired)
        && sorted_endpoints(&existing.endpoints) == sorted_endpoints(&desired.endpoints)
        && existing.metadata.labels == desired.metadata.labels
        && existing.metadata.owner_references == desired.metadata.owner_references
}

/// Plan the writes that make `existing` (the Service's managed slices) match its pods. Slices whose content is
/// already right are left alone; the rest are reused for changed content before new ones are created.
pub fn plan(svc: &Service, pods: &[&Pod], existing: &[&EndpointSlice]) -> Plan {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut desired = Vec::new();
    let mut groups = desired_groups(svc, pods);
    if groups.is_empty() {
        // Like Kubernetes, a Service without endpoints still has one placeholder slice (no ports, no endpoints).
        groups.push((Vec::new(), Vec::new()));
    }
    for (ports, eps) in groups {
        let chunks: Vec<&[Endpoint]> = if eps.is_empty() {
            vec![&[]]
        } else {
            eps.chunks(MAX_ENDPOINTS_PER_SLICE).collect()
        };
        for chunk in chunks {
            desired.push(EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{name}-")),
                    namespace: svc.metadata.namespace.clone(),
                    labels: Some(slice_labels(svc)),
                    owner_references: Some(vec![service_owner(svc)]),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: chunk.to_vec(),
                ports: Some(ports.clone()),
            });
        }
    }

    let mut unused: Vec<&EndpointSlice> = existing.to_vec();
    unused.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut changed = Vec::new();
    for d in desired {
        match unused.iter().position(|e| same_content(e, &d)) {
            Some(i) => {
                unused.remove(i);
            }
            None => changed.push(d),
        }
    }
    let mut plan = Plan::default();
    for d in changed {
        if unused.is_empty() {
            plan.create.push(d);
        } else {
            let old = unused.remove(0);
            let mut updated = d;
            updated.metadata.name = old.metadata.name.clone();
            updated.metadata.generate_name = old.metadata.generate_name.clone();
            updated.metadata.resource_version = old.metadata.resource_version.clone();
            updated.metadata.annotations = old.metadata.annotations.clone();
            plan.update.push(updated);
        }
    }
    plan.delete = unused.iter().filter_map(|e| e.metadata.name.clone()).collect();
    plan
}

/// What this controller last wrote for one Service: slice name → resourceVersion written (`None`: deleted).
pub type Written = Vec<(String, Option<String>)>;

/// Whether the cached slices already reflect our last writes (Kubernetes' `EndpointSliceTracker.StaleSlices`):
/// acting on a cache that has not seen a slice we just created would create it again.
pub fn cache_caught_up(written: &Written, cached: &[&EndpointSlice]) -> bool {
    let rv = |s: &EndpointSlice| {
        s.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    written.iter().all(|(name, want)| {
        let seen = cached.iter().find(|s| s.metadata.name.as_deref() == Some(name));
        match (want, seen) {
            (None, seen) => seen.is_none(),
            (Some(_), None) => false,
            (Some(want), Some(s)) => rv(s) >= want.parse::<u64>().ok(),
        }
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-built Services and pods with IPs and ports.
    use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, Service, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use crate::pod::testing::{pod, ready_at, running, with_node};

    pub fn service(name: &str, selector: &[(&str, &str)], target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(target),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A pod labeled `app=web` on `node-1` with `ip`, declaring container port `http` = `http_port`.
    pub fn web_pod(name: &str, ip: &str, http_port: i32, ready: bool) -> Pod {
        let p = with_node(pod(name, &[("app", "web")]), "node-1");
        let mut p = if ready { ready_at(p, 1) } else { running(p) };
        p.status.as_mut().unwrap().pod_ip = Some(ip.into());
        p.spec.as_mut().unwrap().containers = vec![Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: http_port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }];
        p
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::pod::testing::ts;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ips(slice: &EndpointSlice) -> Vec<&str> {
        slice.endpoints.iter().map(|e| e.addresses[0].as_str()).collect()
    }

    fn named(mut s: EndpointSlice, name: &str) -> EndpointSlice {
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some("7".into());
        s
    }

    #[test]
    fn ready_pods_become_one_labeled_owned_slice() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(8080));
        let a = web_pod("a", "10.42.0.2", 8080, true);
        let b = web_pod("b", "10.42.0.3", 8080, true);
        let plan = plan(&svc, &[&a, &b], &[]);
        assert_eq!(plan.create.len(), 1);
        let s = &plan.create[0];
        assert_eq!(ips(s), ["10.42.0.2", "10.42.0.3"]);
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-web");
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
        let e = &s.endpoints[0];
        assert_eq!(e.node_name.as_deref(), Some("node-1"));
        assert_eq!(e.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        assert_eq!(
            e.conditions,
            Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false)
            })
        );
    }

    #[test]
    fn pods_whose_subdomain_is_the_service_publish_their_hostname() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(8080));
        let mut named = web_pod("a", "10.42.0.2", 8080, true);
        let spec = named.spec.as_mut().unwrap();
        spec.hostname = Some("web-0".into());
        spec.subdomain = Some("web".into());
        let mut elsewhere = web_pod("b", "10.42.0.3", 8080, true);
        let spec = elsewhere.spec.as_mut().unwrap();
        spec.hostname = Some("web-1".into());
        spec.subdomain = Some("other".into());
        let mut only_hostname = web_pod("c", "10.42.0.4", 8080, true);
        only_hostname.spec.as_mut().unwrap().hostname = Some("web-2".into());
        let plan = plan(&svc, &[&named, &elsewhere, &only_hostname], &[]);
        let hostnames: Vec<_> = plan.create[0]
            .endpoints
            .iter()
            .map(|e| e.hostname.as_deref())
            .collect();
        assert_eq!(hostnames, [Some("web-0"), None, None]);
    }

    #[test]
    fn pods_without_ip_or_not_selected_are_left_out() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(8080));
        let mut no_ip = web_pod("a", "10.42.0.2", 8080, true);
        no_ip.status.as_mut().unwrap().pod_ip = None;
        let mut other = web_pod("b", "10.42.0.3", 8080, true);
        other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let mut done = web_pod("c", "10.42.0.4", 8080, true);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let plan = plan(&svc, &[&no_ip, &other, &done], &[]);
        assert_eq!(plan.create.len(), 1, "a placeholder slice");
        assert!(plan.create[0].endpoints.is_empty());
    }

    #[test]
    fn conditions_follow_readiness_termination_and_publish_not_ready() {
        let mut svc = service("web", &[("app", "web")], IntOrString::Int(80));
        let not_ready = web_pod("a", "10.42.0.2", 80, false);
        let mut terminating = web_pod("b", "10.42.0.3", 80, true);
        terminating.metadata.deletion_timestamp = Some(Time(ts(5)));
        let c = |p: &Pod, svc: &Service| endpoint(svc, p).unwrap().conditions.unwrap();
        let nr = c(&not_ready, &svc);
        assert_eq!(
            (nr.ready, nr.serving, nr.terminating),
            (Some(false), Some(false), Some(false))
        );
        let t = c(&terminating, &svc);
        assert_eq!(
            (t.ready, t.serving, t.terminating),
            (Some(false), Some(true), Some(true))
        );
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        assert_eq!(c(&not_ready, &svc).ready, Some(true));
    }

    #[test]
    fn a_named_target_port_splits_pods_by_their_number() {
        let svc = service("web", &[("app", "web")], IntOrString::String("http".into()));
        let a = web_pod("a", "10.42.0.2", 8080, true);
        let b = web_pod("b", "10.42.0.3", 9090, true);
        let c = web_pod("c", "10.42.0.4", 8080, true);
        let plan = plan(&svc, &[&a, &b, &c], &[]);
        let mut by_port: Vec<(Option<i32>, Vec<&str>)> = plan
            .create
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, ips(s)))
            .collect();
        by_port.sort();
        assert_eq!(
            by_port,
            [
                (Some(8080), vec!["10.42.0.2", "10.42.0.4"]),
                (Some(9090), vec!["10.42.0.3"])
            ]
        );
    }

    #[test]
    fn more_than_a_hundred_endpoints_take_several_slices() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(80));
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                web_pod(
                    &format!("p{i:03}"),
                    &format!("10.42.{}.{}", i / 200, i % 200 + 1),
                    80,
                    true,
                )
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let plan = plan(&svc, &refs, &[]);
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
    }

    #[test]
    fn unchanged_slices_are_not_rewritten_and_changed_ones_reuse_names() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(80));
        let a = web_pod("a", "10.42.0.2", 80, true);
        let first = plan(&svc, &[&a], &[]);
        let existing = named(first.create[0].clone(), "web-abcde");
        assert!(plan(&svc, &[&a], &[&existing]).is_empty());

        let b = web_pod("b", "10.42.0.3", 80, true);
        let next = plan(&svc, &[&a, &b], &[&existing]);
        assert!(next.create.is_empty() && next.delete.is_empty());
        assert_eq!(next.update.len(), 1);
        assert_eq!(next.update[0].metadata.name.as_deref(), Some("web-abcde"));
        assert_eq!(next.update[0].metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(ips(&next.update[0]), ["10.42.0.2", "10.42.0.3"]);
    }

    #[test]
    fn a_cache_missing_our_writes_is_stale() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(80));
        let a = web_pod("a", "10.42.0.2", 80, true);
        let s = named(plan(&svc, &[&a], &[]).create[0].clone(), "web-1");
        let created: Written = vec![("web-1".into(), Some("7".into()))];
        assert!(!cache_caught_up(&created, &[]), "created slice not cached yet");
        assert!(cache_caught_up(&created, &[&s]));
        let newer: Written = vec![("web-1".into(), Some("9".into()))];
        assert!(!cache_caught_up(&newer, &[&s]), "cached an older version");
        let deleted: Written = vec![("web-1".into(), None)];
        assert!(!cache_caught_up(&deleted, &[&s]));
        assert!(cache_caught_up(&deleted, &[]));
    }

    #[test]
    fn surplus_slices_are_deleted() {
        let svc = service("web", &[("app", "web")], IntOrString::Int(80));
        let a = web_pod("a", "10.42.0.2", 80, true);
        let s1 = named(plan(&svc, &[&a], &[]).create[0].clone(), "web-1");
        let mut s2 = s1.clone();
        s2.metadata.name = Some("web-2".into());
        let p = plan(&svc, &[&a], &[&s1, &s2]);
        assert!(p.create.is_empty() && p.update.is_empty());
        assert_eq!(p.delete, ["web-2"]);
    }

    #[test]
    fn services_without_selector_or_external_name_are_not_managed() {
        let mut svc = service("web", &[], IntOrString::Int(80));
        assert!(!manages(&svc));
        svc = service("web", &[("app", "web")], IntOrString::Int(80));
        svc.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(!manages(&svc));
    }
}
