//! The embedded backend: SQLite in WAL mode with one group-committing writer.
//!
//! Where things are:
//! - `schema`: the file format, and how a file that is not ours is recognised and left alone;
//! - `writer`: the one writer thread — batches concurrent writes into one transaction and one fsync, checks
//!   each write's guard in order, then publishes the batch to watchers and answers its callers;
//! - `read`: point and range reads at any retained revision, on a small pool of reader connections;
//! - `watch`: in-process fan-out from the writer, a ring of recent events, catch-up from the log;
//! - `compact`: automatic compaction, WAL checkpoints and incremental vacuum, on their own thread.
//!
//! # Fault points
//! With the `failpoints` feature (the `fail` crate), these names can be configured by tests:
//! - `sqlite::before_commit` — after a batch is applied, before `COMMIT`: an error (`return`) rolls the whole
//!   batch back and fails every request in it; the revision does not move.
//! - `sqlite::after_commit` — after `COMMIT`, before callers are answered: the batch is durable and watchers
//!   see it, but every caller of the batch gets an error (the "acknowledgement lost" case).
//! - `sqlite::compact_batch` — before each compaction step removes rows; an error fails that step only (it
//!   runs in a savepoint of the writer's batch, so the client writes sharing the batch still commit) and
//!   compaction retries on its next round.
//!
//! `return` fails every store in the process; `return(TEXT)` only stores whose database path contains
//! `TEXT` (e.g. the test's temp dir name), so tests running in parallel do not disturb each other.

mod compact;
mod read;
mod schema;
mod watch;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use self::schema::Stored;
use self::watch::{Hub, Watcher};
use self::writer::{Guard, Request, WriteOp};
use crate::{
    Backend, Error, KeyValue, RangeRequest, RangeResponse, Result, Revision, Watch, WatchMessage,
    WatchRequest, WriteResult,
};

/// Tuning for the embedded backend. The defaults suit a server; tests shrink the windows and intervals.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How many recent events are kept in memory for watches that start slightly in the past (older starts
    /// read the log from disk first).
    pub history_window: usize,
    /// How many undelivered messages a watcher may have queued before it is cut off as too slow.
    pub watch_channel_capacity: usize,
    /// Automatic compaction keeps at least this much history.
    pub compaction_min_age: Duration,
    /// … and at least this many revisions.
    pub compaction_min_revisions: i64,
    /// How often automatic compaction runs.
    pub compaction_interval: Duration,
    /// How many revisions one compaction step covers (each step rides in one writer batch, so it is kept
    /// small to keep that batch short).
    pub compaction_batch: i64,
    /// The WAL is copied into the database file at least this often while anything is written (and after
    /// every 1000 revisions under load).
    pub checkpoint_interval: Duration,
    /// The most writes one transaction (one fsync) takes.
    pub max_batch: usize,
    /// The largest value accepted.
    pub value_limit: usize,
    /// How many reads run at once, each on its own connection (the rest wait their turn).
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            history_window: 16 * 1024,
            watch_channel_capacity: 1024,
            compaction_min_age: Duration::from_secs(5 * 60),
            compaction_min_revisions: 1000,
            compaction_interval: Duration::from_secs(60),
            compaction_batch: 256,
            checkpoint_interval: Duration::from_secs(1),
            max_batch: 1024,
            value_limit: crate::MAX_VALUE_SIZE,
            readers: 4,
        }
    }
}

/// The state the writer, the readers, the dispatcher and the compactor share.
struct Shared {
    options: SqliteOptions,
    /// The database file, as fault points match it (see the module documentation).
    path: String,
    readers: read::Readers,
    /// One permit per reader connection: bounds the blocking threads and connections reads use.
    read_permits: tokio::sync::Semaphore,
    /// Turns true when the backend is dropped, so that watch catch-up tasks stop waiting on their readers.
    closing: tokio::sync::watch::Sender<bool>,
    hub: Hub,
    /// As last committed by the writer.
    current: AtomicI64,
    compacted: AtomicI64,
    history: Mutex<compact::History>,
    sample_every: Duration,
    control: Mutex<Control>,
    control_changed: Condvar,
}

#[derive(Default)]
struct Control {
    stop: bool,
    /// Compact (purge) now rather than at the next interval: an explicit `compact` just happened.
    poke: bool,
}

