//! The event recorder (Kubernetes' `EventRecorder` with its `EventCorrelator`): controllers report
//! `Normal`/`Warning` events about an object. A repeat of the same event (same object, type, reason, message)
//! bumps `count` and `lastTimestamp` of the existing Event instead of creating a new object; many different
//! messages of one kind are folded into one "(combined from similar events)" Event; and a per-object token
//! bucket drops floods. The decisions are the pure [`Correlator`]; [`EventRecorder::record`] does the writes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;

/// `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// An event a controller wants recorded about the object it is syncing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    /// CamelCase reason, e.g. `ScalingReplicaSet`.
    pub reason: String,
    pub message: String,
}

impl Event {
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What identifies "the same event" for aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AggregateKey {
    object_uid: String,
    type_: EventType,
    reason: String,
    message: String,
}

/// An Event object already written for an aggregate key.
#[derive(Debug, Clone)]
struct Recorded {
    namespace: String,
    name: String,
    count: i32,
}

/// What the recorder does for one event (pure: decided from its memory of earlier events).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    Create,
    Bump {
        namespace: String,
        name: String,
        count: i32,
    },
}

/// Events about one object share a token bucket (Kubernetes' `EventSourceObjectSpamFilter`): 25 at once, then
/// one per 5 minutes; the rest are dropped.
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// After this many different messages with the same object, type and reason within the window, further ones are
/// folded into one "(combined from similar events)" Event (Kubernetes' `EventAggregator`).
const MAX_SIMILAR: usize = 10;
const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
const COMBINED_PREFIX: &str = "(combined from similar events): ";

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Similar {
    messages: HashSet<String>,
    since: Instant,
}

/// The correlator's memory; bounded so a long-running manager does not grow without limit.
#[derive(Debug, Default)]
struct Correlator {
    seen: HashMap<AggregateKey, Recorded>,
    similar: HashMap<AggregateKey, Similar>,
    buckets: HashMap<String, Bucket>,
}

/// Kubernetes' correlator caches hold 4096 entries; forgetting everything at the bound is good enough here.
const MAX_REMEMBERED: usize = 4096;

impl Correlator {
    /// Pass `event` through the spam filter and the aggregator: `None` drops it, otherwise the key it is
    /// de-duplicated under and the message to write.
    fn correlate(&mut self, key: AggregateKey, now: Instant) -> Option<(AggregateKey, String)> {
        if self.buckets.len() >= MAX_REMEMBERED && !self.buckets.contains_key(&key.object_uid) {
            self.buckets.clear();
        }
        let bucket = self.buckets.entry(key.object_uid.clone()).or_insert(Bucket {
            tokens: SPAM_BURST,
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        bucket.tokens = (bucket.tokens + refill).min(SPAM_BURST);
        bucket.last = now;
        if bucket.tokens < 1.0 {
            return None;
        }
        bucket.tokens -= 1.0;

        let similar_key = AggregateKey {
            message: String::new(),
            ..key.clone()
        };
        if self.similar.len() >= MAX_REMEMBERED && !self.similar.contains_key(&similar_key) {
            self.similar.clear();
        }
        let similar = self
            .similar
            .entry(similar_key.clone())
            .or_insert_with(|| Similar {
                messages: HashSet::new(),
                since: now,
            });
        if now.duration_since(similar.since) > SIMILAR_WINDOW {
            *similar = Similar {
                messages: HashSet::new(),
                since: now,
            };
        }
        similar.messages.insert(key.message.clone());
        if similar.messages.len() >= MAX_SIMILAR {
            let message = format!("{COMBINED_PREFIX}{}", key.message);
            return Some((
                AggregateKey {
                    message: COMBINED_PREFIX.into(),
                    ..similar_key
                },
                message,
            ));
        }
        let message = key.message.clone();
        Some((key, message))
    }

    fn decide(&self, key: &AggregateKey) -> Write {
        match self.seen.get(key) {
            Some(r) => Write::Bump {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                count: r.count + 1,
            },
            None => Write::Create,
        }
    }

    fn remember(&mut self, key: AggregateKey, recorded: Recorded) {
        if self.seen.len() >= MAX_REMEMBERED && !self.seen.contains_key(&key) {
            self.seen.clear();
        }
        self.seen.insert(key, recorded);
    }

    fn forget(&mut self, key: &AggregateKey) {
        self.seen.remove(key);
    }
}

/// Records events through the API as `component` (e.g. `deployment-controller`). Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    component: String,
    correlator: Arc<Mutex<Correlator>>,
}

impl EventRecorder {
    pub fn new(client: Client, component: &str) -> Self {
        EventRecorder {
            client,
            component: component.into(),
            correlator: Default::default(),
        }
    }

