//! The pure core: Services + EndpointSlices → per-service nftables chains, sets and map elements
//! ([`ServiceRules`]), a whole table as one `nft -f` script ([`Ruleset::render_full`]), and the smallest
//! script that turns one applied ruleset into another ([`diff`]).
//!
//! Layout (kube-proxy's nftables mode, NETWORKING.md §3), in table `ip <table>`:
//! - nat prerouting/output −100 → `services`: `ip daddr . meta l4proto . th dport vmap @service-ips`
//!   (ClusterIPs → `svc-*`, externalIPs and LoadBalancer IPs → `ext-*`), then NodePorts on every local
//!   address (`fib daddr type local`, not 127/8) through `@service-nodeports` → `ext-*`.
//! - `svc-<ns>/<name>/<proto>/<port>` marks non-pod sources for masquerade and goes to the internal policy
//!   chain; `ext-*` marks (policy Cluster) or short-circuits pod and host traffic (policy Local) and goes to
//!   the external policy chain. Policy chains `cluster-*` / `local-*` pick an endpoint with
//!   `numgen random mod N` and DNAT in one rule; with `sessionAffinity: ClientIP` they first try one
//!   dynamic timeout set per endpoint and go through per-endpoint chains `ep-*__<ip>/<port>`.
//! - filter −110 (before DNAT): `@firewall-ips` → `firewall-*` (loadBalancerSourceRanges).
//!   filter 0 (after DNAT, so only traffic that was *not* DNATed matches): `@no-endpoint-services` /
//!   `@no-endpoint-nodeports` reject (no endpoints) or drop (policy Local without a local endpoint);
//!   `@cluster-ips` rejects undefined ports of live ClusterIPs; the rest of the service CIDR is dropped.
//! - nat postrouting 100 → `masquerading`: hairpin (`@hairpin-endpoints`: a DNATed packet whose source
//!   is its own endpoint), marked packets (`fully-random`), and pod traffic leaving the cluster CIDR.
//!
//! Endpoints get per-endpoint chains only with session affinity: 1,000 services × 10 endpoints stay ~2,000
//! chains, which keeps both the full load and nft's per-transaction cache fetch fast.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{
    DEFAULT_AFFINITY_TIMEOUT, Endpoint, Ipv4Cidr, Model, NodeInfo, ServiceKey, endpoints_for_port, usable,
};

/// The packet-mark bit that asks `masquerading` to SNAT a packet (kube-proxy's value; CNI portmap uses 0x2000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The named sets and maps of the table whose elements services contribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Container {
    /// `address . protocol . port : verdict` — ClusterIPs, externalIPs, LoadBalancer IPs to DNAT.
    ServiceIps,
    /// `protocol . port : verdict` — NodePorts.
    ServiceNodeports,
    /// `address . protocol . port : verdict` — reject/drop for destinations without usable endpoints.
    NoEndpointServices,
    /// `protocol . port : verdict` — the same for NodePorts.
    NoEndpointNodeports,
    /// `address . protocol . port : verdict` — LoadBalancer IPs with source ranges → their firewall chain.
    FirewallIps,
    /// Every live ClusterIP (a packet to an undefined port of one is rejected).
    ClusterIps,
    /// `endpoint . endpoint` pairs: a DNATed packet from an endpoint to itself is hairpin traffic.
    HairpinEndpoints,
}

impl Container {
    pub const ALL: [Container; 7] = [
        Container::ServiceIps,
        Container::ServiceNodeports,
        Container::NoEndpointServices,
        Container::NoEndpointNodeports,
        Container::FirewallIps,
        Container::ClusterIps,
        Container::HairpinEndpoints,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Container::ServiceIps => "service-ips",
            Container::ServiceNodeports => "service-nodeports",
            Container::NoEndpointServices => "no-endpoint-services",
            Container::NoEndpointNodeports => "no-endpoint-nodeports",
            Container::FirewallIps => "firewall-ips",
            Container::ClusterIps => "cluster-ips",
            Container::HairpinEndpoints => "hairpin-endpoints",
        }
    }

    fn is_map(self) -> bool {
        !matches!(self, Container::ClusterIps | Container::HairpinEndpoints)
    }

    fn kind(self) -> &'static str {
        if self.is_map() { "map" } else { "set" }
    }

    fn type_line(self) -> &'static str {
        match self {
            Container::ServiceIps | Container::NoEndpointServices | Container::FirewallIps => {
                "type ipv4_addr . inet_proto . inet_service : verdict"
            }
            Container::ServiceNodeports | Container::NoEndpointNodeports => {
                "type inet_proto . inet_service : verdict"
            }
            Container::ClusterIps => "type ipv4_addr",
            Container::HairpinEndpoints => "type ipv4_addr . ipv4_addr",
        }
    }

    fn element(self, key: &str, value: &str) -> String {
        if self.is_map() {
            format!("{key} : {value}")
        } else {
            key.to_string()
        }
    }
}

/// A set or map element: which container and its key (as nft writes it, e.g. `10.43.0.5 . tcp . 80`).
pub type ElementKey = (Container, String);

/// A UDP service port, remembered so conntrack entries can be flushed when its endpoints go away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpPort {
    /// Virtual destinations: ClusterIPs, externalIPs and LoadBalancer IPs with the service port.
    pub destinations: Vec<(Ipv4Addr, u16)>,
    pub node_port: Option<u16>,
    pub endpoints: BTreeSet<Ipv4Addr>,
}

/// One conntrack deletion: `conntrack -D -p udp [--orig-dst A] --orig-port-dst P [--dst-nat E]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConntrackFlush {
    pub orig_dst: Option<Ipv4Addr>,
    pub orig_port_dst: u16,
    pub dnat_to: Option<Ipv4Addr>,
}

