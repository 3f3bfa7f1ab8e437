//! Authentication and the authorization hook, in front of every API route.
//!
//! Who is asking comes from the TLS client certificate the connection verified against the cluster CA
//! (CommonName = user, Organizations = groups — the server puts a [`PeerIdentity`] in each request's
//! extensions), or from an `Authorization: Bearer` token: the node join token (`DIR/token`), the admin
//! token, or a service-account token ([`crate::serviceaccount_token`], through [`TokenAuthenticator`]).
//! `/livez`, `/readyz`, `/healthz`, `/version` and `/cacerts` (the CA, for agents to pin) are open;
//! anything else without credentials is a 401 `Status`. Every authenticated request then passes one
//! [`Authorizer`] (today: allow everyone authenticated) with Kubernetes' request attributes, so RBAC can replace it without touching the
//! handlers. Handlers find the caller as [`UserInfo`] in the request extensions. Start at [`middleware`].
//! [`review_routes`] answers "who am I" (`SelfSubjectReview`, `kubectl auth whoami`) and "may I"
//! (`SelfSubjectAccessReview`, `kubectl auth can-i`) from the same authenticator and authorizer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

/// An authenticated caller, as Kubernetes' `user.Info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    fn new(name: impl Into<String>, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_string());
        }
        UserInfo {
            name: name.into(),
            groups,
        }
    }
}

/// The identity of a connection's verified client certificate; `None` when the client sent none.
/// Inserted into every request's extensions by the server's connection loop.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<UserInfo>);

impl PeerIdentity {
    /// From the connection's (already verified) certificate chain: its first certificate's subject.
    pub fn from_certificates(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> PeerIdentity {
        let user = certs
            .and_then(|c| c.first())
            .and_then(|leaf| crate::tls::subject_identity(leaf))
            .filter(|id| !id.common_name.is_empty())
            .map(|id| {
                let groups: Vec<&str> = id.organizations.iter().map(String::as_str).collect();
                UserInfo::new(id.common_name, &groups)
            });
        PeerIdentity(user)
    }
}

/// Kubernetes' authorization attributes of one request.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestAttributes {
    /// `get list watch create update patch delete deletecollection` for resources; the lower-case HTTP
    /// method for other paths.
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub path: String,
}

impl RequestAttributes {
    /// Parses a request like kube-apiserver's `RequestInfoFactory`: `/api/v1/…` and `/apis/G/V/…` with
    /// optional `namespaces/NS/`, a resource, a name and a subresource.
    pub fn from_request(method: &Method, path: &str, query: &str) -> RequestAttributes {
        let mut attrs = RequestAttributes {
            verb: method.as_str().to_lowercase(),
            path: path.to_string(),
            ..Default::default()
        };
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let rest: &[&str] = match parts.as_slice() {
            ["api", version, rest @ ..] => {
                attrs.api_version = version.to_string();
                rest
            }
            ["apis", group, version, rest @ ..] => {
                attrs.api_group = group.to_string();
                attrs.api_version = version.to_string();
                rest
            }
            _ => return attrs,
        };
        let watch_param = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch");
        let (rest, watch_path) = match rest {
            ["watch", rest @ ..] => (rest, true),
            _ => (rest, false),
        };
        let rest = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => {
                attrs.namespace = ns.to_string();
                rest
            }
            _ => rest,
        };
        match rest {
            [] => return attrs,
            [resource] => attrs.resource = resource.to_string(),
            [resource, name] => {
                attrs.resource = resource.to_string();
                attrs.name = name.to_string();
            }
            [resource, name, sub, ..] => {
                attrs.resource = resource.to_string();
                attrs.name = name.to_string();
                attrs.subresource = sub.to_string();
            }
        }
        // `/api/v1/namespaces/NS` itself is the namespace resource named NS.
        if attrs.resource.is_empty() && !attrs.namespace.is_empty() {
            attrs.resource = "namespaces".to_string();
            attrs.name = std::mem::take(&mut attrs.namespace);
        }
        attrs.resource_request = true;
        let collection = attrs.name.is_empty();
        attrs.verb = match *method {
            Method::GET | Method::HEAD if watch_path || watch_param => "watch",
            Method::GET | Method::HEAD if collection => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if collection => "deletecollection",
            Method::DELETE => "delete",
            _ => return attrs,
        }
        .to_string();
        attrs
    }
}

/// An authorization decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with the reason Kubernetes appends to its Forbidden message (may be empty).
    Deny(String),
}

/// Decides whether an authenticated user may do what a request asks. Called for every request that is
/// not on an open path.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, user: &UserInfo, attrs: &RequestAttributes) -> Decision;
}

