//! Controller references (Kubernetes' `ControllerRefManager`): which objects a controller owns, which orphans it
//! adopts and which owned objects it releases because their labels no longer match its selector.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::core::{Selector, SelectorExt};
use serde_json::{Value, json};

/// What a controller does with one candidate object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Already controlled by us and matching: ours.
    Owned,
    /// An orphan matching the selector: set our controller reference, then it is ours.
    Adopt,
    /// Controlled by us but no longer matching: remove our reference.
    Release,
    /// Someone else's, or not ours to take.
    Ignore,
}

/// The owner's identity as the claim logic needs it.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// A deleting owner adopts and releases nothing.
    pub deleting: bool,
}

impl Owner<'_> {
    /// The controller reference an adopted or created dependent carries.
    pub fn controller_ref(&self) -> OwnerReference {
        OwnerReference {
            api_version: self.api_version.into(),
            kind: self.kind.into(),
            name: self.name.into(),
            uid: self.uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The object's controlling owner reference, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A label selector parsed once, for matching many objects (parsing per object dominates a sync over thousands
/// of pods). An empty or invalid selector selects nothing: Kubernetes refuses to let a controller select every
/// pod in a namespace.
#[derive(Debug, Clone)]
pub struct Matcher(Option<Selector>);

impl Matcher {
    pub fn new(selector: Option<&LabelSelector>) -> Self {
        let Some(selector) = selector else {
            return Matcher(None);
        };
        let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        if empty {
            return Matcher(None);
        }
        Matcher(Selector::try_from(selector.clone()).ok())
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let Some(selector) = &self.0 else { return false };
        match labels {
            Some(labels) => selector.matches(labels),
            None => selector.matches(&BTreeMap::new()),
        }
    }
}

/// Label selector semantics as the workload controllers use them (see [`Matcher`]).
pub fn selector_matches(selector: Option<&LabelSelector>, labels: Option<&BTreeMap<String, String>>) -> bool {
    Matcher::new(selector).matches(labels)
}

/// Decide what `owner` does with a candidate object (Kubernetes' `ClaimObject`).
pub fn claim(owner: &Owner<'_>, selector: Option<&LabelSelector>, meta: &ObjectMeta) -> Claim {
    claim_with(owner, &Matcher::new(selector), meta)
}

/// [`claim`] with a selector parsed once.
pub fn claim_with(owner: &Owner<'_>, selector: &Matcher, meta: &ObjectMeta) -> Claim {
    let matches = selector.matches(meta.labels.as_ref());
    match controller_of(meta) {
        Some(r) if r.uid != owner.uid => Claim::Ignore,
        Some(_) if matches => Claim::Owned,
        Some(_) if owner.deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner.deleting || !matches || meta.deletion_timestamp.is_some() => Claim::Ignore,
        None => Claim::Adopt,
    }
}

/// Strategic merge patch that adds our controller reference (the `uid` precondition makes it fail if the object
/// was replaced by a namesake meanwhile).
pub fn adopt_patch(owner: &Owner<'_>, object_uid: &str) -> Value {
    json!({"metadata": {"ownerReferences": [owner.controller_ref()], "uid": object_uid}})
}

/// Strategic merge patch that removes our reference.
pub fn release_patch(owner_uid: &str, object_uid: &str) -> Value {
    json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": object_uid}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[(&str, &str)], controller: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: controller.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    fn owner(deleting: bool) -> Owner<'static> {
        Owner {
            api_version: "apps/v1",
            kind: "ReplicaSet",
            name: "web",
            uid: "rs-1",
            deleting,
        }
    }

    fn app_web() -> LabelSelector {
        LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn claims_follow_controller_ref_and_selector() {
        let sel = app_web();
        assert_eq!(
            claim(&owner(false), Some(&sel), &meta(&[("app", "web")], Some("rs-1"))),
            Claim::Owned
        );
        assert_eq!(
            claim(&owner(false), Some(&sel), &meta(&[("app", "web")], None)),
            Claim::Adopt
        );
        assert_eq!(
            claim(&owner(false), Some(&sel), &meta(&[("app", "db")], Some("rs-1"))),
            Claim::Release
        );
        assert_eq!(
            claim(&owner(false), Some(&sel), &meta(&[("app", "web")], Some("rs-2"))),
            Claim::Ignore
        );
        assert_eq!(
            claim(&owner(false), Some(&sel), &meta(&[("app", "db")], None)),
            Claim::Ignore
        );
        assert_eq!(
            claim(&owner(true), Some(&sel), &meta(&[("app", "web")], None)),
            Claim::Ignore
        );
        assert_eq!(
            claim(&owner(true), Some(&sel), &meta(&[("app", "db")], Some("rs-1"))),
            Claim::Ignore
        );
    }

    #[test]
    fn empty_selector_selects_nothing() {
        assert!(!selector_matches(Some(&LabelSelector::default()), None));
        assert!(!selector_matches(None, None));
        assert!(selector_matches(
            Some(&app_web()),
            meta(&[("app", "web")], None).labels.as_ref()
        ));
    }
}
