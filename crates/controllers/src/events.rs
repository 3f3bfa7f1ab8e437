//! The event recorder (Kubernetes' `EventRecorder` with its correlator): controllers report `Normal`/`Warning`
//! events about an object; a repeat of the same event (same object, type, reason, message) bumps `count` and
//! `lastTimestamp` of the existing Event instead of creating a new object each time.

use std::collections::HashMap;
use std::sync::Arc;

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

/// The correlator's memory; bounded so a long-running manager does not grow without limit.
#[derive(Debug, Default)]
struct Correlator {
    seen: HashMap<AggregateKey, Recorded>,
}

/// Kubernetes' correlator LRU holds 4096 entries; forgetting everything at the bound is good enough here.
const MAX_REMEMBERED: usize = 4096;

impl Correlator {
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
        let decision = self.correlator.lock().decide(&key);
        if let Write::Bump {
            namespace,
            name,
            count,
        } = &decision
        {
            let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({"count": count, "lastTimestamp": now});
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
            message: Some(event.message.clone()),
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
