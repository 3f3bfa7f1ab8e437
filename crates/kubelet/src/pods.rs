//! The pod manager: one watch on the pods bound to this node (`spec.nodeName=<node>`), one
//! [`Worker`] task per pod, adoption of the containers a previous agent run left and cleanup of those
//! whose pods are gone, image GC, and the [`NodeContainers`] view the kubelet API reads. [`run_agent`]
//! wires it all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::{Mutex, RwLock};
use rkube_controllers::events::EventRecorder;
use rkube_network::{CniNetwork, NodeNetConfig, PodNetRequest, PodNetwork};
use rkube_oci::pull::{PullError, Puller, RegistryAuth};
use rkube_oci::runtime::{ContainerInfo, Runtime, Sandbox, Signal};
use rkube_oci::{ImageRecord, ImageStore};
use tokio::sync::watch;

use crate::host::{self, HostFacts};
use crate::node::NodeAgent;
use crate::worker::{Flow, LABEL_POD_UID, Worker};
use crate::{AgentConfig, ContainerRef, LookupError, NodeContainers};

/// How long a namespace's Service list (for the link variables of starting containers) and the ConfigMaps
/// and Secrets pods refer to are reused.
const BURST_CACHE_TTL: Duration = Duration::from_secs(2);
/// Entries a [`BurstCache`] keeps before it drops stale ones.
const BURST_CACHE_PRUNE_ABOVE: usize = 256;
/// How often image GC checks the disk.
const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// What the kubelet API knows about one pod.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodContainers {
    pub uid: String,
    /// The container `kubectl logs` / `exec` use without `-c`.
    pub default: String,
    /// Every container of the spec, created or not.
    pub names: BTreeSet<String>,
    pub containers: BTreeMap<String, ContainerRef>,
}

/// What all workers share.
pub(crate) struct Ctx {
    pub client: kube::Client,
    pub node_ip: IpAddr,
    pub runtime: Arc<Runtime>,
    pub images: Arc<ImageStore>,
    puller: Puller,
    /// One pull per image at a time; image GC takes the write side so it never races a pull.
    pull_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    gc_lock: tokio::sync::RwLock<()>,
    pub network: Arc<dyn PodNetwork>,
    pub events: EventRecorder,
    pub facts: HostFacts,
    pods_dir: PathBuf,
    pod_log_dir: PathBuf,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub host_resolv_conf: String,
    /// Pods in their first start at the same time ([`start_slots`]).
    pub start_slots: Arc<tokio::sync::Semaphore>,
    registry: RwLock<HashMap<(String, String), PodContainers>>,
    /// Service lists by namespace for a moment, so a burst of pod starts costs one list per namespace.
    services_cache: BurstCache<Vec<Service>>,
    /// ConfigMaps and Secrets by `namespace/name`, the same way (every pod of a namespace mounts
    /// `kube-root-ca.crt`).
    config_maps: BurstCache<Option<ConfigMap>>,
    secrets: BurstCache<Option<Secret>>,
}

/// Objects fetched for starting containers, reused for [`BURST_CACHE_TTL`] so that a burst of pod starts
/// costs one request per object rather than one per pod; concurrent misses of a key wait for the one request
/// in flight instead of all asking (as the kubelet's TTL cache of ConfigMaps and Secrets).
pub(crate) struct BurstCache<T> {
    entries: Mutex<HashMap<String, Arc<BurstSlot<T>>>>,
}

/// One key of a [`BurstCache`]: the value and when it was fetched; locked while a fetch is in flight.
type BurstSlot<T> = tokio::sync::Mutex<Option<(std::time::Instant, T)>>;

impl<T> Default for BurstCache<T> {
    fn default() -> Self {
        BurstCache {
            entries: Mutex::default(),
        }
    }
}

impl<T: Clone> BurstCache<T> {
    /// The cached value of `key` while fresh, else what `fetch` gives (then cached).
    pub async fn get<F: Future<Output = T>>(&self, key: &str, fetch: impl FnOnce() -> F) -> T {
        let slot = {
            let mut entries = self.entries.lock();
            if entries.len() > BURST_CACHE_PRUNE_ABOVE {
                // Forget stale keys nobody is fetching, so the map does not grow with every object seen.
                entries.retain(|_, slot| {
                    slot.try_lock()
                        .map(|v| v.as_ref().is_some_and(|(at, _)| at.elapsed() < BURST_CACHE_TTL))
                        .unwrap_or(true)
                });
            }
            entries.entry(key.to_string()).or_default().clone()
        };
        let mut cached = slot.lock().await;
        if let Some((at, value)) = cached.as_ref()
            && at.elapsed() < BURST_CACHE_TTL
        {
            return value.clone();
        }
        let value = fetch().await;
        *cached = Some((std::time::Instant::now(), value.clone()));
        value
    }
}

