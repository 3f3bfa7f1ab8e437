//! HTTP turned into data, once, at the edge: the URL becomes a [`Route`] (discovery, or a resource request
//! with group, version, namespace, resource, name, subresource and verb — kube-apiserver's "request info"),
//! the query string becomes [`Params`], the Accept header an [`Output`]. Handlers never look at raw HTTP.

use axum::http::{HeaderMap, Method, header};

use crate::status::ApiError;

/// What a request asks of the API, in Kubernetes' words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// A request for a resource: `GET /apis/apps/v1/namespaces/default/deployments/web/scale` is group `apps`,
/// version `v1`, namespace `default`, resource `deployments`, name `web`, subresource `scale`, verb get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub verb: Verb,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/api`: core versions.
    CoreVersions,
    /// `/apis`: every group.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`: the APIResourceList.
    Resources {
        group: String,
        version: String,
    },
    Resource(RequestInfo),
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses a request path (and whether `?watch=true` was given) into a route, the way kube-apiserver's
/// RequestInfoFactory does.
pub fn parse_route(method: &Method, path: &str, watch_param: bool) -> Result<Route, ApiError> {
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v] => {
            return Ok(Route::Resources {
                group: String::new(),
                version: v.to_string(),
            });
        }
        ["apis", g, v] => {
            return Ok(Route::Resources {
                group: g.to_string(),
                version: v.to_string(),
            });
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::NoRoute),
    };
    let mut rest = rest;
    let mut watch = watch_param;
    if rest.first() == Some(&"watch") {
        watch = true;
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let (resource, name, subresource) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::NoRoute),
    };
    if resource == "namespaces" {
        namespace = None;
    }
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "HEAD", _) if watch => Verb::Watch,
        ("GET" | "HEAD", true) => Verb::Get,
        ("GET" | "HEAD", false) => Verb::List,
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return Err(ApiError::MethodNotAllowed),
    };
    Ok(Route::Resource(RequestInfo {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource: resource.to_string(),
        name,
        subresource,
        verb,
    }))
}

/// The query parameters the API understands (unknown ones are ignored, as kube-apiserver does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub watch: bool,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub timeout_seconds: Option<u64>,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
    pub force: bool,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub include_object: Option<String>,
    /// Every parameter, for subresources with their own (`log?container=…`).
    pub raw: Vec<(String, String)>,
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

impl Params {
    pub fn parse(query: &str) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let v = v.into_owned();
            let int = |v: &str| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid {k}: {v:?}")))
            };
            match k.as_ref() {
                "labelSelector" => p.label_selector = Some(v.clone()),
                "fieldSelector" => p.field_selector = Some(v.clone()),
                "resourceVersion" => p.resource_version = Some(v.clone()),
                "resourceVersionMatch" => p.resource_version_match = Some(v.clone()),
                "limit" => p.limit = Some(int(&v)?.max(0) as usize).filter(|&l| l > 0),
                "continue" => p.continue_token = Some(v.clone()).filter(|c| !c.is_empty()),
                "watch" => p.watch = truthy(&v),
                "allowWatchBookmarks" => p.allow_watch_bookmarks = truthy(&v),
                "sendInitialEvents" => p.send_initial_events = Some(truthy(&v)),
                "timeoutSeconds" => p.timeout_seconds = Some(int(&v)?.max(0) as u64),
                "dryRun" => p.dry_run = p.dry_run || v == "All",
                "fieldManager" => p.field_manager = Some(v.clone()),
                "fieldValidation" => p.field_validation = Some(v.clone()),
                "force" => p.force = truthy(&v),
                "gracePeriodSeconds" => p.grace_period_seconds = Some(int(&v)?),
                "propagationPolicy" => p.propagation_policy = Some(v.clone()),
                "orphanDependents" => p.orphan_dependents = Some(truthy(&v)),
                "includeObject" => p.include_object = Some(v.clone()),
                _ => {}
            }
            p.raw.push((k.into_owned(), v));
        }
        Ok(p)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// How much of each object a Table row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// The response shape the client asked for in `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The object (or list) itself, as JSON — also the answer when protobuf is preferred.
    Object,
    /// `as=Table;g=meta.k8s.io`: printer columns for kubectl get.
    Table(IncludeObject),
    /// `as=PartialObjectMetadata` / `as=PartialObjectMetadataList`: metadata only.
    Metadata,
}

