//! The Deployment controller's pure step (Kubernetes' `syncDeployment`): from a Deployment, the ReplicaSets
//! and pods of its namespace and the time, plan the writes — adopt/release ReplicaSets, create the new one,
//! scale new and old ones for RollingUpdate or Recreate, re-adopt an old one on rollback, clean up history —
//! and the Deployment's new revision annotation and status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::util::{self, POD_TEMPLATE_HASH, REVISION};
use crate::claim::{self, Claim, Owner};
use crate::events::Event;
use crate::pod;

/// Progressing condition reasons (Kubernetes' `deploymentutil`).
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
/// Available condition reasons.
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;

/// A ReplicaSet named by the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsRef {
    pub name: String,
    pub uid: String,
}

/// One write, in the order the shell must perform them.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    AdoptReplicaSet(RsRef),
    ReleaseReplicaSet(RsRef),
    CreateReplicaSet(Box<ReplicaSet>),
    /// Replace the ReplicaSet (scale, annotations, minReadySeconds); carries the cached resourceVersion.
    UpdateReplicaSet(Box<ReplicaSet>),
    DeleteReplicaSet(RsRef),
    /// Set the Deployment's annotations (its revision).
    UpdateAnnotations(BTreeMap<String, String>),
    UpdateStatus(Box<DeploymentStatus>),
    /// Record an event about the Deployment once the writes before it succeeded.
    Record(Event),
}

impl Action {
    /// A short label for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::AdoptReplicaSet(_) => "AdoptReplicaSet",
            Action::ReleaseReplicaSet(_) => "ReleaseReplicaSet",
            Action::CreateReplicaSet(_) => "CreateReplicaSet",
            Action::UpdateReplicaSet(_) => "UpdateReplicaSet",
            Action::DeleteReplicaSet(_) => "DeleteReplicaSet",
            Action::UpdateAnnotations(_) => "UpdateAnnotations",
            Action::UpdateStatus(_) => "UpdateStatus",
            Action::Record(_) => "Record",
        }
    }
}

/// What one sync of a Deployment should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Sync again after this long (to notice a passed progress deadline).
    pub requeue_after: Option<Duration>,
}

/// Plan one sync. `replica_sets` and `pods` are everything in the Deployment's namespace (from the informers).
pub fn plan(d: &Deployment, replica_sets: &[&ReplicaSet], pods: &[&Pod], now: Timestamp) -> Plan {
    let mut sync = Sync::new(d, replica_sets, pods, now);
    sync.run();
    sync.finish()
}

struct Sync<'a> {
    original: &'a Deployment,
    /// Working copy: annotations and status as this sync changes them.
    d: Deployment,
    /// The ReplicaSets this Deployment owns, as this sync changes them.
    rss: Vec<ReplicaSet>,
    all_rs: &'a [&'a ReplicaSet],
    pods: &'a [&'a Pod],
    now: Timestamp,
    actions: Vec<Action>,
    requeue_after: Option<Duration>,
}

/// The new ReplicaSet's name is taken by another template: the collision count was raised, try again.
struct Collision;

impl<'a> Sync<'a> {
    fn new(d: &'a Deployment, all_rs: &'a [&'a ReplicaSet], pods: &'a [&'a Pod], now: Timestamp) -> Self {
        let mut working = d.clone();
        working.status.get_or_insert_with(Default::default);
        Sync {
            original: d,
            d: working,
            rss: Vec::new(),
            all_rs,
            pods,
            now,
            actions: Vec::new(),
            requeue_after: None,
        }
    }

    fn status(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_with(Default::default)
    }

    fn spec_replicas(&self) -> i32 {
        util::replicas(&self.d)
    }

    fn name(&self) -> &str {
        self.d.metadata.name.as_deref().unwrap_or("")
    }

    fn run(&mut self) {
        let spec = self.d.spec.clone().unwrap_or_default();
        let selects_all = spec.selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && spec
                .selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty());
        if selects_all {
            self.record(Event::warning(
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            ));
            let generation = self.d.metadata.generation;
            let status = self.status();
            if status.observed_generation < generation {
                status.observed_generation = generation;
            }
            return;
        }
        self.claim_replica_sets();
        if self.d.metadata.deletion_timestamp.is_some() {
            let new = self.find_new();
            self.sync_status(new);
            return;
        }
        self.check_paused_conditions();
        let paused = spec.paused == Some(true);
        if paused || self.is_scaling_event() {
            self.sync_scale(paused);
            return;
        }
        let result = if util::is_recreate(&self.d) {
            self.rollout_recreate()
        } else {
            self.rollout_rolling()
        };
        if result.is_err() {
            // Retry right away with the raised collision count.
            self.requeue_after = Some(Duration::ZERO);
        }
    }

    fn finish(mut self) -> Plan {
        if self.d.metadata.annotations != self.original.metadata.annotations {
            let annotations = self.d.metadata.annotations.clone().unwrap_or_default();
            self.actions.insert(0, Action::UpdateAnnotations(annotations));
        }
        let status = self.d.status.take().unwrap_or_default();
        if Some(&status) != self.original.status.as_ref() {
            self.actions.push(Action::UpdateStatus(Box::new(status)));
        }
        Plan {
            actions: self.actions,
            requeue_after: self.requeue_after,
        }
    }

    fn record(&mut self, event: Event) {
        self.actions.push(Action::Record(event));
    }

    fn owner(&self) -> Owner<'_> {
        Owner {
            api_version: "apps/v1",
            kind: "Deployment",
            name: self.d.metadata.name.as_deref().unwrap_or(""),
            uid: self.d.metadata.uid.as_deref().unwrap_or(""),
            deleting: self.d.metadata.deletion_timestamp.is_some(),
        }
    }

    fn claim_replica_sets(&mut self) {
        let selector = claim::Matcher::new(self.d.spec.as_ref().map(|s| &s.selector));
        let mut adopted = Vec::new();
        for &rs in self.all_rs {
            let r = RsRef {
                name: rs.metadata.name.clone().unwrap_or_default(),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
            };
            match claim::claim_with(&self.owner(), &selector, &rs.metadata) {
                Claim::Owned => self.rss.push(rs.clone()),
                Claim::Adopt => {
                    let mut rs = rs.clone();
                    rs.metadata
                        .owner_references
                        .get_or_insert_with(Vec::new)
                        .push(self.owner().controller_ref());
                    self.rss.push(rs);
                    adopted.push(Action::AdoptReplicaSet(r));
                }
                Claim::Release => adopted.push(Action::ReleaseReplicaSet(r)),
                Claim::Ignore => {}
            }
        }
        self.actions.extend(adopted);
    }

