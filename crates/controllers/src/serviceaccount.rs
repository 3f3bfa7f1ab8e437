//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount; it is created when
//! the namespace appears and re-created if deleted. The pure step is [`missing_accounts`].

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::informer::Change;
use crate::workqueue::{Requeue, WorkQueue, run_workers};
use crate::{Context, ControllerFuture, Error};

const NAME: &str = "serviceaccount-controller";
/// The accounts every namespace gets (kube-controller-manager's `--service-account-names` default).
pub const DEFAULT_ACCOUNTS: &[&str] = &["default"];

pub fn start(ctx: Context) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// The accounts to create in `ns`: none while it terminates (the API server would refuse), else those of
/// [`DEFAULT_ACCOUNTS`] that `exists` says are missing.
pub fn missing_accounts(ns: &Namespace, exists: impl Fn(&str) -> bool) -> Vec<&'static str> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Vec::new();
    }
    DEFAULT_ACCOUNTS.iter().copied().filter(|a| !exists(a)).collect()
}

struct Shell {
    client: Client,
    namespaces: Store<Namespace>,
    accounts: Store<ServiceAccount>,
}

async fn run(ctx: Context) -> Result<(), Error> {
    let ns_informer = ctx.informers.get::<Namespace>();
    let sa_informer = ctx.informers.get::<ServiceAccount>();
    ns_informer.wait_synced().await;
    sa_informer.wait_synced().await;
    let shell = Arc::new(Shell {
        client: ctx.client.clone(),
        namespaces: ns_informer.store().clone(),
        accounts: sa_informer.store().clone(),
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
    sa_informer.add_handler({
        let queue = queue.clone();
        move |c: &Change<ServiceAccount>| {
            let sa = c.latest();
            if c.new.is_none() && DEFAULT_ACCOUNTS.contains(&sa.metadata.name.as_deref().unwrap_or("")) {
                queue.add(sa.metadata.namespace.clone().unwrap_or_default());
            }
        }
    });
    let worker = shell.clone();
    run_workers(queue, ctx.options.workers, NAME, move |ns| {
        let shell = worker.clone();
        async move { shell.sync(&ns).await }
    })
    .await;
    Err(Error::ControllerStopped("serviceaccount"))
}

impl Shell {
    async fn sync(&self, ns_name: &str) -> Result<Requeue, Error> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(ns_name)) else {
            return Ok(None);
        };
        let exists = |name: &str| self.accounts.get(&ObjectRef::new(name).within(ns_name)).is_some();
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns_name);
        for name in missing_accounts(&ns, exists) {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns_name.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                // Already there (our cache lagged), or the namespace started terminating meanwhile.
                Err(kube::Error::Api(s)) if matches!(s.code, 409 | 403 | 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

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

    #[test]
    fn an_active_namespace_without_default_gets_one() {
        assert_eq!(missing_accounts(&ns("Active"), |_| false), ["default"]);
        assert!(missing_accounts(&ns("Active"), |a| a == "default").is_empty());
    }

    #[test]
    fn a_terminating_namespace_gets_nothing() {
        assert!(missing_accounts(&ns("Terminating"), |_| false).is_empty());
    }
}
