//! LoadBalancer Services without a cloud: the controller that fills `status.loadBalancer.ingress`.
//!
//! With `--lb-ip-pool` (CIDRs or `A-B` ranges) every LoadBalancer Service without a `spec.loadBalancerClass`
//! gets one address of the pool (MetalLB style): the address it asks for (annotation [`LB_IPS_ANNOTATION`],
//! MetalLB's annotations, or `spec.loadBalancerIP`) or the lowest free one of its primary IP family. The
//! ingress is `[{ip, ipMode: "VIP"}]`; one node per address announces it — [`announcer_for`] says which, and
//! [`announced_by`] gives a node agent the whole list of addresses it must announce. The
//! [`Allocator`] is pure; it is rebuilt from the Services' statuses when the controller starts, so addresses
//! survive restarts, and an address goes back to the pool when its Service is deleted or stops being a
//! LoadBalancer.
//!
//! Without a pool the ingress is the InternalIPs of the Ready nodes (k3s ServiceLB style), kept up to date as
//! nodes come and go. Requested addresses are ignored then: there is nothing to allocate them from.
//!
//! Services with a `loadBalancerClass` belong to another implementation and are never touched, as a default
//! cloud provider leaves them alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use parking_lot::Mutex;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::events::{Event, EventRecorder};
use crate::informer::{Change, key_of, split_key};
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};

const NAME: &str = "service-lb-controller";

/// Our annotation for requesting addresses: a comma-separated list, e.g. `192.168.1.240` or
/// `192.168.1.240,fd00::240` for a dual-stack Service. Wins over the others.
pub const LB_IPS_ANNOTATION: &str = "rkube.io/loadBalancerIPs";
/// MetalLB's annotations, honoured so manifests written for MetalLB work unchanged (newest name first).
pub const METALLB_LB_IPS_ANNOTATIONS: &[&str] = &[
    "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs",
];
/// Nodes with this label are left out of the node-address fallback (Kubernetes' well-known label).
pub const EXCLUDE_NODE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Why a pool or a request is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// A pool entry is neither `CIDR` nor `A-B`, or its range is empty or mixes address families.
    #[error("invalid LoadBalancer IP pool entry {0:?}: want CIDR (192.168.1.240/28) or range (A-B)")]
    Invalid(String),
}

/// Why a Service got no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// Every address of the pool (of the wanted family) is in use.
    #[error("no available IPs in the pool")]
    Exhausted,
    /// A requested address lies outside the pool.
    #[error("requested IP {0} is not in the pool")]
    NotInPool(IpAddr),
    /// A requested address belongs to another Service.
    #[error("requested IP {ip} is already allocated to {owner}")]
    InUse { ip: IpAddr, owner: String },
    /// The request is not a list of IP addresses.
    #[error("invalid requested IP {0:?}")]
    InvalidRequest(String),
}

/// The addresses `--lb-ip-pool` names: inclusive ranges, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pool {
    ranges: Vec<(IpAddr, IpAddr)>,
}

fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_num(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

impl Pool {
    /// Parses pool entries, each `CIDR` or `A-B`, several per string when comma-separated (the flag is
    /// repeatable too). An IPv4 CIDR of /30 or wider leaves out its network and broadcast addresses, which
    /// hosts on that subnet would not answer ARP for; a range is taken as written.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Pool, PoolError> {
        let mut ranges = Vec::new();
        for entry in entries.iter().flat_map(|e| e.as_ref().split(',')) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            ranges.push(parse_entry(entry).ok_or_else(|| PoolError::Invalid(entry.to_string()))?);
        }
        Ok(Pool { ranges })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges
            .iter()
            .any(|(a, b)| a.is_ipv4() == ip.is_ipv4() && (to_num(*a)..=to_num(*b)).contains(&to_num(ip)))
    }
}