impl Ctx {
    /// `<data>/pods/<uid>`: volumes, `/etc` files, state.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    /// `<pod_log_dir>/<ns>_<name>_<uid>`, the kubelet's layout.
    pub fn pod_log_root(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.pod_log_dir.join(format!("{namespace}_{name}_{uid}"))
    }

    /// `<pod_log_dir>/<ns>_<name>_<uid>/<container>/<attempt>.log`.
    pub fn log_path(&self, namespace: &str, name: &str, uid: &str, container: &str, attempt: i32) -> PathBuf {
        self.pod_log_root(namespace, name, uid)
            .join(container)
            .join(format!("{attempt}.log"))
    }

    /// Removes a container in the background (an old attempt, a leftover).
    pub fn remove_container_later(&self, id: String) {
        let runtime = self.runtime.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = runtime.remove_container(&id) {
                tracing::warn!(container = %id, error = %e, "removing container failed");
            }
        });
    }

    /// Pulls `image` (one pull per image at a time, never during image GC).
    pub async fn pull(&self, image: &str, auth: &RegistryAuth) -> Result<ImageRecord, PullError> {
        let lock = self
            .pull_locks
            .lock()
            .entry(image.to_string())
            .or_default()
            .clone();
        let _one = lock.lock().await;
        let _no_gc = self.gc_lock.read().await;
        self.puller.pull(&self.images, image, auth).await
    }

    /// The Services whose link variables a pod of `namespace` gets: the namespace's and `default/kubernetes`.
    pub async fn services(&self, namespace: &str) -> Vec<Service> {
        self.services_cache
            .get(namespace, || self.list_services(namespace))
            .await
    }

    /// The ConfigMap `namespace/name`, if it exists (a failed request counts as missing).
    pub async fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let fetch = || async move { api.get_opt(name).await.ok().flatten() };
        self.config_maps.get(&format!("{namespace}/{name}"), fetch).await
    }

    /// The Secret `namespace/name`, if it exists (a failed request counts as missing).
    pub async fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let fetch = || async move { api.get_opt(name).await.ok().flatten() };
        self.secrets.get(&format!("{namespace}/{name}"), fetch).await
    }

    async fn list_services(&self, namespace: &str) -> Vec<Service> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let mut out = api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        if namespace != "default" {
            let default: Api<Service> = Api::namespaced(self.client.clone(), "default");
            if let Ok(Some(k)) = default.get_opt("kubernetes").await {
                out.push(k);
            }
        }
        out
    }

    pub fn publish(&self, namespace: &str, name: &str, pod: PodContainers) {
        self.registry
            .write()
            .insert((namespace.to_string(), name.to_string()), pod);
    }

    pub fn forget(&self, namespace: &str, name: &str, uid: &str) {
        let mut r = self.registry.write();
        let key = (namespace.to_string(), name.to_string());
        if r.get(&key).is_some_and(|p| p.uid == uid) {
            r.remove(&key);
        }
    }

    /// Image references that containers on this node use (never collected).
    fn images_in_use(&self) -> Result<std::collections::HashSet<String>, rkube_oci::runtime::RuntimeError> {
        Ok(self
            .runtime
            .list_containers()?
            .into_iter()
            .filter_map(|c| c.labels.get(crate::worker::LABEL_IMAGE).cloned())
            .collect())
    }
}

impl NodeContainers for Ctx {
    fn find(&self, namespace: &str, pod: &str, container: Option<&str>) -> Result<ContainerRef, LookupError> {
        let registry = self.registry.read();
        let entry = registry
            .get(&(namespace.to_string(), pod.to_string()))
            .ok_or_else(|| LookupError::PodNotFound {
                namespace: namespace.into(),
                pod: pod.into(),
            })?;
        let name = container.unwrap_or(&entry.default);
        if !entry.names.contains(name) {
            return Err(LookupError::ContainerNotFound {
                pod: pod.into(),
                container: name.into(),
            });
        }
        entry
            .containers
            .get(name)
            .cloned()
            .ok_or_else(|| LookupError::NotStarted {
                pod: pod.into(),
                container: name.into(),
            })
    }

    fn runtime(&self) -> &Runtime {
        &self.runtime
    }
}

/// How many pods go through their first start at once: two per core keeps the cores busy while some wait on
/// the API server or a child process, and lets a burst of pods finish one after another.
fn start_slots(cpus: u32) -> usize {
    (2 * cpus as usize).max(2)
}

