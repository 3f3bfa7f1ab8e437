//! The kubelet HTTPS API (port 10250): container logs, exec and attach, for the API server to proxy.
//!
//! Start at [`serve`]. Every client must present a certificate signed by the cluster CA (the API server's
//! `kube-apiserver-kubelet-client`); a request without one gets a 401 `Status`, and a certificate from
//! another CA fails the TLS handshake. Only `/healthz` is open. The routes are the real kubelet's:
//! `GET /containerLogs/{ns}/{pod}/{container}` (see [`crate::logs`]), and `/exec/…` and `/attach/…`
//! over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`; see [`stream`]); attach follows the
//! container's log and writes to the stdin FIFO its shim keeps. `/portForward/{ns}/{pod}` serves kubectl's
//! SPDY-over-WebSocket port forwarding ([`portforward`]).
//!
//! The handlers reach containers through [`ContainerAccess`]; [`serve`] adapts the pod workers'
//! [`NodeContainers`] to it, and tests use a fake over temporary files and local processes.

pub mod portforward;
mod spdy;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::logs::{self, Limit, LogOptions};
use crate::{ContainerRef, LookupError, NodeContainers};

pub use stream::ExecIo;

/// Why the kubelet API could not start or a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The serving certificate, its key or the client CA is not usable PEM.
    #[error("{what}: no usable PEM data")]
    Pem { what: &'static str },
    /// rustls refused the certificates.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A self-signed serving certificate could not be made.
    #[error("serving certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// Binding or accepting on the listen address failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The container runtime could not start an exec or attach session.
    #[error("{0}")]
    Runtime(String),
}

/// What the handlers need from the node: find a container, and open exec / attach sessions on it.
pub trait ContainerAccess: Send + Sync + 'static {
    fn find(&self, namespace: &str, pod: &str, container: Option<&str>) -> Result<ContainerRef, LookupError>;
    /// Runs `cmd` in the container (with a terminal when `tty`).
    fn exec(&self, container_id: &str, cmd: &[String], tty: bool) -> Result<ExecIo, ServerError>;
    /// Connects to the container's own stdio.
    fn attach(&self, container_id: &str, tty: bool) -> Result<ExecIo, ServerError>;
    /// Opens a TCP connection to `port` on the loopback of the container's network namespace.
    fn dial(&self, container_id: &str, port: u16) -> std::io::Result<std::net::TcpStream>;
}

/// The pod workers' view, as the handlers use it.
struct Node(Arc<dyn NodeContainers>);

impl ContainerAccess for Node {
    fn find(&self, namespace: &str, pod: &str, container: Option<&str>) -> Result<ContainerRef, LookupError> {
        self.0.find(namespace, pod, container)
    }

    fn exec(&self, container_id: &str, cmd: &[String], tty: bool) -> Result<ExecIo, ServerError> {
        let process = self
            .0
            .runtime()
            .exec(container_id, cmd, tty)
            .map_err(|e| ServerError::Runtime(e.to_string()))?;
        Ok(ExecIo::from_runtime(process))
    }

    fn attach(&self, container_id: &str, _tty: bool) -> Result<ExecIo, ServerError> {
        let attach = self
            .0
            .runtime()
            .attach(container_id)
            .map_err(|e| ServerError::Runtime(e.to_string()))?;
        ExecIo::from_attach(attach).map_err(|e| ServerError::Runtime(e.to_string()))
    }

    fn dial(&self, container_id: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
        let state = self
            .0
            .runtime()
            .container_state(container_id)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let rkube_oci::runtime::ContainerState::Running { pid, .. } = state else {
            return Err(std::io::Error::other("the container is not running"));
        };
        let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        // A thread of its own enters the pod's network namespace; the socket stays there after it ends.
        std::thread::spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(10),
            )
        })
        .join()
        .map_err(|_| std::io::Error::other("dialing in the pod's network namespace failed"))?
    }
}

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the kubelet API on `listen` until `stop` turns true. `cert_pem`/`key_pem` are the serving
/// certificate (see [`self_signed_serving_cert`]); `client_ca_pem` the cluster CA clients must chain to.
pub async fn serve(
    listen: SocketAddr,
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
    containers: Arc<dyn NodeContainers>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let tls = tls_config(cert_pem, key_pem, client_ca_pem)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Listen { addr: listen, source })?;
    tracing::info!(address = %listen, "kubelet API listening");
    serve_on(listener, tls, Arc::new(Node(containers)), stop).await;
    Ok(())
}