fn parse_entry(entry: &str) -> Option<(IpAddr, IpAddr)> {
    if let Some((a, b)) = entry.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        return (a.is_ipv4() == b.is_ipv4() && to_num(a) <= to_num(b)).then_some((a, b));
    }
    let (ip, prefix) = entry.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > bits {
        return None;
    }
    let host_bits = bits - prefix;
    let host_mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let first = to_num(ip) & !host_mask;
    let last = first | host_mask;
    let (first, last) = if ip.is_ipv4() && host_bits >= 2 {
        (first + 1, last - 1)
    } else {
        (first, last)
    };
    Some((from_num(first, ip.is_ipv4()), from_num(last, ip.is_ipv4())))
}

/// What a Service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Any free address, preferably of this family (IPv4 unless the Service is IPv6-first).
    Any { ipv6: bool },
    /// Exactly these addresses.
    Specific(Vec<IpAddr>),
}

/// The request of a Service: our annotation, else MetalLB's, else `spec.loadBalancerIP`, else any address of
/// its primary family.
pub fn request_of(svc: &Service) -> Result<Request, AllocationError> {
    let annotations = svc.metadata.annotations.as_ref();
    let annotated = std::iter::once(LB_IPS_ANNOTATION)
        .chain(METALLB_LB_IPS_ANNOTATIONS.iter().copied())
        .find_map(|a| annotations?.get(a));
    let spec = svc.spec.as_ref();
    let requested = annotated
        .or_else(|| spec?.load_balancer_ip.as_ref())
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    if let Some(list) = requested {
        let mut ips = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let ip: IpAddr = part
                .parse()
                .map_err(|_| AllocationError::InvalidRequest(list.to_string()))?;
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        return Ok(Request::Specific(ips));
    }
    let ipv6 = spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .is_some_and(|f| f == "IPv6");
    Ok(Request::Any { ipv6 })
}

/// Which pool address belongs to which Service (by `namespace/name`). Pure: no I/O, no clock.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    pool: Pool,
    owners: BTreeMap<IpAddr, String>,
    held: HashMap<String, BTreeSet<IpAddr>>,
    /// How many addresses went back to the pool so far: a change tells the controller to retry the Services
    /// that are waiting for one.
    freed: u64,
}

impl Allocator {
    pub fn new(pool: Pool) -> Allocator {
        Allocator {
            pool,
            ..Default::default()
        }
    }

    /// Marks addresses a Service already shows in its status as its own (rebuilding after a restart). Addresses
    /// outside the pool or owned by another Service are skipped and returned: that Service gets new ones
    /// when it is synced.
    pub fn restore(&mut self, key: &str, ips: &[IpAddr]) -> Vec<IpAddr> {
        let mut refused = Vec::new();
        for &ip in ips {
            match self.owners.get(&ip) {
                _ if !self.pool.contains(ip) => refused.push(ip),
                Some(owner) if owner != key => refused.push(ip),
                _ => self.claim(key, ip),
            }
        }
        refused
    }

    fn claim(&mut self, key: &str, ip: IpAddr) {
        self.owners.insert(ip, key.to_string());
        self.held.entry(key.to_string()).or_default().insert(ip);
    }

    /// The addresses `key` should have for `request`: the requested ones if they are in the pool and free,
    /// else the one it holds, else the lowest free one. Whatever it held and no longer gets goes back to the
    /// pool — also on failure, so a failed Service shows no stale address.
    pub fn assign(&mut self, key: &str, request: &Request) -> Result<Vec<IpAddr>, AllocationError> {
        let result = self.choose(key, request);
        let keep: BTreeSet<IpAddr> = result
            .as_ref()
            .map(|ips| ips.iter().copied().collect())
            .unwrap_or_default();
        let held = self.held.remove(key).unwrap_or_default();
        for ip in held.difference(&keep) {
            self.owners.remove(ip);
            self.freed += 1;
        }
        for &ip in &keep {
            self.claim(key, ip);
        }
        result
    }

