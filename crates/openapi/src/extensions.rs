//! The `x-kubernetes-*` extensions k8s-openapi's schemas lack: strategic-merge-patch keys and strategies,
//! server-side-apply list and map types. The data lives in one table, `extensions_table.rs`, generated from
//! the markers on Kubernetes' Go API types (`gen/extract_go_facts.py` + `gen/render_extensions.py`); this
//! module only applies it.

use serde_json::{Map, Value};

use crate::extensions_table::GENERATED;

/// One parsed table entry: the extensions for `definition.property` (or the definition itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldExtensions {
    pub definition: &'static str,
    /// Empty for extensions on the definition itself (`LabelSelector` is `x-kubernetes-map-type: atomic`).
    pub property: &'static str,
    pub extensions: Vec<(String, Value)>,
}

/// Every table entry, parsed. `list-map-keys` becomes an array, everything else a string.
pub fn table() -> Vec<FieldExtensions> {
    GENERATED
        .iter()
        .map(|(definition, property, spec)| FieldExtensions {
            definition,
            property,
            extensions: spec
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(key, value)| {
                    let value = if key == "list-map-keys" {
                        Value::Array(value.split(',').map(|k| Value::String(k.to_owned())).collect())
                    } else {
                        Value::String(value.to_owned())
                    };
                    (format!("x-kubernetes-{key}"), value)
                })
                .collect(),
        })
        .collect()
}

/// Adds the table's extensions to the definitions present in `components`. Entries for definitions that
/// are not served are skipped (the table covers whole API packages).
pub fn apply(components: &mut Map<String, Value>) {
    for entry in table() {
        let Some(Value::Object(definition)) = components.get_mut(entry.definition) else {
            continue;
        };
        let target = if entry.property.is_empty() {
            definition
        } else {
            match definition
                .get_mut("properties")
                .and_then(|p| p.get_mut(entry.property))
            {
                Some(Value::Object(property)) => property,
                _ => continue,
            }
        };
        // OpenAPI 3.0 ignores siblings of a bare `$ref`; Kubernetes wraps such references in `allOf`.
        if let Some(reference) = target.remove("$ref") {
            target.insert(
                "allOf".into(),
                Value::Array(vec![serde_json::json!({ "$ref": reference })]),
            );
        }
        for (key, value) in entry.extensions {
            target.insert(key, value);
        }
    }
}
