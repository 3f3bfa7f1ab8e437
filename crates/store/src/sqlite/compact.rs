//! Automatic compaction and file upkeep, on a thread of its own.
//!
//! Every `compaction_interval` it raises the compacted revision to the newest revision that is both older
//! than `compaction_min_age` and at least `compaction_min_revisions` behind the current one, then removes the
//! rows that became unreachable in small steps *through the writer* (so there is never a second writer and
//! no step holds the database for long). After a compaction it has the writer truncate the WAL and give free
//! pages back with `incremental_vacuum`, so neither file grows without bound under a steady update load.
//!
//! In between, every few milliseconds while writes come in, it copies the WAL into the database file
//! (a passive checkpoint on its own connection, which never makes the writer wait). Such a checkpoint never
//! finishes while the writer appends, so the writer finishes it itself every so many revisions (see
//! `Writer::maybe_checkpoint`) — but by then only the last few milliseconds of WAL are left to copy, which
//! keeps that pause in the write path short.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::Shared;
use super::writer::Request;
use crate::{Error, Result, Revision};

/// When each revision became current: `(t, r)` means every revision above `r` was committed after `t`.
pub(super) type History = VecDeque<(Instant, Revision)>;

/// The revision to compact to now, if compaction should move: the current revision at the last sample at
/// least `min_age` old, but no closer than `min_revisions` to `current`. Samples older than the one used are
/// dropped, as no later decision needs them.
pub(super) fn compaction_target(
    history: &mut History,
    now: Instant,
    min_age: Duration,
    min_revisions: i64,
    current: Revision,
    compacted: Revision,
) -> Option<Revision> {
    let cutoff = now.checked_sub(min_age)?;
    let old_enough = history.iter().rposition(|(t, _)| *t <= cutoff)?;
    history.drain(..old_enough);
    let (_, revision) = history[0];
    let target = revision.min(current - min_revisions.max(0));
    (target > compacted).then_some(target)
}

/// How often the writer records a history sample: fine enough for `min_age`, at most every second.
pub(super) fn sample_every(min_age: Duration) -> Duration {
    (min_age / 100).min(Duration::from_secs(1))
}

/// How often the WAL is copied into the database file in the background while writes come in.
const BACKGROUND_CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// Runs until the backend is dropped.
pub(super) fn run(shared: Arc<Shared>, writer: Sender<Request>, conn: Connection) {
    let options = shared.options.clone();
    let mut next_compaction = Instant::now() + options.compaction_interval;
    let mut copied_through = shared.current.load(Ordering::Acquire);
    loop {
        let now = Instant::now();
        let wait = next_compaction
            .saturating_duration_since(now)
            .min(BACKGROUND_CHECKPOINT_EVERY);
        let Some(poked) = shared.wait_for_compactor(wait) else {
            return;
        };
        let current = shared.current.load(Ordering::Acquire);
        if current != copied_through {
            copied_through = current;
            if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!(%error, "background WAL checkpoint failed");
            }
        }
        if !poked && Instant::now() < next_compaction {
            continue;
        }
        next_compaction = Instant::now() + options.compaction_interval;
        match compact_once(&shared, &writer, &conn) {
            Ok(()) => {}
            Err(Error::Closed) => return,
            Err(error) => tracing::warn!(%error, "store compaction step failed; retrying later"),
        }
    }
}

fn compact_once(shared: &Shared, writer: &Sender<Request>, conn: &Connection) -> Result<()> {
    let options = &shared.options;
    let target = compaction_target(
        &mut shared.history.lock(),
        Instant::now(),
        options.compaction_min_age,
        options.compaction_min_revisions,
        shared.current.load(Ordering::Acquire),
        shared.compacted.load(Ordering::Acquire),
    );
    if let Some(target) = target {
        match ask(writer, |reply| Request::Compact(target, reply)) {
            Ok(()) | Err(Error::Compacted { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    let mut purged_any = false;
    while ask(writer, Request::Purge)? {
        purged_any = true;
        if shared.stopping() {
            return Ok(());
        }
    }
    if !purged_any && target.is_none() {
        return Ok(());
    }
    ask(writer, Request::TruncateWal)?;
    // Give free pages back a slice at a time so no single write transaction runs long.
    for _ in 0..1024 {
        let free: i64 = conn.pragma_query_value(None, "freelist_count", |row| row.get(0))?;
        if free == 0 || shared.stopping() {
            break;
        }
        ask(writer, |reply| Request::Vacuum(VACUUM_PAGES, reply))?;
    }
    ask(writer, Request::TruncateWal)?;
    Ok(())
}

const VACUUM_PAGES: u32 = 2048;

/// Sends one request to the writer and waits for its answer.
fn ask<T>(
    writer: &Sender<Request>,
    request: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    writer.send(request(tx)).map_err(|_| Error::Closed)?;
    rx.blocking_recv().map_err(|_| Error::Closed)?
}
