//! rkube-apiserver: the Kubernetes HTTP API over rkube-store, so that kubectl, client-go-style libraries,
//! the Python client and kube-rs drive rkube as they would Kubernetes.
//!
//! Start reading at [`router`]: every request is parsed once into data ([`request`]), dispatched to the
//! resource handlers ([`rest`], [`subresources`], [`watch`]), which consult the [`registry`] of kinds, apply
//! [`strategy`]/[`defaults`]/[`admission`] (validation, ClusterIP/NodePort allocation, field ownership) on
//! writes, read from the [`cache`] and write to the store. Responses are shaped in [`output`] (objects,
//! lists, Tables); every error becomes a Kubernetes `Status` in [`status`]. [`ApiState`] holds what the
//! handlers share; [`bootstrap()`] creates the objects every cluster starts with.
//!
//! The edge — TLS, authentication and the HTTPS server (`tls`, `auth`, `server`) — wraps [`router`]; the
//! value rules (`validation`), printer columns (`tables`) and allocators (`alloc`) are used by the core.
//! `pods/log`, `exec` and `attach` are streamed from the pod's kubelet by [`kubelet_proxy`].
//! Service-account tokens (TokenRequest, their authentication, OIDC discovery) are in
//! [`serviceaccount_token`].

pub mod admission;
pub mod body;
pub mod bootstrap;
pub mod cache;
pub mod defaults;
pub mod discovery;
pub mod events;
pub mod kubelet_proxy;
pub mod output;
pub mod registry;
pub mod request;
pub mod rest;
pub mod selectors;
pub mod serviceaccount_token;
pub mod status;
pub mod strategy;
pub mod subresources;
pub mod watch;

pub mod alloc;
pub mod auth;
pub mod server;
pub mod tables;
pub mod tls;
pub mod validation;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use rkube_store::Backend;

pub use bootstrap::bootstrap;

use crate::request::{Route, Verb};
use crate::status::ApiError;

/// What the API server is configured with.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Services' ClusterIPs come from here; its first address is the `kubernetes` service.
    pub service_cidr: String,
    pub node_port_range: std::ops::RangeInclusive<u16>,
    /// The address clients reach the API server at (the `kubernetes` Endpoints point here).
    pub advertise_address: IpAddr,
    pub advertise_port: u16,
    /// `--default-not-ready-toleration-seconds`: how long new pods tolerate a not-ready or unreachable node.
    pub default_not_ready_toleration_seconds: u64,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            service_cidr: "10.43.0.0/16".to_string(),
            node_port_range: 30000..=32767,
            advertise_address: IpAddr::from([127, 0, 0, 1]),
            advertise_port: 6443,
            default_not_ready_toleration_seconds: 300,
        }
    }
}

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed while loading the watch cache.
    #[error("store: {0}")]
    Store(#[from] rkube_store::Error),
    /// An option is not usable.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The watch cache could not load the store's objects within a minute.
    #[error("the watch cache failed to load the stored objects")]
    CacheLoad,
}

/// Everything the handlers share.
pub struct ApiState {
    pub(crate) store: Arc<dyn Backend>,
    pub(crate) options: ApiOptions,
    pub(crate) registry: registry::Registry,
    pub(crate) discovery: discovery::Discovery,
    pub(crate) caches: Arc<cache::Caches>,
    pub(crate) openapi: rkube_openapi::OpenApi,
    pub(crate) services: parking_lot::Mutex<admission::ServiceAllocators>,
    version: Bytes,
    ready: AtomicBool,
    /// The watch cache's feeder task, stopped when the state goes away.
    cache_task: tokio::task::AbortHandle,
    /// How `pods/log`, `exec` and `attach` reach kubelets; set once the PKI is loaded.
    pub(crate) kubelet: std::sync::OnceLock<kubelet_proxy::KubeletClient>,
    /// Signs service-account tokens (TokenRequest); set once the PKI is loaded.
    tokens: std::sync::OnceLock<Arc<serviceaccount_token::TokenIssuer>>,
}

