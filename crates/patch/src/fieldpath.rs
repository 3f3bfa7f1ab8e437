//! Sets of field paths — what a field manager owns — and their `FieldsV1` encoding in `managedFields`
//! (`{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{}}}}}`).
//!
//! A [`FieldSet`] is a tree: each node is one step into the object ([`PathElement`]) and is a *member* of
//! the set if that exact path is owned. `".": {}` in FieldsV1 marks a node that is owned and also has owned
//! children; a leaf `{}` is an owned node without children; a node without `"."` only leads to members.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::strategic::scalar_key;

/// One step of a path, ordered as structured-merge-diff orders them (fields, then keys, values, indices).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PathElement {
    /// `f:NAME` — a field of an object, or an entry of a map.
    Field(String),
    /// `k:{…}` — the element of a list-map with these key fields, kept as canonical JSON (sorted keys).
    Key(String),
    /// `v:…` — the element of a set with this value, kept as canonical JSON.
    Value(String),
    /// `i:N` — the element at this position of a list without identities.
    Index(usize),
}

impl PathElement {
    /// The `k:` element for a list-map element whose key fields have these values.
    pub(crate) fn key<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Value)>) -> PathElement {
        let mut fields: Vec<(&str, &Value)> = fields.into_iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let mut canonical = String::from("{");
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                canonical.push(',');
            }
            canonical.push_str(&Value::from(*name).to_string());
            canonical.push(':');
            canonical.push_str(&scalar_key(value));
        }
        canonical.push('}');
        PathElement::Key(canonical)
    }

    /// The `v:` element for a set element.
    pub(crate) fn value(value: &Value) -> PathElement {
        PathElement::Value(scalar_key(value))
    }

    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(canonical) => format!("k:{canonical}"),
            PathElement::Value(canonical) => format!("v:{canonical}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    fn decode(encoded: &str) -> Result<PathElement, String> {
        let parse = |json: &str| {
            serde_json::from_str::<Value>(json).map_err(|e| format!("bad path element {encoded:?}: {e}"))
        };
        if let Some(name) = encoded.strip_prefix("f:") {
            Ok(PathElement::Field(name.to_string()))
        } else if let Some(json) = encoded.strip_prefix("k:") {
            match parse(json)? {
                Value::Object(fields) => Ok(PathElement::key(fields.iter().map(|(k, v)| (k.as_str(), v)))),
                _ => Err(format!("bad path element {encoded:?}: keys must be an object")),
            }
        } else if let Some(json) = encoded.strip_prefix("v:") {
            Ok(PathElement::value(&parse(json)?))
        } else if let Some(index) = encoded.strip_prefix("i:") {
            index
                .parse()
                .map(PathElement::Index)
                .map_err(|e| format!("bad path element {encoded:?}: {e}"))
        } else {
            Err(format!("unknown path element {encoded:?}"))
        }
    }
}

