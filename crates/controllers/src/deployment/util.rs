//! Deployment helpers (Kubernetes' `deploymentutil`): the pod-template hash, revision and replica annotations,
//! maxSurge/maxUnavailable fenceposts and the ReplicaSet orderings the rollout logic relies on.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// The label (on ReplicaSets, their selector and their pods) that tells template revisions apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision of a Deployment and of each of its ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had (it gets a new one when a rollback re-adopts it).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Kubernetes' `rand.SafeEncodeString` alphabet: no vowels (no words), no look-alikes.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 32 bit.
fn fnv32a(bytes: &[u8], mut hash: u32) -> u32 {
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(16_777_619);
    }
    hash
}

/// The `pod-template-hash` of a template: FNV-32a of the template's canonical form (plus the collision count,
/// written the way Kubernetes does), its decimal digits safe-encoded. Stable across restarts and releases of
/// rkube: the canonical form drops empty and null fields so defaulting differences do not change it.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let canonical = canonical(&serde_json::to_value(template).unwrap_or(Value::Null));
    let mut hash = fnv32a(canonical.to_string().as_bytes(), 2_166_136_261);
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hash = fnv32a(&bytes, hash);
    }
    hash.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// JSON without nulls, empty objects and empty arrays, keys sorted (Kubernetes' semantic equality treats nil
/// and empty alike).
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), canonical(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Two templates are the same revision if they are equal apart from `pod-template-hash` (Kubernetes'
/// `EqualIgnoreHash`) — this is how a rolled-back Deployment finds its old ReplicaSet again.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        canonical(&serde_json::to_value(&t).unwrap_or(Value::Null))
    };
    strip(a) == strip(b)
}

/// A ReplicaSet's revision (0 when missing or unreadable).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata.annotations, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn annotation<'a>(annotations: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    annotations.as_ref()?.get(key).map(String::as_str)
}

/// Bring a ReplicaSet's annotations up to date for revision `new_revision` (Kubernetes'
/// `SetNewReplicaSetAnnotations`): copy the Deployment's annotations, raise the revision (recording the old one
/// in the revision history) and, for a ReplicaSet being created, the replica annotations. Returns whether
/// anything changed.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = annotations.get(REVISION).cloned().unwrap_or_default();
    let old_revision: i64 = match old.parse() {
        Ok(n) => n,
        Err(_) if old.is_empty() => 0,
        Err(_) => return changed,
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if !old.is_empty() {
            let history = match annotations.get(REVISION_HISTORY).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h},{old}"),
                None => old,
            };
            annotations.insert(REVISION_HISTORY.into(), history);
        }
    }
    if !exists {
        let replicas = replicas(d);
        changed |= set_replicas_annotations(rs, replicas, replicas + max_surge(d));
    }
    changed
}

fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let target = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || target.get(k) == Some(v) {
            continue;
        }
        target.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Record the Deployment's size (and size + surge) on a ReplicaSet; used for proportional scaling.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.into(), value);
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(&rs.metadata.annotations, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(&rs.metadata.annotations, MAX_REPLICAS) != Some(max.to_string().as_str())
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(&rs.metadata.annotations, DESIRED_REPLICAS)?
        .parse()
        .ok()
}

pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(&rs.metadata.annotations, MAX_REPLICAS)?.parse().ok()
}

/// `spec.replicas`, defaulted like the API does.
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// `value` of `total`: an absolute number, or a percentage rounded up (`round_up`) or down.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = percent * i64::from(total);
            (if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            }) as i32
        }
    }
}

/// (maxSurge, maxUnavailable) resolved against the desired replicas; never both zero, so a rollout can always
/// make progress (Kubernetes' `ResolveFenceposts`).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let default = IntOrString::String("25%".into());
    let surge_value = rolling.and_then(|r| r.max_surge.as_ref()).unwrap_or(&default);
    let unavailable_value = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    let desired = replicas(d);
    let surge = scaled_value(surge_value, desired, true);
    let unavailable = scaled_value(unavailable_value, desired, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_recreate(d) { 0 } else { fenceposts(d).0 }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas(d);
    if is_recreate(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired)
}

/// Oldest first; name breaks ties.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    // A ReplicaSet planned in this sync has no timestamp yet: it is the newest.
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match (created(a), created(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        _ => a.metadata.name.cmp(&b.metadata.name),
    }
}

/// Lowest revision first, then oldest.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a).cmp(&revision(b)).then_with(|| by_creation(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn hash_is_stable_safe_and_template_sensitive() {
        let h = pod_template_hash(&template("nginx:1.25"), None);
        assert_eq!(
            h,
            pod_template_hash(&template("nginx:1.25"), None),
            "same template, same hash"
        );
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
        assert!((6..=10).contains(&h.len()), "decimal digits of a u32: {h}");
        assert_ne!(h, pod_template_hash(&template("nginx:1.26"), None));
        assert_ne!(
            h,
            pod_template_hash(&template("nginx:1.25"), Some(1)),
            "a collision count changes the hash"
        );
        let mut with_empty = template("nginx:1.25");
        with_empty.metadata.as_mut().unwrap().annotations = Some(BTreeMap::new());
        assert_eq!(
            h,
            pod_template_hash(&with_empty, None),
            "empty and missing maps are the same template"
        );
    }

    #[test]
    fn fnv32a_matches_reference_vectors() {
        assert_eq!(fnv32a(b"", 2_166_136_261), 0x811c9dc5);
        assert_eq!(fnv32a(b"a", 2_166_136_261), 0xe40c292c);
        assert_eq!(fnv32a(b"foobar", 2_166_136_261), 0xbf9cf968);
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut a = template("nginx:1.25");
        a.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), "abc".into());
        assert!(equal_ignore_hash(&a, &template("nginx:1.25")));
        assert!(!equal_ignore_hash(&a, &template("nginx:1.26")));
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let d = deployment(
            10,
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        );
        assert_eq!(fenceposts(&d), (3, 2));
        let d = deployment(
            1,
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        );
        assert_eq!(fenceposts(&d), (1, 0));
        let d = deployment(4, IntOrString::Int(0), IntOrString::Int(0));
        assert_eq!(fenceposts(&d), (0, 1), "both zero would never progress");
        let d = deployment(3, IntOrString::Int(2), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 3, "never more unavailable than desired");
    }

    #[test]
    fn revision_annotations_keep_history() {
        let d = Deployment {
            metadata: ObjectMeta {
                annotations: Some(
                    [
                        ("kubernetes.io/change-cause".to_string(), "undo".to_string()),
                        (REVISION.to_string(), "9".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..deployment(2, IntOrString::Int(1), IntOrString::Int(0))
        };
        let mut rs = ReplicaSet::default();
        rs.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
        assert!(set_new_replica_set_annotations(&d, &mut rs, 3, true));
        let a = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[REVISION], "3");
        assert_eq!(a[REVISION_HISTORY], "1");
        assert_eq!(a["kubernetes.io/change-cause"], "undo");
        assert!(
            !a.contains_key(DESIRED_REPLICAS),
            "existing ReplicaSets keep their replica annotations"
        );
        assert!(set_new_replica_set_annotations(&d, &mut rs, 5, true));
        assert_eq!(rs.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY], "1,3");
        assert!(
            !set_new_replica_set_annotations(&d, &mut rs, 5, true),
            "nothing left to change"
        );
    }
}
