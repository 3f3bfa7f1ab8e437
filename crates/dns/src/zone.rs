//! What each name answers: the Kubernetes DNS specification (schema 1.1.0) over the [`Index`], with
//! CoreDNS' choices where the specification leaves room (NXDOMAIN vs NODATA, SRV weights, PTR order,
//! reverse names we do not know falling through to the upstreams).
//!
//! Names under the zone:
//! - `<svc>.<ns>.svc.<zone>`: ClusterIPs, or a headless Service's endpoints, or an ExternalName CNAME;
//! - `<endpoint>.<svc>.<ns>.svc.<zone>`: one endpoint by hostname (or dashed IP);
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV for a named port;
//! - `<a-b-c-d>.<ns>.pod.<zone>`: a Pod of that namespace with that IP;
//! - `dns-version.<zone>` TXT, and the apex's SOA and NS.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::index::{Index, NsEntry, SvcEntry};

/// The schema version `dns-version.<zone>` answers.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` TXT record (CoreDNS' value).
const VERSION_TTL: u32 = 28800;
/// ExternalName chains longer than this are not followed (as CoreDNS).
const MAX_CNAME_DEPTH: usize = 8;

/// The zone we are authoritative for.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, no trailing dot (`cluster.local`).
    pub name: String,
    /// The same as an absolute DNS name.
    pub origin: Name,
    pub ttl: u32,
    /// Answer for `ns.dns.<zone>` when the index has no `kube-dns` Service.
    pub fallback_ns_ips: Vec<IpAddr>,
}

impl Zone {
    pub fn new(name: &str, ttl: u32, fallback_ns_ips: Vec<IpAddr>) -> Option<Zone> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let origin = Name::from_ascii(format!("{name}.")).ok()?;
        Some(Zone {
            name,
            origin,
            ttl,
            fallback_ns_ips,
        })
    }

    fn fqdn(&self, relative: &str) -> Name {
        // Built from labels we validated (index names are DNS labels); an invalid one falls back to the apex.
        Name::from_ascii(format!("{relative}.{}.", self.name)).unwrap_or_else(|_| self.origin.clone())
    }

    /// The SOA record of the zone (in NXDOMAIN/NODATA answers and for `SOA <zone>`).
    pub fn soa(&self, serial: u32) -> Record {
        let soa = SOA::new(
            self.fqdn("ns.dns"),
            self.fqdn("hostmaster"),
            serial,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Record::from_rdata(self.origin.clone(), self.ttl, RData::SOA(soa))
    }
}

/// An answer built from the index.
#[derive(Debug, Clone)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// What to do with a query.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Answer authoritatively with this.
    Local(Reply),
    /// Not ours: ask the upstreams.
    Forward,
    /// An ExternalName outside the zone: answer `answers` (ending in a CNAME to `target`) followed by what
    /// the upstreams say about `target` and the query type.
    Chase { answers: Vec<Record>, target: Name },
}

enum Host {
    Ip(IpAddr),
    Name(String),
}

/// One thing a name stands for (CoreDNS' `msg.Service`): an address or a CNAME target, the port (SRV)
/// and the domain SRV records point at.
struct Entry {
    host: Host,
    port: Option<u16>,
    target: String,
}

/// The name does not exist (NXDOMAIN).
struct NameError;

/// Decide what `qname`/`qtype` answers.
pub fn resolve(index: &Index, zone: &Zone, qname: &Name, qtype: RecordType) -> Outcome {
    resolve_at(index, zone, qname, qtype, 0)
}

fn lower(name: &Name) -> String {
    let mut s = name.to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s.make_ascii_lowercase();
    s
}

