//! A fresh store for one test: SQLite in its own temp dir, or a real etcd member of its own (so that one
//! test's compaction or revision counting never sees another's writes). Keys go under a per-test prefix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkube_store::etcd::{ETCD_DEFAULT_MAX_REQUEST_BYTES, EtcdBackend, EtcdOptions};
use rkube_store::sqlite::{SqliteBackend, SqliteOptions};
use rkube_store::testing::EtcdServer;
use rkube_store::{Backend, MAX_VALUE_SIZE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Etcd,
}

/// One test's store, and what the test needs to know about its backend.
pub struct TestStore {
    pub backend: Arc<dyn Backend>,
    pub kind: Kind,
    pub prefix: String,
    /// The `limit` a [`rkube_store::Error::ValueTooLarge`] reports.
    pub value_limit: usize,
    /// A value this large must be accepted (etcd's limit is on the whole request, so it is lower there).
    pub largest_accepted_value: usize,
    /// How long a full watch buffer may stay full before the backend cuts the watcher off.
    pub slow_watcher_grace: Duration,
    /// Declared after `backend`, so the backend is dropped first.
    dir: Option<tempfile::TempDir>,
    etcd: Option<EtcdServer>,
}

impl TestStore {
    pub async fn sqlite(test: &str) -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("rkube-store-test-")
            .tempdir()
            .expect("temp dir");
        // A small in-memory event ring, so that watches starting in the past also take the read-from-disk
        // path and its hand-over to live events (the default ring holds 16k events, more than tests write).
        let options = SqliteOptions {
            history_window: 256,
            ..SqliteOptions::default()
        };
        let backend = SqliteBackend::open(&dir.path().join("store.db"), options)
            .await
            .expect("open sqlite store");
        TestStore {
            backend: Arc::new(backend),
            kind: Kind::Sqlite,
            prefix: format!("/conformance/{test}/"),
            value_limit: MAX_VALUE_SIZE,
            largest_accepted_value: MAX_VALUE_SIZE,
            slow_watcher_grace: Duration::ZERO,
            dir: Some(dir),
            etcd: None,
        }
    }

    pub async fn etcd(test: &str) -> TestStore {
        let server = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .expect("etcd start task")
            .expect("start etcd");
        let backend = EtcdBackend::connect(&[server.endpoint()])
            .await
            .expect("connect to etcd");
        TestStore {
            backend: Arc::new(backend),
            kind: Kind::Etcd,
            prefix: format!("/conformance/{test}/"),
            value_limit: ETCD_DEFAULT_MAX_REQUEST_BYTES,
            largest_accepted_value: 1024 * 1024,
            slow_watcher_grace: EtcdOptions::default().slow_watcher_grace,
            dir: None,
            etcd: Some(server),
        }
    }

    pub fn store(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// `name` under this test's prefix.
    pub fn key(&self, name: &str) -> Bytes {
        Bytes::from(format!("{}{name}", self.prefix))
    }

    /// A sub-prefix of this test's prefix (ending in `/`).
    pub fn sub_prefix(&self, name: &str) -> Bytes {
        Bytes::from(format!("{}{name}/", self.prefix))
    }
}

/// Waits for `condition` to hold, polling, up to `timeout`; panics with `what` when it never does.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
