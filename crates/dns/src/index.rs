//! The in-memory copy of what DNS answers are computed from: per namespace its Services, their
//! EndpointSlices and the Pods' IPs and hostnames, reduced to the fields DNS reads. Kept current by the
//! watches in `watch.rs`; read on every query under a shared lock.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service as DNS sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SvcEntry {
    /// ClusterIPs (empty for headless and ExternalName Services).
    pub cluster_ips: Vec<IpAddr>,
    /// `clusterIP: None`: names resolve to the endpoints.
    pub headless: bool,
    /// `type: ExternalName`: the name is a CNAME to this.
    pub external_name: Option<String>,
    pub ports: Vec<PortEntry>,
    /// Not-ready endpoints are published too.
    pub publish_not_ready: bool,
}

/// A named (or unnamed) port of a Service or EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortEntry {
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: u16,
}

/// One address of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpEntry {
    pub ip: IpAddr,
    /// `endpoints[].hostname`.
    pub hostname: Option<String>,
    pub ready: bool,
    /// The Pod behind it, for its hostname when the slice has none.
    pub pod: Option<String>,
}

/// An EndpointSlice as DNS sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceEntry {
    pub service: String,
    pub endpoints: Vec<EpEntry>,
    pub ports: Vec<PortEntry>,
}

/// A Pod as DNS sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodEntry {
    pub ips: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
}

/// Everything in one namespace.
#[derive(Debug, Clone, Default)]
pub struct NsEntry {
    /// The Namespace object exists (names under a namespace that does not are NXDOMAIN).
    pub exists: bool,
    pub services: HashMap<String, SvcEntry>,
    /// By slice name.
    pub slices: HashMap<String, SliceEntry>,
    /// Service name → its slices' names.
    pub slices_of: HashMap<String, Vec<String>>,
    pub pods: HashMap<String, PodEntry>,
}

/// The kinds the index is built from; queries are answered once all have listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
}

const ALL_KINDS: [Kind; 4] = [Kind::Namespace, Kind::Service, Kind::EndpointSlice, Kind::Pod];

/// The whole index.
#[derive(Debug, Default)]
pub struct Index {
    namespaces: HashMap<String, NsEntry>,
    synced: HashSet<Kind>,
    /// Bumped on every change: the SOA serial.
    pub serial: u32,
}

impl Index {
    /// This index behind the lock the server and the watches share.
    pub fn shared(self) -> crate::server::SharedIndex {
        std::sync::Arc::new(parking_lot::RwLock::new(self))
    }

    /// Whether every kind has been listed at least once.
    pub fn synced(&self) -> bool {
        ALL_KINDS.iter().all(|k| self.synced.contains(k))
    }

    pub fn namespace(&self, ns: &str) -> Option<&NsEntry> {
        self.namespaces.get(ns).filter(|n| n.exists)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &NsEntry)> {
        self.namespaces.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn ns_mut(&mut self, ns: &str) -> &mut NsEntry {
        self.serial = self.serial.wrapping_add(1);
        self.namespaces.entry(ns.to_string()).or_default()
    }

    /// Replace everything of `kind` with `objects` (a watch's initial list or relist).
    pub fn replace(&mut self, kind: Kind, objects: Vec<Object>) {
        for ns in self.namespaces.values_mut() {
            match kind {
                Kind::Namespace => ns.exists = false,
                Kind::Service => ns.services.clear(),
                Kind::EndpointSlice => {
                    ns.slices.clear();
                    ns.slices_of.clear();
                }
                Kind::Pod => ns.pods.clear(),
            }
        }
        for object in objects {
            self.apply(object);
        }
        self.synced.insert(kind);
        self.serial = self.serial.wrapping_add(1);
    }

    /// Add or update one object.
    pub fn apply(&mut self, object: Object) {
        match object {
            Object::Namespace(name) => self.ns_mut(&name).exists = true,
            Object::Service { ns, name, entry } => {
                self.ns_mut(&ns).services.insert(name, entry);
            }
            Object::Slice { ns, name, entry } => {
                let n = self.ns_mut(&ns);
                if let Some(old) = n.slices.remove(&name) {
                    unlink(&mut n.slices_of, &old.service, &name);
                }
                n.slices_of
                    .entry(entry.service.clone())
                    .or_default()
                    .push(name.clone());
                n.slices.insert(name, entry);
            }
            Object::Pod { ns, name, entry } => {
                self.ns_mut(&ns).pods.insert(name, entry);
            }
        }
    }

    /// Remove one object (its key is enough).
    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) {
        let n = self.ns_mut(if kind == Kind::Namespace { name } else { ns });
        match kind {
            Kind::Namespace => n.exists = false,
            Kind::Service => {
                n.services.remove(name);
            }
            Kind::EndpointSlice => {
                if let Some(old) = n.slices.remove(name) {
                    unlink(&mut n.slices_of, &old.service, name);
                }
            }
            Kind::Pod => {
                n.pods.remove(name);
            }
        }
    }
}