impl ConntrackFlush {
    /// Arguments for the `conntrack` tool.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["-D".to_string(), "-p".into(), "udp".into()];
        if let Some(dst) = self.orig_dst {
            args.extend(["--orig-dst".into(), dst.to_string()]);
        }
        args.extend(["--orig-port-dst".into(), self.orig_port_dst.to_string()]);
        if let Some(ep) = self.dnat_to {
            args.extend(["--dst-nat".into(), ep.to_string()]);
        }
        args
    }
}

/// Everything one Service contributes to the table. Chain and set names contain the service's namespace
/// and name, so they belong to exactly one Service; elements may collide (two Services claiming one
/// externalIP and port) and are resolved first-come by [`ServiceKey`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Session-affinity set name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, i32>,
    /// Elements; the value is the verdict for maps, empty for sets.
    pub elements: BTreeMap<ElementKey, String>,
    /// UDP ports by `<proto>/<port>` name, for conntrack flushes.
    pub udp_ports: BTreeMap<String, UdpPort>,
}

/// The whole table: node-wide settings and each Service's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub node: NodeInfo,
    pub services: BTreeMap<ServiceKey, Arc<ServiceRules>>,
}

/// A chain or set that was flushed and must be deleted in a later transaction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StaleObject {
    Chain(String),
    Set(String),
}

/// What [`diff`] produced: the script (empty when nothing changed), what it flushed, what it deleted and
/// which conntrack entries to flush once it is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub script: String,
    pub flushed: Vec<StaleObject>,
    pub deleted: Vec<StaleObject>,
    pub conntrack: Vec<ConntrackFlush>,
}

/// Services + EndpointSlices + node information → the `nft -f` text that (re)creates the whole table.
pub fn compile(model: &Model) -> String {
    Ruleset::from_model(model).render_full()
}

impl Ruleset {
    pub fn new(node: NodeInfo) -> Ruleset {
        Ruleset {
            node,
            services: BTreeMap::new(),
        }
    }

    pub fn from_model(model: &Model) -> Ruleset {
        let mut ruleset = Ruleset::new(model.node.clone());
        for key in model.services.keys() {
            ruleset.recompile(model, key);
        }
        ruleset
    }

    /// Bring one Service's rules up to date with `model` (removing them when the Service is gone).
    pub fn recompile(&mut self, model: &Model, key: &ServiceKey) {
        match model.services.get(key) {
            Some(svc) => {
                let rules = compile_service(&self.node, svc, model.slices.get(key));
                if self.services.get(key).is_none_or(|old| **old != rules) {
                    self.services.insert(key.clone(), Arc::new(rules));
                }
            }
            None => {
                self.services.remove(key);
            }
        }
    }

    /// The elements actually in the table: per key, the first Service (in key order) that claims it.
    pub fn elements(&self) -> BTreeMap<&ElementKey, &String> {
        let mut elements = BTreeMap::new();
        for rules in self.services.values() {
            for (key, value) in &rules.elements {
                elements.entry(key).or_insert(value);
            }
        }
        elements
    }

    /// The script that replaces the whole table in one transaction: `add table` + `delete table` (so it
    /// works whether or not the table exists) + the full content.
    pub fn render_full(&self) -> String {
        let table = &self.node.table;
        let mut out = String::with_capacity(256 * self.services.len() + 4096);
        let _ = writeln!(
            out,
            "add table ip {table}\ndelete table ip {table}\ntable ip {table} {{"
        );
        let elements = self.elements();
        for container in Container::ALL {
            let _ = writeln!(
                out,
                "  {} {} {{\n    {}",
                container.kind(),
                container.name(),
                container.type_line()
            );
            let mut first = true;
            for ((c, key), value) in elements.iter().filter(|((c, _), _)| *c == container) {
                out.push_str(if first {
                    "    elements = {\n      "
                } else {
                    ",\n      "
                });
                out.push_str(&c.element(key, value));
                first = false;
            }
            if !first {
                out.push_str("\n    }\n");
            }
            out.push_str("  }\n");
        }
        for rules in self.services.values() {
            for (name, timeout) in &rules.affinity_sets {
                let _ = writeln!(out, "  set {name} {{\n    {}\n  }}", affinity_set_body(*timeout));
            }
        }
        for (name, hook, rules) in base_chains(&self.node) {
            render_chain(&mut out, &name, hook, &rules);
        }
        for rules in self.services.values() {
            for (name, body) in &rules.chains {
                render_chain(&mut out, name, None, body);
            }
        }
        out.push_str("}\n");
        out
    }
}

fn affinity_set_body(timeout: i32) -> String {
    format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;")
}

fn render_chain(out: &mut String, name: &str, hook: Option<String>, rules: &[String]) {
    let _ = writeln!(out, "  chain {name} {{");
    if let Some(hook) = hook {
        let _ = writeln!(out, "    {hook}");
    }
    for rule in rules {
        let _ = writeln!(out, "    {rule}");
    }
    out.push_str("  }\n");
}

