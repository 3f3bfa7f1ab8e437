//! Kubernetes strategic merge patch, applied the way kube-apiserver applies it
//! (`k8s.io/apimachinery/pkg/util/strategicpatch`, `StrategicMergeMapPatch` with parallel-list merging and
//! unmatched nulls ignored).
//!
//! Like a JSON merge patch, maps merge recursively and `null` deletes a key. Lists are where it differs:
//! a list whose schema says `x-kubernetes-patch-strategy: merge` merges element by element — objects matched
//! by `x-kubernetes-patch-merge-key`, scalars as a set union — and every other list is replaced. Directives
//! in the patch steer the merge and never reach the result:
//! - `$patch: replace | delete | merge` on a map, and as a list element (`{"name": "x", "$patch": "delete"}`
//!   removes the element with that merge key, `{"$patch": "replace"}` makes the list exactly the patch's).
//!   A deleted map loses its key (kube-apiserver leaves an empty `{}` behind);
//! - `$retainKeys: [...]` drops every key of the original map not listed (`retainKeys` strategy);
//! - `$setElementOrder/<list>: [...]` fixes the final order of a merged list;
//! - `$deleteFromPrimitiveList/<list>: [...]` removes scalars from a merged scalar list.
//!
//! Element order follows kube-apiserver exactly: patched elements keep the patch's order, elements only on
//! the server keep theirs, and the two are interleaved by the server's order. An element the server has never
//! seen therefore lands *before* the server-only elements unless `$setElementOrder` (which kubectl always
//! sends) places it.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::PatchError;
use crate::schema::SchemaNode;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies the strategic merge patch `patch` to `original`. `schema` is the object's definition; without
/// one (an unknown kind) every list is replaced, as in a JSON merge patch.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: Option<SchemaNode<'_>>,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let merged = merge_map(original, patch, schema, &Path::ROOT)?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// Where in the document we are, for error messages; a linked list on the stack, rendered only on error.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: &'a str,
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path {
        parent: None,
        segment: "",
    };

    fn child(&'a self, segment: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            segment,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parent {
            None => f.write_str("patch"),
            Some(parent) if parent.parent.is_none() => f.write_str(self.segment),
            Some(parent) => write!(f, "{parent}.{}", self.segment),
        }
    }
}

fn malformed(path: &Path<'_>, message: impl fmt::Display) -> PatchError {
    PatchError::Malformed(format!("{path}: {message}"))
}

fn unprocessable(path: &Path<'_>, message: impl Into<String>) -> PatchError {
    PatchError::Unprocessable {
        path: path.to_string(),
        message: message.into(),
    }
}

fn missing_merge_key(path: &Path<'_>, key: &str, element: &Map<String, Value>) -> PatchError {
    PatchError::MissingMergeKey {
        path: path.to_string(),
        key: key.to_string(),
        element: Value::Object(element.clone()).to_string(),
    }
}

fn is_directive(key: &str) -> bool {
    key == PATCH
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Merges `patch` into `original`. `None` means the patch deleted the map (`$patch: delete`).
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<SchemaNode<'_>>,
    path: &Path<'_>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        // The patch's other keys become the whole map, still cleaned of nulls and directives.
        Some(Value::String(d)) if d == "replace" => original = Map::new(),
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(other) => return Err(malformed(path, format_args!("unknown $patch directive {other}"))),
    }
    apply_retain_keys(&mut original, patch, path)?;

    // Ordered lists are merged here, together with their `$setElementOrder`, and skipped below.
    let mut ordered: Vec<&str> = Vec::new();
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER)
            && set_element_order(&mut original, patch, field, order, schema, path)?
        {
            ordered.push(field);
        }
    }

    for (key, value) in patch {
        if is_directive(key) || ordered.contains(&key.as_str()) {
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let child_path = path.child(key);
        let child_schema = schema.and_then(|s| s.field(key));
        let merged = match (original.get_mut(key), value) {
            (Some(Value::Object(o)), Value::Object(p))
                if !child_schema.is_some_and(|s| s.has_patch_strategy("replace")) =>
            {
                merge_map(std::mem::take(o), p, child_schema, &child_path)?.map(Value::Object)
            }
            (Some(Value::Array(o)), Value::Array(p)) => Some(Value::Array(merge_list(
                std::mem::take(o),
                p,
                child_schema,
                &child_path,
            )?)),
            (_, value) => fresh(value, child_schema, &child_path)?,
        };
        match merged {
            Some(merged) => {
                original.insert(key.clone(), merged);
            }
            None => {
                original.remove(key);
            }
        }
    }

    for (key, value) in patch {
        let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
            continue;
        };
        let Value::Array(to_delete) = value else {
            return Err(malformed(path, format_args!("{key} must be a list")));
        };
        if field.is_empty() {
            return Err(malformed(path, format_args!("{key} names no list")));
        }
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|v| !to_delete.iter().any(|d| scalar_eq(d, v)));
        }
    }
    Ok(Some(original))
}

