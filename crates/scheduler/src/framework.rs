//! The scheduling framework: small extension-point traits a plugin implements (as kube-scheduler's
//! `framework.Plugin` interfaces), the [`Status`] they return, the per-cycle [`CycleState`], and the
//! [`Profile`] that lists which plugins run at each point and how scores are weighted.
//!
//! One scheduling cycle runs, for one pod: every PreFilter → Filter on each candidate node (stopping at the
//! first failing plugin for that node) → PostFilter if no node fits → PreScore → Score (+ NormalizeScore) on
//! the feasible nodes → pick the best → Reserve → Permit. The binding cycle then runs Bind, asynchronously.
//! All methods except [`BindPlugin::bind`] are synchronous and must not do I/O: they see only the pod, the
//! [`Snapshot`] and the [`CycleState`].

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::snapshot::{NodeInfo, Snapshot};

/// Highest score a Score plugin may give after normalisation (kube's `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// The outcome class of a plugin call (kube's `framework.Code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Success,
    /// The pod does not fit now, but might after a cluster change or preemption.
    Unschedulable,
    /// The pod does not fit and preemption on this node would not help (e.g. a node-affinity mismatch).
    UnschedulableAndUnresolvable,
    /// Something went wrong inside the plugin; the pod is retried with backoff.
    Error,
    /// From PreFilter/PreScore: this plugin has nothing to do for this pod; its Filter/Score is not called.
    Skip,
}

/// A plugin's answer: a code, human-readable reasons (each becomes one "N reason" part of the
/// FailedScheduling message), and the plugin that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn new(code: Code, reason: impl Into<String>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }
    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }
    pub fn error(reason: impl Into<String>) -> Status {
        Status::new(Code::Error, reason)
    }
    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }
    /// Unschedulable or UnschedulableAndUnresolvable.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reasons.join(", "))
    }
}

/// Per-cycle scratch space shared by the plugins of one scheduling cycle, typed by the value's type so a
/// plugin reads back exactly what its own PreFilter/PreScore wrote (each plugin uses a private type).
/// A handful of entries per cycle, read once per node per plugin: a linear scan over a small vector beats
/// hashing the `TypeId` every time.
#[derive(Default)]
pub struct CycleState {
    values: Vec<(TypeId, Box<dyn Any + Send + Sync>)>,
}

impl CycleState {
    pub fn new() -> CycleState {
        CycleState::default()
    }
    /// Stores `value`, replacing any earlier value of the same type.
    pub fn write<T: Any + Send + Sync>(&mut self, value: T) {
        let id = TypeId::of::<T>();
        match self.values.iter_mut().find(|(t, _)| *t == id) {
            Some(slot) => slot.1 = Box::new(value),
            None => self.values.push((id, Box::new(value))),
        }
    }
    pub fn read<T: Any + Send + Sync>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.values
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_ref())
    }
    pub fn read_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.values
            .iter_mut()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_mut())
    }
}

impl fmt::Debug for CycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CycleState")
            .field("values", &self.values.len())
            .finish()
    }
}

/// The Filter plugins that ran this cycle (the profile's, minus those whose PreFilter returned `Skip`);
/// written to the [`CycleState`] by the core before filtering, for plugins that re-run the filters on a
/// changed node (preemption).
#[derive(Clone, Default)]
pub struct CycleFilters(pub Vec<Arc<dyn FilterPlugin>>);

/// A cluster change that can make an unschedulable pod schedulable (what moves pods out of the
/// unschedulable queue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    NodeAdd,
    NodeUpdate,
    AssignedPodAdd,
    AssignedPodUpdate,
    AssignedPodDelete,
}

impl ClusterEvent {
    pub const ALL: &'static [ClusterEvent] = &[
        ClusterEvent::NodeAdd,
        ClusterEvent::NodeUpdate,
        ClusterEvent::AssignedPodAdd,
        ClusterEvent::AssignedPodUpdate,
        ClusterEvent::AssignedPodDelete,
    ];
}

/// What every plugin has: a name (used in profiles, statuses and logs).
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// The cluster events after which a pod this plugin rejected may fit. Pods rejected only by plugins
    /// that don't list an event stay in the unschedulable queue when it happens (until the periodic flush).
    fn events_to_register(&self) -> &'static [ClusterEvent] {
        ClusterEvent::ALL
    }
}

