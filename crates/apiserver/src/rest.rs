//! The resource handlers: get, list, create, update, patch, delete and deletecollection with Kubernetes
//! semantics (resourceVersion = store mod revision, optimistic concurrency, generateName, namespaces that must
//! exist and not be terminating, finalizers and graceful deletion, preconditions, dryRun, fieldValidation,
//! limit/continue). Watches are in [`crate::watch`], subresources in [`crate::subresources`].

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use rkube_store::{RangeRequest, Revision, WriteResult};
use serde_json::{Value, json};

use crate::ApiState;
use crate::cache::CachedObject;
use crate::output::{self, json_response};
use crate::registry::Kind;
use crate::request::{BodyFormat, Output, Params, RequestInfo, Verb};
use crate::selectors::{FieldSelector, LabelSelector, Selector};
use crate::status::{ApiError, Cause};
use crate::{admission, defaults, strategy};

/// How many times a read-modify-write is retried on a store conflict before giving up with 409.
const MAX_UPDATE_ATTEMPTS: usize = 32;
/// How long a read waits for the watch cache to reach a revision the store already has.
const CACHE_WAIT: Duration = Duration::from_secs(3);

/// A request for a resource, as data.
pub struct ApiRequest {
    pub info: RequestInfo,
    pub params: Params,
    pub output: Output,
    /// `Err`: the Content-Type is not one the API reads (415 if a body is needed).
    pub body_format: Result<BodyFormat, ApiError>,
    pub body: Bytes,
}

impl ApiRequest {
    pub fn decode_body(&self) -> Result<Value, ApiError> {
        let format = match &self.body_format {
            Ok(f) => *f,
            Err(e) => return Err(ApiError::UnsupportedMediaType(e.to_string())),
        };
        crate::body::decode(format, &self.body)
    }

    fn name(&self) -> Result<&str, ApiError> {
        self.info.name.as_deref().ok_or(ApiError::MethodNotAllowed)
    }
}

/// The key of an object below its resource's prefix, as the cache and continue tokens use it.
pub fn object_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

pub fn store_key(kind: &Kind, key: &str) -> String {
    format!("{}{key}", kind.key_prefix())
}

/// The current time as Kubernetes writes timestamps.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn not_found(kind: &Kind, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: kind.group_resource(),
        name: name.to_string(),
    }
}

fn conflict(kind: &Kind, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: kind.group_resource(),
        name: name.to_string(),
        message:
            "the object has been modified; please apply your changes to the latest version and try again"
                .to_string(),
    }
}

pub async fn handle(state: &Arc<ApiState>, kind: &Kind, req: ApiRequest) -> Result<Response, ApiError> {
    if let Some(sub) = req.info.subresource.clone() {
        return crate::subresources::handle(state, kind, req, &sub).await;
    }
    if kind.namespaced && req.info.namespace.is_none() && !matches!(req.info.verb, Verb::List | Verb::Watch) {
        return Err(ApiError::NoRoute);
    }
    match req.info.verb {
        Verb::Get => get(state, kind, &req).await,
        Verb::List => list(state, kind, &req).await,
        Verb::Watch => crate::watch::watch(state, kind, &req).await,
        Verb::Create => create(state, kind, &req).await,
        Verb::Update => update(state, kind, &req).await,
        Verb::Patch => crate::subresources::patch(state, kind, &req, None).await,
        Verb::Delete => delete(state, kind, &req).await,
        Verb::DeleteCollection => delete_collection(state, kind, &req).await,
    }
}

/// An object read from the store, in the kind's own form.
pub(crate) fn from_store(
    kind: &Kind,
    key: String,
    stored: &[u8],
    rv: Revision,
) -> Result<CachedObject, ApiError> {
    let bad = |e: serde_json::Error| ApiError::Internal(format!("stored object {key} is not JSON: {e}"));
    match kind.conversion {
        None => CachedObject::from_stored(key.clone(), stored, rv).map_err(bad),
        Some(_) => {
            let value: Value = serde_json::from_slice(stored).map_err(bad)?;
            Ok(CachedObject::from_value(key, &mut kind.from_storage(value), rv))
        }
    }
}

/// A cached (stored-form) object in the kind's own form.
pub(crate) fn shown(kind: &Kind, obj: Arc<CachedObject>) -> Arc<CachedObject> {
    match kind.conversion {
        None => obj,
        Some(_) => Arc::new(CachedObject::from_value(
            obj.key.clone(),
            &mut kind.from_storage(obj.value.clone()),
            obj.rv,
        )),
    }
}

