//! Server-side apply and field ownership (`metadata.managedFields`), modelled on kube-apiserver's field
//! manager (structured-merge-diff).
//!
//! Every write records who set which fields. [`track_update`] does it for ordinary writes (create, update,
//! patch with a `fieldManager`): the writer takes the fields it changed from everyone else, without
//! conflicts. [`server_side_apply`] merges a manager's whole intended configuration into the object: the
//! manager then owns exactly the fields of that configuration, fields it applied before and no longer
//! does are removed (unless someone else owns them too), and changing a value another manager owns is a
//! [`ApplyError::Conflict`] unless the apply is forced, which moves ownership.
//!
//! Fields the server owns are never managed: `apiVersion`, `kind`, `status`, and `metadata.name`,
//! `namespace`, `uid`, `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`, `selfLink`.
//! Not modelled (yet): the status subresource's own managers, kube-apiserver's cap of ten Update entries
//! and its upkeep of `kubectl.kubernetes.io/last-applied-configuration` on server-side apply.

mod managed;
mod typed;

use serde_json::{Map, Value};

use crate::fieldpath::{FieldSet, PathElement, display_path};
use crate::schema::SchemaNode;
use managed::{APPLY, ManagedEntry, UPDATE};

/// Why a server-side apply was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// The configuration changes fields other managers own; kube-apiserver answers 409 with this message
    /// and one `FieldManagerConflict` cause per conflict. Applying again with `force` takes the fields.
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<Conflict>),
    /// The configuration cannot be applied: not an object, `metadata.managedFields` set, a list element
    /// without its key fields or with a duplicate key.
    #[error("{0}")]
    Invalid(String),
}

impl ApplyError {
    /// The HTTP status kube-apiserver answers with: 409 for conflicts, 400 for an invalid configuration.
    pub fn status_code(&self) -> u16 {
        match self {
            ApplyError::Conflict(_) => 409,
            ApplyError::Invalid(_) => 400,
        }
    }
}

/// One field another manager owns and the configuration would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owning manager, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// How it wrote the field: `Apply` or `Update`.
    pub operation: String,
    /// The API version it wrote with.
    pub api_version: String,
    /// The subresource it wrote through, if any.
    pub subresource: Option<String>,
    /// The field, as Kubernetes prints it: `.spec.replicas`, `.spec.containers[name="nginx"].image`.
    pub field: String,
}