/// Whether the connection presented a client certificate that chains to the cluster CA (rustls has
/// already refused any that does not).
#[derive(Clone, Copy, Debug)]
struct ClientVerified(bool);

/// Serves on an already bound listener (tests bind port 0 themselves).
pub async fn serve_on(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    containers: Arc<dyn ContainerAccess>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(containers);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = tokio::task::JoinSet::new();
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "kubelet API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let verified = ClientVerified(tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()));
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(verified);
                app.clone().oneshot(req)
            });
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet API: connection ended with an error");
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

/// The HTTPS configuration: HTTP/1.1 only (WebSocket upgrades), client certificates requested and verified
/// against `client_ca_pem` when given — a request without one is answered 401 by the router.
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = pem_certs(cert_pem, "serving certificate")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or(ServerError::Pem { what: "serving key" })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(client_ca_pem, "client CA")? {
        roots.add(ca)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(ServerError::Pem { what });
    }
    Ok(certs)
}

/// A self-signed serving certificate for the node (PEM certificate, PEM key): the API server does not
/// verify kubelet serving certificates (kube-apiserver's default), so the node needs nothing signed.
pub fn self_signed_serving_cert(
    node_name: &str,
    addresses: &[std::net::IpAddr],
) -> Result<(String, String), ServerError> {
    let mut names = vec![node_name.to_string(), "localhost".to_string()];
    names.extend(addresses.iter().map(|a| a.to_string()));
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node_name}@kubelet"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

type Containers = Arc<dyn ContainerAccess>;

fn router(containers: Containers) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", axum::routing::any(exec))
        .route(
            "/attach/{namespace}/{pod}/{container}",
            axum::routing::any(attach),
        )
        .route("/portForward/{namespace}/{pod}", axum::routing::any(port_forward))
        .layer(axum::middleware::from_fn(require_client_cert))
        .with_state(containers)
}

/// A Kubernetes `Status` reply.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn require_client_cert(req: Request, next: Next) -> Response {
    let verified = req.extensions().get::<ClientVerified>().is_some_and(|v| v.0);
    if verified || req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

/// An error as the kubelet reports it: plain text with the status code (the API server wraps it in a
/// `Status`, as kube-apiserver does).
fn text_error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

fn lookup_error(e: &LookupError) -> Response {
    match e {
        LookupError::PodNotFound { pod, .. } => {
            text_error(StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist"))
        }
        LookupError::ContainerNotFound { pod, container } => text_error(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod:?}"),
        ),
        LookupError::NotStarted { pod, container } => text_error(
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"),
        ),
    }
}