    fn choose(&self, key: &str, request: &Request) -> Result<Vec<IpAddr>, AllocationError> {
        match request {
            Request::Specific(ips) => {
                for &ip in ips {
                    if !self.pool.contains(ip) {
                        return Err(AllocationError::NotInPool(ip));
                    }
                    if let Some(owner) = self.owners.get(&ip).filter(|o| *o != key) {
                        return Err(AllocationError::InUse {
                            ip,
                            owner: owner.clone(),
                        });
                    }
                }
                Ok(ips.clone())
            }
            Request::Any { ipv6 } => {
                let held = self.held.get(key).into_iter().flatten();
                let kept = held
                    .filter(|ip| self.pool.contains(**ip))
                    .min_by_key(|ip| ip.is_ipv6() != *ipv6);
                if let Some(ip) = kept {
                    return Ok(vec![*ip]);
                }
                self.lowest_free(*ipv6)
                    .or_else(|| self.lowest_free(!*ipv6))
                    .map(|ip| vec![ip])
                    .ok_or(AllocationError::Exhausted)
            }
        }
    }

    /// The lowest free address of a family, ranges in pool order. Each step past a taken address is an owned
    /// address, so this is linear in the number of allocations, not in the pool's size.
    fn lowest_free(&self, ipv6: bool) -> Option<IpAddr> {
        for &(first, last) in self.pool.ranges.iter().filter(|(a, _)| a.is_ipv6() == ipv6) {
            let (mut n, end) = (to_num(first), to_num(last));
            loop {
                let ip = from_num(n, !ipv6);
                if !self.owners.contains_key(&ip) {
                    return Some(ip);
                }
                if n == end {
                    break;
                }
                n += 1;
            }
        }
        None
    }

    /// Gives back everything `key` holds.
    pub fn release(&mut self, key: &str) {
        for ip in self.held.remove(key).unwrap_or_default() {
            self.owners.remove(&ip);
            self.freed += 1;
        }
    }

    /// Counts every address ever given back (see [`Allocator::assign`] and [`Allocator::release`]).
    pub fn freed(&self) -> u64 {
        self.freed
    }

    /// The Service holding `ip`.
    pub fn owner(&self, ip: IpAddr) -> Option<&str> {
        self.owners.get(&ip).map(String::as_str)
    }
}

/// The node that announces `ip` (answers ARP/NDP for it), MetalLB L2 style: the Ready nodes sorted by
/// sha256(`node#ip`), first wins. Every agent computes the same answer from the same node list, and when a node
/// leaves only its own addresses move. Callers pass the names of Ready nodes only, and announce only pool
/// addresses — never the node-address fallback's ingress, which is a node's own address.
pub fn announcer_for(ip: IpAddr, ready_nodes: &[String]) -> Option<String> {
    let ip = ip.to_string();
    ready_nodes
        .iter()
        .min_by_key(|node| Sha256::digest(format!("{node}#{ip}").as_bytes()))
        .cloned()
}

/// The LoadBalancer addresses `node` must announce, for a node agent: every ingress IP of a Service this
/// controller handles, except nodes' own addresses (the no-pool fallback), whose [`announcer_for`] among the
/// candidate nodes is `node`. Candidates are the Ready nodes not labelled [`EXCLUDE_NODE_LABEL`]; for a Service
/// with `externalTrafficPolicy: Local` only those among them with a ready endpoint of it (per the
/// EndpointSlices' `nodeName`), as MetalLB does, since the others drop its traffic.
pub fn announced_by(
    node: &str,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    nodes: &[Arc<Node>],
) -> BTreeSet<IpAddr> {
    let node_ips: BTreeSet<IpAddr> = nodes
        .iter()
        .flat_map(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.addresses.clone())
                .unwrap_or_default()
        })
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let mut candidates: Vec<String> = nodes
        .iter()
        .filter(|n| node_ready(n) && !excluded(n))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    candidates.sort();
    candidates.dedup();
    let mut mine = BTreeSet::new();
    for svc in services.iter().filter(|s| is_ours(s)) {
        let local = svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local");
        let eligible: Vec<String> = if local {
            let name = svc.metadata.name.as_deref();
            let with_endpoints: BTreeSet<&str> = slices
                .iter()
                .filter(|sl| sl.metadata.namespace == svc.metadata.namespace)
                .filter(|sl| {
                    sl.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .map(String::as_str)
                        == name
                })
                .flat_map(|sl| sl.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .filter_map(|e| e.node_name.as_deref())
                .collect();
            candidates
                .iter()
                .filter(|c| with_endpoints.contains(c.as_str()))
                .cloned()
                .collect()
        } else {
            candidates.clone()
        };
        for ip in ingress_ips(svc).into_iter().filter(|ip| !node_ips.contains(ip)) {
            if announcer_for(ip, &eligible).as_deref() == Some(node) {
                mine.insert(ip);
            }
        }
    }
    mine
}