/// Allows every authenticated user everything — the policy until RBAC arrives.
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, user: &UserInfo, _attrs: &RequestAttributes) -> Decision {
        if user.groups.iter().any(|g| g == "system:authenticated") {
            Decision::Allow
        } else {
            Decision::Deny(String::new())
        }
    }
}

/// Paths anyone may read, like kube-apiserver's `system:public-info-viewer` (plus their subpaths,
/// such as `/readyz/ping`).
pub fn is_open_path(path: &str) -> bool {
    ["/livez", "/readyz", "/healthz", "/version", "/cacerts"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// Checks bearer tokens that are not the server's static ones (service-account JWTs).
pub trait TokenAuthenticator: Send + Sync + 'static {
    /// The token's user, or `None` when the token is not valid (the request is then a 401).
    fn authenticate_token(&self, token: &str) -> Option<UserInfo>;
}

/// The credentials the server knows, and the authorizer; shared by every request.
pub struct Authenticator {
    node_token: String,
    admin_token: String,
    authorizer: Box<dyn Authorizer>,
    tokens: Option<Box<dyn TokenAuthenticator>>,
}

impl Authenticator {
    pub fn new(node_token: &str, admin_token: &str, authorizer: Box<dyn Authorizer>) -> Authenticator {
        Authenticator {
            node_token: node_token.to_string(),
            admin_token: admin_token.to_string(),
            authorizer,
            tokens: None,
        }
    }

    /// Also accepts the bearer tokens `tokens` vouches for (after the static tokens).
    pub fn with_tokens(mut self, tokens: Box<dyn TokenAuthenticator>) -> Authenticator {
        self.tokens = Some(tokens);
        self
    }

    /// Who the request is from: its client certificate first, else its bearer token.
    pub fn authenticate(&self, peer: Option<&PeerIdentity>, headers: &HeaderMap) -> Option<UserInfo> {
        if let Some(user) = peer.and_then(|p| p.0.clone()) {
            return Some(user);
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))?
            .trim();
        if !self.admin_token.is_empty() && constant_time_eq(token, &self.admin_token) {
            return Some(UserInfo::new("system:admin", &["system:masters"]));
        }
        // Agents present the join token, optionally as `NODE_NAME/TOKEN` to say which node they are.
        let (node, secret) = match token.rsplit_once('/') {
            Some((node, secret)) if !node.is_empty() => (node, secret),
            _ => ("bootstrap", token),
        };
        if !self.node_token.is_empty() && constant_time_eq(secret, &self.node_token) {
            return Some(UserInfo::new(format!("system:node:{node}"), &["system:nodes"]));
        }
        self.tokens.as_ref()?.authenticate_token(token)
    }
}

