//! A three-member etcd cluster on loopback: writes through every member keep their guarantees when the
//! leader is SIGKILLed under load, a watch carries on across the failover without gaps or repeats, and
//! guarded read-modify-write through different members is linearizable.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rkube_store::etcd::EtcdBackend;
use rkube_store::testing::EtcdCluster;
use rkube_store::{Backend, Revision, WatchMessage, WatchRequest};
use support::backends::wait_until;
use support::child::Ack;
use support::history::RecordingClient;
use support::linearizability::{self, Outcome};
use support::load::{acked_at_least, assert_all_readable, spawn_writers};

async fn start_cluster() -> EtcdCluster {
    tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("start a 3-member cluster")
}

/// One client per member, and a last one that knows every member and may fail over.
async fn clients(endpoints: &[String]) -> Vec<Arc<dyn Backend>> {
    let mut stores: Vec<Arc<dyn Backend>> = Vec::new();
    for endpoint in endpoints {
        stores.push(Arc::new(
            EtcdBackend::connect(std::slice::from_ref(endpoint))
                .await
                .unwrap(),
        ));
    }
    stores.push(Arc::new(EtcdBackend::connect(endpoints).await.unwrap()));
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_and_a_watch_survive_the_leader_dying() {
    let mut cluster = start_cluster().await;
    let endpoints = cluster.endpoints();
    let stores = clients(&endpoints).await;
    let failover_client = stores.last().unwrap().clone();
    let start = failover_client.current_revision().await.unwrap() + 1;
    let mut watch = failover_client
        .watch(WatchRequest {
            prefix: Bytes::from_static(b"/durable/"),
            start_revision: start,
            progress_interval: None,
        })
        .await
        .unwrap();
    // The watch is read all along, so that its resume after the failover is what gets tested.
    let seen: Arc<Mutex<Vec<Revision>>> = Arc::default();
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(message) = watch.next().await {
                match message {
                    Ok(WatchMessage::Events(events)) => seen
                        .lock()
                        .unwrap()
                        .extend(events.iter().map(|e| e.kv.mod_revision)),
                    Ok(WatchMessage::Progress(_)) => {}
                    Err(e) => return e,
                }
            }
            panic!("the watch ended without an error");
        })
    };

    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let writers = spawn_writers(&stores, 3, &stop, &acked);
    acked_at_least(&acked, 300, "300 writes were acknowledged").await;
    let leader = cluster.leader_index().await.expect("a leader");
    cluster.kill_member(leader).expect("kill the leader");
    let at_kill = acked.load(Ordering::Relaxed);
    acked_at_least(
        &acked,
        at_kill + 300,
        "the cluster took writes again after losing its leader",
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let acks: Vec<Ack> = writers.join_all().await.into_iter().flatten().collect();

    let survivors: Vec<String> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e.clone())
        .collect();
    let reader = EtcdBackend::connect(&survivors).await.unwrap();
    assert_all_readable(&reader, &acks).await;
    assert_ne!(cluster.leader_index().await.expect("a new leader"), leader);

    // The watch saw every acknowledged write once, in order — across the failover. (Writes that failed
    // may or may not appear.) Only the writers wrote, so the last revision is an event under the prefix.
    let last_write = reader.current_revision().await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "the watch reached the last write",
        || {
            let (seen, finished) = (seen.clone(), watcher.is_finished());
            async move { finished || seen.lock().unwrap().last() >= Some(&last_write) }
        },
    )
    .await;
    if watcher.is_finished() {
        panic!("the watch failed across the failover: {}", watcher.await.unwrap());
    }
    watcher.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "the watch repeated or reordered events"
    );
    let delivered: std::collections::HashSet<Revision> = seen.into_iter().collect();
    let missing: Vec<&Ack> = acks.iter().filter(|a| !delivered.contains(&a.revision)).collect();
    assert!(
        missing.is_empty(),
        "the watch skipped {} acknowledged writes, e.g. {:?}",
        missing.len(),
        missing[0]
    );
}

/// Guarded read-modify-write by 12 clients spread over the three members (reads served by followers
/// too): the history must be linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guarded_read_modify_write_through_every_member_is_linearizable() {
    let cluster = start_cluster().await;
    let stores = clients(&cluster.endpoints()).await;
    let epoch = Instant::now();
    let keys: Arc<Vec<String>> = Arc::new((0..3).map(|k| format!("/lin/{k}")).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..12 {
        let (store, keys) = (stores[id % 3].clone(), keys.clone());
        tasks.spawn(async move {
            let mut client = RecordingClient::new(id, store, epoch);
            let mut rng = StdRng::seed_from_u64(id as u64);
            let mut next_value = id as u64 * 1_000_000;
            for _ in 0..25 {
                let key = &keys[rng.random_range(0..keys.len())];
                let mut seen = client.get(key).await;
                for _attempt in 0..5 {
                    next_value += 1;
                    let outcome = match seen {
                        None => client.create(key, next_value).await,
                        Some(v) if rng.random_bool(0.15) => client.delete(key, Some(v.mod_revision)).await,
                        Some(v) => client.update(key, next_value, v.mod_revision).await,
                    };
                    match outcome {
                        Outcome::Conflict { current } => seen = current,
                        _ => break,
                    }
                }
            }
            client.history
        });
    }
    let history: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    let conflicts = history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Conflict { .. }))
        .count();
    assert!(
        conflicts > 0,
        "the clients never contended; the test proves nothing"
    );
    if let Err(violation) = linearizability::check(&history) {
        panic!(
            "not linearizable ({} operations, {conflicts} conflicts): {violation}",
            history.len()
        );
    }
}
