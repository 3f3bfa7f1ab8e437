//! Watches, served from the watch cache: a chunked JSON stream, one event per line, flushed per event.
//!
//! Each watcher is a task that filters the shared event feed by namespace and selectors (an object leaving
//! the selector is DELETED for this watcher, one entering it ADDED), encodes only what differs from the
//! pre-encoded line (table rows, changed event types), sends bookmarks when asked and ends at
//! `timeoutSeconds`. A watcher that falls behind the feed resumes from the event window; one asking for
//! history older than the window gets an ERROR event with a 410 Expired Status.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rkube_store::Revision;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::ApiState;
use crate::cache::{CachedEvent, EventType, ResourceCache, watch_line};
use crate::output;
use crate::registry::Kind;
use crate::request::Output;
use crate::rest::{ApiRequest, cache_of, parse_rv, selector};
use crate::selectors::Selector;
use crate::status::ApiError;

/// Without `timeoutSeconds` a watch still ends eventually (kube-apiserver: 30–60 minutes), so clients
/// re-establish it and load spreads.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// What one watcher sees: namespace, selector, output shape.
struct Filter {
    prefix: String,
    selector: Selector,
    output: Output,
}

impl Filter {
    fn matches(&self, obj: &crate::cache::CachedObject) -> bool {
        obj.key.starts_with(&self.prefix) && self.selector.matches(&obj.value)
    }

    /// The event as this watcher sees it, encoded; `None` if it is not for this watcher.
    fn encode(&self, kind: &Kind, event: &CachedEvent) -> Option<Bytes> {
        if kind.conversion.is_some() {
            let converted = CachedEvent {
                kind: event.kind,
                object: crate::rest::shown(kind, event.object.clone()),
                prev: event.prev.clone().map(|p| crate::rest::shown(kind, p)),
                rv: event.rv,
                line: Bytes::new(),
            };
            return self.encode_shown(kind, &converted, true);
        }
        self.encode_shown(kind, event, false)
    }

    fn encode_shown(&self, kind: &Kind, event: &CachedEvent, converted: bool) -> Option<Bytes> {
        let now = self.matches(&event.object);
        let before = event.prev.as_ref().is_some_and(|p| self.matches(p));
        let ty = match event.kind {
            EventType::Added if now => EventType::Added,
            EventType::Modified if now && before => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            EventType::Deleted if before || now => EventType::Deleted,
            _ => return None,
        };
        Some(match self.output {
            Output::Object if ty == event.kind && !converted => event.line.clone(),
            Output::Object => watch_line(ty.as_str(), &event.object.json),
            Output::Metadata => watch_line(ty.as_str(), event.object.partial_metadata_json()),
            Output::Table(include) => {
                let rv = json!({"resourceVersion": event.object.rv.to_string()});
                let table = output::table(kind, std::slice::from_ref(&event.object), rv, include);
                watch_line(ty.as_str(), &table)
            }
        })
    }
}

fn bookmark(kind: &Kind, rv: Revision, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata});
    watch_line("BOOKMARK", &output::value_bytes(&obj))
}

fn error_line(err: &ApiError) -> Bytes {
    watch_line("ERROR", &output::value_bytes(&err.status()))
}

pub async fn watch(state: &Arc<ApiState>, kind: &Kind, req: &ApiRequest) -> Result<Response, ApiError> {
    let params = &req.params;
    let selector = selector(kind, params)?;
    let prefix = req
        .info
        .namespace
        .as_deref()
        .map(|ns| format!("{ns}/"))
        .unwrap_or_default();
    let send_initial = params.send_initial_events == Some(true);
    let from = match params.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(_) if send_initial => None,
        Some(rv) => Some(parse_rv(rv)?),
    };
    if let Some(rv) = from
        && state.caches.revision() < rv
        && !state.caches.wait_for(rv, Duration::from_secs(3)).await
    {
        return Err(ApiError::TooLargeResourceVersion {
            requested: rv,
            current: state.caches.revision(),
        });
    }
    let cache = cache_of(state, kind)?.clone();
    let filter = Filter {
        prefix,
        selector,
        output: req.output,
    };
    let timeout = params
        .timeout_seconds
        .filter(|&t| t > 0) // 0, like absent, means the server's default
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = params.allow_watch_bookmarks;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let kind_index = state.registry.index_of(kind);
    let state = state.clone();
    let trigger = cache
        .trigger_field()
        .and_then(|f| filter.selector.fields.exact(f))
        .map(String::from);
    let subscription = match cache.subscribe(from, &filter.prefix, trigger.as_deref()) {
        Ok(s) => Some(s),
        Err(too_old) => {
            let err = ApiError::Expired {
                requested: too_old.requested,
                oldest: too_old.oldest,
            };
            let _ = tx.try_send(Ok(error_line(&err)));
            None
        }
    };
    if let Some(sub) = subscription {
        tokio::spawn(async move {
            let kind = &state.registry.kinds()[kind_index];
            let watcher = Watcher {
                trigger: trigger.as_deref(),
                kind,
                cache: &cache,
                filter: &filter,
                tx: &tx,
            };
            watcher.run(sub, send_initial, bookmarks, timeout).await;
        });
    }
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