/// DER certificates as PEM.
fn pem(der: &[Vec<u8>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for cert in der {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

pub(crate) async fn run_agent(config: AgentConfig, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let client_ca = pem(config.kubeconfig.root_cert.as_deref().unwrap_or_default());
    let client = kube::Client::try_from(config.kubeconfig.clone()).context("API client")?;
    for dir in [&config.data_dir, &config.pod_log_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let pods_dir = config.data_dir.join("pods");
    std::fs::create_dir_all(&pods_dir)?;
    let runtime = Arc::new(Runtime::new(config.runtime.clone()).context("container runtime")?);
    let images = Arc::new(ImageStore::open(config.data_dir.join("images")).context("image store")?);
    let facts = host::facts(&config.data_dir, &config.runtime.runc);
    let node_ip = config.node_ip.unwrap_or_else(host::detect_node_ip);
    let node = Arc::new(NodeAgent::new(
        client.clone(),
        &config.node_name,
        node_ip,
        config.kubelet_port,
        config.node_labels.clone(),
        facts.clone(),
        config.data_dir.clone(),
        images.clone(),
    ));
    node.register().await.context("registering the node")?;
    tracing::info!(node = %config.node_name, ip = %node_ip, "node registered");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(node.clone().heartbeat(stop.clone()));

    let pod_cidr = node.wait_pod_cidr(stop.clone()).await?;
    tracing::info!(cidr = %pod_cidr, "pod CIDR assigned");
    let net_config = NodeNetConfig {
        data_dir: config.data_dir.clone(),
        node_name: config.node_name.clone(),
        pod_cidr,
        cluster_cidr: config.cluster_cidr.clone(),
        cni_bin_dir: config.cni_bin_dir.clone(),
    };
    let cni = Arc::new(CniNetwork::new(net_config).context("pod network")?);
    node.set_network_ready(true);

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node_ip,
        runtime,
        images,
        puller: Puller::with_insecure_registries(config.insecure_registries.clone()),
        pull_locks: Mutex::default(),
        gc_lock: tokio::sync::RwLock::new(()),
        network: cni.clone(),
        events: EventRecorder::new(client.clone(), "kubelet"),
        facts: facts.clone(),
        pods_dir,
        pod_log_dir: config.pod_log_dir.clone(),
        cluster_dns: config.cluster_dns.clone(),
        cluster_domain: config.cluster_domain.clone(),
        host_resolv_conf: std::fs::read_to_string(&config.host_resolv_conf).unwrap_or_default(),
        start_slots: Arc::new(tokio::sync::Semaphore::new(start_slots(facts.cpus))),
        registry: RwLock::default(),
        services_cache: BurstCache::default(),
        config_maps: BurstCache::default(),
        secrets: BurstCache::default(),
    });

    if config.node_services {
        crate::services::start(&mut tasks, client.clone(), &config, node_ip, stop.clone())?;
    }
    let (cert, key) = crate::server::self_signed_serving_cert(&config.node_name, &[node_ip])?;
    let listen = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), config.kubelet_port);
    let containers: Arc<dyn NodeContainers> = ctx.clone();
    let server_stop = stop.clone();
    tasks.spawn(async move {
        if let Err(e) = crate::server::serve(listen, &cert, &key, &client_ca, containers, server_stop).await {
            tracing::error!(error = %e, "kubelet API failed");
        }
    });
    tasks.spawn(image_gc(
        ctx.clone(),
        config.data_dir.join("images"),
        config.image_gc_high_percent,
        config.image_gc_low_percent,
        stop.clone(),
    ));

    let manager = Manager::new(ctx.clone(), cni, &config.node_name, stop.clone())?;
    manager.run().await;
    // Workers and the other loops stop on the same signal; containers keep running under their shims.
    while tasks.join_next().await.is_some() {}
    Ok(())
}

struct Manager {
    ctx: Arc<Ctx>,
    cni: Arc<CniNetwork>,
    node_name: String,
    stop: watch::Receiver<bool>,
    workers: HashMap<String, watch::Sender<Option<Pod>>>,
    /// Containers found at start, by pod uid, until their pod's worker takes them.
    adoptable: HashMap<String, Vec<ContainerInfo>>,
    sandboxes: HashMap<String, Sandbox>,
    /// Uids seen during a (re)list of the watch.
    relisting: Option<BTreeSet<String>>,
    cleaned: bool,
}

