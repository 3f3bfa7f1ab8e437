//! Every API failure as a Kubernetes `Status`: this is the one place where an error becomes an HTTP response.
//! Messages match kube-apiserver's word for word, because kubectl prints them as they are and users (and
//! scripts) grep for them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A resource as kube-apiserver names it in messages: `pods`, `deployments.apps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// One field-level reason an object is invalid (`details.causes[]` of a 422).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, …
    pub reason: String,
    /// The dotted path, `spec.containers[0].image`.
    pub field: String,
    /// What is wrong, as kube prints it after the field: `Required value`, `Invalid value: "x": …`.
    pub message: String,
}

/// Every way an API request can fail. The doc comment of each variant is its reason and HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 NotFound: `pods "nope" not found`.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: GroupResource, name: String },
    /// 404 NotFound for a path that names no resource.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 409 AlreadyExists: `deployments.apps "web" already exists`.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: GroupResource, name: String },
    /// 409 Conflict: an optimistic-concurrency failure or a failed precondition.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict {
        resource: GroupResource,
        name: String,
        message: String,
    },
    /// 409 Conflict of a server-side apply: `Apply failed with 1 conflict: conflict with "kubectl-…" …`,
    /// one `FieldManagerConflict` cause per field.
    #[error("{message}")]
    ApplyConflict { message: String, causes: Vec<Cause> },
    /// 422 Invalid: `The Pod "x" is invalid: spec.containers: Required value`.
    #[error("{}", invalid_message(.kind, .name, .causes))]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },
    /// 400 BadRequest: a malformed request or body.
    #[error("{0}")]
    BadRequest(String),
    /// 401 Unauthorized.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403 Forbidden: `pods "x" is forbidden: …`.
    #[error("{resource} \"{name}\" is forbidden: {message}")]
    Forbidden {
        resource: GroupResource,
        name: String,
        message: String,
    },
    /// 405 MethodNotAllowed.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 406 NotAcceptable.
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(String),
    /// 413 RequestEntityTooLarge.
    #[error("Request entity too large: limit is {limit}")]
    RequestEntityTooLarge { limit: usize },
    /// 415 UnsupportedMediaType.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// 410 Expired: a resourceVersion older than the retained history.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: i64, oldest: i64 },
    /// 410 Expired: a continue token whose snapshot has been compacted away.
    #[error(
        "The provided continue parameter is too old to display a consistent list result. You can start a new \
         list without the continue parameter."
    )]
    ContinueExpired,
    /// 410 Gone.
    #[error("{0}")]
    Gone(String),
    /// 504 Timeout: a resourceVersion the server has not reached.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: i64, current: i64 },
    /// 429 TooManyRequests, with Retry-After.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_seconds: u32,
    },
    /// 501 NotImplemented: a subresource that exists in Kubernetes but has no backend here yet.
    #[error("{0}")]
    NotImplemented(String),
    /// 500 InternalError.
    #[error("Internal error occurred: {0}")]
    Internal(String),
}

fn invalid_message(kind: &str, name: &str, causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    match parts.as_slice() {
        [] => format!("{kind} \"{name}\" is invalid"),
        [one] => format!("The {kind} \"{name}\" is invalid: {one}"),
        many => format!("The {kind} \"{name}\" is invalid: [{}]", many.join(", ")),
    }
}

