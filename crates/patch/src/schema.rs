//! A read-only view of OpenAPI v3 `components.schemas`, just deep enough for patching: which properties an
//! object has, what a list holds, and the `x-kubernetes-*` extensions that tell strategic merge patch and
//! server-side apply how to merge lists and maps.
//!
//! [`SchemaNode`] is a `Copy` pair of references, so walking a document alongside its schema costs nothing.
//! `$ref` (`#/components/schemas/NAME`) and the single-element `allOf: [{$ref}]` wrapper the Kubernetes
//! OpenAPI uses for properties are followed transparently; the wrapper's own extensions still count, because
//! that is where Kubernetes puts them (`"containers": {"items": …, "x-kubernetes-patch-merge-key": "name"}`,
//! `"strategy": {"allOf": [{"$ref": …}], "x-kubernetes-patch-strategy": "retainKeys"}`).

use serde_json::{Map, Value};

/// How deep a chain of `$ref`s may go before we give up; protects against reference loops.
const MAX_REF_HOPS: usize = 16;

/// One schema inside a `components.schemas` map.
#[derive(Clone, Copy)]
pub struct SchemaNode<'a> {
    components: &'a Map<String, Value>,
    /// The schema as written where it was referenced from: its extensions apply.
    site: &'a Value,
    /// The schema after following `$ref`/`allOf`: properties, items, and the definition's own extensions.
    resolved: &'a Value,
}

impl std::fmt::Debug for SchemaNode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The components map is huge; the resolved node is what a reader wants to see.
        f.debug_struct("SchemaNode")
            .field("resolved", self.resolved)
            .finish()
    }
}

impl<'a> SchemaNode<'a> {
    /// The definition `name` (e.g. `"io.k8s.api.apps.v1.Deployment"`) in `components`, the OpenAPI v3
    /// `components.schemas` map.
    pub fn for_definition(components: &'a Map<String, Value>, name: &str) -> Option<Self> {
        components.get(name).map(|site| Self::at(components, site))
    }

    fn at(components: &'a Map<String, Value>, site: &'a Value) -> Self {
        let mut resolved = site;
        for _ in 0..MAX_REF_HOPS {
            match next_hop(components, resolved) {
                Some(next) => resolved = next,
                None => break,
            }
        }
        SchemaNode {
            components,
            site,
            resolved,
        }
    }

    /// The schema of the object property `name`, if this is an object schema that declares it.
    pub fn property(self, name: &str) -> Option<Self> {
        let site = self.resolved.get("properties")?.get(name)?;
        Some(Self::at(self.components, site))
    }

    /// The schema of the elements, if this is an array schema.
    pub fn items(self) -> Option<Self> {
        let site = self.resolved.get("items")?;
        site.is_object().then(|| Self::at(self.components, site))
    }

    /// The schema of the values, if this is a map (`additionalProperties` with a schema).
    pub fn additional_properties(self) -> Option<Self> {
        let site = self.resolved.get("additionalProperties")?;
        site.is_object().then(|| Self::at(self.components, site))
    }

    /// The schema of the value stored under `key` in an object of this schema: a declared property, or else
    /// the map's value schema.
    pub fn field(self, key: &str) -> Option<Self> {
        self.property(key).or_else(|| self.additional_properties())
    }

    /// Whether `key` is a declared property (a struct field) rather than an entry of a map.
    pub fn declares(self, key: &str) -> bool {
        self.resolved.get("properties").and_then(|p| p.get(key)).is_some()
    }

    /// `x-kubernetes-patch-strategy`, split on commas (`"merge,retainKeys"` → `merge`, `retainKeys`).
    pub fn patch_strategies(self) -> impl Iterator<Item = &'a str> {
        self.extension_str("x-kubernetes-patch-strategy")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Whether `x-kubernetes-patch-strategy` includes `strategy`.
    pub fn has_patch_strategy(self, strategy: &str) -> bool {
        self.patch_strategies().any(|s| s == strategy)
    }

    /// `x-kubernetes-patch-merge-key`: the field identifying elements of a merging list.
    pub fn patch_merge_key(self) -> Option<&'a str> {
        self.extension_str("x-kubernetes-patch-merge-key")
    }

    /// `x-kubernetes-list-type`: `atomic`, `set` or `map`.
    pub fn list_type(self) -> Option<&'a str> {
        self.extension_str("x-kubernetes-list-type")
    }

    /// `x-kubernetes-list-map-keys`: the fields identifying elements of a `map` list.
    pub fn list_map_keys(self) -> Vec<&'a str> {
        self.extension("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// `x-kubernetes-map-type`: `atomic` or `granular`.
    pub fn map_type(self) -> Option<&'a str> {
        self.extension_str("x-kubernetes-map-type")
    }

    /// The schema's `default` value, used for list-map keys a client may omit (`protocol: TCP`).
    pub fn default_value(self) -> Option<&'a Value> {
        self.site.get("default").or_else(|| self.resolved.get("default"))
    }

    fn extension(self, name: &str) -> Option<&'a Value> {
        self.site.get(name).or_else(|| self.resolved.get(name))
    }

    fn extension_str(self, name: &str) -> Option<&'a str> {
        self.extension(name).and_then(Value::as_str)
    }

    /// How server-side apply treats a list of this schema (`x-kubernetes-list-type`, falling back to the
    /// patch strategy the way Kubernetes converts its OpenAPI for structured merge).
    pub(crate) fn list_kind(self) -> ListKind<'a> {
        match self.list_type() {
            Some("map") => {
                let keys = self.list_map_keys();
                if keys.is_empty() {
                    self.patch_merge_key()
                        .map_or(ListKind::Atomic, |k| ListKind::Map(vec![k]))
                } else {
                    ListKind::Map(keys)
                }
            }
            Some("set") => ListKind::Set,
            Some(_) => ListKind::Atomic,
            None if self.has_patch_strategy("merge") => match self.patch_merge_key() {
                Some(key) => ListKind::Map(vec![key]),
                None => ListKind::Set,
            },
            None => ListKind::Atomic,
        }
    }

    /// Whether the field `key` exists even in an empty object of this schema, the way a Go struct encodes
    /// its non-pointer and non-`omitempty` fields: it is `required`, or has an object or list `default`
    /// (which the Kubernetes OpenAPI gives non-pointer struct fields). Server-side apply's "added" field
    /// sets leave such fields out as members of their own, as kube-apiserver's do.
    pub(crate) fn present_when_empty(self, key: &str) -> bool {
        let required = self
            .resolved
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|k| k.as_str() == Some(key)));
        required
            || self
                .resolved
                .get("properties")
                .and_then(|p| p.get(key))
                .and_then(|site| site.get("default"))
                .is_some_and(|d| d.is_object() || d.is_array())
    }

    /// Whether an object of this schema is replaced as a whole (`x-kubernetes-map-type: atomic`).
    pub(crate) fn is_atomic_map(self) -> bool {
        self.map_type() == Some("atomic")
    }
}