/// Whether this controller handles the Service: a LoadBalancer without a class.
pub fn is_ours(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec.and_then(|s| s.load_balancer_class.as_deref()).is_none()
}

/// The ingress addresses the Service shows now.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn excluded(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_NODE_LABEL))
}

/// The InternalIPs of the nodes that can take LoadBalancer traffic: Ready and not excluded by label.
fn eligible_node_ips(node: &Node) -> Vec<IpAddr> {
    if excluded(node) || !node_ready(node) {
        return Vec::new();
    }
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// The fallback ingress without a pool: the eligible nodes' InternalIPs of the Service's families, sorted.
pub fn node_ingress(svc: &Service, nodes: &[Arc<Node>]) -> Vec<IpAddr> {
    let families = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    let wants = |ip: &IpAddr| {
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        if families.is_empty() {
            ip.is_ipv4()
        } else {
            families.iter().any(|f| f == family)
        }
    };
    let ips: BTreeSet<IpAddr> = nodes
        .iter()
        .flat_map(|n| eligible_node_ips(n))
        .filter(wants)
        .collect();
    ips.into_iter().collect()
}

fn quoted(ips: &[IpAddr]) -> String {
    let list: Vec<String> = ips.iter().map(|ip| format!("{:?}", ip.to_string())).collect();
    format!("[{}]", list.join(", "))
}

struct Shell {
    client: Client,
    services: Store<Service>,
    nodes: Store<Node>,
    recorder: EventRecorder,
    /// `None` without a pool: the node-address fallback.
    pool: Option<Mutex<PoolState>>,
    queue: Arc<WorkQueue>,
}

/// The allocator and the Services waiting for an address, under one lock so that an address freed by one
/// worker cannot slip past a Service another worker is just adding to the waiting list.
struct PoolState {
    alloc: Allocator,
    waiting: BTreeSet<String>,
}

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

async fn run(ctx: Context) -> Result<(), Error> {
    let pool = match Pool::parse(&ctx.options.cluster.lb_ip_pool) {
        Ok(pool) => pool,
        Err(e) => {
            // `rkube server` validates the flag; this is a library caller's mistake.
            tracing::error!(error = %e, "LoadBalancer controller disabled");
            return std::future::pending().await;
        }
    };
    let svc_informer = ctx.informers.get::<Service>();
    let node_informer = ctx.informers.get::<Node>();
    svc_informer.wait_synced().await;
    node_informer.wait_synced().await;
    let services = svc_informer.store().clone();
    let pool = (!pool.is_empty()).then(|| {
        let mut alloc = Allocator::new(pool);
        // The oldest Service keeps an address two statuses claim.
        let mut existing: Vec<Arc<Service>> = services.state().into_iter().filter(|s| is_ours(s)).collect();
        existing.sort_by_key(|s| (s.metadata.creation_timestamp.as_ref().map(|t| t.0), key_of(&**s)));
        for svc in existing {
            let refused = alloc.restore(&key_of(&*svc), &ingress_ips(&svc));
            if !refused.is_empty() {
                tracing::info!(service = %key_of(&*svc), ?refused, "addresses not kept: outside the pool or taken");
            }
        }
        Mutex::new(PoolState {
            alloc,
            waiting: BTreeSet::new(),
        })
    });
    let node_fallback = pool.is_none();
    let queue = WorkQueue::new();
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        services: services.clone(),
        nodes: node_informer.store().clone(),
        recorder: ctx.recorder.for_component(NAME),
        pool,
        queue: queue.clone(),
    });
    svc_informer.add_handler({
        let queue = queue.clone();
        move |c: &Change<Service>| queue.add(key_of(&**c.latest()))
    });
    if node_fallback {
        node_informer.add_handler({
            let (queue, services) = (queue.clone(), services.clone());
            move |c: &Change<Node>| {
                let ips = |n: &Option<Arc<Node>>| n.as_deref().map(eligible_node_ips).unwrap_or_default();
                if ips(&c.old) != ips(&c.new) {
                    for svc in services.state().iter().filter(|s| is_ours(s)) {
                        queue.add(key_of(&**svc));
                    }
                }
            }
        });
    }
    let worker = shell.clone();
    run_workers(queue, ctx.options.workers, NAME, move |key| {
        let shell = worker.clone();
        async move { shell.sync(&key).await }
    })
    .await;
    Err(Error::ControllerStopped("servicelb"))
}