/// A path as Kubernetes prints it in conflicts: `.spec.template.spec.containers[name="nginx"].image`.
pub(crate) fn display_path(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            PathElement::Key(canonical) => {
                let fields = serde_json::from_str::<Map<String, Value>>(canonical).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push('[');
                out.push_str(&parts.join(","));
                out.push(']');
            }
            PathElement::Value(canonical) => out.push_str(&format!("[={canonical}]")),
            PathElement::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A set of paths, as a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    /// Whether the path leading to this node is itself in the set.
    pub(crate) member: bool,
    pub(crate) children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub(crate) fn child(&mut self, element: PathElement) -> &mut FieldSet {
        self.children.entry(element).or_default()
    }

    /// Drops children that hold no members, after a walk that created them speculatively.
    pub(crate) fn prune_empty_child(&mut self, element: &PathElement) {
        if self.children.get(element).is_some_and(FieldSet::is_empty) {
            self.children.remove(element);
        }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, path: &[PathElement]) -> bool {
        self.subtree(path).is_some_and(|node| node.member)
    }

    /// The node at `path`, holding everything in the set at or below it.
    pub(crate) fn subtree(&self, path: &[PathElement]) -> Option<&FieldSet> {
        let mut node = self;
        for element in path {
            node = node.children.get(element)?;
        }
        Some(node)
    }

    pub(crate) fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (element, theirs) in &other.children {
            self.child(element.clone()).union_with(theirs);
        }
    }

    /// Removes every member of `other` (members only: a removed node's children stay unless also in `other`).
    pub(crate) fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (element, theirs) in &other.children {
            if let Some(mine) = self.children.get_mut(element) {
                mine.subtract(theirs);
                if mine.is_empty() {
                    self.children.remove(element);
                }
            }
        }
    }

    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, mine) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = mine.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// Every member path, in order.
    pub(crate) fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON of this set.
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            map.insert(element.encode(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// Parses a `fieldsV1` object. The root itself is never a member.
    pub(crate) fn from_fields_v1(fields: &Value) -> Result<FieldSet, String> {
        let mut set = FieldSet::parse_node(fields)?;
        set.member = false;
        Ok(set)
    }

    fn parse_node(fields: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = fields else {
            return Err(format!("fieldsV1 nodes must be objects, found {fields}"));
        };
        let mut node = FieldSet {
            member: map.is_empty(),
            children: BTreeMap::new(),
        };
        for (key, value) in map {
            if key == "." {
                node.member = true;
            } else {
                node.children
                    .insert(PathElement::decode(key)?, FieldSet::parse_node(value)?);
            }
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_v1_round_trip() {
        let encoded = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}},
            "f:metadata2": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}},
            "f:odd": {"i:0": {}}
        });
        let set = FieldSet::from_fields_v1(&encoded).unwrap();
        assert_eq!(set.to_fields_v1(), encoded);
        assert!(set.contains(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
        assert!(!set.contains(&[PathElement::Field("spec".into())]));
        let labels = [
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into()),
        ];
        assert!(set.contains(&labels));
    }

    #[test]
    fn keys_are_canonical_whatever_the_spelling() {
        let a = PathElement::decode("k:{\"protocol\": \"TCP\", \"containerPort\": 80.0}").unwrap();
        let b = PathElement::key([("containerPort", &json!(80)), ("protocol", &json!("TCP"))]);
        assert_eq!(a, b);
        assert_eq!(b.encode(), "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        assert!(PathElement::decode("x:1").is_err());
        assert!(PathElement::decode("k:[1]").is_err());
    }

    #[test]
    fn paths_display_like_kubernetes() {
        let path = [
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::key([("name", &json!("nginx"))]),
            PathElement::Field("image".into()),
        ];
        assert_eq!(display_path(&path), ".spec.containers[name=\"nginx\"].image");
        let set_path = [
            PathElement::Field("finalizers".into()),
            PathElement::value(&json!("a")),
        ];
        assert_eq!(display_path(&set_path), ".finalizers[=\"a\"]");
        let ports = [PathElement::key([
            ("port", &json!(80)),
            ("protocol", &json!("TCP")),
        ])];
        assert_eq!(display_path(&ports), "[port=80,protocol=\"TCP\"]");
    }

    #[test]
    fn set_algebra_is_member_wise() {
        let parse = |v: Value| FieldSet::from_fields_v1(&v).unwrap();
        let mut a = parse(
            json!({"f:spec": {"f:replicas": {}, "f:paused": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}}),
        );
        let b = parse(json!({"f:spec": {"f:replicas": {}}, "f:metadata": {"f:labels": {".": {}}}}));
        assert_eq!(a.intersection(&b), b);
        a.subtract(&b);
        assert_eq!(
            a,
            parse(json!({"f:spec": {"f:paused": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}))
        );
        a.union_with(&b);
        assert_eq!(a.paths().len(), 4);
        let mut empty = a.clone();
        empty.subtract(&a);
        assert!(empty.is_empty());
    }
}