impl Drop for ApiState {
    fn drop(&mut self) {
        self.cache_task.abort();
    }
}

/// `/version`: the Kubernetes version whose API types are served (the kubectl dispatcher picks its minor).
fn version_json() -> Bytes {
    let v = serde_json::json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0+rkube",
        "gitCommit": "rkube",
        "gitTreeState": "clean",
        "buildDate": "2026-11-26T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": format!("linux/{}", if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }),
    });
    output::value_bytes(&v)
}

impl ApiState {
    /// Builds the state and loads the watch cache from the store (returns once it is loaded).
    pub async fn new(store: Arc<dyn Backend>, options: ApiOptions) -> Result<Arc<ApiState>, StartError> {
        let registry = registry::Registry::builtin();
        let server_address = format!("{}:{}", options.advertise_address, options.advertise_port);
        let discovery = discovery::Discovery::build(&registry, &server_address);
        let caches = cache::Caches::new(registry.kinds().iter().filter(|k| k.conversion.is_none()).map(
            |k| {
                let trigger = (k.group.is_empty() && k.kind == "Pod").then_some("spec.nodeName");
                (k.group_resource().to_string(), trigger)
            },
        ));
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
        let cache_task = tokio::spawn(caches.clone().run(store.clone(), loaded_tx)).abort_handle();
        // A store that cannot be listed within a minute is reported rather than waited on forever.
        match tokio::time::timeout(std::time::Duration::from_secs(60), loaded_rx).await {
            Ok(Ok(())) => {}
            _ => {
                cache_task.abort();
                return Err(StartError::CacheLoad);
            }
        }
        let openapi = rkube_openapi::OpenApi::build(&registry.kind_schemas());
        let mut services =
            admission::ServiceAllocators::new(&options.service_cidr, options.node_port_range.clone())
                .map_err(|e| {
                    cache_task.abort();
                    StartError::InvalidOption(e)
                })?;
        if let Some(cache) = caches.resource("services") {
            for svc in cache.list("", None, 0, |_| true).items {
                services.restore(&svc.value);
            }
        }
        Ok(Arc::new(ApiState {
            openapi,
            services: parking_lot::Mutex::new(services),
            store,
            options,
            registry,
            discovery,
            caches,
            version: version_json(),
            ready: AtomicBool::new(false),
            cache_task,
            kubelet: std::sync::OnceLock::new(),
            tokens: std::sync::OnceLock::new(),
        }))
    }

    /// Turns `/readyz` to 200: call once the server is fully up (certificates, kubeconfig written).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Lets `pods/log`, `exec` and `attach` reach kubelets, and `/cacerts` serve the CA (first call wins).
    pub fn set_kubelet_client(&self, client: kubelet_proxy::KubeletClient) {
        let _ = self.kubelet.set(client);
    }

    /// Lets TokenRequest issue service-account tokens and the OIDC documents serve the key (first call wins).
    pub fn set_token_issuer(&self, issuer: Arc<serviceaccount_token::TokenIssuer>) {
        let _ = self.tokens.set(issuer);
    }

