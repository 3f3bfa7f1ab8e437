//! Unknown-field detection for `fieldValidation=Strict|Warn`: walks an object alongside its schema and
//! reports every field the schema does not define. Maps (`additionalProperties`), free-form objects
//! (`RawExtension`, `FieldsV1`: `type: object` without properties) and `x-kubernetes-preserve-unknown-fields`
//! accept anything.

use serde_json::{Map, Value};

use crate::definitions::REF_PREFIX;

/// Paths (`.spec.foo`, `.spec.containers[0].bogus`) of fields of `obj` unknown to definition `name`.
pub fn unknown_fields(components: &Map<String, Value>, name: &str, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(schema) = components.get(name) {
        let mut path = String::new();
        walk(components, schema, obj, &mut path, &mut out);
    }
    out
}

/// Follows `$ref` and single-element `allOf` wrappers (how a described reference is written) to the schema
/// that has the structure.
fn resolve<'a>(components: &'a Map<String, Value>, mut schema: &'a Value) -> &'a Value {
    // Bounded: a reference cycle in a broken document must not hang a request.
    for _ in 0..32 {
        if let Some(Value::String(reference)) = schema.get("$ref") {
            match reference.strip_prefix(REF_PREFIX).and_then(|n| components.get(n)) {
                Some(target) => schema = target,
                None => return &Value::Null,
            }
        } else if schema.get("properties").is_none()
            && let Some(Value::Array(all_of)) = schema.get("allOf")
            && all_of.len() == 1
        {
            schema = &all_of[0];
        } else {
            break;
        }
    }
    schema
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

fn walk(
    components: &Map<String, Value>,
    schema: &Value,
    value: &Value,
    path: &mut String,
    out: &mut Vec<String>,
) {
    if preserves_unknown(schema) {
        return;
    }
    let schema = resolve(components, schema);
    if preserves_unknown(schema) {
        return;
    }
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if properties.is_none() && !matches!(additional, Some(Value::Object(_))) {
                // Free-form object (or a non-object schema, which type checking reports instead).
                return;
            }
            for (key, child) in fields {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(property), _) => walk(components, property, child, path, out),
                    (None, Some(Value::Object(_))) => {
                        walk(components, additional.expect("matched Some"), child, path, out)
                    }
                    (None, Some(Value::Bool(true))) => {}
                    (None, _) => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(components, item_schema, item, path, out);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}