/// Reads one object from the store (a consistent read), `metadata.resourceVersion` stamped.
pub(crate) async fn read(
    state: &ApiState,
    kind: &Kind,
    key: &str,
) -> Result<Option<Arc<CachedObject>>, ApiError> {
    let Some(kv) = state.store.get(store_key(kind, key).as_bytes(), 0).await? else {
        return Ok(None);
    };
    Ok(Some(Arc::new(from_store(
        kind,
        key.to_string(),
        &kv.value,
        kv.mod_revision,
    )?)))
}

async fn get(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.name()?;
    let key = object_key(req.info.namespace.as_deref(), name);
    let from_cache = match req.params.resource_version.as_deref() {
        None | Some("") => None,
        Some(rv) => Some(parse_rv(rv)?),
    };
    let obj = match from_cache {
        Some(rv) if wait_cache(state, rv).await => cache_of(state, kind)?.get(&key).map(|o| shown(kind, o)),
        _ => read(state, kind, &key).await?,
    };
    let obj = obj.ok_or_else(|| not_found(kind, name))?;
    Ok(json_response(
        StatusCode::OK,
        output::object(kind, &obj, req.output),
        &[],
    ))
}

pub(crate) fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))
}

async fn wait_cache(state: &ApiState, rv: Revision) -> bool {
    rv == 0 || state.caches.revision() >= rv || state.caches.wait_for(rv, CACHE_WAIT).await
}

pub(crate) fn cache_of<'a>(
    state: &'a ApiState,
    kind: &Kind,
) -> Result<&'a Arc<crate::cache::ResourceCache>, ApiError> {
    state
        .caches
        .resource(&kind.storage_resource())
        .ok_or_else(|| ApiError::Internal(format!("no watch cache for {}", kind.group_resource())))
}

pub(crate) fn selector(kind: &Kind, params: &Params) -> Result<Selector, ApiError> {
    let labels = match params.label_selector.as_deref() {
        Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => LabelSelector::default(),
    };
    let fields = match params.field_selector.as_deref() {
        Some(s) => {
            FieldSelector::parse(s, kind.group, kind.kind).map_err(|e| ApiError::BadRequest(e.to_string()))?
        }
        None => FieldSelector::default(),
    };
    Ok(Selector { labels, fields })
}

