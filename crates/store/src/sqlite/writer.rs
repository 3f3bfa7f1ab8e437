//! The single writer: one std thread owns the only writing connection and group-commits.
//!
//! It takes every request queued (up to a cap), applies each guarded write in arrival order inside one
//! transaction, commits once (one fsync for the whole batch), publishes the batch's events to the watch hub
//! and only then answers every caller. A failure anywhere before the commit rolls the whole batch back and
//! fails every request in it; nothing is half-written and the revision does not move.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::Shared;
use super::schema::{META_COMPACTED, META_CURRENT, META_PURGED, Stored};
use crate::{Error, Event, EventKind, KeyValue, Result, Revision, WriteResult};

/// What a guarded write asks for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Guard {
    /// Only if the key does not exist.
    Absent,
    /// Only if the key's mod revision is this one.
    ModRevision(Revision),
    /// Whatever the key's revision (deletes only), if it exists.
    Exists,
}

#[derive(Debug)]
pub(super) struct WriteOp {
    pub key: Bytes,
    /// `None` deletes the key.
    pub value: Option<Bytes>,
    pub guard: Guard,
}

/// Everything the writer thread does; each carries the channel its answer goes to.
pub(super) enum Request {
    Write(WriteOp, oneshot::Sender<Result<WriteResult>>),
    /// Raise the compacted revision (history below it becomes unreadable at once, rows go later).
    Compact(Revision, oneshot::Sender<Result<()>>),
    /// Remove one step of rows made unreachable by compaction; answers whether more steps remain.
    Purge(oneshot::Sender<Result<bool>>),
    /// Give up to this many free pages back to the file system.
    Vacuum(u32, oneshot::Sender<Result<()>>),
    /// Checkpoint the WAL and truncate it to zero bytes.
    TruncateWal(oneshot::Sender<Result<()>>),
}

enum Outcome {
    Write(WriteResult),
    Unit,
    More(bool),
}

/// The writer thread's state: its connection and the revisions as last committed.
pub(super) struct Writer {
    conn: Connection,
    stored: Stored,
    shared: Arc<Shared>,
    /// The current revision at the last checkpoint, and when that was.
    checkpointed: Revision,
    last_checkpoint: Instant,
}

/// A checkpoint at least this often under load: often enough that each one is short (a few ms) and the WAL
/// stays a few MiB.
const CHECKPOINT_EVERY_REVISIONS: Revision = 1000;

impl Writer {
    pub fn new(conn: Connection, stored: Stored, shared: Arc<Shared>) -> Self {
        Writer {
            conn,
            stored,
            shared,
            checkpointed: stored.current,
            last_checkpoint: Instant::now(),
        }
    }

    /// Serves requests until every sender is gone (the backend was dropped).
    pub fn run(mut self, requests: Receiver<Request>) {
        let max_batch = self.shared.options.max_batch.max(1);
        let mut batch = Vec::with_capacity(max_batch);
        let mut recent = [0usize; 2];
        while let Ok(first) = requests.recv() {
            if let Request::TruncateWal(reply) = first {
                let _ = reply.send(self.checkpoint(true));
                continue;
            }
            batch.push(first);
            let gather = Gather::new(recent, max_batch);
            let mut bytes = 0;
            let mut truncate = None;
            while batch.len() < max_batch && bytes < MAX_BATCH_BYTES {
                let next = match requests.try_recv() {
                    Ok(request) => request,
                    Err(_) => match gather.wait_for_more(batch.len()) {
                        Some(wait) => match requests.recv_timeout(wait) {
                            Ok(request) => request,
                            Err(_) => break,
                        },
                        None => break,
                    },
                };
                match next {
                    Request::TruncateWal(reply) => {
                        // Not part of a transaction: after this batch.
                        truncate = Some(reply);
                        break;
                    }
                    request => {
                        if let Request::Write(op, _) = &request {
                            bytes += op.key.len() + op.value.as_ref().map_or(0, Bytes::len);
                        }
                        batch.push(request);
                    }
                }
            }
            recent = [recent[1], batch.len()];
            self.run_batch(&mut batch);
            match truncate {
                Some(reply) => drop(reply.send(self.checkpoint(true))),
                None => self.maybe_checkpoint(),
            }
        }
    }

