//! `metadata.managedFields`: one entry per field manager and operation, each with the set of fields it
//! owns, read from and written back to the object.

use serde_json::{Map, Value};

use crate::fieldpath::FieldSet;

pub(crate) const APPLY: &str = "Apply";
pub(crate) const UPDATE: &str = "Update";

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ManagedEntry {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: Option<String>,
    pub(crate) subresource: Option<String>,
    pub(crate) fields: FieldSet,
}

impl ManagedEntry {
    /// Whether this entry is the one `manager` writes with `operation`: Apply entries are per manager,
    /// Update entries per manager and API version (as kube-apiserver keys them).
    pub(crate) fn is(&self, manager: &str, operation: &str, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.is_none()
            && (operation == APPLY || self.api_version == api_version)
    }

    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), Value::from(self.manager.as_str()));
        entry.insert("operation".into(), Value::from(self.operation.as_str()));
        entry.insert("apiVersion".into(), Value::from(self.api_version.as_str()));
        if let Some(time) = &self.time {
            entry.insert("time".into(), Value::from(time.as_str()));
        }
        entry.insert("fieldsType".into(), Value::from("FieldsV1"));
        entry.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            entry.insert("subresource".into(), Value::from(subresource.as_str()));
        }
        Value::Object(entry)
    }

    fn from_json(entry: &Value) -> Option<ManagedEntry> {
        let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_string);
        if entry
            .get("fieldsType")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "FieldsV1")
        {
            return None;
        }
        let fields = match entry.get("fieldsV1") {
            Some(fields) => FieldSet::from_fields_v1(fields).ok()?,
            None => FieldSet::default(),
        };
        Some(ManagedEntry {
            manager: text("manager").unwrap_or_default(),
            operation: text("operation")?,
            api_version: text("apiVersion").unwrap_or_default(),
            time: text("time"),
            subresource: text("subresource").filter(|s| !s.is_empty()),
            fields,
        })
    }
}

/// The entries of `object`'s `metadata.managedFields`. Entries that cannot be read (another fields type,
/// a corrupt set) are dropped, as kube-apiserver resets managed fields it cannot decode.
pub(crate) fn decode(object: &Value) -> Vec<ManagedEntry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(ManagedEntry::from_json).collect())
        .unwrap_or_default()
}

/// Writes `entries` (those owning anything) into `object`'s `metadata.managedFields`, in kube-apiserver's
/// order: Apply before Update, then oldest first, then by manager.
pub(crate) fn encode(object: &mut Value, mut entries: Vec<ManagedEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let Some(object) = object.as_object_mut() else {
        return;
    };
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(ManagedEntry::to_json).collect()),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unreadable_entries_are_dropped_and_the_rest_sorted() {
        let object = json!({"metadata": {"managedFields": [
            {"manager": "z", "operation": "Update", "apiVersion": "v1", "time": "2026-01-02T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:a": {}}}},
            {"manager": "bad", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"x:nope": {}}},
            {"manager": "other-format", "operation": "Update", "fieldsType": "FieldsV2", "fieldsV1": {}},
            {"manager": "no-operation", "fieldsType": "FieldsV1", "fieldsV1": {"f:a": {}}},
            {"manager": "a", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:b": {}}}},
            {"manager": "k", "operation": "Apply", "apiVersion": "v1", "time": "2026-01-03T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:c": {}}}, "subresource": ""},
            {"manager": "empty", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}},
        ]}});
        let entries = decode(&object);
        let managers: Vec<&str> = entries.iter().map(|e| e.manager.as_str()).collect();
        assert_eq!(managers, ["z", "a", "k", "empty"]);
        assert!(entries[2].is("k", APPLY, "whatever"));
        assert!(
            !entries[0].is("z", UPDATE, "v2"),
            "Update entries are per API version"
        );

        let mut out = json!({"metadata": {"name": "x"}});
        encode(&mut out, entries);
        let encoded: Vec<&str> = out["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(
            encoded,
            ["k", "a", "z"],
            "Apply first, then oldest first; empty entries dropped"
        );
        assert!(out["metadata"]["managedFields"][0].get("subresource").is_none());

        encode(&mut out, Vec::new());
        assert_eq!(out, json!({"metadata": {"name": "x"}}));
    }
}