struct Watcher<'a> {
    trigger: Option<&'a str>,
    kind: &'a Kind,
    cache: &'a Arc<ResourceCache>,
    filter: &'a Filter,
    tx: &'a mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Watcher<'_> {
    /// Sends one line; false once the client has gone.
    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(Ok(line)).await.is_ok()
    }

    async fn run(
        &self,
        sub: crate::cache::Subscription,
        send_initial: bool,
        bookmarks: bool,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rv = sub.revision;
        for event in &sub.initial {
            if let Some(line) = self.filter.encode(self.kind, event)
                && !self.send(line).await
            {
                return;
            }
        }
        if send_initial && !self.send(bookmark(self.kind, sub.revision, true)).await {
            return;
        }
        let mut rx = sub.rx;
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if let Some(rv) = self.cache.bookmark_revision(&rx)
                        && rv > last_rv
                    {
                        last_rv = rv;
                        if !self.send(bookmark(self.kind, rv, false)).await {
                            return;
                        }
                    }
                    continue;
                }
            };
            match received {
                Ok(event) => {
                    last_rv = last_rv.max(event.rv);
                    if let Some(line) = self.filter.encode(self.kind, &event)
                        && !self.send(line).await
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the live feed: pick up again from the window after the last event sent.
                    match self.cache.subscribe(Some(last_rv), "", self.trigger) {
                        Ok(again) => {
                            for event in &again.initial {
                                last_rv = last_rv.max(event.rv);
                                if let Some(line) = self.filter.encode(self.kind, event)
                                    && !self.send(line).await
                                {
                                    return;
                                }
                            }
                            rx = again.rx;
                        }
                        Err(too_old) => {
                            let err = ApiError::Expired {
                                requested: too_old.requested,
                                oldest: too_old.oldest,
                            };
                            let _ = self.send(error_line(&err)).await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CachedObject;
    use crate::registry::Registry;
    use crate::selectors::LabelSelector;
    use serde_json::Value;

    fn obj(name: &str, rv: Revision, app: &str) -> Arc<CachedObject> {
        let stored = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": app}}}))
        .unwrap();
        Arc::new(CachedObject::from_stored(format!("ns/{name}"), &stored, rv).unwrap())
    }

    fn event(kind: EventType, object: Arc<CachedObject>, prev: Option<Arc<CachedObject>>) -> CachedEvent {
        let line = watch_line(kind.as_str(), &object.json);
        CachedEvent {
            kind,
            rv: object.rv,
            object,
            prev,
            line,
        }
    }

    fn ty(line: Option<Bytes>) -> Option<String> {
        line.map(|l| {
            serde_json::from_slice::<Value>(&l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let registry = Registry::builtin();
        let pods = registry.get("", "v1", "pods").unwrap();
        let f = Filter {
            prefix: "ns/".into(),
            selector: Selector {
                labels: LabelSelector::parse("app=web").unwrap(),
                ..Default::default()
            },
            output: Output::Object,
        };
        let web1 = obj("a", 1, "web");
        let db2 = obj("a", 2, "db");
        let web3 = obj("a", 3, "web");
        assert_eq!(
            ty(f.encode(pods, &event(EventType::Added, web1.clone(), None))).as_deref(),
            Some("ADDED")
        );
        assert_eq!(
            ty(f.encode(pods, &event(EventType::Modified, db2.clone(), Some(web1.clone())))).as_deref(),
            Some("DELETED")
        );
        assert_eq!(
            ty(f.encode(pods, &event(EventType::Modified, web3.clone(), Some(db2.clone())))).as_deref(),
            Some("ADDED")
        );
        assert_eq!(
            ty(f.encode(pods, &event(EventType::Modified, web3.clone(), Some(web1)))).as_deref(),
            Some("MODIFIED")
        );
        assert_eq!(f.encode(pods, &event(EventType::Added, db2.clone(), None)), None);
        assert_eq!(
            ty(f.encode(pods, &event(EventType::Deleted, web3.clone(), Some(web3.clone())))).as_deref(),
            Some("DELETED")
        );

        let other_ns = Filter {
            prefix: "other/".into(),
            selector: Selector::default(),
            output: Output::Object,
        };
        assert_eq!(other_ns.encode(pods, &event(EventType::Added, web3, None)), None);
    }

    #[test]
    fn table_events_are_one_row_tables() {
        let registry = Registry::builtin();
        let pods = registry.get("", "v1", "pods").unwrap();
        let f = Filter {
            prefix: String::new(),
            selector: Selector::default(),
            output: Output::Table(crate::request::IncludeObject::Metadata),
        };
        let line = f
            .encode(pods, &event(EventType::Added, obj("a", 1, "web"), None))
            .unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["object"]["kind"], "Table");
        assert_eq!(v["object"]["rows"].as_array().unwrap().len(), 1);
        assert_eq!(v["object"]["rows"][0]["cells"][0], "a");
        let b: Value = serde_json::from_slice(&bookmark(pods, 7, true)).unwrap();
        assert_eq!(b["type"], "BOOKMARK");
        assert_eq!(b["object"]["metadata"]["resourceVersion"], "7");
        assert_eq!(b["object"]["kind"], "Pod");
    }
}
