//! Names derived from the node name, so that two agents never pick the same bridge or CNI network.

use sha2::{Digest, Sha256};

/// Linux interface names are at most 15 bytes (IFNAMSIZ − 1).
const IFNAME_MAX: usize = 15;

/// The node's pod bridge: `rk-<node name>` when that fits and is a plain name, else `rk-` + a name prefix +
/// a hash of the whole name (still unique and stable across restarts).
pub fn bridge_name(node_name: &str) -> String {
    let plain = node_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let candidate = format!("rk-{node_name}");
    if plain && !node_name.is_empty() && candidate.len() <= IFNAME_MAX {
        return candidate;
    }
    let prefix: String = node_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(4)
        .collect();
    format!(
        "rk-{prefix}{}",
        &short_hash(node_name)[..IFNAME_MAX - 3 - prefix.len()]
    )
}

/// The CNI network name (also names host-local's state dir and portmap's chains).
pub fn network_name(node_name: &str) -> String {
    let plain = node_name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if plain && !node_name.is_empty() && node_name.len() <= 40 {
        format!("rkube-{node_name}")
    } else {
        format!("rkube-{}", short_hash(node_name))
    }
}

fn short_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_names_stay_readable() {
        assert_eq!(bridge_name("node1"), "rk-node1");
        assert_eq!(network_name("node1"), "rkube-node1");
    }

    #[test]
    fn long_names_fit_ifnamsiz_and_stay_distinct() {
        let a = bridge_name("worker-number-one.example.com");
        let b = bridge_name("worker-number-two.example.com");
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, bridge_name("worker-number-one.example.com"));
        assert!(a.starts_with("rk-work"));
    }

    #[test]
    fn odd_names_get_a_hashed_network_name() {
        let n = network_name("UPPER/odd name");
        assert!(n.starts_with("rkube-") && n.len() == 22, "{n}");
    }
}
