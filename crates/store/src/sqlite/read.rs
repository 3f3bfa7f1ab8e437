//! Reads on their own connections: point reads and ranges at any retained revision, counts, and the log
//! reads that let a watch catch up from before the in-memory history.
//!
//! Every read runs in one read transaction, so it sees one committed snapshot (WAL) while the writer keeps
//! committing; the snapshot's own `meta` row says which revision that is.

use std::path::PathBuf;

use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::{Connection, Row};

use super::schema::{self, Stored};
use crate::{Error, Event, EventKind, KeyValue, RangeResponse, Result, Revision};

/// A small pool of reader connections; a read borrows one for the length of its transaction.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl Readers {
    pub fn new(path: PathBuf, max_idle: usize) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        }
    }

    /// Runs `f` inside one read transaction. Blocking: call from `spawn_blocking` or a thread of our own.
    pub fn with<T>(&self, f: impl FnOnce(&Connection, Stored) -> Result<T>) -> Result<T> {
        let conn = match self.idle.lock().pop() {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = conn.execute_batch("BEGIN").map_err(Error::from).and_then(|()| {
            let snapshot = schema::read_stored(&conn)?;
            f(&conn, snapshot)
        });
        // A read transaction has nothing to keep; ending it lets checkpoints move past its snapshot.
        let ended = conn.execute_batch("ROLLBACK");
        if ended.is_ok() {
            let mut idle = self.idle.lock();
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        result
    }
}

/// The revision a read at `requested` (0 = latest) is served at, or why it cannot be.
pub(super) fn resolve(requested: Revision, snapshot: Stored) -> Result<Revision> {
    if requested <= 0 {
        return Ok(snapshot.current);
    }
    if requested > snapshot.current {
        return Err(Error::FutureRevision {
            requested,
            current: snapshot.current,
        });
    }
    if requested < snapshot.compacted {
        return Err(Error::Compacted {
            requested,
            compacted: snapshot.compacted,
        });
    }
    Ok(requested)
}

pub(super) fn blob(row: &Row<'_>, index: usize) -> rusqlite::Result<Bytes> {
    Ok(match row.get_ref(index)? {
        rusqlite::types::ValueRef::Blob(b) => Bytes::copy_from_slice(b),
        rusqlite::types::ValueRef::Null => Bytes::new(),
        other => {
            return Err(rusqlite::Error::InvalidColumnType(
                index,
                "value".into(),
                other.data_type(),
            ));
        }
    })
}

/// The latest row of `key` at or below `revision`, if the key exists there.
pub(super) fn get(conn: &Connection, key: &[u8], revision: Revision) -> Result<Option<KeyValue>> {
    let mut stmt = conn.prepare_cached(
        "SELECT revision, create_revision, deleted, value FROM log
         WHERE key = ?1 AND revision <= ?2 ORDER BY revision DESC LIMIT 1",
    )?;
    let mut rows = stmt.query((key, revision))?;
    let Some(row) = rows.next()? else { return Ok(None) };
    if row.get::<_, bool>(2)? {
        return Ok(None);
    }
    Ok(Some(KeyValue {
        key: Bytes::copy_from_slice(key),
        value: blob(row, 3)?,
        create_revision: row.get(1)?,
        mod_revision: row.get(0)?,
    }))
}

/// Where a range's keys start and end: `key >= from` (or `key > from` when continuing after a key) and,
/// unless the prefix has no end, `key < end`.
struct Bounds {
    from: Vec<u8>,
    exclusive: bool,
    end: Vec<u8>,
}

impl Bounds {
    fn new(prefix: &[u8], start_after: &[u8]) -> Self {
        let end = crate::prefix_end(prefix);
        if !start_after.is_empty() && start_after >= prefix {
            Bounds {
                from: start_after.to_vec(),
                exclusive: true,
                end,
            }
        } else {
            Bounds {
                from: prefix.to_vec(),
                exclusive: false,
                end,
            }
        }
    }
}

/// `SELECT …` live rows at revision ?3 in key order; the four variants are the bound kinds (an index range
/// scan over `log_key_revision` in every case, so a page costs what it returns plus superseded history).
macro_rules! live_rows_sql {
    ($select:literal, $lower:literal, $upper:literal, $tail:literal) => {
        concat!(
            $select,
            " FROM log AS l INDEXED BY log_key_revision WHERE l.key ",
            $lower,
            " ?1 ",
            $upper,
            " AND l.revision <= ?3 AND l.deleted = 0
              AND NOT EXISTS (SELECT 1 FROM log AS n
                              WHERE n.key = l.key AND n.revision > l.revision AND n.revision <= ?3) ",
            $tail
        )
    };
}

const RANGE_SELECT: [&str; 4] = [
    live_rows_sql!(
        "SELECT l.key, l.revision, l.create_revision, l.value",
        ">=",
        "AND l.key < ?2",
        "ORDER BY l.key LIMIT ?4"
    ),
    live_rows_sql!(
        "SELECT l.key, l.revision, l.create_revision, l.value",
        ">",
        "AND l.key < ?2",
        "ORDER BY l.key LIMIT ?4"
    ),
    live_rows_sql!(
        "SELECT l.key, l.revision, l.create_revision, l.value",
        ">=",
        "AND ?2 IS NOT NULL",
        "ORDER BY l.key LIMIT ?4"
    ),
    live_rows_sql!(
        "SELECT l.key, l.revision, l.create_revision, l.value",
        ">",
        "AND ?2 IS NOT NULL",
        "ORDER BY l.key LIMIT ?4"
    ),
];

const COUNT_SELECT: [&str; 2] = [
    live_rows_sql!("SELECT count(*)", ">=", "AND l.key < ?2", "AND ?4 IS NOT NULL"),
    live_rows_sql!(
        "SELECT count(*)",
        ">=",
        "AND ?2 IS NOT NULL",
        "AND ?4 IS NOT NULL"
    ),
];

/// Keys under `prefix` after `start_after`, as of `revision` (already resolved), at most `limit` (0: all).
pub(super) fn range(
    conn: &Connection,
    prefix: &[u8],
    start_after: &[u8],
    revision: Revision,
    limit: usize,
) -> Result<RangeResponse> {
    let bounds = Bounds::new(prefix, start_after);
    let variant = usize::from(bounds.exclusive) + if bounds.end.is_empty() { 2 } else { 0 };
    let mut stmt = conn.prepare_cached(RANGE_SELECT[variant])?;
    // One row past the limit tells whether there are more.
    let sql_limit: i64 = if limit == 0 { -1 } else { limit as i64 + 1 };
    let mut rows = stmt.query((&bounds.from[..], &bounds.end[..], revision, sql_limit))?;
    let mut kvs = Vec::new();
    while let Some(row) = rows.next()? {
        kvs.push(KeyValue {
            key: blob(row, 0)?,
            value: blob(row, 3)?,
            create_revision: row.get(2)?,
            mod_revision: row.get(1)?,
        });
    }
    let more = limit != 0 && kvs.len() > limit;
    if more {
        kvs.truncate(limit);
    }
    Ok(RangeResponse { kvs, more, revision })
}

/// How many keys live under `prefix` at `revision`.
pub(super) fn count(conn: &Connection, prefix: &[u8], revision: Revision) -> Result<i64> {
    let bounds = Bounds::new(prefix, b"");
    let variant = if bounds.end.is_empty() { 1 } else { 0 };
    let mut stmt = conn.prepare_cached(COUNT_SELECT[variant])?;
    Ok(stmt.query_row((&bounds.from[..], &bounds.end[..], revision, 0), |row| row.get(0))?)
}

const LOG_SELECT: &str = "SELECT l.revision, l.key, l.value, l.create_revision, l.deleted,
        p.revision, p.create_revision, p.value
    FROM log AS l LEFT JOIN log AS p ON p.revision = l.prev_revision AND l.prev_revision > 0
    WHERE l.revision >= ?1 AND l.revision <= ?2 AND l.key >= ?3 AND (?4 = x'' OR l.key < ?4)
    ORDER BY l.revision LIMIT ?5";

/// The events under `prefix` with revisions in `from..=to`, at most `limit` of them (each revision is one
/// event, so a page never splits a revision). Returns the events and the last revision the page covers.
pub(super) fn log_events(
    conn: &Connection,
    prefix: &[u8],
    from: Revision,
    to: Revision,
    limit: usize,
) -> Result<(Vec<Event>, Revision)> {
    let end = crate::prefix_end(prefix);
    let mut stmt = conn.prepare_cached(LOG_SELECT)?;
    let mut rows = stmt.query((from, to, prefix, &end[..], limit as i64))?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let revision: Revision = row.get(0)?;
        let key = blob(row, 1)?;
        let prev = match row.get::<_, Option<Revision>>(5)? {
            Some(prev_revision) => Some(KeyValue {
                key: key.clone(),
                value: blob(row, 7)?,
                create_revision: row.get(6)?,
                mod_revision: prev_revision,
            }),
            None => None,
        };
        let event = if row.get::<_, bool>(4)? {
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key,
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: revision,
                },
                prev,
            }
        } else {
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key,
                    value: blob(row, 2)?,
                    create_revision: row.get(3)?,
                    mod_revision: revision,
                },
                prev,
            }
        };
        events.push(event);
    }
    let covered = if events.len() >= limit && limit > 0 {
        events.last().map_or(to, |e| e.kv.mod_revision)
    } else {
        to
    };
    Ok((events, covered))
}
