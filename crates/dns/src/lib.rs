//! Cluster DNS: answers `cluster.local` (the Kubernetes DNS specification, schema 1.1.0) from an in-memory
//! index of Services, EndpointSlices and Pods kept by watches, and forwards every other name to the node's
//! upstream resolvers with a cache. Runs inside each node agent ([`run`]); [`publish_node_endpoint`] makes the
//! node's listener an endpoint of the `kube-dns` Service; [`resolv_conf`] is what the kubelet writes into pods.
//!
//! Start reading at [`run`], then `zone.rs` (what each name answers), `index.rs` (what it is computed
//! from), `server.rs` (the transport) and `forward.rs` (everything else).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

pub mod forward;
pub mod index;
pub mod publish;
pub mod resolvconf;
pub mod server;
mod watches;
pub mod zone;

pub use resolvconf::{ResolvConf, resolv_conf, upstreams};
pub use server::{Handler, Listeners, SharedIndex};

/// The cluster domain when nothing else is configured.
pub const DEFAULT_ZONE: &str = "cluster.local";
/// Seconds clients may cache our answers (CoreDNS' default).
pub const DEFAULT_TTL: u32 = 5;

/// How the DNS server runs.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Addresses to answer on, each over UDP and TCP (the node IP, port 53 in a node agent).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain, without a trailing dot.
    pub zone: String,
    /// Resolvers for everything outside the zone, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of in-zone answers, in seconds.
    pub ttl: u32,
}

impl DnsConfig {
    /// `cluster.local`, TTL 5 and the upstreams of the host's `/etc/resolv.conf` (loopback stubs skipped).
    pub fn new(listen: Vec<SocketAddr>) -> DnsConfig {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        DnsConfig {
            listen,
            zone: DEFAULT_ZONE.to_string(),
            upstreams: upstreams(&host),
            ttl: DEFAULT_TTL,
        }
    }

    /// The query handler for this configuration over `index`.
    pub fn handler(&self, index: SharedIndex) -> Result<Handler, Error> {
        let listen_ips: Vec<IpAddr> = self
            .listen
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let zone = zone::Zone::new(&self.zone, self.ttl, listen_ips)
            .ok_or_else(|| Error::Zone(self.zone.clone()))?;
        Ok(Handler::new(
            index,
            zone,
            forward::Forwarder::new(self.upstreams.clone()),
        ))
    }
}

/// Why the DNS server or the node endpoint publisher stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The zone name is not a valid DNS name.
    #[error("invalid zone {0:?}")]
    Zone(String),
    /// The transport failed (a socket closed under the server).
    #[error("DNS server: {0}")]
    Serve(String),
    /// The API server refused a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Serve DNS on `config.listen` (UDP and TCP) from watches through `client` until `stop` turns true or
/// its sender is dropped. In-zone names get SERVFAIL until every watch has listed once.
pub async fn run(client: kube::Client, config: DnsConfig, stop: watch::Receiver<bool>) -> Result<(), Error> {
    let listeners = Listeners::bind(&config.listen).await?;
    run_on(client, config, listeners, stop).await
}

/// [`run`] on sockets already bound (tests and callers that bind port 0 first).
pub async fn run_on(
    client: kube::Client,
    config: DnsConfig,
    listeners: Listeners,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let index: SharedIndex = Arc::new(RwLock::new(index::Index::default()));
    let handler = config.handler(index.clone())?;
    tracing::info!(listen = ?listeners.local_addrs(), upstreams = ?config.upstreams, zone = %config.zone, "cluster DNS");
    let watches = watches::spawn_watches(client, index);
    let result = server::serve(listeners, handler, stop).await;
    for w in watches {
        w.abort();
    }
    result
}

/// Create or update the EndpointSlice `kube-dns-<node>` in kube-system so that it points at this node's DNS
/// listener (`node_ip`, port 53 UDP and TCP). Idempotent: the agent calls it at start. Retries for up to
/// two minutes while the API server does not answer.
pub async fn publish_node_endpoint(
    client: kube::Client,
    node_name: &str,
    node_ip: IpAddr,
) -> Result<(), Error> {
    publish::publish(client, node_name, node_ip).await
}