/// How the elements of a list are identified for merging and ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListKind<'a> {
    /// The list is one value: replaced whole, owned whole.
    Atomic,
    /// Scalars, each element its own identity.
    Set,
    /// Objects identified by these key fields.
    Map(Vec<&'a str>),
}

/// The schema a `$ref` or single `allOf`/`anyOf`/`oneOf` wrapper stands for, if `schema` is one.
fn next_hop<'a>(components: &'a Map<String, Value>, schema: &'a Value) -> Option<&'a Value> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = ["#/components/schemas/", "#/definitions/", "#/$defs/"]
            .iter()
            .find_map(|prefix| reference.strip_prefix(prefix))?;
        return components.get(name);
    }
    if schema.get("properties").is_some() || schema.get("items").is_some() {
        return None;
    }
    // Wrappers: `allOf: [{$ref}]` (Kubernetes), `anyOf: [{$ref}, {type: null}]` (schemars for Option<T>).
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(options) = schema.get(combinator).and_then(Value::as_array) {
            return options
                .iter()
                .find(|o| o.get("type").and_then(Value::as_str) != Some("null"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::components;

    #[test]
    fn follows_refs_and_all_of_wrappers() {
        let c = components();
        let deployment = SchemaNode::for_definition(&c, "io.k8s.api.apps.v1.Deployment").unwrap();
        let containers = deployment
            .property("spec")
            .and_then(|s| s.property("template"))
            .and_then(|t| t.property("spec"))
            .and_then(|s| s.property("containers"))
            .unwrap();
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert_eq!(containers.list_kind(), ListKind::Map(vec!["name"]));
        let env = containers.items().unwrap().property("env").unwrap();
        assert_eq!(env.patch_merge_key(), Some("name"));
        assert!(env.has_patch_strategy("merge"));
    }

    #[test]
    fn comma_separated_strategies_and_list_types() {
        let c = components();
        let pod_spec = SchemaNode::for_definition(&c, "io.k8s.api.core.v1.PodSpec").unwrap();
        let volumes = pod_spec.property("volumes").unwrap();
        assert!(volumes.has_patch_strategy("merge"));
        assert!(volumes.has_patch_strategy("retainKeys"));
        assert!(!volumes.has_patch_strategy("replace"));
        assert_eq!(
            pod_spec.property("tolerations").unwrap().list_kind(),
            ListKind::Atomic
        );
        let ports = pod_spec
            .property("containers")
            .unwrap()
            .items()
            .unwrap()
            .property("ports")
            .unwrap();
        assert_eq!(
            ports.list_kind(),
            ListKind::Map(vec!["containerPort", "protocol"])
        );
        let protocol = ports.items().unwrap().property("protocol").unwrap();
        assert_eq!(protocol.default_value(), Some(&Value::from("TCP")));
    }

    #[test]
    fn maps_and_atomic_maps() {
        let c = components();
        let meta = SchemaNode::for_definition(&c, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta").unwrap();
        assert_eq!(meta.property("finalizers").unwrap().list_kind(), ListKind::Set);
        let labels = meta.property("labels").unwrap();
        assert!(labels.additional_properties().is_some());
        assert!(meta.declares("labels"));
        assert!(!labels.declares("app"));
        let selector = SchemaNode::for_definition(&c, "io.k8s.api.apps.v1.DeploymentSpec")
            .unwrap()
            .property("selector")
            .unwrap();
        assert!(selector.is_atomic_map());
        assert!(selector.property("matchLabels").is_some());
    }

    #[test]
    fn unknown_names_and_reference_loops_are_harmless() {
        let c = components();
        assert!(SchemaNode::for_definition(&c, "io.k8s.api.core.v1.Nope").is_none());
        let mut looping = Map::new();
        looping.insert("A".into(), serde_json::json!({"$ref": "#/components/schemas/B"}));
        looping.insert("B".into(), serde_json::json!({"$ref": "#/components/schemas/A"}));
        let a = SchemaNode::for_definition(&looping, "A").unwrap();
        assert!(a.property("x").is_none());
        assert_eq!(a.list_kind(), ListKind::Atomic);
    }
}
