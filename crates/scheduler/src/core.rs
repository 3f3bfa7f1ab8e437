//! The pure heart of the scheduler: [`schedule_one`] runs one scheduling cycle for one pod against a
//! [`Snapshot`] with a [`Profile`] and returns the chosen node or a [`FitError`] whose `Display` is
//! kube-scheduler's FailedScheduling message. No I/O, no clock.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

use crate::framework::{CycleState, MAX_NODE_SCORE, NodeScore, PostFilterResult, Profile, Status};
use crate::snapshot::{NodeInfo, Snapshot};

/// Below this many nodes every node is evaluated (kube's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this (kube's `minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Why no node was chosen, per node and overall (kube's `framework.Diagnosis`).
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    /// The rejecting status of every node that was filtered out.
    pub node_statuses: HashMap<String, Status>,
    /// Set when a PreFilter rejected the pod outright.
    pub pre_filter_msg: Option<String>,
    /// Reasons added by PostFilter plugins (kube prints them after "preemption: ").
    pub post_filter_msg: Option<String>,
    /// Plugins that rejected the pod somewhere; the queue uses them to decide which cluster events may help.
    pub unschedulable_plugins: HashSet<&'static str>,
}

/// No node fits the pod.
#[derive(Clone, Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
    /// Set when a PostFilter plugin (preemption) made room for the pod on a node.
    pub post_filter_result: Option<PostFilterResult>,
}

impl fmt::Display for FitError {
    /// kube-scheduler's message: `0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient
    /// cpu.` — one "count reason" part per distinct reason, sorted as strings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(msg) = &self.diagnosis.pre_filter_msg {
            write!(f, " {msg}.")?;
        } else {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for status in self.diagnosis.node_statuses.values() {
                for reason in &status.reasons {
                    *counts.entry(reason).or_default() += 1;
                }
            }
            let mut parts: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
            parts.sort();
            if !parts.is_empty() {
                write!(f, " {}.", parts.join(", "))?;
            }
        }
        if let Some(msg) = &self.diagnosis.post_filter_msg {
            // The message usually is itself a FitError ending in "."; print one period, as kube ≥1.28 does.
            write!(f, " {}.", msg.trim_end_matches('.'))?;
        }
        Ok(())
    }
}

/// The result of one scheduling cycle.
#[derive(Debug)]
pub enum Outcome {
    /// Bind the pod to this node (after Reserve and Permit).
    Scheduled { node: String },
    /// No node fits; report the FitError and park the pod until the cluster changes.
    Unschedulable(FitError),
    /// There are no nodes at all (kube: "no nodes available to schedule pods").
    NoNodes,
    /// A plugin failed; retry with backoff.
    Error(Status),
}

/// What [`schedule_one`] returns: the outcome, the cycle state (Reserve/Unreserve need it) and counters.
#[derive(Debug)]
pub struct ScheduleResult {
    pub outcome: Outcome,
    pub state: CycleState,
    /// Nodes run through the filters.
    pub evaluated_nodes: usize,
    /// Nodes that passed them.
    pub feasible_nodes: usize,
    /// Where the next cycle should start looking, so sampling rotates through the cluster.
    pub next_start: usize,
}