/// A patch value for a key the original lacks (or holds with another type): taken as is, except that
/// directives are applied to nothing and nulls dropped, so neither reaches the result.
fn fresh(
    value: &Value,
    schema: Option<SchemaNode<'_>>,
    path: &Path<'_>,
) -> Result<Option<Value>, PatchError> {
    Ok(match value {
        Value::Object(p) => merge_map(Map::new(), p, schema, path)?.map(Value::Object),
        Value::Array(p) => Some(Value::Array(merge_list(Vec::new(), p, schema, path)?)),
        scalar => Some(scalar.clone()),
    })
}

fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &Path<'_>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.get(RETAIN_KEYS) else {
        return Ok(());
    };
    let bad_format = || malformed(path, "$retainKeys must be a list of strings");
    let Value::Array(retain) = retain else {
        return Err(bad_format());
    };
    let keys = retain
        .iter()
        .map(|k| k.as_str().ok_or_else(bad_format))
        .collect::<Result<Vec<_>, _>>()?;
    // A patch that sets a field it also asks to drop contradicts itself.
    for (key, value) in patch {
        if !value.is_null() && !is_directive(key) && !keys.contains(&key.as_str()) {
            return Err(PatchError::RetainKeysMismatch {
                path: path.to_string(),
            });
        }
    }
    original.retain(|key, _| keys.contains(&key.as_str()));
    Ok(())
}

/// Merges the list `field` with its `$setElementOrder` directive `order` and puts the result into
/// `original` in that order. Returns false if the list is not patched as a list (then the caller handles
/// the key and the order is moot).
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    field: &str,
    order: &Value,
    schema: Option<SchemaNode<'_>>,
    path: &Path<'_>,
) -> Result<bool, PatchError> {
    let Value::Array(order) = order else {
        return Err(malformed(
            path,
            format_args!("{SET_ELEMENT_ORDER}{field} must be a list"),
        ));
    };
    if field.is_empty() {
        return Err(malformed(path, format_args!("{SET_ELEMENT_ORDER} names no list")));
    }
    let list_path = path.child(field);
    let list_schema = schema.and_then(|s| s.field(field));
    let merge_key = list_schema.and_then(|s| s.patch_merge_key());
    let patch_list = match patch.get(field) {
        None => None,
        Some(Value::Array(list)) => Some(list),
        Some(_) => return Ok(false),
    };
    if let Some(patch_list) = patch_list {
        check_order_matches_patch(patch_list, order, merge_key, &list_path)?;
    }
    let original_list = match original.get_mut(field) {
        Some(Value::Array(list)) => Some(std::mem::take(list)),
        _ => None,
    };
    let server_index = match &original_list {
        Some(list) => index_by_key(list, merge_key),
        None => HashMap::new(),
    };
    let merged = match (original_list, patch_list) {
        (Some(original_list), None) => original_list,
        (original_list, Some(patch_list)) => merge_list(
            original_list.unwrap_or_default(),
            patch_list,
            list_schema,
            &list_path,
        )?,
        (None, None) => return Ok(true),
    };
    let mut order_index = HashMap::with_capacity(order.len());
    for (position, element) in order.iter().enumerate() {
        if let (Some(key), Value::Object(map)) = (merge_key, element)
            && !map.contains_key(key)
        {
            return Err(missing_merge_key(&list_path, key, map));
        }
        if let Some(key) = element_key(element, merge_key) {
            order_index.entry(key).or_insert(position);
        }
    }
    let entries = merged
        .into_iter()
        .map(|value| {
            let key = element_key(&value, merge_key);
            let server = key.as_ref().and_then(|k| server_index.get(k).copied());
            let patch = key.as_ref().and_then(|k| order_index.get(k).copied());
            Entry { server, patch, value }
        })
        .collect();
    original.insert(field.to_string(), Value::Array(normalize_order(entries)));
    Ok(true)
}

