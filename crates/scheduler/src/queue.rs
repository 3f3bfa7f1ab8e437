//! The scheduling queue: which pending pod is tried next. Every pod the queue knows is in exactly one
//! [`PodLocation`]; the transitions are the methods below (an explicit state machine, as kube-scheduler's
//! `PriorityQueue`):
//!
//! ```text
//!   add ──► Active ──pop──► InFlight ──done──► (gone)
//!             ▲               │  │
//!             │  flush/event  │  └─requeue_backoff (error)──► Backoff ──expiry (flush)──► Active
//!             └── Unschedulable ◄─requeue_unschedulable (no node fits)
//! ```
//! Active is ordered by priority, then FIFO. Backoff lasts 1 s after the first failed attempt, doubling to
//! 10 s. Unschedulable pods move on when a cluster event that could help them happens (a node added or
//! changed, an assigned pod deleted …) — to Backoff if their backoff has not expired, else Active — and at the
//! latest after five minutes. Time is passed in, so the machine is pure and testable.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

use crate::framework::ClusterEvent;
use crate::snapshot::pod_key;

/// Queue timings (kube-scheduler's defaults).
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Unschedulable pods are retried after this long even without a cluster event.
    pub max_unschedulable_duration: Duration,
    /// How often the unschedulable pods are checked against `max_unschedulable_duration`.
    pub unschedulable_flush_interval: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable_duration: Duration::from_secs(300),
            unschedulable_flush_interval: Duration::from_secs(30),
        }
    }
}

/// Where a pod is in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodLocation {
    Active,
    Backoff {
        until: Instant,
    },
    Unschedulable {
        since: Instant,
    },
    /// Popped, being scheduled or bound.
    InFlight,
}

/// A pod handed out by [`SchedulingQueue::pop`].
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub key: String,
    /// Scheduling attempts so far, including the current one.
    pub attempts: u32,
    /// Plugins that rejected the pod in its last failed attempt.
    pub unschedulable_plugins: HashSet<&'static str>,
}

#[derive(Debug)]
struct Entry {
    qp: QueuedPod,
    location: PodLocation,
    priority: i32,
    /// Bumped whenever the pod enters a heap, so stale heap items can be recognised and skipped.
    generation: u64,
    last_failure: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    key: String,
    generation: u64,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct SchedulingQueue {
    config: QueueConfig,
    entries: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Keys of the pods in Unschedulable, so cluster events cost O(unschedulable), not O(queued).
    unschedulable: HashSet<String>,
    seq: u64,
    last_unschedulable_flush: Option<Instant>,
}

fn priority_of(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl SchedulingQueue {
    pub fn new(config: QueueConfig) -> SchedulingQueue {
        SchedulingQueue {
            config,
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            seq: 0,
            last_unschedulable_flush: None,
        }
    }

    pub fn location(&self, key: &str) -> Option<PodLocation> {
        self.entries.get(key).map(|e| e.location)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys of every pod the queue holds, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// Pods waiting in Active.
    pub fn active_len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.location == PodLocation::Active)
            .count()
    }

    fn push_active(&mut self, key: &str) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        self.seq += 1;
        e.generation += 1;
        e.location = PodLocation::Active;
        self.unschedulable.remove(key);
        self.active.push(ActiveItem {
            priority: e.priority,
            seq: self.seq,
            key: key.to_string(),
            generation: e.generation,
        });
    }

    fn push_backoff(&mut self, key: &str, until: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.generation += 1;
        e.location = PodLocation::Backoff { until };
        self.unschedulable.remove(key);
        self.backoff.push(Reverse((until, e.generation, key.to_string())));
    }