    /// A recorder for another component sharing this one's client.
    pub fn for_component(&self, component: &str) -> Self {
        EventRecorder::new(self.client.clone(), component)
    }

    /// Record `event` about `object`. Failures are logged, never returned: events are best effort, like in
    /// Kubernetes.
    pub async fn record(&self, object: &ObjectReference, event: &Event) {
        let key = AggregateKey {
            object_uid: object.uid.clone().unwrap_or_default(),
            type_: event.type_,
            reason: event.reason.clone(),
            message: event.message.clone(),
        };
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let now = Time(Timestamp::now());
        let Some((key, message)) = self.correlator.lock().correlate(key, Instant::now()) else {
            tracing::debug!(reason = %event.reason, "event dropped by the spam filter");
            return;
        };
        let decision = self.correlator.lock().decide(&key);
        if let Write::Bump {
            namespace,
            name,
            count,
        } = &decision
        {
            let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({"count": count, "lastTimestamp": now, "message": message});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    let recorded = Recorded {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        count: *count,
                    };
                    self.correlator.lock().remember(key, recorded);
                    return;
                }
                // The Event expired or was deleted: start a new one.
                Err(e) => {
                    tracing::debug!(error = %e, "event aggregation patch failed; creating a new event");
                    self.correlator.lock().forget(&key);
                }
            }
        }
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("unknown"),
            now.0.as_nanosecond() as u128 & 0xffff_ffff_ffff_ffff
        );
        let body = CoreEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object.clone(),
            type_: Some(event.type_.as_str().into()),
            reason: Some(event.reason.clone()),
            message: Some(message),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            ..Default::default()
        };
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &body).await {
            Ok(_) => self.correlator.lock().remember(
                key,
                Recorded {
                    namespace,
                    name,
                    count: 1,
                },
            ),
            Err(e) => tracing::warn!(error = %e, reason = %event.reason, "cannot record event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(message: &str) -> AggregateKey {
        AggregateKey {
            object_uid: "uid-1".into(),
            type_: EventType::Normal,
            reason: "SuccessfulCreate".into(),
            message: message.into(),
        }
    }

    #[test]
    fn repeats_bump_the_existing_event() {
        let mut c = Correlator::default();
        assert_eq!(c.decide(&key("Created pod: a")), Write::Create);
        c.remember(
            key("Created pod: a"),
            Recorded {
                namespace: "ns".into(),
                name: "web.1".into(),
                count: 1,
            },
        );
        assert_eq!(
            c.decide(&key("Created pod: a")),
            Write::Bump {
                namespace: "ns".into(),
                name: "web.1".into(),
                count: 2
            }
        );
        assert_eq!(
            c.decide(&key("Created pod: b")),
            Write::Create,
            "a different message is a new event"
        );
        c.forget(&key("Created pod: a"));
        assert_eq!(c.decide(&key("Created pod: a")), Write::Create);
    }

    #[test]
    fn many_different_messages_are_combined_into_one_event() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        for i in 0..MAX_SIMILAR - 1 {
            let (k, m) = c.correlate(key(&format!("Created pod: p{i}")), t0).unwrap();
            assert_eq!(m, format!("Created pod: p{i}"));
            assert_eq!(k, key(&m));
        }
        let (k1, m1) = c.correlate(key("Created pod: p9"), t0).unwrap();
        let (k2, m2) = c.correlate(key("Created pod: p10"), t0).unwrap();
        assert_eq!(m1, "(combined from similar events): Created pod: p9");
        assert_eq!(m2, "(combined from similar events): Created pod: p10");
        assert_eq!(k1, k2, "combined events share one Event object, bumped each time");
        let (_, later) = c
            .correlate(
                key("Created pod: p11"),
                t0 + SIMILAR_WINDOW + Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!(later, "Created pod: p11", "a new window starts over");
    }

    #[test]
    fn spam_filter_drops_a_flood_and_refills_slowly() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        let passed = (0..40).filter(|_| c.correlate(key("same"), t0).is_some()).count();
        assert_eq!(passed, 25);
        assert!(c.correlate(key("same"), t0 + Duration::from_secs(60)).is_none());
        assert!(
            c.correlate(key("same"), t0 + SPAM_REFILL).is_some(),
            "one token back after five minutes"
        );
        let other = AggregateKey {
            object_uid: "uid-2".into(),
            ..key("same")
        };
        assert!(c.correlate(other, t0).is_some(), "each object has its own bucket");
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = Correlator::default();
        for i in 0..MAX_REMEMBERED + 10 {
            c.remember(
                key(&i.to_string()),
                Recorded {
                    namespace: "ns".into(),
                    name: i.to_string(),
                    count: 1,
                },
            );
        }
        assert!(c.seen.len() <= MAX_REMEMBERED);
    }
}
