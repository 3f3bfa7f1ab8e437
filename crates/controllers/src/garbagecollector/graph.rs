//! The pure part of the garbage collector: the ownership graph (every watched object with its
//! ownerReferences, indexed both ways) and the two decisions Kubernetes' GC makes — what a deleting owner does
//! with its dependents ([`owner_step`]) and what happens to a dependent given the state of its owners
//! ([`dependent_step`]).

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Finalizer the API server sets on an owner deleted with `propagationPolicy: Orphan`.
pub const ORPHAN: &str = "orphan";
/// Finalizer the API server sets on an owner deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";

/// Which object a graph node is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

/// One object as the GC sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphNode {
    pub id: ObjectId,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl GraphNode {
    pub fn from_meta(api_version: &str, kind: &str, meta: &ObjectMeta) -> Option<GraphNode> {
        Some(GraphNode {
            id: ObjectId {
                api_version: api_version.into(),
                kind: kind.into(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone()?,
                uid: meta.uid.clone()?,
            },
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
        })
    }

    pub fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// Deleted in the foreground and waiting for its blocking dependents to go.
    pub fn waiting_for_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }
}

/// Every watched object by uid, and who depends on whom.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, GraphNode>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&GraphNode> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Add or replace a node; returns the previous version.
    pub fn upsert(&mut self, node: GraphNode) -> Option<GraphNode> {
        let uid = node.id.uid.clone();
        for r in &node.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        let old = self.nodes.insert(uid.clone(), node);
        if let Some(old) = &old {
            let now: BTreeSet<String> = self.nodes[&uid].owners.iter().map(|r| r.uid.clone()).collect();
            for r in old.owners.iter().filter(|r| !now.contains(&r.uid)) {
                self.unlink(&r.uid, &uid);
            }
        }
        old
    }

    pub fn remove(&mut self, uid: &str) -> Option<GraphNode> {
        let old = self.nodes.remove(uid)?;
        for r in &old.owners {
            self.unlink(&r.uid, uid);
        }
        Some(old)
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    /// The objects whose ownerReferences name `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<&GraphNode> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d))
            .collect()
    }
}

/// What a deleting owner does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerAction {
    Nothing,
    /// `orphan`: remove the owner's reference from each of these, then the finalizer.
    Orphan(Vec<ObjectId>),
    /// `foregroundDeletion` with dependents left: have them deleted (they see their owner waiting); the
    /// finalizer stays while any dependent blocks the owner's deletion.
    DeleteDependents(Vec<ObjectId>),
    /// Nothing blocks any more: remove this finalizer.
    RemoveFinalizer(&'static str),
}

/// Kubernetes' `attemptToOrphan` / `processDeletingDependentsItem` for one owner.
pub fn owner_step(owner: &GraphNode, dependents: &[&GraphNode]) -> OwnerAction {
    if !owner.deleting {
        return OwnerAction::Nothing;
    }
    if owner.has_finalizer(ORPHAN) {
        return if dependents.is_empty() {
            OwnerAction::RemoveFinalizer(ORPHAN)
        } else {
            OwnerAction::Orphan(dependents.iter().map(|d| d.id.clone()).collect())
        };
    }
    if owner.has_finalizer(FOREGROUND) {
        let blocking = dependents.iter().any(|d| {
            d.owners
                .iter()
                .any(|r| r.uid == owner.id.uid && r.block_owner_deletion == Some(true))
        });
        if !blocking {
            return OwnerAction::RemoveFinalizer(FOREGROUND);
        }
        let pending: Vec<ObjectId> = dependents
            .iter()
            .filter(|d| !d.deleting)
            .map(|d| d.id.clone())
            .collect();
        return OwnerAction::DeleteDependents(pending);
    }
    OwnerAction::Nothing
}

/// The state of one owner of a dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists and is not being deleted in the foreground.
    Solid,
    /// Does not exist (or a namesake with another uid does).
    Dangling,
    /// Deleted in the foreground: waiting for its dependents.
    Waiting,
}

/// `propagationPolicy` of a delete the GC issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
            Propagation::Orphan => "Orphan",
        }
    }
}

/// What happens to a dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependentAction {
    Nothing,
    /// Some owners are still there: just drop the references to the dangling and waiting ones.
    RemoveOwnerRefs(Vec<String>),
    /// No owner holds it any more.
    Delete(Propagation),
}

