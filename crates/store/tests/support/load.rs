//! Load that tolerates failures: writers of fresh keys whose acknowledged writes are collected, for tests
//! that kill store processes underneath them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rkube_store::{Backend, Revision, WriteResult};

use super::backends::wait_until;
use super::child::Ack;

/// Writers creating fresh keys through `store`s until `stop`; returns acknowledged (key, revision, value)
/// and counts acknowledgements in `acked`. Errors are expected while members die; those writes are
/// unknown, and never retried under the same key.
pub fn spawn_writers(
    stores: &[Arc<dyn Backend>],
    per_store: usize,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicUsize>,
) -> tokio::task::JoinSet<Vec<Ack>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (s, store) in stores.iter().enumerate() {
        for w in 0..per_store {
            let (store, stop, acked) = (store.clone(), stop.clone(), acked.clone());
            tasks.spawn(async move {
                let mut acks = Vec::new();
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("/durable/s{s}/w{w}/{i}");
                    let value = format!("v{s}-{w}-{i}");
                    let attempt = tokio::time::timeout(
                        Duration::from_secs(15),
                        store.create(key.as_bytes(), Bytes::from(value.clone())),
                    );
                    match attempt.await {
                        Ok(Ok(WriteResult::Done { revision, .. })) => {
                            acks.push(Ack { key, revision, value });
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Ok(WriteResult::Conflict { current })) => {
                            panic!("fresh key {key} exists: {current:?}")
                        }
                        Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                acks
            });
        }
    }
    tasks
}

pub async fn assert_all_readable(store: &dyn Backend, acks: &[Ack]) {
    let mut revisions: Vec<Revision> = acks.iter().map(|a| a.revision).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        acks.len(),
        "two acknowledged writes share a revision"
    );
    for ack in acks {
        let kv = store.get(ack.key.as_bytes(), 0).await.unwrap();
        let kv = kv.unwrap_or_else(|| panic!("acknowledged {ack:?} is missing"));
        assert_eq!(
            (kv.mod_revision, &kv.value[..]),
            (ack.revision, ack.value.as_bytes()),
            "{ack:?}"
        );
    }
}

pub async fn acked_at_least(acked: &Arc<AtomicUsize>, n: usize, what: &str) {
    wait_until(Duration::from_secs(60), what, || {
        let acked = acked.clone();
        async move { acked.load(Ordering::Relaxed) >= n }
    })
    .await;
}
