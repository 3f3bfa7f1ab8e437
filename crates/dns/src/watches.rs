//! The watches that keep the [`Index`](crate::index::Index) current: Namespaces, Services, EndpointSlices
//! and Pods, cluster-wide. A watch's (re)list replaces everything of its kind at once, so objects deleted
//! while a watch was down disappear too.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::index::{Kind, Object};
use crate::server::SharedIndex;

/// Start one watch task per kind; they run until aborted.
pub fn spawn_watches(client: Client, index: SharedIndex) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(watch_kind(
            Api::<Namespace>::all(client.clone()),
            Kind::Namespace,
            index.clone(),
        )),
        tokio::spawn(watch_kind(
            Api::<Service>::all(client.clone()),
            Kind::Service,
            index.clone(),
        )),
        tokio::spawn(watch_kind(
            Api::<EndpointSlice>::all(client.clone()),
            Kind::EndpointSlice,
            index.clone(),
        )),
        tokio::spawn(watch_kind(Api::<Pod>::all(client), Kind::Pod, index)),
    ]
}

async fn watch_kind<K>(api: Api<K>, kind: Kind, index: SharedIndex)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    for<'a> Object: From<&'a K>,
{
    let mut events = watcher(api).default_backoff().boxed();
    let mut listing = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(obj)) => listing.push(Object::from(&obj)),
            Ok(Event::InitDone) => index.write().replace(kind, std::mem::take(&mut listing)),
            Ok(Event::Apply(obj)) => index.write().apply(Object::from(&obj)),
            Ok(Event::Delete(obj)) => {
                let ns = obj.namespace().unwrap_or_default();
                index.write().delete(kind, &ns, &obj.name_any());
            }
            Err(error) => tracing::warn!(?kind, %error, "DNS watch failed; retrying"),
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
}
