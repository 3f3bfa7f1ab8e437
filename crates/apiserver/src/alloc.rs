//! ClusterIP and NodePort allocation, as kube-apiserver's bitmap allocators do it.
//!
//! Both allocators are pure in-memory bitmaps (the caller keeps them behind a `Mutex`, rebuilds them from
//! the stored Services at start, and calls them on Service create/update/delete). Like Kubernetes, dynamic
//! allocation prefers the upper part of the range and leaves the first addresses/ports (the "offset") for
//! users who ask for a specific one — `10.43.0.1` (the `kubernetes` Service) and `10.43.0.10` (cluster DNS)
//! live there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use rand::Rng;

/// Why an allocation failed; the messages are kube-apiserver's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every address or port in the range is taken.
    #[error("range is full")]
    Full,
    /// The requested IP is in use by another Service.
    #[error("provided IP is already allocated")]
    IpAllocated,
    /// The requested IP lies outside the service CIDR (or is its network/broadcast address).
    #[error("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}")]
    IpNotInRange { ip: IpAddr, range: String },
    /// The requested port is in use by another Service.
    #[error("provided port is already allocated")]
    PortAllocated,
    /// The requested port lies outside the NodePort range.
    #[error("provided port is not in the valid range. The range of valid ports is {range}")]
    PortNotInRange { range: String },
    /// The CIDR could not be parsed.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
}

/// How `allocate_next` picks among free values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Kubernetes' choice: a random free value above the offset, then below it.
    RandomWithOffset,
    /// The lowest free value above the offset, then below it: repeatable, for tests and simulations.
    SequentialWithOffset,
}

/// Parses `a.b.c.d/n` or an IPv6 CIDR into (network address, prefix length); host bits are cleared.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > bits {
        return None;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    Some(match ip {
        IpAddr::V4(v4) => {
            let mask = (mask >> 96) as u32;
            (IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)), prefix)
        }
        IpAddr::V6(v6) => (IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)), prefix),
    })
}

/// A fixed-size set of allocated offsets with Kubernetes' scan strategies.
#[derive(Clone, Debug)]
struct Bitmap {
    words: Vec<u64>,
    size: usize,
    /// Dynamic allocation tries `[offset, size)` before `[0, offset)`.
    offset: usize,
    count: usize,
    strategy: Strategy,
}

impl Bitmap {
    fn new(size: usize, offset: usize, strategy: Strategy) -> Bitmap {
        Bitmap {
            words: vec![0; size.div_ceil(64)],
            size,
            offset: offset.min(size),
            count: 0,
            strategy,
        }
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Marks `i` used; false if it already was.
    fn set(&mut self, i: usize) -> bool {
        if self.get(i) {
            return false;
        }
        self.words[i / 64] |= 1 << (i % 64);
        self.count += 1;
        true
    }

    fn clear(&mut self, i: usize) {
        if self.get(i) {
            self.words[i / 64] &= !(1 << (i % 64));
            self.count -= 1;
        }
    }

    fn next_free(&mut self) -> Option<usize> {
        if self.count >= self.size {
            return None;
        }
        let found = self
            .scan(self.offset, self.size)
            .or_else(|| self.scan(0, self.offset))?;
        self.set(found);
        Some(found)
    }

    /// A free index in `[from, to)`, chosen by the strategy.
    fn scan(&self, from: usize, to: usize) -> Option<usize> {
        let len = to.checked_sub(from).filter(|l| *l > 0)?;
        let start = match self.strategy {
            Strategy::RandomWithOffset => rand::rng().random_range(0..len),
            Strategy::SequentialWithOffset => 0,
        };
        (0..len).map(|i| from + (start + i) % len).find(|&i| !self.get(i))
    }
}

/// Kubernetes' `calculateRangeOffset`: min(max(min, size/step), max).
fn range_offset(size: u128, min: u128, step: u128, max: u128) -> usize {
    if size <= min {
        return 0;
    }
    (size / step).clamp(min, max) as usize
}

/// Allocates ClusterIPs from a service CIDR. The network address (and, for IPv4, the broadcast address)
/// are never handed out; IPv6 ranges are capped at 65536 addresses as in Kubernetes.
#[derive(Clone, Debug)]
pub struct IpAllocator {
    cidr: String,
    /// The first allocatable address (network + 1), as a number.
    base: u128,
    v4: bool,
    bits: Bitmap,
}

impl IpAllocator {
    /// An allocator over `cidr` (e.g. `10.43.0.0/16`) choosing like Kubernetes (random, offset first).
    pub fn new(cidr: &str) -> Result<IpAllocator, AllocError> {
        IpAllocator::with_strategy(cidr, Strategy::RandomWithOffset)
    }