/// A list continue token: kube-apiserver's `{"v":"meta.k8s.io/v1","rv":N,"start":"key\0"}`, base64.
pub(crate) fn encode_continue(rv: Revision, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{last_key}\u{0}")});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

pub(crate) fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    let bad = || {
        ApiError::BadRequest(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
                .to_string(),
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?;
    Ok((rv, start.trim_end_matches('\u{0}').to_string()))
}

/// One page of a list.
pub(crate) struct Page {
    pub items: Vec<Arc<CachedObject>>,
    pub revision: Revision,
    pub continue_after: Option<String>,
}

/// Reads a page from the store at `revision` (an exact or continued list), filtering as it goes.
async fn list_from_store(
    state: &ApiState,
    kind: &Kind,
    prefix: &str,
    start_after: Option<String>,
    revision: Revision,
    limit: usize,
    selector: &Selector,
) -> Result<Page, ApiError> {
    let full_prefix = store_key(kind, prefix);
    let mut start = start_after
        .map(|s| Bytes::from(store_key(kind, &s)))
        .unwrap_or_default();
    let mut items = Vec::new();
    let mut revision = revision;
    loop {
        let resp = state
            .store
            .range(RangeRequest {
                prefix: Bytes::from(full_prefix.clone()),
                start_after: start.clone(),
                revision,
                limit,
            })
            .await
            .map_err(|e| match e {
                rkube_store::Error::Compacted { .. } => ApiError::ContinueExpired,
                other => other.into(),
            })?;
        revision = resp.revision;
        for (i, kv) in resp.kvs.iter().enumerate() {
            let key = String::from_utf8_lossy(&kv.key[kind.key_prefix().len()..]).into_owned();
            let obj = from_store(kind, key, &kv.value, kv.mod_revision)?;
            if selector.matches(&obj.value) {
                items.push(Arc::new(obj));
            }
            if limit > 0 && items.len() == limit {
                let more = resp.more || i + 1 < resp.kvs.len();
                let continue_after = more.then(|| items.last().map(|o| o.key.clone())).flatten();
                return Ok(Page {
                    items,
                    revision,
                    continue_after,
                });
            }
        }
        match (resp.more, resp.kvs.last()) {
            (true, Some(last)) => start = last.key.clone(),
            _ => {
                return Ok(Page {
                    items,
                    revision,
                    continue_after: None,
                });
            }
        }
    }
}

/// Serves a list page: from the watch cache unless an exact revision or a continuation asks for the store.
pub(crate) async fn list_page(
    state: &ApiState,
    kind: &Kind,
    namespace: Option<&str>,
    params: &Params,
) -> Result<Page, ApiError> {
    let selector = selector(kind, params)?;
    let prefix = namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
    let limit = params.limit.unwrap_or(0);
    if let Some(token) = &params.continue_token {
        let (rv, start) = decode_continue(token)?;
        return list_from_store(state, kind, &prefix, Some(start), rv, limit, &selector).await;
    }
    let rv = params
        .resource_version
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_rv)
        .transpose()?;
    let exact = params.resource_version_match.as_deref() == Some("Exact")
        || (params.resource_version_match.is_none() && limit > 0 && rv.is_some_and(|r| r > 0));
    if let Some(m) = params.resource_version_match.as_deref()
        && !matches!(m, "Exact" | "NotOlderThan")
    {
        return Err(ApiError::BadRequest(format!(
            "resourceVersionMatch: Unsupported value: {m:?}"
        )));
    }
    if exact {
        let rv = rv.ok_or_else(|| {
            ApiError::BadRequest(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            )
        })?;
        return list_from_store(state, kind, &prefix, None, rv, limit, &selector).await;
    }
    // Unset resourceVersion is a consistent read: the cache must first reach the store's current revision.
    let target = match rv {
        Some(rv) => rv,
        None => state.store.current_revision().await?,
    };
    if !wait_cache(state, target).await {
        if rv.is_some() {
            return Err(ApiError::TooLargeResourceVersion {
                requested: target,
                current: state.caches.revision(),
            });
        }
        return list_from_store(state, kind, &prefix, None, 0, limit, &selector).await;
    }
    let cache = cache_of(state, kind)?;
    if kind.conversion.is_some() {
        let snapshot = cache.list(&prefix, None, 0, |_| true);
        let mut items: Vec<_> = snapshot
            .items
            .into_iter()
            .map(|o| shown(kind, o))
            .filter(|o| selector.matches(&o.value))
            .collect();
        let continue_after = (limit > 0 && items.len() > limit).then(|| items[limit - 1].key.clone());
        items.truncate(if limit > 0 { limit } else { items.len() });
        return Ok(Page {
            items,
            revision: snapshot.revision,
            continue_after,
        });
    }
    if let (Some(name), Some(ns)) = (selector.fields.exact_name(), namespace) {
        let snapshot = cache.list(&object_key(Some(ns), name), None, 0, |o| {
            o.key.len() == prefix.len() + name.len() && selector.matches(&o.value)
        });
        return Ok(Page {
            items: snapshot.items,
            revision: snapshot.revision,
            continue_after: None,
        });
    }
    let everything = selector.is_everything();
    let snapshot = cache.list(&prefix, None, limit, |o| everything || selector.matches(&o.value));
    Ok(Page {
        items: snapshot.items,
        revision: snapshot.revision,
        continue_after: snapshot.continue_after,
    })
}

async fn list(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let page = list_page(state, kind, req.info.namespace.as_deref(), &req.params).await?;
    let token = page
        .continue_after
        .as_deref()
        .map(|k| encode_continue(page.revision, k));
    // A big Table is CPU work of many milliseconds: keep it off the async workers.
    let body = if matches!(req.output, Output::Table(_)) && page.items.len() > 500 {
        let state = state.clone();
        let index = state.registry.index_of(kind);
        let output = req.output;
        tokio::task::spawn_blocking(move || {
            let kind = &state.registry.kinds()[index];
            output::list(kind, &page.items, page.revision, token, output)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("rendering the table failed: {e}")))?
    } else {
        output::list(kind, &page.items, page.revision, token, req.output)
    };
    Ok(json_response(StatusCode::OK, body, &[]))
}

/// Checks `apiVersion`/`kind` against the URL (filling them when absent), reports unknown fields as
/// `fieldValidation` asks, and prunes them by decoding into the kind's k8s-openapi type.
pub(crate) fn decode_object(
    state: &ApiState,
    kind: &Kind,
    mut obj: Value,
    params: &Params,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: expected an object",
            kind.kind, kind.version, kind.kind
        )));
    }
    let api_version = kind.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => obj["apiVersion"] = json!(api_version),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind.kind => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        _ => obj["kind"] = json!(kind.kind),
    }
    let validation = params.field_validation.as_deref().unwrap_or("Warn");
    if validation != "Ignore" {
        let unknown = admission::unknown_fields(state, kind, &obj);
        if !unknown.is_empty() {
            let messages: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
            match validation {
                "Strict" => {
                    return Err(ApiError::BadRequest(format!(
                        "strict decoding error: {}",
                        messages.join(", ")
                    )));
                }
                _ => warnings.extend(messages),
            }
        }
    }
    (kind.decode)(&obj).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            kind.kind, kind.version, kind.kind
        ))
    })
}