/// Which discovery document shape `/api` and `/apis` should answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryFormat {
    Legacy,
    AggregatedV2,
    AggregatedV2Beta1,
}

fn media_types(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().replace(' ', ""))
        .collect()
}

fn has_param(media: &str, param: &str) -> bool {
    media.split(';').any(|p| p == param)
}

/// Picks the first acceptable media type the server can produce, as kube-apiserver negotiates.
/// The field manager of a write that names none: like kube-apiserver, the User-Agent's product
/// (`kubectl/v1.33.1 (linux/amd64) …` → `kubectl`), at most 128 characters. Server-side apply is left without
/// one, because it must name its manager.
pub fn manager_from_user_agent(method: &Method, headers: &HeaderMap) -> Option<String> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return None;
    }
    let is_apply = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/apply-patch"));
    if is_apply {
        return None;
    }
    let agent = headers.get(header::USER_AGENT)?.to_str().ok()?;
    let product = agent.split('/').next().unwrap_or_default().trim();
    (!product.is_empty()).then(|| product.chars().take(128).collect())
}

pub fn output(headers: &HeaderMap, params: &Params) -> Output {
    for media in media_types(headers) {
        let base = media.split(';').next().unwrap_or("");
        if !matches!(
            base,
            "application/json" | "application/yaml" | "*/*" | "application/vnd.kubernetes.protobuf"
        ) {
            continue;
        }
        if !media.contains("as=") {
            return Output::Object;
        }
        if !has_param(&media, "g=meta.k8s.io") {
            continue;
        }
        if has_param(&media, "as=Table") && (has_param(&media, "v=v1") || has_param(&media, "v=v1beta1")) {
            let include = match params.include_object.as_deref() {
                Some("None") => IncludeObject::None,
                Some("Object") => IncludeObject::Object,
                _ => IncludeObject::Metadata,
            };
            return Output::Table(include);
        }
        if has_param(&media, "as=PartialObjectMetadata") || has_param(&media, "as=PartialObjectMetadataList")
        {
            return Output::Metadata;
        }
    }
    Output::Object
}

pub fn discovery_format(headers: &HeaderMap) -> DiscoveryFormat {
    for media in media_types(headers) {
        if has_param(&media, "g=apidiscovery.k8s.io") && has_param(&media, "as=APIGroupDiscoveryList") {
            if has_param(&media, "v=v2") {
                return DiscoveryFormat::AggregatedV2;
            }
            if has_param(&media, "v=v2beta1") {
                return DiscoveryFormat::AggregatedV2Beta1;
            }
        }
        if media.starts_with("application/json") && !media.contains("as=") || media == "*/*" {
            return DiscoveryFormat::Legacy;
        }
    }
    DiscoveryFormat::Legacy
}

/// The encoding of a request body, from Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    Protobuf,
    MergePatch,
    JsonPatch,
    StrategicMergePatch,
    ApplyPatch,
}

