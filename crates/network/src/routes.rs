//! [`RouteSync`]: host-gw routing between nodes (flannel's host-gw rule: nodes share one L2 segment) — each peer
//! node's pod CIDR is routed via that node's IP. Our routes carry [`ROUTE_PROTOCOL`], so the ones whose node went
//! away can be found and removed without touching anybody else's routes.
//!
//! Uses the `ip` command (iproute2): one process per change is plenty for a route table that changes when nodes
//! join or leave, and its error messages are the ones operators know.

use std::net::IpAddr;

use serde::Deserialize;

use crate::command::{self, CommandError};

/// Route protocol number tagging rkube's routes (`proto 177` in `ip route`); not in iproute2's rt_protos.
pub const ROUTE_PROTOCOL: u8 = 177;

/// Errors of route synchronisation.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A CIDR given to us is not `address/prefix`.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// The peer's address family differs from its pod CIDR's.
    #[error("node IP {node_ip} cannot be the gateway for {cidr}")]
    FamilyMismatch { cidr: String, node_ip: IpAddr },
    /// `ip` failed (e.g. "Nexthop has invalid gateway": the peer is not on our L2 segment).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `ip -j route` printed something we cannot read.
    #[error("cannot read `ip -j route` output: {0}")]
    Parse(#[from] serde_json::Error),
}

/// A canonical prefix: host bits cleared, printed as `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses `a.b.c.d/len` (or a bare address as a host route, as `ip` prints those) and clears host bits.
pub fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    match addr {
        IpAddr::V4(v4) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return None;
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Some(Cidr {
                addr: IpAddr::V4((u32::from(v4) & mask).into()),
                len,
            })
        }
        IpAddr::V6(v6) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return None;
            }
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            Some(Cidr {
                addr: IpAddr::V6((u128::from(v6) & mask).into()),
                len,
            })
        }
    }
}

/// One change to the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// `ip route replace <dst> via <via> proto 177`
    Replace { dst: Cidr, via: IpAddr },
    /// `ip route del <dst> via <via> proto 177`
    Delete { dst: Cidr, via: IpAddr },
}

/// The changes that turn `current` (our routes now) into `desired`; pure, so the rules are unit-tested.
pub fn plan(current: &[(Cidr, IpAddr)], desired: &[(Cidr, IpAddr)]) -> Vec<RouteOp> {
    let mut ops = Vec::new();
    for (dst, via) in desired {
        if !current.contains(&(*dst, *via)) {
            ops.push(RouteOp::Replace { dst: *dst, via: *via });
        }
    }
    for (dst, via) in current {
        let delete = RouteOp::Delete { dst: *dst, via: *via };
        if !desired.iter().any(|(d, _)| d == dst) && !ops.contains(&delete) {
            ops.push(delete);
        }
    }
    ops
}

/// Keeps the host-gw routes to the other nodes' pod CIDRs in the calling thread's network namespace, plus the
/// fallback routes that keep cluster ranges from leaving by the default route. It manages only our routes
/// *with a gateway*: the announcer's `/32 dev lo` routes and the fallbacks carry the same protocol number but
/// are never taken for stale host-gw routes.
#[derive(Debug, Clone)]
pub struct RouteSync {
    unreachable: Vec<Cidr>,
    local: Vec<Cidr>,
}

impl RouteSync {
    /// `unreachable_fallbacks` (normally the cluster CIDR) get an `unreachable` route so traffic to pods of
    /// unknown nodes fails fast instead of leaving by the default route. Do not put the service CIDR here: a
    /// host client's `connect()` would fail before the proxy's nat output hook could DNAT it.
    pub fn new(unreachable_fallbacks: &[String]) -> Result<Self, RouteError> {
        let unreachable = unreachable_fallbacks
            .iter()
            .map(|c| parse_cidr(c).ok_or_else(|| RouteError::InvalidCidr(c.clone())))
            .collect::<Result<_, _>>()?;
        Ok(RouteSync {
            unreachable,
            local: Vec::new(),
        })
    }

    /// Adds fallbacks for ranges the service proxy DNATs (service CIDR, LoadBalancer pool): `<cidr> dev lo`.
    /// Unlike `unreachable`, this lets a host client's `connect()` pass the route lookup so the nat output hook
    /// can DNAT it; packets the proxy does not rewrite end on `lo` and never leave the node (verified here with
    /// a counter on the far side of the default route).
    pub fn with_local_fallbacks(mut self, cidrs: &[String]) -> Result<Self, RouteError> {
        for c in cidrs {
            self.local
                .push(parse_cidr(c).ok_or_else(|| RouteError::InvalidCidr(c.clone()))?);
        }
        Ok(self)
    }