/// The fixed chains: hooks, dispatch, checks, masquerading. Depend only on the node settings.
fn base_chains(node: &NodeInfo) -> Vec<(String, Option<String>, Vec<String>)> {
    let hook = |kind: &str, hook: &str, priority: i32| {
        Some(format!(
            "type {kind} hook {hook} priority {priority}; policy accept;"
        ))
    };
    let s = |v: &[&str]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    let mut cluster_ips_check = s(&["ip daddr @cluster-ips reject"]);
    if let Some(cidr) = node.service_cidr {
        cluster_ips_check.push(format!("ip daddr {cidr} drop"));
    }
    let mut masquerading = vec![
        "ct status dnat ip saddr . ip daddr @hairpin-endpoints masquerade".to_string(),
        format!(
            "meta mark & {MASQUERADE_MARK:#x} != 0 meta mark set meta mark ^ {MASQUERADE_MARK:#x} masquerade fully-random"
        ),
    ];
    if let Some(cidr) = node.cluster_cidr {
        masquerading.push(format!("ip saddr {cidr} ip daddr != {cidr} masquerade"));
    }
    vec![
        (
            "nat-prerouting".into(),
            hook("nat", "prerouting", -100),
            s(&["jump services"]),
        ),
        (
            "nat-output".into(),
            hook("nat", "output", -100),
            s(&["jump services"]),
        ),
        (
            "nat-postrouting".into(),
            hook("nat", "postrouting", 100),
            s(&["jump masquerading"]),
        ),
        (
            "filter-prerouting-pre-dnat".into(),
            hook("filter", "prerouting", -110),
            s(&["ct state new jump firewall-check"]),
        ),
        (
            "filter-output-pre-dnat".into(),
            hook("filter", "output", -110),
            s(&["ct state new jump firewall-check"]),
        ),
        (
            "filter-input".into(),
            hook("filter", "input", 0),
            s(&[
                "ct state new jump nodeport-endpoints-check",
                "ct state new jump service-endpoints-check",
            ]),
        ),
        (
            "filter-forward".into(),
            hook("filter", "forward", 0),
            s(&[
                "ct state new jump service-endpoints-check",
                "ct state new jump cluster-ips-check",
            ]),
        ),
        (
            "filter-output".into(),
            hook("filter", "output", 0),
            s(&[
                "ct state new jump service-endpoints-check",
                "ct state new jump cluster-ips-check",
            ]),
        ),
        (
            "services".into(),
            None,
            s(&[
                "ip daddr . meta l4proto . th dport vmap @service-ips",
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
            ]),
        ),
        (
            "firewall-check".into(),
            None,
            s(&["ip daddr . meta l4proto . th dport vmap @firewall-ips"]),
        ),
        (
            "service-endpoints-check".into(),
            None,
            s(&["ip daddr . meta l4proto . th dport vmap @no-endpoint-services"]),
        ),
        (
            "nodeport-endpoints-check".into(),
            None,
            s(&[
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports",
            ]),
        ),
        ("cluster-ips-check".into(), None, cluster_ips_check),
        ("reject-chain".into(), None, s(&["reject"])),
        (
            "mark-for-masquerade".into(),
            None,
            vec![format!("meta mark set meta mark | {MASQUERADE_MARK:#x}")],
        ),
        ("masquerading".into(), None, masquerading),
    ]
}

fn parse_v4s<'a>(addrs: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = addrs.into_iter().filter_map(|a| a.parse().ok()).collect();
    out.sort();
    out.dedup();
    out
}

