//! Walks over an object together with its schema, the way structured-merge-diff sees it: objects are
//! granular (field by field) unless `x-kubernetes-map-type: atomic`; lists are atomic, sets of scalars, or
//! maps of objects identified by key fields; everything else is a leaf. Without a schema, objects are
//! granular and lists atomic.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{Map, Value};

use crate::fieldpath::{FieldSet, PathElement, display_path};
use crate::schema::{ListKind, SchemaNode};

fn list_kind<'a>(schema: Option<SchemaNode<'a>>) -> ListKind<'a> {
    schema.map_or(ListKind::Atomic, SchemaNode::list_kind)
}

fn atomic_map(schema: Option<SchemaNode<'_>>) -> bool {
    schema.is_some_and(SchemaNode::is_atomic_map)
}

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

/// Defaults of list-map key fields that Kubernetes' own OpenAPI declares (`+default="TCP"` on every
/// `protocol` of a port list keyed by port and protocol) but schemas generated from k8s-openapi lack; a
/// `default` in the schema takes precedence.
static KEY_DEFAULTS: std::sync::LazyLock<[(&str, Value); 1]> =
    std::sync::LazyLock::new(|| [("protocol", Value::from("TCP"))]);

/// The identity of a list element, or `None` if it has none (a list-map element missing a key field that
/// has no default in the schema).
fn element_id(kind: &ListKind<'_>, items: Option<SchemaNode<'_>>, element: &Value) -> Option<PathElement> {
    match kind {
        ListKind::Atomic => None,
        ListKind::Set => Some(PathElement::value(element)),
        ListKind::Map(keys) => {
            let object = element.as_object()?;
            let mut fields = Vec::with_capacity(keys.len());
            for &key in keys {
                let value = present(object.get(key))
                    .or_else(|| {
                        items
                            .and_then(|i| i.property(key))
                            .and_then(SchemaNode::default_value)
                    })
                    .or_else(|| KEY_DEFAULTS.iter().find(|(k, _)| *k == key).map(|(_, v)| v))?;
                fields.push((key, value));
            }
            Some(PathElement::key(fields))
        }
    }
}

/// The fields an applied configuration sets: every leaf, every list element, every map entry, and struct
/// fields that are null or empty objects (structured-merge-diff's `ToFieldSet`). Fails on list elements
/// without identity or with a duplicate one, which apply cannot merge.
pub(crate) fn applied_fields(value: &Value, schema: Option<SchemaNode<'_>>) -> Result<FieldSet, String> {
    let mut set = FieldSet::default();
    let mut path = Vec::new();
    collect_applied(value, schema, &mut set, &mut path)?;
    set.member = false;
    Ok(set)
}

fn collect_applied(
    value: &Value,
    schema: Option<SchemaNode<'_>>,
    node: &mut FieldSet,
    path: &mut Vec<PathElement>,
) -> Result<(), String> {
    match value {
        Value::Object(map) if !atomic_map(schema) => {
            for (key, child_value) in map {
                path.push(PathElement::Field(key.clone()));
                let mut child = FieldSet::default();
                collect_applied(child_value, schema.and_then(|s| s.field(key)), &mut child, path)?;
                let declared = schema.is_some_and(|s| s.declares(key));
                if !declared || child_value.is_null() || child_value.as_object().is_some_and(Map::is_empty) {
                    child.member = true;
                }
                let element = path.pop().expect("pushed above");
                if !child.is_empty() {
                    node.children.insert(element, child);
                }
            }
        }
        Value::Array(items) => {
            let kind = list_kind(schema);
            if kind == ListKind::Atomic {
                node.member = true;
                return Ok(());
            }
            let item_schema = schema.and_then(SchemaNode::items);
            for (position, item) in items.iter().enumerate() {
                let Some(id) = element_id(&kind, item_schema, item) else {
                    return Err(format!(
                        "{}: element {position} lacks the list's key fields {:?}",
                        display_path(path),
                        match &kind {
                            ListKind::Map(keys) => keys.clone(),
                            _ => Vec::new(),
                        }
                    ));
                };
                if node.children.contains_key(&id) {
                    path.push(id);
                    return Err(format!("{}: duplicate entries in the list", display_path(path)));
                }
                path.push(id.clone());
                let child = node.child(id);
                child.member = true;
                if matches!(kind, ListKind::Map(_)) {
                    collect_applied(item, item_schema, child, path)?;
                }
                path.pop();
            }
        }
        _ => node.member = true,
    }
    Ok(())
}

