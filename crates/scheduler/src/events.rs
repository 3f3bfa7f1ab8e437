//! Writes the scheduler's core/v1 Events (`Scheduled`, `FailedScheduling`) about pods, aggregating repeats of
//! the same event into one object with a growing `count`, as client-go's event correlator does, so a pod
//! retried many times does not flood the API server.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::Mutex;

/// Above this many remembered events the memory is reset (the next repeat creates a fresh Event).
const MAX_REMEMBERED: usize = 20_000;

type EventKey = (String, String, String);

/// See the module documentation.
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    instance: String,
    seen: Mutex<HashMap<EventKey, (String, i32)>>,
}

/// The ObjectReference an Event about `pod` points at.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

impl EventRecorder {
    pub fn new(client: kube::Client, component: &str, instance: &str) -> EventRecorder {
        EventRecorder {
            client,
            component: component.into(),
            instance: instance.into(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records `reason`/`message` of `type_` ("Normal"/"Warning") about `pod`: a new Event the first time,
    /// a `count` bump of the same Event on repeats.
    pub async fn record(
        &self,
        pod: &Pod,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key = (
            pod.metadata.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let now = Timestamp::now();
        let repeat = self.seen.lock().await.get(&key).cloned();
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": Time(now)});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.seen.lock().await.insert(key, (name, count + 1));
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:016x}",
            pod.metadata.name.as_deref().unwrap_or("pod"),
            rand::random::<u64>()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..ObjectMeta::default()
            },
            involved_object: pod_reference(pod),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(
                if reason == "Scheduled" {
                    "Binding"
                } else {
                    "Scheduling"
                }
                .into(),
            ),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
        let mut seen = self.seen.lock().await;
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        seen.insert(key, (name, 1));
        Ok(())
    }
}