/// One Service → its chains, sets and elements (see the module docs for the layout).
pub fn compile_service(
    node: &NodeInfo,
    svc: &Service,
    slices: Option<&BTreeMap<String, EndpointSlice>>,
) -> ServiceRules {
    let mut rules = ServiceRules::default();
    let (Some(key), Some(spec)) = (ServiceKey::of_service(svc), svc.spec.as_ref()) else {
        return rules;
    };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return rules;
    }
    let cluster_ips = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => parse_v4s(ips),
        _ => parse_v4s(spec.cluster_ip.iter()),
    };
    let mut external_ips = parse_v4s(spec.external_ips.iter().flatten());
    let mut lb_ips = Vec::new();
    if service_type == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        // ipMode Proxy means a cloud proxy in front rewrites the destination: no VIP rule for it.
        lb_ips = parse_v4s(
            ingress
                .into_iter()
                .flatten()
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_ref()),
        );
    }
    external_ips.retain(|ip| !lb_ips.contains(ip));
    let node_ports = matches!(service_type, "NodePort" | "LoadBalancer");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let source_ranges: Vec<Ipv4Cidr> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let slices: Vec<&EndpointSlice> = slices.into_iter().flat_map(|s| s.values()).collect();

    for port in spec.ports.iter().flatten() {
        let proto = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => "tcp",
            "UDP" => "udp",
            "SCTP" => "sctp",
            _ => continue,
        };
        let Ok(port_number) = u16::try_from(port.port) else {
            continue;
        };
        let node_port = if node_ports {
            port.node_port.and_then(|p| u16::try_from(p).ok())
        } else {
            None
        };
        let base = format!("{}/{}/{proto}/{port_number}", key.namespace, key.name);
        let endpoints = endpoints_for_port(slices.iter().copied(), port, publish_not_ready);
        let is_local = |e: &&Endpoint| e.node_name.as_deref() == Some(node.node_name.as_str());
        let cluster_eps = usable(endpoints.iter().collect());
        let local_eps = usable(endpoints.iter().filter(is_local).collect());
        let internal_eps = if internal_local { &local_eps } else { &cluster_eps };
        let external_eps = if external_local { &local_eps } else { &cluster_eps };
        let has_endpoints = !cluster_eps.is_empty();
        let externally_reachable = !external_ips.is_empty() || !lb_ips.is_empty() || node_port.is_some();
        let no_endpoint_verdict = if has_endpoints {
            "drop"
        } else {
            "goto reject-chain"
        };

        let cluster_chain = format!("cluster-{base}");
        let local_chain = format!("local-{base}");
        let svc_chain = format!("svc-{base}");
        let ext_chain = format!("ext-{base}");
        let fw_chain = format!("firewall-{base}");
        if has_endpoints {
            add_policy_chain(&mut rules, &cluster_chain, &base, proto, &cluster_eps, affinity);
        }
        if (internal_local || external_local) && !local_eps.is_empty() {
            add_policy_chain(&mut rules, &local_chain, &base, proto, &local_eps, affinity);
        }
        let policy_chain = |local: bool| if local { &local_chain } else { &cluster_chain };

        // Internal traffic: the ClusterIPs.
        if !internal_eps.is_empty() {
            let mut body = Vec::new();
            if let Some(cidr) = node.cluster_cidr {
                body.push(format!("ip saddr != {cidr} jump mark-for-masquerade"));
            }
            body.push(format!("goto {}", policy_chain(internal_local)));
            rules.chains.insert(svc_chain.clone(), body);
        }
        for ip in &cluster_ips {
            rules
                .elements
                .insert((Container::ClusterIps, ip.to_string()), String::new());
            let element = (Container::ServiceIps, format!("{ip} . {proto} . {port_number}"));
            if internal_eps.is_empty() {
                rules.elements.insert(
                    (Container::NoEndpointServices, element.1),
                    no_endpoint_verdict.into(),
                );
            } else {
                rules.elements.insert(element, format!("goto {svc_chain}"));
            }
        }

        // External traffic: externalIPs, LoadBalancer IPs, NodePorts.
        if externally_reachable && has_endpoints {
            let mut body = Vec::new();
            if external_local {
                // Pods and the node itself keep using every endpoint; only outside clients are limited to
                // this node's endpoints, with their source address preserved.
                if let Some(cidr) = node.cluster_cidr {
                    body.push(format!("ip saddr {cidr} goto {cluster_chain}"));
                }
                body.push("fib saddr type local jump mark-for-masquerade".to_string());
                body.push(format!("fib saddr type local goto {cluster_chain}"));
                if !local_eps.is_empty() {
                    body.push(format!("goto {local_chain}"));
                }
            } else {
                body.push("jump mark-for-masquerade".to_string());
                body.push(format!("goto {cluster_chain}"));
            }
            rules.chains.insert(ext_chain.clone(), body);
        }
        for ip in external_ips.iter().chain(&lb_ips) {
            let key = format!("{ip} . {proto} . {port_number}");
            if has_endpoints {
                rules
                    .elements
                    .insert((Container::ServiceIps, key.clone()), format!("goto {ext_chain}"));
            }
            if external_eps.is_empty() {
                rules
                    .elements
                    .insert((Container::NoEndpointServices, key), no_endpoint_verdict.into());
            }
        }
        if !lb_ips.is_empty() && !source_ranges.is_empty() {
            let ranges = source_ranges
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            rules
                .chains
                .insert(fw_chain.clone(), vec![format!("ip saddr != {{ {ranges} }} drop")]);
            for ip in &lb_ips {
                rules.elements.insert(
                    (Container::FirewallIps, format!("{ip} . {proto} . {port_number}")),
                    format!("goto {fw_chain}"),
                );
            }
        }
        if let Some(node_port) = node_port {
            let key = format!("{proto} . {node_port}");
            if has_endpoints {
                rules.elements.insert(
                    (Container::ServiceNodeports, key.clone()),
                    format!("goto {ext_chain}"),
                );
            }
            if external_eps.is_empty() {
                rules
                    .elements
                    .insert((Container::NoEndpointNodeports, key), no_endpoint_verdict.into());
            }
        }

        let used: BTreeSet<Ipv4Addr> = internal_eps
            .iter()
            .chain(external_eps.iter())
            .map(|e| e.ip)
            .collect();
        for ip in &used {
            rules.elements.insert(
                (Container::HairpinEndpoints, format!("{ip} . {ip}")),
                String::new(),
            );
        }
        if proto == "udp" {
            let destinations = cluster_ips
                .iter()
                .chain(&external_ips)
                .chain(&lb_ips)
                .map(|ip| (*ip, port_number))
                .collect();
            rules.udp_ports.insert(
                format!("{proto}/{port_number}"),
                UdpPort {
                    destinations,
                    node_port,
                    endpoints: used,
                },
            );
        }
    }
    rules
}

/// A policy chain choosing one of `endpoints` at random; with session affinity, a client's earlier
/// choice first (one dynamic set per endpoint, refreshed by every packet through its endpoint chain).
fn add_policy_chain(
    rules: &mut ServiceRules,
    chain: &str,
    base: &str,
    proto: &str,
    endpoints: &[&Endpoint],
    affinity: Option<i32>,
) {
    let mut body = Vec::new();
    match affinity {
        None if endpoints.len() == 1 => {
            let ep = endpoints[0];
            body.push(format!("meta l4proto {proto} dnat ip to {}:{}", ep.ip, ep.port));
        }
        None => {
            let choices = endpoints
                .iter()
                .enumerate()
                .map(|(i, ep)| format!("{i} : {} . {}", ep.ip, ep.port))
                .collect::<Vec<_>>()
                .join(", ");
            body.push(format!(
                "meta l4proto {proto} dnat ip to numgen random mod {} map {{ {choices} }}",
                endpoints.len()
            ));
        }
        Some(timeout) => {
            let mut choices = Vec::new();
            for (i, ep) in endpoints.iter().enumerate() {
                let ep_chain = format!("ep-{base}__{}/{}", ep.ip, ep.port);
                let set = format!("aff-{base}__{}/{}", ep.ip, ep.port);
                body.push(format!("ip saddr @{set} goto {ep_chain}"));
                choices.push(format!("{i} : goto {ep_chain}"));
                rules.chains.insert(
                    ep_chain,
                    vec![
                        format!("update @{set} {{ ip saddr }}"),
                        format!("meta l4proto {proto} dnat ip to {}:{}", ep.ip, ep.port),
                    ],
                );
                rules.affinity_sets.insert(set, timeout);
            }
            body.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                endpoints.len(),
                choices.join(", ")
            ));
        }
    }
    rules.chains.insert(chain.to_string(), body);
}

