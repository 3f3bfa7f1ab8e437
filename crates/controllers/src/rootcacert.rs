//! The root CA publisher (kube-controller-manager's `root-ca-cert-publisher`): every active namespace has a
//! ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA, so pods can verify the API server (the
//! ServiceAccount admission projects it into every pod next to the token). It is created when the namespace
//! appears and put back when deleted or changed. The pure step is [`plan`].
//!
//! kube-controller-manager reads the CA from `--root-ca-file`; ours is the CA of the admin kubeconfig it
//! runs with, which the API server also serves at `GET /cacerts` — we ask for it there through the
//! controller manager's own client, so the controller needs no extra configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::informer::Change;
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};

const NAME: &str = "root-ca-cert-publisher";
/// The ConfigMap every namespace gets.
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
/// The key holding the CA bundle.
pub const KEY: &str = "ca.crt";
/// The annotation kube-controller-manager sets on the ConfigMap, with its text.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using \
     internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is \
     guaranteed across distributions of Kubernetes clusters.";

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// What to do about one namespace's ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Nothing,
    Create(ConfigMap),
    /// Replace the data (and add the annotation), keeping the rest of the object (resourceVersion included,
    /// so a concurrent change is a conflict and a retry).
    Update(ConfigMap),
}

/// The pure step: nothing in a terminating namespace, else create the ConfigMap or restore its data and
/// annotation (other labels and annotations users added are kept, as upstream).
pub fn plan(ns: &Namespace, existing: Option<&ConfigMap>, ca_pem: &str) -> Plan {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Plan::Nothing;
    }
    let data = BTreeMap::from([(KEY.to_string(), ca_pem.to_string())]);
    let Some(existing) = existing else {
        return Plan::Create(ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIG_MAP.into()),
                namespace: ns.metadata.name.clone(),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_string(),
                    DESCRIPTION.to_string(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        });
    };
    let annotated = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| d == DESCRIPTION);
    let binary_empty = existing.binary_data.as_ref().is_none_or(|b| b.is_empty());
    if existing.data.as_ref() == Some(&data) && binary_empty && annotated {
        return Plan::Nothing;
    }
    let mut cm = existing.clone();
    cm.data = Some(data);
    cm.binary_data = None;
    cm.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Plan::Update(cm)
}

struct Shell {
    client: Client,
    ca_pem: String,
    namespaces: Store<Namespace>,
    config_maps: Store<ConfigMap>,
}

/// The cluster CA from the API server's `/cacerts`, retried until the server answers.
async fn cluster_ca(client: &Client) -> String {
    let mut delay = Duration::from_millis(200);
    loop {
        let request = http::Request::get("/cacerts")
            .body(Vec::new())
            .expect("static request");
        match client.request_text(request).await {
            Ok(pem) if pem.contains("BEGIN CERTIFICATE") => return pem,
            Ok(_) => tracing::warn!(
                controller = NAME,
                "the API server's /cacerts holds no certificate"
            ),
            Err(e) => tracing::warn!(controller = NAME, error = %e, "cannot read the cluster CA; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn run(ctx: Context) -> Result<(), Error> {
    let ca_pem = cluster_ca(&ctx.client).await;
    let ns_informer = ctx.informers.get::<Namespace>();
    let cm_informer = ctx.informers.get::<ConfigMap>();
    ns_informer.wait_synced().await;
    cm_informer.wait_synced().await;
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        ca_pem,
        namespaces: ns_informer.store().clone(),
        config_maps: cm_informer.store().clone(),
    });
    let queue = WorkQueue::new();
    ns_informer.add_handler({
        let queue = queue.clone();
        move |c: &Change<Namespace>| {
            if let Some(ns) = &c.new {
                queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        }
    });
    cm_informer.add_handler({
        let queue = queue.clone();
        move |c: &Change<ConfigMap>| {
            let cm = c.latest();
            if cm.metadata.name.as_deref() == Some(CONFIG_MAP) {
                queue.add(cm.metadata.namespace.clone().unwrap_or_default());
            }
        }
    });
    // Namespaces listed before the handler was added.
    for ns in shell.namespaces.state() {
        queue.add(ns.metadata.name.clone().unwrap_or_default());
    }
    let worker = shell.clone();
    run_workers(queue, ctx.options.workers, NAME, move |ns| {
        let shell = worker.clone();
        async move { shell.sync(&ns).await }
    })
    .await;
    Err(Error::ControllerStopped("root-ca-cert-publisher"))
}

impl Shell {
    async fn sync(&self, ns_name: &str) -> Result<Requeue, Error> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(ns_name)) else {
            return Ok(None);
        };
        let existing = self.config_maps.get(&ObjectRef::new(CONFIG_MAP).within(ns_name));
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns_name);
        let result = match plan(&ns, existing.as_deref(), &self.ca_pem) {
            Plan::Nothing => return Ok(None),
            Plan::Create(cm) => api.create(&PostParams::default(), &cm).await.map(drop),
            Plan::Update(cm) => api
                .replace(CONFIG_MAP, &PostParams::default(), &cm)
                .await
                .map(drop),
        };
        match result {
            Ok(()) => Ok(None),
            // The namespace started terminating (403) or is gone (404): nothing to publish.
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404) => Ok(None),
            // Our cache lagged behind a create or change: the watch event brings the key back, and the
            // retry sees the current object.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some(Duration::from_millis(200))),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn ns(phase: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("team".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(NamespaceStatus {
                phase: Some(phase.into()),
                conditions: None,
            }),
        }
    }

    fn created() -> ConfigMap {
        match plan(&ns("Active"), None, CA) {
            Plan::Create(cm) => cm,
            other => panic!("expected a create, got {other:?}"),
        }
    }

    #[test]
    fn a_new_namespace_gets_the_ca_with_the_upstream_annotation() {
        let cm = created();
        assert_eq!(cm.metadata.name.as_deref(), Some("kube-root-ca.crt"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(cm.data.unwrap()["ca.crt"], CA);
        assert!(cm.metadata.annotations.unwrap()["kubernetes.io/description"].starts_with("Contains a CA"));
    }

    #[test]
    fn a_current_config_map_is_left_alone_and_a_changed_one_restored() {
        let current = created();
        assert_eq!(plan(&ns("Active"), Some(&current), CA), Plan::Nothing);

        let mut changed = current.clone();
        changed.data = Some(BTreeMap::from([
            ("ca.crt".into(), "junk".into()),
            ("x".into(), "y".into()),
        ]));
        changed
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("team/owner".into(), "me".into());
        let Plan::Update(restored) = plan(&ns("Active"), Some(&changed), CA) else {
            panic!("expected an update");
        };
        assert_eq!(restored.data, current.data);
        assert_eq!(
            restored.metadata.annotations.unwrap()["team/owner"],
            "me",
            "user annotations stay"
        );
    }

    #[test]
    fn a_terminating_namespace_gets_nothing() {
        assert_eq!(plan(&ns("Terminating"), None, CA), Plan::Nothing);
    }
}
