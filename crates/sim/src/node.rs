//! What a simulated node looks like to the API: its Node object and status, its Lease, and which nodes
//! heartbeat in which time slot. Pure builders; the shell sends them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::SimOptions;

pub use rkube_controllers::nodelifecycle::{LEASE_DURATION_SECONDS, LEASE_NAMESPACE, lease_object};

/// The kubelet version simulated nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0-rkube-sim";
/// The label that marks a node as simulated (kwok uses `type=kwok`).
pub const SIMULATED_LABEL: &str = "node.rkube.io/simulated";

/// The name of node `index`.
pub fn node_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index}")
}

/// The index of `name` if it is one of the `count` nodes named with `prefix`.
pub fn node_index(prefix: &str, count: usize, name: &str) -> Option<usize> {
    let digits = name.strip_prefix(prefix)?.strip_prefix('-')?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse::<usize>().ok().filter(|i| *i < count)
}

/// The InternalIP of node `index`: an address of 198.18.0.0/15, the range RFC 2544 reserves for
/// benchmarking, so it can never be a real host. Nothing ever connects to it; it is only data.
pub fn node_ip(index: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    Ipv4Addr::from(base + 1 + (index as u32 % ((1 << 17) - 2)))
}

/// The Node to register (status is sent separately through `nodes/status`).
pub fn node_object(options: &SimOptions, index: usize) -> Node {
    let name = node_name(&options.name_prefix, index);
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("type".to_string(), "sim".to_string()),
        (SIMULATED_LABEL.to_string(), "true".to_string()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..Default::default()
        },
        status: Some(node_status(options, index, None, &now())),
        ..Default::default()
    }
}

fn resources(options: &SimOptions) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity(options.cpu.clone())),
        ("memory".to_string(), Quantity(options.memory.clone())),
        ("pods".to_string(), Quantity(options.pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            Quantity(options.ephemeral_storage.clone()),
        ),
    ])
}

/// The status node `index` reports at `now`. `ready_since` is when its Ready condition last turned True
/// (`None`: now), so heartbeats move `lastHeartbeatTime` but not `lastTransitionTime`.
pub fn node_status(options: &SimOptions, index: usize, ready_since: Option<&Time>, now: &Time) -> NodeStatus {
    let since = ready_since.unwrap_or(now).clone();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since.clone()),
    };
    NodeStatus {
        capacity: Some(resources(options)),
        allocatable: Some(resources(options)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip(index).to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: node_name(&options.name_prefix, index),
            },
        ]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status (simulated)",
            ),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            os_image: "rkube simulated node".into(),
            kernel_version: "6.0.0-sim".into(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            container_runtime_version: "sim://0.1.0".into(),
            machine_id: format!("sim-{index}"),
            system_uuid: format!("sim-{index}"),
            boot_id: format!("sim-{index}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The nodes that heartbeat in time slot `slot` of `slots`: node `i` in slot `i % slots`, so a period's
/// requests are spread evenly over it instead of arriving in one burst.
pub fn slot_members(count: usize, slots: usize, slot: usize) -> impl Iterator<Item = usize> {
    (slot % slots.max(1)..count).step_by(slots.max(1))
}

pub(crate) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_not_ours() {
        assert_eq!(node_name("sim", 12), "sim-12");
        assert_eq!(node_index("sim", 100, "sim-12"), Some(12));
        for other in ["sim-100", "sim-", "sim-012", "simx-1", "sim", "other-1", "sim-1x"] {
            assert_eq!(node_index("sim", 100, other), None, "{other}");
        }
    }

    #[test]
    fn node_ips_are_distinct_and_in_the_benchmarking_range() {
        let ips: std::collections::HashSet<_> = (0..5000).map(node_ip).collect();
        assert_eq!(ips.len(), 5000);
        assert!(
            ips.iter()
                .all(|ip| ip.octets()[0] == 198 && (ip.octets()[1] & 0xfe) == 18)
        );
    }

    #[test]
    fn status_reports_capacity_and_readiness() {
        let options = SimOptions {
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 250,
            ..Default::default()
        };
        let since = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let s = node_status(&options, 3, Some(&since), &now());
        let cap = s.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "8");
        assert_eq!(cap["memory"].0, "32Gi");
        assert_eq!(cap["pods"].0, "250");
        assert_eq!(s.allocatable.unwrap(), cap);
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, Some(since));
        assert_eq!(s.node_info.unwrap().kubelet_version, KUBELET_VERSION);
        assert_eq!(s.addresses.unwrap()[0].address, "198.18.0.4");
    }

    #[test]
    fn slots_cover_every_node_exactly_once() {
        let mut seen: Vec<usize> = (0..7).flat_map(|s| slot_members(30, 7, s)).collect();
        seen.sort();
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
        assert_eq!(slot_members(3, 10, 5).count(), 0);
    }
}