/// A PreFilter may narrow the candidate nodes to a set of names (e.g. NodeName); `None` means all nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreFilterResult {
    pub node_names: Option<HashSet<String>>,
}

/// Runs once per cycle before filtering.
pub trait PreFilterPlugin: Plugin {
    /// Computes per-pod data for Filter into `state` and may restrict the candidate nodes.
    ///
    /// Contract: return `Skip` when the plugin has nothing to check for this pod (its Filter is then not
    /// called); `Unschedulable*` rejects the pod on every node (the reason is reported once, not per node);
    /// `Error` aborts the cycle.
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, snapshot: &Snapshot)
    -> (PreFilterResult, Status);
}

/// Decides whether the pod can run on one node.
pub trait FilterPlugin: Plugin {
    /// Contract: pure and cheap; called for many nodes per pod, possibly in any order, with the `state`
    /// its PreFilter wrote. Return `Success`, or `Unschedulable`/`UnschedulableAndUnresolvable` with
    /// kube's reason text (it is counted per node in the FailedScheduling message).
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

/// What a PostFilter plugin proposes when it can make room: nominate a node for the pod once `victims`
/// (lower-priority pods on it) are gone. The I/O shell deletes the victims and sets
/// `status.nominatedNodeName`; the pod itself is retried when the deletions are observed.
#[derive(Clone, Debug, Default)]
pub struct PostFilterResult {
    pub nominated_node: Option<String>,
    pub victims: Vec<Arc<Pod>>,
}

/// Runs only when no node passed the filters (kube's preemption lives here).
pub trait PostFilterPlugin: Plugin {
    /// Contract: pure, like a filter; `statuses` holds every node's rejecting status. `Success` with a
    /// nominated node ends the PostFilter phase; a rejection's reasons are appended to the FailedScheduling
    /// message (kube's DefaultPreemption prefixes them with `preemption: `).
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
        statuses: &HashMap<String, Status>,
    ) -> (PostFilterResult, Status);
}

/// Runs once per cycle before scoring, with the feasible nodes.
pub trait PreScorePlugin: Plugin {
    /// Contract: compute what Score needs into `state`. Return `Skip` when the plugin would give every node
    /// the same score for this pod; its Score is then not called (a speed-up, not a semantic change).
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        snapshot: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status;
}

/// One node's score from one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScore {
    pub name: Arc<str>,
    pub score: i64,
}

/// Ranks feasible nodes.
pub trait ScorePlugin: Plugin {
    /// Contract: a score for `node` (higher is better). After [`normalize_score`](Self::normalize_score)
    /// every score must lie in `0..=MAX_NODE_SCORE`; the framework multiplies it by the plugin's weight.
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<i64, Status>;

    /// NormalizeScore: rescales the raw scores of all feasible nodes into `0..=MAX_NODE_SCORE` (e.g.
    /// relative to the maximum). The default leaves scores as they are, for plugins that already score in
    /// that range.
    fn normalize_score(&self, _state: &CycleState, _pod: &Pod, _scores: &mut [NodeScore]) -> Status {
        Status::success()
    }
}

/// Keeps plugin-side state in step with the decision before binding finishes.
pub trait ReservePlugin: Plugin {
    /// Called once the node is chosen and the pod assumed on it. A failure un-reserves and fails the cycle.
    fn reserve(&self, state: &mut CycleState, pod: &Pod, node_name: &str) -> Status;
    /// Called when a later step (Reserve of another plugin, Permit, Bind) fails. Contract: must be
    /// idempotent and must tolerate being called without a matching successful `reserve`.
    fn unreserve(&self, state: &mut CycleState, pod: &Pod, node_name: &str);
}

/// The last gate before binding.
pub trait PermitPlugin: Plugin {
    /// Contract: `Success` allows binding; `Unschedulable*`/`Error` rejects it (the pod is un-reserved
    /// and retried). Waiting ("gang" permits) is not supported by this scheduler.
    fn permit(&self, state: &CycleState, pod: &Pod, node_name: &str) -> Status;
}

/// Writes the decision to the API server.
#[async_trait::async_trait]
pub trait BindPlugin: Plugin {
    /// Contract: bind `pod` to `node_name` or return `Skip` to let the next bind plugin do it. Called outside
    /// the scheduling loop, concurrently for different pods.
    async fn bind(&self, pod: &Pod, node_name: &str) -> Status;
}