fn unlink(slices_of: &mut HashMap<String, Vec<String>>, service: &str, slice: &str) {
    if let Some(list) = slices_of.get_mut(service) {
        list.retain(|s| s != slice);
        if list.is_empty() {
            slices_of.remove(service);
        }
    }
}

/// One watched object reduced to what DNS needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Namespace(String),
    Service {
        ns: String,
        name: String,
        entry: SvcEntry,
    },
    Slice {
        ns: String,
        name: String,
        entry: SliceEntry,
    },
    Pod {
        ns: String,
        name: String,
        entry: PodEntry,
    },
}

fn ns_and_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl From<&Namespace> for Object {
    fn from(n: &Namespace) -> Object {
        Object::Namespace(n.metadata.name.clone().unwrap_or_default())
    }
}

impl From<&Service> for Object {
    fn from(s: &Service) -> Object {
        let (ns, name) = ns_and_name(&s.metadata);
        let spec = s.spec.clone().unwrap_or_default();
        let external = spec.type_.as_deref() == Some("ExternalName");
        let headless = !external && spec.cluster_ip.as_deref() == Some("None");
        let mut cluster_ips: Vec<IpAddr> = Vec::new();
        if !external && !headless {
            let ips = spec.cluster_ips.clone().unwrap_or_default();
            let ips = if ips.is_empty() {
                spec.cluster_ip.clone().into_iter().collect()
            } else {
                ips
            };
            cluster_ips = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        }
        let entry = SvcEntry {
            cluster_ips,
            headless,
            external_name: spec
                .external_name
                .filter(|_| external)
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
            ports: spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortEntry {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect(),
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        };
        Object::Service { ns, name, entry }
    }
}

impl From<&EndpointSlice> for Object {
    fn from(s: &EndpointSlice) -> Object {
        let (ns, name) = ns_and_name(&s.metadata);
        let service = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
            .unwrap_or_default();
        // FQDN slices carry no addresses DNS can serve.
        let endpoints = if s.address_type == "FQDN" {
            Vec::new()
        } else {
            s.endpoints
                .iter()
                .flat_map(|e| {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    let pod = e
                        .target_ref
                        .as_ref()
                        .filter(|t| t.kind.as_deref() == Some("Pod"))
                        .and_then(|t| t.name.clone());
                    e.addresses.iter().filter_map(move |a| {
                        Some(EpEntry {
                            ip: a.parse().ok()?,
                            hostname: e.hostname.clone().filter(|h| !h.is_empty()),
                            ready,
                            pod: pod.clone(),
                        })
                    })
                })
                .collect()
        };
        let ports = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortEntry {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        Object::Slice {
            ns,
            name,
            entry: SliceEntry {
                service,
                endpoints,
                ports,
            },
        }
    }
}

impl From<&Pod> for Object {
    fn from(p: &Pod) -> Object {
        let (ns, name) = ns_and_name(&p.metadata);
        let spec = p.spec.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(status.pod_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()));
        }
        // A host-network pod's IP is its node's: it has no pod record of its own.
        if spec.host_network == Some(true) {
            ips.clear();
        }
        Object::Pod {
            ns,
            name,
            entry: PodEntry {
                ips,
                hostname: spec.hostname.filter(|h| !h.is_empty()),
                subdomain: spec.subdomain.filter(|s| !s.is_empty()),
            },
        }
    }
}

impl NsEntry {
    /// The endpoints of `service` that DNS publishes (ready ones, or all with `publishNotReadyAddresses`),
    /// each with its hostname label and the ports of its slice.
    pub fn endpoints_of<'a>(
        &'a self,
        service: &'a str,
        svc: &'a SvcEntry,
    ) -> Vec<(&'a EpEntry, String, &'a [PortEntry])> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for slice_name in self.slices_of.get(service).into_iter().flatten() {
            let Some(slice) = self.slices.get(slice_name) else {
                continue;
            };
            for ep in &slice.endpoints {
                if !(ep.ready || svc.publish_not_ready) {
                    continue;
                }
                // The same address can sit in two slices while the controller moves it; publish it once.
                if !seen.insert((ep.ip, &slice.ports)) {
                    continue;
                }
                out.push((ep, self.endpoint_hostname(service, ep), slice.ports.as_slice()));
            }
        }
        out
    }

    /// The label an endpoint is known by: its hostname (from the slice, or from its Pod's
    /// `hostname` when the Pod's `subdomain` is this Service, as the endpointslice controller would
    /// set it), else its IP with dashes.
    pub fn endpoint_hostname(&self, service: &str, ep: &EpEntry) -> String {
        if let Some(h) = &ep.hostname {
            return h.to_ascii_lowercase();
        }
        if let Some(pod) = ep.pod.as_ref().and_then(|p| self.pods.get(p))
            && pod.subdomain.as_deref() == Some(service)
            && let Some(h) = &pod.hostname
        {
            return h.to_ascii_lowercase();
        }
        dashed(ep.ip)
    }
}

/// `10.42.0.5` → `10-42-0-5`; `fd00::5` → `fd00--5` (as CoreDNS writes them).
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}