impl Shared {
    fn new(path: &Path, stored: Stored, options: SqliteOptions) -> Self {
        Shared {
            path: path.display().to_string(),
            readers: read::Readers::new(path.to_path_buf(), options.readers.max(1)),
            read_permits: tokio::sync::Semaphore::new(options.readers.max(1)),
            closing: tokio::sync::watch::Sender::new(false),
            hub: Hub::new(stored.current, options.history_window),
            current: AtomicI64::new(stored.current),
            compacted: AtomicI64::new(stored.compacted),
            history: Mutex::new([(Instant::now(), stored.current)].into()),
            sample_every: compact::sample_every(options.compaction_min_age),
            control: Mutex::new(Control {
                stop: false,
                poke: stored.purged < stored.compacted - 1,
            }),
            control_changed: Condvar::new(),
            options,
        }
    }

    fn record_history(&self, at: Instant, current: Revision) {
        let mut history = self.history.lock();
        if history
            .back()
            .is_none_or(|(t, _)| at.duration_since(*t) >= self.sample_every)
        {
            history.push_back((at, current));
        }
    }

    /// Waits up to `timeout` for a poke. `None`: the backend is closing.
    fn wait_for_compactor(&self, timeout: Duration) -> Option<bool> {
        let mut control = self.control.lock();
        if !control.stop && !control.poke {
            self.control_changed.wait_for(&mut control, timeout);
        }
        if control.stop {
            return None;
        }
        Some(std::mem::take(&mut control.poke))
    }

    fn stopping(&self) -> bool {
        self.control.lock().stop
    }
}

/// The embedded store. Dropping it finishes the writes already queued, stops its threads and ends every
/// watch.
pub struct SqliteBackend {
    shared: Arc<Shared>,
    writer: Option<std::sync::mpsc::Sender<Request>>,
    writer_thread: Option<JoinHandle<()>>,
    dispatcher_thread: Option<JoinHandle<()>>,
    compactor_thread: Option<JoinHandle<()>>,
}

/// How many events one catch-up read from the log returns, and how many revisions it looks at (a narrow
/// prefix over a long history must not make one read transaction, which holds back checkpoints, long).
/// Unit tests use small pages so that paging is exercised.
const CATCH_UP_PAGE: usize = if cfg!(test) { 100 } else { 1024 };
const CATCH_UP_WINDOW: Revision = if cfg!(test) { 500 } else { 64 * 1024 };