    /// The ReplicaSet whose template is the Deployment's (the oldest if several).
    fn find_new(&self) -> Option<usize> {
        let template = self.d.spec.as_ref()?.template.clone();
        let mut order: Vec<usize> = (0..self.rss.len()).collect();
        order.sort_by(|&a, &b| util::by_creation(&self.rss[a], &self.rss[b]));
        order.into_iter().find(|&i| {
            self.rss[i]
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| util::equal_ignore_hash(t, &template))
        })
    }

    fn olds(&self, new: Option<usize>) -> Vec<usize> {
        (0..self.rss.len()).filter(|&i| Some(i) != new).collect()
    }

    fn active(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .copied()
            .filter(|&i| util::rs_replicas(&self.rss[i]) > 0)
            .collect()
    }

    fn sum(&self, idx: &[usize], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
        idx.iter().map(|&i| f(&self.rss[i])).sum()
    }

    fn has_progress_deadline(&self) -> bool {
        self.progress_deadline().is_some()
    }

    fn progress_deadline(&self) -> Option<i32> {
        let seconds = self
            .d
            .spec
            .as_ref()?
            .progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
        (seconds != i32::MAX).then_some(seconds)
    }

    fn set_deployment_revision(&mut self, revision: &str) {
        let annotations = self.d.metadata.annotations.get_or_insert_with(BTreeMap::new);
        if annotations.get(REVISION).map(String::as_str) != Some(revision) {
            annotations.insert(REVISION.into(), revision.into());
        }
    }

    /// Kubernetes' `getAllReplicaSetsAndSyncRevision`: find (or, with `create`, make) the new ReplicaSet and bring
    /// its revision to one above every old one — which is what gives a rolled-back ReplicaSet revision max+1.
    fn sync_revision(&mut self, create: bool) -> Result<Option<usize>, Collision> {
        let new = self.find_new();
        let max_old = self
            .olds(new)
            .iter()
            .map(|&i| util::revision(&self.rss[i]))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(i) = new {
            let mut copy = self.rss[i].clone();
            let annotations_changed =
                util::set_new_replica_set_annotations(&self.d, &mut copy, new_revision, true);
            let min_ready = self
                .d
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0);
            let spec = copy.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready;
            spec.min_ready_seconds = Some(min_ready);
            if annotations_changed || min_ready_changed {
                self.actions
                    .push(Action::UpdateReplicaSet(Box::new(copy.clone())));
                self.rss[i] = copy;
            }
            let revision = util::revision(&self.rss[i]).to_string();
            self.set_deployment_revision(&revision);
            let has_condition = condition(self.status(), "Progressing").is_some();
            if self.has_progress_deadline() && !has_condition {
                let message = format!(
                    "Found new replica set \"{}\"",
                    self.rss[i].metadata.name.as_deref().unwrap_or("")
                );
                let c = new_condition("Progressing", "True", FOUND_NEW_RS, &message, self.now);
                set_condition(self.status(), c);
            }
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }

        let spec = self.d.spec.clone().unwrap_or_default();
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::pod_template_hash(&spec.template, collision_count);
        let name = format!("{}-{}", self.name(), hash);
        if self
            .all_rs
            .iter()
            .any(|rs| rs.metadata.name.as_deref() == Some(name.as_str()))
        {
            // Another template (or someone else's ReplicaSet) has this name: hash again with a higher count.
            let status = self.status();
            status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
            return Err(Collision);
        }
        let mut template = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                labels: meta.labels.clone(),
                owner_references: Some(vec![self.owner().controller_ref()]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(spec.min_ready_seconds.unwrap_or(0)),
                selector,
                template: Some(template),
            }),
            status: Some(ReplicaSetStatus::default()),
        };
        let olds = self.olds(None);
        let replicas = self.new_rs_new_replicas(&olds, &rs);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(replicas);
        }
        util::set_new_replica_set_annotations(&self.d, &mut rs, new_revision, false);
        self.actions.push(Action::CreateReplicaSet(Box::new(rs.clone())));
        if replicas > 0 {
            self.record(Event::normal(
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            ));
        }
        self.set_deployment_revision(&new_revision.to_string());
        if self.has_progress_deadline() {
            let message = format!("Created new replica set \"{name}\"");
            let c = new_condition("Progressing", "True", NEW_RS_CREATED, &message, self.now);
            set_condition(self.status(), c);
        }
        self.rss.push(rs);
        Ok(Some(self.rss.len() - 1))
    }

    /// How big the new ReplicaSet may be now (Kubernetes' `NewRSNewReplicas`).
    fn new_rs_new_replicas(&self, others: &[usize], new: &ReplicaSet) -> i32 {
        let desired = self.spec_replicas();
        let new_replicas = util::rs_replicas(new);
        if util::is_recreate(&self.d) {
            return desired;
        }
        let current: i32 = self.sum(others, util::rs_replicas) + new_replicas;
        let max_total = desired + util::max_surge(&self.d);
        if current >= max_total {
            return new_replicas;
        }
        new_replicas + (max_total - current).min(desired - new_replicas)
    }

    fn check_paused_conditions(&mut self) {
        if !self.has_progress_deadline() {
            return;
        }
        let reason = condition(self.status(), "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT) {
            return;
        }
        let paused = self.d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let paused_condition = reason.as_deref() == Some(PAUSED);
        let now = self.now;
        if paused && !paused_condition {
            set_condition(
                self.status(),
                new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused", now),
            );
        } else if !paused && paused_condition {
            let c = new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", now);
            set_condition(self.status(), c);
        }
    }

    /// The Deployment was resized (not re-templated): some active ReplicaSet was sized for another replica count.
    fn is_scaling_event(&mut self) -> bool {
        let Ok(new) = self.sync_revision(false) else {
            return false;
        };
        let all: Vec<usize> = (0..self.rss.len()).collect();
        let _ = new;
        let desired = self.spec_replicas();
        self.active(&all)
            .iter()
            .any(|&i| util::desired_replicas_annotation(&self.rss[i]).is_some_and(|n| n != desired))
    }

    /// Kubernetes' `sync`: scale proportionally (or pause), clean up, update status.
    fn sync_scale(&mut self, paused: bool) {
        let Ok(new) = self.sync_revision(false) else {
            return;
        };
        let olds = self.olds(new);
        self.scale(new, &olds);
        if paused {
            self.cleanup(&olds);
        }
        self.sync_status(new);
    }

    fn scale(&mut self, new: Option<usize>, olds: &[usize]) {
        let desired = self.spec_replicas();
        if let Some(target) = self.active_or_latest(new, olds) {
            if util::rs_replicas(&self.rss[target]) != desired {
                self.scale_and_record(target, desired);
            }
            return;
        }
        if let Some(n) = new.filter(|&n| self.is_saturated(n)) {
            let _ = n;
            for i in self.active(olds) {
                self.scale_and_record(i, 0);
            }
            return;
        }
        if util::is_recreate(&self.d) {
            return;
        }
        let mut all: Vec<usize> = olds.iter().copied().chain(new).collect();
        all = self.active(&all);
        let total = self.sum(&all, util::rs_replicas);
        let allowed = if desired > 0 {
            desired + util::max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - total;
        let operation = if to_add > 0 {
            // Larger first; on a tie the newer one gets the extra replicas.
            all.sort_by(|&a, &b| {
                let (ra, rb) = (&self.rss[a], &self.rss[b]);
                util::rs_replicas(rb)
                    .cmp(&util::rs_replicas(ra))
                    .then_with(|| util::by_creation(rb, ra))
            });
            "up"
        } else {
            all.sort_by(|&a, &b| {
                let (ra, rb) = (&self.rss[a], &self.rss[b]);
                util::rs_replicas(rb)
                    .cmp(&util::rs_replicas(ra))
                    .then_with(|| util::by_creation(ra, rb))
            });
            "down"
        };
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(all.len());
        for &i in &all {
            let rs = &self.rss[i];
            let proportion = if to_add != 0 {
                self.proportion(rs, to_add, added)
            } else {
                0
            };
            added += proportion;
            sizes.push(util::rs_replicas(rs) + proportion);
        }
        if to_add != 0 && !sizes.is_empty() {
            // Rounding leftovers go to the largest ReplicaSet.
            sizes[0] = (sizes[0] + to_add - added).max(0);
        }
        for (&i, &size) in all.iter().zip(&sizes) {
            self.scale_rs(i, size, operation);
        }
    }

    /// Kubernetes' `GetProportion`: this ReplicaSet's share of `to_add`, never past what is left to add.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        let replicas = util::rs_replicas(rs);
        if replicas == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let desired = self.spec_replicas();
        let fraction = if desired == 0 {
            -replicas
        } else {
            let deployment_replicas = desired + util::max_surge(&self.d);
            let annotated = util::max_replicas_annotation(rs).unwrap_or_else(|| {
                self.d
                    .status
                    .as_ref()
                    .map(|s| s.replicas.unwrap_or(0))
                    .unwrap_or(0)
            });
            if annotated == 0 {
                0
            } else {
                let size = f64::from(replicas) * f64::from(deployment_replicas) / f64::from(annotated);
                size.round() as i32 - replicas
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    fn active_or_latest(&self, new: Option<usize>, olds: &[usize]) -> Option<usize> {
        let mut olds = olds.to_vec();
        olds.sort_by(|&a, &b| util::by_creation(&self.rss[b], &self.rss[a]));
        let all: Vec<usize> = olds.iter().copied().chain(new).collect();
        let active = self.active(&all);
        match active.len() {
            0 => new.or(olds.first().copied()),
            1 => Some(active[0]),
            _ => None,
        }
    }

    fn is_saturated(&self, i: usize) -> bool {
        let rs = &self.rss[i];
        let desired = self.spec_replicas();
        util::rs_replicas(rs) == desired
            && util::desired_replicas_annotation(rs) == Some(desired)
            && available(rs) == desired
    }

    fn scale_and_record(&mut self, i: usize, size: i32) -> bool {
        let current = util::rs_replicas(&self.rss[i]);
        if current == size {
            return false;
        }
        self.scale_rs(i, size, if current < size { "up" } else { "down" });
        true
    }

    /// Set a ReplicaSet's size and replica annotations (Kubernetes' `scaleReplicaSet`).
    fn scale_rs(&mut self, i: usize, size: i32, operation: &str) {
        let desired = self.spec_replicas();
        let max = desired + util::max_surge(&self.d);
        let rs = &self.rss[i];
        let current = util::rs_replicas(rs);
        if current == size && !util::replicas_annotations_need_update(rs, desired, max) {
            return;
        }
        let mut copy = rs.clone();
        copy.spec.get_or_insert_with(Default::default).replicas = Some(size);
        util::set_replicas_annotations(&mut copy, desired, max);
        let name = copy.metadata.name.clone().unwrap_or_default();
        self.actions
            .push(Action::UpdateReplicaSet(Box::new(copy.clone())));
        self.rss[i] = copy;
        if current != size {
            self.record(Event::normal(
                "ScalingReplicaSet",
                format!("Scaled {operation} replica set {name} from {current} to {size}"),
            ));
        }
    }

    fn rollout_rolling(&mut self) -> Result<(), Collision> {
        let new = self.sync_revision(true)?.expect("created when missing");
        let olds = self.olds(Some(new));
        if self.reconcile_new(new) {
            self.sync_rollout_status(Some(new));
            return Ok(());
        }
        if self.reconcile_olds(new, &olds) {
            self.sync_rollout_status(Some(new));
            return Ok(());
        }
        let current = self.d.status.clone().unwrap_or_default();
        if self.deployment_complete(&current) {
            self.cleanup(&olds);
        }
        self.sync_rollout_status(Some(new));
        Ok(())
    }

    fn reconcile_new(&mut self, new: usize) -> bool {
        let desired = self.spec_replicas();
        let current = util::rs_replicas(&self.rss[new]);
        if current == desired {
            return false;
        }
        if current > desired {
            return self.scale_and_record(new, desired);
        }
        let others = self.olds(Some(new));
        let size = self.new_rs_new_replicas(&others, &self.rss[new].clone());
        self.scale_and_record(new, size)
    }

    /// Scale old ReplicaSets down as far as availability allows (Kubernetes' `reconcileOldReplicaSets`).
    fn reconcile_olds(&mut self, new: usize, olds: &[usize]) -> bool {
        let old_count = self.sum(olds, util::rs_replicas);
        if old_count == 0 {
            return false;
        }
        let all: Vec<usize> = olds.iter().copied().chain([new]).collect();
        let all_count = self.sum(&all, util::rs_replicas);
        let min_available = self.spec_replicas() - util::max_unavailable(&self.d);
        let new_rs = &self.rss[new];
        let new_unavailable = util::rs_replicas(new_rs) - available(new_rs);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let mut active_olds = self.active(olds);
        active_olds.sort_by(|&a, &b| util::by_creation(&self.rss[a], &self.rss[b]));
        let cleaned = self.cleanup_unhealthy(&active_olds, max_scaled_down);
        let scaled = self.scale_down_olds(&all, &active_olds);
        cleaned + scaled > 0
    }

    /// Old replicas that are not available cost no availability: remove them first.
    fn cleanup_unhealthy(&mut self, olds: &[usize], max_cleanup: i32) -> i32 {
        let mut total = 0;
        for &i in olds {
            if total >= max_cleanup {
                break;
            }
            let replicas = util::rs_replicas(&self.rss[i]);
            let available = available(&self.rss[i]);
            if replicas == 0 || replicas == available {
                continue;
            }
            let down = (max_cleanup - total).min(replicas - available);
            self.scale_and_record(i, replicas - down);
            total += down;
        }
        total
    }

    fn scale_down_olds(&mut self, all: &[usize], olds: &[usize]) -> i32 {
        let min_available = self.spec_replicas() - util::max_unavailable(&self.d);
        let available_count = self.sum(all, available);
        if available_count <= min_available {
            return 0;
        }
        let budget = available_count - min_available;
        let mut total = 0;
        for &i in olds {
            if total >= budget {
                break;
            }
            let replicas = util::rs_replicas(&self.rss[i]);
            if replicas == 0 {
                continue;
            }
            let down = replicas.min(budget - total);
            self.scale_and_record(i, replicas - down);
            total += down;
        }
        total
    }

    fn rollout_recreate(&mut self) -> Result<(), Collision> {
        let mut new = self.sync_revision(false)?;
        let olds = self.olds(new);
        let mut scaled_down = false;
        for i in self.active(&olds) {
            scaled_down |= self.scale_and_record(i, 0);
        }
        if scaled_down || self.old_pods_running(new, &olds) {
            self.sync_rollout_status(new);
            return Ok(());
        }
        if new.is_none() {
            new = self.sync_revision(true)?;
        }
        let new_idx = new.expect("created when missing");
        let desired = self.spec_replicas();
        self.scale_and_record(new_idx, desired);
        let current = self.d.status.clone().unwrap_or_default();
        if self.deployment_complete(&current) {
            let olds = self.olds(new);
            self.cleanup(&olds);
        }
        self.sync_rollout_status(new);
        Ok(())
    }

    /// Recreate waits until no pod of an old ReplicaSet is left running.
    fn old_pods_running(&self, new: Option<usize>, olds: &[usize]) -> bool {
        if self.sum(olds, |rs| rs.status.as_ref().map_or(0, |s| s.replicas)) > 0 {
            return true;
        }
        let new_uid = new.and_then(|n| self.rss[n].metadata.uid.as_deref());
        let old_uids: Vec<&str> = olds
            .iter()
            .filter_map(|&i| self.rss[i].metadata.uid.as_deref())
            .collect();
        self.pods.iter().any(|p| {
            let Some(owner) = claim::controller_of(&p.metadata) else {
                return false;
            };
            Some(owner.uid.as_str()) != new_uid
                && old_uids.contains(&owner.uid.as_str())
                && !matches!(pod::phase(p), "Succeeded" | "Failed")
        })
    }

    /// Delete the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    fn cleanup(&mut self, olds: &[usize]) {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
            .max(0) as usize;
        let mut cleanable: Vec<usize> = olds
            .iter()
            .copied()
            .filter(|&i| self.rss[i].metadata.deletion_timestamp.is_none())
            .collect();
        if cleanable.len() <= limit {
            return;
        }
        let diff = cleanable.len() - limit;
        cleanable.sort_by(|&a, &b| util::by_revision(&self.rss[a], &self.rss[b]));
        for &i in cleanable.iter().take(diff) {
            let rs = &self.rss[i];
            let status = rs.status.clone().unwrap_or_default();
            let observed = status.observed_generation.unwrap_or(0);
            if status.replicas != 0
                || util::rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            self.actions.push(Action::DeleteReplicaSet(RsRef {
                name: rs.metadata.name.clone().unwrap_or_default(),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
            }));
        }
    }

    fn calculate_status(&self, new: Option<usize>) -> DeploymentStatus {
        let all: Vec<usize> = (0..self.rss.len()).collect();
        let available_count = self.sum(&all, available);
        let total = self.sum(&all, util::rs_replicas);
        let current = self.d.status.clone().unwrap_or_default();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(self.sum(&all, |rs| rs.status.as_ref().map_or(0, |s| s.replicas))),
            updated_replicas: Some(new.map_or(0, |n| self.rss[n].status.as_ref().map_or(0, |s| s.replicas))),
            ready_replicas: Some(self.sum(&all, |rs| {
                rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)
            })),
            available_replicas: Some(available_count),
            unavailable_replicas: Some((total - available_count).max(0)),
            collision_count: current.collision_count,
            conditions: current.conditions.clone(),
            terminating_replicas: current.terminating_replicas,
        };
        let min_available = self.spec_replicas() - util::max_unavailable(&self.d);
        let c = if available_count >= min_available {
            new_condition(
                "Available",
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.",
                self.now,
            )
        } else {
            new_condition(
                "Available",
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                self.now,
            )
        };
        set_condition(&mut status, c);
        status
    }

    fn sync_status(&mut self, new: Option<usize>) {
        let status = self.calculate_status(new);
        self.d.status = Some(status);
    }

    fn deployment_complete(&self, status: &DeploymentStatus) -> bool {
        let desired = self.spec_replicas();
        status.updated_replicas.unwrap_or(0) == desired
            && status.replicas.unwrap_or(0) == desired
            && status.available_replicas.unwrap_or(0) == desired
            && status.observed_generation.unwrap_or(0) >= self.d.metadata.generation.unwrap_or(0)
    }

    /// Kubernetes' `syncRolloutStatus`: the status plus the Progressing condition, and a resync when the
    /// progress deadline could pass without any other change.
    fn sync_rollout_status(&mut self, new: Option<usize>) {
        let mut status = self.calculate_status(new);
        let current_status = self.d.status.clone().unwrap_or_default();
        if !self.has_progress_deadline() {
            remove_condition(&mut status, "Progressing");
        }
        let current = condition(&current_status, "Progressing").cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        let new_name = new
            .and_then(|n| self.rss[n].metadata.name.clone())
            .unwrap_or_default();
        if self.has_progress_deadline() && !complete_before {
            if self.deployment_complete(&status) {
                let message = format!("ReplicaSet \"{new_name}\" has successfully progressed.");
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", NEW_RS_AVAILABLE, &message, self.now),
                );
            } else if progressing(&current_status, &status) {
                let message = format!("ReplicaSet \"{new_name}\" is progressing.");
                let mut c = new_condition("Progressing", "True", RS_UPDATED, &message, self.now);
                if let Some(current) = &current {
                    if current.status == "True" {
                        c.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, c);
            } else if self.timed_out(&status) {
                let message = format!("ReplicaSet \"{new_name}\" has timed out progressing.");
                set_condition(
                    &mut status,
                    new_condition("Progressing", "False", TIMED_OUT, &message, self.now),
                );
            }
        }
        match self.replica_failure(new) {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if status == current_status {
            self.requeue_after = self.requeue_stuck(&status);
        }
        self.d.status = Some(status);
    }

    /// A ReplicaSet's `ReplicaFailure` condition as the Deployment's (the new ReplicaSet's first, like Kubernetes'
    /// `getReplicaFailures`).
    fn replica_failure(&self, new: Option<usize>) -> Option<DeploymentCondition> {
        let order = new.into_iter().chain(self.olds(new));
        order.into_iter().find_map(|i| {
            let c = self.rss[i]
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure")?;
            Some(DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
        })
    }

    fn timed_out(&self, status: &DeploymentStatus) -> bool {
        let Some(deadline) = self.progress_deadline() else {
            return false;
        };
        let Some(c) = condition(status, "Progressing") else {
            return false;
        };
        match c.reason.as_deref() {
            Some(NEW_RS_AVAILABLE) => false,
            Some(TIMED_OUT) => true,
            _ => c
                .last_update_time
                .as_ref()
                .is_some_and(|t| t.0 + SignedDuration::from_secs(i64::from(deadline)) < self.now),
        }
    }

    /// When a rollout that is not complete should be looked at again to detect its deadline passing.
    fn requeue_stuck(&self, status: &DeploymentStatus) -> Option<Duration> {
        let deadline = self.progress_deadline()?;
        let c = condition(status, "Progressing")?;
        if self.deployment_complete(status) || c.reason.as_deref() == Some(TIMED_OUT) {
            return None;
        }
        let since = c.last_update_time.as_ref()?.0;
        let due = since + SignedDuration::from_secs(i64::from(deadline));
        let after = Duration::try_from(due.duration_since(self.now)).unwrap_or_default();
        Some(if after < Duration::from_secs(1) {
            Duration::ZERO
        } else {
            after + Duration::from_secs(1)
        })
    }
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// Some replica moved forward: more updated, fewer old, more ready or more available.
fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let v = |x: Option<i32>| x.unwrap_or(0);
    let old_olds = v(old.replicas) - v(old.updated_replicas);
    let new_olds = v(new.replicas) - v(new.updated_replicas);
    v(new.updated_replicas) > v(old.updated_replicas)
        || new_olds < old_olds
        || v(new.ready_replicas) > v(old.ready_replicas)
        || v(new.available_replicas) > v(old.available_replicas)
}

pub fn condition<'s>(status: &'s DeploymentStatus, type_: &str) -> Option<&'s DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Kubernetes' `SetDeploymentCondition`: same status and reason → keep the existing one untouched; same status →
/// keep its transition time.
fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(current) = condition(status, &c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &c.type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::testing::ts;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn deployment(replicas: i32, image: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                template: template(image),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rolling(mut d: Deployment, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(surge),
                max_unavailable: Some(unavailable),
            }),
        });
        d
    }

    /// A tiny cluster: applies plans like the API server would, and plays the ReplicaSet controller with pods
    /// that become available one step after they are created.
    struct Cluster {
        d: Deployment,
        rss: Vec<ReplicaSet>,
        pods: Vec<Pod>,
        clock: i64,
        next_uid: u32,
        events: Vec<String>,
    }

    impl Cluster {
        fn new(d: Deployment) -> Self {
            Cluster {
                d,
                rss: Vec::new(),
                pods: Vec::new(),
                clock: 0,
                next_uid: 0,
                events: Vec::new(),
            }
        }

        fn now(&self) -> Timestamp {
            ts(self.clock)
        }

        fn sync(&mut self) -> Plan {
            let rss: Vec<&ReplicaSet> = self.rss.iter().collect();
            let pods: Vec<&Pod> = self.pods.iter().collect();
            let plan = plan(&self.d, &rss, &pods, self.now());
            for action in plan.actions.clone() {
                self.apply(action);
            }
            plan
        }

        fn apply(&mut self, action: Action) {
            match action {
                Action::AdoptReplicaSet(r) => {
                    let rs = self
                        .rss
                        .iter_mut()
                        .find(|rs| rs.metadata.uid.as_deref() == Some(&r.uid))
                        .unwrap();
                    rs.metadata.owner_references = Some(vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "Deployment".into(),
                        name: "web".into(),
                        uid: "d-uid".into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]);
                }
                Action::ReleaseReplicaSet(r) => {
                    let rs = self
                        .rss
                        .iter_mut()
                        .find(|rs| rs.metadata.uid.as_deref() == Some(&r.uid))
                        .unwrap();
                    rs.metadata.owner_references = None;
                }
                Action::CreateReplicaSet(rs) => {
                    let mut rs = *rs;
                    assert!(
                        !self.rss.iter().any(|o| o.metadata.name == rs.metadata.name),
                        "name taken"
                    );
                    self.next_uid += 1;
                    rs.metadata.uid = Some(format!("rs-{}", self.next_uid));
                    rs.metadata.creation_timestamp = Some(Time(ts(self.clock)));
                    rs.metadata.generation = Some(1);
                    self.rss.push(rs);
                }
                Action::UpdateReplicaSet(rs) => {
                    let slot = self
                        .rss
                        .iter_mut()
                        .find(|o| o.metadata.name == rs.metadata.name)
                        .unwrap();
                    let status = slot.status.clone();
                    *slot = *rs;
                    slot.status = status;
                }
                Action::DeleteReplicaSet(r) => {
                    self.rss.retain(|rs| rs.metadata.uid.as_deref() != Some(&r.uid))
                }
                Action::UpdateAnnotations(a) => self.d.metadata.annotations = Some(a),
                Action::UpdateStatus(s) => self.d.status = Some(*s),
                Action::Record(e) => self.events.push(e.message),
            }
        }

        /// The ReplicaSet controller: pods follow spec.replicas; pods that existed before this step are
        /// available, new ones are not yet.
        fn settle(&mut self) {
            self.clock += 1;
            for rs in &mut self.rss {
                let spec = util::rs_replicas(rs);
                let status = rs.status.get_or_insert_with(Default::default);
                let had = status.replicas;
                status.replicas = spec;
                status.available_replicas = Some(had.min(spec));
                status.ready_replicas = status.available_replicas;
                status.observed_generation = rs.metadata.generation;
            }
        }

        fn by_image(&self, image: &str) -> &ReplicaSet {
            self.rss
                .iter()
                .find(|rs| {
                    let t = rs.spec.as_ref().unwrap().template.as_ref().unwrap();
                    t.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image)
                })
                .unwrap_or_else(|| panic!("no ReplicaSet for {image}"))
        }

        fn status(&self) -> DeploymentStatus {
            self.d.status.clone().unwrap_or_default()
        }

        fn complete(&self) -> bool {
            let s = self.status();
            let n = util::replicas(&self.d);
            s.updated_replicas == Some(n)
                && s.replicas == Some(n)
                && s.available_replicas == Some(n)
                && s.observed_generation == self.d.metadata.generation
        }

        /// Sync and settle until complete, checking the rolling-update bounds after every step.
        fn roll_out(&mut self, max_surge: i32, max_unavailable: i32) -> usize {
            let desired = util::replicas(&self.d);
            for step in 0..100 {
                self.sync();
                let total: i32 = self.rss.iter().map(util::rs_replicas).sum();
                assert!(
                    total <= desired + max_surge,
                    "step {step}: {total} pods exceed the surge bound"
                );
                self.settle();
                let available: i32 = self.rss.iter().map(available).sum();
                assert!(
                    available >= desired - max_unavailable,
                    "step {step}: only {available} available, below {desired} - {max_unavailable}"
                );
                if self.complete() && self.rss.iter().filter(|rs| util::rs_replicas(rs) > 0).count() == 1 {
                    self.sync();
                    return step;
                }
            }
            panic!("rollout did not finish: {:#?}", self.status());
        }

        fn set_image(&mut self, image: &str) {
            let spec = self.d.spec.as_mut().unwrap();
            spec.template.spec.as_mut().unwrap().containers[0].image = Some(image.into());
            self.bump_generation();
        }

        fn bump_generation(&mut self) {
            self.d.metadata.generation = Some(self.d.metadata.generation.unwrap() + 1);
        }
    }

    fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
        rs.metadata.annotations.as_ref()?.get(key).cloned()
    }

    fn condition_reason(s: &DeploymentStatus, type_: &str) -> Option<String> {
        condition(s, type_)?.reason.clone()
    }

    /// A fresh Deployment, rolled out to completion with all pods available.
    fn rolled_out(d: Deployment) -> Cluster {
        let mut c = Cluster::new(d);
        for _ in 0..20 {
            c.sync();
            c.settle();
            if c.complete() {
                break;
            }
        }
        c.sync();
        assert!(c.complete(), "initial rollout: {:#?}", c.status());
        c
    }

    #[test]
    fn first_sync_creates_the_hashed_replica_set_with_revision_1() {
        let mut c = Cluster::new(deployment(3, "nginx:1.25"));
        c.sync();
        assert_eq!(c.rss.len(), 1);
        let rs = &c.rss[0];
        let hash = util::pod_template_hash(&template("nginx:1.25"), None);
        assert_eq!(rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
        let tmpl_labels = rs
            .spec
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap();
        assert_eq!(tmpl_labels.labels.as_ref().unwrap()[POD_TEMPLATE_HASH], hash);
        assert_eq!(
            rs.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
            hash
        );
        assert_eq!(
            util::rs_replicas(rs),
            3,
            "25% surge of 3 rounds up to 1, but nothing old is running"
        );
        assert_eq!(annotation(rs, REVISION).as_deref(), Some("1"));
        assert_eq!(annotation(rs, util::DESIRED_REPLICAS).as_deref(), Some("3"));
        assert_eq!(annotation(rs, util::MAX_REPLICAS).as_deref(), Some("4"));
        assert_eq!(c.d.metadata.annotations.as_ref().unwrap()[REVISION], "1");
        assert_eq!(
            c.events,
            [format!("Scaled up replica set web-{hash} from 0 to 3")]
        );
        let status = c.status();
        assert_eq!(
            condition_reason(&status, "Progressing").as_deref(),
            Some(NEW_RS_CREATED)
        );
        assert_eq!(
            condition_reason(&status, "Available").as_deref(),
            Some(MIN_UNAVAILABLE)
        );
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn rolling_update_runs_from_start_to_finish_within_bounds() {
        let d = rolling(
            deployment(4, "nginx:1.25"),
            IntOrString::Int(1),
            IntOrString::Int(1),
        );
        let mut c = rolled_out(d);
        assert_eq!(
            condition_reason(&c.status(), "Progressing").as_deref(),
            Some(NEW_RS_AVAILABLE)
        );
        assert_eq!(
            condition_reason(&c.status(), "Available").as_deref(),
            Some(MIN_AVAILABLE)
        );
        c.events.clear();

        c.set_image("nginx:1.26");
        c.roll_out(1, 1);
        let old = c.by_image("nginx:1.25");
        let new = c.by_image("nginx:1.26");
        assert_eq!(
            util::rs_replicas(old),
            0,
            "old ReplicaSet kept at zero for rollback"
        );
        assert_eq!(util::rs_replicas(new), 4);
        assert_eq!(annotation(new, REVISION).as_deref(), Some("2"));
        assert_eq!(c.d.metadata.annotations.as_ref().unwrap()[REVISION], "2");
        let s = c.status();
        assert_eq!(
            (s.replicas, s.updated_replicas, s.available_replicas),
            (Some(4), Some(4), Some(4))
        );
        assert_eq!(s.unavailable_replicas, Some(0));
        let progressing = condition(&s, "Progressing").unwrap();
        assert_eq!(progressing.reason.as_deref(), Some(NEW_RS_AVAILABLE));
        let new_name = new.metadata.name.clone().unwrap();
        assert_eq!(
            progressing.message.as_deref(),
            Some(format!("ReplicaSet \"{new_name}\" has successfully progressed.").as_str())
        );
        assert_eq!(
            c.events[0],
            format!("Scaled up replica set {new_name} from 0 to 1"),
            "{:?}",
            c.events
        );
        assert!(
            c.events
                .iter()
                .any(|e| e.starts_with("Scaled down replica set web-") && e.ends_with("from 4 to 3"))
        );
    }

    #[test]
    fn percentages_bound_a_larger_rollout() {
        // 10 replicas, 25%/25%: surge 3 (rounded up), unavailable 2 (rounded down).
        let d = rolling(
            deployment(10, "nginx:1.25"),
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        );
        let mut c = rolled_out(d);
        c.set_image("nginx:1.26");
        let steps = c.roll_out(3, 2);
        assert!(steps >= 2, "a bounded rollout takes several steps, took {steps}");
        assert_eq!(util::rs_replicas(c.by_image("nginx:1.26")), 10);
    }

    #[test]
    fn surge_only_rollout_never_drops_below_desired() {
        let d = rolling(
            deployment(3, "nginx:1.25"),
            IntOrString::Int(1),
            IntOrString::Int(0),
        );
        let mut c = rolled_out(d);
        c.set_image("nginx:1.26");
        c.roll_out(1, 0);
        assert_eq!(util::rs_replicas(c.by_image("nginx:1.26")), 3);
    }

    #[test]
    fn recreate_scales_old_to_zero_and_waits_for_old_pods() {
        let mut d = deployment(3, "nginx:1.25");
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            ..Default::default()
        });
        let mut c = rolled_out(d);
        c.set_image("nginx:1.26");
        c.sync();
        assert_eq!(
            c.rss.len(),
            1,
            "no new ReplicaSet while the old one still has replicas"
        );
        assert_eq!(util::rs_replicas(&c.rss[0]), 0);
        // The old ReplicaSet's status still shows its pods until they are gone.
        c.sync();
        assert_eq!(c.rss.len(), 1);
        c.settle();
        // A terminating pod of the old ReplicaSet still blocks.
        let mut old_pod = crate::pod::testing::running(crate::pod::testing::pod("old", &[("app", "web")]));
        old_pod.metadata.owner_references = Some(vec![OwnerReference {
            uid: c.rss[0].metadata.uid.clone().unwrap(),
            controller: Some(true),
            kind: "ReplicaSet".into(),
            ..Default::default()
        }]);
        c.pods.push(old_pod);
        c.sync();
        assert_eq!(c.rss.len(), 1, "an old pod is still running");
        c.pods.clear();
        c.sync();
        let new = c.by_image("nginx:1.26");
        assert_eq!(
            util::rs_replicas(new),
            3,
            "Recreate starts the new revision at full size"
        );
        assert_eq!(annotation(new, REVISION).as_deref(), Some("2"));
        c.settle();
        c.settle();
        c.sync();
        assert!(c.complete());
    }

    #[test]
    fn rollback_readopts_the_old_replica_set_with_revision_max_plus_one() {
        let d = rolling(
            deployment(2, "nginx:1.25"),
            IntOrString::Int(1),
            IntOrString::Int(0),
        );
        let mut c = rolled_out(d);
        c.set_image("nginx:1.26");
        c.roll_out(1, 0);
        let v1_name = c.by_image("nginx:1.25").metadata.name.clone();

        // `kubectl rollout undo`: the template goes back to v1's (without pod-template-hash).
        c.set_image("nginx:1.25");
        c.roll_out(1, 0);
        assert_eq!(c.rss.len(), 2, "no third ReplicaSet: the v1 one is reused");
        let v1 = c.by_image("nginx:1.25");
        assert_eq!(v1.metadata.name, v1_name);
        assert_eq!(annotation(v1, REVISION).as_deref(), Some("3"));
        assert_eq!(annotation(v1, util::REVISION_HISTORY).as_deref(), Some("1"));
        assert_eq!(util::rs_replicas(v1), 2);
        assert_eq!(util::rs_replicas(c.by_image("nginx:1.26")), 0);
        assert_eq!(c.d.metadata.annotations.as_ref().unwrap()[REVISION], "3");
    }

    #[test]
    fn revision_history_limit_deletes_oldest_scaled_down_replica_sets() {
        let d = rolling(deployment(1, "v1"), IntOrString::Int(1), IntOrString::Int(0));
        let mut c = rolled_out(d);
        for image in ["v2", "v3", "v4"] {
            c.set_image(image);
            c.roll_out(1, 0);
        }
        assert_eq!(c.rss.len(), 4, "default limit (10) keeps everything");
        c.d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        c.sync();
        let mut left: Vec<String> = c.rss.iter().map(|rs| annotation(rs, REVISION).unwrap()).collect();
        left.sort();
        assert_eq!(left, ["3", "4"], "the two lowest old revisions are deleted");
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        let d = rolling(deployment(10, "v1"), IntOrString::Int(3), IntOrString::Int(2));
        let mut c = rolled_out(d);
        c.set_image("v2");
        c.sync();
        c.settle();
        let before: Vec<i32> = ["v1", "v2"]
            .iter()
            .map(|i| util::rs_replicas(c.by_image(i)))
            .collect();
        // New ReplicaSet created at the surge (3), old scaled down by maxUnavailable (2): 8 + 3.
        assert_eq!(before, [8, 3]);
        c.events.clear();
        c.d.spec.as_mut().unwrap().replicas = Some(20);
        c.bump_generation();
        c.sync();
        let after: Vec<i32> = ["v1", "v2"]
            .iter()
            .map(|i| util::rs_replicas(c.by_image(i)))
            .collect();
        assert_eq!(
            after.iter().sum::<i32>(),
            23,
            "new total = 20 + surge 3: {after:?}"
        );
        for (b, a) in before.iter().zip(&after) {
            assert!(*a > *b, "both revisions grow: {before:?} -> {after:?}");
        }
        for rs in &c.rss {
            assert_eq!(annotation(rs, util::DESIRED_REPLICAS).as_deref(), Some("20"));
        }
        assert!(
            c.events.iter().all(|e| e.starts_with("Scaled up replica set")),
            "{:?}",
            c.events
        );
    }

    #[test]
    fn plain_scale_resizes_the_only_active_replica_set() {
        let mut c = rolled_out(deployment(2, "v1"));
        c.events.clear();
        c.d.spec.as_mut().unwrap().replicas = Some(5);
        c.bump_generation();
        c.sync();
        let name = c.rss[0].metadata.name.clone().unwrap();
        assert_eq!(util::rs_replicas(&c.rss[0]), 5);
        assert_eq!(c.events, [format!("Scaled up replica set {name} from 2 to 5")]);
    }

    #[test]
    fn paused_deployments_do_not_roll_out() {
        let mut c = rolled_out(deployment(2, "v1"));
        c.d.spec.as_mut().unwrap().paused = Some(true);
        c.set_image("v2");
        c.sync();
        assert_eq!(c.rss.len(), 1, "no new ReplicaSet while paused");
        let s = c.status();
        assert_eq!(condition_reason(&s, "Progressing").as_deref(), Some(PAUSED));
        assert_eq!(s.observed_generation, Some(2));
        c.d.spec.as_mut().unwrap().paused = Some(false);
        c.bump_generation();
        c.sync();
        assert_eq!(c.rss.len(), 2, "resumed: the rollout starts");
    }

    #[test]
    fn progress_deadline_exceeded_when_nothing_moves() {
        let mut d = deployment(2, "v1");
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
        let mut c = Cluster::new(d);
        c.sync();
        // Pods never become available (no settle); time passes.
        let plan = c.sync();
        assert_eq!(
            plan.requeue_after,
            Some(Duration::from_secs(31)),
            "resync when the deadline passes"
        );
        c.clock += 31;
        c.sync();
        let s = c.status();
        let p = condition(&s, "Progressing").unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("False", Some(TIMED_OUT))
        );
    }

    #[test]
    fn hash_collision_raises_the_collision_count() {
        let d = deployment(1, "v1");
        let hash = util::pod_template_hash(&d.spec.as_ref().unwrap().template, None);
        let squatter = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("web-{hash}")),
                namespace: Some("default".into()),
                uid: Some("other".into()),
                labels: Some([("app".to_string(), "other".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec::default()),
            status: None,
        };
        let mut c = Cluster::new(d);
        c.rss.push(squatter);
        let plan = c.sync();
        assert_eq!(c.status().collision_count, Some(1));
        assert_eq!(plan.requeue_after, Some(Duration::ZERO));
        c.sync();
        let other_hash = util::pod_template_hash(&c.d.spec.as_ref().unwrap().template, Some(1));
        assert!(
            c.rss
                .iter()
                .any(|rs| rs.metadata.name.as_deref() == Some(format!("web-{other_hash}").as_str()))
        );
    }

    #[test]
    fn orphan_replica_sets_are_adopted_and_mismatched_ones_released() {
        let mut c = rolled_out(deployment(1, "v1"));
        c.rss[0].metadata.owner_references = None;
        let plan = c.sync();
        assert!(
            matches!(plan.actions.first(), Some(Action::AdoptReplicaSet(_))),
            "{:?}",
            plan.actions
        );
        c.rss[0].metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        let plan = c.sync();
        assert!(
            matches!(plan.actions.first(), Some(Action::ReleaseReplicaSet(_))),
            "{:?}",
            plan.actions
        );
    }

    #[test]
    fn rollout_restart_annotation_makes_a_new_revision() {
        let mut c = rolled_out(rolling(
            deployment(2, "v1"),
            IntOrString::Int(1),
            IntOrString::Int(0),
        ));
        let t = &mut c.d.spec.as_mut().unwrap().template;
        t.metadata.as_mut().unwrap().annotations = Some(
            [(
                "kubectl.kubernetes.io/restartedAt".to_string(),
                "2026-11-26T02:00:00Z".to_string(),
            )]
            .into(),
        );
        c.bump_generation();
        c.roll_out(1, 0);
        assert_eq!(c.rss.len(), 2);
        assert_eq!(c.d.metadata.annotations.as_ref().unwrap()[REVISION], "2");
    }

    #[test]
    fn replica_failures_surface_on_the_deployment() {
        let mut c = rolled_out(deployment(2, "v1"));
        let failure = k8s_openapi::api::apps::v1::ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some("pods \"web-x\" is forbidden: exceeded quota".into()),
            last_transition_time: Some(Time(ts(5))),
        };
        c.rss[0].status.as_mut().unwrap().conditions = Some(vec![failure]);
        c.d.spec.as_mut().unwrap().replicas = Some(3);
        c.bump_generation();
        c.sync();
        c.settle();
        c.sync();
        let s = c.status();
        assert_eq!(
            condition_reason(&s, "ReplicaFailure").as_deref(),
            Some("FailedCreate")
        );
        c.rss[0].status.as_mut().unwrap().conditions = None;
        c.sync();
        assert!(
            condition(&c.status(), "ReplicaFailure").is_none(),
            "cleared with the ReplicaSet's"
        );
    }

    #[test]
    fn steady_state_sync_writes_nothing() {
        let mut c = rolled_out(deployment(3, "v1"));
        let plan = c.sync();
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert_eq!(plan.requeue_after, None);
    }
}