    pub fn with_strategy(cidr: &str, strategy: Strategy) -> Result<IpAllocator, AllocError> {
        let invalid = || AllocError::InvalidCidr(cidr.to_string());
        let (network, prefix) = parse_cidr(cidr).ok_or_else(invalid)?;
        let (v4, host_bits) = match network {
            IpAddr::V4(_) => (true, 32 - u32::from(prefix)),
            IpAddr::V6(_) => (false, 128 - u32::from(prefix)),
        };
        let range_size: u128 = if host_bits >= 127 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        let mut usable = range_size.saturating_sub(if v4 { 2 } else { 1 });
        if !v4 {
            usable = usable.min(65536);
        }
        if usable == 0 {
            return Err(invalid());
        }
        let base = match network {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v),
        } + 1;
        let offset = range_offset(range_size, 16, 16, 256);
        Ok(IpAllocator {
            cidr: format!("{network}/{prefix}"),
            base,
            v4,
            bits: Bitmap::new(usable as usize, offset, strategy),
        })
    }

    fn index(&self, ip: IpAddr) -> Result<usize, AllocError> {
        let not_in_range = || AllocError::IpNotInRange {
            ip,
            range: self.cidr.clone(),
        };
        let n = match (ip, self.v4) {
            (IpAddr::V4(v), true) => u128::from(u32::from(v)),
            (IpAddr::V6(v), false) => u128::from(v),
            _ => return Err(not_in_range()),
        };
        let i = n.checked_sub(self.base).ok_or_else(not_in_range)?;
        if i >= self.bits.size as u128 {
            return Err(not_in_range());
        }
        Ok(i as usize)
    }

    fn ip(&self, index: usize) -> IpAddr {
        let n = self.base + index as u128;
        if self.v4 {
            IpAddr::V4(Ipv4Addr::from(n as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(n))
        }
    }

    /// Any free address.
    pub fn allocate_next(&mut self) -> Result<IpAddr, AllocError> {
        let i = self.bits.next_free().ok_or(AllocError::Full)?;
        Ok(self.ip(i))
    }

    /// Exactly this address (a user-requested `spec.clusterIP`, or one rebuilt from storage).
    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), AllocError> {
        let i = self.index(ip)?;
        if self.bits.set(i) {
            Ok(())
        } else {
            Err(AllocError::IpAllocated)
        }
    }

    /// Frees an address; releasing a free or foreign address does nothing.
    pub fn release(&mut self, ip: IpAddr) {
        if let Ok(i) = self.index(ip) {
            self.bits.clear(i);
        }
    }

    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.index(ip).is_ok_and(|i| self.bits.get(i))
    }

    /// Whether `ip` is an allocatable address of this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.index(ip).is_ok()
    }

    /// How many addresses are in use.
    pub fn used(&self) -> usize {
        self.bits.count
    }

    /// How many addresses could ever be handed out.
    pub fn capacity(&self) -> usize {
        self.bits.size
    }

    /// The service CIDR, normalized (`10.43.0.0/16`).
    pub fn cidr(&self) -> &str {
        &self.cidr
    }
}

/// Allocates NodePorts from a port range (by default 30000–32767).
#[derive(Clone, Debug)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    bits: Bitmap,
}

impl PortAllocator {
    pub fn new(range: RangeInclusive<u16>) -> PortAllocator {
        PortAllocator::with_strategy(range, Strategy::RandomWithOffset)
    }

    pub fn with_strategy(range: RangeInclusive<u16>, strategy: Strategy) -> PortAllocator {
        let (first, last) = (*range.start(), *range.end());
        let size = if last >= first {
            usize::from(last - first) + 1
        } else {
            0
        };
        let offset = range_offset(size as u128, 16, 32, 128);
        PortAllocator {
            first,
            last,
            bits: Bitmap::new(size, offset, strategy),
        }
    }

    fn index(&self, port: u16) -> Result<usize, AllocError> {
        if port < self.first || port > self.last {
            return Err(AllocError::PortNotInRange {
                range: format!("{}-{}", self.first, self.last),
            });
        }
        Ok(usize::from(port - self.first))
    }

    pub fn allocate_next(&mut self) -> Result<u16, AllocError> {
        let i = self.bits.next_free().ok_or(AllocError::Full)?;
        Ok(self.first + i as u16)
    }

    pub fn allocate(&mut self, port: u16) -> Result<(), AllocError> {
        let i = self.index(port)?;
        if self.bits.set(i) {
            Ok(())
        } else {
            Err(AllocError::PortAllocated)
        }
    }

    pub fn release(&mut self, port: u16) {
        if let Ok(i) = self.index(port) {
            self.bits.clear(i);
        }
    }