    /// Finishes copying the WAL into the database file every so many revisions (or every
    /// `checkpoint_interval` while anything was written), between batches, after the callers have their
    /// answers. It runs here because only a checkpoint that no commit races can finish, and only a finished
    /// one lets the next commit start the WAL over from its beginning: the compactor thread's background
    /// checkpoints, chasing a busy writer, never catch up (they do the bulk of the copying, though, so this
    /// pause stays short), and without this the WAL would grow for as long as writes keep coming.
    fn maybe_checkpoint(&mut self) {
        let written = self.stored.current - self.checkpointed;
        if written == 0
            || written < CHECKPOINT_EVERY_REVISIONS
                && self.last_checkpoint.elapsed() < self.shared.options.checkpoint_interval
        {
            return;
        }
        if let Err(error) = self.checkpoint(false) {
            tracing::debug!(%error, "WAL checkpoint failed");
        }
    }

    /// A passive checkpoint, or with `truncate` one that also empties the WAL file.
    fn checkpoint(&mut self, truncate: bool) -> Result<()> {
        let sql = if truncate {
            "PRAGMA wal_checkpoint(TRUNCATE)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        let busy: bool = self.conn.query_row(sql, [], |row| row.get(0))?;
        // Busy: the background checkpoint holds the checkpoint lock right now; try again after the next
        // batch rather than a whole interval later.
        if !busy {
            self.checkpointed = self.stored.current;
            self.last_checkpoint = Instant::now();
        }
        Ok(())
    }

    /// Applies, commits and answers one batch; `batch` is left empty.
    pub fn run_batch(&mut self, batch: &mut Vec<Request>) {
        let mut events = Vec::new();
        let applied = self.apply(batch, &mut events);
        let applied = match applied {
            Ok(applied) => applied,
            Err(error) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                tracing::warn!(%error, requests = batch.len(), "store batch failed and was rolled back");
                for request in batch.drain(..) {
                    answer_error(request, &error);
                }
                return;
            }
        };
        let (outcomes, stored) = applied;
        let committed_at = Instant::now();
        let advanced = stored.current != self.stored.current;
        self.stored = stored;
        self.shared.current.store(stored.current, Ordering::Release);
        self.shared.compacted.store(stored.compacted, Ordering::Release);
        if advanced {
            self.shared.record_history(committed_at, stored.current);
        }
        if !events.is_empty() {
            self.shared.hub.publish(events);
        }
        // An error injected here is the "committed, but the caller never heard" case: state and watchers
        // move on, and every caller of the batch sees a failure.
        let after_commit = after_commit(&self.shared.path);
        for (request, outcome) in batch.drain(..).zip(outcomes) {
            match (&after_commit, outcome) {
                (Err(error), _) => answer_error(request, error),
                (Ok(()), outcome) => answer(request, outcome),
            }
        }
    }

    /// Runs the batch inside one transaction and commits it. On error the transaction is still open (the
    /// caller rolls back).
    fn apply(
        &mut self,
        batch: &[Request],
        events: &mut Vec<Event>,
    ) -> Result<(Vec<Result<Outcome>>, Stored)> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut stored = self.stored;
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch {
            let outcome = match request {
                Request::Write(op, _) => Ok(Outcome::Write(apply_write(
                    &self.conn,
                    op,
                    &mut stored.current,
                    events,
                )?)),
                Request::Compact(revision, _) => match check_compact(*revision, stored) {
                    Ok(()) => {
                        set_meta(&self.conn, META_COMPACTED, *revision)?;
                        stored.compacted = *revision;
                        Ok(Outcome::Unit)
                    }
                    Err(e) => Err(e),
                },
                // Upkeep shares the batch with client writes but must never fail them: each step runs in a
                // savepoint, and its failure is only its own.
                Request::Purge(_) => {
                    let step = self.shared.options.compaction_batch.max(1);
                    let mut after = stored;
                    let purged = isolated(&self.conn, || {
                        purge_step(&self.conn, &self.shared.path, &mut after, step)
                    })?;
                    if purged.is_ok() {
                        stored = after;
                    }
                    purged.map(Outcome::More)
                }
                Request::Vacuum(pages, _) => isolated(&self.conn, || {
                    self.conn
                        .execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
                    Ok(Outcome::Unit)
                })?,
                Request::TruncateWal(_) => Ok(Outcome::Unit), // taken out of batches by `run`
            };
            outcomes.push(outcome);
        }
        if stored.current != self.stored.current {
            set_meta(&self.conn, META_CURRENT, stored.current)?;
        }
        before_commit(&self.shared.path)?;
        self.conn.execute_batch("COMMIT")?;
        Ok((outcomes, stored))
    }
}

