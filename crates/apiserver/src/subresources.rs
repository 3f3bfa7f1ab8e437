//! PATCH (all four patch types, retried on store conflicts) and the subresources: `status`, `scale`,
//! `pods/binding`, `pods/eviction`, `namespaces/finalize`, and `pods/log`, which
//! [`crate::kubelet_proxy`] streams from the pod's kubelet (as it does `exec`, `attach`, `portforward`).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::ApiState;
use crate::admission;
use crate::output::{self, json_response};
use crate::registry::Kind;
use crate::request::{BodyFormat, Verb};
use crate::rest::{
    self, ApiRequest, Decision, DeleteOptions, Written, decode_object, guaranteed_update, not_found,
    object_key, read, update_existing,
};
use crate::selectors::LabelSelector;
use crate::status::ApiError;

pub async fn handle(
    state: &Arc<ApiState>,
    kind: &Kind,
    req: ApiRequest,
    sub: &str,
) -> Result<Response, ApiError> {
    let allowed = kind.subresource(sub).ok_or(ApiError::NoRoute)?;
    if !allowed.verbs.contains(&req.info.verb.as_str()) {
        return Err(ApiError::MethodNotAllowed);
    }
    if kind.namespaced && req.info.namespace.is_none() {
        return Err(ApiError::NoRoute);
    }
    match (sub, req.info.verb) {
        ("status", Verb::Get) => get_status(state, kind, &req).await,
        ("status", Verb::Update) => {
            let mut warnings = Vec::new();
            let body = decode_object(state, kind, req.decode_body()?, &req.params, &mut warnings)?;
            let (written, _) = rest::update_object(state, kind, &req, body, true).await?;
            Ok(json_response(
                StatusCode::OK,
                output::object(kind, written.object(), req.output),
                &warnings,
            ))
        }
        ("status", Verb::Patch) => patch(state, kind, &req, Some("status")).await,
        ("scale", _) => scale(state, kind, &req).await,
        ("binding", Verb::Create) => binding(state, kind, &req).await,
        ("eviction", Verb::Create) => eviction(state, kind, &req).await,
        ("finalize", Verb::Update) => finalize(state, kind, &req).await,
        ("log", Verb::Get) => crate::kubelet_proxy::logs(state, &req).await,
        ("token", Verb::Create) => crate::serviceaccount_token::token_request(state, kind, &req).await,
        // The upgrade subresources are routed to `kubelet_proxy` before this dispatcher; anything else
        // reaching here is a method they do not serve.
        ("exec" | "attach" | "portforward", _) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

async fn get_status(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.info.name.as_deref().unwrap_or_default();
    let obj = read(state, kind, &object_key(req.info.namespace.as_deref(), name))
        .await?
        .ok_or_else(|| not_found(kind, name))?;
    Ok(json_response(
        StatusCode::OK,
        output::object(kind, &obj, req.output),
        &[],
    ))
}

/// Applies a patch document of `format` to `original`.
fn apply_patch(
    state: &ApiState,
    kind: &Kind,
    format: BodyFormat,
    original: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    let result = match format {
        BodyFormat::MergePatch => rkube_patch::merge_patch(original, patch),
        BodyFormat::JsonPatch => rkube_patch::json_patch(original, patch),
        BodyFormat::StrategicMergePatch => {
            rkube_patch::strategic_merge_patch(original, patch, admission::schema(state, kind))
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, \
                 application/apply-patch+yaml"
                    .to_string(),
            ));
        }
    };
    result.map_err(|e| match e.status_code() {
        413 => ApiError::RequestEntityTooLarge {
            limit: crate::body::MAX_BODY,
        },
        422 => rest::invalid(
            kind,
            original,
            vec![crate::status::Cause {
                reason: "FieldValueInvalid".into(),
                field: String::new(),
                message: e.to_string(),
            }],
        ),
        _ => ApiError::BadRequest(e.to_string()),
    })
}

