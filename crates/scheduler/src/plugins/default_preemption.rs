//! DefaultPreemption: when no node fits, look for a node where evicting lower-priority pods would let the
//! pod fit, choose the fewest and least important victims, and nominate that node. The victims are
//! deleted by the I/O shell; the pod is scheduled once their deletion is observed.
//!
//! As kube-scheduler's, victims are chosen by removing every lower-priority pod from a copy of the node,
//! checking the filters pass, then "reprieving" victims from the most important down while the pod still
//! fits. Simplifications: PodDisruptionBudgets are not consulted, the cluster-wide PreFilter data of
//! PodTopologySpread/InterPodAffinity is not recomputed without the victims (so preemption never helps a
//! pod rejected only for anti-affinity to a victim — kube does not support that case either), and pods
//! nominated to a node are not accounted for other pods.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use crate::core::{Diagnosis, FitError};
use crate::framework::{Code, CycleFilters, CycleState, Plugin, PostFilterPlugin, PostFilterResult, Status};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "DefaultPreemption";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// See the module documentation. Re-runs the filters of the current cycle ([`CycleFilters`]).
#[derive(Debug, Default)]
pub struct DefaultPreemption;

impl DefaultPreemption {
    fn fits(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(filters) = state.read::<CycleFilters>() else {
            return Status::error("DefaultPreemption: the cycle's filters are not in the CycleState");
        };
        for f in &filters.0 {
            let status = f.filter(state, pod, node);
            if !status.is_success() {
                return status.with_plugin(f.name());
            }
        }
        Status::success()
    }

