//! The thin async shell: watch Services and EndpointSlices, keep the [`Model`] and the desired
//! [`Ruleset`] up to date, and sync the kernel — a full sync at start and after any failed transaction,
//! incremental diffs otherwise, a few milliseconds after a burst of changes.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::compile::{Ruleset, StaleObject, diff};
use crate::kernel::{Kernel, KernelError, NftCli};
use crate::model::{Model, ModelError, NodeInfo, ServiceKey};

/// How long a flushed chain or set stays before it is deleted (kube-proxy waits too, so that deletions
/// are batched and never race a packet still traversing the chain).
const STALE_DELETE_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between retries of a failing full sync.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// How a node agent runs the proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    /// The node's addresses (IPv6 ones are ignored: the proxy programs the `ip` family).
    pub node_ips: Vec<IpAddr>,
    /// The pod network, e.g. `10.42.0.0/16` (empty: no pod masquerade, no "from outside" marks).
    pub cluster_cidr: String,
    /// The service network, e.g. `10.43.0.0/16` (empty: unallocated addresses are not dropped).
    pub service_cidr: String,
    /// The nftables table, normally `rkube`.
    pub table: String,
    /// How to run `nft` and `conntrack` (a prefix such as `ip netns exec NS` in tests and benchmarks).
    pub tools: NftCli,
    /// Changes arriving within this window after the first one are applied in one transaction.
    pub debounce: Duration,
}

impl ProxyConfig {
    pub fn new(
        node_name: impl Into<String>,
        node_ips: Vec<IpAddr>,
        cluster_cidr: &str,
        service_cidr: &str,
    ) -> Self {
        ProxyConfig {
            node_name: node_name.into(),
            node_ips,
            cluster_cidr: cluster_cidr.to_string(),
            service_cidr: service_cidr.to_string(),
            table: "rkube".to_string(),
            tools: NftCli::default(),
            debounce: Duration::from_millis(5),
        }
    }

    /// The node settings the compiler uses; fails on a malformed CIDR.
    pub fn node_info(&self) -> Result<NodeInfo, ModelError> {
        let cidr = |s: &str| {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some)
            }
        };
        Ok(NodeInfo {
            table: self.table.clone(),
            node_name: self.node_name.clone(),
            node_ips: self
                .node_ips
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })
                .collect::<Vec<Ipv4Addr>>(),
            cluster_cidr: cidr(&self.cluster_cidr)?,
            service_cidr: cidr(&self.service_cidr)?,
        })
    }
}

/// Why [`run`] stopped before being asked to.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration has a malformed CIDR.
    #[error("invalid proxy configuration: {0}")]
    Config(#[from] ModelError),
    /// Both watch streams ended (they retry with backoff, so this means the runtime is shutting down).
    #[error("the Service/EndpointSlice watches ended")]
    WatchEnded,
}

// Each event is moved once through the channel; boxing would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Change {
    Service(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
}

/// Where the proxy is with the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncState {
    /// Waiting for the first complete lists of Services and EndpointSlices.
    Listing { services: bool, slices: bool },
    /// The whole table must be replaced (at start, after a failed transaction), not before `not_before`.
    FullSyncNeeded { not_before: Instant, backoff: Duration },
    /// The kernel holds the applied ruleset; changes go in as diffs.
    InSync,
}

struct Proxy<K: Kernel> {
    kernel: Arc<K>,
    model: Model,
    desired: Ruleset,
    applied: Option<Ruleset>,
    dirty: BTreeSet<ServiceKey>,
    stale: Vec<(Instant, StaleObject)>,
    state: SyncState,
    service_list: Option<Vec<Service>>,
    slice_list: Option<Vec<EndpointSlice>>,
}

/// Run the service proxy until `stop` turns true: watch Services and EndpointSlices in all namespaces and
/// keep the `ip <table>` nftables table in step with them.
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ProxyError> {
    let kernel = Arc::new(config.tools.clone());
    run_with_kernel(client, config, kernel, stop).await
}

/// [`run`] with another [`Kernel`] (a recording fake in tests).
pub async fn run_with_kernel<K: Kernel>(
    client: kube::Client,
    config: ProxyConfig,
    kernel: Arc<K>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ProxyError> {
    let node = config.node_info()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff();
    let slices = watcher(Api::<EndpointSlice>::all(client), watcher::Config::default()).default_backoff();
    let tasks = [
        spawn_forwarder(services, tx.clone(), Change::Service),
        spawn_forwarder(slices, tx, Change::Slice),
    ];
    let _abort = AbortOnDrop(tasks.to_vec());
    let mut proxy = Proxy::new(node, kernel);
    tracing::info!(node = %config.node_name, table = %config.table, "service proxy starting");
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let wake = proxy.next_wakeup();
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                continue;
            }
            change = rx.recv() => {
                let Some(change) = change else { return Err(ProxyError::WatchEnded) };
                proxy.observe(change);
                let deadline = Instant::now() + config.debounce;
                while let Ok(Some(change)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                    proxy.observe(change);
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
        }
        proxy.sync().await;
    }
}