/// The smallest transaction turning the applied ruleset `old` into `new`: new sets and chains, rewritten
/// chains, element deletions and additions, flushes of chains that went away, and deletion of
/// `stale` objects flushed by an earlier transaction (skipping those that came back). The caller
/// remembers [`Update::flushed`] and passes them as `stale` to a later diff (≥ 1 s later, as kube-proxy).
/// Both rulesets must have the same [`NodeInfo`]; otherwise do a full sync.
pub fn diff(old: &Ruleset, new: &Ruleset, stale: &[StaleObject]) -> Update {
    let table = &new.node.table;
    let mut update = Update::default();
    let mut add_sets = String::new();
    let mut add_chains = String::new();
    let mut fill_chains = String::new();
    let mut flush_chains = String::new();
    let empty = ServiceRules::default();
    let keys: BTreeSet<&ServiceKey> = old.services.keys().chain(new.services.keys()).collect();
    let mut new_names: BTreeSet<&str> = BTreeSet::new();
    let mut touched: BTreeSet<&ElementKey> = BTreeSet::new();
    let mut changed = 0;
    for key in keys {
        let before = old.services.get(key);
        let after = new.services.get(key);
        if let (Some(a), Some(b)) = (before, after)
            && (Arc::ptr_eq(a, b) || a == b)
        {
            continue;
        }
        changed += 1;
        let before = before.map_or(&empty, |r| r);
        let after = after.map_or(&empty, |r| r);
        touched.extend(before.elements.keys().chain(after.elements.keys()));
        for (name, timeout) in &after.affinity_sets {
            new_names.insert(name);
            if !before.affinity_sets.contains_key(name) {
                let _ = writeln!(
                    add_sets,
                    "add set ip {table} {name} {{ {} }}",
                    affinity_set_body(*timeout)
                );
            }
        }
        for (name, body) in &after.chains {
            new_names.insert(name);
            match before.chains.get(name) {
                Some(old_body) if old_body == body => continue,
                Some(_) => {
                    let _ = writeln!(fill_chains, "flush chain ip {table} {name}");
                }
                None => {
                    let _ = writeln!(add_chains, "add chain ip {table} {name}");
                }
            }
            for rule in body {
                let _ = writeln!(fill_chains, "add rule ip {table} {name} {rule}");
            }
        }
        for name in before.chains.keys().filter(|n| !after.chains.contains_key(*n)) {
            let _ = writeln!(flush_chains, "flush chain ip {table} {name}");
            update.flushed.push(StaleObject::Chain(name.clone()));
        }
        for name in before
            .affinity_sets
            .keys()
            .filter(|n| !after.affinity_sets.contains_key(*n))
        {
            update.flushed.push(StaleObject::Set(name.clone()));
        }
        update.conntrack.extend(conntrack_flushes(before, after));
    }

    // Only elements of changed services can change. Looking each one up across all services is cheaper than
    // building both element tables — unless many services changed (a relist), then build the tables.
    let (old_elements, new_elements) = if changed * 8 < new.services.len().max(old.services.len()) {
        (
            effective_elements(old, &touched),
            effective_elements(new, &touched),
        )
    } else {
        (old.elements(), new.elements())
    };
    let mut delete_elements = String::new();
    let mut add_elements = String::new();
    for (key, value) in &old_elements {
        if new_elements.get(key) != Some(value) {
            let _ = writeln!(
                delete_elements,
                "delete element ip {table} {} {{ {} }}",
                key.0.name(),
                key.1
            );
        }
    }
    for (key, value) in &new_elements {
        if old_elements.get(key) != Some(value) {
            let _ = writeln!(
                add_elements,
                "add element ip {table} {} {{ {} }}",
                key.0.name(),
                key.0.element(&key.1, value)
            );
        }
    }

    // Objects flushed earlier are deleted unless they came back (a Service recreated in the meantime).
    let mut delete_stale = String::new();
    let live = |name: &str| {
        new_names.contains(name)
            || new
                .services
                .values()
                .any(|r| r.chains.contains_key(name) || r.affinity_sets.contains_key(name))
    };
    let mut stale: Vec<&StaleObject> = stale.iter().collect();
    stale.sort(); // chains before the sets their rules referenced
    for object in stale {
        match object {
            StaleObject::Chain(name) if !live(name) => {
                let _ = writeln!(delete_stale, "delete chain ip {table} {name}");
            }
            StaleObject::Set(name) if !live(name) => {
                let _ = writeln!(delete_stale, "delete set ip {table} {name}");
            }
            _ => continue,
        }
        update.deleted.push(object.clone());
    }

    update.script = [
        add_sets,
        add_chains,
        fill_chains,
        delete_elements,
        add_elements,
        flush_chains,
        delete_stale,
    ]
    .concat();
    update.conntrack.sort();
    update.conntrack.dedup();
    update
}

/// The elements `keys` have in `rs` (the first claiming Service's value, as [`Ruleset::elements`]).
fn effective_elements<'a>(
    rs: &'a Ruleset,
    keys: &BTreeSet<&'a ElementKey>,
) -> BTreeMap<&'a ElementKey, &'a String> {
    keys.iter()
        .filter_map(|k| rs.services.values().find_map(|r| r.elements.get_key_value(*k)))
        .collect()
}