/// Compares secrets without revealing through timing how long a prefix matched.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// Kubernetes' Forbidden message: `User "u" cannot list resource "pods" in API group "" in the namespace
/// "default"`.
fn forbidden_message(user: &UserInfo, a: &RequestAttributes, reason: &str) -> String {
    let mut msg = if a.resource_request {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let qualified = if a.api_group.is_empty() {
            a.resource.clone()
        } else {
            format!("{}.{}", a.resource, a.api_group)
        };
        let target = if a.name.is_empty() {
            format!("{qualified} ")
        } else {
            format!("{qualified} {} ", quoted(&a.name))
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {}", quoted(&a.namespace))
        };
        format!(
            "{target}is forbidden: User {} cannot {} resource {} in API group {} {scope}",
            quoted(&user.name),
            a.verb,
            quoted(&resource),
            quoted(&a.api_group)
        )
    } else {
        format!(
            "forbidden: User {} cannot {} path {}",
            quoted(&user.name),
            a.verb,
            quoted(&a.path)
        )
    };
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    msg
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// The authentication + authorization layer: `axum::middleware::from_fn_with_state(auth, middleware)`.
pub async fn middleware(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    if is_open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(user) = auth.authenticate(req.extensions().get::<PeerIdentity>(), req.headers()) else {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    };
    let attrs =
        RequestAttributes::from_request(req.method(), req.uri().path(), req.uri().query().unwrap_or(""));
    if let Decision::Deny(reason) = auth.authorizer.authorize(&user, &attrs) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &forbidden_message(&user, &attrs, &reason),
        );
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` and
/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: the caller's identity, and the
/// authorizer's answer for attributes the caller names. Mount inside the [`middleware`] layer.
pub fn review_routes(auth: Arc<Authenticator>) -> axum::Router {
    axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            axum::routing::post(self_subject_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            axum::routing::post(self_subject_access_review),
        )
        .with_state(auth)
}

fn json_response(code: StatusCode, body: serde_json::Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

async fn self_subject_review(axum::Extension(user): axum::Extension<UserInfo>) -> Response {
    json_response(
        StatusCode::CREATED,
        json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user.name, "groups": user.groups}},
        }),
    )
}

/// A SelfSubjectAccessReview body as JSON: kubectl sends it as protobuf (`k8s\0` + `runtime.Unknown`),
/// other clients as JSON.
fn access_review_json(headers: &HeaderMap, body: &[u8]) -> Option<serde_json::Value> {
    use prost::Message;
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/vnd.kubernetes.protobuf"));
    if !protobuf {
        return serde_json::from_slice(body).ok();
    }
    let envelope = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(body.strip_prefix(b"k8s\0")?).ok()?;
    let review =
        k8s_pb::api::authorization::v1::SelfSubjectAccessReview::decode(envelope.raw?.as_slice()).ok()?;
    let spec = review.spec?;
    let mut out =
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}});
    if let Some(r) = spec.resource_attributes {
        let mut attrs = serde_json::Map::new();
        for (k, v) in [
            ("namespace", r.namespace),
            ("verb", r.verb),
            ("group", r.group),
            ("version", r.version),
            ("resource", r.resource),
            ("subresource", r.subresource),
            ("name", r.name),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                attrs.insert(k.to_string(), json!(v));
            }
        }
        out["spec"]["resourceAttributes"] = serde_json::Value::Object(attrs);
    }
    if let Some(n) = spec.non_resource_attributes {
        out["spec"]["nonResourceAttributes"] =
            json!({"path": n.path.unwrap_or_default(), "verb": n.verb.unwrap_or_default()});
    }
    Some(out)
}

async fn self_subject_access_review(
    State(auth): State<Arc<Authenticator>>,
    axum::Extension(user): axum::Extension<UserInfo>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(mut review) = access_review_json(&headers, &body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the request body is not a SelfSubjectAccessReview",
        );
    };
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let spec = review.get("spec").cloned().unwrap_or_default();
    let attrs = if let Some(r) = spec.get("resourceAttributes") {
        RequestAttributes {
            verb: field(r, "verb"),
            resource_request: true,
            api_group: field(r, "group"),
            api_version: field(r, "version"),
            namespace: field(r, "namespace"),
            resource: field(r, "resource"),
            subresource: field(r, "subresource"),
            name: field(r, "name"),
            path: String::new(),
        }
    } else if let Some(n) = spec.get("nonResourceAttributes") {
        RequestAttributes {
            verb: field(n, "verb"),
            path: field(n, "path"),
            ..Default::default()
        }
    } else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \
             \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        );
    };
    let (allowed, reason) = match auth.authorizer.authorize(&user, &attrs) {
        Decision::Allow => (true, "allowed for every authenticated user".to_string()),
        Decision::Deny(reason) => (false, reason),
    };
    review["status"] = json!({"allowed": allowed, "reason": reason});
    if let Some(obj) = review.as_object_mut() {
        obj.insert("kind".into(), json!("SelfSubjectAccessReview"));
        obj.insert("apiVersion".into(), json!("authorization.k8s.io/v1"));
        obj.entry("metadata")
            .or_insert(json!({"creationTimestamp": null}));
    }
    json_response(StatusCode::CREATED, review)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    fn attrs(method: Method, path: &str, query: &str) -> RequestAttributes {
        RequestAttributes::from_request(&method, path, query)
    }

    #[test]
    fn request_attributes_like_kube_apiserver() {
        let a = attrs(Method::GET, "/api/v1/namespaces/default/pods", "limit=500");
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("list", "default", "pods")
        );
        assert!(a.resource_request);
        let a = attrs(
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments/web",
            "",
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str(), a.name.as_str()),
            ("get", "apps", "web")
        );
        let a = attrs(
            Method::PATCH,
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            "",
        );
        assert_eq!((a.verb.as_str(), a.subresource.as_str()), ("patch", "scale"));
        let a = attrs(Method::GET, "/api/v1/pods", "watch=true&resourceVersion=5");
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
        let a = attrs(Method::DELETE, "/api/v1/namespaces/default/configmaps", "");
        assert_eq!(a.verb, "deletecollection");
        let a = attrs(Method::GET, "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.name.as_str()),
            ("get", "namespaces", "kube-system")
        );
        let a = attrs(Method::GET, "/openapi/v3", "");
        assert!(!a.resource_request);
        assert_eq!(a.verb, "get");
    }

    fn authenticator() -> Authenticator {
        Authenticator::new("nodesecret", "adminsecret", Box::new(AllowAuthenticated))
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn tokens_and_certificates_name_users() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(None, &HeaderMap::new()), None);
        assert_eq!(auth.authenticate(None, &bearer("wrong")), None);
        let node = auth.authenticate(None, &bearer("node-1/nodesecret")).unwrap();
        assert_eq!(node.name, "system:node:node-1");
        assert!(node.groups.contains(&"system:nodes".to_string()));
        assert_eq!(
            auth.authenticate(None, &bearer("nodesecret")).unwrap().name,
            "system:node:bootstrap"
        );
        let admin = auth.authenticate(None, &bearer("adminsecret")).unwrap();
        assert_eq!(admin.groups, ["system:masters", "system:authenticated"]);
        let peer = PeerIdentity(Some(UserInfo::new("alice", &["dev"])));
        assert_eq!(
            auth.authenticate(Some(&peer), &bearer("wrong")).unwrap().name,
            "alice"
        );
        assert_eq!(
            auth.authenticate(Some(&PeerIdentity(None)), &HeaderMap::new()),
            None
        );
    }

    #[test]
    fn client_certificate_names_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::tls::Pki::load_or_create(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        let der: Vec<_> = rustls_pemfile::certs(&mut pki.admin_cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
        let peer = PeerIdentity::from_certificates(Some(&der));
        assert_eq!(peer.0, Some(UserInfo::new("system:admin", &["system:masters"])));
        assert_eq!(PeerIdentity::from_certificates(None).0, None);
    }

    struct DenyDeletes;
    impl Authorizer for DenyDeletes {
        fn authorize(&self, _user: &UserInfo, attrs: &RequestAttributes) -> Decision {
            if attrs.verb == "delete" {
                Decision::Deny(String::new())
            } else {
                Decision::Allow
            }
        }
    }

    async fn call(app: &Router, method: Method, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn reviews_answer_who_and_may_i() {
        let auth = Arc::new(Authenticator::new(
            "nodesecret",
            "adminsecret",
            Box::new(DenyDeletes),
        ));
        let app = review_routes(auth.clone()).layer(axum::middleware::from_fn_with_state(auth, middleware));
        let post = |path: &str, body: serde_json::Value| {
            axum::http::Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::AUTHORIZATION, "Bearer n7/nodesecret")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let resp = app
            .clone()
            .oneshot(post(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                json!({}),
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body: serde_json::Value =
            serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap()).unwrap();
        assert_eq!(body["status"]["userInfo"]["username"], "system:node:n7");
        assert_eq!(
            body["status"]["userInfo"]["groups"],
            json!(["system:nodes", "system:authenticated"])
        );

        for (verb, allowed) in [("get", true), ("delete", false)] {
            let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": "default", "verb": verb, "resource": "pods"}}});
            let resp = app
                .clone()
                .oneshot(post(
                    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                    review,
                ))
                .await
                .unwrap();
            let body: serde_json::Value =
                serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap())
                    .unwrap();
            assert_eq!(body["status"]["allowed"], allowed, "{verb}");
            assert_eq!(body["spec"]["resourceAttributes"]["verb"], verb);
        }
    }

    #[tokio::test]
    async fn middleware_guards_everything_but_health() {
        let auth = Arc::new(Authenticator::new(
            "nodesecret",
            "adminsecret",
            Box::new(DenyDeletes),
        ));
        let app = Router::new()
            .route("/readyz", get(|| async { "ok" }))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(|axum::Extension(user): axum::Extension<UserInfo>| async move { user.name })
                    .delete(|| async { "deleted" }),
            )
            .layer(axum::middleware::from_fn_with_state(auth, middleware));

        assert_eq!(
            call(&app, Method::GET, "/readyz", None).await,
            (StatusCode::OK, "ok".to_string())
        );
        let (code, body) = call(&app, Method::GET, "/api/v1/namespaces/default/pods/p", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (
                status["kind"].as_str(),
                status["reason"].as_str(),
                status["code"].as_i64()
            ),
            (Some("Status"), Some("Unauthorized"), Some(401))
        );
        assert_eq!(
            call(
                &app,
                Method::GET,
                "/api/v1/namespaces/default/pods/p",
                Some("adminsecret")
            )
            .await,
            (StatusCode::OK, "system:admin".to_string())
        );
        let (code, body) = call(
            &app,
            Method::DELETE,
            "/api/v1/namespaces/default/pods/p",
            Some("n1/nodesecret"),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            status["message"],
            "pods \"p\" is forbidden: User \"system:node:n1\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        );
    }
}
