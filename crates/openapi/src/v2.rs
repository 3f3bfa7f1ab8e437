//! `GET /openapi/v2`: one Swagger 2.0 document for the whole API, converted from the OpenAPI 3 definitions and
//! operations the v3 documents are built from. kubectl before 1.29 reads it (as gnostic protobuf, see
//! [`proto`]) for `apply`/`create --validate=strict` (the PATCH operation's `fieldValidation` parameter),
//! client-side apply's merge keys and `explain`.
//!
//! The conversion: `#/components/schemas/X` → `#/definitions/X`; `allOf: [{$ref}]` (how OpenAPI 3 adds a
//! description next to a reference) → `$ref`; `nullable`, `oneOf`, `anyOf`, `not` dropped (Swagger 2.0 has
//! none, and clients reject what they cannot parse); `requestBody` → an `in: body` parameter plus `consumes`;
//! response `content` → `schema` plus `produces`; parameter `schema` flattened into the parameter.

use prost::Message;
use serde_json::{Map, Value, json};

use crate::{KindSchema, definitions, paths};

pub mod proto;

/// Where Swagger 2.0 references point.
pub const REF_PREFIX: &str = "#/definitions/";

/// The Swagger 2.0 JSON document and its gnostic protobuf encoding.
pub(crate) fn build(kinds: &[KindSchema], components: &Map<String, Value>) -> (Vec<u8>, Vec<u8>) {
    let doc = document(kinds, components);
    let protobuf = proto::document(&doc).encode_to_vec();
    let json = serde_json::to_vec(&doc).expect("JSON values always serialize");
    (json, protobuf)
}

/// The Swagger 2.0 document: every kind's paths and every definition.
pub fn document(kinds: &[KindSchema], components: &Map<String, Value>) -> Value {
    let mut path_items = Map::new();
    for kind in kinds {
        for (path, item) in paths::resource_paths(kind) {
            path_items.insert(path, path_item(&item));
        }
    }
    let definitions: Map<String, Value> = components
        .iter()
        .map(|(name, s)| (name.clone(), schema(s)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": concat!("v1.33.0+rkube-", env!("CARGO_PKG_VERSION")) },
        "paths": path_items,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": { "type": "apiKey", "description": "Bearer Token authentication",
                "name": "authorization", "in": "header" }
        },
        "security": [ { "BearerToken": [] } ],
    })
}

fn path_item(item: &Value) -> Value {
    let mut out = Map::new();
    for (key, value) in item.as_object().into_iter().flatten() {
        let converted = match key.as_str() {
            "parameters" => Value::Array(value.as_array().into_iter().flatten().map(parameter).collect()),
            "get" | "put" | "post" | "delete" | "patch" | "head" | "options" => operation(value),
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    Value::Object(out)
}

fn operation(op: &Value) -> Value {
    let mut out = Map::new();
    let mut parameters = Vec::new();
    for (key, value) in op.as_object().into_iter().flatten() {
        match key.as_str() {
            "parameters" => parameters.extend(value.as_array().into_iter().flatten().map(parameter)),
            "requestBody" => {
                let content = value.get("content").and_then(Value::as_object);
                let consumes: Vec<Value> = content
                    .into_iter()
                    .flat_map(|c| c.keys())
                    .map(|media_type| Value::String(media_type.clone()))
                    .collect();
                let body_schema = content
                    .and_then(|c| c.values().find_map(|media| media.get("schema")))
                    .map(schema)
                    .unwrap_or_else(|| json!({ "type": "object" }));
                let required = value.get("required").and_then(Value::as_bool).unwrap_or(false);
                // kube-apiserver lists the body first.
                parameters.insert(
                    0,
                    json!({ "name": "body", "in": "body", "required": required, "schema": body_schema }),
                );
                out.insert("consumes".into(), Value::Array(consumes));
            }
            "responses" => {
                let mut produces: Vec<Value> = Vec::new();
                let mut responses = Map::new();
                for (code, response) in value.as_object().into_iter().flatten() {
                    let mut converted = Map::new();
                    converted.insert(
                        "description".into(),
                        response.get("description").cloned().unwrap_or_else(|| "".into()),
                    );
                    if let Some(content) = response.get("content").and_then(Value::as_object) {
                        for media_type in content.keys() {
                            let media_type = Value::String(media_type.clone());
                            if !produces.contains(&media_type) {
                                produces.push(media_type);
                            }
                        }
                        if let Some(s) = content.values().find_map(|media| media.get("schema")) {
                            converted.insert("schema".into(), schema(s));
                        }
                    }
                    responses.insert(code.clone(), Value::Object(converted));
                }
                out.insert("produces".into(), Value::Array(produces));
                out.insert("responses".into(), Value::Object(responses));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out.insert("parameters".into(), Value::Array(parameters));
    out.insert("schemes".into(), json!(["https"]));
    Value::Object(out)
}

/// OpenAPI 3 keeps a non-body parameter's type under `schema`; Swagger 2.0 puts it on the parameter.
fn parameter(param: &Value) -> Value {
    let mut out = Map::new();
    for (key, value) in param.as_object().into_iter().flatten() {
        if key == "schema" {
            for (k, v) in schema(value).as_object().into_iter().flatten() {
                out.insert(k.clone(), v.clone());
            }
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// Converts one OpenAPI 3 schema (and everything nested in it) to Swagger 2.0.
pub fn schema(value: &Value) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    let mut out = Map::new();
    // `allOf: [{$ref}]` is OpenAPI 3's way to put siblings (description, default) next to a reference.
    if let Some(Value::Array(all_of)) = map.get("allOf")
        && let [single] = all_of.as_slice()
        && let Some(Value::String(reference)) = single.get("$ref")
    {
        out.insert("$ref".into(), convert_ref(reference).into());
    }
    for (key, v) in map {
        let converted = match key.as_str() {
            "$ref" => match v {
                Value::String(r) => convert_ref(r).into(),
                other => other.clone(),
            },
            "allOf" if out.contains_key("$ref") => continue,
            "allOf" => Value::Array(v.as_array().into_iter().flatten().map(schema).collect()),
            "nullable" | "oneOf" | "anyOf" | "not" | "writeOnly" | "deprecated" | "$schema" => continue,
            "type" => match v {
                // A JSON-Schema type list such as ["string", "null"]: Swagger 2.0 allows one type.
                Value::Array(types) => match types.iter().find(|t| t.as_str() != Some("null")) {
                    Some(t) => t.clone(),
                    None => continue,
                },
                other => other.clone(),
            },
            "properties" => Value::Object(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| (name.clone(), schema(s)))
                    .collect(),
            ),
            "items" | "additionalProperties" => schema(v),
            _ => v.clone(),
        };
        out.insert(key.clone(), converted);
    }
    Value::Object(out)
}

fn convert_ref(reference: &str) -> String {
    match reference.strip_prefix(definitions::REF_PREFIX) {
        Some(name) => format!("{REF_PREFIX}{name}"),
        None => reference.to_owned(),
    }
}