fn resolve_at(index: &Index, zone: &Zone, qname: &Name, qtype: RecordType, depth: usize) -> Outcome {
    let name = lower(qname);
    if name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa") {
        return reverse(index, zone, qname, &name, qtype);
    }
    let base = if name == zone.name {
        ""
    } else {
        match name.strip_suffix(&zone.name).and_then(|b| b.strip_suffix('.')) {
            Some(base) => base,
            None => return Outcome::Forward,
        }
    };
    if !index.synced() {
        // As CoreDNS before its first list: clients retry rather than cache a wrong NXDOMAIN.
        return Outcome::Local(reply(ResponseCode::ServFail, Vec::new()));
    }
    let soa = || zone.soa(index.serial);
    let nodata = || Outcome::Local(negative(ResponseCode::NoError, soa()));
    let nxdomain = || Outcome::Local(negative(ResponseCode::NXDomain, soa()));

    match (base, qtype) {
        ("", RecordType::SOA) => return Outcome::Local(reply(ResponseCode::NoError, vec![soa()])),
        ("", RecordType::NS) => {
            let ns = Record::from_rdata(qname.clone(), zone.ttl, RData::NS(NS(zone.fqdn("ns.dns"))));
            let mut r = reply(ResponseCode::NoError, vec![ns]);
            r.additionals = address_records(&zone.fqdn("ns.dns"), &ns_ips(index, zone), zone.ttl, None);
            return Outcome::Local(r);
        }
        ("" | "svc" | "pod", _) => return nodata(),
        ("dns-version", RecordType::TXT) => {
            let txt = TXT::new(vec![SCHEMA_VERSION.to_string()]);
            return Outcome::Local(reply(
                ResponseCode::NoError,
                vec![Record::from_rdata(qname.clone(), VERSION_TTL, RData::TXT(txt))],
            ));
        }
        ("ns.dns", RecordType::A | RecordType::AAAA) => {
            let records = address_records(qname, &ns_ips(index, zone), zone.ttl, Some(qtype));
            return if records.is_empty() {
                nodata()
            } else {
                Outcome::Local(reply(ResponseCode::NoError, records))
            };
        }
        ("ns.dns", _) => return nodata(),
        _ => {}
    }

    let entries = match find(index, zone, base) {
        Ok(entries) => entries,
        Err(NameError) => return nxdomain(),
    };
    let ttl = zone.ttl;
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    match qtype {
        RecordType::A | RecordType::AAAA => {
            let mut seen = HashSet::new();
            for entry in &entries {
                match &entry.host {
                    Host::Ip(ip) => {
                        if seen.insert(*ip) {
                            answers.extend(address_records(qname, &[*ip], ttl, Some(qtype)));
                        }
                    }
                    Host::Name(target) => {
                        let Ok(target_name) = Name::from_ascii(format!("{target}.")) else {
                            continue;
                        };
                        answers.push(Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::CNAME(CNAME(target_name.clone())),
                        ));
                        let in_zone = *target == zone.name || target.ends_with(&format!(".{}", zone.name));
                        if !in_zone {
                            return Outcome::Chase {
                                answers,
                                target: target_name,
                            };
                        }
                        if depth < MAX_CNAME_DEPTH {
                            match resolve_at(index, zone, &target_name, qtype, depth + 1) {
                                Outcome::Local(inner) => answers.extend(inner.answers),
                                Outcome::Chase {
                                    answers: more,
                                    target,
                                } => {
                                    answers.extend(more);
                                    return Outcome::Chase { answers, target };
                                }
                                Outcome::Forward => {}
                            }
                        }
                    }
                }
            }
        }
        RecordType::CNAME => {
            for entry in &entries {
                if let Host::Name(target) = &entry.host
                    && let Ok(target) = Name::from_ascii(format!("{target}."))
                {
                    answers.push(Record::from_rdata(
                        qname.clone(),
                        ttl,
                        RData::CNAME(CNAME(target)),
                    ));
                }
            }
        }
        RecordType::SRV => {
            // CoreDNS: priority 0, weight 100/N over all entries of the name, at least 1.
            let weight = u16::try_from((100 / entries.len().max(1)).max(1)).unwrap_or(1);
            let mut seen_srv = HashSet::new();
            let mut seen_addr = HashSet::new();
            for entry in &entries {
                let (Host::Ip(ip), Some(port)) = (&entry.host, entry.port) else {
                    continue;
                };
                let target = zone.fqdn(&entry.target);
                if seen_srv.insert((entry.target.clone(), port)) {
                    answers.push(Record::from_rdata(
                        qname.clone(),
                        ttl,
                        RData::SRV(SRV::new(0, weight, port, target.clone())),
                    ));
                }
                if seen_addr.insert((entry.target.clone(), *ip)) {
                    additionals.extend(address_records(&target, &[*ip], ttl, None));
                }
            }
        }
        // Any other type of a name that exists: NODATA.
        _ => {}
    }
    if answers.is_empty() {
        return nodata();
    }
    let mut r = reply(ResponseCode::NoError, answers);
    r.additionals = additionals;
    Outcome::Local(r)
}