impl SqliteBackend {
    /// Opens the store at `path`, creating it (and its directory) when absent. A file that exists but is
    /// not an rkube store is [`Error::NotAStore`] and is not modified.
    pub async fn open(path: &Path, options: SqliteOptions) -> Result<SqliteBackend> {
        let owned = path.to_path_buf();
        let (writer_conn, stored, compactor_conn) = tokio::task::spawn_blocking(move || {
            let (writer_conn, stored) = schema::open_writer(&owned)?;
            let compactor_conn = schema::open_reader(&owned)?;
            Ok::<_, Error>((writer_conn, stored, compactor_conn))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        Ok(Self::start(path, writer_conn, stored, compactor_conn, options))
    }

    fn start(
        path: &Path,
        writer_conn: Connection,
        stored: Stored,
        compactor_conn: Connection,
        options: SqliteOptions,
    ) -> SqliteBackend {
        let shared = Arc::new(Shared::new(path, stored, options));
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = writer::Writer::new(writer_conn, stored, shared.clone());
        let writer_thread = spawn("rkube-store-writer", move || writer.run(rx));
        let hub = shared.clone();
        let dispatcher_thread = spawn("rkube-store-watch", move || hub.hub.run_dispatcher());
        let (compactor_shared, compactor_writer) = (shared.clone(), tx.clone());
        let compactor_thread = spawn("rkube-store-compact", move || {
            compact::run(compactor_shared, compactor_writer, compactor_conn)
        });
        SqliteBackend {
            shared,
            writer: Some(tx),
            writer_thread: Some(writer_thread),
            dispatcher_thread: Some(dispatcher_thread),
            compactor_thread: Some(compactor_thread),
        }
    }

    async fn write(&self, key: &[u8], value: Option<Bytes>, guard: Guard) -> Result<WriteResult> {
        crate::check_write(
            key,
            value.as_ref().map_or(0, Bytes::len),
            self.shared.options.value_limit,
        )?;
        let op = WriteOp {
            key: Bytes::copy_from_slice(key),
            value,
            guard,
        };
        let (tx, rx) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or(Error::Closed)?;
        writer.send(Request::Write(op, tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Runs `f` in one read transaction on a reader connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, Stored) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        read_blocking(self.shared.clone(), f).await
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a store thread")
}

async fn read_blocking<T: Send + 'static>(
    shared: Arc<Shared>,
    f: impl FnOnce(&Connection, Stored) -> Result<T> + Send + 'static,
) -> Result<T> {
    let _permit = shared.read_permits.acquire().await.map_err(|_| Error::Closed)?;
    let reader = shared.clone();
    tokio::task::spawn_blocking(move || reader.readers.with(f))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

/// Feeds a watch that starts before the ring: pages of the log from disk, then registration with the hub
/// once the ring reaches back far enough (each page ends at a revision boundary, and registration sends the
/// rest from the ring, so nothing is skipped or repeated).
async fn catch_up(shared: Arc<Shared>, watcher: Watcher) {
    let mut closing = shared.closing.subscribe();
    tokio::select! {
        () = catch_up_until_live(shared.clone(), watcher) => {}
        _ = closing.wait_for(|closing| *closing) => {}
    }
}

async fn catch_up_until_live(shared: Arc<Shared>, mut watcher: Watcher) {
    loop {
        let (prefix, from) = (watcher.prefix.clone(), watcher.next);
        let page = read_blocking(shared.clone(), move |conn, snapshot| {
            if from < snapshot.compacted {
                return Err(Error::Compacted {
                    requested: from,
                    compacted: snapshot.compacted,
                });
            }
            let to = snapshot.current.min(from.saturating_add(CATCH_UP_WINDOW));
            let (events, covered) = read::log_events(conn, &prefix, from, to, CATCH_UP_PAGE)?;
            Ok((events, covered, covered < snapshot.current))
        })
        .await;
        let (events, covered, more) = match page {
            Ok(page) => page,
            Err(error) => {
                let _ = watcher.tx.send(Err(error)).await;
                return;
            }
        };
        if !events.is_empty() && watcher.tx.send(Ok(WatchMessage::Events(events))).await.is_err() {
            return;
        }
        watcher.next = watcher.next.max(covered + 1);
        if more {
            continue;
        }
        // Registration must find room for the ring's part and the reserved last slot; nobody else sends on
        // this channel until then, so the room stays free.
        match watcher.tx.reserve_many(2).await {
            Ok(permits) => drop(permits),
            Err(_) => return,
        }
        match shared.hub.state.lock().register(watcher) {
            Ok(()) => return,
            Err(returned) => watcher = returned,
        }
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.current.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }

    async fn get(&self, key: &[u8], revision: Revision) -> Result<Option<KeyValue>> {
        let key = Bytes::copy_from_slice(key);
        self.read(move |conn, snapshot| read::get(conn, &key, read::resolve(revision, snapshot)?))
            .await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.read(move |conn, snapshot| {
            let revision = read::resolve(req.revision, snapshot)?;
            read::range(conn, &req.prefix, &req.start_after, revision, req.limit)
        })
        .await
    }

    async fn count(&self, prefix: &[u8]) -> Result<i64> {
        let prefix = Bytes::copy_from_slice(prefix);
        self.read(move |conn, snapshot| read::count(conn, &prefix, snapshot.current))
            .await
    }

    async fn create(&self, key: &[u8], value: Bytes) -> Result<WriteResult> {
        self.write(key, Some(value), Guard::Absent).await
    }

    async fn update(&self, key: &[u8], value: Bytes, expected: Revision) -> Result<WriteResult> {
        self.write(key, Some(value), Guard::ModRevision(expected)).await
    }

    async fn delete(&self, key: &[u8], expected: Option<Revision>) -> Result<WriteResult> {
        let guard = expected.map_or(Guard::Exists, Guard::ModRevision);
        self.write(key, None, guard).await
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watch> {
        let (tx, rx) = mpsc::channel(self.shared.options.watch_channel_capacity.max(1) + 1);
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        let mut hub = self.shared.hub.state.lock();
        if hub.closed {
            return Err(Error::Closed);
        }
        let start = if req.start_revision <= 0 {
            hub.published + 1
        } else {
            req.start_revision
        };
        if start < compacted {
            return Err(Error::Compacted {
                requested: start,
                compacted,
            });
        }
        let watcher = Watcher {
            tx,
            prefix: req.prefix,
            next: start,
            progress_interval: req.progress_interval,
            last_sent: Instant::now(),
        };
        if let Err(watcher) = hub.register(watcher) {
            drop(hub);
            tokio::spawn(catch_up(self.shared.clone(), watcher));
        }
        Ok(Watch::from_channel(rx))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or(Error::Closed)?;
        writer
            .send(Request::Compact(revision, tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)??;
        self.shared.control.lock().poke = true;
        self.shared.control_changed.notify_all();
        Ok(())
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        self.shared.closing.send_replace(true);
        self.shared.read_permits.close();
        self.shared.control.lock().stop = true;
        self.shared.control_changed.notify_all();
        // The compactor holds a sender to the writer, so it stops first; then the writer drains its queue and
        // exits when the last sender is gone; then the dispatcher ends every watch.
        if let Some(thread) = self.compactor_thread.take() {
            let _ = thread.join();
        }
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
        self.shared.hub.close();
        if let Some(thread) = self.dispatcher_thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::{Event, EventKind};

    const DEADLINE: Duration = Duration::from_secs(20);

    async fn open_in(dir: &tempfile::TempDir, options: SqliteOptions) -> SqliteBackend {
        SqliteBackend::open(&dir.path().join("db").join("state.db"), options)
            .await
            .unwrap()
    }

    fn done(result: WriteResult) -> (Revision, KeyValue) {
        match result {
            WriteResult::Done { revision, kv } => (revision, kv),
            other => panic!("expected a successful write, got {other:?}"),
        }
    }

    /// Reads messages until `want` events arrived (or the deadline passes).
    async fn collect_events(watch: &mut Watch, want: usize) -> Vec<Event> {
        let mut events = Vec::new();
        while events.len() < want {
            match tokio::time::timeout(DEADLINE, watch.next()).await {
                Ok(Some(Ok(WatchMessage::Events(batch)))) => events.extend(batch),
                Ok(Some(Ok(WatchMessage::Progress(_)))) => {}
                other => panic!("watch ended early after {} events: {other:?}", events.len()),
            }
        }
        events
    }

    async fn log_rows(store: &SqliteBackend) -> i64 {
        store
            .read(|conn, _| Ok(conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))?))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn guarded_writes_follow_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, SqliteOptions::default()).await;
        let start = store.current_revision().await.unwrap();

        let (r1, kv) = done(store.create(b"/a", Bytes::from_static(b"1")).await.unwrap());
        assert_eq!(r1, start + 1);
        assert_eq!((kv.create_revision, kv.mod_revision), (r1, r1));
        let again = store.create(b"/a", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(
            again,
            WriteResult::Conflict {
                current: Some(kv.clone())
            }
        );
        let stale = store
            .update(b"/a", Bytes::from_static(b"x"), r1 - 1)
            .await
            .unwrap();
        assert_eq!(
            stale,
            WriteResult::Conflict {
                current: Some(kv.clone())
            }
        );
        assert_eq!(
            store.current_revision().await.unwrap(),
            r1,
            "a failed guard consumes no revision"
        );

        let (r2, kv2) = done(store.update(b"/a", Bytes::from_static(b"2"), r1).await.unwrap());
        assert_eq!((r2, kv2.create_revision, &kv2.value[..]), (r1 + 1, r1, &b"2"[..]));
        let (r3, deleted) = done(store.delete(b"/a", Some(r2)).await.unwrap());
        assert_eq!(r3, r2 + 1);
        assert_eq!(deleted, kv2, "a delete returns the value it removed");
        assert_eq!(
            store.delete(b"/a", None).await.unwrap(),
            WriteResult::Conflict { current: None }
        );
        assert_eq!(
            store.update(b"/a", Bytes::new(), r3).await.unwrap(),
            WriteResult::Conflict { current: None }
        );

        assert_eq!(store.get(b"/a", 0).await.unwrap(), None);
        assert_eq!(
            store.get(b"/a", r1).await.unwrap().unwrap().value,
            Bytes::from_static(b"1")
        );
        assert_eq!(store.get(b"/a", r2).await.unwrap(), Some(kv2));
        assert!(matches!(
            store.get(b"/a", r3 + 5).await,
            Err(Error::FutureRevision { .. })
        ));

        assert!(matches!(
            store.create(b"", Bytes::new()).await,
            Err(Error::EmptyKey)
        ));
        let big = Bytes::from(vec![0u8; crate::MAX_VALUE_SIZE + 1]);
        assert!(matches!(
            store.create(b"/big", big).await,
            Err(Error::ValueTooLarge { .. })
        ));
        assert_eq!(store.current_revision().await.unwrap(), r3);
    }

    #[tokio::test]
    async fn ranges_page_through_one_snapshot_while_writes_continue() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, SqliteOptions::default()).await;
        for i in 0..25 {
            store
                .create(
                    format!("/pods/ns/p{i:02}").as_bytes(),
                    Bytes::from(vec![b'a'; 10]),
                )
                .await
                .unwrap();
        }
        store
            .create(b"/pods/nt", Bytes::from_static(b"other"))
            .await
            .unwrap();
        store
            .create(b"/podsx", Bytes::from_static(b"outside"))
            .await
            .unwrap();

        let first = store
            .range(RangeRequest {
                prefix: Bytes::from_static(b"/pods/ns/"),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(first.kvs.len(), 10);
        assert!(first.more);
        // Writes after the first page must not show in later pages at the first page's revision.
        let last = first.kvs.last().unwrap().key.clone();
        let p00 = first.kvs[0].clone();
        store.delete(b"/pods/ns/p15", None).await.unwrap();
        store.create(b"/pods/ns/p99", Bytes::new()).await.unwrap();
        store
            .update(b"/pods/ns/p00", Bytes::from_static(b"new"), p00.mod_revision)
            .await
            .unwrap();

        let mut keys: Vec<Bytes> = first.kvs.iter().map(|kv| kv.key.clone()).collect();
        let mut after = last;
        loop {
            let page = store
                .range(RangeRequest {
                    prefix: Bytes::from_static(b"/pods/ns/"),
                    start_after: after.clone(),
                    revision: first.revision,
                    limit: 10,
                })
                .await
                .unwrap();
            assert_eq!(page.revision, first.revision);
            keys.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            if !page.more {
                break;
            }
            after = page.kvs.last().unwrap().key.clone();
        }
        let expected: Vec<Bytes> = (0..25)
            .map(|i| Bytes::from(format!("/pods/ns/p{i:02}")))
            .collect();
        assert_eq!(keys, expected);

        let now = store
            .range(RangeRequest {
                prefix: Bytes::from_static(b"/pods/"),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(now.kvs.len(), 26, "p15 deleted, p99 and nt present");
        assert!(!now.more);
        assert_eq!(now.kvs[0].value, Bytes::from_static(b"new"));
        assert_eq!(store.count(b"/pods/").await.unwrap(), 26);
        assert_eq!(store.count(b"").await.unwrap(), 27);
        let everything = store.range(RangeRequest::default()).await.unwrap();
        assert_eq!(everything.kvs.len(), 27);
    }

    #[tokio::test]
    async fn restart_keeps_revision_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, SqliteOptions::default()).await;
        let (r, _) = done(store.create(b"/k", Bytes::from_static(b"v")).await.unwrap());
        done(store.create(b"/gone", Bytes::from_static(b"v")).await.unwrap());
        let (last, _) = done(store.delete(b"/gone", None).await.unwrap());
        store.compact(last).await.unwrap();
        drop(store);

        let store = open_in(&dir, SqliteOptions::default()).await;
        assert_eq!(
            store.current_revision().await.unwrap(),
            last,
            "the revision never goes backwards"
        );
        assert_eq!(store.compacted_revision().await.unwrap(), last);
        assert_eq!(store.get(b"/k", 0).await.unwrap().unwrap().mod_revision, r);
        let (next, _) = done(store.create(b"/gone", Bytes::new()).await.unwrap());
        assert_eq!(next, last + 1);
    }

    #[tokio::test]
    async fn watch_from_the_past_reads_the_log_then_goes_live_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            history_window: 8,
            ..Default::default()
        };
        let store = open_in(&dir, options).await;
        let first = store.current_revision().await.unwrap() + 1;
        for i in 0..3000 {
            let key = format!("/w/{}", i % 7);
            match store.get(key.as_bytes(), 0).await.unwrap() {
                None => drop(
                    store
                        .create(key.as_bytes(), Bytes::from(i.to_string()))
                        .await
                        .unwrap(),
                ),
                Some(kv) if i % 5 == 0 => {
                    drop(store.delete(key.as_bytes(), Some(kv.mod_revision)).await.unwrap())
                }
                Some(kv) => drop(
                    store
                        .update(key.as_bytes(), Bytes::from(i.to_string()), kv.mod_revision)
                        .await
                        .unwrap(),
                ),
            }
            store
                .create(format!("/other/{i}").as_bytes(), Bytes::new())
                .await
                .unwrap();
        }
        let mut watch = store
            .watch(WatchRequest {
                prefix: Bytes::from_static(b"/w/"),
                start_revision: first,
                progress_interval: None,
            })
            .await
            .unwrap();
        // Writes keep coming while the watch catches up.
        let writer = async {
            for i in 0..200 {
                store
                    .create(format!("/w/live{i}").as_bytes(), Bytes::new())
                    .await
                    .unwrap();
            }
        };
        let (events, ()) = tokio::join!(collect_events(&mut watch, 3000 + 200), writer);
        let revisions: Vec<Revision> = events.iter().map(|e| e.kv.mod_revision).collect();
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "ordered, no duplicates"
        );
        assert!(events.iter().all(|e| e.kv.key.starts_with(b"/w/")));
        // Every event's prev is exactly the key's value before it, as a replay shows.
        let mut state: std::collections::HashMap<Bytes, KeyValue> = Default::default();
        for event in &events {
            assert_eq!(event.prev.as_ref(), state.get(&event.kv.key), "prev of {event:?}");
            match event.kind {
                EventKind::Put => drop(state.insert(event.kv.key.clone(), event.kv.clone())),
                EventKind::Delete => drop(state.remove(&event.kv.key)),
            }
        }
        for (key, kv) in &state {
            assert_eq!(store.get(key, 0).await.unwrap().as_ref(), Some(kv));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watches_started_during_writes_see_every_revision_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            history_window: 64,
            ..Default::default()
        };
        let store = Arc::new(open_in(&dir, options).await);
        let writes = 3000;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..writes {
                    store
                        .create(format!("/s/{i}").as_bytes(), Bytes::new())
                        .await
                        .unwrap();
                }
            })
        };
        let first = store.current_revision().await.unwrap() + 1;
        let last = first + writes - 1;
        let mut watchers = Vec::new();
        for i in 0..24i64 {
            if writer.is_finished() {
                break; // a watch from "now" would wait for writes that never come
            }
            // Starts from "now", from inside the ring, and from well before it.
            let current = store.current_revision().await.unwrap();
            let start = match i % 3 {
                0 => 0,
                1 => (current - 10).max(first),
                _ => (current - 500).max(first),
            };
            let mut watch = store
                .watch(WatchRequest {
                    prefix: Bytes::from_static(b"/s/"),
                    start_revision: start,
                    progress_interval: None,
                })
                .await
                .unwrap();
            watchers.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                while revisions.last().is_none_or(|r| *r < last) {
                    match tokio::time::timeout(DEADLINE, watch.next()).await.unwrap() {
                        Some(Ok(WatchMessage::Events(events))) => {
                            revisions.extend(events.iter().map(|e| e.kv.mod_revision))
                        }
                        Some(Ok(WatchMessage::Progress(_))) => {}
                        other => panic!("watch from {start} ended: {other:?}"),
                    }
                }
                (start, current, revisions)
            }));
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        assert!(
            watchers.len() >= 3,
            "the writes were over before the watches began"
        );
        for watcher in watchers {
            let (start, current, revisions) = watcher.await.unwrap();
            let from = if start == 0 { revisions[0] } else { start };
            assert!(
                start != 0 || from > current,
                "a watch from now began at {from}, at or before {current}"
            );
            assert_eq!(revisions, (from..=last).collect::<Vec<_>>(), "watch from {start}");
        }
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_is_cut_off_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            watch_channel_capacity: 4,
            ..Default::default()
        };
        let store = open_in(&dir, options).await;
        let mut slow = store
            .watch(WatchRequest {
                prefix: Bytes::from_static(b"/"),
                start_revision: 0,
                progress_interval: None,
            })
            .await
            .unwrap();
        for i in 0..50 {
            store
                .create(format!("/k{i}").as_bytes(), Bytes::new())
                .await
                .unwrap();
        }
        let mut delivered = Vec::new();
        let ending = loop {
            match tokio::time::timeout(DEADLINE, slow.next()).await.unwrap() {
                Some(Ok(WatchMessage::Events(events))) => delivered.extend(events),
                Some(Ok(WatchMessage::Progress(_))) => {}
                Some(Err(e)) => break e,
                None => panic!("the watch closed without saying why"),
            }
        };
        assert!(matches!(ending, Error::WatcherTooSlow), "{ending:?}");
        assert!(slow.next().await.is_none(), "nothing after the error");
        assert!(delivered.len() < 50);
        let revisions: Vec<Revision> = delivered.iter().map(|e| e.kv.mod_revision).collect();
        assert!(
            revisions.windows(2).all(|w| w[1] == w[0] + 1),
            "what was delivered has no gaps"
        );
    }

    #[tokio::test]
    async fn progress_marks_follow_delivered_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, SqliteOptions::default()).await;
        let mut watch = store
            .watch(WatchRequest {
                prefix: Bytes::from_static(b"/watched/"),
                start_revision: 0,
                progress_interval: Some(Duration::from_millis(20)),
            })
            .await
            .unwrap();
        let (r, _) = done(store.create(b"/watched/a", Bytes::new()).await.unwrap());
        let (other, _) = done(store.create(b"/elsewhere", Bytes::new()).await.unwrap());
        let mut seen = None;
        loop {
            match tokio::time::timeout(DEADLINE, watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                WatchMessage::Events(events) => {
                    assert_eq!(events.len(), 1);
                    seen = Some(events[0].kv.mod_revision);
                }
                WatchMessage::Progress(p) => {
                    assert!(
                        seen.is_some() || p < r,
                        "progress {p} ran ahead of the event at {r}"
                    );
                    if p >= other {
                        break;
                    }
                }
            }
        }
        assert_eq!(seen, Some(r));
    }

    #[tokio::test]
    async fn compaction_hides_old_revisions_and_removes_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, SqliteOptions::default()).await;
        let (mut rev, _) = done(store.create(b"/c", Bytes::from_static(b"0")).await.unwrap());
        for i in 1..100 {
            rev = done(
                store
                    .update(b"/c", Bytes::from(i.to_string()), rev)
                    .await
                    .unwrap(),
            )
            .0;
        }
        let (t, _) = done(store.create(b"/t", Bytes::new()).await.unwrap());
        done(store.delete(b"/t", Some(t)).await.unwrap());
        let (x, _) = done(store.create(b"/x", Bytes::new()).await.unwrap());
        let at = rev - 10;
        let value_at = store.get(b"/c", at).await.unwrap().unwrap();
        store.compact(at).await.unwrap();
        assert!(matches!(store.compact(at).await, Err(Error::Compacted { .. })));
        assert!(matches!(
            store.compact(x + 100).await,
            Err(Error::FutureRevision { .. })
        ));
        assert_eq!(store.compacted_revision().await.unwrap(), at);
        assert!(
            matches!(store.get(b"/c", at - 1).await, Err(Error::Compacted { requested, compacted }) if requested == at - 1 && compacted == at)
        );
        assert_eq!(store.get(b"/c", at).await.unwrap(), Some(value_at));
        let below = store
            .watch(WatchRequest {
                prefix: Bytes::new(),
                start_revision: at - 1,
                progress_interval: None,
            })
            .await;
        assert!(matches!(below, Err(Error::Compacted { .. })));

        // The purge runs in the background; wait for the rows below the compaction point to go: what stays
        // is /c's value at `at - 1` (the prev of the event at `at`) and its 11 later rows, /t's create and
        // delete (both above the compaction point) and /x.
        let deadline = Instant::now() + DEADLINE;
        while log_rows(&store).await > 15 {
            assert!(
                Instant::now() < deadline,
                "rows were not purged: {}",
                log_rows(&store).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A watch from the compaction point still has every event with its prev value.
        let mut watch = store
            .watch(WatchRequest {
                prefix: Bytes::from_static(b"/c"),
                start_revision: at,
                progress_interval: None,
            })
            .await
            .unwrap();
        let events = collect_events(&mut watch, 11).await;
        assert_eq!(log_rows(&store).await, 15);
        assert_eq!(events[0].kv.mod_revision, at);
        assert_eq!(events[0].prev.as_ref().unwrap().mod_revision, at - 1);
        assert_eq!(events[10].kv.mod_revision, rev);
        assert_eq!(store.get(b"/x", 0).await.unwrap().unwrap().mod_revision, x);
        assert_eq!(store.get(b"/t", 0).await.unwrap(), None);
    }

    #[tokio::test]
    async fn automatic_compaction_bounds_history_under_steady_updates() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            compaction_min_age: Duration::ZERO,
            compaction_min_revisions: 50,
            compaction_interval: Duration::from_millis(50),
            checkpoint_interval: Duration::from_millis(50),
            compaction_batch: 64,
            ..Default::default()
        };
        let store = open_in(&dir, options).await;
        let (mut rev, _) = done(
            store
                .create(b"/steady", Bytes::from(vec![1u8; 4096]))
                .await
                .unwrap(),
        );
        for _ in 0..1500 {
            rev = done(
                store
                    .update(b"/steady", Bytes::from(vec![2u8; 4096]), rev)
                    .await
                    .unwrap(),
            )
            .0;
        }
        let deadline = Instant::now() + DEADLINE;
        while log_rows(&store).await > 60 {
            assert!(
                Instant::now() < deadline,
                "history not compacted: {} rows",
                log_rows(&store).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let compacted = store.compacted_revision().await.unwrap();
        assert!(
            compacted >= rev - 60 && compacted <= rev - 50,
            "compacted {compacted}, current {rev}"
        );
        // The pages the history used are given back.
        let db = dir.path().join("db").join("state.db");
        while std::fs::metadata(&db).unwrap().len() > 1024 * 1024 {
            assert!(
                Instant::now() < deadline,
                "file not vacuumed: {}",
                std::fs::metadata(&db).unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn dropping_the_store_ends_its_watches() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, SqliteOptions::default()).await;
        let mut watch = store
            .watch(WatchRequest {
                prefix: Bytes::new(),
                start_revision: 0,
                progress_interval: None,
            })
            .await
            .unwrap();
        store.create(b"/a", Bytes::new()).await.unwrap();
        drop(store);
        assert_eq!(collect_events(&mut watch, 1).await.len(), 1);
        assert!(
            tokio::time::timeout(DEADLINE, watch.next())
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Fault points are global to the process; `return(TEXT)` limits this one to this test's store.
    #[cfg(feature = "failpoints")]
    #[tokio::test]
    async fn a_failure_before_commit_fails_the_whole_batch_and_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(&dir, SqliteOptions::default()).await;
        let (kept, _) = done(store.create(b"/kept", Bytes::from_static(b"v")).await.unwrap());
        let mut watch = store
            .watch(WatchRequest {
                prefix: Bytes::new(),
                start_revision: 0,
                progress_interval: None,
            })
            .await
            .unwrap();
        let only_here = dir.path().file_name().unwrap().to_str().unwrap().to_string();
        fail::cfg("sqlite::before_commit", &format!("return({only_here})")).unwrap();
        let writes = (0..20).map(|i| {
            let store = &store;
            async move { store.create(format!("/lost/{i}").as_bytes(), Bytes::new()).await }
        });
        let results = futures::future::join_all(writes).await;
        let conflict = store.update(b"/kept", Bytes::new(), kept + 1).await;
        fail::remove("sqlite::before_commit");

        assert!(results.iter().all(|r| r.is_err()), "{results:?}");
        assert!(
            conflict.is_err(),
            "a guard that fails in a failed batch reports the batch's failure"
        );
        assert_eq!(store.current_revision().await.unwrap(), kept);
        assert_eq!(store.count(b"/lost/").await.unwrap(), 0);
        let (next, _) = done(store.create(b"/after", Bytes::new()).await.unwrap());
        assert_eq!(next, kept + 1, "the failed batch consumed no revision");
        let events = collect_events(&mut watch, 1).await;
        assert_eq!(
            events[0].kv.key,
            Bytes::from_static(b"/after"),
            "watchers saw nothing of the failed batch"
        );
    }
}