const GENERATED_NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub(crate) fn generate_name(base: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let base: String = base.chars().take(58).collect();
    let suffix: String = (0..5)
        .map(|_| GENERATED_NAME_CHARS[rng.random_range(0..GENERATED_NAME_CHARS.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

/// Metadata the server owns, removed from whatever a client sent.
fn strip_server_metadata(obj: &mut Value) {
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            m.remove(k);
        }
    }
}

/// Sets the namespace from the URL, refusing a different one in the body.
fn set_namespace(kind: &Kind, obj: &mut Value, namespace: Option<&str>) -> Result<(), ApiError> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match (kind.namespaced, namespace) {
        (true, Some(ns)) => {
            match obj["metadata"]["namespace"].as_str() {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request"
                            .to_string(),
                    ));
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
            Ok(())
        }
        _ => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            Ok(())
        }
    }
}

/// Where a write ends up.
pub(crate) enum Written {
    /// Stored (created or updated), with its new resourceVersion.
    Stored(Arc<CachedObject>),
    /// Nothing changed: the current object.
    Unchanged(Arc<CachedObject>),
    /// Removed from the store; the object's last state stamped with the delete's revision.
    Deleted(Arc<CachedObject>),
    /// dryRun: what would have been stored.
    DryRun(Arc<CachedObject>),
}

impl Written {
    pub fn object(&self) -> &Arc<CachedObject> {
        match self {
            Written::Stored(o) | Written::Unchanged(o) | Written::Deleted(o) | Written::DryRun(o) => o,
        }
    }
}

/// What a read-modify-write step decides given the current object.
pub(crate) enum Decision {
    Write(Value),
    Delete,
    Unchanged,
}

/// Writes `obj` as a new object; `AlreadyExists` if the key is taken.
async fn store_create(state: &ApiState, kind: &Kind, key: &str, mut obj: Value) -> Result<Written, ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let bytes = output::value_bytes(&kind.to_storage(&obj));
    match state.store.create(store_key(kind, key).as_bytes(), bytes).await? {
        WriteResult::Done { kv, .. } => Ok(Written::Stored(Arc::new(CachedObject::from_value(
            key.to_string(),
            &mut obj,
            kv.mod_revision,
        )))),
        WriteResult::Conflict { .. } => Err(ApiError::AlreadyExists {
            resource: kind.group_resource(),
            name,
        }),
    }
}

/// kube-apiserver's GuaranteedUpdate: read the current object, let `decide` compute the new one, write it
/// guarded by the read's revision, and on a conflict read again and repeat. `decide` sees `None` when the
/// object does not exist and may then create it.
pub(crate) async fn guaranteed_update<F>(
    state: &ApiState,
    kind: &Kind,
    key: &str,
    dry_run: bool,
    mut decide: F,
) -> Result<Written, ApiError>
where
    F: FnMut(Option<&Arc<CachedObject>>) -> Result<Decision, ApiError>,
{
    let skey = store_key(kind, key);
    let mut current = read(state, kind, key).await?;
    for _ in 0..MAX_UPDATE_ATTEMPTS {
        let decision = decide(current.as_ref())?;
        let result = match (decision, &current) {
            (Decision::Unchanged, Some(cur)) => return Ok(Written::Unchanged(cur.clone())),
            (Decision::Unchanged | Decision::Delete, None) => {
                let name = key.rsplit('/').next().unwrap_or(key);
                return Err(not_found(kind, name));
            }
            (Decision::Write(mut obj), cur) => {
                strip_resource_version(&mut obj);
                if dry_run {
                    let rv = cur.as_ref().map(|c| c.rv).unwrap_or(0);
                    let mut o = CachedObject::from_value(key.to_string(), &mut obj, rv);
                    if cur.is_none() {
                        remove_resource_version(&mut o);
                    }
                    return Ok(Written::DryRun(Arc::new(o)));
                }
                let bytes = output::value_bytes(&kind.to_storage(&obj));
                let result = match cur {
                    Some(cur) => state.store.update(skey.as_bytes(), bytes, cur.rv).await?,
                    None => state.store.create(skey.as_bytes(), bytes).await?,
                };
                if let WriteResult::Done { kv, .. } = &result {
                    return Ok(Written::Stored(Arc::new(CachedObject::from_value(
                        key.to_string(),
                        &mut obj,
                        kv.mod_revision,
                    ))));
                }
                result
            }
            (Decision::Delete, Some(cur)) => {
                if dry_run {
                    return Ok(Written::DryRun(cur.clone()));
                }
                let result = state.store.delete(skey.as_bytes(), Some(cur.rv)).await?;
                if let WriteResult::Done { revision, .. } = &result {
                    let mut last = cur.value.clone();
                    return Ok(Written::Deleted(Arc::new(CachedObject::from_value(
                        key.to_string(),
                        &mut last,
                        *revision,
                    ))));
                }
                result
            }
        };
        let WriteResult::Conflict { current: latest } = result else {
            unreachable!("Done returned above")
        };
        current = match latest {
            Some(kv) => Some(Arc::new(from_store(
                kind,
                key.to_string(),
                &kv.value,
                kv.mod_revision,
            )?)),
            None => None,
        };
    }
    Err(conflict(kind, key.rsplit('/').next().unwrap_or(key)))
}

