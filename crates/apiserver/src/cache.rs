//! The watch cache: every object of every served resource, in memory, kept current by ONE store watch over
//! `/registry/`. Lists at resourceVersion "0"/unset and every watch are served from here, never by a store
//! scan per request.
//!
//! Each object is parsed and serialized once, when its change arrives ([`CachedObject`] holds both forms);
//! each change is one [`CachedEvent`] carrying its pre-encoded watch line, shared by `Arc` between the
//! per-resource event window and every watcher. A bounded window of recent events lets a watch start from a
//! recent resourceVersion; older ones get 410 Expired.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use rkube_store::{Backend, EventKind, RangeRequest, Revision, WatchMessage, WatchRequest};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

/// Events kept per resource for watches that start in the past.
const WINDOW_CAPACITY: usize = 10_000;
/// Events buffered per resource for live watchers before a slow one must catch up from the window.
const BROADCAST_CAPACITY: usize = 4096;
/// The root of every key the API server writes.
pub const REGISTRY_PREFIX: &str = "/registry/";

/// One object as currently stored, in both forms.
#[derive(Debug)]
pub struct CachedObject {
    /// The key below its resource's prefix: `ns/name`, or `name` for cluster-scoped kinds.
    pub key: String,
    /// The object, `metadata.resourceVersion` set.
    pub value: Value,
    /// `value` serialized.
    pub json: Bytes,
    pub rv: Revision,
    /// `{"kind":"PartialObjectMetadata",…}` of this object (without managedFields), made on first use by a
    /// Table or metadata-only request and then shared by all of them.
    partial_metadata: std::sync::OnceLock<Vec<u8>>,
}

impl CachedObject {
    /// Builds the cached form of a stored value: parses it and stamps `metadata.resourceVersion`.
    pub fn from_stored(key: String, stored: &[u8], rv: Revision) -> Result<CachedObject, serde_json::Error> {
        let mut value: Value = serde_json::from_slice(stored)?;
        Ok(Self::from_value(key, &mut value, rv))
    }

    pub fn from_value(key: String, value: &mut Value, rv: Revision) -> CachedObject {
        if value.get("metadata").is_some_and(Value::is_object) {
            value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        }
        let json = Bytes::from(serde_json::to_vec(&value).expect("a Value always serializes"));
        CachedObject {
            key,
            value: std::mem::take(value),
            json,
            rv,
            partial_metadata: std::sync::OnceLock::new(),
        }
    }

    /// The object as a `PartialObjectMetadata`, serialized (managedFields left out: tables never show them).
    pub fn partial_metadata_json(&self) -> &[u8] {
        self.partial_metadata.get_or_init(|| {
            let mut metadata = self.value["metadata"].clone();
            if let Some(m) = metadata.as_object_mut() {
                m.remove("managedFields");
            }
            let partial = serde_json::json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata,
            });
            serde_json::to_vec(&partial).expect("a Value always serializes")
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct CachedEvent {
    pub kind: EventType,
    /// The object after the change; for a delete, its last state stamped with the delete's revision.
    pub object: Arc<CachedObject>,
    /// The object before the change (for selector transitions).
    pub prev: Option<Arc<CachedObject>>,
    pub rv: Revision,
    /// `{"type":"…","object":…}\n`, encoded once for every watcher that sees the event as it is.
    pub line: Bytes,
}

/// `{"type":"<type>","object":<json>}\n` without re-encoding the object.
pub fn watch_line(kind: &str, object_json: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object_json.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object_json);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

impl CachedEvent {
    fn new(kind: EventType, object: Arc<CachedObject>, prev: Option<Arc<CachedObject>>) -> CachedEvent {
        let line = watch_line(kind.as_str(), &object.json);
        CachedEvent {
            kind,
            rv: object.rv,
            object,
            prev,
            line,
        }
    }
}

/// A watch asked to start before the oldest event still held.
#[derive(Debug, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub struct TooOld {
    pub requested: Revision,
    pub oldest: Revision,
}

struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
    window: VecDeque<Arc<CachedEvent>>,
    /// Every event after this revision is in `window`.
    oldest: Revision,
    /// The revision this resource's state reflects (all events up to it applied).
    revision: Revision,
    tx: broadcast::Sender<Arc<CachedEvent>>,
    /// Feeds of watchers selecting one value of the trigger field (`spec.nodeName=n1`), by value: such a
    /// watcher only wakes for its own objects, as with kube-apiserver's watch-cache triggers — a thousand
    /// node agents each watching their pods do not all wake for every pod.
    triggers: HashMap<String, broadcast::Sender<Arc<CachedEvent>>>,
}

