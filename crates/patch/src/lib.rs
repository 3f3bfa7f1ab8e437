//! rkube-patch: how Kubernetes changes an object — JSON merge patch, JSON patch, strategic merge patch and
//! server-side apply with `managedFields` — as pure functions over `serde_json::Value`. No Kubernetes types,
//! no I/O: the API server decodes the body, calls one function here, and validates what comes back.
//!
//! Start reading at [`strategic_merge_patch`] (the patch type kubectl sends most) and [`apply`] (server-side
//! apply and field ownership). Both are steered by a [`schema::SchemaNode`], a view of the OpenAPI v3
//! definition carrying Kubernetes' `x-kubernetes-*` merge extensions. [`PatchError::status_code`] and
//! [`apply::ApplyError::status_code`] say how the API server answers a failure.

pub mod apply;
mod error;
mod fieldpath;
mod json;
pub mod schema;
mod strategic;
#[cfg(test)]
mod testdata;

pub use error::PatchError;
pub use json::{MAX_JSON_PATCH_COPY_BYTES, MAX_JSON_PATCH_OPERATIONS, json_patch, merge_patch};
pub use schema::SchemaNode;
pub use strategic::strategic_merge_patch;