/// UDP entries that would keep sending a flow to an endpoint that is gone, or keep a flow that was
/// rejected before the service had endpoints (kube-proxy flushes both).
fn conntrack_flushes(before: &ServiceRules, after: &ServiceRules) -> Vec<ConntrackFlush> {
    let mut flushes = Vec::new();
    for (name, old) in &before.udp_ports {
        let new = after.udp_ports.get(name);
        for gone in old
            .endpoints
            .iter()
            .filter(|ip| new.is_none_or(|n| !n.endpoints.contains(ip)))
        {
            for (dst, port) in &old.destinations {
                flushes.push(ConntrackFlush {
                    orig_dst: Some(*dst),
                    orig_port_dst: *port,
                    dnat_to: Some(*gone),
                });
            }
            if let Some(node_port) = old.node_port {
                flushes.push(ConntrackFlush {
                    orig_dst: None,
                    orig_port_dst: node_port,
                    dnat_to: Some(*gone),
                });
            }
        }
    }
    for (name, new) in &after.udp_ports {
        let had_endpoints = before
            .udp_ports
            .get(name)
            .is_some_and(|o| !o.endpoints.is_empty());
        if !had_endpoints && !new.endpoints.is_empty() {
            for (dst, port) in &new.destinations {
                flushes.push(ConntrackFlush {
                    orig_dst: Some(*dst),
                    orig_port_dst: *port,
                    dnat_to: None,
                });
            }
        }
    }
    flushes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
        SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointConditions, EndpointPort};
    use kube::api::ObjectMeta;

    fn node() -> NodeInfo {
        NodeInfo {
            table: "rkube".into(),
            node_name: "n1".into(),
            node_ips: vec!["192.168.1.10".parse().unwrap()],
            cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
            service_cidr: Some("10.43.0.0/16".parse().unwrap()),
        }
    }

    fn service(name: &str, ip: &str, protocol: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                cluster_ips: Some(vec![ip.into()]),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some(protocol.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `(ip, node, ready, serving, terminating)`
    type Ep<'a> = (&'a str, &'a str, bool, bool, bool);

    fn slice(service: &str, protocol: &str, endpoints: &[Ep<'_>]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(format!("{service}-abc")),
                labels: Some([(crate::model::SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some(protocol.into()),
                ..Default::default()
            }]),
            endpoints: endpoints
                .iter()
                .map(|(ip, node, ready, serving, terminating)| SliceEndpoint {
                    addresses: vec![ip.to_string()],
                    node_name: Some(node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*serving),
                        terminating: Some(*terminating),
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn model(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Model {
        let mut model = Model::new(node());
        for svc in services {
            model.apply_service(svc);
        }
        for slice in slices {
            model.apply_slice(slice);
        }
        model
    }

    fn rules_of(model: &Model, name: &str) -> Arc<ServiceRules> {
        Ruleset::from_model(model).services[&ServiceKey::new("default", name)].clone()
    }

    fn element<'a>(rules: &'a ServiceRules, container: Container, key: &str) -> Option<&'a str> {
        rules
            .elements
            .get(&(container, key.to_string()))
            .map(String::as_str)
    }

    const READY: bool = true;

    #[test]
    fn cluster_ip_balances_over_ready_endpoints_only() {
        let m = model(
            vec![service("web", "10.43.0.5", "TCP")],
            vec![slice(
                "web",
                "TCP",
                &[
                    ("10.42.0.10", "n1", READY, true, false),
                    ("10.42.1.11", "n2", READY, true, false),
                    ("10.42.1.12", "n2", false, false, false),
                ],
            )],
        );
        let rules = rules_of(&m, "web");
        assert_eq!(
            element(&rules, Container::ServiceIps, "10.43.0.5 . tcp . 80"),
            Some("goto svc-default/web/tcp/80")
        );
        assert_eq!(element(&rules, Container::ClusterIps, "10.43.0.5"), Some(""));
        assert_eq!(
            rules.chains["svc-default/web/tcp/80"],
            [
                "ip saddr != 10.42.0.0/16 jump mark-for-masquerade",
                "goto cluster-default/web/tcp/80"
            ]
        );
        assert_eq!(
            rules.chains["cluster-default/web/tcp/80"],
            [
                "meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.42.0.10 . 8080, 1 : 10.42.1.11 . 8080 }"
            ]
        );
        assert!(element(&rules, Container::HairpinEndpoints, "10.42.0.10 . 10.42.0.10").is_some());
        assert!(element(&rules, Container::HairpinEndpoints, "10.42.1.12 . 10.42.1.12").is_none());
        assert!(
            !rules
                .elements
                .keys()
                .any(|(c, _)| *c == Container::NoEndpointServices)
        );
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_in_the_filter_hooks() {
        let m = model(vec![service("web", "10.43.0.5", "TCP")], vec![]);
        let rules = rules_of(&m, "web");
        assert_eq!(
            element(&rules, Container::NoEndpointServices, "10.43.0.5 . tcp . 80"),
            Some("goto reject-chain")
        );
        assert!(element(&rules, Container::ServiceIps, "10.43.0.5 . tcp . 80").is_none());
        assert!(rules.chains.is_empty());
        let text = compile(&m);
        assert!(text.contains("chain service-endpoints-check {\n    ip daddr . meta l4proto . th dport vmap @no-endpoint-services"));
        assert!(text.contains("type filter hook output priority 0; policy accept;\n    ct state new jump service-endpoints-check"));
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let eps = [
            ("10.42.0.10", "n1", false, true, true),
            ("10.42.0.11", "n1", READY, true, false),
        ];
        let rules = rules_of(
            &model(
                vec![service("web", "10.43.0.5", "TCP")],
                vec![slice("web", "TCP", &eps)],
            ),
            "web",
        );
        assert_eq!(
            rules.chains["cluster-default/web/tcp/80"],
            ["meta l4proto tcp dnat ip to 10.42.0.11:8080"]
        );
        let rules = rules_of(
            &model(
                vec![service("web", "10.43.0.5", "TCP")],
                vec![slice("web", "TCP", &eps[..1])],
            ),
            "web",
        );
        assert_eq!(
            rules.chains["cluster-default/web/tcp/80"],
            ["meta l4proto tcp dnat ip to 10.42.0.10:8080"]
        );
    }

    #[test]
    fn publish_not_ready_addresses_uses_unready_endpoints() {
        let mut svc = service("web", "10.43.0.5", "TCP");
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let rules = rules_of(
            &model(
                vec![svc],
                vec![slice("web", "TCP", &[("10.42.0.10", "n1", false, false, false)])],
            ),
            "web",
        );
        assert_eq!(
            rules.chains["cluster-default/web/tcp/80"],
            ["meta l4proto tcp dnat ip to 10.42.0.10:8080"]
        );
    }

    fn node_port_service(policy: &str) -> Service {
        let mut svc = service("web", "10.43.0.5", "TCP");
        let spec = svc.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".into());
        spec.external_traffic_policy = Some(policy.into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        svc
    }

    #[test]
    fn node_port_with_cluster_policy_masquerades_and_uses_every_endpoint() {
        let eps = [
            ("10.42.0.10", "n1", READY, true, false),
            ("10.42.1.11", "n2", READY, true, false),
        ];
        let rules = rules_of(
            &model(
                vec![node_port_service("Cluster")],
                vec![slice("web", "TCP", &eps)],
            ),
            "web",
        );
        assert_eq!(
            element(&rules, Container::ServiceNodeports, "tcp . 30080"),
            Some("goto ext-default/web/tcp/80")
        );
        assert_eq!(
            rules.chains["ext-default/web/tcp/80"],
            ["jump mark-for-masquerade", "goto cluster-default/web/tcp/80"]
        );
    }

    #[test]
    fn external_traffic_policy_local_keeps_outside_clients_on_local_endpoints() {
        let eps = [
            ("10.42.0.10", "n1", READY, true, false),
            ("10.42.1.11", "n2", READY, true, false),
        ];
        let rules = rules_of(
            &model(vec![node_port_service("Local")], vec![slice("web", "TCP", &eps)]),
            "web",
        );
        assert_eq!(
            rules.chains["ext-default/web/tcp/80"],
            [
                "ip saddr 10.42.0.0/16 goto cluster-default/web/tcp/80",
                "fib saddr type local jump mark-for-masquerade",
                "fib saddr type local goto cluster-default/web/tcp/80",
                "goto local-default/web/tcp/80",
            ]
        );
        assert_eq!(
            rules.chains["local-default/web/tcp/80"],
            ["meta l4proto tcp dnat ip to 10.42.0.10:8080"]
        );
        assert!(element(&rules, Container::NoEndpointNodeports, "tcp . 30080").is_none());

        // No endpoint on this node: outside clients are dropped, pods and the node still reach the others.
        let rules = rules_of(
            &model(
                vec![node_port_service("Local")],
                vec![slice("web", "TCP", &eps[1..])],
            ),
            "web",
        );
        assert_eq!(
            element(&rules, Container::NoEndpointNodeports, "tcp . 30080"),
            Some("drop")
        );
        assert_eq!(
            element(&rules, Container::ServiceNodeports, "tcp . 30080"),
            Some("goto ext-default/web/tcp/80")
        );
        assert!(!rules.chains.contains_key("local-default/web/tcp/80"));
    }

    #[test]
    fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
        let mut svc = service("dns", "10.43.0.10", "UDP");
        svc.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        let eps = [
            ("192.168.1.10", "n1", READY, true, false),
            ("192.168.1.11", "n2", READY, true, false),
        ];
        let rules = rules_of(&model(vec![svc.clone()], vec![slice("dns", "UDP", &eps)]), "dns");
        assert_eq!(
            rules.chains["svc-default/dns/udp/80"][1],
            "goto local-default/dns/udp/80"
        );
        assert_eq!(
            rules.chains["local-default/dns/udp/80"],
            ["meta l4proto udp dnat ip to 192.168.1.10:8080"]
        );
        let rules = rules_of(&model(vec![svc], vec![slice("dns", "UDP", &eps[1..])]), "dns");
        assert_eq!(
            element(&rules, Container::NoEndpointServices, "10.43.0.10 . udp . 80"),
            Some("drop")
        );
    }

    #[test]
    fn client_ip_affinity_uses_a_timeout_set_per_endpoint() {
        let mut svc = service("web", "10.43.0.5", "TCP");
        let spec = svc.spec.as_mut().unwrap();
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        let eps = [
            ("10.42.0.10", "n1", READY, true, false),
            ("10.42.0.11", "n1", READY, true, false),
        ];
        let rules = rules_of(&model(vec![svc], vec![slice("web", "TCP", &eps)]), "web");
        let set = "aff-default/web/tcp/80__10.42.0.10/8080";
        assert_eq!(rules.affinity_sets[set], 60);
        let lb = &rules.chains["cluster-default/web/tcp/80"];
        assert_eq!(
            lb[0],
            format!("ip saddr @{set} goto ep-default/web/tcp/80__10.42.0.10/8080")
        );
        assert!(
            lb[2].starts_with("numgen random mod 2 vmap { 0 : goto ep-default/web/tcp/80__10.42.0.10/8080")
        );
        assert_eq!(
            rules.chains["ep-default/web/tcp/80__10.42.0.10/8080"],
            [
                format!("update @{set} {{ ip saddr }}"),
                "meta l4proto tcp dnat ip to 10.42.0.10:8080".into()
            ]
        );
        assert!(compile(&model(vec![], vec![])).contains("table ip rkube {"));
    }

    #[test]
    fn load_balancer_ips_external_ips_and_source_ranges() {
        let mut svc = node_port_service("Cluster");
        let spec = svc.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        spec.external_ips = Some(vec!["192.168.50.1".into()]);
        spec.load_balancer_source_ranges = Some(vec!["192.168.0.0/16".into(), "bogus".into()]);
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("192.168.60.1".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        let eps = [("10.42.0.10", "n1", READY, true, false)];
        let rules = rules_of(&model(vec![svc], vec![slice("web", "TCP", &eps)]), "web");
        for ip in ["192.168.50.1", "192.168.60.1"] {
            assert_eq!(
                element(&rules, Container::ServiceIps, &format!("{ip} . tcp . 80")),
                Some("goto ext-default/web/tcp/80")
            );
        }
        assert_eq!(
            element(&rules, Container::FirewallIps, "192.168.60.1 . tcp . 80"),
            Some("goto firewall-default/web/tcp/80")
        );
        assert!(element(&rules, Container::FirewallIps, "192.168.50.1 . tcp . 80").is_none());
        assert_eq!(
            rules.chains["firewall-default/web/tcp/80"],
            ["ip saddr != { 192.168.0.0/16 } drop"]
        );
    }

    #[test]
    fn external_name_services_get_no_rules() {
        let mut svc = service("ext", "", "TCP");
        svc.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert_eq!(
            *rules_of(&model(vec![svc], vec![]), "ext"),
            ServiceRules::default()
        );
    }

    #[test]
    fn base_chains_masquerade_pods_marks_and_hairpin() {
        let text = compile(&model(vec![], vec![]));
        assert!(text.starts_with("add table ip rkube\ndelete table ip rkube\ntable ip rkube {\n"));
        assert!(text.contains("ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 masquerade"));
        assert!(
            text.contains("meta mark & 0x4000 != 0 meta mark set meta mark ^ 0x4000 masquerade fully-random")
        );
        assert!(text.contains("ct status dnat ip saddr . ip daddr @hairpin-endpoints masquerade"));
        assert!(text.contains("ip daddr 10.43.0.0/16 drop"));
        assert!(text.contains(
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"
        ));
    }

    #[test]
    fn diff_rewrites_only_the_changed_chain_and_deletes_stale_chains_later() {
        let one = [("10.42.0.10", "n1", READY, true, false)];
        let two = [
            ("10.42.0.10", "n1", READY, true, false),
            ("10.42.0.11", "n1", READY, true, false),
        ];
        let services = vec![
            service("web", "10.43.0.5", "TCP"),
            service("api", "10.43.0.6", "TCP"),
        ];
        let before = Ruleset::from_model(&model(
            services.clone(),
            vec![slice("web", "TCP", &one), slice("api", "TCP", &one)],
        ));
        let after = Ruleset::from_model(&model(
            services,
            vec![slice("web", "TCP", &two), slice("api", "TCP", &one)],
        ));
        let update = diff(&before, &after, &[]);
        assert_eq!(
            update.script,
            "flush chain ip rkube cluster-default/web/tcp/80\n\
             add rule ip rkube cluster-default/web/tcp/80 meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.42.0.10 . 8080, 1 : 10.42.0.11 . 8080 }\n\
             add element ip rkube hairpin-endpoints { 10.42.0.11 . 10.42.0.11 }\n"
        );
        assert!(diff(&after, &after, &[]).script.is_empty());

        // The api Service goes away: its elements are deleted and chains flushed, deletion comes later.
        let gone = Ruleset::from_model(&model(
            vec![service("web", "10.43.0.5", "TCP")],
            vec![slice("web", "TCP", &two)],
        ));
        let update = diff(&after, &gone, &[]);
        assert!(
            update
                .script
                .contains("delete element ip rkube service-ips { 10.43.0.6 . tcp . 80 }\n")
        );
        assert!(
            update
                .script
                .contains("delete element ip rkube cluster-ips { 10.43.0.6 }\n")
        );
        assert!(update.script.ends_with(
            "flush chain ip rkube cluster-default/api/tcp/80\nflush chain ip rkube svc-default/api/tcp/80\n"
        ));
        // The endpoint is shared with web: its hairpin element stays.
        assert!(!update.script.contains("hairpin-endpoints"));
        assert_eq!(update.flushed.len(), 2);
        let later = diff(&gone, &gone, &update.flushed);
        assert_eq!(
            later.script,
            "delete chain ip rkube cluster-default/api/tcp/80\ndelete chain ip rkube svc-default/api/tcp/80\n"
        );
        // A chain that came back before its deletion is kept.
        assert!(diff(&gone, &after, &update.flushed).deleted.is_empty());
    }

    #[test]
    fn diff_of_one_service_among_many_keeps_elements_other_services_still_claim() {
        let shared = [("10.42.0.10", "n1", READY, true, false)];
        let services: Vec<Service> = (0..10)
            .map(|i| service(&format!("s{i}"), &format!("10.43.0.{}", i + 1), "TCP"))
            .collect();
        let slices = |first: &[Ep<'_>]| {
            (0..10)
                .map(|i| slice(&format!("s{i}"), "TCP", if i == 0 { first } else { &shared }))
                .collect::<Vec<_>>()
        };
        let before = Ruleset::from_model(&model(services.clone(), slices(&shared)));
        let after = Ruleset::from_model(&model(
            services,
            slices(&[("10.42.0.11", "n1", READY, true, false)]),
        ));
        assert_eq!(
            diff(&before, &after, &[]).script,
            "flush chain ip rkube cluster-default/s0/tcp/80\n\
             add rule ip rkube cluster-default/s0/tcp/80 meta l4proto tcp dnat ip to 10.42.0.11:8080\n\
             add element ip rkube hairpin-endpoints { 10.42.0.11 . 10.42.0.11 }\n"
        );
    }

    #[test]
    fn udp_conntrack_is_flushed_for_endpoints_that_went_away() {
        let both = [
            ("10.42.0.10", "n1", READY, true, false),
            ("10.42.0.11", "n1", READY, true, false),
        ];
        let svc = vec![service("dns", "10.43.0.10", "UDP")];
        let before = Ruleset::from_model(&model(svc.clone(), vec![slice("dns", "UDP", &both)]));
        let after = Ruleset::from_model(&model(svc.clone(), vec![slice("dns", "UDP", &both[..1])]));
        assert_eq!(
            diff(&before, &after, &[]).conntrack,
            [ConntrackFlush {
                orig_dst: Some("10.43.0.10".parse().unwrap()),
                orig_port_dst: 80,
                dnat_to: Some("10.42.0.11".parse().unwrap()),
            }]
        );
        // From no endpoints to some: entries for the (rejected) virtual IP go.
        let empty = Ruleset::from_model(&model(svc, vec![]));
        assert_eq!(
            diff(&empty, &after, &[]).conntrack[0].args(),
            [
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                "10.43.0.10",
                "--orig-port-dst",
                "80"
            ]
        );
    }
}