async fn find(
    containers: &Containers,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<ContainerRef, Response> {
    let (c, ns, p, name) = (
        containers.clone(),
        namespace.to_string(),
        pod.to_string(),
        container.to_string(),
    );
    tokio::task::spawn_blocking(move || c.find(&ns, &p, Some(&name)))
        .await
        .map_err(|e| text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| lookup_error(&e))
}

async fn container_logs(
    State(containers): State<Containers>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let opts = match LogOptions::from_query(query.as_deref().unwrap_or(""), chrono::Utc::now()) {
        Ok(o) => o,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let found = match find(&containers, &namespace, &pod, &container).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let path = if opts.previous {
        match found.previous_log_path.clone() {
            Some(p) => p,
            None => {
                return text_error(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container {container:?} in pod {pod:?} not found"),
                );
            }
        }
    } else {
        found.log_path.clone()
    };
    let mut limit = Limit::new(opts.limit_bytes);
    let read = {
        let (path, opts) = (path.clone(), opts.clone());
        tokio::task::spawn_blocking(move || {
            let r = logs::read_logs(&path, &opts, &mut limit);
            r.map(|(out, pos)| (out, pos, limit))
        })
        .await
    };
    let (out, position, limit) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let plain = [(header::CONTENT_TYPE, "text/plain")];
    // A previous attempt, or a container that no longer runs, has nothing more to follow.
    if !opts.follow || opts.previous || !found.running || limit.exhausted() {
        return (plain, out).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    if !out.is_empty() {
        let _ = tx.try_send(Bytes::from(out));
    }
    let container_id = found.container_id.clone();
    let running = move || {
        containers
            .find(&namespace, &pod, Some(&container))
            .is_ok_and(|c| c.running && c.container_id == container_id)
    };
    tokio::spawn(logs::follow(position, opts, limit, tx, running));
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    );
    (plain, body).into_response()
}

async fn exec(
    State(containers): State<Containers>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let opts = match stream::StreamOptions::from_query(query.as_deref().unwrap_or(""), true) {
        Ok(o) => o,
        Err(msg) => return text_error(StatusCode::BAD_REQUEST, msg),
    };
    let found = match find(&containers, &namespace, &pod, &container).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    // Checked before the protocol, so kubectl's SPDY retry after a refusal reports the same error.
    if !found.running {
        return not_running(&container, &pod);
    }
    let Some((ws, protocol)) = negotiate(ws) else {
        return protocol_required();
    };
    let session = {
        let (c, id, cmd, tty) = (
            containers.clone(),
            found.container_id.clone(),
            opts.command.clone(),
            opts.tty,
        );
        tokio::task::spawn_blocking(move || c.exec(&id, &cmd, tty)).await
    };
    upgrade(ws, protocol, opts, session)
}

async fn attach(
    State(containers): State<Containers>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let opts = match stream::StreamOptions::from_query(query.as_deref().unwrap_or(""), false) {
        Ok(o) => o,
        Err(msg) => return text_error(StatusCode::BAD_REQUEST, msg),
    };
    let found = match find(&containers, &namespace, &pod, &container).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if !found.running {
        return not_running(&container, &pod);
    }
    let Some((ws, protocol)) = negotiate(ws) else {
        return protocol_required();
    };
    let session = {
        let (c, id, tty) = (containers.clone(), found.container_id.clone(), opts.tty);
        tokio::task::spawn_blocking(move || c.attach(&id, tty)).await
    };
    upgrade(ws, protocol, opts, session)
}

async fn port_forward(
    State(containers): State<Containers>,
    Path((namespace, pod)): Path<(String, String)>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let found = {
        let (c, ns, p) = (containers.clone(), namespace.clone(), pod.clone());
        match tokio::task::spawn_blocking(move || c.find(&ns, &p, None)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return lookup_error(&e),
            Err(e) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    };
    if !found.running {
        return text_error(StatusCode::BAD_REQUEST, format!("pod {pod:?} is not running"));
    }
    let Some(ws) = ws
        .ok()
        .map(|ws| ws.protocols([portforward::PROTOCOL]))
        .filter(|ws| ws.selected_protocol().is_some())
    else {
        return text_error(
            StatusCode::BAD_REQUEST,
            format!(
                "port-forward is served over WebSocket ({}) only",
                portforward::PROTOCOL
            ),
        );
    };
    let id = found.container_id;
    let dial: portforward::Dialer = Arc::new(move |port| containers.dial(&id, port));
    ws.on_upgrade(move |socket| portforward::run(socket, dial))
}

fn not_running(container: &str, pod: &str) -> Response {
    text_error(
        StatusCode::BAD_REQUEST,
        format!("container {container:?} in pod {pod:?} is not running"),
    )
}

fn protocol_required() -> Response {
    text_error(
        StatusCode::BAD_REQUEST,
        format!(
            "this kubelet streams over WebSocket only ({}); SPDY is not supported",
            stream::PROTOCOLS.join(", ")
        ),
    )
}

/// Picks the subprotocol; a request that is no WebSocket upgrade (SPDY) or offers none of ours is refused
/// before any process starts.
fn negotiate(ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Option<(WebSocketUpgrade, String)> {
    let ws = ws.ok()?.protocols(stream::PROTOCOLS);
    let protocol = ws.selected_protocol()?.to_str().ok()?.to_string();
    Some((ws, protocol))
}

fn upgrade(
    ws: WebSocketUpgrade,
    protocol: String,
    opts: stream::StreamOptions,
    session: Result<Result<ExecIo, ServerError>, tokio::task::JoinError>,
) -> Response {
    let io = match session {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    ws.on_upgrade(move |socket| stream::run(socket, protocol, opts, io))
}

#[cfg(test)]
mod tests;
