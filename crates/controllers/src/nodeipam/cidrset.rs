//! A set of equal-size IPv4 blocks carved out of the cluster CIDR (Kubernetes' `cidrset`): allocate the next
//! free one, mark one taken (rebuilding from existing nodes), release one. Pure and synchronous.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Errors of the CIDR set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The text is not an IPv4 CIDR.
    #[error("{0:?} is not an IPv4 CIDR")]
    Invalid(String),
    /// The node mask does not fit the cluster CIDR.
    #[error("node CIDR mask /{node} must be between the cluster prefix /{cluster} and /32")]
    BadMask { cluster: u8, node: u8 },
    /// Every block is taken.
    #[error("no free pod CIDR left in {0}")]
    Full(String),
    /// The block is not one of ours.
    #[error("{0} is not a /{1} block of the cluster CIDR")]
    OutOfRange(String, u8),
}

/// The blocks of `cluster` with prefix length `node_mask`, and which are taken.
#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: String,
    base: u32,
    node_mask: u8,
    count: u64,
    used: BTreeSet<u64>,
    /// Where the search for the next free block starts (allocation goes round-robin like Kubernetes').
    next: u64,
}

/// Parse `a.b.c.d/n` into (network address, prefix length).
pub fn parse_cidr(s: &str) -> Result<(u32, u8), CidrError> {
    let invalid = || CidrError::Invalid(s.to_string());
    let (ip, len) = s.split_once('/').ok_or_else(invalid)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| invalid())?;
    let len: u8 = len.parse().map_err(|_| invalid())?;
    if len > 32 {
        return Err(invalid());
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok((u32::from(ip) & mask, len))
}

impl CidrSet {
    pub fn new(cluster: &str, node_mask: u8) -> Result<CidrSet, CidrError> {
        let (base, prefix) = parse_cidr(cluster)?;
        if node_mask < prefix || node_mask > 32 {
            return Err(CidrError::BadMask {
                cluster: prefix,
                node: node_mask,
            });
        }
        Ok(CidrSet {
            cluster: cluster.to_string(),
            base,
            node_mask,
            count: 1u64 << (node_mask - prefix),
            used: BTreeSet::new(),
            next: 0,
        })
    }

    fn block(&self, index: u64) -> String {
        let size = 1u64 << (32 - self.node_mask);
        let addr = self.base as u64 + index * size;
        format!("{}/{}", Ipv4Addr::from(addr as u32), self.node_mask)
    }

    fn index_of(&self, cidr: &str) -> Result<u64, CidrError> {
        let out_of_range = || CidrError::OutOfRange(cidr.to_string(), self.node_mask);
        let (addr, len) = parse_cidr(cidr)?;
        if len != self.node_mask || addr < self.base {
            return Err(out_of_range());
        }
        let index = u64::from(addr - self.base) >> (32 - self.node_mask);
        if index >= self.count {
            return Err(out_of_range());
        }
        Ok(index)
    }

    /// The next free block, now taken.
    pub fn allocate_next(&mut self) -> Result<String, CidrError> {
        for offset in 0..self.count {
            let i = (self.next + offset) % self.count;
            if self.used.insert(i) {
                self.next = (i + 1) % self.count;
                return Ok(self.block(i));
            }
        }
        Err(CidrError::Full(self.cluster.clone()))
    }

    /// Mark `cidr` taken (a node already has it). Taking a taken block is not an error.
    pub fn occupy(&mut self, cidr: &str) -> Result<(), CidrError> {
        let i = self.index_of(cidr)?;
        self.used.insert(i);
        Ok(())
    }

    pub fn release(&mut self, cidr: &str) -> Result<(), CidrError> {
        let i = self.index_of(cidr)?;
        self.used.remove(&i);
        Ok(())
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_in_order_and_skip_taken_ones() {
        let mut set = CidrSet::new("10.42.0.0/16", 24).unwrap();
        set.occupy("10.42.1.0/24").unwrap();
        assert_eq!(set.allocate_next().unwrap(), "10.42.0.0/24");
        assert_eq!(set.allocate_next().unwrap(), "10.42.2.0/24");
        assert_eq!(set.in_use(), 3);
    }

    #[test]
    fn a_full_set_refuses_and_a_released_block_comes_back() {
        let mut set = CidrSet::new("10.42.0.0/23", 24).unwrap();
        assert_eq!(set.allocate_next().unwrap(), "10.42.0.0/24");
        assert_eq!(set.allocate_next().unwrap(), "10.42.1.0/24");
        assert!(matches!(set.allocate_next(), Err(CidrError::Full(_))));
        set.release("10.42.0.0/24").unwrap();
        assert_eq!(set.allocate_next().unwrap(), "10.42.0.0/24");
    }

    #[test]
    fn foreign_blocks_and_bad_input_are_rejected() {
        let mut set = CidrSet::new("10.42.0.0/16", 24).unwrap();
        assert!(matches!(
            set.occupy("10.43.0.0/24"),
            Err(CidrError::OutOfRange(..))
        ));
        assert!(matches!(
            set.occupy("10.42.0.0/25"),
            Err(CidrError::OutOfRange(..))
        ));
        assert!(matches!(
            CidrSet::new("10.42.0.0/16", 8),
            Err(CidrError::BadMask { .. })
        ));
        assert!(matches!(parse_cidr("nope"), Err(CidrError::Invalid(_))));
        assert_eq!(
            parse_cidr("10.42.7.9/16").unwrap(),
            (u32::from(Ipv4Addr::new(10, 42, 0, 0)), 16)
        );
    }
}