fn strip_resource_version(obj: &mut Value) {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
}

fn remove_resource_version(o: &mut CachedObject) {
    strip_resource_version(&mut o.value);
    o.json = output::value_bytes(&o.value);
}

/// The namespace must exist and not be terminating for anything to be created in it.
pub(crate) async fn check_namespace(
    state: &ApiState,
    kind: &Kind,
    namespace: &str,
    name: &str,
) -> Result<(), ApiError> {
    let namespaces = state
        .registry
        .get("", "v1", "namespaces")
        .expect("namespaces are always served");
    // The cache answers when it is current; right after a namespace change it may lag, so then the store does.
    let current = state.caches.revision() >= state.store.current_revision().await?;
    let cached = if current {
        cache_of(state, namespaces)?.get(namespace)
    } else {
        None
    };
    let ns = match cached {
        Some(ns) => Some(ns),
        None => read(state, namespaces, namespace).await?,
    };
    let ns = ns.ok_or_else(|| not_found(namespaces, namespace))?;
    if ns.value["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Err(ApiError::Forbidden {
            resource: kind.group_resource(),
            name: name.to_string(),
            message: format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
        });
    }
    Ok(())
}

/// Creates an object: the whole create path shared by POST, create-on-update, apply and bootstrap.
pub(crate) async fn create_object(
    state: &ApiState,
    kind: &Kind,
    namespace: Option<&str>,
    mut obj: Value,
    params: &Params,
) -> Result<Written, ApiError> {
    set_namespace(kind, &mut obj, namespace)?;
    strip_server_metadata(&mut obj);
    let metadata = &mut obj["metadata"];
    let name = match metadata["name"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => match metadata["generateName"].as_str().filter(|n| !n.is_empty()) {
            Some(base) => generate_name(base),
            None => {
                return Err(ApiError::invalid_field(
                    kind.group,
                    kind.kind,
                    "",
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
        },
    };
    metadata["name"] = json!(name);
    metadata["uid"] = json!(uuid::Uuid::new_v4().to_string());
    metadata["creationTimestamp"] = json!(now());
    if let Some(ns) = namespace.filter(|_| kind.namespaced) {
        check_namespace(state, kind, ns, &name).await?;
    }
    strategy::prepare_for_create(&kind.strategy, kind.group, kind.kind, &mut obj);
    defaults::apply(kind.group, kind.kind, &mut obj);
    admission::default_tolerations(state, kind, &mut obj);
    admission::service_account(state, kind, &mut obj).await?;
    admission::validate(kind, &obj, None)?;
    let key = object_key(namespace.filter(|_| kind.namespaced), &name);
    let allocation = admission::allocate(state, kind, &mut obj, None)?;
    admission::track_managed_fields(state, kind, None, &mut obj, params);
    if params.dry_run {
        allocation.release(state);
        let mut o = CachedObject::from_value(key, &mut obj, 0);
        remove_resource_version(&mut o);
        return Ok(Written::DryRun(Arc::new(o)));
    }
    let result = store_create(state, kind, &key, obj).await;
    if result.is_err() {
        allocation.release(state);
    }
    result
}

async fn create(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    if req.info.name.is_some() {
        return Err(ApiError::MethodNotAllowed);
    }
    let mut warnings = Vec::new();
    let obj = decode_object(state, kind, req.decode_body()?, &req.params, &mut warnings)?;
    let written = create_object(state, kind, req.info.namespace.as_deref(), obj, &req.params).await?;
    Ok(json_response(
        StatusCode::CREATED,
        output::object(kind, written.object(), req.output),
        &warnings,
    ))
}

/// Metadata a spec write may not change: carried over from the stored object.
pub(crate) fn keep_immutable_metadata(new: &mut Value, old: &Value) {
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    ] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
}

/// Compares two objects ignoring resourceVersion and managedFields timestamps: an update that changes
/// nothing is not written (and gets no new resourceVersion), as in Kubernetes.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

/// The update step shared by PUT, PATCH and their `/status` forms: `new` is the client's full object.
pub(crate) fn prepare_update(
    state: &ApiState,
    kind: &Kind,
    mut new: Value,
    old: &Arc<CachedObject>,
    status_only: bool,
    params: &Params,
    allocations: &mut Vec<admission::Allocation>,
) -> Result<Decision, ApiError> {
    let name = old.value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(rv) = new["metadata"]["resourceVersion"]
        .as_str()
        .filter(|rv| !rv.is_empty())
        && rv != old.rv.to_string()
    {
        return Err(conflict(kind, &name));
    }
    if let Some(uid) = new["metadata"]["uid"].as_str().filter(|u| !u.is_empty())
        && Some(uid) != old.value["metadata"]["uid"].as_str()
    {
        return Err(ApiError::Conflict {
            resource: kind.group_resource(),
            name: name.clone(),
            message: format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                old.value["metadata"]["uid"].as_str().unwrap_or_default()
            ),
        });
    }
    match new["metadata"]["name"].as_str() {
        Some(n) if n != name => {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => new["metadata"]["name"] = json!(name),
    }
    let namespace = old.value["metadata"]["namespace"].as_str().map(String::from);
    set_namespace(kind, &mut new, namespace.as_deref())?;
    let mut new = if status_only {
        strategy::prepare_for_status_update(&new, &old.value)
    } else {
        keep_immutable_metadata(&mut new, &old.value);
        strategy::prepare_for_update(&kind.strategy, kind.has_status(), &mut new, &old.value);
        new
    };
    defaults::apply(kind.group, kind.kind, &mut new);
    admission::validate(kind, &new, Some(&old.value))?;
    allocations.push(admission::allocate(state, kind, &mut new, Some(&old.value))?);
    admission::track_managed_fields(state, kind, Some(&old.value), &mut new, params);
    if same_object(&new, &old.value) {
        return Ok(Decision::Unchanged);
    }
    // An object being deleted whose last finalizer was just removed is deleted by this update.
    let deleting = new["metadata"]
        .get("deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    let finalizers_left = new["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let graceful = new["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(0)
        > 0;
    if deleting && !finalizers_left && !graceful && kind.kind != "Namespace" {
        return Ok(Decision::Delete);
    }
    Ok(Decision::Write(new))
}

async fn update(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let mut warnings = Vec::new();
    let body = decode_object(state, kind, req.decode_body()?, &req.params, &mut warnings)?;
    let written = update_object(state, kind, req, body, false).await?;
    let code = if matches!(written, (Written::Stored(_), true)) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        code,
        output::object(kind, written.0.object(), req.output),
        &warnings,
    ))
}

/// PUT: replaces the object (or its status); creates it when the kind allows create-on-update.
/// Returns the outcome and whether it was a create.
pub(crate) async fn update_object(
    state: &ApiState,
    kind: &Kind,
    req: &ApiRequest,
    body: Value,
    status_only: bool,
) -> Result<(Written, bool), ApiError> {
    let name = req.name()?.to_string();
    let namespace = req.info.namespace.as_deref();
    let key = object_key(namespace, &name);
    if !status_only && kind.strategy.allow_create_on_update && read(state, kind, &key).await?.is_none() {
        let mut body = body.clone();
        match body["metadata"]["name"].as_str() {
            Some(n) if n != name => {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => body["metadata"]["name"] = json!(name),
        }
        match create_object(state, kind, namespace, body, &req.params).await {
            Ok(w) => return Ok((w, true)),
            Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let written = update_existing(state, kind, &key, &name, &req.params, status_only, |_| {
        Ok(body.clone())
    })
    .await?;
    Ok((written, false))
}

/// A read-modify-write of an existing object: `make` builds the client's new object from the current one,
/// then the update rules apply; ClusterIPs/NodePorts taken by attempts that were not stored are given back,
/// and those the stored object no longer holds are released.
pub(crate) async fn update_existing<F>(
    state: &ApiState,
    kind: &Kind,
    key: &str,
    name: &str,
    params: &Params,
    status_only: bool,
    mut make: F,
) -> Result<Written, ApiError>
where
    F: FnMut(&Arc<CachedObject>) -> Result<Value, ApiError>,
{
    let mut allocations = Vec::new();
    let mut last_old: Option<Arc<CachedObject>> = None;
    let result = guaranteed_update(state, kind, key, params.dry_run, |current| {
        let current = current.ok_or_else(|| not_found(kind, name))?;
        last_old = Some(current.clone());
        let new = make(current)?;
        prepare_update(state, kind, new, current, status_only, params, &mut allocations)
    })
    .await;
    match &result {
        Ok(Written::Stored(new)) => {
            if let Some(old) = &last_old {
                admission::release_unused(state, kind, &old.value, &new.value);
            }
            // The last attempt's allocation is the one stored: it stays taken.
            drop(allocations.pop());
        }
        Ok(Written::Deleted(obj)) => admission::release(state, kind, &obj.value),
        _ => {}
    }
    for a in allocations {
        a.release(state);
    }
    result
}

/// The options of a delete, from the body (`DeleteOptions`) and the query.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn from_request(req: &ApiRequest) -> Result<DeleteOptions, ApiError> {
        let body = if req.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            req.decode_body()?
        };
        Ok(Self::from_parts(&body, &req.params))
    }

    pub fn from_parts(body: &Value, params: &Params) -> DeleteOptions {
        let orphan = body["orphanDependents"].as_bool().or(params.orphan_dependents);
        let policy = body["propagationPolicy"]
            .as_str()
            .map(String::from)
            .or_else(|| params.propagation_policy.clone())
            .or_else(|| orphan.map(|o| if o { "Orphan" } else { "Background" }.to_string()));
        DeleteOptions {
            grace_period_seconds: body["gracePeriodSeconds"]
                .as_i64()
                .or(params.grace_period_seconds),
            propagation_policy: policy,
            precondition_uid: body["preconditions"]["uid"].as_str().map(String::from),
            precondition_rv: body["preconditions"]["resourceVersion"]
                .as_str()
                .map(String::from),
            dry_run: params.dry_run
                || body["dryRun"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|v| v == "All")),
        }
    }
}

fn set_finalizer(obj: &mut Value, name: &str, present: bool) {
    let mut list: Vec<Value> = obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.retain(|f| f != name);
    if present {
        list.push(json!(name));
    }
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        obj["metadata"]["finalizers"] = json!(list);
    }
}

