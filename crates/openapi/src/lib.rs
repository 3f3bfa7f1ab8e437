//! The API server's OpenAPI v3 documents (`GET /openapi/v3` and one document per group-version), generated
//! once at start-up from k8s-openapi's schemars schemas plus the `x-kubernetes-*` extensions those schemas
//! lack, and the schema walk behind `fieldValidation=Strict|Warn`.
//!
//! Start reading at [`OpenApi::build`]. [`definitions`] turns k8s-openapi types into `components.schemas`,
//! [`extensions`] adds merge keys / list types from a generated table, [`paths`] writes the operations
//! kube-apiserver publishes for each resource, and [`unknown`] finds fields an object has but its schema lacks.
//! [`v2`] converts the same definitions and operations into the Swagger 2.0 document (`GET /openapi/v2`,
//! gnostic protobuf or JSON) that kubectl before 1.29 reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value, json};

pub mod definitions;
pub mod extensions;
mod extensions_table;
pub mod paths;
pub mod unknown;
pub mod v2;

/// One served resource: what the registry knows about a kind, plus the function producing its schema
/// (`<k8s_openapi::api::apps::v1::Deployment as schemars::JsonSchema>::json_schema`).
#[derive(Clone, Copy)]
pub struct KindSchema {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Kubernetes verbs: `get list watch create update patch delete deletecollection`.
    pub verbs: &'static [&'static str],
    /// `"status"`, `"scale"`, `"binding"`, `"eviction"`, `"log"`, `"token"`, `"finalize"`, … — see
    /// [`paths::Subresource`] for the ones that get operations.
    pub subresources: &'static [&'static str],
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

/// All OpenAPI v3 documents of the served API, serialized once, and the v2 document, serialized when first
/// asked for.
pub struct OpenApi {
    index: Bytes,
    documents: BTreeMap<String, Bytes>,
    components: Map<String, Value>,
    definition_names: BTreeMap<(String, String, String), String>,
    kinds: Vec<KindSchema>,
    /// (JSON, protobuf). Lazy because only kubectl before 1.29 asks, and it is a few megabytes.
    v2: OnceLock<(Bytes, Bytes)>,
}

impl OpenApi {
    /// Generates every group-version document for `kinds`. Call once at server start: it runs every schema
    /// function and serializes the documents, so requests only clone [`Bytes`].
    pub fn build(kinds: &[KindSchema]) -> OpenApi {
        let components = definitions::generate(kinds);
        let mut by_group_version: BTreeMap<String, Vec<&KindSchema>> = BTreeMap::new();
        for kind in kinds {
            by_group_version
                .entry(group_version_path(kind.group, kind.version))
                .or_default()
                .push(kind);
        }

        let mut documents = BTreeMap::new();
        let mut index_paths = Map::new();
        for (gv_path, gv_kinds) in by_group_version {
            let document = group_version_document(&gv_kinds, &components);
            let bytes = Bytes::from(serde_json::to_vec(&document).expect("JSON values always serialize"));
            index_paths.insert(
                gv_path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{gv_path}?hash={}", content_hash(&bytes)) }),
            );
            documents.insert(gv_path, bytes);
        }
        let index = json!({ "paths": index_paths });

        let definition_names = kinds
            .iter()
            .map(|k| {
                let key = (k.group.to_owned(), k.version.to_owned(), k.kind.to_owned());
                (key, definitions::definition_name(k.group, k.version, k.kind))
            })
            .collect();
        OpenApi {
            index: Bytes::from(serde_json::to_vec(&index).expect("JSON values always serialize")),
            documents,
            components,
            definition_names,
            kinds: kinds.to_vec(),
            v2: OnceLock::new(),
        }
    }

    /// `GET /openapi/v2` with Accept `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`: the
    /// Swagger 2.0 document as a gnostic `openapi_v2.Document` message.
    pub fn v2_protobuf(&self) -> Bytes {
        self.v2().1.clone()
    }

    /// `GET /openapi/v2` as JSON.
    pub fn v2_json(&self) -> Bytes {
        self.v2().0.clone()
    }

    fn v2(&self) -> &(Bytes, Bytes) {
        self.v2.get_or_init(|| {
            let (json, protobuf) = v2::build(&self.kinds, &self.components);
            (Bytes::from(json), Bytes::from(protobuf))
        })
    }

    /// `GET /openapi/v3`: `{"paths":{"apis/apps/v1":{"serverRelativeURL":"/openapi/v3/apis/apps/v1?hash=…"}}}`.
    pub fn index_json(&self) -> Bytes {
        self.index.clone()
    }

    /// The document for `"api/v1"` or `"apis/apps/v1"` (the request path after `/openapi/v3/`, without the
    /// query; the `hash` query is only a cache buster).
    pub fn group_version_json(&self, path: &str) -> Option<Bytes> {
        self.documents.get(path.trim_matches('/')).cloned()
    }

    /// Every definition of every document, with the `x-kubernetes-*` extensions, keyed by Kubernetes'
    /// definition name — what `rkube_patch::schema::SchemaNode::for_definition` reads.
    pub fn components(&self) -> &Map<String, Value> {
        &self.components
    }

    /// `("apps", "v1", "Deployment")` → `"io.k8s.api.apps.v1.Deployment"`, for kinds passed to `build`.
    pub fn definition_name(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        let key = (group.to_owned(), version.to_owned(), kind.to_owned());
        self.definition_names.get(&key).map(String::as_str)
    }

    /// Paths (`.spec.foo`, `.spec.template.spec.containers[0].bogus`) of fields in `obj` that the kind's
    /// schema does not define; empty for kinds not passed to `build`. kube-apiserver reports each as
    /// `unknown field "spec.foo"` (without the leading dot).
    pub fn unknown_fields(&self, group: &str, version: &str, kind: &str, obj: &Value) -> Vec<String> {
        match self.definition_name(group, version, kind) {
            Some(name) => unknown::unknown_fields(&self.components, name, obj),
            None => Vec::new(),
        }
    }
}

/// `("", "v1")` → `"api/v1"`, `("apps", "v1")` → `"apis/apps/v1"`: the discovery path, which is also the
/// key of the OpenAPI index.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn group_version_document(kinds: &[&KindSchema], components: &Map<String, Value>) -> Value {
    let mut path_items = Map::new();
    for kind in kinds {
        for (path, item) in paths::resource_paths(kind) {
            path_items.insert(path, item);
        }
    }
    let paths = Value::Object(path_items);
    let mut schemas = Map::new();
    for name in referenced_definitions(&paths, components) {
        if let Some(schema) = components.get(&name) {
            schemas.insert(name, schema.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": concat!("v1.33.0+rkube-", env!("CARGO_PKG_VERSION")) },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": { "type": "apiKey", "description": "Bearer Token authentication",
                    "name": "authorization", "in": "header" }
            }
        },
        "security": [ { "BearerToken": [] } ],
    })
}

/// Every definition reachable through `$ref`s from `root`, so a document carries exactly the schemas its
/// operations use.
fn referenced_definitions(root: &Value, components: &Map<String, Value>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending = Vec::new();
    collect_refs(root, &mut pending);
    while let Some(name) = pending.pop() {
        if seen.insert(name.clone())
            && let Some(schema) = components.get(&name)
        {
            collect_refs(schema, &mut pending);
        }
    }
    seen
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(definitions::REF_PREFIX) {
                            out.push(name.to_owned());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// 64-bit FNV-1a as 16 upper-case hex digits. Clients treat the hash as an opaque cache key; it only has
/// to change when the document does.
fn content_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016X}")
}