/// The cached state of one resource.
pub struct ResourceCache {
    state: RwLock<State>,
    trigger_field: Option<&'static str>,
}

/// A consistent snapshot of a page of a resource.
pub struct Snapshot {
    pub items: Vec<Arc<CachedObject>>,
    pub revision: Revision,
    /// The key of the last item when more matching items follow.
    pub continue_after: Option<String>,
}

/// What a new watcher starts from: past events (or the current objects as ADDED), then the live feed.
pub struct Subscription {
    pub initial: Vec<Arc<CachedEvent>>,
    pub rx: broadcast::Receiver<Arc<CachedEvent>>,
    /// The revision the initial part reaches.
    pub revision: Revision,
}

impl ResourceCache {
    fn new(trigger_field: Option<&'static str>) -> ResourceCache {
        ResourceCache {
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                window: VecDeque::new(),
                oldest: 0,
                revision: 0,
                tx: broadcast::channel(BROADCAST_CAPACITY).0,
                triggers: HashMap::new(),
            }),
            trigger_field,
        }
    }

    /// The field whose selected value lets a watcher get only its own events (pods: `spec.nodeName`).
    pub fn trigger_field(&self) -> Option<&'static str> {
        self.trigger_field
    }

    pub fn revision(&self) -> Revision {
        self.state.read().revision
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.state.read().objects.get(key).cloned()
    }

    /// Matching objects whose keys start with `prefix`, after `start_after`, at most `limit` (0 = all).
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        filter: impl Fn(&CachedObject) -> bool,
    ) -> Snapshot {
        let state = self.state.read();
        let mut items = Vec::new();
        let mut continue_after = None;
        let range = match start_after {
            Some(after) => state
                .objects
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => state
                .objects
                .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded)),
        };
        for (key, obj) in range {
            if !key.starts_with(prefix) {
                break;
            }
            if !filter(obj) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                continue_after = items.last().map(|o: &Arc<CachedObject>| o.key.clone());
                break;
            }
            items.push(obj.clone());
        }
        Snapshot {
            items,
            revision: state.revision,
            continue_after,
        }
    }

    /// Starts a watch after `from` (`None`: from now, with the current objects as ADDED events first).
    /// With `trigger` (a value of [`Self::trigger_field`] the watcher selects), the live feed carries only
    /// events of objects that have or had that value.
    ///
    /// `prefix` (`"ns/"` for one namespace, `""` for all) bounds the synthetic ADDED events of a watch without
    /// a revision to the objects it can show: building them for every object of the resource would cost each
    /// watcher memory in proportion to the whole cluster.
    pub fn subscribe(
        &self,
        from: Option<Revision>,
        prefix: &str,
        trigger: Option<&str>,
    ) -> Result<Subscription, TooOld> {
        let trigger = trigger.filter(|_| self.trigger_field.is_some());
        let state = self.state.upgradable_read();
        let initial = match from {
            None => state
                .objects
                .range(prefix.to_string()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(_, o)| Arc::new(CachedEvent::new(EventType::Added, o.clone(), None)))
                .collect(),
            Some(from) => {
                if from < state.oldest {
                    return Err(TooOld {
                        requested: from,
                        oldest: state.oldest,
                    });
                }
                let start = state.window.partition_point(|e| e.rv <= from);
                state.window.range(start..).cloned().collect()
            }
        };
        let revision = state.revision;
        let rx = match trigger {
            None => state.tx.subscribe(),
            Some(value) => {
                let mut state = parking_lot::RwLockUpgradableReadGuard::upgrade(state);
                let tx = state
                    .triggers
                    .entry(value.to_string())
                    .or_insert_with(|| broadcast::channel(BROADCAST_CAPACITY).0);
                tx.subscribe()
            }
        };
        Ok(Subscription {
            initial,
            rx,
            revision,
        })
    }

    /// The revision for a bookmark: only when the watcher has nothing pending, so that every event up to the
    /// bookmark has been delivered.
    pub fn bookmark_revision(&self, rx: &broadcast::Receiver<Arc<CachedEvent>>) -> Option<Revision> {
        let state = self.state.read();
        rx.is_empty().then_some(state.revision)
    }

    fn apply(&self, events: Vec<(EventKind, String, Option<CachedObject>, Revision)>, revision: Revision) {
        let mut state = self.state.write();
        for (kind, key, object, rv) in events {
            let event = match (kind, object) {
                (EventKind::Put, Some(object)) => {
                    let object = Arc::new(object);
                    let prev = state.objects.insert(key, object.clone());
                    let kind = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    CachedEvent::new(kind, object, prev)
                }
                (EventKind::Delete, _) => {
                    let Some(prev) = state.objects.remove(&key) else {
                        continue;
                    };
                    let mut last = prev.value.clone();
                    let deleted = Arc::new(CachedObject::from_value(key, &mut last, rv));
                    CachedEvent::new(EventType::Deleted, deleted, Some(prev))
                }
                (EventKind::Put, None) => continue,
            };
            let event = Arc::new(event);
            state.window.push_back(event.clone());
            if state.window.len() > WINDOW_CAPACITY
                && let Some(evicted) = state.window.pop_front()
            {
                state.oldest = evicted.rv;
            }
            if let Some(field) = self.trigger_field
                && !state.triggers.is_empty()
            {
                let now = crate::selectors::field_value(&event.object.value, field);
                let before = event
                    .prev
                    .as_ref()
                    .map(|p| crate::selectors::field_value(&p.value, field));
                for value in std::iter::once(now.clone()).chain(before.filter(|b| *b != now)) {
                    let gone = state
                        .triggers
                        .get(&value)
                        .is_some_and(|tx| tx.send(event.clone()).is_err());
                    if gone {
                        state.triggers.remove(&value);
                    }
                }
            }
            // No receivers is fine: nobody is watching.
            let _ = state.tx.send(event);
        }
        state.revision = state.revision.max(revision);
    }

    fn advance(&self, revision: Revision) {
        let mut state = self.state.write();
        state.revision = state.revision.max(revision);
    }

    /// Replaces everything after a relist; live watchers are cut off (their receivers close) and must
    /// start again, getting 410 if they ask for history from before the relist.
    fn reset(&self, objects: BTreeMap<String, Arc<CachedObject>>, revision: Revision) {
        let mut state = self.state.write();
        state.objects = objects;
        state.window.clear();
        state.oldest = revision;
        state.revision = revision;
        state.tx = broadcast::channel(BROADCAST_CAPACITY).0;
        state.triggers.clear();
    }
}

