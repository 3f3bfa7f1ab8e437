//! The on-disk format: opening (and refusing) database files, connection settings, the tables.
//!
//! One table, `log`, holds every write ever made that compaction has not yet removed: its row id *is* the
//! revision (every write gets exactly one), so the log is also the watch history. `meta` holds the schema
//! version and the revisions that must survive a restart even when compaction removed the rows that made
//! them (the current revision never goes backwards).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::{Error, Result, Revision};

/// `PRAGMA application_id` of an rkube store ("rkub"): tells our files from every other SQLite database.
pub(super) const APPLICATION_ID: i32 = 0x726b_7562;
/// Bumped on any incompatible change of the tables below.
pub(super) const SCHEMA_VERSION: i64 = 1;
/// The revision of an empty store. Like etcd, the first write gets revision 2.
pub(super) const INITIAL_REVISION: Revision = 1;

const CREATE_TABLES: &str = "
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
-- value is NULL for a deletion (a tombstone); prev_revision names the live row this write replaced (0: none).
CREATE TABLE log (
    revision INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    value BLOB,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX log_key_revision ON log (key, revision);
";

/// Names of the `meta` rows.
pub(super) const META_SCHEMA_VERSION: &str = "schema_version";
pub(super) const META_CURRENT: &str = "current_revision";
pub(super) const META_COMPACTED: &str = "compacted_revision";
/// Compaction has removed every removable row with a revision ≤ this one (it runs after `compacted_revision`
/// is raised, in small steps, and resumes from here after a restart).
pub(super) const META_PURGED: &str = "purged_revision";

/// The revisions a store keeps in `meta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stored {
    pub current: Revision,
    pub compacted: Revision,
    pub purged: Revision,
}

/// Opens (creating when absent) the store at `path` and returns the writer connection. An existing file is
/// first inspected through a read-only connection so that a file that is not ours is never modified.
pub(super) fn open_writer(path: &Path) -> Result<(Connection, Stored)> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let fresh = match std::fs::metadata(path) {
        Ok(meta) => meta.len() == 0 || inspect(path)? == Inspection::EmptyDatabase,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e.into()),
    };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    if fresh {
        // auto_vacuum can only be chosen before the first table exists.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    configure(&conn)?;
    // The writer checkpoints between batches itself (see `Writer::maybe_checkpoint`), never inside a commit.
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    if fresh {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        tx.execute_batch(CREATE_TABLES)?;
        let mut insert = tx.prepare("INSERT INTO meta (name, value) VALUES (?1, ?2)")?;
        for (name, value) in [
            (META_SCHEMA_VERSION, SCHEMA_VERSION),
            (META_CURRENT, INITIAL_REVISION),
            (META_COMPACTED, 0),
            (META_PURGED, 0),
        ] {
            insert.execute((name, value))?;
        }
        drop(insert);
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.commit()?;
    }
    let stored = read_stored(&conn)?;
    Ok((conn, stored))
}

/// Opens one more connection to an existing store, for reads or for checkpoints.
pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    conn.execute_batch("PRAGMA query_only = ON")?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    // Without the query planner stability guarantee SQLite (built with STAT4) re-prepares a cached
    // statement whenever a bound key changes, i.e. on every use: a parse and plan per write.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(32);
    // synchronous=FULL in WAL mode syncs the WAL on every commit: an acknowledged write survives a crash.
    // journal_size_limit keeps the WAL file from staying at its high-water mark after a checkpoint.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA cache_size = -16384;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(())
}

pub(super) fn read_stored(conn: &Connection) -> Result<Stored> {
    let mut stmt = conn.prepare_cached(
        "SELECT (SELECT value FROM meta WHERE name = 'current_revision'),
                (SELECT value FROM meta WHERE name = 'compacted_revision'),
                (SELECT value FROM meta WHERE name = 'purged_revision')",
    )?;
    Ok(stmt.query_row([], |row| {
        Ok(Stored {
            current: row.get(0)?,
            compacted: row.get(1)?,
            purged: row.get(2)?,
        })
    })?)
}

#[derive(Debug, PartialEq, Eq)]
enum Inspection {
    /// A valid SQLite file without any table (and no application id): safe to turn into a store.
    EmptyDatabase,
    Store,
}

/// Decides, without writing anything, whether the existing file at `path` is an rkube store.
fn inspect(path: &Path) -> Result<Inspection> {
    let not_a_store = |reason: String| Error::NotAStore {
        path: path.display().to_string(),
        reason,
    };
    // Corruption and "not a database" show up at the first statement, not at open.
    let sqlite_err = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => not_a_store(e.to_string()),
        _ => Error::Sqlite(e),
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(sqlite_err)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(sqlite_err)?;
    if application_id != APPLICATION_ID {
        if application_id == 0 && tables == 0 {
            return Ok(Inspection::EmptyDatabase);
        }
        return Err(not_a_store(format!(
            "application_id is {application_id:#x}, not rkube's {APPLICATION_ID:#x} (another program's database)"
        )));
    }
    let version: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| not_a_store(format!("no schema version: {e}")))?;
    if version != SCHEMA_VERSION {
        return Err(not_a_store(format!(
            "schema version {version} is not the supported version {SCHEMA_VERSION}"
        )));
    }
    conn.prepare("SELECT revision, key, value, create_revision, prev_revision, deleted FROM log LIMIT 0")
        .map_err(|e| not_a_store(format!("unexpected tables: {e}")))?;
    read_stored(&conn).map_err(|e| not_a_store(format!("unreadable meta rows: {e}")))?;
    Ok(Inspection::Store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &Path) -> String {
        match open_writer(path) {
            Err(Error::NotAStore {
                path: reported,
                reason,
            }) => {
                assert_eq!(reported, path.display().to_string());
                reason
            }
            Err(other) => panic!("expected NotAStore, got {other:?}"),
            Ok(_) => panic!("{} was accepted as a store", path.display()),
        }
    }

    #[test]
    fn a_garbage_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        let garbage: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &garbage).unwrap();
        refused(&path);
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn another_programs_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let other = Connection::open(&path).unwrap();
        other.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT); INSERT INTO accounts VALUES (1, 'x');").unwrap();
        drop(other);
        let before = std::fs::read(&path).unwrap();
        let reason = refused(&path);
        assert!(reason.contains("application_id"), "{reason}");
        assert_eq!(std::fs::read(&path).unwrap(), before);

        // Same application id but a schema from the future: also not ours to touch.
        let path = dir.path().join("future.db");
        open_writer(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE meta SET value = 99 WHERE name = 'schema_version'", [])
            .unwrap();
        drop(conn);
        let reason = refused(&path);
        assert!(reason.contains("schema version 99"), "{reason}");
    }

    #[test]
    fn a_new_store_gets_its_directory_id_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("state.db");
        let (conn, stored) = open_writer(&path).unwrap();
        assert_eq!(
            stored,
            Stored {
                current: INITIAL_REVISION,
                compacted: 0,
                purged: 0
            }
        );
        let id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(id, APPLICATION_ID);
        let auto_vacuum: i64 = conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap();
        assert_eq!(auto_vacuum, 2, "incremental");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // An empty file (e.g. made by a temp-file helper) is a new store, too.
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(open_writer(&empty).unwrap().1.current, INITIAL_REVISION);
    }
}