/// A score plugin with its weight in the final sum.
#[derive(Clone)]
pub struct WeightedScore {
    pub plugin: Arc<dyn ScorePlugin>,
    pub weight: i64,
}

/// A named scheduler configuration: which plugins run at each extension point, in order, and score
/// weights. Pods choose a profile with `spec.schedulerName`.
#[derive(Clone, Default)]
pub struct Profile {
    pub scheduler_name: String,
    pub pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    pub filter: Vec<Arc<dyn FilterPlugin>>,
    pub post_filter: Vec<Arc<dyn PostFilterPlugin>>,
    pub pre_score: Vec<Arc<dyn PreScorePlugin>>,
    pub score: Vec<WeightedScore>,
    pub reserve: Vec<Arc<dyn ReservePlugin>>,
    pub permit: Vec<Arc<dyn PermitPlugin>>,
    pub bind: Vec<Arc<dyn BindPlugin>>,
    /// kube's `percentageOfNodesToScore`: 0 means adaptive (50% minus 1% per 125 nodes, at least 5%).
    pub percentage_of_nodes_to_score: u32,
}

impl Profile {
    /// An empty profile; add plugins with the builder methods.
    pub fn new(scheduler_name: impl Into<String>) -> Profile {
        Profile {
            scheduler_name: scheduler_name.into(),
            ..Profile::default()
        }
    }
    pub fn with_pre_filter(mut self, p: Arc<dyn PreFilterPlugin>) -> Profile {
        self.pre_filter.push(p);
        self
    }
    pub fn with_filter(mut self, p: Arc<dyn FilterPlugin>) -> Profile {
        self.filter.push(p);
        self
    }
    pub fn with_post_filter(mut self, p: Arc<dyn PostFilterPlugin>) -> Profile {
        self.post_filter.push(p);
        self
    }
    pub fn with_pre_score(mut self, p: Arc<dyn PreScorePlugin>) -> Profile {
        self.pre_score.push(p);
        self
    }
    pub fn with_score(mut self, p: Arc<dyn ScorePlugin>, weight: i64) -> Profile {
        self.score.push(WeightedScore { plugin: p, weight });
        self
    }
    pub fn with_reserve(mut self, p: Arc<dyn ReservePlugin>) -> Profile {
        self.reserve.push(p);
        self
    }
    pub fn with_permit(mut self, p: Arc<dyn PermitPlugin>) -> Profile {
        self.permit.push(p);
        self
    }
    pub fn with_bind(mut self, p: Arc<dyn BindPlugin>) -> Profile {
        self.bind.push(p);
        self
    }

    /// Whether a pod rejected by `plugins` may fit after `event` (some rejecting plugin registered it).
    /// A pod rejected by no known plugin (e.g. an error) is always retried.
    pub fn event_may_help(&self, plugins: &HashSet<&'static str>, event: ClusterEvent) -> bool {
        if plugins.is_empty() {
            return true;
        }
        let registered =
            |name: &str, events: &[ClusterEvent]| plugins.contains(name) && events.contains(&event);
        self.pre_filter
            .iter()
            .any(|p| registered(p.name(), p.events_to_register()))
            || self
                .filter
                .iter()
                .any(|p| registered(p.name(), p.events_to_register()))
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |v: Vec<&str>| v.join(",");
        f.debug_struct("Profile")
            .field("scheduler_name", &self.scheduler_name)
            .field(
                "pre_filter",
                &names(self.pre_filter.iter().map(|p| p.name()).collect()),
            )
            .field("filter", &names(self.filter.iter().map(|p| p.name()).collect()))
            .field(
                "score",
                &names(self.score.iter().map(|p| p.plugin.name()).collect()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_state_is_typed() {
        struct A(u32);
        struct B(&'static str);
        let mut s = CycleState::new();
        s.write(A(1));
        s.write(B("x"));
        s.write(A(2));
        assert_eq!(s.read::<A>().map(|a| a.0), Some(2));
        assert_eq!(s.read::<B>().map(|b| b.0), Some("x"));
        assert!(s.read::<u8>().is_none());
    }

    #[test]
    fn status_classifies_codes() {
        assert!(Status::unschedulable("x").is_rejected());
        assert!(Status::unresolvable("x").is_rejected());
        assert!(!Status::error("x").is_rejected());
        assert!(Status::success().is_success());
        assert_eq!(Status::new(Code::Error, "boom").to_string(), "boom");
    }
}
