//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`: several replicas
//! of a component share one datastore and exactly one of them acts at a time.
//!
//! ```no_run
//! # async fn demo(client: kube::Client, shutdown: impl std::future::Future<Output = ()>) {
//! use rkube_scheduler::leader::{Ended, LeaderElector, LeaseConfig};
//! let elector = LeaderElector::new(client, LeaseConfig::new("kube-system", "my-controller", "host-a"));
//! let ended = elector
//!     .run(shutdown, |mut leading| async move {
//!         // do the work until leadership is lost (or shutdown is requested)
//!         leading.lost().await;
//!     })
//!     .await;
//! assert!(matches!(ended, Ended::Shutdown(_) | Ended::Lost(_) | Ended::Finished(_)));
//! # }
//! ```
//!
//! Expiry is judged from the Lease's `renewTime` against this host's clock (replicas are expected to run on
//! hosts with synchronised clocks), and all writes are optimistic (`resourceVersion`), so two candidates
//! can never both believe they took the same expired lease.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Errors talking to the API server about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server rejected or failed a Lease request.
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Which Lease to hold, as whom, and client-go's timings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's unique identity (e.g. host name + a random suffix).
    pub identity: String,
    /// How long a lease stays valid after its last renewal (client-go default 15 s).
    pub lease_duration: Duration,
    /// The leader gives up if it could not renew for this long (10 s).
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews (2 s).
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the Lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease yet: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a valid lease.
    Follow { holder: String },
}

/// The pure rule: who may write the lease at `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else { return Decision::Create };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let expired = match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        None => true,
        Some(MicroTime(t)) => t.as_second() + duration < now.as_second(),
    };
    if expired {
        Decision::TakeOver
    } else {
        Decision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// A handle given to the leader's work: tells it when leadership ends.
#[derive(Clone, Debug)]
pub struct Leading {
    rx: watch::Receiver<bool>,
}

impl Leading {
    /// Resolves when leadership is lost or shutdown was requested; the work should then stop promptly.
    pub async fn lost(&mut self) {
        let _ = self.rx.wait_for(|leading| !leading).await;
    }

    pub fn is_leading(&self) -> bool {
        *self.rx.borrow()
    }
}

/// How [`LeaderElector::run`] ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// Shutdown was requested (the work's result if it had started). The lease was released.
    Shutdown(Option<T>),
    /// The lease could not be renewed or was taken over; the work was stopped.
    Lost(T),
    /// The work returned on its own while leading. The lease was released.
    Finished(T),
}

/// Campaigns for, holds and renews one Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    /// One round: read the Lease and create, renew or take it over if allowed. `Ok(true)` = we hold it now.
    /// A lost write race (409) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.err(e))?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            now,
        );
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (decision, current) {
            (Decision::Follow { .. }, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::TakeOver {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(MicroTime(now));
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Gives the lease up if we hold it, so another candidate can take over at once.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Campaigns until this candidate leads, then runs `lead` while renewing every `retry_period`.
    /// Leadership ends when a renewal is refused (someone else holds the lease), when renewals keep failing
    /// for `renew_deadline`, on shutdown, or when `lead` returns. `lead` is told through [`Leading`] and
    /// awaited before this returns, so its work has stopped by then.
    pub async fn run<F, Fut, T>(&self, shutdown: impl Future<Output = ()>, lead: F) -> Ended<T>
    where
        F: FnOnce(Leading) -> Fut,
        Fut: Future<Output = T>,
    {
        let cfg = &self.config;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ended::Shutdown(None),
                r = self.try_acquire_or_renew() => match r {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "leader election: acquiring failed"),
                },
            }
            tokio::select! {
                _ = &mut shutdown => return Ended::Shutdown(None),
                _ = tokio::time::sleep(cfg.retry_period) => {}
            }
        }
        tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "became leader");
        let (tx, rx) = watch::channel(true);
        let work = lead(Leading { rx });
        tokio::pin!(work);
        let mut last_renewed = tokio::time::Instant::now();
        enum Why {
            Shutdown,
            Lost,
        }
        let why = loop {
            tokio::select! {
                out = &mut work => {
                    if let Err(e) = self.release().await {
                        tracing::warn!(error = %e, "leader election: release failed");
                    }
                    return Ended::Finished(out);
                }
                _ = &mut shutdown => break Why::Shutdown,
                _ = tokio::time::sleep(cfg.retry_period) => {
                    let renewal = tokio::time::timeout(cfg.renew_deadline, self.try_acquire_or_renew()).await;
                    match renewal {
                        Ok(Ok(true)) => last_renewed = tokio::time::Instant::now(),
                        Ok(Ok(false)) => break Why::Lost,
                        Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewal failed"),
                        Err(_) => tracing::warn!("leader election: renewal timed out"),
                    }
                    if last_renewed.elapsed() > cfg.renew_deadline {
                        break Why::Lost;
                    }
                }
            }
        };
        let _ = tx.send(false);
        let out = work.await;
        match why {
            Why::Shutdown => {
                if let Err(e) = self.release().await {
                    tracing::warn!(error = %e, "leader election: release failed");
                }
                Ended::Shutdown(Some(out))
            }
            Why::Lost => {
                tracing::warn!(identity = %cfg.identity, "lost leadership");
                Ended::Lost(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now = Timestamp::now().as_second();
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            renew_time: Some(MicroTime(Timestamp::from_second(now - renewed_secs_ago).unwrap())),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions_follow_client_go() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "me", now), Decision::Create);
        assert_eq!(
            decide(Some(&spec(Some("me"), 100, 15)), "me", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), 5, 15)), "me", now),
            Decision::Follow {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&spec(Some("other"), 20, 15)), "me", now),
            Decision::TakeOver,
            "expired"
        );
        assert_eq!(
            decide(Some(&spec(None, 0, 15)), "me", now),
            Decision::TakeOver,
            "released"
        );
        assert_eq!(decide(Some(&LeaseSpec::default()), "me", now), Decision::TakeOver);
    }
}
