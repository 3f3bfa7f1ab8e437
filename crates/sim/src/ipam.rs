//! Pod addresses from a node's `spec.podCIDR`: parsing the CIDR and a pool that never hands out an
//! address twice while a pod holds it. Pure; the shell keeps one pool per node.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Why a CIDR or an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The text is not an IPv4 `address/prefix` (IPv6 pod CIDRs are not simulated).
    #[error("invalid IPv4 CIDR {0:?}")]
    InvalidCidr(String),
    /// Every usable address of the CIDR is held by a pod.
    #[error("pod CIDR {0} is full")]
    Exhausted(String),
    /// The address lies outside the CIDR or is its network/broadcast address.
    #[error("{0} is not a usable address of {1}")]
    OutOfRange(Ipv4Addr, String),
}

/// An IPv4 network, e.g. `10.42.3.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; host bits are cleared like Go's `net.ParseCIDR` does.
    pub fn parse(text: &str) -> Result<Cidr, IpamError> {
        let invalid = || IpamError::InvalidCidr(text.to_string());
        let (addr, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix > 32 {
            return Err(invalid());
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Ok(Cidr {
            network: u32::from(addr) & mask,
            prefix,
        })
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == self.network
    }

    /// The first and last address a pod may get: the network address and (below /31) the broadcast
    /// address are skipped, and so is the first host, which a real CNI gives the node's bridge.
    fn usable(&self) -> (u32, u32) {
        let size = 1u64 << (32 - self.prefix);
        let last = (self.network as u64 + size - 1) as u32;
        if size <= 4 {
            return (self.network, last);
        }
        (self.network + 2, last - 1)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// The addresses of one node's pod CIDR. Allocation goes round-robin from the last address handed out,
/// so a just-released address is not reused at once (as host-local IPAM does): a watcher that still
/// sees the old pod's address does not confuse it with a new pod's.
#[derive(Debug, Clone)]
pub struct IpPool {
    cidr: Cidr,
    held: BTreeSet<u32>,
    next: u32,
}

impl IpPool {
    pub fn new(cidr: Cidr) -> IpPool {
        IpPool {
            cidr,
            held: BTreeSet::new(),
            next: cidr.usable().0,
        }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// Hands out a free address.
    pub fn allocate_next(&mut self) -> Result<Ipv4Addr, IpamError> {
        let (first, last) = self.cidr.usable();
        let size = (last - first) as u64 + 1;
        let mut candidate = self.next.clamp(first, last);
        for _ in 0..size {
            if !self.held.contains(&candidate) {
                self.held.insert(candidate);
                self.next = if candidate == last { first } else { candidate + 1 };
                return Ok(Ipv4Addr::from(candidate));
            }
            candidate = if candidate == last { first } else { candidate + 1 };
        }
        Err(IpamError::Exhausted(self.cidr.to_string()))
    }

    /// Marks `ip` as held (a pod that already had it, e.g. after a restart of the simulator). Holding an
    /// address twice is not an error: the pod is the same.
    pub fn allocate(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let (first, last) = self.cidr.usable();
        let n = u32::from(ip);
        if n < first || n > last {
            return Err(IpamError::OutOfRange(ip, self.cidr.to_string()));
        }
        self.held.insert(n);
        Ok(())
    }

    /// Frees `ip`; freeing an address not held does nothing.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.held.remove(&u32::from(ip));
    }

    /// How many addresses pods hold.
    pub fn in_use(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_clears_host_bits_and_rejects_garbage() {
        assert_eq!(Cidr::parse("10.42.3.7/24").unwrap().to_string(), "10.42.3.0/24");
        for bad in ["10.42.3.0", "10.42.3.0/33", "fd00::/64", "x/24", "10.42.3.0/"] {
            assert_eq!(Cidr::parse(bad), Err(IpamError::InvalidCidr(bad.into())), "{bad}");
        }
    }

    #[test]
    fn allocation_stays_in_the_cidr_and_skips_network_gateway_and_broadcast() {
        let cidr = Cidr::parse("10.42.3.0/24").unwrap();
        let mut pool = IpPool::new(cidr);
        let mut seen = BTreeSet::new();
        while let Ok(ip) = pool.allocate_next() {
            assert!(cidr.contains(ip));
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(seen.len(), 253);
        assert_eq!(seen.first(), Some(&Ipv4Addr::new(10, 42, 3, 2)));
        assert_eq!(seen.last(), Some(&Ipv4Addr::new(10, 42, 3, 254)));
        assert_eq!(
            pool.allocate_next(),
            Err(IpamError::Exhausted("10.42.3.0/24".into()))
        );
    }

    #[test]
    fn released_address_is_reused_only_after_the_others() {
        let mut pool = IpPool::new(Cidr::parse("10.0.0.0/29").unwrap());
        let a = pool.allocate_next().unwrap();
        let b = pool.allocate_next().unwrap();
        pool.release(a);
        let c = pool.allocate_next().unwrap();
        assert_ne!(c, a, "a just-freed address came back at once");
        assert_ne!(c, b);
        // /29: .2 … .6 usable; after .2 .3 .4 came .5 .6, then the freed .2.
        assert_eq!(pool.allocate_next().unwrap(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(pool.allocate_next().unwrap(), Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(pool.allocate_next().unwrap(), a);
        assert!(pool.allocate_next().is_err());
        assert_eq!(pool.in_use(), 5);
    }

    #[test]
    fn held_addresses_from_before_are_not_handed_out() {
        let mut pool = IpPool::new(Cidr::parse("10.0.0.0/29").unwrap());
        pool.allocate(Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        assert_eq!(pool.allocate_next().unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(
            pool.allocate(Ipv4Addr::new(10, 0, 1, 2)),
            Err(IpamError::OutOfRange(
                Ipv4Addr::new(10, 0, 1, 2),
                "10.0.0.0/29".into()
            ))
        );
        assert!(
            pool.allocate(Ipv4Addr::new(10, 0, 0, 0)).is_err(),
            "network address"
        );
    }
}