/// The grace period a pod delete gets: none for pods no kubelet runs (unscheduled or finished).
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if unscheduled || finished {
        return 0;
    }
    requested
        .unwrap_or_else(|| {
            pod["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
        })
        .max(0)
}

/// Deletes one object the Kubernetes way: preconditions, then either mark it (graceful pods, pending
/// finalizers, namespaces) or remove it.
pub(crate) async fn delete_object(
    state: &ApiState,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    options: &DeleteOptions,
) -> Result<Written, ApiError> {
    let key = object_key(namespace, name);
    guaranteed_update(state, kind, &key, options.dry_run, |current| {
        let current = current.ok_or_else(|| not_found(kind, name))?;
        let meta = &current.value["metadata"];
        if let Some(uid) = &options.precondition_uid
            && Some(uid.as_str()) != meta["uid"].as_str()
        {
            return Err(ApiError::Conflict {
                resource: kind.group_resource(),
                name: name.to_string(),
                message: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta["uid"].as_str().unwrap_or_default()
                ),
            });
        }
        if let Some(rv) = &options.precondition_rv
            && *rv != current.rv.to_string()
        {
            return Err(ApiError::Conflict {
                resource: kind.group_resource(),
                name: name.to_string(),
                message: format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.rv
                ),
            });
        }
        let mut obj = current.value.clone();
        let already_deleting = meta.get("deletionTimestamp").is_some_and(|t| !t.is_null());
        match options.propagation_policy.as_deref() {
            Some("Orphan") => {
                set_finalizer(&mut obj, "orphan", true);
                set_finalizer(&mut obj, "foregroundDeletion", false);
            }
            Some("Foreground") => {
                set_finalizer(&mut obj, "foregroundDeletion", true);
                set_finalizer(&mut obj, "orphan", false);
            }
            Some("Background") => {
                set_finalizer(&mut obj, "orphan", false);
                set_finalizer(&mut obj, "foregroundDeletion", false);
            }
            _ => {}
        }
        if kind.group.is_empty() && kind.kind == "Namespace" {
            let spec_finalizers = obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
            let finalizers = obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
            if already_deleting && !spec_finalizers && !finalizers {
                return Ok(Decision::Delete);
            }
            if !already_deleting {
                obj["metadata"]["deletionTimestamp"] = json!(now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                obj["status"]["phase"] = json!("Terminating");
            }
            return Ok(if obj == current.value { Decision::Unchanged } else { Decision::Write(obj) });
        }
        let grace = if kind.group.is_empty() && kind.kind == "Pod" {
            pod_grace_period(&obj, options.grace_period_seconds)
        } else {
            0
        };
        let has_finalizers = obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if !has_finalizers && (grace == 0 || already_deleting && meta["deletionGracePeriodSeconds"].as_i64() == Some(0)) {
            return Ok(Decision::Delete);
        }
        let current_grace = meta["deletionGracePeriodSeconds"].as_i64();
        if !already_deleting || current_grace.is_some_and(|g| grace < g) {
            let deadline = chrono::Utc::now() + chrono::Duration::seconds(grace);
            obj["metadata"]["deletionTimestamp"] = json!(deadline.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        Ok(if obj == current.value { Decision::Unchanged } else { Decision::Write(obj) })
    })
    .await
    .inspect(|w| {
        if let Written::Deleted(obj) = w {
            admission::release(state, kind, &obj.value);
        }
    })
}

fn delete_reply(kind: &Kind, name: &str, written: &Written, output: Output) -> Response {
    let obj = written.object();
    let body = match written {
        Written::Deleted(_) | Written::DryRun(_) if !kind.strategy.return_deleted_object => {
            output::value_bytes(&crate::status::success(
                &kind.group_resource(),
                name,
                obj.value["metadata"]["uid"].as_str(),
            ))
        }
        _ => output::object(kind, obj, output),
    };
    json_response(StatusCode::OK, body, &[])
}

async fn delete(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let name = req.name()?;
    let options = DeleteOptions::from_request(req)?;
    let written = delete_object(state, kind, req.info.namespace.as_deref(), name, &options).await?;
    Ok(delete_reply(kind, name, &written, req.output))
}

async fn delete_collection(
    state: &Arc<ApiState>,
    kind: &Kind,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let options = DeleteOptions::from_request(req)?;
    let mut params = req.params.clone();
    params.limit = None;
    params.continue_token = None;
    let page = list_page(state, kind, req.info.namespace.as_deref(), &params).await?;
    let mut deleted = Vec::new();
    for obj in &page.items {
        let ns = obj.value["metadata"]["namespace"].as_str();
        let name = obj.value["metadata"]["name"].as_str().unwrap_or_default();
        match delete_object(state, kind, ns, name, &options).await {
            Ok(w) => deleted.push(w.object().clone()),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        output::list(kind, &deleted, page.revision, None, Output::Object),
        &[],
    ))
}

/// An invalid-object error with this kind's name, from field causes.
pub(crate) fn invalid(kind: &Kind, obj: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        group: kind.group.to_string(),
        kind: kind.kind.to_string(),
        name: obj["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        causes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/web-1");
        assert_eq!(decode_continue(&t).unwrap(), (42, "default/web-1".to_string()));
        assert!(decode_continue("not a token").is_err());
    }

    #[test]
    fn generated_names_use_kube_alphabet() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n.starts_with("web-"));
        assert!(n[4..].bytes().all(|b| GENERATED_NAME_CHARS.contains(&b)));
    }

    #[test]
    fn pod_grace_periods() {
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}, "status": {"phase": "Running"}});
        assert_eq!(pod_grace_period(&bound, None), 10);
        assert_eq!(pod_grace_period(&bound, Some(0)), 0);
        assert_eq!(pod_grace_period(&json!({"spec": {}}), Some(30)), 0);
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(pod_grace_period(&done, None), 0);
    }

    #[test]
    fn delete_options_from_body_and_query() {
        let params = Params::parse("gracePeriodSeconds=5").unwrap();
        let o = DeleteOptions::from_parts(
            &json!({"propagationPolicy": "Foreground",
            "preconditions": {"uid": "u"}}),
            &params,
        );
        assert_eq!(o.grace_period_seconds, Some(5));
        assert_eq!(o.propagation_policy.as_deref(), Some("Foreground"));
        assert_eq!(o.precondition_uid.as_deref(), Some("u"));
        let o = DeleteOptions::from_parts(&json!({"orphanDependents": true}), &Params::default());
        assert_eq!(o.propagation_policy.as_deref(), Some("Orphan"));
    }
}
