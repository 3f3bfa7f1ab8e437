//! Leader election on a `coordination.k8s.io/v1` Lease (client-go's `leaderelection` with a `LeaseLock`): one
//! process at a time holds the lease and runs the controllers; the others retry until it expires.
//!
//! [`decide`] is the pure rule (acquire, renew, take over an expired lease, or wait); [`LeaderElector`] applies
//! it with optimistic-concurrency writes. Expiry is judged by *this* process's clock from when it last saw the
//! lease change, so clocks of different machines never need to agree.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// Errors of one acquire/renew attempt.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server refused or failed a Lease request.
    #[error("lease request failed: {0}")]
    Api(#[from] kube::Error),
}

/// Where the lease lives and how long a holder keeps it.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process (e.g. hostname + random suffix).
    pub identity: String,
    /// How long others wait after the last renewal before taking over.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// kube-controller-manager's timings (15 s / 10 s / 2 s).
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What this process last saw of the lease, and when (its own clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    holder: String,
    renew_time: Option<Timestamp>,
    at: Instant,
}

/// The outcome of looking at the lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No lease yet: create it holding it.
    Create,
    /// We hold it: bump `renewTime`.
    Renew,
    /// Free or expired: take it over (`leaseTransitions` + 1).
    TakeOver,
    /// Someone else holds a live lease.
    Wait { holder: String },
}

/// Decide what to do with `lease` (None = absent). `observed` is updated when the lease changed since last time.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    observed: &mut Option<Observed>,
    lease_duration: Duration,
    now: Instant,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let renew_time = spec.renew_time.map(|t| t.0);
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let changed = observed
        .as_ref()
        .is_none_or(|o| o.holder != holder || o.renew_time != renew_time);
    if changed {
        *observed = Some(Observed {
            holder: holder.clone(),
            renew_time,
            at: now,
        });
    }
    let seen_at = observed.as_ref().map_or(now, |o| o.at);
    let duration = spec
        .lease_duration_seconds
        .map_or(lease_duration, |s| Duration::from_secs(s.max(1) as u64));
    if now.duration_since(seen_at) > duration {
        Decision::TakeOver
    } else {
        Decision::Wait { holder }
    }
}

/// Runs a future only while holding the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaderElectionConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// One acquire-or-renew attempt; `Ok(true)` when we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let current = self.api.get_opt(&self.config.name).await?;
        let decision = decide(
            current.as_ref(),
            &self.config.identity,
            &mut self.observed,
            self.config.lease_duration,
            Instant::now(),
        );
        let now = MicroTime(Timestamp::now());
        let seconds = self.config.lease_duration.as_secs().max(1) as i32;
        let result = match (decision, current) {
            (Decision::Wait { .. }, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if decision == Decision::TakeOver {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(now);
                // `lease.metadata.resourceVersion` makes this a compare-and-swap: a rival's write wins.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Renew | Decision::TakeOver, None) => {
                unreachable!("decide returns Create for a missing lease")
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Give the lease up so another process can take over at once (client-go's `ReleaseOnCancel`).
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    /// Wait for the lease, run `lead()` while renewing it, and start over when leadership is lost. Returns when
    /// `shutdown` resolves (releasing the lease if held) or when `lead()` itself returns while leading.
    pub async fn run<F, Fut, T>(&mut self, mut lead: F, shutdown: impl Future<Output = ()>) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
    {
        tokio::pin!(shutdown);
        loop {
            let acquired = async {
                loop {
                    match self.try_acquire_or_renew().await {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "leader election: cannot acquire lease"),
                    }
                    tokio::time::sleep(self.config.retry_period).await;
                }
            };
            tokio::select! {
                _ = acquired => {}
                _ = &mut shutdown => return None,
            }
            tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
            let leading = lead();
            tokio::pin!(leading);
            let mut last_renew = Instant::now();
            let outcome = loop {
                tokio::select! {
                    out = &mut leading => break Some(out),
                    _ = &mut shutdown => {
                        if let Err(e) = self.release().await {
                            tracing::warn!(error = %e, "leader election: cannot release lease");
                        }
                        return None;
                    }
                    _ = tokio::time::sleep(self.config.retry_period) => {
                        match self.try_acquire_or_renew().await {
                            Ok(true) => last_renew = Instant::now(),
                            Ok(false) => break None,
                            Err(e) => tracing::warn!(error = %e, "leader election: renew failed"),
                        }
                        if last_renew.elapsed() > self.config.renew_deadline {
                            break None;
                        }
                    }
                }
            };
            match outcome {
                Some(out) => {
                    let _ = self.release().await;
                    return Some(out);
                }
                None => {
                    tracing::warn!(identity = %self.config.identity, "lost leadership; stopping controllers")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renew_secs: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renew_secs).unwrap())),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn absent_free_and_own_leases() {
        let mut seen = None;
        let now = Instant::now();
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "me", &mut seen, d, now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("me"), 1)), "me", &mut seen, d, now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(None, 1)), "me", &mut seen, d, now),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_live_holder_keeps_the_lease_until_it_stops_renewing() {
        let mut seen = None;
        let t0 = Instant::now();
        let d = Duration::from_secs(15);
        let other = lease(Some("other"), 100);
        assert_eq!(
            decide(Some(&other), "me", &mut seen, d, t0),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&other), "me", &mut seen, d, t0 + Duration::from_secs(10)),
            Decision::Wait {
                holder: "other".into()
            }
        );
        // A renewal (first seen at t0+20s) restarts the clock from when it was seen.
        let renewed = lease(Some("other"), 110);
        assert_eq!(
            decide(Some(&renewed), "me", &mut seen, d, t0 + Duration::from_secs(20)),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&renewed), "me", &mut seen, d, t0 + Duration::from_secs(36)),
            Decision::TakeOver
        );
    }
}