/// kube-apiserver rejects a patch list whose elements appear in a different order than in the
/// `$setElementOrder` list sent with it (deletions aside).
fn check_order_matches_patch(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    path: &Path<'_>,
) -> Result<(), PatchError> {
    if merge_key.is_none() && patch_list.iter().any(Value::is_object) {
        // Without a merge key objects have no identity to order by.
        return Ok(());
    }
    let mut order_position = 0;
    for element in patch_list {
        if let Value::Object(map) = element {
            if map.contains_key(PATCH) {
                continue;
            }
            if let Some(key) = merge_key
                && !map.contains_key(key)
            {
                return Err(missing_merge_key(path, key, map));
            }
        }
        let key = element_key(element, merge_key);
        loop {
            let Some(ordered) = order.get(order_position) else {
                return Err(malformed(
                    path,
                    "the order in the patch list does not match $setElementOrder",
                ));
            };
            order_position += 1;
            if key.is_some() && element_key(ordered, merge_key) == key {
                break;
            }
        }
    }
    Ok(())
}

/// Merges a patch list into an original list according to the list's patch strategy.
fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    schema: Option<SchemaNode<'_>>,
    path: &Path<'_>,
) -> Result<Vec<Value>, PatchError> {
    let Some(schema) = schema.filter(|s| s.has_patch_strategy("merge")) else {
        // Replaced lists are taken as sent; only stray directive elements are dropped.
        return Ok(patch
            .iter()
            .filter(|e| !is_directive_element(e))
            .cloned()
            .collect());
    };
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if elements_are_objects(&original, patch, path)? {
        merge_object_list(original, patch, schema, path)
    } else {
        Ok(merge_scalar_list(original, patch))
    }
}

fn is_directive_element(element: &Value) -> bool {
    element.as_object().is_some_and(|m| m.contains_key(PATCH))
}

/// Whether the elements of both lists are objects (else scalars); lists of lists and mixed lists are
/// refused, as kube-apiserver does.
fn elements_are_objects(original: &[Value], patch: &[Value], path: &Path<'_>) -> Result<bool, PatchError> {
    let mut objects = None;
    for element in original.iter().chain(patch) {
        if element.is_array() {
            return Err(unprocessable(path, "lists of lists are not supported"));
        }
        match objects {
            None => objects = Some(element.is_object()),
            Some(o) if o != element.is_object() => {
                return Err(unprocessable(path, "list element types are not identical"));
            }
            Some(_) => {}
        }
    }
    Ok(objects.unwrap_or(false))
}

/// A list element on its way to its final position: where it was on the server and in the patch.
struct Entry {
    server: Option<usize>,
    patch: Option<usize>,
    value: Value,
}

