//! Shared informers (client-go's `SharedInformerFactory` on kube-rs watchers): each resource type is listed and
//! watched once per controller manager, cached in a kube-rs reflector `Store`, and every change is handed to the
//! registered event handlers as an old/new pair. Handlers only enqueue keys.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

/// One change as handlers see it: `old: None` is an add, `new: None` a delete (with the last known state).
#[derive(Debug)]
pub struct Change<K> {
    pub old: Option<Arc<K>>,
    pub new: Option<Arc<K>>,
}

impl<K> Change<K> {
    /// The object's latest known state.
    pub fn latest(&self) -> &Arc<K> {
        self.new
            .as_ref()
            .or(self.old.as_ref())
            .expect("a change has an old or a new object")
    }
}

type Handler<K> = Box<dyn Fn(&Change<K>) + Send + Sync>;

/// The cache and handlers of one watched resource type.
pub struct Informer<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    handlers: RwLock<Vec<Handler<K>>>,
    /// Turns true once the first list is in the cache.
    synced: tokio::sync::watch::Sender<bool>,
}

/// Bounds every resource type a shared informer can watch.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static> Watched for K {}

impl<K: Watched> Informer<K> {
    /// The cache (complete once [`Informer::wait_synced`] returned).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Register a handler; it first sees every cached object as an add, like a late client-go handler.
    pub fn add_handler(&self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) {
        let mut handlers = self.handlers.write();
        for obj in self.store.state() {
            handler(&Change {
                old: None,
                new: Some(obj),
            });
        }
        handlers.push(Box::new(handler));
    }

    /// Resolves once the first list is in the cache. (Not kube-rs' `Store::wait_until_ready`: its future keeps
    /// only the waker of its last poller, so of several controllers waiting on one informer only one would wake.)
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        // An error only means the informer task ended, i.e. the manager is shutting down.
        let _ = synced.wait_for(|s| *s).await;
    }

    fn dispatch(&self, change: &Change<K>) {
        for h in self.handlers.read().iter() {
            // A panicking handler must not end the watch that every other controller depends on.
            let call = std::panic::AssertUnwindSafe(|| h(change));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!(kind = %K::kind(&()), "an event handler panicked; change skipped for it");
            }
        }
    }
}

/// Lazily started informers, one per resource type, all sharing one client. Dropping it stops every watch.
pub struct SharedInformers {
    client: Client,
    informers: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl SharedInformers {
    pub fn new(client: Client) -> Self {
        SharedInformers {
            client,
            informers: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// The informer for `K` (cluster-wide), started on first use.
    pub fn get<K: Watched>(&self) -> Arc<Informer<K>> {
        let mut informers = self.informers.lock();
        if let Some(existing) = informers.get(&TypeId::of::<K>()) {
            return existing.clone().downcast::<Informer<K>>().expect("keyed by type");
        }
        let (store, writer) = reflector::store::<K>();
        let informer = Arc::new(Informer {
            store,
            handlers: RwLock::new(Vec::new()),
            synced: tokio::sync::watch::Sender::new(false),
        });
        informers.insert(TypeId::of::<K>(), informer.clone());
        let api: Api<K> = Api::all(self.client.clone());
        self.tasks
            .lock()
            .spawn(run_informer(api, writer, informer.clone()));
        informer
    }
}

/// Changes of a relist in progress, and the objects it listed.
type Relist<K> = (Vec<Change<K>>, HashSet<ObjectRef<K>>);

/// Feed the cache from the watch and tell handlers what changed. A relist (`Init … InitDone`) is diffed against
/// the cache so objects deleted while the watch was down are reported as deletes; its changes are dispatched only
/// after the cache holds the new list, so a handler's enqueued key never reads stale state.
async fn run_informer<K: Watched>(
    api: Api<K>,
    mut writer: reflector::store::Writer<K>,
    informer: Arc<Informer<K>>,
) {
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<Relist<K>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                continue;
            }
        };
        match &event {
            Event::Apply(obj) | Event::Delete(obj) => {
                let key = ObjectRef::from_obj(obj);
                let old = informer.store.get(&key);
                writer.apply_watcher_event(&event);
                let change = if matches!(event, Event::Apply(_)) {
                    Change {
                        old,
                        new: Some(Arc::new(obj.clone())),
                    }
                } else {
                    Change {
                        old: Some(old.unwrap_or_else(|| Arc::new(obj.clone()))),
                        new: None,
                    }
                };
                informer.dispatch(&change);
            }
            Event::Init => {
                writer.apply_watcher_event(&event);
                relist = Some((Vec::new(), HashSet::new()));
            }
            Event::InitApply(obj) => {
                writer.apply_watcher_event(&event);
                if let Some((changes, seen)) = relist.as_mut() {
                    let key = ObjectRef::from_obj(obj);
                    changes.push(Change {
                        old: informer.store.get(&key),
                        new: Some(Arc::new(obj.clone())),
                    });
                    seen.insert(key);
                }
            }
            Event::InitDone => {
                let (mut changes, seen) = relist.take().unwrap_or_default();
                for old in informer.store.state() {
                    if !seen.contains(&ObjectRef::from_obj(&*old)) {
                        changes.push(Change {
                            old: Some(old),
                            new: None,
                        });
                    }
                }
                writer.apply_watcher_event(&event);
                informer.synced.send_replace(true);
                for change in &changes {
                    informer.dispatch(change);
                }
            }
        }
    }
}

/// `namespace/name` (or `name` for cluster-scoped objects): the work-queue key of an object.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        None => meta.name.clone().unwrap_or_default(),
    }
}

/// Split a key into (namespace, name).
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}