fn spawn_forwarder<T, S>(
    stream: S,
    tx: mpsc::UnboundedSender<Change>,
    wrap: fn(watcher::Event<T>) -> Change,
) -> Arc<tokio::task::JoinHandle<()>>
where
    T: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static,
{
    Arc::new(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if tx.send(wrap(event)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
            }
        }
    }))
}

struct AbortOnDrop(Vec<Arc<tokio::task::JoinHandle<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl<K: Kernel> Proxy<K> {
    fn new(node: NodeInfo, kernel: Arc<K>) -> Self {
        Proxy {
            kernel,
            model: Model::new(node.clone()),
            desired: Ruleset::new(node),
            applied: None,
            dirty: BTreeSet::new(),
            stale: Vec::new(),
            state: SyncState::Listing {
                services: false,
                slices: false,
            },
            service_list: None,
            slice_list: None,
        }
    }

    fn observe(&mut self, change: Change) {
        match change {
            Change::Service(event) => match event {
                watcher::Event::Apply(svc) => self.dirty.extend(self.model.apply_service(svc)),
                watcher::Event::Delete(svc) => {
                    if let Some(key) = ServiceKey::of_service(&svc) {
                        self.model.services.remove(&key);
                        self.dirty.insert(key);
                    }
                }
                watcher::Event::Init => self.service_list = Some(Vec::new()),
                watcher::Event::InitApply(svc) => self.service_list.get_or_insert_default().push(svc),
                watcher::Event::InitDone => {
                    self.dirty
                        .extend(std::mem::take(&mut self.model.services).into_keys());
                    for svc in self.service_list.take().unwrap_or_default() {
                        self.dirty.extend(self.model.apply_service(svc));
                    }
                    if let SyncState::Listing { services, .. } = &mut self.state {
                        *services = true;
                    }
                }
            },
            Change::Slice(event) => match event {
                watcher::Event::Apply(slice) => self.dirty.extend(self.model.apply_slice(slice)),
                watcher::Event::Delete(slice) => self.dirty.extend(self.model.delete_slice(&slice)),
                watcher::Event::Init => self.slice_list = Some(Vec::new()),
                watcher::Event::InitApply(slice) => self.slice_list.get_or_insert_default().push(slice),
                watcher::Event::InitDone => {
                    self.dirty
                        .extend(std::mem::take(&mut self.model.slices).into_keys());
                    for slice in self.slice_list.take().unwrap_or_default() {
                        self.dirty.extend(self.model.apply_slice(slice));
                    }
                    if let SyncState::Listing { slices, .. } = &mut self.state {
                        *slices = true;
                    }
                }
            },
        }
        if self.state
            == (SyncState::Listing {
                services: true,
                slices: true,
            })
        {
            self.state = SyncState::FullSyncNeeded {
                not_before: Instant::now(),
                backoff: Duration::from_secs(1),
            };
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        match self.state {
            SyncState::Listing { .. } => None,
            SyncState::FullSyncNeeded { not_before, .. } => Some(not_before),
            SyncState::InSync => self.stale.iter().map(|(at, _)| *at + STALE_DELETE_DELAY).min(),
        }
    }

    async fn apply(&self, script: String) -> Result<(), KernelError> {
        let kernel = self.kernel.clone();
        tokio::task::spawn_blocking(move || kernel.apply(&script))
            .await
            .unwrap_or_else(|e| {
                Err(KernelError::Rejected {
                    stderr: format!("apply task failed: {e}"),
                })
            })
    }

    async fn sync(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            self.desired.recompile(&self.model, &key);
        }
        let started = std::time::Instant::now();
        match self.state {
            SyncState::Listing { .. } => {}
            SyncState::FullSyncNeeded { not_before, .. } if Instant::now() < not_before => {}
            SyncState::FullSyncNeeded { backoff, .. } => {
                let script = self.desired.render_full();
                match self.apply(script).await {
                    Ok(()) => {
                        let previous = self
                            .applied
                            .take()
                            .unwrap_or_else(|| Ruleset::new(self.desired.node.clone()));
                        self.flush_conntrack(diff(&previous, &self.desired, &[]).conntrack)
                            .await;
                        self.applied = Some(self.desired.clone());
                        self.stale.clear();
                        self.state = SyncState::InSync;
                        tracing::info!(
                            services = self.desired.services.len(),
                            elapsed_ms = started.elapsed().as_millis(),
                            "full sync applied"
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?backoff, "full sync failed; the previous rules stay");
                        self.state = SyncState::FullSyncNeeded {
                            not_before: Instant::now() + backoff,
                            backoff: (backoff * 2).min(MAX_RETRY_BACKOFF),
                        };
                    }
                }
            }
            SyncState::InSync => {
                let Some(applied) = &self.applied else { return };
                let now = Instant::now();
                let due: Vec<StaleObject> = self
                    .stale
                    .iter()
                    .filter(|(at, _)| now.duration_since(*at) >= STALE_DELETE_DELAY)
                    .map(|(_, o)| o.clone())
                    .collect();
                let update = diff(applied, &self.desired, &due);
                if update.script.is_empty() {
                    // Stale objects that came back need no deletion any more.
                    self.stale
                        .retain(|(at, _)| now.duration_since(*at) < STALE_DELETE_DELAY);
                    return;
                }
                match self.apply(update.script).await {
                    Ok(()) => {
                        self.applied = Some(self.desired.clone());
                        self.stale
                            .retain(|(at, _)| now.duration_since(*at) < STALE_DELETE_DELAY);
                        self.stale.extend(update.flushed.into_iter().map(|o| (now, o)));
                        self.flush_conntrack(update.conntrack).await;
                        tracing::debug!(
                            elapsed_ms = started.elapsed().as_millis(),
                            "incremental sync applied"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "incremental sync failed; the previous rules stay, full sync next");
                        self.state = SyncState::FullSyncNeeded {
                            not_before: now,
                            backoff: Duration::from_secs(1),
                        };
                    }
                }
            }
        }
    }

    async fn flush_conntrack(&self, flushes: Vec<crate::compile::ConntrackFlush>) {
        if flushes.is_empty() {
            return;
        }
        let kernel = self.kernel.clone();
        let result = tokio::task::spawn_blocking(move || {
            for flush in &flushes {
                if let Err(e) = kernel.flush_conntrack(flush) {
                    tracing::warn!(error = %e, "UDP conntrack flush failed");
                    if matches!(e, KernelError::Spawn { .. }) {
                        return; // no conntrack tool: one warning is enough
                    }
                }
            }
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "conntrack flush task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::RecordingKernel;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use kube::api::ObjectMeta;

    fn service(name: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn svc_event(event: watcher::Event<Service>) -> Change {
        Change::Service(event)
    }

    fn node() -> NodeInfo {
        ProxyConfig::new("n1", vec![], "10.42.0.0/16", "10.43.0.0/16")
            .node_info()
            .unwrap()
    }

    #[tokio::test]
    async fn full_sync_waits_for_both_lists_then_diffs_and_a_failure_forces_a_full_sync() {
        let kernel = Arc::new(RecordingKernel::default());
        let mut proxy = Proxy::new(node(), kernel.clone());
        proxy.observe(svc_event(watcher::Event::Init));
        proxy.observe(svc_event(watcher::Event::InitApply(service("a", "10.43.0.5"))));
        proxy.observe(svc_event(watcher::Event::InitDone));
        proxy.sync().await;
        assert!(
            kernel.scripts.lock().unwrap().is_empty(),
            "no sync before the slices are listed"
        );

        proxy.observe(Change::Slice(watcher::Event::Init));
        proxy.observe(Change::Slice(watcher::Event::InitDone));
        proxy.sync().await;
        let scripts = kernel.scripts.lock().unwrap().clone();
        assert_eq!(scripts.len(), 1);
        assert!(scripts[0].starts_with("add table ip rkube\ndelete table ip rkube\n"));
        assert!(scripts[0].contains("10.43.0.5 . tcp . 80 : goto reject-chain"));

        proxy.observe(svc_event(watcher::Event::Apply(service("b", "10.43.0.6"))));
        proxy.sync().await;
        let last = kernel.scripts.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            last,
            "add element ip rkube no-endpoint-services { 10.43.0.6 . tcp . 80 : goto reject-chain }\n\
             add element ip rkube cluster-ips { 10.43.0.6 }\n"
        );

        kernel.fail_next.store(true, std::sync::atomic::Ordering::SeqCst);
        proxy.observe(svc_event(watcher::Event::Delete(service("b", "10.43.0.6"))));
        proxy.sync().await;
        assert!(matches!(proxy.state, SyncState::FullSyncNeeded { .. }));
        proxy.sync().await;
        let last = kernel.scripts.lock().unwrap().last().cloned().unwrap();
        assert!(
            last.starts_with("add table"),
            "after a failure the next sync is a full one"
        );
        assert!(!last.contains("10.43.0.6"));
        assert_eq!(proxy.state, SyncState::InSync);
    }
}