impl Manager {
    fn new(
        ctx: Arc<Ctx>,
        cni: Arc<CniNetwork>,
        node_name: &str,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Manager> {
        let mut adoptable: HashMap<String, Vec<ContainerInfo>> = HashMap::new();
        for c in ctx.runtime.list_containers().context("listing containers")? {
            let uid = c.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
            adoptable.entry(uid).or_default().push(c);
        }
        let sandboxes = ctx
            .runtime
            .list_sandboxes()
            .context("listing sandboxes")?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        Ok(Manager {
            ctx,
            cni,
            node_name: node_name.into(),
            stop,
            workers: HashMap::new(),
            adoptable,
            sandboxes,
            relisting: None,
            cleaned: false,
        })
    }

    async fn run(mut self) {
        let pods: Api<Pod> = Api::all(self.ctx.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        let mut events = std::pin::pin!(watcher(pods, config).default_backoff());
        let mut stop = self.stop.clone();
        loop {
            let event = tokio::select! {
                e = events.next() => e,
                _ = stop.wait_for(|s| *s) => return,
            };
            match event {
                Some(Ok(watcher::Event::Init)) => self.relisting = Some(BTreeSet::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let Some(seen) = self.relisting.as_mut() {
                        seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                    }
                    self.dispatch(pod);
                }
                Some(Ok(watcher::Event::InitDone)) => self.relist_done().await,
                Some(Ok(watcher::Event::Apply(pod))) => self.dispatch(pod),
                Some(Ok(watcher::Event::Delete(pod))) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if let Some(tx) = self.workers.get(&uid) {
                        let _ = tx.send(None);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed"),
                None => return,
            }
            self.workers.retain(|_, tx| !tx.is_closed());
        }
    }

    fn dispatch(&mut self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(tx) = self.workers.get(&uid)
            && !tx.is_closed()
        {
            let _ = tx.send(Some(pod));
            return;
        }
        let existing = self.adoptable.remove(&uid).unwrap_or_default();
        let sandbox = self.sandboxes.remove(&uid);
        let (tx, rx) = watch::channel(Some(pod.clone()));
        let worker = Worker::new(self.ctx.clone(), pod, existing, sandbox);
        tokio::spawn(worker_loop(worker, rx, self.stop.clone()));
        self.workers.insert(uid, tx);
    }

    /// After a (re)list: pods not listed were deleted while we were not watching.
    async fn relist_done(&mut self) {
        let Some(seen) = self.relisting.take() else { return };
        for (uid, tx) in &self.workers {
            if !seen.contains(uid) {
                let _ = tx.send(None);
            }
        }
        if !self.cleaned {
            self.cleaned = true;
            self.cleanup_orphans().await;
        }
    }

    /// Removes what pods that are gone left on the node: containers, network attachments, sandboxes,
    /// volumes, logs.
    async fn cleanup_orphans(&mut self) {
        let orphans: Vec<(String, Vec<ContainerInfo>)> = self.adoptable.drain().collect();
        let sandboxes: Vec<Sandbox> = self.sandboxes.drain().map(|(_, s)| s).collect();
        let live: BTreeSet<String> = self.workers.keys().cloned().collect();
        let attachments = self.cni.cached_attachments().unwrap_or_default();
        for req in attachments.iter().filter(|r| !live.contains(&r.sandbox_id)) {
            tracing::info!(sandbox = %req.sandbox_id, "releasing the network of a pod that is gone");
            if let Err(e) = self.cni.del(req).await {
                tracing::warn!(sandbox = %req.sandbox_id, error = %e, "CNI DEL failed");
            }
        }
        let known: BTreeSet<&str> = attachments.iter().map(|r| r.sandbox_id.as_str()).collect();
        // Sandboxes without a cached attachment may still hold an IP from a crash mid-ADD: DEL by netns.
        for s in sandboxes
            .iter()
            .filter(|s| !live.contains(&s.id) && !known.contains(s.id.as_str()))
        {
            let req = PodNetRequest {
                sandbox_id: s.id.clone(),
                netns: s.netns.clone(),
                pod_namespace: String::new(),
                pod_name: String::new(),
                pod_uid: s.id.clone(),
                port_mappings: Vec::new(),
            };
            let _ = self.cni.del(&req).await;
        }
        let runtime = self.ctx.runtime.clone();
        let pods_dir = self.ctx.pods_dir.clone();
        let log_dir = self.ctx.pod_log_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut uids = BTreeSet::new();
            for (uid, containers) in orphans {
                for c in containers {
                    tracing::info!(container = %c.id, pod = %uid, "removing a container whose pod is gone");
                    let _ = runtime.stop_container(&c.id, Signal::SIGKILL, Duration::ZERO);
                    if let Err(e) = runtime.remove_container(&c.id) {
                        tracing::warn!(container = %c.id, error = %e, "removing container failed");
                    }
                }
                uids.insert(uid);
            }
            for s in sandboxes.iter().filter(|s| !live.contains(&s.id)) {
                if let Err(e) = runtime.remove_sandbox(&s.id) {
                    tracing::warn!(sandbox = %s.id, error = %e, "removing sandbox failed");
                }
                uids.insert(s.id.clone());
            }
            for entry in std::fs::read_dir(&pods_dir).into_iter().flatten().flatten() {
                let uid = entry.file_name().to_string_lossy().into_owned();
                if !live.contains(&uid) {
                    if let Err(e) = crate::volumes::teardown(&entry.path()) {
                        tracing::warn!(pod = %uid, error = %e, "removing pod directory failed");
                    }
                    uids.insert(uid);
                }
            }
            remove_pod_logs(&log_dir, &uids);
        })
        .await;
    }
}

/// Removes `<log_dir>/<ns>_<name>_<uid>` for every uid in `uids` (and only those: other agents may share
/// the log directory).
fn remove_pod_logs(log_dir: &Path, uids: &BTreeSet<String>) {
    for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((_, uid)) = name.rsplit_once('_')
            && uids.contains(uid)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

async fn worker_loop(
    mut worker: Worker,
    mut rx: watch::Receiver<Option<Pod>>,
    mut stop: watch::Receiver<bool>,
) {
    rx.borrow_and_update();
    loop {
        if *stop.borrow() {
            return;
        }
        if worker.sync().await == Flow::Done {
            return;
        }
        let wake = worker.next_wakeup();
        tokio::select! {
            changed = rx.changed() => match changed {
                Ok(()) => {
                    let pod = rx.borrow_and_update().clone();
                    worker.update(pod);
                }
                // The manager stopped: leave the containers running.
                Err(_) => return,
            },
            _ = tokio::time::sleep(wake) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Frees image store disk above the high threshold, never touching images in use or imported ones.
async fn image_gc(ctx: Arc<Ctx>, store_dir: PathBuf, high: u8, low: u8, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(IMAGE_GC_PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (capacity, available) = host::disk(&store_dir);
        let to_free = rkube_oci::gc::bytes_to_free(capacity, capacity - available.min(capacity), high, low);
        if to_free == 0 {
            continue;
        }
        let _exclusive = ctx.gc_lock.write().await;
        let ctx2 = ctx.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let in_use = ctx2.images_in_use().map_err(|e| e.to_string())?;
            let images = ctx2.images.list_images().map_err(|e| e.to_string())?;
            let mut freed = 0;
            for reference in rkube_oci::gc::plan(&images, &in_use, to_free) {
                tracing::info!(image = %reference, "image GC removes image");
                freed += ctx2.images.remove_image(&reference).map_err(|e| e.to_string())?;
            }
            Ok(freed)
        })
        .await;
        match result {
            Ok(Ok(0)) => tracing::debug!(to_free, "image GC found nothing it may remove"),
            Ok(Ok(freed)) => tracing::info!(freed, "image GC done"),
            Ok(Err(e)) => tracing::warn!(error = %e, "image GC failed"),
            Err(e) => tracing::warn!(error = %e, "image GC task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_to_pem() {
        let text = pem(&[vec![1, 2, 3]]);
        assert_eq!(
            text,
            "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n"
        );
    }

    #[tokio::test]
    async fn a_burst_of_misses_fetches_once() {
        let cache: Arc<BurstCache<usize>> = Arc::default();
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gets = (0..20).map(|_| {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tokio::spawn(async move {
                cache
                    .get("ns/a", || async {
                        // Still in flight while the others ask.
                        tokio::task::yield_now().await;
                        fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
                    })
                    .await
            })
        });
        let values: Vec<usize> = futures::future::join_all(gets)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(values.iter().all(|v| *v == 1), "{values:?}");
        // Another key is fetched on its own.
        assert_eq!(cache.get("ns/b", || async { 7 }).await, 7);
    }

    #[test]
    fn only_logs_of_the_given_pods_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["ns_a_uid-1", "ns_b_uid-2", "ns_c_d_uid-3"] {
            std::fs::create_dir_all(dir.path().join(name).join("c")).unwrap();
        }
        remove_pod_logs(
            dir.path(),
            &BTreeSet::from(["uid-1".to_string(), "uid-3".to_string()]),
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["ns_b_uid-2"]);
    }
}