/// The caches of every resource, and the one store watch that feeds them.
pub struct Caches {
    resources: HashMap<String, Arc<ResourceCache>>,
    revision: watch::Sender<Revision>,
}

/// Splits `/registry/pods/ns/name` into (`pods`, `ns/name`).
fn split_key(key: &[u8]) -> Option<(&str, &str)> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix(REGISTRY_PREFIX)?.split_once('/')
}

impl Caches {
    /// Caches for these resources (group-resource names: `pods`, `deployments.apps`), each with its trigger
    /// field if it has one.
    pub fn new(resources: impl IntoIterator<Item = (String, Option<&'static str>)>) -> Arc<Caches> {
        Arc::new(Caches {
            resources: resources
                .into_iter()
                .map(|(r, trigger)| (r, Arc::new(ResourceCache::new(trigger))))
                .collect(),
            revision: watch::channel(0).0,
        })
    }

    pub fn resource(&self, group_resource: &str) -> Option<&Arc<ResourceCache>> {
        self.resources.get(group_resource)
    }

    /// The revision every cache has reached.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits until the caches have reached `revision`; false if that took longer than `timeout`.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Loads everything, then follows the store until it fails; the caller restarts it. Returns once the
    /// initial load is done through `loaded`.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Backend>, loaded: tokio::sync::oneshot::Sender<()>) {
        let mut loaded = Some(loaded);
        loop {
            match self.sync(&store, &mut loaded).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache lost the store watch; relisting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn sync(
        &self,
        store: &Arc<dyn Backend>,
        loaded: &mut Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(), rkube_store::Error> {
        let revision = store.current_revision().await?;
        let mut maps: HashMap<&str, BTreeMap<String, Arc<CachedObject>>> = self
            .resources
            .keys()
            .map(|k| (k.as_str(), BTreeMap::new()))
            .collect();
        let mut start_after = Bytes::new();
        loop {
            let page = store
                .range(RangeRequest {
                    prefix: Bytes::from_static(REGISTRY_PREFIX.as_bytes()),
                    start_after: start_after.clone(),
                    revision,
                    limit: 5000,
                })
                .await?;
            for kv in &page.kvs {
                let Some((resource, key)) = split_key(&kv.key) else {
                    continue;
                };
                let Some(map) = maps.get_mut(resource) else {
                    continue;
                };
                match CachedObject::from_stored(key.to_string(), &kv.value, kv.mod_revision) {
                    Ok(obj) => {
                        map.insert(key.to_string(), Arc::new(obj));
                    }
                    Err(e) => {
                        tracing::warn!(key = %String::from_utf8_lossy(&kv.key), error = %e, "unreadable object")
                    }
                }
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => start_after = last.key.clone(),
                _ => break,
            }
        }
        for (resource, map) in maps {
            self.resources[resource].reset(map, revision);
        }
        self.revision.send_replace(revision);
        if let Some(tx) = loaded.take() {
            let _ = tx.send(());
        }
        let mut watch = store
            .watch(WatchRequest {
                prefix: Bytes::from_static(REGISTRY_PREFIX.as_bytes()),
                start_revision: revision + 1,
                progress_interval: Some(Duration::from_millis(250)),
            })
            .await?;
        while let Some(msg) = watch.next().await {
            match msg? {
                WatchMessage::Events(events) => self.apply(events),
                WatchMessage::Progress(rev) => {
                    for cache in self.resources.values() {
                        cache.advance(rev);
                    }
                    self.revision
                        .send_if_modified(|r| std::mem::replace(r, rev.max(*r)) != *r);
                }
            }
        }
        Err(rkube_store::Error::Closed)
    }

    fn apply(&self, events: Vec<rkube_store::Event>) {
        let Some(last) = events.last().map(|e| e.kv.mod_revision) else {
            return;
        };
        let mut per_resource: HashMap<&str, Vec<_>> = HashMap::new();
        for e in &events {
            let Some((resource, key)) = split_key(&e.kv.key) else {
                continue;
            };
            if !self.resources.contains_key(resource) {
                continue;
            }
            let object = match e.kind {
                EventKind::Put => {
                    match CachedObject::from_stored(key.to_string(), &e.kv.value, e.kv.mod_revision) {
                        Ok(o) => Some(o),
                        Err(err) => {
                            tracing::warn!(key, error = %err, "unreadable object in watch");
                            continue;
                        }
                    }
                }
                EventKind::Delete => None,
            };
            per_resource.entry(resource).or_default().push((
                e.kind,
                key.to_string(),
                object,
                e.kv.mod_revision,
            ));
        }
        for (resource, cache) in &self.resources {
            match per_resource.remove(resource.as_str()) {
                Some(events) => cache.apply(events, last),
                None => cache.advance(last),
            }
        }
        self.revision.send_replace(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(key: &str, rv: Revision, labels: Value) -> CachedObject {
        let (ns, name) = key.split_once('/').unwrap();
        let stored =
            serde_json::to_vec(&json!({"metadata": {"name": name, "namespace": ns, "labels": labels}}))
                .unwrap();
        CachedObject::from_stored(key.to_string(), &stored, rv).unwrap()
    }

    #[test]
    fn cached_objects_carry_their_revision_in_both_forms() {
        let o = obj("ns/a", 7, json!({}));
        assert_eq!(o.value["metadata"]["resourceVersion"], "7");
        let parsed: Value = serde_json::from_slice(&o.json).unwrap();
        assert_eq!(parsed, o.value);
        let line = watch_line("ADDED", &o.json);
        let ev: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(ev["type"], "ADDED");
        assert_eq!(ev["object"]["metadata"]["name"], "a");
        assert!(line.ends_with(b"\n"));
    }

    #[test]
    fn events_lists_and_subscriptions() {
        let c = ResourceCache::new(None);
        c.reset(BTreeMap::new(), 1);
        c.apply(
            vec![
                (
                    EventKind::Put,
                    "ns/a".into(),
                    Some(obj("ns/a", 2, json!({"app": "x"}))),
                    2,
                ),
                (EventKind::Put, "ns/b".into(), Some(obj("ns/b", 3, json!({}))), 3),
                (
                    EventKind::Put,
                    "other/c".into(),
                    Some(obj("other/c", 4, json!({}))),
                    4,
                ),
            ],
            4,
        );
        c.apply(
            vec![(EventKind::Put, "ns/a".into(), Some(obj("ns/a", 5, json!({}))), 5)],
            6,
        );
        assert_eq!(c.revision(), 6);

        let all = c.list("ns/", None, 0, |_| true);
        assert_eq!(
            all.items.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["ns/a", "ns/b"]
        );
        assert_eq!(all.revision, 6);
        let page = c.list("", None, 2, |_| true);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.continue_after.as_deref(), Some("ns/b"));
        let rest = c.list("", Some("ns/b"), 2, |_| true);
        assert_eq!(
            rest.items.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["other/c"]
        );
        assert_eq!(rest.continue_after, None);

        let sub = c.subscribe(Some(3), "", None).unwrap();
        let kinds: Vec<_> = sub.initial.iter().map(|e| (e.kind, e.rv)).collect();
        assert_eq!(kinds, [(EventType::Added, 4), (EventType::Modified, 5)]);
        let fresh = c.subscribe(None, "", None).unwrap();
        assert_eq!(fresh.initial.len(), 3);
        assert!(fresh.initial.iter().all(|e| e.kind == EventType::Added));
        let one_namespace = c.subscribe(None, "ns/", None).unwrap();
        assert_eq!(
            one_namespace
                .initial
                .iter()
                .map(|e| e.object.key.as_str())
                .collect::<Vec<_>>(),
            ["ns/a", "ns/b"]
        );

        let mut rx = c.subscribe(Some(6), "", None).unwrap().rx;
        c.apply(vec![(EventKind::Delete, "ns/b".into(), None, 7)], 7);
        let deleted = rx.try_recv().unwrap();
        assert_eq!(deleted.kind, EventType::Deleted);
        assert_eq!(deleted.object.value["metadata"]["resourceVersion"], "7");
        assert_eq!(deleted.prev.as_ref().unwrap().rv, 3);
        assert!(c.get("ns/b").is_none());

        c.reset(BTreeMap::new(), 10);
        assert!(matches!(
            c.subscribe(Some(7), "", None),
            Err(TooOld {
                requested: 7,
                oldest: 10
            })
        ));
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn trigger_watchers_only_get_events_of_their_value() {
        let pod = |name: &str, node: &str, rv: Revision| {
            let stored = serde_json::to_vec(&json!({"metadata": {"name": name, "namespace": "ns"},
                "spec": {"nodeName": node}}))
            .unwrap();
            CachedObject::from_stored(format!("ns/{name}"), &stored, rv).unwrap()
        };
        let c = ResourceCache::new(Some("spec.nodeName"));
        c.reset(BTreeMap::new(), 1);
        let mut n1 = c.subscribe(Some(1), "", Some("n1")).unwrap().rx;
        let mut all = c.subscribe(Some(1), "", None).unwrap().rx;
        c.apply(
            vec![
                (EventKind::Put, "ns/a".into(), Some(pod("a", "", 2)), 2),
                (EventKind::Put, "ns/b".into(), Some(pod("b", "n2", 3)), 3),
                (EventKind::Put, "ns/a".into(), Some(pod("a", "n1", 4)), 4),
                (EventKind::Delete, "ns/a".into(), None, 5),
            ],
            5,
        );
        let got: Vec<_> = std::iter::from_fn(|| n1.try_recv().ok())
            .map(|e| (e.kind, e.rv))
            .collect();
        assert_eq!(
            got,
            [(EventType::Modified, 4), (EventType::Deleted, 5)],
            "binding to n1 and the delete"
        );
        assert_eq!(std::iter::from_fn(|| all.try_recv().ok()).count(), 4);
        drop(n1);
        // A trigger feed nobody listens to any more is dropped at the next event for it.
        c.apply(
            vec![(EventKind::Put, "ns/c".into(), Some(pod("c", "n1", 6)), 6)],
            6,
        );
        assert!(c.state.read().triggers.is_empty());
    }

    #[test]
    fn keys_split_into_resource_and_object() {
        assert_eq!(split_key(b"/registry/pods/ns/a"), Some(("pods", "ns/a")));
        assert_eq!(
            split_key(b"/registry/deployments.apps/ns/a"),
            Some(("deployments.apps", "ns/a"))
        );
        assert_eq!(split_key(b"/registry/nodes/n1"), Some(("nodes", "n1")));
        assert_eq!(split_key(b"/other/x"), None);
    }
}