    pub fn token_issuer(&self) -> Option<&Arc<serviceaccount_token::TokenIssuer>> {
        self.tokens.get()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn options(&self) -> &ApiOptions {
        &self.options
    }
}

fn plain(code: StatusCode, text: &'static str) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Every Kubernetes API route plus `/livez /readyz /healthz /version`.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/version", get(|State(s): State<Arc<ApiState>>| async move { output::json_response(StatusCode::OK, s.version.clone(), &[]) }))
        .route("/livez", get(|| async { plain(StatusCode::OK, "ok") }))
        .route("/healthz", get(|| async { plain(StatusCode::OK, "ok") }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<ApiState>>| async move {
                if s.is_ready() { plain(StatusCode::OK, "ok") } else { plain(StatusCode::SERVICE_UNAVAILABLE, "not ready") }
            }),
        )
        // kubectl before 1.29 reads the Swagger 2.0 document, as gnostic protobuf when it can.
        .route("/openapi/v2", get(|State(s): State<Arc<ApiState>>, headers: axum::http::HeaderMap| async move {
            // Requested as `…spec.v2@v1.0+protobuf`, answered with a dot: Go's mime parser rejects the `@`.
            const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            if accept.contains("application/com.github.proto-openapi.spec.v2") {
                ([(header::CONTENT_TYPE, PROTOBUF)], s.openapi.v2_protobuf()).into_response()
            } else {
                output::json_response(StatusCode::OK, s.openapi.v2_json(), &[])
            }
        }))
        .route("/openapi/v3", get(|State(s): State<Arc<ApiState>>| async move {
            output::json_response(StatusCode::OK, s.openapi.index_json(), &[])
        }))
        .route("/openapi/v3/{*path}", get(|State(s): State<Arc<ApiState>>, axum::extract::Path(path): axum::extract::Path<String>| async move {
            match s.openapi.group_version_json(&path) {
                Some(doc) => output::json_response(StatusCode::OK, doc, &[]),
                None => ApiError::NoRoute.into_response(),
            }
        }))
        .merge(kubelet_proxy::routes())
        .merge(serviceaccount_token::routes())
        .fallback(dispatch)
        .with_state(state)
}

async fn dispatch(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let resp = match handle(&state, req).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.code().is_server_error() {
                tracing::warn!(%method, %uri, error = %e, "request failed");
            }
            e.into_response()
        }
    };
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), elapsed = ?started.elapsed(), "request");
    resp
}

async fn handle(state: &Arc<ApiState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let mut params = request::Params::parse(parts.uri.query().unwrap_or(""))?;
    if params.field_manager.is_none() {
        params.field_manager = request::manager_from_user_agent(&parts.method, &parts.headers);
    }
    let route = request::parse_route(&parts.method, parts.uri.path(), params.watch)?;
    let discovery_reply = |(ct, body): (&'static str, Bytes)| {
        let mut resp = output::json_response(StatusCode::OK, body, &[]);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ct));
        resp
    };
    let info = match route {
        Route::CoreVersions => {
            return Ok(discovery_reply(
                state
                    .discovery
                    .root(true, request::discovery_format(&parts.headers)),
            ));
        }
        Route::Groups => {
            return Ok(discovery_reply(
                state
                    .discovery
                    .root(false, request::discovery_format(&parts.headers)),
            ));
        }
        Route::Group(g) => {
            let body = state.discovery.group(&g).ok_or(ApiError::NoRoute)?;
            return Ok(output::json_response(StatusCode::OK, body, &[]));
        }
        Route::Resources { group, version } => {
            let body = state
                .discovery
                .resources(&group, &version)
                .ok_or(ApiError::NoRoute)?;
            return Ok(output::json_response(StatusCode::OK, body, &[]));
        }
        Route::Resource(info) => info,
    };
    let kind = state
        .registry
        .get(&info.group, &info.version, &info.resource)
        .ok_or(ApiError::NoRoute)?;
    if info.namespace.is_some() && !kind.namespaced {
        return Err(ApiError::NoRoute);
    }
    let body = match info.verb {
        Verb::Get | Verb::List | Verb::Watch => Bytes::new(),
        _ => axum::body::to_bytes(Body::new(body), body::MAX_BODY)
            .await
            .map_err(|_| ApiError::RequestEntityTooLarge {
                limit: body::MAX_BODY,
            })?,
    };
    let req = rest::ApiRequest {
        output: request::output(&parts.headers, &params),
        body_format: request::body_format(&parts.headers),
        info,
        params,
        body,
    };
    rest::handle(state, kind, req).await
}
