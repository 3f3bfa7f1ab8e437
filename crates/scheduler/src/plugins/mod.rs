//! The default plugins, one module each, named as in kube-scheduler, and [`default_profile`] wiring them
//! with kube's default weights.

use std::sync::Arc;

use crate::framework::Profile;

pub mod balanced_allocation;
pub mod default_binder;
pub mod default_preemption;
pub mod helpers;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;

pub use balanced_allocation::BalancedAllocation;
pub use default_binder::DefaultBinder;
pub use default_preemption::DefaultPreemption;
pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources_fit::NodeResourcesFit;
pub use node_unschedulable::NodeUnschedulable;
pub use pod_topology_spread::PodTopologySpread;
pub use taint_toleration::TaintToleration;

/// The filter and score plugins of kube-scheduler's default profile, in its order and with its weights
/// (TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2, NodeResourcesFit 1,
/// BalancedAllocation 1), and [`DefaultPreemption`] as PostFilter. No Bind plugin: the I/O shell adds
/// [`DefaultBinder`] with its client.
pub fn default_profile(scheduler_name: &str) -> Profile {
    let unschedulable = Arc::new(NodeUnschedulable);
    let node_name = Arc::new(NodeName);
    let taints = Arc::new(TaintToleration);
    let affinity = Arc::new(NodeAffinity);
    let ports = Arc::new(NodePorts);
    let fit = Arc::new(NodeResourcesFit);
    let spread = Arc::new(PodTopologySpread);
    let inter = Arc::new(InterPodAffinity);
    let balanced = Arc::new(BalancedAllocation);
    let profile = Profile::new(scheduler_name)
        .with_pre_filter(affinity.clone())
        .with_pre_filter(ports.clone())
        .with_pre_filter(fit.clone())
        .with_pre_filter(spread.clone())
        .with_pre_filter(inter.clone())
        .with_filter(unschedulable)
        .with_filter(node_name)
        .with_filter(taints.clone())
        .with_filter(affinity.clone())
        .with_filter(ports)
        .with_filter(fit.clone())
        .with_filter(spread.clone())
        .with_filter(inter.clone())
        .with_pre_score(taints.clone())
        .with_pre_score(affinity.clone())
        .with_pre_score(spread.clone())
        .with_pre_score(inter.clone())
        .with_pre_score(fit.clone())
        .with_pre_score(balanced.clone())
        .with_score(taints, 3)
        .with_score(affinity, 2)
        .with_score(spread, 2)
        .with_score(inter, 2)
        .with_score(fit, 1)
        .with_score(balanced, 1);
    profile.with_post_filter(Arc::new(DefaultPreemption))
}