impl From<rkube_store::Error> for ApiError {
    fn from(e: rkube_store::Error) -> Self {
        match e {
            rkube_store::Error::Compacted { requested, compacted } => ApiError::Expired {
                requested,
                oldest: compacted,
            },
            rkube_store::Error::FutureRevision { requested, current } => {
                ApiError::TooLargeResourceVersion { requested, current }
            }
            rkube_store::Error::ValueTooLarge { limit, .. } => ApiError::RequestEntityTooLarge { limit },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::RequestEntityTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Expired { .. } | ApiError::ContinueExpired | ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLargeResourceVersion { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::RequestEntityTooLarge { .. } => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Expired { .. } | ApiError::ContinueExpired => "Expired",
            ApiError::Gone(_) => "Gone",
            ApiError::TooLargeResourceVersion { .. } => "Timeout",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::NotImplemented(_) => "NotImplemented",
            ApiError::Internal(_) => "InternalError",
        }
    }

    fn details(&self) -> Option<Value> {
        let named = |r: &GroupResource, name: &str| {
            let mut d = json!({ "name": name, "kind": r.resource });
            if !r.group.is_empty() {
                d["group"] = json!(r.group);
            }
            d
        };
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. }
            | ApiError::Forbidden { resource, name, .. } => Some(named(resource, name)),
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
                    .collect();
                let mut d = json!({ "name": name, "kind": kind, "causes": causes });
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            ApiError::TooManyRequests {
                retry_after_seconds, ..
            } => Some(json!({ "retryAfterSeconds": retry_after_seconds })),
            ApiError::Internal(msg) => Some(json!({ "causes": [{ "message": msg }] })),
            _ => None,
        }
    }

    /// The `Status` object this error is reported as (also the object of a watch `ERROR` event).
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if let Some(d) = self.details() {
            s["details"] = d;
        }
        s
    }

    /// A 422 with one cause.
    pub fn invalid_field(group: &str, kind: &str, name: &str, reason: &str, field: &str, msg: &str) -> Self {
        ApiError::Invalid {
            group: group.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            causes: vec![Cause {
                reason: reason.to_string(),
                field: field.to_string(),
                message: msg.to_string(),
            }],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        let mut resp = (self.code(), body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let ApiError::TooManyRequests {
            retry_after_seconds, ..
        } = &self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
        }
        resp
    }
}

/// `{"kind":"Status","status":"Success",…}`: what a delete answers for kinds that do not return the object.
pub fn success(resource: &GroupResource, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({ "name": name, "kind": resource.resource });
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    if let Some(uid) = uid {
        details["uid"] = json!(uid);
    }
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_kube_apiserver() {
        let pods = GroupResource::new("", "pods");
        let deploy = GroupResource::new("apps", "deployments");
        assert_eq!(
            ApiError::NotFound {
                resource: pods.clone(),
                name: "nope".into()
            }
            .to_string(),
            r#"pods "nope" not found"#
        );
        assert_eq!(
            ApiError::AlreadyExists {
                resource: deploy,
                name: "web".into()
            }
            .to_string(),
            r#"deployments.apps "web" already exists"#
        );
        assert_eq!(
            ApiError::Conflict {
                resource: pods,
                name: "x".into(),
                message: "the object has been modified; please apply your changes to the latest version and \
                          try again"
                    .into()
            }
            .to_string(),
            "Operation cannot be fulfilled on pods \"x\": the object has been modified; please apply your \
             changes to the latest version and try again"
        );
        let invalid = ApiError::invalid_field(
            "",
            "Pod",
            "x",
            "FieldValueRequired",
            "spec.containers",
            "Required value",
        );
        assert_eq!(
            invalid.to_string(),
            r#"The Pod "x" is invalid: spec.containers: Required value"#
        );
    }

    #[test]
    fn status_carries_code_reason_and_causes() {
        let invalid = ApiError::invalid_field(
            "apps",
            "Deployment",
            "w",
            "FieldValueRequired",
            "spec.selector",
            "Required value",
        );
        let s = invalid.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(s["details"]["kind"], "Deployment");
        assert_eq!(s["details"]["group"], "apps");
        assert_eq!(s["details"]["causes"][0]["field"], "spec.selector");
        let nf = ApiError::NotFound {
            resource: GroupResource::new("apps", "deployments"),
            name: "w".into(),
        }
        .status();
        assert_eq!(nf["code"], 404);
        assert_eq!(
            nf["details"],
            json!({"name": "w", "kind": "deployments", "group": "apps"})
        );
        let expired = ApiError::from(rkube_store::Error::Compacted {
            requested: 113,
            compacted: 120,
        });
        assert_eq!(expired.code(), StatusCode::GONE);
        assert_eq!(expired.status()["message"], "too old resource version: 113 (120)");
        assert_eq!(expired.reason(), "Expired");
    }
}