/// The entries `base` (the name without the zone) stands for, CoreDNS' `Records`.
fn find(index: &Index, zone: &Zone, base: &str) -> Result<Vec<Entry>, NameError> {
    let mut segs: Vec<&str> = base.split('.').collect();
    let kind = segs.pop().ok_or(NameError)?;
    if kind != "svc" && kind != "pod" {
        return Err(NameError);
    }
    let Some(ns_name) = segs.pop() else {
        return Ok(Vec::new());
    };
    let ns = index.namespace(ns_name).ok_or(NameError)?;
    let Some(name) = segs.pop() else {
        return Ok(Vec::new());
    };
    if kind == "pod" {
        if !segs.is_empty() {
            return Err(NameError);
        }
        return find_pod(ns, name);
    }
    let (endpoint, port) = match segs.as_slice() {
        [] => (None, None),
        [endpoint] => (Some(*endpoint), None),
        [port, proto] => (None, Some((strip_underscore(port), strip_underscore(proto)))),
        _ => return Err(NameError),
    };
    let svc = ns.services.get(name).ok_or(NameError)?;
    let service_domain = format!("{name}.{ns_name}.svc");

    if let Some(external) = &svc.external_name {
        // No endpoints, no ports below an ExternalName; an IP there is not a name to CNAME to.
        if endpoint.is_some() || port.is_some() || external.parse::<IpAddr>().is_ok() {
            return Err(NameError);
        }
        return Ok(vec![Entry {
            host: Host::Name(external.clone()),
            port: None,
            target: service_domain,
        }]);
    }

    let matches = |p: &crate::index::PortEntry| match port {
        None => true,
        Some((port, proto)) => p.name.eq_ignore_ascii_case(port) && p.protocol.eq_ignore_ascii_case(proto),
    };
    let mut entries = Vec::new();
    let mut found = false;
    if svc.headless || endpoint.is_some() {
        for (ep, hostname, ports) in ns.endpoints_of(name, svc) {
            if endpoint.is_some_and(|e| !e.eq_ignore_ascii_case(&hostname)) {
                continue;
            }
            let target = format!("{hostname}.{service_domain}");
            if ports.is_empty() {
                // CoreDNS' "no ports" sentinel: an address without SRV.
                if port.is_none() {
                    found = true;
                    entries.push(Entry {
                        host: Host::Ip(ep.ip),
                        port: None,
                        target,
                    });
                }
                continue;
            }
            for p in ports.iter().filter(|p| matches(p)) {
                found = true;
                entries.push(Entry {
                    host: Host::Ip(ep.ip),
                    port: Some(p.port),
                    target: target.clone(),
                });
            }
        }
    } else {
        for p in svc.ports.iter().filter(|p| matches(p)) {
            found = true;
            for ip in &svc.cluster_ips {
                entries.push(Entry {
                    host: Host::Ip(*ip),
                    port: Some(p.port),
                    target: service_domain.clone(),
                });
            }
        }
    }
    let _ = zone;
    if found { Ok(entries) } else { Err(NameError) }
}

fn strip_underscore(label: &str) -> &str {
    label.strip_prefix('_').unwrap_or(label)
}