    /// Makes our routes exactly `peers` (`(pod CIDR, node IP)` of every *other* Ready node): adds and fixes
    /// routes, removes routes of nodes no longer listed. Returns the changes made.
    pub async fn sync(&self, peers: &[(String, IpAddr)]) -> Result<Vec<RouteOp>, RouteError> {
        for cidr in &self.unreachable {
            ensure_unreachable(*cidr).await?;
        }
        for cidr in &self.local {
            let cidr = cidr.to_string();
            command::ip(&[
                "route",
                "replace",
                &cidr,
                "dev",
                "lo",
                "proto",
                &ROUTE_PROTOCOL.to_string(),
            ])
            .await?;
        }
        let mut desired = Vec::new();
        for (cidr, node_ip) in peers {
            let dst = parse_cidr(cidr).ok_or_else(|| RouteError::InvalidCidr(cidr.clone()))?;
            if dst.addr.is_ipv4() != node_ip.is_ipv4() {
                return Err(RouteError::FamilyMismatch {
                    cidr: cidr.clone(),
                    node_ip: *node_ip,
                });
            }
            desired.push((dst, *node_ip));
        }
        let ops = plan(&current_routes().await?, &desired);
        for op in &ops {
            match op {
                RouteOp::Replace { dst, via } => {
                    let (dst, via) = (dst.to_string(), via.to_string());
                    command::ip(&[
                        "route",
                        "replace",
                        &dst,
                        "via",
                        &via,
                        "proto",
                        &ROUTE_PROTOCOL.to_string(),
                    ])
                    .await?;
                    tracing::info!(%dst, %via, "pod CIDR route set");
                }
                RouteOp::Delete { dst, via } => {
                    delete_route(*dst, *via).await?;
                    tracing::info!(%dst, "stale pod CIDR route removed");
                }
            }
        }
        Ok(ops)
    }

    /// Removes every host-gw route we own (e.g. when a node leaves the cluster for good); fallbacks stay.
    pub async fn clear(&self) -> Result<(), RouteError> {
        for (dst, via) in current_routes().await? {
            delete_route(dst, via).await?;
        }
        Ok(())
    }
}

async fn delete_route(dst: Cidr, via: IpAddr) -> Result<(), RouteError> {
    let (dst, via) = (dst.to_string(), via.to_string());
    match command::ip(&[
        "route",
        "del",
        &dst,
        "via",
        &via,
        "proto",
        &ROUTE_PROTOCOL.to_string(),
    ])
    .await
    {
        Err(e) if e.stderr().contains("No such process") => Ok(()),
        other => other.map(drop).map_err(Into::into),
    }
}

#[derive(Debug, Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Our host-gw routes (both families): unicast with a gateway.
async fn current_routes() -> Result<Vec<(Cidr, IpAddr)>, RouteError> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        let text = command::ip(&[
            "-j",
            family,
            "route",
            "show",
            "proto",
            &ROUTE_PROTOCOL.to_string(),
        ])
        .await?;
        let routes: Vec<IpRoute> = if text.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&text)?
        };
        for r in routes {
            // Only host-gw routes have a gateway; fallbacks and announced /32s via `lo` are not ours to prune.
            if r.kind.as_deref().is_some_and(|k| k != "unicast") {
                continue;
            }
            if let (Some(dst), Some(via)) = (parse_cidr(&r.dst), r.gateway) {
                out.push((dst, via));
            }
        }
    }
    Ok(out)
}

fn unreachable_args(cidr: Cidr) -> Vec<String> {
    [
        "route",
        "replace",
        "unreachable",
        &cidr.to_string(),
        "proto",
        &ROUTE_PROTOCOL.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

async fn ensure_unreachable(cidr: Cidr) -> Result<(), RouteError> {
    command::ip(&unreachable_args(cidr)).await?;
    Ok(())
}

/// For constructors that are not async ([`crate::CniNetwork::new`]).
pub(crate) fn ensure_unreachable_blocking(cidr: &str) -> Result<(), RouteError> {
    let cidr = parse_cidr(cidr).ok_or_else(|| RouteError::InvalidCidr(cidr.to_string()))?;
    command::ip_blocking(&unreachable_args(cidr))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_are_canonical() {
        assert_eq!(c("10.42.1.7/24").to_string(), "10.42.1.0/24");
        assert_eq!(c("10.0.0.9").to_string(), "10.0.0.9/32");
        assert_eq!(c("fd00::1/64").to_string(), "fd00::/64");
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nonsense/8").is_none());
    }

    #[test]
    fn plan_adds_missing_fixes_moved_and_removes_stale() {
        let current = vec![
            (c("10.42.1.0/24"), ip("172.31.0.2")), // up to date
            (c("10.42.2.0/24"), ip("172.31.0.9")), // node got a new IP
            (c("10.42.3.0/24"), ip("172.31.0.4")), // node went away
        ];
        let desired = vec![
            (c("10.42.1.0/24"), ip("172.31.0.2")),
            (c("10.42.2.0/24"), ip("172.31.0.3")),
            (c("10.42.4.0/24"), ip("172.31.0.5")),
        ];
        assert_eq!(
            plan(&current, &desired),
            vec![
                RouteOp::Replace {
                    dst: c("10.42.2.0/24"),
                    via: ip("172.31.0.3")
                },
                RouteOp::Replace {
                    dst: c("10.42.4.0/24"),
                    via: ip("172.31.0.5")
                },
                RouteOp::Delete {
                    dst: c("10.42.3.0/24"),
                    via: ip("172.31.0.4")
                },
            ]
        );
        assert!(
            plan(
                &[(c("10.42.1.0/24"), ip("172.31.0.2"))],
                &[(c("10.42.1.0/24"), ip("172.31.0.2"))]
            )
            .is_empty()
        );
    }
}