/// Marks every field, entry and element below `value` as a member of `node` (a subtree added or removed
/// as a whole). `in_empty` says the node exists even in an empty object (see
/// [`SchemaNode::present_when_empty`]); such fields are not added members themselves, only their leaves.
fn mark_all(value: &Value, schema: Option<SchemaNode<'_>>, node: &mut FieldSet, in_empty: bool) {
    match value {
        Value::Object(map) if !atomic_map(schema) => {
            for (key, child_value) in map {
                if child_value.is_null() {
                    continue;
                }
                let child_in_empty = in_empty && schema.is_some_and(|s| s.present_when_empty(key));
                let child_schema = schema.and_then(|s| s.field(key));
                let element = PathElement::Field(key.clone());
                let child = node.child(element.clone());
                mark_all(child_value, child_schema, child, child_in_empty);
                child.member |= !child_in_empty || !is_granular(child_value, child_schema);
                node.prune_empty_child(&element);
            }
        }
        Value::Array(items) => {
            let kind = list_kind(schema);
            let item_schema = schema.and_then(SchemaNode::items);
            for item in items {
                if let Some(id) = element_id(&kind, item_schema, item) {
                    let child = node.child(id);
                    child.member = true;
                    if matches!(kind, ListKind::Map(_)) {
                        mark_all(item, item_schema, child, false);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Every path of `value` (its fields as a create would record them).
pub(crate) fn all_fields(value: &Value, schema: Option<SchemaNode<'_>>) -> FieldSet {
    let mut set = FieldSet::default();
    mark_all(value, schema, &mut set, true);
    set
}

/// What changed from `old` to `new`: paths added or modified, and paths removed
/// (structured-merge-diff's `Compare`; a subtree added or removed counts with all its paths).
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub(crate) changed: FieldSet,
    pub(crate) removed: FieldSet,
}

pub(crate) fn compare(old: &Value, new: &Value, schema: Option<SchemaNode<'_>>) -> Comparison {
    let mut comparison = Comparison::default();
    compare_into(old, new, schema, &mut comparison.changed, &mut comparison.removed);
    comparison.changed.member = false;
    comparison.removed.member = false;
    comparison
}

fn compare_into(
    old: &Value,
    new: &Value,
    schema: Option<SchemaNode<'_>>,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    // Most of an object is unchanged by any one write; equal subtrees need no walk.
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(old), Value::Object(new)) if !atomic_map(schema) => {
            for (key, new_value) in new {
                if new_value.is_null() {
                    continue;
                }
                let child_schema = schema.and_then(|s| s.field(key));
                let element = PathElement::Field(key.clone());
                match present(old.get(key)) {
                    Some(old_value) => {
                        compare_child(old_value, new_value, child_schema, element, changed, removed);
                    }
                    None => {
                        let in_empty = schema.is_some_and(|s| s.present_when_empty(key));
                        let child = changed.child(element.clone());
                        mark_all(new_value, child_schema, child, in_empty);
                        child.member |= !in_empty || !is_granular(new_value, child_schema);
                        changed.prune_empty_child(&element);
                    }
                }
            }
            for (key, old_value) in old {
                if old_value.is_null() || present(new.get(key)).is_some() {
                    continue;
                }
                let child = removed.child(PathElement::Field(key.clone()));
                child.member = true;
                mark_all(old_value, schema.and_then(|s| s.field(key)), child, false);
            }
        }
        (Value::Array(old_items), Value::Array(new_items)) => {
            let kind = list_kind(schema);
            let item_schema = schema.and_then(SchemaNode::items);
            let ids = |items: &[Value]| -> Option<Vec<PathElement>> {
                items
                    .iter()
                    .map(|item| element_id(&kind, item_schema, item))
                    .collect()
            };
            // Lists whose elements cannot all be identified are compared as one value.
            let (Some(old_ids), Some(new_ids)) = (ids(old_items), ids(new_items)) else {
                changed.member |= old_items != new_items;
                return;
            };
            let old_by_id: HashMap<&PathElement, &Value> = old_ids.iter().zip(old_items).rev().collect();
            let new_set: HashSet<&PathElement> = new_ids.iter().collect();
            for (id, new_item) in new_ids.iter().zip(new_items) {
                match old_by_id.get(id) {
                    Some(old_item) if matches!(kind, ListKind::Map(_)) => {
                        compare_child(old_item, new_item, item_schema, id.clone(), changed, removed);
                    }
                    Some(_) => {}
                    None => {
                        let child = changed.child(id.clone());
                        child.member = true;
                        mark_all(new_item, item_schema, child, false);
                    }
                }
            }
            for (id, old_item) in old_ids.iter().zip(old_items) {
                if !new_set.contains(id) {
                    let child = removed.child(id.clone());
                    child.member = true;
                    mark_all(old_item, item_schema, child, false);
                }
            }
        }
        (old, new) => changed.member |= old != new,
    }
}

fn compare_child(
    old: &Value,
    new: &Value,
    schema: Option<SchemaNode<'_>>,
    element: PathElement,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    // Built apart and attached only if non-empty: most children hold no change.
    let (mut child_changed, mut child_removed) = (FieldSet::default(), FieldSet::default());
    compare_into(old, new, schema, &mut child_changed, &mut child_removed);
    match (child_changed.is_empty(), child_removed.is_empty()) {
        (true, true) => {}
        (false, true) => {
            changed.children.insert(element, child_changed);
        }
        (true, false) => {
            removed.children.insert(element, child_removed);
        }
        (false, false) => {
            changed.children.insert(element.clone(), child_changed);
            removed.children.insert(element, child_removed);
        }
    }
}

/// Merges an applied configuration into the live object (structured-merge-diff's `Merge`): objects field by
/// field, list-maps and sets element by element, atomic values replaced. A `null` in the configuration
/// removes the field. Top-level keys in `skip` are left as they are live.
pub(crate) fn merge_into(
    live: &mut Map<String, Value>,
    config: &Map<String, Value>,
    schema: Option<SchemaNode<'_>>,
    skip: &[&str],
) {
    for (key, config_value) in config {
        if skip.contains(&key.as_str()) {
            continue;
        }
        if config_value.is_null() {
            live.remove(key);
            continue;
        }
        match live.get_mut(key) {
            Some(live_value) => merge_value(live_value, config_value, schema.and_then(|s| s.field(key))),
            None => {
                live.insert(key.clone(), config_value.clone());
            }
        }
    }
}

fn merge_value(live: &mut Value, config: &Value, schema: Option<SchemaNode<'_>>) {
    if let (Value::Object(live_map), Value::Object(config_map)) = (&mut *live, config)
        && !atomic_map(schema)
    {
        merge_into(live_map, config_map, schema, &[]);
        return;
    }
    if let (Value::Array(live_items), Value::Array(config_items)) = (&mut *live, config) {
        let kind = list_kind(schema);
        if kind != ListKind::Atomic {
            let merged = merge_list(
                std::mem::take(live_items),
                config_items,
                &kind,
                schema.and_then(SchemaNode::items),
            );
            *live_items = merged;
            return;
        }
    }
    *live = config.clone();
}

/// Merges list elements by identity, keeping the live order for live-only elements and the configuration's
/// order for the rest: a configured element the live list lacks goes right after the configured element
/// before it.
fn merge_list(
    live: Vec<Value>,
    config: &[Value],
    kind: &ListKind<'_>,
    items: Option<SchemaNode<'_>>,
) -> Vec<Value> {
    let config_ids: Option<Vec<PathElement>> = config.iter().map(|c| element_id(kind, items, c)).collect();
    let Some(config_ids) = config_ids else {
        // Rejected before merging; replacing is the safe reading.
        return config.to_vec();
    };
    let live_ids: Vec<Option<PathElement>> = live.iter().map(|l| element_id(kind, items, l)).collect();
    let in_config: HashSet<&PathElement> = config_ids.iter().collect();
    let mut live_index: HashMap<&PathElement, usize> = HashMap::with_capacity(live.len());
    for (position, id) in live_ids.iter().enumerate() {
        if let Some(id) = id {
            live_index.entry(id).or_insert(position);
        }
    }
    let mut shared: VecDeque<&PathElement> = config_ids
        .iter()
        .filter(|id| live_index.contains_key(id))
        .collect();
    let mut next_shared = shared.pop_front();
    let mut live_slots: Vec<Option<Value>> = live.into_iter().map(Some).collect();
    let mut merged_config: HashSet<&PathElement> = HashSet::with_capacity(config.len());
    let mut out = Vec::with_capacity(live_slots.len() + config.len());
    let merge_element = |live: Option<Value>, config: &Value| -> Value {
        match (live, kind) {
            (Some(mut live), ListKind::Map(_)) => {
                merge_value(&mut live, config, items);
                live
            }
            _ => config.clone(),
        }
    };
    let (mut li, mut ci) = (0, 0);
    while li < live_slots.len() || ci < config.len() {
        if li < live_slots.len() {
            match &live_ids[li] {
                Some(id) if in_config.contains(id) => {
                    if merged_config.contains(id) {
                        li += 1;
                        continue;
                    }
                    if ci < config.len() && &config_ids[ci] == id {
                        out.push(merge_element(live_slots[li].take(), &config[ci]));
                        merged_config.insert(id);
                        li += 1;
                        ci += 1;
                        next_shared = shared.pop_front();
                        continue;
                    }
                    if next_shared.is_some_and(|next| next != id) {
                        // Shared, but the configuration puts it later: it is emitted when we get there.
                        li += 1;
                        continue;
                    }
                }
                _ => {
                    out.extend(live_slots[li].take());
                    li += 1;
                    continue;
                }
            }
        }
        if ci < config.len() {
            let id = &config_ids[ci];
            let live_element = live_index.get(id).and_then(|&at| live_slots[at].take());
            out.push(merge_element(live_element, &config[ci]));
            merged_config.insert(id);
            ci += 1;
            if next_shared == Some(id) {
                next_shared = shared.pop_front();
            }
        } else {
            li += 1;
        }
    }
    out
}

/// Removes the value at `path` from `value`; containers left empty by the removal go too, as
/// structured-merge-diff turns them into nulls. Returns whether anything was removed.
pub(crate) fn remove_path(value: &mut Value, path: &[PathElement], schema: Option<SchemaNode<'_>>) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (value, first) {
        (Value::Object(map), PathElement::Field(key)) => {
            if rest.is_empty() {
                return map.remove(key).is_some();
            }
            let Some(child) = map.get_mut(key) else {
                return false;
            };
            let removed = remove_path(child, rest, schema.and_then(|s| s.field(key)));
            if removed && is_empty_container(child) {
                map.remove(key);
            }
            removed
        }
        (Value::Array(items), element) => {
            let kind = list_kind(schema);
            let item_schema = schema.and_then(SchemaNode::items);
            let position = match element {
                PathElement::Index(index) => Some(*index).filter(|&i| i < items.len()),
                _ => items
                    .iter()
                    .position(|item| element_id(&kind, item_schema, item).as_ref() == Some(element)),
            };
            let Some(position) = position else { return false };
            if rest.is_empty() {
                items.remove(position);
                return true;
            }
            let removed = remove_path(&mut items[position], rest, item_schema);
            if removed && is_empty_container(&items[position]) {
                items.remove(position);
            }
            removed
        }
        _ => false,
    }
}

/// Whether `value` is tracked field by field or element by element rather than as one leaf.
fn is_granular(value: &Value, schema: Option<SchemaNode<'_>>) -> bool {
    match value {
        Value::Object(_) => !atomic_map(schema),
        Value::Array(_) => list_kind(schema) != ListKind::Atomic,
        _ => false,
    }
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}