    /// The backoff after `attempts` failed attempts: initial × 2^(attempts−1), capped.
    pub fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.config.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d >= self.config.max_backoff {
                return self.config.max_backoff;
            }
        }
        d.min(self.config.max_backoff)
    }

    /// A new pending pod (or an update to one already queued, see [`update`](Self::update)).
    pub fn add(&mut self, pod: Pod, now: Instant) {
        let key = pod_key(&pod);
        if self.entries.contains_key(&key) {
            self.update(pod, now);
            return;
        }
        let entry = Entry {
            priority: priority_of(&pod),
            qp: QueuedPod {
                pod: Arc::new(pod),
                key: key.clone(),
                attempts: 0,
                unschedulable_plugins: HashSet::new(),
            },
            location: PodLocation::Active,
            generation: 0,
            last_failure: None,
        };
        self.entries.insert(key.clone(), entry);
        self.push_active(&key);
    }

    /// A queued pod changed. The new object replaces the old; an unschedulable pod whose spec or labels
    /// changed may fit now, so it is moved on (the scheduler's own status writes don't count).
    pub fn update(&mut self, pod: Pod, now: Instant) {
        let key = pod_key(&pod);
        let Some(e) = self.entries.get_mut(&key) else {
            self.add(pod, now);
            return;
        };
        let relevant = e.qp.pod.spec != pod.spec || e.qp.pod.metadata.labels != pod.metadata.labels;
        e.priority = priority_of(&pod);
        e.qp.pod = Arc::new(pod);
        if relevant && matches!(e.location, PodLocation::Unschedulable { .. }) {
            self.move_on(&key, now);
        }
    }

    /// The pod was deleted or got bound by someone else.
    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
        self.unschedulable.remove(key);
    }

    /// The next pod to schedule (highest priority, then oldest), now InFlight.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        while let Some(item) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&item.key) else {
                continue;
            };
            if e.location != PodLocation::Active || e.generation != item.generation {
                continue;
            }
            e.location = PodLocation::InFlight;
            e.qp.attempts += 1;
            return Some(e.qp.clone());
        }
        None
    }

    /// The in-flight pod was bound: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        if self.location(key) == Some(PodLocation::InFlight) {
            self.entries.remove(key);
        }
    }

    /// No node fitted the in-flight pod: park it until a cluster event that `plugins` care about.
    pub fn requeue_unschedulable(&mut self, key: &str, plugins: HashSet<&'static str>, now: Instant) {
        let Some(e) = self
            .entries
            .get_mut(key)
            .filter(|e| e.location == PodLocation::InFlight)
        else {
            return;
        };
        e.qp.unschedulable_plugins = plugins;
        e.last_failure = Some(now);
        e.generation += 1;
        e.location = PodLocation::Unschedulable { since: now };
        self.unschedulable.insert(key.to_string());
    }

    /// The in-flight pod failed for another reason (plugin error, binding failure): retry after backoff.
    pub fn requeue_backoff(&mut self, key: &str, now: Instant) {
        let Some(e) = self
            .entries
            .get_mut(key)
            .filter(|e| e.location == PodLocation::InFlight)
        else {
            return;
        };
        e.last_failure = Some(now);
        let attempts = e.qp.attempts;
        let until = now + self.backoff_duration(attempts);
        self.push_backoff(key, until);
    }

    /// Moves an unschedulable pod to Backoff (still backing off) or Active.
    fn move_on(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get(key) else { return };
        let until = e.last_failure.map(|t| t + self.backoff_duration(e.qp.attempts));
        match until {
            Some(until) if until > now => self.push_backoff(key, until),
            _ => self.push_active(key),
        }
    }

    /// A cluster event happened: every unschedulable pod for which `may_help` says it could matter moves on.
    /// Returns how many moved.
    pub fn on_cluster_event(
        &mut self,
        event: ClusterEvent,
        now: Instant,
        may_help: impl Fn(&HashSet<&'static str>, ClusterEvent) -> bool,
    ) -> usize {
        let keys: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.entries
                    .get(*k)
                    .is_some_and(|e| may_help(&e.qp.unschedulable_plugins, event))
            })
            .cloned()
            .collect();
        for k in &keys {
            self.move_on(k, now);
        }
        keys.len()
    }

    /// Time-driven transitions: expired backoffs → Active; pods unschedulable for longer than
    /// `max_unschedulable_duration` move on (checked every `unschedulable_flush_interval`).
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((until, generation, key))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            let current = self.entries.get(&key).is_some_and(|e| {
                e.generation == generation && matches!(e.location, PodLocation::Backoff { .. })
            });
            if current {
                self.push_active(&key);
            }
        }
        let due = self
            .last_unschedulable_flush
            .is_none_or(|t| now >= t + self.config.unschedulable_flush_interval);
        if due {
            self.last_unschedulable_flush = Some(now);
            let max = self.config.max_unschedulable_duration;
            let stale: Vec<String> = self
                .unschedulable
                .iter()
                .filter(|k| {
                    self.entries.get(*k).is_some_and(
                        |e| matches!(e.location, PodLocation::Unschedulable { since } if now >= since + max),
                    )
                })
                .cloned()
                .collect();
            for k in stale {
                self.move_on(&k, now);
            }
        }
    }

    /// When [`flush`](Self::flush) next has something to do, if anything is waiting on time.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.peek().map(|Reverse((t, _, _))| *t);
        let unschedulable = (!self.unschedulable.is_empty())
            .then(|| {
                self.last_unschedulable_flush
                    .map(|t| t + self.config.unschedulable_flush_interval)
            })
            .flatten();
        match (backoff, unschedulable) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(QueueConfig::default())
    }

    fn with_priority(mut p: Pod, prio: i32) -> Pod {
        p.spec.as_mut().unwrap().priority = Some(prio);
        p
    }

    #[test]
    fn active_is_priority_then_fifo() {
        let now = Instant::now();
        let mut q = q();
        q.add(pod("a"), now);
        q.add(with_priority(pod("b"), 10), now);
        q.add(pod("c"), now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|p| p.key)).collect();
        assert_eq!(order, vec!["default/b", "default/a", "default/c"]);
        assert_eq!(q.location("default/a"), Some(PodLocation::InFlight));
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let q = q();
        let secs: Vec<u64> = (1..=6).map(|a| q.backoff_duration(a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn failed_pod_waits_out_its_backoff() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a"), t0);
        let p = q.pop().unwrap();
        q.requeue_backoff(&p.key, t0);
        assert_eq!(
            q.location(&p.key),
            Some(PodLocation::Backoff {
                until: t0 + Duration::from_secs(1)
            })
        );
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        q.flush(t0 + Duration::from_millis(999));
        assert!(q.pop().is_none());
        q.flush(t0 + Duration::from_secs(1));
        let p = q.pop().unwrap();
        assert_eq!(p.attempts, 2);
        q.requeue_backoff(&p.key, t0 + Duration::from_secs(1));
        assert_eq!(
            q.location(&p.key),
            Some(PodLocation::Backoff {
                until: t0 + Duration::from_secs(3)
            }),
            "second failure: 2 s"
        );
    }

    #[test]
    fn unschedulable_pod_moves_on_a_helpful_event_only() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a"), t0);
        let p = q.pop().unwrap();
        q.requeue_unschedulable(&p.key, HashSet::from(["NodeResourcesFit"]), t0);
        let helps = |plugins: &HashSet<&'static str>, e: ClusterEvent| {
            plugins.contains("NodeResourcesFit") && e == ClusterEvent::NodeAdd
        };
        assert_eq!(q.on_cluster_event(ClusterEvent::AssignedPodAdd, t0, helps), 0);
        assert!(matches!(
            q.location(&p.key),
            Some(PodLocation::Unschedulable { .. })
        ));
        // Within its backoff window the pod goes to Backoff, after it straight to Active.
        assert_eq!(
            q.on_cluster_event(ClusterEvent::NodeAdd, t0 + Duration::from_millis(500), helps),
            1
        );
        assert!(matches!(q.location(&p.key), Some(PodLocation::Backoff { .. })));
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(q.pop().map(|p| p.key), Some("default/a".into()));
    }

    #[test]
    fn deleted_unschedulable_pod_is_not_moved_by_events() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a"), t0);
        let p = q.pop().unwrap();
        q.requeue_unschedulable(&p.key, HashSet::new(), t0);
        q.delete(&p.key);
        assert_eq!(q.on_cluster_event(ClusterEvent::NodeAdd, t0, |_, _| true), 0);
        assert!(q.pop().is_none());
        assert_eq!(q.next_wakeup(), None);
    }

    #[test]
    fn unschedulable_pods_are_flushed_after_five_minutes() {
        let t0 = Instant::now();
        let mut q = q();
        q.flush(t0);
        q.add(pod("a"), t0);
        let p = q.pop().unwrap();
        q.requeue_unschedulable(&p.key, HashSet::new(), t0);
        q.flush(t0 + Duration::from_secs(299));
        assert!(q.pop().is_none());
        q.flush(t0 + Duration::from_secs(301));
        assert!(q.pop().is_none(), "checked only every 30 s");
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(329)));
        q.flush(t0 + Duration::from_secs(329));
        assert!(q.pop().is_some());
    }

    #[test]
    fn deleted_and_bound_pods_leave_the_queue() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a"), t0);
        q.add(pod("b"), t0);
        q.delete("default/a");
        let p = q.pop().unwrap();
        assert_eq!(p.key, "default/b");
        q.done(&p.key);
        assert!(q.is_empty());
        assert!(q.pop().is_none());
        // A pod deleted while in flight is not resurrected by a requeue.
        q.add(pod("c"), t0);
        let p = q.pop().unwrap();
        q.delete(&p.key);
        q.requeue_backoff(&p.key, t0);
        assert!(q.is_empty());
    }

    #[test]
    fn spec_update_reactivates_but_status_update_does_not() {
        let t0 = Instant::now();
        let mut q = q();
        q.add(pod("a"), t0);
        let p = q.pop().unwrap();
        q.requeue_unschedulable(&p.key, HashSet::new(), t0);
        let mut status_only = (*p.pod).clone();
        status_only.status = Some(Default::default());
        q.update(status_only, t0 + Duration::from_secs(5));
        assert!(matches!(
            q.location(&p.key),
            Some(PodLocation::Unschedulable { .. })
        ));
        let relabeled = pod_labels((*p.pod).clone(), &[("x", "y")]);
        q.update(relabeled, t0 + Duration::from_secs(5));
        assert_eq!(q.location(&p.key), Some(PodLocation::Active));
    }
}