/// Kubernetes' `attemptToDeleteItem` for one dependent, given each of its owner references' state.
pub fn dependent_step(
    node: &GraphNode,
    owners: &[(&OwnerReference, OwnerState)],
    has_dependents: bool,
) -> DependentAction {
    // A dependent already being deleted is left to the API server (or to [`owner_step`] if it waits itself).
    if owners.is_empty() || node.deleting {
        return DependentAction::Nothing;
    }
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    if solid {
        let drop: Vec<String> = owners
            .iter()
            .filter(|(_, s)| *s != OwnerState::Solid)
            .map(|(r, _)| r.uid.clone())
            .collect();
        return if drop.is_empty() {
            DependentAction::Nothing
        } else {
            DependentAction::RemoveOwnerRefs(drop)
        };
    }
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    let policy = if waiting && has_dependents {
        Propagation::Foreground
    } else if node.has_finalizer(ORPHAN) {
        Propagation::Orphan
    } else if node.has_finalizer(FOREGROUND) {
        Propagation::Foreground
    } else {
        Propagation::Background
    };
    DependentAction::Delete(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: &str, name: &str, owners: &[(&str, bool)]) -> GraphNode {
        GraphNode {
            id: ObjectId {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                namespace: Some("default".into()),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
            owners: owners
                .iter()
                .map(|(o, block)| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: o.to_string(),
                    uid: format!("uid-{o}"),
                    controller: Some(true),
                    block_owner_deletion: Some(*block),
                })
                .collect(),
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    fn deleting(mut n: GraphNode, finalizer: Option<&str>) -> GraphNode {
        n.deleting = true;
        n.finalizers = finalizer.into_iter().map(String::from).collect();
        n
    }

    #[test]
    fn the_graph_indexes_dependents_and_follows_owner_changes() {
        let mut g = Graph::default();
        g.upsert(node("ReplicaSet", "rs", &[]));
        g.upsert(node("Pod", "a", &[("rs", true)]));
        g.upsert(node("Pod", "b", &[("rs", true)]));
        let names = |g: &Graph| -> Vec<String> {
            let mut v: Vec<String> = g
                .dependents_of("uid-rs")
                .iter()
                .map(|d| d.id.name.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&g), ["a", "b"]);
        g.upsert(node("Pod", "a", &[]));
        assert_eq!(names(&g), ["b"], "a released its owner");
        g.remove("uid-b");
        assert!(names(&g).is_empty());
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn a_dependent_of_a_gone_owner_is_deleted_in_the_background() {
        let pod = node("Pod", "a", &[("rs", true)]);
        let r = &pod.owners[0];
        assert_eq!(
            dependent_step(&pod, &[(r, OwnerState::Dangling)], false),
            DependentAction::Delete(Propagation::Background)
        );
        assert_eq!(
            dependent_step(&pod, &[(r, OwnerState::Solid)], false),
            DependentAction::Nothing
        );
    }

    #[test]
    fn a_dependent_with_a_live_owner_only_loses_the_dangling_reference() {
        let pod = node("Pod", "a", &[("rs", true), ("old", false)]);
        let owners = [
            (&pod.owners[0], OwnerState::Solid),
            (&pod.owners[1], OwnerState::Dangling),
        ];
        assert_eq!(
            dependent_step(&pod, &owners, false),
            DependentAction::RemoveOwnerRefs(vec!["uid-old".into()])
        );
    }

    #[test]
    fn dependents_of_a_waiting_owner_go_in_the_foreground_when_they_have_their_own() {
        let rs = node("ReplicaSet", "rs", &[("deploy", true)]);
        let r = &rs.owners[0];
        assert_eq!(
            dependent_step(&rs, &[(r, OwnerState::Waiting)], true),
            DependentAction::Delete(Propagation::Foreground)
        );
        assert_eq!(
            dependent_step(&rs, &[(r, OwnerState::Waiting)], false),
            DependentAction::Delete(Propagation::Background)
        );
        let already = deleting(rs.clone(), None);
        assert_eq!(
            dependent_step(&already, &[(r, OwnerState::Dangling)], false),
            DependentAction::Nothing
        );
    }

    #[test]
    fn orphan_finalizer_releases_dependents_then_itself() {
        let owner = deleting(node("ReplicaSet", "rs", &[]), Some(ORPHAN));
        let pod = node("Pod", "a", &[("rs", true)]);
        assert_eq!(
            owner_step(&owner, &[&pod]),
            OwnerAction::Orphan(vec![pod.id.clone()])
        );
        assert_eq!(owner_step(&owner, &[]), OwnerAction::RemoveFinalizer(ORPHAN));
    }

    #[test]
    fn foreground_waits_only_for_blocking_dependents() {
        let owner = deleting(node("ReplicaSet", "rs", &[]), Some(FOREGROUND));
        let blocking = node("Pod", "a", &[("rs", true)]);
        let other = node("Pod", "b", &[("rs", false)]);
        assert_eq!(
            owner_step(&owner, &[&blocking, &other]),
            OwnerAction::DeleteDependents(vec![blocking.id.clone(), other.id.clone()])
        );
        let going = deleting(blocking.clone(), None);
        assert_eq!(
            owner_step(&owner, &[&going, &other]),
            OwnerAction::DeleteDependents(vec![other.id.clone()])
        );
        assert_eq!(
            owner_step(&owner, &[&other]),
            OwnerAction::RemoveFinalizer(FOREGROUND)
        );
        assert_eq!(
            owner_step(&node("ReplicaSet", "x", &[]), &[&other]),
            OwnerAction::Nothing
        );
    }
}
