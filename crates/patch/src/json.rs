//! The two patch formats that know nothing about Kubernetes: JSON merge patch (RFC 7386) and JSON patch
//! (RFC 6902). JSON patch is bounded the way kube-apiserver bounds it, because a short patch of `copy`
//! operations could otherwise double a document with every operation.

use json_patch::PatchOperation;
use serde::Deserialize;
use serde_json::Value;

use crate::PatchError;

/// The most operations one JSON patch may have (kube-apiserver's limit).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The most bytes (as serialized JSON) all `copy` operations of one JSON patch may duplicate together;
/// kube-apiserver uses its 3 MiB request body limit for this.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// Applies the JSON merge patch `patch` (RFC 7386) to `original`: objects merge recursively, `null` deletes,
/// everything else (lists included) replaces. A Kubernetes merge patch must be an object.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Malformed(
            "a JSON merge patch must be a JSON object".into(),
        ));
    }
    let mut result = original.clone();
    json_patch::merge(&mut result, patch);
    Ok(result)
}

/// Applies the JSON patch `patch` (RFC 6902, an array of operations) to `original`, all or nothing.
///
/// Refuses more than [`MAX_JSON_PATCH_OPERATIONS`] operations and `copy` operations duplicating more than
/// [`MAX_JSON_PATCH_COPY_BYTES`] in total; `add` and `replace` can only add what the patch itself carries,
/// so together these bound the result's size and the work done.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::Malformed(
            "a JSON patch must be a JSON array of operations".into(),
        ));
    };
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            count: operations.len(),
            max: MAX_JSON_PATCH_OPERATIONS,
        });
    }
    let mut document = original.clone();
    let mut copied = 0usize;
    for (index, operation) in operations.iter().enumerate() {
        let operation = PatchOperation::deserialize(operation)
            .map_err(|e| PatchError::Malformed(format!("JSON patch operation {index}: {e}")))?;
        if let PatchOperation::Copy(copy) = &operation
            && let Some(source) = document.pointer(copy.from.as_str())
        {
            copied = copied.saturating_add(json_size(source, MAX_JSON_PATCH_COPY_BYTES - copied + 1));
            if copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(PatchError::TooLarge {
                    index,
                    limit: MAX_JSON_PATCH_COPY_BYTES,
                });
            }
        }
        // The document is our private copy, so a failed operation needs no undo: it is simply dropped.
        json_patch::patch_unsafe(&mut document, std::slice::from_ref(&operation)).map_err(|e| {
            PatchError::OperationFailed {
                index,
                op: op_name(&operation),
                path: operation.path().to_string(),
                reason: e.kind.to_string(),
            }
        })?;
    }
    Ok(document)
}

fn op_name(operation: &PatchOperation) -> &'static str {
    match operation {
        PatchOperation::Add(_) => "add",
        PatchOperation::Remove(_) => "remove",
        PatchOperation::Replace(_) => "replace",
        PatchOperation::Move(_) => "move",
        PatchOperation::Copy(_) => "copy",
        PatchOperation::Test(_) => "test",
    }
}