/// How long a batch waits for stragglers. Under load, callers fall into two cohorts: those answered by the
/// last batch are still sending their next write when the writer starts the next one, which then commits
/// (and fsyncs) without them, and they wait a whole batch. Waiting a moment for them, as long as the batch is
/// smaller than the last two together (about the number of busy callers), merges the cohorts: one fsync for
/// everyone. A batch of one never waits, so a lone caller doing one write after another never does.
struct Gather {
    expected: usize,
    deadline: Instant,
}

impl Gather {
    const PATIENCE: std::time::Duration = std::time::Duration::from_micros(200);

    fn new(recent: [usize; 2], max_batch: usize) -> Self {
        Gather {
            expected: (recent[0] + recent[1]).min(max_batch),
            deadline: Instant::now() + Self::PATIENCE,
        }
    }

    /// How long to wait for another request, if at all, when `have` are in the batch.
    fn wait_for_more(&self, have: usize) -> Option<std::time::Duration> {
        if have < 2 || have >= self.expected {
            return None;
        }
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

/// Runs `step` inside a savepoint: its failure rolls back only what it did and is returned as the inner
/// result; the outer error means the batch's transaction itself is in trouble.
fn isolated<T>(conn: &Connection, step: impl FnOnce() -> Result<T>) -> Result<Result<T>> {
    conn.execute_batch("SAVEPOINT upkeep")?;
    match step() {
        Ok(value) => {
            conn.execute_batch("RELEASE upkeep")?;
            Ok(Ok(value))
        }
        Err(error) => {
            conn.execute_batch("ROLLBACK TO upkeep; RELEASE upkeep")?;
            Ok(Err(error))
        }
    }
}

/// A batch stops growing at this many bytes of keys and values, so one transaction stays short.
const MAX_BATCH_BYTES: usize = 16 << 20;

#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn before_commit(path: &str) -> Result<()> {
    fail::fail_point!("sqlite::before_commit", |only| injected(
        "sqlite::before_commit",
        path,
        only
    ));
    Ok(())
}

#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn after_commit(path: &str) -> Result<()> {
    fail::fail_point!("sqlite::after_commit", |only| injected(
        "sqlite::after_commit",
        path,
        only
    ));
    Ok(())
}

#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn compact_batch(path: &str) -> Result<()> {
    fail::fail_point!("sqlite::compact_batch", |only| injected(
        "sqlite::compact_batch",
        path,
        only
    ));
    Ok(())
}

/// The failure a configured fault point injects into the store at `path`: none when the point was given a
/// path fragment (`return(TEXT)`) that this store's path does not contain.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn injected(point: &str, path: &str, only: Option<String>) -> Result<()> {
    match only {
        Some(fragment) if !fragment.is_empty() && !path.contains(&fragment) => Ok(()),
        _ => Err(Error::Io(std::io::Error::other(format!(
            "injected failure at fail point {point}"
        )))),
    }
}

fn answer(request: Request, outcome: Result<Outcome>) {
    // A caller that went away (its future was dropped) no longer wants the answer.
    match (request, outcome) {
        (Request::Write(_, reply), Ok(Outcome::Write(result))) => drop(reply.send(Ok(result))),
        (Request::Compact(_, reply), Ok(_)) => drop(reply.send(Ok(()))),
        (Request::Purge(reply), Ok(Outcome::More(more))) => drop(reply.send(Ok(more))),
        (Request::Vacuum(_, reply), Ok(_)) | (Request::TruncateWal(reply), Ok(_)) => drop(reply.send(Ok(()))),
        (request, Err(error)) => answer_with(request, error),
        (request, Ok(_)) => answer_with(request, Error::Io(std::io::Error::other("mismatched answer"))),
    }
}

