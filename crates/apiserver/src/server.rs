//! `rkube server`: the API server process — store, PKI, the API router behind authentication, HTTPS with
//! HTTP/2 and HTTP/1.1, the admin kubeconfig and node token, readiness, and graceful shutdown.
//!
//! [`run`] is the whole lifecycle in order: open the store, load or make the PKI, build the API state and
//! its defaults, bind the listener, serve, write `DIR/kubeconfig.yaml` and `DIR/token`, then turn
//! `/readyz` to 200. When `shutdown` resolves it stops accepting and gives open connections a few
//! seconds to finish.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::auth::{AllowAuthenticated, Authenticator, PeerIdentity};
use crate::{ApiOptions, ApiState, tls};

/// How long open connections (watches, logs) get to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `rkube server` is told on its command line (see DESIGN.md's command-line contract).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `DIR`: `db/`, `tls/`, `kubeconfig.yaml`, `token`.
    pub data_dir: PathBuf,
    /// Where to serve HTTPS; port 0 picks a free port (the kubeconfig names the real one).
    pub listen: SocketAddr,
    /// `None` or `sqlite://PATH`: the embedded store (default `DIR/db/state.db`); `http://…`: etcd.
    pub datastore_endpoint: Option<String>,
    /// Do not run a node agent in this process.
    pub disable_agent: bool,
    /// Pod addresses, a `/24` per node (used by the node controllers).
    pub cluster_cidr: String,
    /// Service ClusterIPs; its first address is the `kubernetes` Service.
    pub service_cidr: String,
    pub node_port_range: std::ops::RangeInclusive<u16>,
    /// This host's node name (default: the hostname).
    pub node_name: String,
    /// How long a node may miss heartbeats before it is marked NotReady.
    pub node_monitor_grace_period: Duration,
    /// How long pods tolerate a NotReady/unreachable node before eviction.
    pub default_not_ready_toleration_seconds: u64,
    /// `--lb-ip-pool`: addresses for LoadBalancer Services (`CIDR` or `A-B` each); empty → the nodes' own
    /// addresses (the controller manager's `servicelb` controller uses it).
    pub lb_ip_pool: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("/var/lib/rkube"),
            listen: SocketAddr::from(([0, 0, 0, 0], 6443)),
            datastore_endpoint: None,
            disable_agent: false,
            cluster_cidr: "10.42.0.0/16".to_string(),
            service_cidr: "10.43.0.0/16".to_string(),
            node_port_range: 30000..=32767,
            node_name: tls::hostname(),
            node_monitor_grace_period: Duration::from_secs(50),
            default_not_ready_toleration_seconds: 300,
            lb_ip_pool: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// The store endpoint this configuration names.
    pub fn store_endpoint(&self) -> anyhow::Result<rkube_store::Endpoint> {
        match &self.datastore_endpoint {
            None => Ok(rkube_store::Endpoint::Sqlite(
                self.data_dir.join("db").join("state.db"),
            )),
            Some(url) => Ok(rkube_store::Endpoint::parse(url)?),
        }
    }
}

/// The URL the admin kubeconfig points at: loopback when the server listens on every address or on
/// loopback, else the address it listens on.
pub fn kubeconfig_server_url(bound: SocketAddr) -> String {
    let ip = bound.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        format!("https://127.0.0.1:{}", bound.port())
    } else {
        format!("https://{bound}")
    }
}

/// The first address of a CIDR (network + 1): the `kubernetes` Service's ClusterIP.
pub fn first_service_ip(service_cidr: &str) -> Option<IpAddr> {
    let (network, _) = crate::alloc::parse_cidr(service_cidr)?;
    Some(match network {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6).wrapping_add(1))),
    })
}