/// `a-b-c-d` (or an IPv6 address with dashes) of a Pod in this namespace that has that IP.
fn find_pod(ns: &NsEntry, label: &str) -> Result<Vec<Entry>, NameError> {
    let text = if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".")
    } else {
        label.replace('-', ":")
    };
    let ip: IpAddr = text.parse().map_err(|_| NameError)?;
    if ns.pods.values().any(|p| p.ips.contains(&ip)) {
        Ok(vec![Entry {
            host: Host::Ip(ip),
            port: None,
            target: String::new(),
        }])
    } else {
        Err(NameError)
    }
}

/// A/AAAA records for `ips` (only the family of `only`, when given).
fn address_records(owner: &Name, ips: &[IpAddr], ttl: u32, only: Option<RecordType>) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| match (ip, only) {
            (IpAddr::V4(v4), None | Some(RecordType::A)) => {
                Some(Record::from_rdata(owner.clone(), ttl, RData::A(A(*v4))))
            }
            (IpAddr::V6(v6), None | Some(RecordType::AAAA)) => {
                Some(Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(*v6))))
            }
            _ => None,
        })
        .collect()
}

/// The addresses of `ns.dns.<zone>`: the `kube-dns` Service's ClusterIPs.
fn ns_ips(index: &Index, zone: &Zone) -> Vec<IpAddr> {
    index
        .namespace("kube-system")
        .and_then(|ns| ns.services.get("kube-dns"))
        .map(|s| s.cluster_ips.clone())
        .filter(|ips| !ips.is_empty())
        .unwrap_or_else(|| zone.fallback_ns_ips.clone())
}

fn reply(rcode: ResponseCode, answers: Vec<Record>) -> Reply {
    Reply {
        rcode,
        answers,
        authorities: Vec::new(),
        additionals: Vec::new(),
    }
}

fn negative(rcode: ResponseCode, soa: Record) -> Reply {
    Reply {
        rcode,
        answers: Vec::new(),
        authorities: vec![soa],
        additionals: Vec::new(),
    }
}

/// PTR for a ClusterIP (the Service) or else an endpoint (each Service it is an endpoint of); any other
/// reverse name goes upstream, as CoreDNS' `fallthrough in-addr.arpa ip6.arpa`.
fn reverse(index: &Index, zone: &Zone, qname: &Name, name: &str, qtype: RecordType) -> Outcome {
    if qtype != RecordType::PTR || !index.synced() {
        return Outcome::Forward;
    }
    let Some(ip) = parse_reverse(name) else {
        return Outcome::Forward;
    };
    let targets = ptr_targets(index, ip);
    if targets.is_empty() {
        return Outcome::Forward;
    }
    let answers = targets
        .iter()
        .map(|t| Record::from_rdata(qname.clone(), zone.ttl, RData::PTR(PTR(zone.fqdn(t)))))
        .collect();
    Outcome::Local(reply(ResponseCode::NoError, answers))
}

fn ptr_targets(index: &Index, ip: IpAddr) -> Vec<String> {
    let mut namespaces: Vec<(&str, &NsEntry)> = index.namespaces().filter(|(_, n)| n.exists).collect();
    namespaces.sort_by_key(|(name, _)| *name);
    for (ns_name, ns) in &namespaces {
        let mut services: Vec<(&String, &SvcEntry)> = ns.services.iter().collect();
        services.sort_by_key(|(name, _)| *name);
        if let Some((svc_name, _)) = services.iter().find(|(_, s)| s.cluster_ips.contains(&ip)) {
            return vec![format!("{svc_name}.{ns_name}.svc")];
        }
    }
    let mut targets = Vec::new();
    for (ns_name, ns) in &namespaces {
        let mut services: Vec<(&String, &SvcEntry)> = ns.services.iter().collect();
        services.sort_by_key(|(name, _)| *name);
        for (svc_name, svc) in services {
            for (ep, hostname, _) in ns.endpoints_of(svc_name, svc) {
                let target = format!("{hostname}.{svc_name}.{ns_name}.svc");
                if ep.ip == ip && !targets.contains(&target) {
                    targets.push(target);
                }
            }
        }
    }
    targets
}

