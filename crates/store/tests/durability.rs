//! Durability: an acknowledged write survives the death of whatever acknowledged it.
//!
//! - Embedded store: a child process (this test binary re-executed, running the ignored
//!   [`durability_child`] test) writes under load and prints every acknowledged write; the parent SIGKILLs
//!   it mid-stream, reopens the database and checks every acknowledged write and that the revision never
//!   went backwards. Three rounds on the same file.
//! - etcd: a single member SIGKILLed and restarted under load; every acknowledged write must be readable
//!   afterwards (a write that failed may or may not have happened). The cluster case is in
//!   `etcd_cluster.rs`.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use rkube_store::etcd::EtcdBackend;
use rkube_store::sqlite::{SqliteBackend, SqliteOptions};
use rkube_store::testing::EtcdServer;
use rkube_store::{Backend, Revision, WriteResult};
use support::child::{Ack, assert_acknowledged_writes_present, run_child, write_and_report};
use support::load::{acked_at_least, assert_all_readable, spawn_writers};

/// Carries the database path to the child; its absence makes [`durability_child`] a no-op.
const CHILD_DB: &str = "RKUBE_DURABILITY_CHILD_DB";
/// Makes each round's keys distinct.
const CHILD_ROUND: &str = "RKUBE_DURABILITY_CHILD_ROUND";

#[test]
#[ignore = "the child process of sqlite_acknowledged_writes_survive_sigkill; started by it"]
fn durability_child() {
    let Ok(path) = std::env::var(CHILD_DB) else { return };
    let round = std::env::var(CHILD_ROUND).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SqliteBackend::open(Path::new(&path), SqliteOptions::default())
            .await
            .expect("child: open");
        write_and_report(Arc::new(store), &round).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut all_acks: Vec<Ack> = Vec::new();
    let mut floor: Revision = 0;
    for round in 0..3 {
        let env = [
            (CHILD_DB, path.display().to_string()),
            (CHILD_ROUND, round.to_string()),
        ];
        let run = tokio::task::spawn_blocking(move || {
            run_child("durability_child", &env, |acks, _| acks.len() >= 1500)
        })
        .await
        .unwrap();
        assert!(
            run.killed,
            "the child exited ({}) early: {:?}",
            run.status, run.errors
        );
        assert_eq!(
            run.status.signal(),
            Some(9),
            "the child died of SIGKILL, not on its own"
        );
        assert!(
            run.errors.is_empty(),
            "writes failed in the child: {:?}",
            run.errors
        );
        all_acks.extend(run.acks);

        let store = SqliteBackend::open(&path, SqliteOptions::default())
            .await
            .expect("reopen after SIGKILL");
        let current = assert_acknowledged_writes_present(&store, &all_acks).await;
        assert!(
            current >= floor,
            "round {round}: revision went backwards from {floor} to {current}"
        );
        // The store goes on from where it was.
        let result = store
            .create(format!("/after/{round}").as_bytes(), Bytes::from_static(b"x"))
            .await;
        match result.unwrap() {
            WriteResult::Done { revision, .. } => assert_eq!(revision, current + 1),
            WriteResult::Conflict { current } => panic!("fresh key exists: {current:?}"),
        }
        floor = current + 1;
    }
    assert!(all_acks.len() >= 4500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_member_sigkilled_and_restarted_keeps_acknowledged_writes() {
    let mut server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap()
        .expect("start etcd");
    let store: Arc<dyn Backend> = Arc::new(EtcdBackend::connect(&[server.endpoint()]).await.unwrap());
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let writers = spawn_writers(std::slice::from_ref(&store), 8, &stop, &acked);
    acked_at_least(&acked, 300, "300 writes were acknowledged").await;
    server.kill();
    let server = tokio::task::spawn_blocking(move || server.restart().map(|()| server))
        .await
        .unwrap()
        .expect("restart etcd");
    let at_restart = acked.load(Ordering::Relaxed);
    acked_at_least(&acked, at_restart + 100, "writes went on after the restart").await;
    stop.store(true, Ordering::Relaxed);
    let acks: Vec<Ack> = writers.join_all().await.into_iter().flatten().collect();
    let reader = EtcdBackend::connect(&[server.endpoint()]).await.unwrap();
    assert_all_readable(&reader, &acks).await;
}