    pub fn is_allocated(&self, port: u16) -> bool {
        self.index(port).is_ok_and(|i| self.bits.get(i))
    }

    pub fn contains(&self, port: u16) -> bool {
        self.index(port).is_ok()
    }

    pub fn used(&self) -> usize {
        self.bits.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalizes_cidrs() {
        assert_eq!(parse_cidr("10.43.7.9/16"), Some((ip("10.43.0.0"), 16)));
        assert_eq!(parse_cidr("fd00::5/112"), Some((ip("fd00::"), 112)));
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("10.0.0.0"), None);
        assert_eq!(parse_cidr("nonsense/8"), None);
    }

    #[test]
    fn kubernetes_service_ip_is_the_first_address() {
        let mut a = IpAllocator::new("10.43.0.0/16").unwrap();
        assert_eq!(a.capacity(), 65534);
        a.allocate(ip("10.43.0.1")).unwrap();
        assert!(a.is_allocated(ip("10.43.0.1")));
        assert_eq!(a.allocate(ip("10.43.0.1")), Err(AllocError::IpAllocated));
        let err = a.allocate(ip("10.43.0.0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the provided IP (10.43.0.0) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
        );
        assert!(a.allocate(ip("10.43.255.255")).is_err(), "broadcast address");
        assert!(a.allocate(ip("10.44.0.1")).is_err());
        assert!(a.allocate(ip("fd00::1")).is_err());
    }

    #[test]
    fn dynamic_allocation_avoids_the_static_block_until_full() {
        // A /24 has 254 addresses; its offset is 16 (256/16): the first 16 are kept for static requests.
        let mut a = IpAllocator::new("10.43.0.0/24").unwrap();
        let mut seen = HashSet::new();
        for n in 0..(254 - 16) {
            let got = a.allocate_next().unwrap();
            let IpAddr::V4(v4) = got else { panic!() };
            assert!(
                v4.octets()[3] > 16,
                "allocation {n} took {got} from the static block"
            );
            assert!(seen.insert(got));
        }
        for _ in 0..16 {
            assert!(seen.insert(a.allocate_next().unwrap()));
        }
        assert_eq!(a.allocate_next(), Err(AllocError::Full));
        assert_eq!(a.used(), 254);
        a.release(ip("10.43.0.77"));
        assert_eq!(a.allocate_next().unwrap(), ip("10.43.0.77"));
    }

    #[test]
    fn sequential_strategy_is_repeatable() {
        let mut a = IpAllocator::with_strategy("10.43.0.0/16", Strategy::SequentialWithOffset).unwrap();
        assert_eq!(
            a.allocate_next().unwrap(),
            ip("10.43.1.1"),
            "offset 256 above 10.43.0.1"
        );
        assert_eq!(a.allocate_next().unwrap(), ip("10.43.1.2"));
        let mut tiny = IpAllocator::with_strategy("192.168.5.0/30", Strategy::SequentialWithOffset).unwrap();
        assert_eq!(tiny.allocate_next().unwrap(), ip("192.168.5.1"));
        assert_eq!(tiny.allocate_next().unwrap(), ip("192.168.5.2"));
        assert_eq!(tiny.allocate_next(), Err(AllocError::Full));
    }

    #[test]
    fn ipv6_ranges_are_capped() {
        let mut a = IpAllocator::new("fd00:43::/64").unwrap();
        assert_eq!(a.capacity(), 65536);
        a.allocate(ip("fd00:43::1")).unwrap();
        let got = a.allocate_next().unwrap();
        assert!(a.contains(got) && got != ip("fd00:43::1"));
        assert!(IpAllocator::new("10.0.0.0/32").is_err());
        assert!(IpAllocator::new("bogus").is_err());
    }

    #[test]
    fn node_ports() {
        let mut p = PortAllocator::new(30000..=32767);
        p.allocate(31234).unwrap();
        assert_eq!(p.allocate(31234), Err(AllocError::PortAllocated));
        assert_eq!(
            p.allocate(80).unwrap_err().to_string(),
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        let mut ports = HashSet::new();
        for _ in 0..100 {
            let port = p.allocate_next().unwrap();
            assert!((30086..=32767).contains(&port), "{port} is in the static block");
            assert!(ports.insert(port) && port != 31234);
        }
        p.release(31234);
        assert!(!p.is_allocated(31234));
        let mut small = PortAllocator::with_strategy(30000..=30002, Strategy::SequentialWithOffset);
        assert_eq!(
            (small.allocate_next(), small.allocate_next()),
            (Ok(30000), Ok(30001))
        );
        assert_eq!(small.allocate_next(), Ok(30002));
        assert_eq!(small.allocate_next(), Err(AllocError::Full));
    }
}