pub fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let ct = ct.to_str().unwrap_or("");
    let base = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Ok(match base.as_str() {
        "" | "application/json" => BodyFormat::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyFormat::Yaml,
        "application/vnd.kubernetes.protobuf" => BodyFormat::Protobuf,
        "application/merge-patch+json" => BodyFormat::MergePatch,
        "application/json-patch+json" => BodyFormat::JsonPatch,
        "application/strategic-merge-patch+json" => BodyFormat::StrategicMergePatch,
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => BodyFormat::ApplyPatch,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/json, application/yaml, application/vnd.kubernetes.protobuf".to_string(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn route(method: Method, path: &str) -> Route {
        parse_route(&method, path, false).unwrap()
    }

    fn info(method: Method, path: &str) -> RequestInfo {
        match route(method, path) {
            Route::Resource(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_discovery_paths() {
        assert_eq!(route(Method::GET, "/api"), Route::CoreVersions);
        assert_eq!(route(Method::GET, "/apis/"), Route::Groups);
        assert_eq!(route(Method::GET, "/apis/apps"), Route::Group("apps".into()));
        assert_eq!(
            route(Method::GET, "/api/v1"),
            Route::Resources {
                group: "".into(),
                version: "v1".into()
            }
        );
        assert_eq!(
            route(Method::GET, "/apis/apps/v1"),
            Route::Resources {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert!(matches!(
            parse_route(&Method::GET, "/foo", false),
            Err(ApiError::NoRoute)
        ));
    }

    #[test]
    fn parses_resource_paths() {
        let i = info(
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        );
        assert_eq!(
            i,
            RequestInfo {
                group: "apps".into(),
                version: "v1".into(),
                namespace: Some("default".into()),
                resource: "deployments".into(),
                name: Some("web".into()),
                subresource: Some("scale".into()),
                verb: Verb::Get,
            }
        );
        assert_eq!(info(Method::GET, "/api/v1/pods").verb, Verb::List);
        assert_eq!(info(Method::GET, "/api/v1/pods").namespace, None);
        assert_eq!(
            info(Method::DELETE, "/api/v1/namespaces/x/pods").verb,
            Verb::DeleteCollection
        );
        assert_eq!(
            info(Method::DELETE, "/api/v1/namespaces/x/pods/p").verb,
            Verb::Delete
        );
        assert_eq!(
            info(Method::PATCH, "/api/v1/nodes/n1/status")
                .subresource
                .as_deref(),
            Some("status")
        );
        let w = info(Method::GET, "/api/v1/watch/namespaces/x/pods");
        assert_eq!(
            (w.verb, w.namespace.as_deref(), w.resource.as_str()),
            (Verb::Watch, Some("x"), "pods")
        );
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/pods", true)
                .map(|r| matches!(
                    r,
                    Route::Resource(RequestInfo {
                        verb: Verb::Watch,
                        ..
                    })
                ))
                .ok(),
            Some(true)
        );
    }

    #[test]
    fn namespaces_are_cluster_scoped_with_their_own_subresources() {
        let ns = info(Method::GET, "/api/v1/namespaces/kube-system");
        assert_eq!(
            (ns.namespace, ns.resource.as_str(), ns.name.as_deref()),
            (None, "namespaces", Some("kube-system"))
        );
        let fin = info(Method::PUT, "/api/v1/namespaces/x/finalize");
        assert_eq!(
            (fin.name.as_deref(), fin.subresource.as_deref()),
            (Some("x"), Some("finalize"))
        );
        let list = info(Method::GET, "/api/v1/namespaces");
        assert_eq!((list.verb, list.name), (Verb::List, None));
    }

    #[test]
    fn params_and_negotiation() {
        let p = Params::parse("labelSelector=app%3Dweb&limit=500&watch=1&dryRun=All&continue=").unwrap();
        assert_eq!(p.label_selector.as_deref(), Some("app=web"));
        assert_eq!(p.limit, Some(500));
        assert!(p.watch && p.dry_run);
        assert_eq!(p.continue_token, None);
        assert!(Params::parse("limit=x").is_err());

        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            ),
        );
        assert_eq!(output(&h, &p), Output::Table(IncludeObject::Metadata));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf,application/json"),
        );
        assert_eq!(output(&h, &p), Output::Object);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
            ),
        );
        assert_eq!(discovery_format(&h), DiscoveryFormat::AggregatedV2);
        h.remove(header::ACCEPT);
        assert_eq!(discovery_format(&h), DiscoveryFormat::Legacy);
        assert_eq!(body_format(&h).unwrap(), BodyFormat::Json);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(matches!(body_format(&h), Err(ApiError::UnsupportedMediaType(_))));
    }

    #[test]
    fn writes_without_a_field_manager_are_managed_by_the_user_agent() {
        let mut h = HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            "kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            manager_from_user_agent(&Method::PATCH, &h).as_deref(),
            Some("kubectl")
        );
        assert_eq!(manager_from_user_agent(&Method::GET, &h), None);
        h.insert(
            header::CONTENT_TYPE,
            "application/apply-patch+yaml".parse().unwrap(),
        );
        assert_eq!(manager_from_user_agent(&Method::PATCH, &h), None);
        assert_eq!(manager_from_user_agent(&Method::POST, &HeaderMap::new()), None);
    }
}