impl Shell {
    /// Runs `op` on the allocator (if there is a pool); `Err` puts `key` on the waiting list, and if `op` freed
    /// an address every other waiting Service is synced again.
    fn with_pool<R>(
        &self,
        key: &str,
        op: impl FnOnce(&mut Allocator) -> Result<R, AllocationError>,
    ) -> Option<Result<R, AllocationError>> {
        let mut pool = self.pool.as_ref()?.lock();
        let freed = pool.alloc.freed();
        let result = op(&mut pool.alloc);
        if result.is_err() {
            pool.waiting.insert(key.to_string());
        } else {
            pool.waiting.remove(key);
        }
        if pool.alloc.freed() != freed {
            let waiting = std::mem::take(&mut pool.waiting);
            for other in waiting {
                if other == key {
                    pool.waiting.insert(other);
                } else {
                    self.queue.add(other);
                }
            }
        }
        Some(result)
    }

    async fn sync(&self, key: &str) -> Result<Requeue, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or("default");
        let svc = self.services.get(&ObjectRef::new(name).within(ns));
        let Some(svc) = svc.filter(|s| is_ours(s)) else {
            self.with_pool(key, |alloc| {
                alloc.release(key);
                Ok(())
            });
            // A Service that stopped being a LoadBalancer loses its ingress; one with a class is another
            // implementation's business.
            if let Some(svc) = self.services.get(&ObjectRef::new(name).within(ns)) {
                let classed = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.load_balancer_class.as_ref())
                    .is_some();
                if !classed && !ingress_ips(&svc).is_empty() {
                    self.write_ingress(ns, name, &[]).await?;
                }
            }
            return Ok(None);
        };
        let current = ingress_ips(&svc);
        let assigned = self.with_pool(key, |alloc| request_of(&svc).and_then(|r| alloc.assign(key, &r)));
        let (wanted, event) = match assigned {
            None => {
                let wanted = node_ingress(&svc, &self.nodes.state());
                let event = Event::normal(
                    "UpdatedLoadBalancer",
                    format!("Updated LoadBalancer with node IPs {}", quoted(&wanted)),
                );
                (wanted, event)
            }
            Some(Ok(ips)) => {
                let event = Event::normal("IPAllocated", format!("Assigned IP {}", quoted(&ips)));
                (ips, event)
            }
            // On the waiting list now: tried again when an address is freed or the Service changes.
            Some(Err(e)) => {
                let message = format!("Failed to allocate IP for \"{key}\": {e}");
                let event = Event::warning("AllocationFailed", message);
                self.recorder.record(&svc.object_ref(&()), &event).await;
                if !current.is_empty() {
                    self.write_ingress(ns, name, &[]).await?;
                }
                return Ok(None);
            }
        };
        let ip_modes_ok = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .all(|i| i.ip_mode.as_deref() == Some("VIP") && i.hostname.is_none());
        if wanted != current || !ip_modes_ok {
            self.write_ingress(ns, name, &wanted).await?;
            if !wanted.is_empty() {
                self.recorder.record(&svc.object_ref(&()), &event).await;
            }
            tracing::info!(service = key, ingress = ?wanted, "LoadBalancer ingress updated");
        }
        Ok(None)
    }

    async fn write_ingress(&self, ns: &str, name: &str, ips: &[IpAddr]) -> Result<(), Error> {
        let ingress: Vec<_> = ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
            .collect();
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile: the delete event brings the key back and releases its addresses.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| ip(s)).collect()
    }

    fn svc(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn pool(entries: &[&str]) -> Pool {
        Pool::parse(entries).unwrap()
    }

    #[test]
    fn pools_are_cidrs_and_ranges() {
        let p = pool(&["192.168.1.240/30,10.0.0.5-10.0.0.6", "fd00::10/127"]);
        assert!(!p.contains(ip("192.168.1.240")), "network address");
        assert!(p.contains(ip("192.168.1.241")) && p.contains(ip("192.168.1.242")));
        assert!(!p.contains(ip("192.168.1.243")), "broadcast address");
        assert!(p.contains(ip("10.0.0.5")) && p.contains(ip("10.0.0.6")) && !p.contains(ip("10.0.0.7")));
        assert!(p.contains(ip("fd00::10")) && p.contains(ip("fd00::11")) && !p.contains(ip("fd00::12")));
        assert!(pool(&["10.9.9.9/32"]).contains(ip("10.9.9.9")));
        assert!(pool(&[]).is_empty());
        for bad in [
            "10.0.0.0/33",
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-fd00::1",
            "nonsense",
            "10.0.0.1",
        ] {
            assert_eq!(Pool::parse(&[bad]), Err(PoolError::Invalid(bad.into())), "{bad}");
        }
    }

    #[test]
    fn lowest_free_address_first_and_no_double_allocation() {
        let mut a = Allocator::new(pool(&["10.0.0.1-10.0.0.2"]));
        let any = Request::Any { ipv6: false };
        assert_eq!(a.assign("ns/a", &any), Ok(ips(&["10.0.0.1"])));
        assert_eq!(
            a.assign("ns/a", &any),
            Ok(ips(&["10.0.0.1"])),
            "a sync again keeps the address"
        );
        assert_eq!(a.assign("ns/b", &any), Ok(ips(&["10.0.0.2"])));
        assert_eq!(a.assign("ns/c", &any), Err(AllocationError::Exhausted));
        a.release("ns/a");
        assert_eq!(a.owner(ip("10.0.0.1")), None);
        assert_eq!(a.assign("ns/c", &any), Ok(ips(&["10.0.0.1"])));
        assert_eq!(a.owner(ip("10.0.0.1")), Some("ns/c"));
    }

    #[test]
    fn requested_addresses_are_honoured_or_refused() {
        let mut a = Allocator::new(pool(&["10.0.0.0/29"]));
        let want = |s: &str| Request::Specific(ips(&[s]));
        assert_eq!(a.assign("ns/a", &want("10.0.0.5")), Ok(ips(&["10.0.0.5"])));
        assert_eq!(
            a.assign("ns/b", &want("10.0.0.5")),
            Err(AllocationError::InUse {
                ip: ip("10.0.0.5"),
                owner: "ns/a".into()
            })
        );
        assert_eq!(
            a.assign("ns/b", &want("10.1.0.5")),
            Err(AllocationError::NotInPool(ip("10.1.0.5")))
        );
        // Asking for another address moves the Service there and frees the old one.
        assert_eq!(a.assign("ns/a", &want("10.0.0.6")), Ok(ips(&["10.0.0.6"])));
        assert_eq!(a.assign("ns/b", &want("10.0.0.5")), Ok(ips(&["10.0.0.5"])));
        // A failed request gives back what the Service held.
        assert!(a.assign("ns/b", &want("10.0.0.6")).is_err());
        assert_eq!(a.owner(ip("10.0.0.5")), None);
        // Any address avoids those taken by request.
        assert_eq!(
            a.assign("ns/c", &Request::Any { ipv6: false }),
            Ok(ips(&["10.0.0.1"]))
        );
    }

    #[test]
    fn families_are_preferred_and_fall_back() {
        let mut a = Allocator::new(pool(&["10.0.0.1/32", "fd00::1/128"]));
        assert_eq!(
            a.assign("ns/v6", &Request::Any { ipv6: true }),
            Ok(ips(&["fd00::1"]))
        );
        assert_eq!(
            a.assign("ns/v4", &Request::Any { ipv6: false }),
            Ok(ips(&["10.0.0.1"]))
        );
        assert_eq!(
            a.assign("ns/x", &Request::Any { ipv6: false }),
            Err(AllocationError::Exhausted)
        );
        let mut only_v4 = Allocator::new(pool(&["10.0.0.1/32"]));
        assert_eq!(
            only_v4.assign("ns/v6", &Request::Any { ipv6: true }),
            Ok(ips(&["10.0.0.1"]))
        );
    }

    #[test]
    fn restore_rebuilds_and_refuses_conflicts() {
        let mut a = Allocator::new(pool(&["10.0.0.1-10.0.0.3"]));
        assert!(a.restore("ns/old", &ips(&["10.0.0.2"])).is_empty());
        assert_eq!(
            a.restore("ns/young", &ips(&["10.0.0.2", "192.168.0.1"])),
            ips(&["10.0.0.2", "192.168.0.1"])
        );
        let any = Request::Any { ipv6: false };
        assert_eq!(
            a.assign("ns/old", &any),
            Ok(ips(&["10.0.0.2"])),
            "kept across the restart"
        );
        assert_eq!(a.assign("ns/young", &any), Ok(ips(&["10.0.0.1"])));
        assert_eq!(a.assign("ns/new", &any), Ok(ips(&["10.0.0.3"])));
    }

    #[test]
    fn requests_come_from_annotations_then_spec() {
        let base = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}});
        assert_eq!(request_of(&svc(base.clone())), Ok(Request::Any { ipv6: false }));
        let mut v6 = base.clone();
        v6["spec"]["ipFamilies"] = json!(["IPv6", "IPv4"]);
        assert_eq!(request_of(&svc(v6)), Ok(Request::Any { ipv6: true }));
        let mut spec = base.clone();
        spec["spec"]["loadBalancerIP"] = json!("10.0.0.7");
        assert_eq!(
            request_of(&svc(spec.clone())),
            Ok(Request::Specific(ips(&["10.0.0.7"])))
        );
        let mut metallb = spec.clone();
        metallb["metadata"]["annotations"] =
            json!({"metallb.universe.tf/loadBalancerIPs": "10.0.0.8, fd00::8"});
        assert_eq!(
            request_of(&svc(metallb.clone())),
            Ok(Request::Specific(ips(&["10.0.0.8", "fd00::8"])))
        );
        let mut ours = metallb.clone();
        ours["metadata"]["annotations"][LB_IPS_ANNOTATION] = json!("10.0.0.9");
        assert_eq!(request_of(&svc(ours)), Ok(Request::Specific(ips(&["10.0.0.9"]))));
        let mut bad = base;
        bad["spec"]["loadBalancerIP"] = json!("ten");
        assert_eq!(
            request_of(&svc(bad)),
            Err(AllocationError::InvalidRequest("ten".into()))
        );
    }

    #[test]
    fn only_classless_load_balancers_are_ours() {
        assert!(is_ours(&svc(json!({"spec": {"type": "LoadBalancer"}}))));
        assert!(!is_ours(&svc(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "x.io/lb"}})
        )));
        assert!(!is_ours(&svc(json!({"spec": {"type": "NodePort"}}))));
    }

    fn node(name: &str, ready: bool, addresses: &[&str]) -> Arc<Node> {
        let addresses: Vec<_> = addresses
            .iter()
            .map(|a| json!({"type": "InternalIP", "address": a}))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"addresses": addresses,
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn without_a_pool_the_ready_nodes_addresses() {
        let mut excluded = (*node("n4", true, &["192.168.0.4"])).clone();
        excluded.metadata.labels = Some([(EXCLUDE_NODE_LABEL.to_string(), String::new())].into());
        let nodes = vec![
            node("n2", true, &["192.168.0.2", "fd00::2"]),
            node("n1", true, &["192.168.0.1"]),
            node("n3", false, &["192.168.0.3"]),
            Arc::new(excluded),
        ];
        let v4 = svc(json!({"spec": {"type": "LoadBalancer"}}));
        assert_eq!(node_ingress(&v4, &nodes), ips(&["192.168.0.1", "192.168.0.2"]));
        let dual = svc(json!({"spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4", "IPv6"]}}));
        assert_eq!(
            node_ingress(&dual, &nodes),
            ips(&["192.168.0.1", "192.168.0.2", "fd00::2"])
        );
    }

    #[test]
    fn agents_announce_pool_addresses_once_and_never_node_addresses() {
        let nodes = vec![
            node("n1", true, &["192.168.0.1"]),
            node("n2", true, &["192.168.0.2"]),
            node("n3", false, &["192.168.0.3"]),
        ];
        let lb = |name: &str, ip: &str, extra: serde_json::Value| {
            let mut v = json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "LoadBalancer"},
                "status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
            for (k, val) in extra.as_object().into_iter().flatten() {
                v["spec"][k] = val.clone();
            }
            Arc::new(svc(v))
        };
        let services = vec![
            lb("pooled", "10.0.0.1", json!({})),
            lb("fallback", "192.168.0.1", json!({})),
            lb(
                "classed",
                "10.0.0.2",
                json!({"loadBalancerClass": "example.com/lb"}),
            ),
            lb("local", "10.0.0.3", json!({"externalTrafficPolicy": "Local"})),
        ];
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "local-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "local"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.1.5"], "nodeName": "n2", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.5"], "nodeName": "n1", "conditions": {"ready": false}}],
        }))
        .unwrap();
        let slices = vec![Arc::new(slice)];
        let by = |n: &str| announced_by(n, &services, &slices, &nodes);
        let (n1, n2) = (by("n1"), by("n2"));
        assert!(by("n3").is_empty(), "a NotReady node announces nothing");
        assert!(n1.is_disjoint(&n2));
        let all: BTreeSet<IpAddr> = n1.union(&n2).copied().collect();
        assert_eq!(all, ips(&["10.0.0.1", "10.0.0.3"]).into_iter().collect());
        assert!(
            n2.contains(&ip("10.0.0.3")),
            "only n2 has a ready endpoint of the Local service"
        );
    }

    #[test]
    fn one_announcer_per_address_stable_under_node_changes() {
        let nodes: Vec<String> = (1..=5).map(|i| format!("node-{i}")).collect();
        assert_eq!(announcer_for(ip("10.0.0.1"), &[]), None);
        let mut counts = HashMap::new();
        for i in 1..=200u32 {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let winner = announcer_for(addr, &nodes).unwrap();
            // Order of the list does not matter.
            let mut reversed = nodes.clone();
            reversed.reverse();
            assert_eq!(announcer_for(addr, &reversed).as_ref(), Some(&winner));
            // Removing another node does not move the address; removing the winner does.
            let others: Vec<String> = nodes.iter().filter(|n| **n != winner).cloned().collect();
            let loser = others[0].clone();
            let without_loser: Vec<String> = nodes.iter().filter(|n| **n != loser).cloned().collect();
            assert_eq!(announcer_for(addr, &without_loser).as_ref(), Some(&winner));
            assert_ne!(announcer_for(addr, &others).as_ref(), Some(&winner));
            *counts.entry(winner).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5, "every node announces some addresses: {counts:?}");
        // `sha256sum` of "node-b#10.0.0.1" starts 2aca…, below node-a's dd41… and node-c's f949….
        let three = ["node-a".to_string(), "node-b".into(), "node-c".into()];
        assert_eq!(announcer_for(ip("10.0.0.1"), &three).as_deref(), Some("node-b"));
    }
}