/// How many feasible nodes to look for before scoring (kube's `numFeasibleNodesToFind`).
pub fn num_feasible_nodes_to_find(percentage: u32, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let mut pct = percentage as usize;
    if pct == 0 {
        pct = 50usize
            .saturating_sub(num_all_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
    }
    (num_all_nodes * pct.min(100) / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Runs PreFilter, Filter (over a rotating sample of nodes starting at `start`), PostFilter when nothing
/// fits, PreScore and Score, and picks the highest total score (ties broken at random).
pub fn schedule_one(pod: &Pod, snapshot: &Snapshot, profile: &Profile, start: usize) -> ScheduleResult {
    let mut state = CycleState::new();
    let result = |outcome, state, evaluated, feasible, next_start| ScheduleResult {
        outcome,
        state,
        evaluated_nodes: evaluated,
        feasible_nodes: feasible,
        next_start,
    };
    let num_all = snapshot.num_nodes();
    if num_all == 0 {
        return result(Outcome::NoNodes, state, 0, 0, start);
    }

    // PreFilter
    let mut skipped: HashSet<&'static str> = HashSet::new();
    let mut allowed: Option<HashSet<String>> = None;
    let mut narrowing_plugins = Vec::new();
    for p in &profile.pre_filter {
        let (res, status) = p.pre_filter(&mut state, pod, snapshot);
        match status.code {
            crate::framework::Code::Success => {}
            crate::framework::Code::Skip => {
                skipped.insert(p.name());
                continue;
            }
            crate::framework::Code::Error => {
                return result(Outcome::Error(status.with_plugin(p.name())), state, 0, 0, start);
            }
            _ => {
                let diagnosis = Diagnosis {
                    pre_filter_msg: Some(status.to_string()),
                    unschedulable_plugins: HashSet::from([p.name()]),
                    ..Diagnosis::default()
                };
                let fit = FitError {
                    num_all_nodes: num_all,
                    diagnosis,
                    post_filter_result: None,
                };
                return result(Outcome::Unschedulable(fit), state, 0, 0, start);
            }
        }
        if let Some(names) = res.node_names {
            narrowing_plugins.push(p.name());
            allowed = Some(match allowed {
                None => names,
                Some(prev) => prev.intersection(&names).cloned().collect(),
            });
        }
    }

    // Filter over a rotating window of the node list.
    let slots = snapshot.slots();
    let candidates = allowed.as_ref().map_or(num_all, |a| a.len());
    let to_find = num_feasible_nodes_to_find(profile.percentage_of_nodes_to_score, candidates);
    let filters: Vec<_> = profile
        .filter
        .iter()
        .filter(|p| !skipped.contains(p.name()))
        .collect();
    state.write(crate::framework::CycleFilters(
        filters.iter().map(|f| Arc::clone(f)).collect(),
    ));
    let mut diagnosis = Diagnosis::default();
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(to_find.min(candidates));
    let mut evaluated = 0;
    let mut processed = 0;
    let len = slots.len();
    let start = if len == 0 { 0 } else { start % len };
    for offset in 0..len {
        if feasible.len() >= to_find {
            break;
        }
        processed = offset + 1;
        let info = &slots[(start + offset) % len];
        if !info.has_node() {
            continue;
        }
        if let Some(a) = &allowed
            && !a.contains(&*info.name)
        {
            continue;
        }
        evaluated += 1;
        let mut rejected = None;
        for f in &filters {
            let status = f.filter(&state, pod, info);
            if status.is_success() {
                continue;
            }
            if status.code == crate::framework::Code::Error {
                let status = status.with_plugin(f.name());
                return result(Outcome::Error(status), state, evaluated, feasible.len(), start);
            }
            rejected = Some(status.with_plugin(f.name()));
            break;
        }
        match rejected {
            None => feasible.push(info),
            Some(status) => {
                diagnosis.unschedulable_plugins.insert(status.plugin);
                diagnosis.node_statuses.insert(info.name.to_string(), status);
            }
        }
    }
    let next_start = if len == 0 { 0 } else { (start + processed) % len };

    if feasible.is_empty() {
        if let Some(a) = &allowed {
            let reason = format!(
                "node(s) didn't satisfy plugin(s) [{}]",
                narrowing_plugins.join(" ")
            );
            for info in snapshot.nodes().filter(|i| !a.contains(&*i.name)) {
                let status = Status::unresolvable(reason.clone());
                diagnosis.node_statuses.insert(info.name.to_string(), status);
            }
        }
        let mut post_msgs = Vec::new();
        let mut post_filter_result = None;
        for p in &profile.post_filter {
            let (res, status) = p.post_filter(&state, pod, snapshot, &diagnosis.node_statuses);
            if status.is_success() {
                post_filter_result = Some(res);
                break;
            }
            if !status.reasons.is_empty() {
                post_msgs.push(status.to_string());
            }
        }
        if post_filter_result.is_none() && !post_msgs.is_empty() {
            diagnosis.post_filter_msg = Some(post_msgs.join(" "));
        }
        let fit = FitError {
            num_all_nodes: num_all,
            diagnosis,
            post_filter_result,
        };
        return result(Outcome::Unschedulable(fit), state, evaluated, 0, next_start);
    }
    if feasible.len() == 1 {
        let node = feasible[0].name.to_string();
        return result(Outcome::Scheduled { node }, state, evaluated, 1, next_start);
    }

    // PreScore and Score
    let mut score_skipped: HashSet<&'static str> = HashSet::new();
    for p in &profile.pre_score {
        let status = p.pre_score(&mut state, pod, snapshot, &feasible);
        if status.is_skip() {
            score_skipped.insert(p.name());
        } else if !status.is_success() {
            return result(
                Outcome::Error(status.with_plugin(p.name())),
                state,
                evaluated,
                feasible.len(),
                next_start,
            );
        }
    }
    let mut totals = vec![0i64; feasible.len()];
    for ws in &profile.score {
        if score_skipped.contains(ws.plugin.name()) {
            continue;
        }
        let mut scores = Vec::with_capacity(feasible.len());
        for info in &feasible {
            match ws.plugin.score(&state, pod, info) {
                Ok(score) => scores.push(NodeScore {
                    name: info.name.clone(),
                    score,
                }),
                Err(status) => {
                    let status = status.with_plugin(ws.plugin.name());
                    return result(
                        Outcome::Error(status),
                        state,
                        evaluated,
                        feasible.len(),
                        next_start,
                    );
                }
            }
        }
        let status = ws.plugin.normalize_score(&state, pod, &mut scores);
        if !status.is_success() {
            let status = status.with_plugin(ws.plugin.name());
            return result(
                Outcome::Error(status),
                state,
                evaluated,
                feasible.len(),
                next_start,
            );
        }
        for (total, s) in totals.iter_mut().zip(&scores) {
            if !(0..=MAX_NODE_SCORE).contains(&s.score) {
                let status = Status::error(format!(
                    "plugin {} returns an invalid score {}, it should in the range of [0, {MAX_NODE_SCORE}] after normalizing",
                    ws.plugin.name(),
                    s.score
                ));
                return result(
                    Outcome::Error(status),
                    state,
                    evaluated,
                    feasible.len(),
                    next_start,
                );
            }
            *total += s.score * ws.weight;
        }
    }
    let node = select_host(&feasible, &totals);
    result(
        Outcome::Scheduled { node },
        state,
        evaluated,
        feasible.len(),
        next_start,
    )
}

/// The node with the highest total; among equals each is equally likely (reservoir sampling, as kube).
fn select_host(nodes: &[&NodeInfo], totals: &[i64]) -> String {
    let mut rng = rand::rng();
    let mut best = 0;
    let mut ties = 1;
    for i in 1..nodes.len() {
        if totals[i] > totals[best] {
            best = i;
            ties = 1;
        } else if totals[i] == totals[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    nodes[best].name.to_string()
}

/// Runs the Reserve plugins then the Permit plugins for a chosen node. On failure every Reserve plugin is
/// un-reserved (in reverse order, as kube does) and the failing status is returned.
pub fn reserve_and_permit(profile: &Profile, state: &mut CycleState, pod: &Pod, node: &str) -> Status {
    for p in &profile.reserve {
        let status = p.reserve(state, pod, node);
        if !status.is_success() {
            unreserve(profile, state, pod, node);
            return status.with_plugin(p.name());
        }
    }
    for p in &profile.permit {
        let status = p.permit(state, pod, node);
        if !status.is_success() {
            unreserve(profile, state, pod, node);
            return status.with_plugin(p.name());
        }
    }
    Status::success()
}

/// Calls every Reserve plugin's `unreserve`, last first.
pub fn unreserve(profile: &Profile, state: &mut CycleState, pod: &Pod, node: &str) {
    for p in profile.reserve.iter().rev() {
        p.unreserve(state, pod, node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{FilterPlugin, Plugin, ReservePlugin};
    use crate::plugins::default_profile;
    use crate::testing::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn run(p: &Pod, s: &Snapshot) -> ScheduleResult {
        schedule_one(p, s, &default_profile("default-scheduler"), 0)
    }

    fn scheduled(r: &ScheduleResult) -> &str {
        match &r.outcome {
            Outcome::Scheduled { node } => node,
            other => panic!("not scheduled: {other:?}"),
        }
    }

    fn message(r: &ScheduleResult) -> String {
        match &r.outcome {
            Outcome::Unschedulable(fit) => fit.to_string(),
            other => panic!("not unschedulable: {other:?}"),
        }
    }

    #[test]
    fn three_nodes_without_cpu_give_kubes_message() {
        let s = Snapshot::from_objects(
            [
                node("n1", "1", "4Gi", 110),
                node("n2", "1", "4Gi", 110),
                node("n3", "1", "4Gi", 110),
            ],
            [],
        );
        let r = run(&pod_with_requests("big", &[("cpu", "2")]), &s);
        assert_eq!(
            message(&r),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: \
             3 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn mixed_reasons_are_counted_and_sorted() {
        let mut cordoned = node("n4", "8", "8Gi", 110);
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        let s = Snapshot::from_objects(
            [
                with_taints(
                    node("cp", "8", "8Gi", 110),
                    vec![taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")],
                ),
                node("n2", "1", "4Gi", 110),
                node("n3", "1", "512Mi", 110),
                cordoned,
            ],
            [],
        );
        let r = run(&pod_with_requests("big", &[("cpu", "2"), ("memory", "1Gi")]), &s);
        // Go's sort.Strings order: "1 I…" < "1 n…" < "2 …"
        assert_eq!(
            message(&r),
            "0/4 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 1 node(s) were unschedulable, 2 Insufficient cpu. \
             preemption: 0/4 nodes are available: 2 No preemption victims found for incoming pod, \
             2 Preemption is not helpful for scheduling."
        );
        let Outcome::Unschedulable(fit) = &r.outcome else {
            unreachable!()
        };
        assert!(fit.diagnosis.unschedulable_plugins.contains("NodeResourcesFit"));
        assert!(fit.diagnosis.unschedulable_plugins.contains("TaintToleration"));
    }

    #[test]
    fn no_nodes_at_all() {
        assert!(matches!(
            run(&pod("p"), &Snapshot::new()).outcome,
            Outcome::NoNodes
        ));
    }

    #[test]
    fn picks_the_least_allocated_fitting_node() {
        let s = Snapshot::from_objects(
            [
                node("small", "1", "1Gi", 110),
                node("busy", "8", "16Gi", 110),
                node("idle", "8", "16Gi", 110),
            ],
            [bound(
                pod_with_requests("x", &[("cpu", "6"), ("memory", "12Gi")]),
                "busy",
            )],
        );
        let r = run(&pod_with_requests("p", &[("cpu", "2"), ("memory", "2Gi")]), &s);
        assert_eq!(scheduled(&r), "idle");
        assert_eq!(r.feasible_nodes, 2);
    }

    #[test]
    fn consecutive_assumed_pods_do_not_overcommit() {
        let mut s = Snapshot::from_objects([node("n1", "2", "4Gi", 110), node("n2", "2", "4Gi", 110)], []);
        let mut placed = Vec::new();
        for i in 0..4 {
            let p = pod_with_requests(&format!("p{i}"), &[("cpu", "1")]);
            let r = run(&p, &s);
            let node = scheduled(&r).to_string();
            s.add_pod(&node, crate::snapshot::PodInfo::new(Arc::new(bound(p, &node))));
            placed.push(node);
        }
        placed.sort();
        assert_eq!(placed, vec!["n1", "n1", "n2", "n2"]);
        let r = run(&pod_with_requests("p5", &[("cpu", "1")]), &s);
        assert!(message(&r).starts_with("0/2 nodes are available: 2 Insufficient cpu. preemption: "));
    }

    #[test]
    fn feasible_node_count_follows_kube() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(
            num_feasible_nodes_to_find(0, 100),
            50.max(MIN_FEASIBLE_NODES_TO_FIND)
        );
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(0, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(0, 100_000), 5000);
        assert_eq!(num_feasible_nodes_to_find(100, 5000), 5000);
    }

    #[test]
    fn sampling_evaluates_a_rotating_window() {
        let nodes: Vec<_> = (0..1000)
            .map(|i| node(&format!("n{i}"), "4", "8Gi", 110))
            .collect();
        let s = Snapshot::from_objects(nodes, []);
        let r = run(&pod("p"), &s);
        assert_eq!(r.evaluated_nodes, 420);
        assert_eq!(r.next_start, 420);
        let r2 = schedule_one(&pod("q"), &s, &default_profile("x"), r.next_start);
        assert_eq!(r2.next_start, 840);
    }

    struct CountingReserve(AtomicUsize, AtomicUsize);
    impl Plugin for CountingReserve {
        fn name(&self) -> &'static str {
            "CountingReserve"
        }
    }
    impl ReservePlugin for CountingReserve {
        fn reserve(&self, _: &mut CycleState, _: &Pod, _: &str) -> Status {
            self.0.fetch_add(1, Ordering::SeqCst);
            Status::success()
        }
        fn unreserve(&self, _: &mut CycleState, _: &Pod, _: &str) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
    struct Deny;
    impl Plugin for Deny {
        fn name(&self) -> &'static str {
            "Deny"
        }
    }
    impl crate::framework::PermitPlugin for Deny {
        fn permit(&self, _: &CycleState, _: &Pod, _: &str) -> Status {
            Status::unschedulable("denied")
        }
    }
    impl FilterPlugin for Deny {
        fn filter(&self, _: &CycleState, _: &Pod, _: &NodeInfo) -> Status {
            Status::unschedulable("denied")
        }
    }

    #[test]
    fn permit_rejection_unreserves() {
        let counter = Arc::new(CountingReserve(AtomicUsize::new(0), AtomicUsize::new(0)));
        let profile = Profile::new("x")
            .with_reserve(counter.clone())
            .with_permit(Arc::new(Deny));
        let st = reserve_and_permit(&profile, &mut CycleState::new(), &pod("p"), "n1");
        assert_eq!(st.reasons, vec!["denied"]);
        assert_eq!(st.plugin, "Deny");
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(counter.1.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn custom_filter_plugin_reasons_show_up() {
        let s = Snapshot::from_objects([node("n1", "4", "8Gi", 110)], []);
        let mut profile = default_profile("x").with_filter(Arc::new(Deny));
        profile.post_filter.clear();
        let r = schedule_one(&pod("p"), &s, &profile, 0);
        assert_eq!(
            message(&r),
            "0/1 nodes are available: 1 denied.",
            "no preemption part without PostFilter"
        );
    }
}