/// PATCH of the object (`sub` = None) or of its status: read, patch, validate, write; retried on conflicts.
pub async fn patch(
    state: &Arc<ApiState>,
    kind: &Kind,
    req: &ApiRequest,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let name = req.info.name.clone().ok_or(ApiError::MethodNotAllowed)?;
    let format = req
        .body_format
        .as_ref()
        .map_err(|e| ApiError::UnsupportedMediaType(e.to_string()))?;
    let format = *format;
    let patch_doc = req.decode_body()?;
    let key = object_key(req.info.namespace.as_deref(), &name);
    let status_only = sub == Some("status");
    let mut warnings = Vec::new();
    if format == BodyFormat::ApplyPatch {
        return apply(state, kind, req, &key, &name, patch_doc, status_only).await;
    }
    let written = update_existing(state, kind, &key, &name, &req.params, status_only, |current| {
        warnings.clear();
        let patched = apply_patch(state, kind, format, &current.value, &patch_doc)?;
        decode_object(state, kind, patched, &req.params, &mut warnings)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        output::object(kind, written.object(), req.output),
        &warnings,
    ))
}

/// Server-side apply (`application/apply-patch+yaml`): creates the object when missing (201), else merges
/// the configuration with field ownership; conflicts with other managers are 409 unless `force`.
async fn apply(
    state: &Arc<ApiState>,
    kind: &Kind,
    req: &ApiRequest,
    key: &str,
    name: &str,
    config: Value,
    status_only: bool,
) -> Result<Response, ApiError> {
    let mut warnings = Vec::new();
    // The apply itself records the manager's fields; the update path must not record them again.
    let mut params = req.params.clone();
    params.field_manager = None;
    if !status_only && read(state, kind, key).await?.is_none() {
        let mut config = config.clone();
        if config["metadata"]["name"].is_null() {
            config["metadata"]["name"] = json!(name);
        }
        let created = admission::server_side_apply(state, kind, None, &config, &req.params)?;
        let created = decode_object(state, kind, created, &req.params, &mut warnings)?;
        match rest::create_object(state, kind, req.info.namespace.as_deref(), created, &params).await {
            Ok(w) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    output::object(kind, w.object(), req.output),
                    &warnings,
                ));
            }
            Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let written = update_existing(state, kind, key, name, &params, status_only, |current| {
        warnings.clear();
        let merged = admission::server_side_apply(state, kind, Some(&current.value), &config, &req.params)?;
        decode_object(state, kind, merged, &req.params, &mut warnings)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        output::object(kind, written.object(), req.output),
        &warnings,
    ))
}

