//! The rkube controller manager: Kubernetes' workload controllers, talking to the API server only through its
//! HTTP API (kube-rs), leader-elected so several servers can share one datastore.
//!
//! Start reading at [`run`]. Each controller is one module with a pure step (`sync.rs`: objects in, plan out —
//! where the unit tests are) and a thin shell (`mod.rs`: informer handlers that enqueue keys, a worker that
//! executes the plan). Shared pieces: [`informer`] (each resource watched once), [`workqueue`], [`events`]
//! (aggregating recorder), [`expectations`], [`claim`] (adoption/release), [`leader`].
//!
//! Adding a controller: write `src/<name>/` with `pub fn start(ctx: Context) -> ControllerFuture`, then add one
//! line to [`CONTROLLERS`].

pub mod claim;
pub mod cluster;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod events;
pub mod expectations;
pub mod garbagecollector;
pub mod informer;
pub mod leader;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod pod;
pub mod podgc;
pub mod replicaset;
pub mod rootcacert;
pub mod serviceaccount;
pub mod servicelb;
pub mod workqueue;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kube::Client;

use crate::events::EventRecorder;
use crate::informer::SharedInformers;
use crate::leader::{LeaderElectionConfig, LeaderElector};

/// Errors of the controller manager and its controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// A controller stopped although it should run until shutdown.
    #[error("controller {0} stopped unexpectedly")]
    ControllerStopped(&'static str),
    /// `--controllers` named a controller that does not exist.
    #[error("unknown controller {0:?} (known: {1})")]
    UnknownController(String, String),
}

/// A running controller: resolves only if it fails.
pub type ControllerFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// Starts one controller.
pub type StartController = fn(Context) -> ControllerFuture;

/// Every controller, by the name `--controllers` uses. Adding a controller is one line here.
pub const CONTROLLERS: &[(&str, StartController)] = &[
    ("deployment", deployment::start),
    ("replicaset", replicaset::start),
    ("endpointslice", endpointslice::start),
    ("endpoint", endpointslice::start_endpoints),
    ("garbagecollector", garbagecollector::start),
    ("namespace", namespace::start),
    ("serviceaccount", serviceaccount::start),
    ("nodeipam", nodeipam::start),
    ("nodelifecycle", nodelifecycle::start),
    ("podgc", podgc::start),
    ("daemonset", daemonset::start),
    ("servicelb", servicelb::start),
    ("root-ca-cert-publisher", rootcacert::start),
];

/// What every controller gets: the client, the shared informers and an event recorder.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub informers: Arc<SharedInformers>,
    pub recorder: EventRecorder,
    pub options: Arc<ControllerOptions>,
}

/// How the controller manager runs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Like kube-controller-manager's `--controllers`: `*` = all, `name` enables, `-name` disables.
    pub controllers: Vec<String>,
    /// Concurrent syncs per controller.
    pub workers: usize,
    /// Leader election on the Lease `kube-system/rkube-controller-manager`; off runs the controllers at once.
    pub leader_election: bool,
    /// This process's identity in the Lease (unique per server).
    pub identity: String,
    pub lease_namespace: String,
    pub lease_name: String,
    pub lease_duration: std::time::Duration,
    pub renew_deadline: std::time::Duration,
    pub retry_period: std::time::Duration,
    /// Settings of the cluster-level controllers (pod CIDRs, node monitoring, pod GC).
    pub cluster: cluster::ClusterOptions,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "rkube".into());
        ControllerOptions {
            controllers: vec!["*".into()],
            workers: 5,
            leader_election: true,
            identity: format!("{host}_{}", std::process::id()),
            lease_namespace: "kube-system".into(),
            lease_name: "rkube-controller-manager".into(),
            lease_duration: std::time::Duration::from_secs(15),
            renew_deadline: std::time::Duration::from_secs(10),
            retry_period: std::time::Duration::from_secs(2),
            cluster: cluster::ClusterOptions::default(),
        }
    }
}

impl ControllerOptions {
    /// Whether `name` runs under these options.
    pub fn enabled(&self, name: &str) -> bool {
        if self.controllers.iter().any(|c| c == &format!("-{name}")) {
            return false;
        }
        self.controllers.iter().any(|c| c == "*" || c == name)
    }

    fn check(&self) -> Result<(), Error> {
        let known: Vec<&str> = CONTROLLERS.iter().map(|(n, _)| *n).collect();
        for c in &self.controllers {
            let name = c.trim_start_matches('-');
            if name != "*" && !known.contains(&name) {
                return Err(Error::UnknownController(c.clone(), known.join(", ")));
            }
        }
        Ok(())
    }
}

/// Run the controller manager until `shutdown` resolves: wait for the leader lease (if enabled), then run every
/// enabled controller over one set of shared informers. Losing the lease stops the controllers (and their
/// watches) and goes back to waiting for it.
pub async fn run(
    client: Client,
    options: ControllerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    options.check()?;
    let options = Arc::new(options);
    if !options.leader_election {
        tokio::select! {
            r = run_controllers(client, options) => return r,
            _ = shutdown => return Ok(()),
        }
    }
    let config = LeaderElectionConfig {
        lease_duration: options.lease_duration,
        renew_deadline: options.renew_deadline,
        retry_period: options.retry_period,
        ..LeaderElectionConfig::new(&options.lease_namespace, &options.lease_name, &options.identity)
    };
    let mut elector = LeaderElector::new(client.clone(), config);
    let lead = || run_controllers(client.clone(), options.clone());
    elector.run(lead, shutdown).await.unwrap_or(Ok(()))
}

/// Start every enabled controller; resolves only when one fails (dropping it stops them all).
async fn run_controllers(client: Client, options: Arc<ControllerOptions>) -> Result<(), Error> {
    let ctx = Context {
        informers: Arc::new(SharedInformers::new(client.clone())),
        recorder: EventRecorder::new(client.clone(), "controller-manager"),
        client,
        options: options.clone(),
    };
    let mut set = tokio::task::JoinSet::new();
    for (name, start) in CONTROLLERS {
        if options.enabled(name) {
            tracing::info!(controller = name, "starting controller");
            let fut = start(ctx.clone());
            set.spawn(async move { (*name, fut.await) });
        }
    }
    match set.join_next().await {
        Some(Ok((_, Err(e)))) => Err(e),
        Some(Ok((name, Ok(())))) => Err(Error::ControllerStopped(name)),
        Some(Err(_)) => Err(Error::ControllerStopped("(panicked)")),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag_enables_and_disables() {
        let mut o = ControllerOptions::default();
        assert!(o.enabled("deployment") && o.enabled("replicaset"));
        o.controllers = vec!["*".into(), "-deployment".into()];
        assert!(!o.enabled("deployment") && o.enabled("replicaset"));
        o.controllers = vec!["replicaset".into()];
        assert!(!o.enabled("deployment") && o.enabled("replicaset"));
        o.controllers = vec!["nope".into()];
        assert!(matches!(o.check(), Err(Error::UnknownController(..))));
    }
}