impl Conflict {
    /// The manager as kube-apiserver names it in messages: `"kubectl-client-side-apply" using apps/v1`
    /// for an Update manager, just `"kubectl"` for an Apply manager.
    pub fn manager_description(&self) -> String {
        let mut out = Value::from(self.manager.as_str()).to_string();
        if let Some(subresource) = &self.subresource {
            out.push_str(&format!(
                " with subresource {}",
                Value::from(subresource.as_str())
            ));
        }
        if self.operation == UPDATE {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }
}

fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager_description(),
            only.field
        );
    }
    let mut lines = Vec::with_capacity(conflicts.len() * 2);
    let mut current = None;
    for conflict in conflicts {
        let manager = conflict.manager_description();
        if current.as_ref() != Some(&manager) {
            lines.push(format!("conflicts with {manager}:"));
            current = Some(manager);
        }
        lines.push(format!("- {}", conflict.field));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Metadata the server owns: never merged from an applied configuration, never managed.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The manager kube-apiserver credits with an object's fields when the first apply finds no managed
/// fields at all.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

fn strip_server_fields(set: &mut FieldSet) {
    for field in ["apiVersion", "kind", "status"] {
        set.children.remove(&PathElement::Field(field.into()));
    }
    let metadata = PathElement::Field("metadata".into());
    if let Some(node) = set.children.get_mut(&metadata) {
        node.member = false;
        for field in SERVER_METADATA {
            node.children.remove(&PathElement::Field((*field).into()));
        }
    }
    set.prune_empty_child(&metadata);
}

fn api_version_of(object: &Value) -> String {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Server-side apply of the configuration `applied` by `manager` to `live` (`None`: the object does not
/// exist and is created from the configuration). Returns the new object with `metadata.managedFields`
/// updated; `now` is the RFC 3339 time recorded for the manager.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: Option<SchemaNode<'_>>,
    now: &str,
) -> Result<Value, ApplyError> {
    let Value::Object(config) = applied else {
        return Err(ApplyError::Invalid(
            "an applied configuration must be a JSON object".into(),
        ));
    };
    if config
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|m| !m.is_null() && m.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApplyError::Invalid("metadata.managedFields must be nil".into()));
    }
    let api_version = api_version_of(applied);
    let mut config_fields = typed::applied_fields(applied, schema)
        .map_err(|e| ApplyError::Invalid(format!("failed to create typed patch object: {e}")))?;
    strip_server_fields(&mut config_fields);
    let our_entry = |fields: FieldSet, time: String| ManagedEntry {
        manager: manager.to_string(),
        operation: APPLY.to_string(),
        api_version: api_version.clone(),
        time: Some(time),
        subresource: None,
        fields,
    };

    let Some(live) = live else {
        let mut created = applied.clone();
        managed::encode(&mut created, vec![our_entry(config_fields, now.to_string())]);
        return Ok(created);
    };

    let mut entries = managed::decode(live);
    if entries.is_empty() {
        // Nobody is on record for this object's fields (it was written without field tracking): credit a
        // stand-in manager with all of them, so applying different values is a conflict, not a silent win.
        let mut fields = typed::all_fields(live, schema);
        strip_server_fields(&mut fields);
        entries.push(ManagedEntry {
            manager: BEFORE_FIRST_APPLY.to_string(),
            operation: UPDATE.to_string(),
            api_version: api_version_of(live),
            time: Some(now.to_string()),
            subresource: None,
            fields,
        });
    }
    let previous = entries
        .iter()
        .position(|e| e.is(manager, APPLY, ""))
        .map(|at| entries.remove(at));

    let mut merged = live.clone();
    let Value::Object(merged_map) = &mut merged else {
        return Err(ApplyError::Invalid("the live object is not a JSON object".into()));
    };
    if let Some(Value::Object(metadata)) = merged_map.get_mut("metadata") {
        metadata.remove("managedFields");
    }
    typed::merge_into(merged_map, config, schema, &["status", "metadata"]);
    if let Some(Value::Object(config_metadata)) = config.get("metadata") {
        let metadata = merged_map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !metadata.is_object() {
            *metadata = Value::Object(Map::new());
        }
        if let Value::Object(metadata) = metadata {
            let metadata_schema = schema.and_then(|s| s.field("metadata"));
            typed::merge_into(metadata, config_metadata, metadata_schema, SERVER_METADATA);
        }
    }

    // Fields this manager applied last time and no longer does go, unless someone still wants them.
    if let Some(previous) = &previous {
        let mut dropped = previous.fields.clone();
        dropped.subtract(&config_fields);
        if !dropped.is_empty() {
            let mut others = FieldSet::default();
            for entry in &entries {
                others.union_with(&entry.fields);
            }
            let wanted =
                |set: &FieldSet, path: &[PathElement]| set.subtree(path).is_some_and(|n| !n.is_empty());
            for path in dropped.paths() {
                if !wanted(&config_fields, &path) && !wanted(&others, &path) {
                    typed::remove_path(&mut merged, &path, schema);
                }
            }
        }
    }

    let mut comparison = typed::compare(live, &merged, schema);
    strip_server_fields(&mut comparison.changed);
    strip_server_fields(&mut comparison.removed);
    if !force {
        let mut conflicts = Vec::new();
        for entry in &entries {
            for path in entry.fields.intersection(&comparison.changed).paths() {
                conflicts.push(Conflict {
                    manager: entry.manager.clone(),
                    operation: entry.operation.clone(),
                    api_version: entry.api_version.clone(),
                    subresource: entry.subresource.clone(),
                    field: display_path(&path),
                });
            }
        }
        if !conflicts.is_empty() {
            conflicts.sort_by(|a, b| {
                (&a.manager, &a.operation, &a.api_version, &a.subresource).cmp(&(
                    &b.manager,
                    &b.operation,
                    &b.api_version,
                    &b.subresource,
                ))
            });
            return Err(ApplyError::Conflict(conflicts));
        }
    }
    for entry in &mut entries {
        entry.fields.subtract(&comparison.changed);
        entry.fields.subtract(&comparison.removed);
    }
    // Like kube-apiserver, a no-op apply leaves the manager's timestamp alone.
    let unchanged = comparison.changed.is_empty() && comparison.removed.is_empty();
    let time = match previous.and_then(|p| p.time) {
        Some(time) if unchanged => time,
        _ => now.to_string(),
    };
    entries.push(our_entry(config_fields, time));
    managed::encode(&mut merged, entries);
    Ok(merged)
}

/// Records an ordinary write (create when `old` is `None`, update, patch) by `manager` in `new`'s
/// `metadata.managedFields`: the fields that changed become the manager's (its Update entry for `new`'s
/// apiVersion), and are taken from every other manager, as are fields that were removed. A write that
/// changes nothing records nothing. Managed fields the client sent in `new` are kept as the starting point,
/// else `old`'s are.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    schema: Option<SchemaNode<'_>>,
    now: &str,
) {
    let api_version = api_version_of(new);
    let mut entries = managed::decode(new);
    if entries.is_empty()
        && let Some(old) = old
    {
        entries = managed::decode(old);
    }
    let empty = Value::Object(Map::new());
    let mut comparison = typed::compare(old.unwrap_or(&empty), new, schema);
    strip_server_fields(&mut comparison.changed);
    strip_server_fields(&mut comparison.removed);
    for entry in &mut entries {
        entry.fields.subtract(&comparison.changed);
        entry.fields.subtract(&comparison.removed);
    }
    if !comparison.changed.is_empty() {
        match entries.iter_mut().find(|e| e.is(manager, UPDATE, &api_version)) {
            Some(entry) => {
                entry.fields.union_with(&comparison.changed);
                entry.time = Some(now.to_string());
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_string(),
                operation: UPDATE.to_string(),
                api_version,
                time: Some(now.to_string()),
                subresource: None,
                fields: comparison.changed,
            }),
        }
    }
    managed::encode(new, entries);
}

#[cfg(test)]
mod tests;