/// The `autoscaling/v1` Scale of a Deployment, ReplicaSet or StatefulSet.
fn scale_of(obj: &Value) -> Value {
    let selector = LabelSelector::from_object(&obj["spec"]["selector"])
        .map(|s| s.to_query())
        .unwrap_or_default();
    let m = &obj["metadata"];
    let mut metadata = json!({"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
        "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]});
    if metadata["namespace"].is_null() {
        metadata.as_object_mut().map(|o| o.remove("namespace"));
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

async fn scale(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.info.name.clone().unwrap_or_default();
    let key = object_key(req.info.namespace.as_deref(), &name);
    let reply = |obj: &Value| json_response(StatusCode::OK, output::value_bytes(&scale_of(obj)), &[]);
    if req.info.verb == Verb::Get {
        let obj = read(state, kind, &key)
            .await?
            .ok_or_else(|| not_found(kind, &name))?;
        return Ok(reply(&obj.value));
    }
    let format = *req
        .body_format
        .as_ref()
        .map_err(|e| ApiError::UnsupportedMediaType(e.to_string()))?;
    let body = req.decode_body()?;
    let written = update_existing(state, kind, &key, &name, &req.params, false, |current| {
        let scale = scale_of(&current.value);
        let new_scale = if req.info.verb == Verb::Patch {
            // A Scale has no lists, so its strategic merge patch is a plain merge patch.
            let format = match format {
                BodyFormat::StrategicMergePatch => BodyFormat::MergePatch,
                other => other,
            };
            apply_patch(state, kind, format, &scale, &body)?
        } else {
            body.clone()
        };
        if let Some(rv) = new_scale["metadata"]["resourceVersion"].as_str().filter(|r| !r.is_empty())
            && rv != current.rv.to_string()
        {
            return Err(ApiError::Conflict {
                resource: kind.group_resource(),
                name: name.clone(),
                message: "the object has been modified; please apply your changes to the latest version and try again"
                    .into(),
            });
        }
        let replicas = new_scale["spec"]["replicas"].as_i64().unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid_field(
                "autoscaling",
                "Scale",
                &name,
                "FieldValueInvalid",
                "spec.replicas",
                &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut obj = current.value.clone();
        obj["spec"]["replicas"] = json!(replicas);
        Ok(obj)
    })
    .await?;
    Ok(reply(&written.object().value))
}

async fn binding(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.info.name.clone().unwrap_or_default();
    let body = req.decode_body()?;
    let node = body["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_field(
                "",
                "Binding",
                &name,
                "FieldValueRequired",
                "target.name",
                "Required value",
            )
        })?;
    if body["target"]["kind"]
        .as_str()
        .is_some_and(|k| !k.is_empty() && k != "Node")
    {
        return Err(ApiError::invalid_field(
            "",
            "Binding",
            &name,
            "FieldValueNotSupported",
            "target.kind",
            "Unsupported value: must be empty or Node",
        ));
    }
    let key = object_key(req.info.namespace.as_deref(), &name);
    guaranteed_update(state, kind, &key, req.params.dry_run, |current| {
        let current = current.ok_or_else(|| not_found(kind, &name))?;
        let mut pod = current.value.clone();
        if pod["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            return Err(ApiError::Conflict {
                resource: crate::status::GroupResource::new("", "pods/binding"),
                name: name.clone(),
                message: format!("pod {name} is being deleted, cannot be assigned to a host"),
            });
        }
        if let Some(existing) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::Conflict {
                resource: crate::status::GroupResource::new("", "pods/binding"),
                name: name.clone(),
                message: format!("pod {name} is already assigned to node \"{existing}\""),
            });
        }
        if let Some(uid) = body["metadata"]["uid"].as_str().filter(|u| !u.is_empty())
            && Some(uid) != pod["metadata"]["uid"].as_str()
        {
            return Err(ApiError::Conflict {
                resource: crate::status::GroupResource::new("", "pods/binding"),
                name: name.clone(),
                message: "Precondition failed: UID in precondition does not match".into(),
            });
        }
        pod["spec"]["nodeName"] = json!(node);
        for (k, v) in body["metadata"]["annotations"].as_object().into_iter().flatten() {
            pod["metadata"]["annotations"][k] = v.clone();
        }
        let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": rest::now()});
        let conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions.push(condition);
        pod["status"]["conditions"] = json!(conditions);
        Ok(Decision::Write(pod))
    })
    .await?;
    let status =
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(
        StatusCode::CREATED,
        output::value_bytes(&status),
        &[],
    ))
}

async fn eviction(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.info.name.clone().unwrap_or_default();
    let body = if req.body.is_empty() {
        json!({})
    } else {
        req.decode_body()?
    };
    let options = DeleteOptions::from_parts(&body["deleteOptions"], &req.params);
    rest::delete_object(state, kind, req.info.namespace.as_deref(), &name, &options).await?;
    let status =
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(
        StatusCode::CREATED,
        output::value_bytes(&status),
        &[],
    ))
}

/// `PUT namespaces/NAME/finalize`: only `spec.finalizers` changes; a terminating namespace left without
/// finalizers is then removed.
async fn finalize(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.info.name.clone().unwrap_or_default();
    let body = req.decode_body()?;
    let written = guaranteed_update(state, kind, &name, req.params.dry_run, |current| {
        let current = current.ok_or_else(|| not_found(kind, &name))?;
        let mut ns = current.value.clone();
        ns["spec"]["finalizers"] = body["spec"]["finalizers"].clone();
        if ns["spec"]["finalizers"].is_null() {
            ns["spec"].as_object_mut().map(|s| s.remove("finalizers"));
        }
        if ns == current.value {
            return Ok(Decision::Unchanged);
        }
        Ok(Decision::Write(ns))
    })
    .await?;
    let obj = written.object().clone();
    let deleting = obj.value["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    let empty = obj.value["spec"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty())
        && obj.value["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
    if deleting && empty && !matches!(written, Written::DryRun(_)) {
        let _ = rest::delete_object(state, kind, None, &name, &DeleteOptions::default()).await;
    }
    Ok(json_response(
        StatusCode::OK,
        output::object(kind, &obj, req.output),
        &[],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_reports_replicas_and_selector() {
        let d = json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "5"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}});
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        assert_eq!(s["metadata"]["resourceVersion"], "5");
        assert_eq!(s["apiVersion"], "autoscaling/v1");
    }
}