/// Roughly how many bytes `value` takes as JSON, counting no further than `limit` so that measuring a huge
/// value costs no more than the budget it is measured against.
fn json_size(value: &Value, limit: usize) -> usize {
    let mut size = 0usize;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        size += match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                stack.extend(items);
                2 + items.len()
            }
            Value::Object(map) => {
                stack.extend(map.values());
                2 + map.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        };
        if size > limit {
            break;
        }
    }
    size
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_merges_objects_deletes_nulls_and_replaces_lists() {
        let original = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}},
            "spec": {"replicas": 1, "ports": [1, 2]}});
        let patch = json!({"metadata": {"labels": {"tier": null, "new": "x"}},
            "spec": {"replicas": 4, "ports": [3]}});
        assert_eq!(
            merge_patch(&original, &patch).unwrap(),
            json!({"metadata": {"labels": {"app": "web", "new": "x"}}, "spec": {"replicas": 4, "ports": [3]}})
        );
    }

    #[test]
    fn merge_patch_drops_nulls_inside_new_objects() {
        let result = merge_patch(&json!({}), &json!({"a": {"b": null, "c": 1}})).unwrap();
        assert_eq!(result, json!({"a": {"c": 1}}));
    }

    #[test]
    fn merge_patch_must_be_an_object() {
        let err = merge_patch(&json!({}), &json!([1])).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)));
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn json_patch_applies_operations_in_order() {
        let original = json!({"spec": {"template": {"x": 1}}, "metadata": {"annotations": {"a": "1"}}});
        let patch = json!([
            {"op": "test", "path": "/spec/template/x", "value": 1},
            {"op": "replace", "path": "/spec/template", "value": {"y": 2}},
            {"op": "replace", "path": "/metadata/annotations", "value": {"b": "2"}},
            {"op": "add", "path": "/list", "value": []},
            {"op": "add", "path": "/list/-", "value": "a"},
            {"op": "copy", "from": "/list/0", "path": "/list/-"},
            {"op": "move", "from": "/metadata/annotations/b", "path": "/moved"},
            {"op": "remove", "path": "/spec/template/y"},
        ]);
        assert_eq!(
            json_patch(&original, &patch).unwrap(),
            json!({"spec": {"template": {}}, "metadata": {"annotations": {}}, "list": ["a", "a"], "moved": "2"})
        );
    }

    #[test]
    fn json_patch_error_names_the_failing_operation_and_leaves_original_alone() {
        let original = json!({"spec": {"replicas": 1}});
        let patch = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 2},
            {"op": "test", "path": "/spec/replicas", "value": 3},
        ]);
        let err = json_patch(&original, &patch).unwrap_err();
        match &err {
            PatchError::OperationFailed { index, op, path, .. } => {
                assert_eq!((*index, *op, path.as_str()), (1, "test", "/spec/replicas"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.status_code(), 422);
        assert!(
            err.to_string().contains("operation 1 (test /spec/replicas)"),
            "{err}"
        );
        assert_eq!(original, json!({"spec": {"replicas": 1}}));
    }

    #[test]
    fn json_patch_missing_path_fails() {
        let err = json_patch(&json!({}), &json!([{"op": "remove", "path": "/nope"}])).unwrap_err();
        assert!(
            matches!(
                err,
                PatchError::OperationFailed {
                    index: 0,
                    op: "remove",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn json_patch_rejects_malformed_operations() {
        for patch in [
            json!({"op": "add"}),
            json!([{"op": "frobnicate", "path": "/a"}]),
            json!([{"path": "/a"}]),
        ] {
            let err = json_patch(&json!({}), &patch).unwrap_err();
            assert!(matches!(err, PatchError::Malformed(_)), "{patch}: {err:?}");
        }
    }

    #[test]
    fn json_patch_limits_operation_count() {
        let op = json!({"op": "add", "path": "/a", "value": 1});
        let at_limit = Value::Array(vec![op.clone(); MAX_JSON_PATCH_OPERATIONS]);
        assert_eq!(json_patch(&json!({}), &at_limit).unwrap(), json!({"a": 1}));
        let over = Value::Array(vec![op; MAX_JSON_PATCH_OPERATIONS + 1]);
        let err = json_patch(&json!({}), &over).unwrap_err();
        assert_eq!(
            err,
            PatchError::TooManyOperations {
                count: 10_001,
                max: 10_000
            }
        );
        assert_eq!(err.status_code(), 413);
    }

    #[test]
    fn json_patch_doubling_copies_are_stopped() {
        // Each copy doubles the document: 40 of them would need a terabyte.
        let mut ops = vec![json!({"op": "add", "path": "/a", "value": vec!["x"; 64]})];
        for i in 0..40 {
            ops.push(json!({"op": "copy", "from": "/a", "path": format!("/a/{i}")}));
        }
        let err = json_patch(&json!({}), &Value::Array(ops)).unwrap_err();
        assert!(
            matches!(
                err,
                PatchError::TooLarge {
                    limit: MAX_JSON_PATCH_COPY_BYTES,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn json_patch_small_copies_are_fine() {
        let patch = json!([{"op": "copy", "from": "/a", "path": "/b"}]);
        assert_eq!(
            json_patch(&json!({"a": {"x": 1}}), &patch).unwrap(),
            json!({"a": {"x": 1}, "b": {"x": 1}})
        );
    }
}