    /// kube's `SelectVictimsOnNode`: the victims that make `pod` fit on `node`, or why none do.
    fn select_victims(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<Vec<PodInfo>, Status> {
        let prio = priority(pod);
        let mut potential: Vec<PodInfo> = node
            .pods
            .iter()
            .filter(|p| priority(&p.pod) < prio)
            .cloned()
            .collect();
        if potential.is_empty() {
            return Err(Status::unresolvable(NO_VICTIMS));
        }
        let mut trial = node.clone();
        for v in &potential {
            trial.remove_pod(&v.key);
        }
        let status = self.fits(state, pod, &trial);
        if !status.is_success() {
            return Err(status);
        }
        // Most important first, so the least important are the ones left as victims.
        potential.sort_by_key(|p| std::cmp::Reverse(priority(&p.pod)));
        let mut victims = Vec::new();
        for v in potential {
            trial.add_pod(v.clone());
            if !self.fits(state, pod, &trial).is_success() {
                trial.remove_pod(&v.key);
                victims.push(v);
            }
        }
        Ok(victims)
    }
}

/// A node where preemption would help.
struct Candidate {
    /// (highest victim priority, sum of victim priorities, number of victims): smaller is better, as
    /// kube's `pickOneNodeForPreemption` ranks them (without its start-time tie-breakers).
    rank: (i64, i64, usize),
    node: String,
    victims: Vec<PodInfo>,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// A terminating lower-priority pod on the nominated node means an earlier preemption is still under way.
fn preemption_in_progress(pod: &Pod, snapshot: &Snapshot) -> bool {
    let Some(nominated) = pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()) else {
        return false;
    };
    snapshot.get(nominated).is_some_and(|n| {
        n.pods
            .iter()
            .any(|p| p.pod.metadata.deletion_timestamp.is_some() && priority(&p.pod) < priority(pod))
    })
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
        statuses: &HashMap<String, Status>,
    ) -> (PostFilterResult, Status) {
        let reject = |msg: String| {
            (
                PostFilterResult::default(),
                Status::unschedulable(format!("preemption: {msg}")),
            )
        };
        if pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
            return reject("not eligible due to preemptionPolicy=Never.".into());
        }
        if preemption_in_progress(pod, snapshot) {
            return reject("not eligible due to a terminating pod on the nominated node.".into());
        }
        let mut node_statuses = HashMap::new();
        let mut best: Option<Candidate> = None;
        for node in snapshot.nodes() {
            match statuses.get(&*node.name) {
                None => continue,
                Some(s) if s.code == Code::UnschedulableAndUnresolvable => {
                    node_statuses.insert(node.name.to_string(), Status::unresolvable(NOT_HELPFUL));
                }
                Some(_) => match self.select_victims(state, pod, node) {
                    Err(status) => {
                        node_statuses.insert(node.name.to_string(), status);
                    }
                    Ok(victims) => {
                        let prios = victims.iter().map(|v| i64::from(priority(&v.pod)));
                        let rank = (
                            prios.clone().max().unwrap_or(i64::MIN),
                            prios.sum(),
                            victims.len(),
                        );
                        if best.as_ref().is_none_or(|b| rank < b.rank) {
                            best = Some(Candidate {
                                rank,
                                node: node.name.to_string(),
                                victims,
                            });
                        }
                    }
                },
            }
        }
        match best {
            Some(Candidate { node, victims, .. }) => {
                let victims = victims.into_iter().map(|v| v.pod).collect();
                (
                    PostFilterResult {
                        nominated_node: Some(node),
                        victims,
                    },
                    Status::success(),
                )
            }
            None => {
                let fit = FitError {
                    num_all_nodes: node_statuses.len(),
                    diagnosis: Diagnosis {
                        node_statuses,
                        ..Diagnosis::default()
                    },
                    post_filter_result: None,
                };
                reject(fit.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Outcome, schedule_one};
    use crate::plugins::default_profile;
    use crate::testing::*;

    fn with_priority(mut p: Pod, prio: i32) -> Pod {
        p.spec.as_mut().unwrap().priority = Some(prio);
        p
    }

    fn unschedulable(p: &Pod, s: &Snapshot) -> FitError {
        match schedule_one(p, s, &default_profile("x"), 0).outcome {
            Outcome::Unschedulable(fit) => fit,
            other => panic!("expected unschedulable, got {other:?}"),
        }
    }

    #[test]
    fn equal_priority_pods_are_no_victims_and_message_matches_kube() {
        let s = Snapshot::from_objects(
            [
                node("n1", "1", "4Gi", 110),
                with_taints(
                    node("n2", "8", "4Gi", 110),
                    vec![taint("dedicated", "x", "NoSchedule")],
                ),
            ],
            [bound(pod_with_requests("a", &[("cpu", "1")]), "n1")],
        );
        let fit = unschedulable(&pod_with_requests("p", &[("cpu", "1")]), &s);
        assert_eq!(
            fit.to_string(),
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: x}. \
             preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
             1 Preemption is not helpful for scheduling."
        );
        assert!(fit.post_filter_result.is_none());
    }

    #[test]
    fn lowest_priority_victims_are_chosen_and_reprieved_when_possible() {
        let s = Snapshot::from_objects(
            [node("n1", "2", "4Gi", 110), node("n2", "2", "4Gi", 110)],
            [
                bound(
                    with_priority(pod_with_requests("n1-low", &[("cpu", "1")]), 1),
                    "n1",
                ),
                bound(
                    with_priority(pod_with_requests("n1-mid", &[("cpu", "1")]), 5),
                    "n1",
                ),
                bound(
                    with_priority(pod_with_requests("n2-mid", &[("cpu", "1")]), 5),
                    "n2",
                ),
                bound(
                    with_priority(pod_with_requests("n2-high", &[("cpu", "1")]), 100),
                    "n2",
                ),
            ],
        );
        let fit = unschedulable(&with_priority(pod_with_requests("p", &[("cpu", "1")]), 10), &s);
        let res = fit.post_filter_result.expect("preemption found a node");
        assert_eq!(
            res.nominated_node.as_deref(),
            Some("n1"),
            "n1's victim is less important"
        );
        let victims: Vec<_> = res
            .victims
            .iter()
            .map(|v| v.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            victims,
            vec!["n1-low"],
            "n1-mid is reprieved: removing n1-low suffices"
        );
        assert_eq!(fit.diagnosis.post_filter_msg, None);
    }

    struct RejectNode(&'static str);
    impl Plugin for RejectNode {
        fn name(&self) -> &'static str {
            "RejectNode"
        }
    }
    impl crate::framework::FilterPlugin for RejectNode {
        fn filter(&self, _: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
            if &*node.name == self.0 {
                Status::unschedulable("rejected by RejectNode")
            } else {
                Status::success()
            }
        }
    }

    #[test]
    fn custom_filters_of_the_profile_are_respected_when_choosing_victims() {
        let s = Snapshot::from_objects(
            [node("n1", "1", "4Gi", 110)],
            [bound(
                with_priority(pod_with_requests("low", &[("cpu", "1")]), 1),
                "n1",
            )],
        );
        let profile = default_profile("x").with_filter(std::sync::Arc::new(RejectNode("n1")));
        let p = with_priority(pod_with_requests("p", &[("cpu", "1")]), 10);
        let Outcome::Unschedulable(fit) = schedule_one(&p, &s, &profile, 0).outcome else {
            panic!()
        };
        assert!(
            fit.post_filter_result.is_none(),
            "evicting on a node the profile rejects anyway"
        );
        assert!(
            fit.to_string()
                .ends_with("preemption: 0/1 nodes are available: 1 rejected by RejectNode.")
        );
    }

    #[test]
    fn preemption_policy_never_is_respected() {
        let s = Snapshot::from_objects(
            [node("n1", "1", "4Gi", 110)],
            [bound(pod_with_requests("a", &[("cpu", "1")]), "n1")],
        );
        let mut p = with_priority(pod_with_requests("p", &[("cpu", "1")]), 10);
        p.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert_eq!(
            unschedulable(&p, &s).to_string(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn removing_all_victims_not_enough_reports_the_filter_reason() {
        let s = Snapshot::from_objects(
            [node("n1", "1", "4Gi", 110)],
            [bound(pod_with_requests("a", &[("cpu", "500m")]), "n1")],
        );
        let p = with_priority(pod_with_requests("p", &[("cpu", "2")]), 10);
        assert_eq!(
            unschedulable(&p, &s).to_string(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Insufficient cpu."
        );
    }
}