/// `4.3.2.1.in-addr.arpa` → 1.2.3.4; the 32 nibbles of `ip6.arpa` → the IPv6 address.
fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let octets: Vec<u8> = rest.split('.').map(|o| o.parse().ok()).collect::<Option<_>>()?;
        let [d, c, b, a] = <[u8; 4]>::try_from(octets).ok()?;
        return Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|n| {
            if n.len() == 1 {
                u8::from_str_radix(n, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        // Reversed order: the last label is the highest nibble.
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{EpEntry, Kind, Object, PortEntry, SliceEntry, dashed};

    fn zone() -> Zone {
        Zone::new("cluster.local", 5, vec![]).unwrap()
    }

    fn svc(ns: &str, name: &str, entry: SvcEntry) -> Object {
        Object::Service {
            ns: ns.into(),
            name: name.into(),
            entry,
        }
    }

    fn synced(objects: Vec<(Kind, Vec<Object>)>) -> Index {
        let mut index = Index::default();
        let mut kinds = vec![Kind::Namespace, Kind::Service, Kind::EndpointSlice, Kind::Pod];
        for (kind, objs) in objects {
            kinds.retain(|k| *k != kind);
            index.replace(kind, objs);
        }
        for kind in kinds {
            index.replace(kind, Vec::new());
        }
        index
    }

    fn local(outcome: Outcome) -> Reply {
        match outcome {
            Outcome::Local(r) => r,
            other => panic!("expected a local answer, got {other:?}"),
        }
    }

    fn data(r: &Reply) -> Vec<String> {
        let mut v: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
        v.sort();
        v
    }

    fn q(name: &str) -> Name {
        Name::from_ascii(name).unwrap()
    }

    #[test]
    fn servfail_in_zone_until_every_watch_has_listed_and_outside_names_still_forward() {
        let mut index = Index::default();
        index.replace(Kind::Namespace, vec![Object::Namespace("default".into())]);
        let r = local(resolve(
            &index,
            &zone(),
            &q("a.default.svc.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(r.rcode, ResponseCode::ServFail);
        assert!(matches!(
            resolve(&index, &zone(), &q("example.org."), RecordType::A),
            Outcome::Forward
        ));
    }

    #[test]
    fn dual_stack_service_answers_a_and_aaaa() {
        let index = synced(vec![
            (Kind::Namespace, vec![Object::Namespace("ns".into())]),
            (
                Kind::Service,
                vec![svc(
                    "ns",
                    "web",
                    SvcEntry {
                        cluster_ips: vec!["10.43.0.7".parse().unwrap(), "fd00:43::7".parse().unwrap()],
                        ports: vec![PortEntry {
                            name: "http".into(),
                            protocol: "TCP".into(),
                            port: 80,
                        }],
                        ..Default::default()
                    },
                )],
            ),
        ]);
        let name = q("Web.NS.svc.cluster.local.");
        let a = local(resolve(&index, &zone(), &name, RecordType::A));
        assert_eq!(data(&a), ["10.43.0.7"]);
        assert_eq!(a.answers[0].name, name, "the owner keeps the case asked");
        let aaaa = local(resolve(&index, &zone(), &name, RecordType::AAAA));
        assert_eq!(data(&aaaa), ["fd00:43::7"]);
        let ptr = local(resolve(
            &index,
            &zone(),
            &q("7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa."),
            RecordType::PTR,
        ));
        assert_eq!(data(&ptr), ["web.ns.svc.cluster.local."]);
    }

    #[test]
    fn an_endpoint_in_two_slices_is_answered_once_and_moves_with_its_slice() {
        let ep = |ip: &str| EpEntry {
            ip: ip.parse().unwrap(),
            hostname: None,
            ready: true,
            pod: None,
        };
        let slice = |service: &str, ips: &[&str]| SliceEntry {
            service: service.into(),
            endpoints: ips.iter().map(|ip| ep(ip)).collect(),
            ports: vec![],
        };
        let headless = SvcEntry {
            headless: true,
            ..Default::default()
        };
        let mut index = synced(vec![
            (Kind::Namespace, vec![Object::Namespace("ns".into())]),
            (
                Kind::Service,
                vec![svc("ns", "a", headless.clone()), svc("ns", "b", headless)],
            ),
            (
                Kind::EndpointSlice,
                vec![
                    Object::Slice {
                        ns: "ns".into(),
                        name: "a-1".into(),
                        entry: slice("a", &["10.42.0.1", "10.42.0.2"]),
                    },
                    Object::Slice {
                        ns: "ns".into(),
                        name: "a-2".into(),
                        entry: slice("a", &["10.42.0.2"]),
                    },
                ],
            ),
        ]);
        let a = q("a.ns.svc.cluster.local.");
        assert_eq!(
            data(&local(resolve(&index, &zone(), &a, RecordType::A))),
            ["10.42.0.1", "10.42.0.2"]
        );

        // The slice a-2 now belongs to b: a keeps only its own, b gets it.
        index.apply(Object::Slice {
            ns: "ns".into(),
            name: "a-2".into(),
            entry: slice("b", &["10.42.0.3"]),
        });
        index.delete(Kind::EndpointSlice, "ns", "a-1");
        let r = local(resolve(&index, &zone(), &a, RecordType::A));
        assert_eq!(r.rcode, ResponseCode::NXDomain, "headless without endpoints");
        let b = q("b.ns.svc.cluster.local.");
        assert_eq!(
            data(&local(resolve(&index, &zone(), &b, RecordType::A))),
            ["10.42.0.3"]
        );
    }

    #[test]
    fn an_external_name_loop_ends() {
        let ext = |target: &str| SvcEntry {
            external_name: Some(target.into()),
            ..Default::default()
        };
        let index = synced(vec![
            (Kind::Namespace, vec![Object::Namespace("ns".into())]),
            (
                Kind::Service,
                vec![
                    svc("ns", "x", ext("y.ns.svc.cluster.local")),
                    svc("ns", "y", ext("x.ns.svc.cluster.local")),
                ],
            ),
        ]);
        let r = local(resolve(
            &index,
            &zone(),
            &q("x.ns.svc.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answers.len() <= MAX_CNAME_DEPTH + 1, "{}", r.answers.len());
    }

    #[test]
    fn a_deleted_namespace_makes_its_names_nxdomain() {
        let mut index = synced(vec![(Kind::Namespace, vec![Object::Namespace("ns".into())])]);
        let name = q("ns.svc.cluster.local.");
        assert_eq!(
            local(resolve(&index, &zone(), &name, RecordType::A)).rcode,
            ResponseCode::NoError
        );
        index.delete(Kind::Namespace, "", "ns");
        assert_eq!(
            local(resolve(&index, &zone(), &name, RecordType::A)).rcode,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn reverse_names_parse() {
        assert_eq!(
            parse_reverse("10.0.43.10.in-addr.arpa"),
            Some("10.43.0.10".parse().unwrap())
        );
        let v6: Ipv6Addr = "fd00::1:2".parse().unwrap();
        let nibbles: String = v6
            .octets()
            .iter()
            .rev()
            .map(|b| format!("{:x}.{:x}.", b & 0xf, b >> 4))
            .collect();
        assert_eq!(parse_reverse(&format!("{nibbles}ip6.arpa")), Some(IpAddr::V6(v6)));
        assert_eq!(parse_reverse("1.2.3.in-addr.arpa"), None);
    }

    #[test]
    fn dashed_ips() {
        assert_eq!(dashed("10.42.0.5".parse().unwrap()), "10-42-0-5");
        assert_eq!(dashed("fd00::5".parse().unwrap()), "fd00--5");
    }
}