fn answer_error(request: Request, error: &Error) {
    answer_with(request, replicate(error));
}

fn answer_with(request: Request, error: Error) {
    match request {
        Request::Write(_, reply) => drop(reply.send(Err(error))),
        Request::Compact(_, reply) | Request::Vacuum(_, reply) | Request::TruncateWal(reply) => {
            drop(reply.send(Err(error)))
        }
        Request::Purge(reply) => drop(reply.send(Err(error))),
    }
}

/// The same failure for each caller of a failed batch (`Error` is not `Clone`: it carries sources).
fn replicate(error: &Error) -> Error {
    match error {
        Error::Sqlite(rusqlite::Error::SqliteFailure(code, message)) => {
            Error::Sqlite(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        Error::Closed => Error::Closed,
        other => Error::Io(std::io::Error::other(other.to_string())),
    }
}

fn check_compact(revision: Revision, stored: Stored) -> Result<()> {
    if revision > stored.current {
        return Err(Error::FutureRevision {
            requested: revision,
            current: stored.current,
        });
    }
    if revision <= stored.compacted {
        return Err(Error::Compacted {
            requested: revision,
            compacted: stored.compacted,
        });
    }
    Ok(())
}

fn set_meta(conn: &Connection, name: &str, value: i64) -> Result<()> {
    conn.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")?
        .execute((name, value))?;
    Ok(())
}

/// The key's current live row.
fn current_row(conn: &Connection, key: &Bytes) -> Result<Option<KeyValue>> {
    let mut stmt = conn.prepare_cached(
        "SELECT revision, create_revision, deleted, value FROM log
         WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
    )?;
    let mut rows = stmt.query([&key[..]])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    if row.get::<_, bool>(2)? {
        return Ok(None);
    }
    Ok(Some(KeyValue {
        key: key.clone(),
        value: super::read::blob(row, 3)?,
        create_revision: row.get(1)?,
        mod_revision: row.get(0)?,
    }))
}

/// Applies one guarded write on top of everything before it in the batch. A failed guard consumes no
/// revision; a successful write takes `*current + 1` and records its event.
fn apply_write(
    conn: &Connection,
    op: &WriteOp,
    current: &mut Revision,
    events: &mut Vec<Event>,
) -> Result<WriteResult> {
    let existing = current_row(conn, &op.key)?;
    let allowed = match (op.guard, &existing) {
        (Guard::Absent, existing) => existing.is_none(),
        (Guard::ModRevision(expected), Some(kv)) => kv.mod_revision == expected,
        (Guard::Exists, Some(_)) => true,
        (_, None) => false,
    };
    if !allowed {
        return Ok(WriteResult::Conflict { current: existing });
    }
    let revision = *current + 1;
    let mut insert = conn.prepare_cached(
        "INSERT INTO log (revision, key, value, create_revision, prev_revision, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let prev_revision = existing.as_ref().map_or(0, |kv| kv.mod_revision);
    let result = match &op.value {
        Some(value) => {
            let create_revision = existing.as_ref().map_or(revision, |kv| kv.create_revision);
            insert.execute((
                revision,
                &op.key[..],
                &value[..],
                create_revision,
                prev_revision,
                false,
            ))?;
            let kv = KeyValue {
                key: op.key.clone(),
                value: value.clone(),
                create_revision,
                mod_revision: revision,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: existing,
            });
            WriteResult::Done { revision, kv }
        }
        None => {
            let deleted = existing.expect("a delete is only allowed when the key exists");
            insert.execute((revision, &op.key[..], None::<&[u8]>, 0, prev_revision, true))?;
            let tombstone = KeyValue {
                key: op.key.clone(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: revision,
            };
            events.push(Event {
                kind: EventKind::Delete,
                kv: tombstone,
                prev: Some(deleted.clone()),
            });
            WriteResult::Done {
                revision,
                kv: deleted,
            }
        }
    };
    *current = revision;
    Ok(result)
}

/// Removes the rows no read at or above the compacted revision `C` can reach, for the next `step` revisions
/// after the last purged one (never beyond `C - 1`). A row is unreachable once its key's next write is at or
/// below `C - 1`; a tombstone at or below `C - 1` is unreachable itself. Rows at `C - 1` and above that are
/// the predecessors of later writes stay: they are the `prev` values of watch events from `C` on.
fn purge_step(conn: &Connection, path: &str, stored: &mut Stored, step: i64) -> Result<bool> {
    let last = stored.compacted - 1;
    if stored.purged >= last {
        return Ok(false);
    }
    compact_batch(path)?;
    let from = stored.purged;
    let to = (from + step).min(last);
    conn.prepare_cached(
        "DELETE FROM log WHERE revision IN
             (SELECT prev_revision FROM log WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0)",
    )?
    .execute((from, to))?;
    conn.prepare_cached("DELETE FROM log WHERE revision > ?1 AND revision <= ?2 AND deleted = 1")?
        .execute((from, to))?;
    set_meta(conn, META_PURGED, to)?;
    stored.purged = to;
    Ok(to < last)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{SqliteOptions, schema};
    use super::*;

    fn writer(path: &Path) -> Writer {
        let (conn, stored) = schema::open_writer(path).unwrap();
        let shared = Arc::new(Shared::new(path, stored, SqliteOptions::default()));
        Writer::new(conn, stored, shared)
    }

    fn write(
        key: &str,
        value: Option<&str>,
        guard: Guard,
    ) -> (Request, oneshot::Receiver<Result<WriteResult>>) {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            guard,
        };
        (Request::Write(op, tx), rx)
    }

    fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision,
            mod_revision,
        }
    }

    #[test]
    fn one_batch_answers_every_caller_in_order_with_conflicts_and_successes() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir.path().join("s.db"));
        let r = INITIAL + 1;
        let requests = vec![
            write("/a", Some("1"), Guard::Absent),
            write("/a", Some("2"), Guard::Absent),
            write("/a", Some("3"), Guard::ModRevision(r + 7)),
            write("/a", Some("4"), Guard::ModRevision(r)),
            write("/b", None, Guard::Exists),
            write("/a", None, Guard::Exists),
            write("/a", Some("5"), Guard::Absent),
            write("/b", Some("6"), Guard::ModRevision(1)),
        ];
        let (mut batch, replies): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
        writer.run_batch(&mut batch);
        let answers: Vec<WriteResult> = replies
            .into_iter()
            .map(|mut rx| rx.try_recv().unwrap().unwrap())
            .collect();
        assert_eq!(
            answers,
            vec![
                WriteResult::Done {
                    revision: r,
                    kv: kv("/a", "1", r, r)
                },
                WriteResult::Conflict {
                    current: Some(kv("/a", "1", r, r))
                },
                WriteResult::Conflict {
                    current: Some(kv("/a", "1", r, r))
                },
                WriteResult::Done {
                    revision: r + 1,
                    kv: kv("/a", "4", r, r + 1)
                },
                WriteResult::Conflict { current: None },
                WriteResult::Done {
                    revision: r + 2,
                    kv: kv("/a", "4", r, r + 1)
                },
                WriteResult::Done {
                    revision: r + 3,
                    kv: kv("/a", "5", r + 3, r + 3)
                },
                WriteResult::Conflict { current: None },
            ]
        );
        assert_eq!(writer.stored.current, r + 3);
        assert_eq!(
            schema::read_stored(&writer.conn).unwrap().current,
            r + 3,
            "persisted in the same commit"
        );

        // The hub got one event per successful write, with the previous values.
        let hub = writer.shared.hub.state.lock();
        let events = super::super::watch::ring_events(&hub, b"/", r);
        let summary: Vec<(EventKind, Revision, Option<Revision>)> = events
            .iter()
            .map(|e| (e.kind, e.kv.mod_revision, e.prev.as_ref().map(|p| p.mod_revision)))
            .collect();
        assert_eq!(
            summary,
            vec![
                (EventKind::Put, r, None),
                (EventKind::Put, r + 1, Some(r)),
                (EventKind::Delete, r + 2, Some(r + 1)),
                (EventKind::Put, r + 3, None),
            ]
        );
    }

    #[test]
    fn a_failed_batch_fails_every_caller_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir.path().join("s.db"));
        let (request, first) = write("/a", Some("1"), Guard::Absent);
        writer.run_batch(&mut vec![request]);
        first.blocking_recv().unwrap().unwrap();
        let before = writer.stored;
        // Break the log table under the writer: the insert of the second write fails mid-batch.
        writer.conn.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON log WHEN NEW.key = x'2f62' BEGIN SELECT RAISE(ABORT, 'refused'); END").unwrap();
        let (mut batch, replies): (Vec<_>, Vec<_>) = vec![
            write("/c", Some("1"), Guard::Absent),
            write("/b", Some("2"), Guard::Absent),
            write("/a", Some("x"), Guard::Absent),
        ]
        .into_iter()
        .unzip();
        writer.run_batch(&mut batch);
        for rx in replies {
            assert!(
                rx.blocking_recv().unwrap().is_err(),
                "every caller of the failed batch hears of it"
            );
        }
        assert_eq!(writer.stored, before);
        assert_eq!(schema::read_stored(&writer.conn).unwrap(), before);
        let c: i64 = writer
            .conn
            .query_row("SELECT count(*) FROM log WHERE key = x'2f63'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(c, 0, "nothing of the failed batch was written");
        assert!(writer.conn.is_autocommit(), "the transaction was rolled back");
    }

    #[test]
    fn a_failing_compaction_step_fails_alone_not_the_writes_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir.path().join("s.db"));
        let mut revision = INITIAL;
        for i in 0..10 {
            let guard = if i == 0 {
                Guard::Absent
            } else {
                Guard::ModRevision(revision)
            };
            let (request, rx) = write("/a", Some("v"), guard);
            writer.run_batch(&mut vec![request]);
            revision = match rx.blocking_recv().unwrap().unwrap() {
                WriteResult::Done { revision, .. } => revision,
                other => panic!("{other:?}"),
            };
        }
        let (compact, compacted) = oneshot::channel();
        writer.run_batch(&mut vec![Request::Compact(revision - 2, compact)]);
        compacted.blocking_recv().unwrap().unwrap();
        writer
            .conn
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE DELETE ON log BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .unwrap();

        let (purge, purged) = oneshot::channel();
        let (before, before_rx) = write("/b", Some("1"), Guard::Absent);
        let (after, after_rx) = write("/c", Some("1"), Guard::Absent);
        writer.run_batch(&mut vec![before, Request::Purge(purge), after]);
        assert!(purged.blocking_recv().unwrap().is_err(), "the purge step failed");
        assert!(matches!(
            before_rx.blocking_recv().unwrap(),
            Ok(WriteResult::Done { .. })
        ));
        assert!(matches!(
            after_rx.blocking_recv().unwrap(),
            Ok(WriteResult::Done { .. })
        ));
        assert_eq!(writer.stored.purged, 0, "the failed step is not recorded as done");
        assert_eq!(schema::read_stored(&writer.conn).unwrap().purged, 0);

        writer.conn.execute_batch("DROP TRIGGER refuse").unwrap();
        let (purge, purged) = oneshot::channel();
        writer.run_batch(&mut vec![Request::Purge(purge)]);
        assert!(
            !purged.blocking_recv().unwrap().unwrap(),
            "one step covers these few revisions"
        );
        let rows: i64 = writer
            .conn
            .query_row("SELECT count(*) FROM log WHERE key = x'2f61'", [], |r| r.get(0))
            .unwrap();
        // Compacted at revision − 2: kept are the row just below it (the prev of its event) and the three
        // from it on.
        assert_eq!(rows, 4);
    }

    #[test]
    fn a_batch_waits_for_stragglers_only_under_load() {
        let gather = Gather::new([20, 40], 1024);
        assert_eq!(gather.wait_for_more(1), None, "a batch of one never waits");
        assert!(gather.wait_for_more(30).is_some_and(|d| d <= Gather::PATIENCE));
        assert_eq!(
            gather.wait_for_more(60),
            None,
            "as big as the last two batches together"
        );
        assert_eq!(Gather::new([1, 1], 1024).wait_for_more(2), None);
        assert_eq!(
            Gather::new([900, 900], 1024).expected,
            1024,
            "never more than a batch may hold"
        );
        let late = Gather {
            expected: 64,
            deadline: Instant::now(),
        };
        assert_eq!(late.wait_for_more(10), None, "patience is bounded");
    }

    const INITIAL: Revision = schema::INITIAL_REVISION;
}