/// Runs the API server until `shutdown` resolves.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    if !config.disable_agent {
        tracing::info!(
            "the node agent is not part of rkube yet: running the API server only, as with --disable-agent"
        );
    }
    tracing::info!(
        cluster_cidr = %config.cluster_cidr,
        service_cidr = %config.service_cidr,
        node_monitor_grace_period = ?config.node_monitor_grace_period,
        default_not_ready_toleration_seconds = config.default_not_ready_toleration_seconds,
        "starting rkube server"
    );

    let service_ip = first_service_ip(&config.service_cidr)
        .with_context(|| format!("--service-cidr {:?} is not a CIDR", config.service_cidr))?;
    let mut addresses = tls::local_addresses();
    if !config.listen.ip().is_unspecified() {
        addresses.push(config.listen.ip());
    }
    let sans = tls::serving_sans(&config.node_name, &tls::hostname(), &addresses, service_ip);
    let pki = tls::Pki::load_or_create(data_dir, &sans).context("setting up TLS")?;
    let tls_config = tls::server_config(&pki).context("setting up TLS")?;

    let endpoint = config.store_endpoint()?;
    if let rkube_store::Endpoint::Sqlite(path) = &endpoint
        && let Some(dir) = path.parent()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tracing::info!(?endpoint, "opening the datastore");
    let store = rkube_store::open(&endpoint)
        .await
        .context("opening the datastore")?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let advertise_address = if bound.ip().is_unspecified() {
        addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    } else {
        bound.ip()
    };
    let options = ApiOptions {
        service_cidr: config.service_cidr.clone(),
        node_port_range: config.node_port_range.clone(),
        advertise_address,
        advertise_port: bound.port(),
        default_not_ready_toleration_seconds: config.default_not_ready_toleration_seconds,
    };
    let state = ApiState::new(store, options).await.context("starting the API")?;
    state.set_kubelet_client(crate::kubelet_proxy::KubeletClient::new(&pki).context("setting up TLS")?);
    crate::bootstrap(&state)
        .await
        .context("creating the default objects")?;

    let token_issuer = crate::serviceaccount_token::TokenIssuer::load_or_create(&data_dir.join("tls"))
        .context("setting up service account tokens")?;
    state.set_token_issuer(Arc::new(token_issuer));
    let mut authenticator =
        Authenticator::new(&pki.node_token, &pki.admin_token, Box::new(AllowAuthenticated));
    if let Some(tokens) = crate::serviceaccount_token::ServiceAccountTokens::new(&state) {
        authenticator = authenticator.with_tokens(Box::new(tokens));
    }
    let authenticator = Arc::new(authenticator);
    let app = crate::router(state.clone())
        .merge(crate::auth::review_routes(authenticator.clone()))
        .layer(axum::middleware::from_fn_with_state(
            authenticator,
            crate::auth::middleware,
        ));

    let graceful = GracefulShutdown::new();
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let builder = auto::Builder::new(TokioExecutor::new());

    write_client_files(&pki, data_dir, bound)?;
    state.set_ready();
    tracing::info!(address = %bound, kubeconfig = %data_dir.join("kubeconfig.yaml").display(), "rkube server is ready");

    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Watch events are small writes that must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity = PeerIdentity::from_certificates(tls.get_ref().1.peer_certificates());
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(identity.clone());
                let stopping = stopping.clone();
                let response = app.clone().oneshot(req);
                async move { response.await.map(|resp| end_streams_on_shutdown(resp, stopping)) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    tracing::info!("shutting down: no new connections, open watches end");
    drop(listener);
    let _ = stopping_tx.send(true);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::info!("closing the remaining connections"),
    }
    Ok(())
}

/// Streaming responses (watches, followed logs) end cleanly once the server is stopping — as when their
/// `timeoutSeconds` runs out, so clients re-list elsewhere — instead of holding shutdown for the whole grace
/// period. Bodies of known size are never cut.
fn end_streams_on_shutdown(
    resp: axum::response::Response,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> axum::response::Response {
    use hyper::body::Body as _;
    if resp.body().size_hint().exact().is_some() {
        return resp;
    }
    resp.map(|inner| {
        let mut stopping = stopping;
        let stopped = Box::pin(async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        axum::body::Body::new(EndOnShutdown { inner, stopped })
    })
}

/// A response body that ends at its next idle moment after shutdown begins (never mid-frame).
struct EndOnShutdown {
    inner: axum::body::Body,
    stopped: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl hyper::body::Body for EndOnShutdown {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.stopped.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `DIR/kubeconfig.yaml` (for the real port) and the node token file, both 0600.
fn write_client_files(pki: &tls::Pki, data_dir: &Path, bound: SocketAddr) -> anyhow::Result<()> {
    let kubeconfig = data_dir.join("kubeconfig.yaml");
    pki.write_kubeconfig(&kubeconfig, &kubeconfig_server_url(bound))
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    // Pki::load_or_create wrote DIR/token already; a missing file here means someone removed it since.
    let token = data_dir.join("token");
    if !token.exists() {
        tls::write_private(&token, format!("{}\n", pki.node_token).as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_points_at_loopback_unless_bound_elsewhere() {
        assert_eq!(
            kubeconfig_server_url("0.0.0.0:6443".parse().unwrap()),
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            kubeconfig_server_url("127.0.0.1:40123".parse().unwrap()),
            "https://127.0.0.1:40123"
        );
        assert_eq!(
            kubeconfig_server_url("[::]:6443".parse().unwrap()),
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            kubeconfig_server_url("192.168.1.5:6443".parse().unwrap()),
            "https://192.168.1.5:6443"
        );
    }

    #[test]
    fn kubernetes_service_ip_is_first_in_the_cidr() {
        assert_eq!(
            first_service_ip("10.43.0.0/16"),
            Some("10.43.0.1".parse().unwrap())
        );
        assert_eq!(
            first_service_ip("fd00:43::/112"),
            Some("fd00:43::1".parse().unwrap())
        );
        assert_eq!(first_service_ip("nope"), None);
    }

    #[test]
    fn store_defaults_to_sqlite_under_the_data_dir() {
        let config = ServerConfig {
            data_dir: "/tmp/x".into(),
            ..Default::default()
        };
        assert_eq!(
            config.store_endpoint().unwrap(),
            rkube_store::Endpoint::Sqlite("/tmp/x/db/state.db".into())
        );
        let etcd = ServerConfig {
            datastore_endpoint: Some("http://127.0.0.1:2379".into()),
            ..config
        };
        assert_eq!(
            etcd.store_endpoint().unwrap(),
            rkube_store::Endpoint::Etcd(vec!["http://127.0.0.1:2379".into()])
        );
    }
}
