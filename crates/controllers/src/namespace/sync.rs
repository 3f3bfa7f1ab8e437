//! The pure part of the namespace controller: whether a namespace needs its content deleted, what its
//! `spec.finalizers` become once it is empty, and the status conditions Kubernetes reports while it waits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The finalizer (in `spec.finalizers`) this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// A terminating namespace whose content this controller still has to delete.
pub fn needs_cleanup(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some() && spec_finalizers(ns).iter().any(|f| f == FINALIZER)
}

fn spec_finalizers(ns: &Namespace) -> Vec<String> {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
}

/// `spec.finalizers` once the content is gone: ours removed, others' kept.
pub fn finalized(ns: &Namespace) -> Vec<String> {
    spec_finalizers(ns)
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect()
}

/// What a deletion pass found left in the namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remaining {
    /// Objects left, by `resource.group` (e.g. `pods`, `deployments.apps`).
    pub resources: BTreeMap<String, usize>,
    /// Objects held by finalizers, by finalizer name.
    pub finalizers: BTreeMap<String, usize>,
    /// Groups discovery could not list.
    pub discovery_failures: Vec<String>,
    /// Deletes or lists that failed, as messages.
    pub delete_failures: Vec<String>,
}

impl Remaining {
    /// Nothing left and nothing failed: the namespace can be finalized.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.discovery_failures.is_empty() && self.delete_failures.is_empty()
    }
}

fn condition(
    type_: &str,
    problem: Option<(&str, String)>,
    ok_reason: &str,
    now: Timestamp,
) -> NamespaceCondition {
    let (status, reason, message) = match problem {
        Some((reason, message)) => ("True", reason.to_string(), message),
        None => (
            "False",
            ok_reason.to_string(),
            "All content successfully removed".to_string(),
        ),
    };
    NamespaceCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason),
        message: Some(message),
        last_transition_time: Some(Time(now)),
    }
}

/// `pods has 2 resource instances, …` (`verb` is `has` for resources, `in` for finalizers, as Kubernetes says).
fn counts(map: &BTreeMap<String, usize>, verb: &str) -> String {
    map.iter()
        .map(|(k, n)| format!("{k} {verb} {n} resource instances"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The conditions Kubernetes' namespace controller sets on a terminating namespace.
pub fn conditions(remaining: &Remaining, now: Timestamp) -> Vec<NamespaceCondition> {
    let discovery = (!remaining.discovery_failures.is_empty()).then(|| {
        let msg = format!(
            "Discovery failed for some groups: {}",
            remaining.discovery_failures.join(", ")
        );
        ("DiscoveryFailed", msg)
    });
    let content_failure = (!remaining.delete_failures.is_empty()).then(|| {
        let msg = format!(
            "Failed to delete all resource types, {} remaining: {}",
            remaining.delete_failures.len(),
            remaining.delete_failures.join(", ")
        );
        ("ContentDeletionFailed", msg)
    });
    let content = (!remaining.resources.is_empty()).then(|| {
        (
            "SomeResourcesRemain",
            format!(
                "Some resources are remaining: {}",
                counts(&remaining.resources, "has")
            ),
        )
    });
    let finalizers = (!remaining.finalizers.is_empty()).then(|| {
        let msg = format!(
            "Some content in the namespace has finalizers remaining: {}",
            counts(&remaining.finalizers, "in")
        );
        ("SomeFinalizersRemain", msg)
    });
    vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            discovery,
            "ResourcesDiscovered",
            now,
        ),
        condition(
            "NamespaceDeletionContentFailure",
            content_failure,
            "ContentDeleted",
            now,
        ),
        condition("NamespaceContentRemaining", content, "ContentRemoved", now),
        condition(
            "NamespaceFinalizersRemaining",
            finalizers,
            "ContentHasNoFinalizers",
            now,
        ),
    ]
}

/// Whether the namespace's conditions already say the same (ignoring transition times), so an unchanged
/// status is not rewritten on every pass.
pub fn same_conditions(ns: &Namespace, wanted: &[NamespaceCondition]) -> bool {
    let strip = |c: &NamespaceCondition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
        )
    };
    let current: Vec<_> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().map(strip).collect())
        .unwrap_or_default();
    current == wanted.iter().map(strip).collect::<Vec<_>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ns(deleting: bool, finalizers: &[&str]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("team".into()),
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            spec: Some(NamespaceSpec {
                finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            }),
            status: None,
        }
    }

    #[test]
    fn only_terminating_namespaces_with_our_finalizer_are_cleaned() {
        assert!(needs_cleanup(&ns(true, &["kubernetes"])));
        assert!(!needs_cleanup(&ns(false, &["kubernetes"])));
        assert!(!needs_cleanup(&ns(true, &["example.com/other"])));
    }

    #[test]
    fn finalizing_keeps_other_finalizers() {
        assert_eq!(
            finalized(&ns(true, &["kubernetes", "example.com/x"])),
            ["example.com/x"]
        );
        assert!(finalized(&ns(true, &["kubernetes"])).is_empty());
    }

    #[test]
    fn conditions_name_what_remains() {
        let mut r = Remaining::default();
        r.resources.insert("pods".into(), 2);
        r.finalizers.insert("example.com/hold".into(), 1);
        assert!(!r.is_empty());
        let cs = conditions(&r, Timestamp::UNIX_EPOCH);
        let content = cs
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .unwrap();
        assert_eq!(content.status, "True");
        assert_eq!(
            content.message.as_deref(),
            Some("Some resources are remaining: pods has 2 resource instances")
        );
        let fin = cs
            .iter()
            .find(|c| c.type_ == "NamespaceFinalizersRemaining")
            .unwrap();
        assert_eq!(
            fin.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
            )
        );
        let discovery = cs
            .iter()
            .find(|c| c.type_ == "NamespaceDeletionDiscoveryFailure")
            .unwrap();
        assert_eq!(discovery.status, "False");
        assert!(Remaining::default().is_empty());
    }

    #[test]
    fn unchanged_conditions_are_recognized() {
        let cs = conditions(&Remaining::default(), Timestamp::UNIX_EPOCH);
        let mut n = ns(true, &["kubernetes"]);
        assert!(!same_conditions(&n, &cs));
        n.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            conditions: Some(conditions(&Remaining::default(), Timestamp::now())),
            phase: Some("Terminating".into()),
        });
        assert!(same_conditions(&n, &cs));
    }
}