fn merge_scalar_list(original: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    let mut entries: Vec<Entry> = Vec::with_capacity(original.len() + patch.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(original.len() + patch.len());
    for (position, value) in original.into_iter().enumerate() {
        if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(scalar_key(&value)) {
            slot.insert(entries.len());
            entries.push(Entry {
                server: Some(position),
                patch: None,
                value,
            });
        }
    }
    for (position, value) in patch.iter().enumerate() {
        match seen.get(&scalar_key(value)) {
            Some(&at) => {
                entries[at].patch.get_or_insert(position);
            }
            None => {
                seen.insert(scalar_key(value), entries.len());
                entries.push(Entry {
                    server: None,
                    patch: Some(position),
                    value: value.clone(),
                });
            }
        }
    }
    normalize_order(entries)
}

fn merge_object_list(
    mut original: Vec<Value>,
    patch: &[Value],
    schema: SchemaNode<'_>,
    path: &Path<'_>,
) -> Result<Vec<Value>, PatchError> {
    let Some(merge_key) = schema.patch_merge_key() else {
        return Err(unprocessable(
            path,
            "cannot merge a list of objects without a merge key",
        ));
    };
    let items = schema.items();
    let mut replace = false;
    let mut plain: Vec<&Map<String, Value>> = Vec::with_capacity(patch.len());
    for element in patch {
        let Value::Object(element) = element else {
            return Err(unprocessable(path, "list element types are not identical"));
        };
        match element.get(PATCH) {
            None => plain.push(element),
            Some(Value::String(d)) if d == "merge" => plain.push(element),
            Some(Value::String(d)) if d == "delete" => {
                let Some(doomed) = element.get(merge_key) else {
                    return Err(missing_merge_key(path, merge_key, element));
                };
                original.retain(|o| !o.get(merge_key).is_some_and(|v| scalar_eq(v, doomed)));
            }
            // Keep looking: other directive elements must not survive either.
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(other) => return Err(malformed(path, format_args!("unknown $patch directive {other}"))),
        }
    }
    if replace {
        let mut replaced = Vec::with_capacity(plain.len());
        for element in plain {
            replaced.extend(merge_map(Map::new(), element, items, path)?.map(Value::Object));
        }
        return Ok(replaced);
    }

    let mut entries: Vec<Entry> = Vec::with_capacity(original.len() + plain.len());
    let mut by_key: HashMap<String, usize> = HashMap::with_capacity(original.len() + plain.len());
    for (position, value) in original.into_iter().enumerate() {
        if let Some(key) = value.get(merge_key) {
            by_key.entry(scalar_key(key)).or_insert(entries.len());
        }
        entries.push(Entry {
            server: Some(position),
            patch: None,
            value,
        });
    }
    for (position, element) in plain.into_iter().enumerate() {
        let Some(key) = element.get(merge_key) else {
            return Err(missing_merge_key(path, merge_key, element));
        };
        let key = scalar_key(key);
        match by_key.get(&key) {
            Some(&at) => {
                let entry = &mut entries[at];
                let current = match std::mem::take(&mut entry.value) {
                    Value::Object(map) => map,
                    _ => Map::new(),
                };
                entry.value = Value::Object(merge_map(current, element, items, path)?.unwrap_or_default());
                entry.patch.get_or_insert(position);
            }
            None => {
                let value = Value::Object(merge_map(Map::new(), element, items, path)?.unwrap_or_default());
                by_key.insert(key, entries.len());
                entries.push(Entry {
                    server: None,
                    patch: Some(position),
                    value,
                });
            }
        }
    }
    Ok(normalize_order(entries))
}

/// kube-apiserver's final ordering of a merged list: elements named by the patch in the patch's order,
/// server-only elements in the server's order, interleaved so that a server-only element goes first only
/// when the server had it before the next patched element.
fn normalize_order(entries: Vec<Entry>) -> Vec<Value> {
    let (mut patched, mut server_only): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| e.patch.is_some());
    patched.sort_by_key(|e| e.patch);
    server_only.sort_by_key(|e| e.server.unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patched.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((l.server, r.server), (Some(ls), Some(rs)) if ls < rs),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next.map(|e| e.value));
    }
    out
}

/// The identity of a list element: its merge key's value for objects, itself for scalars.
fn element_key(element: &Value, merge_key: Option<&str>) -> Option<String> {
    match (element, merge_key) {
        (Value::Object(map), Some(key)) => map.get(key).map(scalar_key),
        (Value::Object(_), None) | (Value::Array(_), _) => None,
        (scalar, _) => Some(scalar_key(scalar)),
    }
}

/// Position of each element in `list` by its identity (the first one wins, as in kube-apiserver).
fn index_by_key(list: &[Value], merge_key: Option<&str>) -> HashMap<String, usize> {
    let mut index = HashMap::with_capacity(list.len());
    for (position, element) in list.iter().enumerate() {
        if let Some(key) = element_key(element, merge_key) {
            index.entry(key).or_insert(position);
        }
    }
    index
}

/// A scalar as a string that compares the way Go compares decoded JSON (all numbers are float64, so `80`
/// and `80.0` are the same port).
pub(crate) fn scalar_key(value: &Value) -> String {
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests;
