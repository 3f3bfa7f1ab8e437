//! rkube-store: a revisioned key-value store with watch — exactly what Kubernetes needs from etcd, and
//! nothing more. It knows nothing of Kubernetes: keys are byte strings, values are opaque bytes.
//!
//! Start reading at [`Backend`], the one contract every backend keeps; [`open`] picks a backend from an
//! endpoint URL (`sqlite://PATH` → [`sqlite::SqliteBackend`], `http://host:port[,…]` / `etcd://…` →
//! [`etcd::EtcdBackend`]). The same conformance suite (`tests/conformance.rs`) runs against both.
//!
//! The guarantees, which every caller may rely on:
//! - one global revision, strictly increasing; every successful write gets exactly one new revision, and a
//!   key's `mod_revision` is the revision of its last write (the API server's `resourceVersion`);
//! - guarded writes: create-if-absent, update/delete only if the key's `mod_revision` still matches — a failed
//!   guard returns the current value so the caller can retry without another read;
//! - watches are ordered, without duplicates or gaps inside the history window, never split a revision, are
//!   resumable from `last + 1`, and a start below the compacted revision is [`Error::Compacted`]. A watcher
//!   too slow to keep up is cut off with [`Error::WatcherTooSlow`], never silently skipped;
//! - an acknowledged write is durable (fsync) and survives `kill -9`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod etcd;
pub mod sqlite;
pub mod testing;

/// A store revision. Revision 0 never names a write: it means "latest" where a revision is optional.
pub type Revision = i64;

/// The largest value the embedded store accepts: the API server's request-body limit (3 MiB).
pub const MAX_VALUE_SIZE: usize = 3 * 1024 * 1024;

/// One key with its value and the revisions that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// A range read: every key starting with `prefix` (and, to continue a paginated read, strictly greater than
/// `start_after`), in key order, as of one revision.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    pub prefix: Bytes,
    /// Resume after this key (the last key of the previous page). Empty: from the start of the prefix.
    pub start_after: Bytes,
    /// The revision to read at; 0 = the current revision. A page sequence passes the first page's revision
    /// to every later page so that all pages show one consistent snapshot.
    pub revision: Revision,
    /// At most this many keys; 0 = no limit.
    pub limit: usize,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys match after the last one returned (ask again with `start_after` = last key).
    pub more: bool,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// The result of a guarded write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// The write happened at this revision; for a put, the new key-value; for a delete, the deleted one
    /// (whose `mod_revision` is the one before the delete).
    Done { revision: Revision, kv: KeyValue },
    /// The guard failed; this is the key's current value (`None`: the key does not exist).
    Conflict { current: Option<KeyValue> },
}

/// What happened to a key in one revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the new key-value. For a delete, the key with an empty value and `mod_revision` = the
    /// revision of the delete.
    pub kv: KeyValue,
    /// The key's value before this event, when it existed (always filled: the API server needs it for
    /// DELETED events and for field/label-selector transitions).
    pub prev: Option<KeyValue>,
}

/// What a watch delivers: whole revisions in ascending order, or a progress mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// Events of one or more whole revisions, ascending, never splitting a revision across messages.
    Events(Vec<Event>),
    /// Every event with revision ≤ this one has been delivered on this watch (there may have been none for
    /// the watched prefix). Never runs ahead of delivered events.
    Progress(Revision),
}

/// Options for [`Backend::watch`].
#[derive(Clone, Debug)]
pub struct WatchRequest {
    pub prefix: Bytes,
    /// First revision to deliver; 0 = only changes after the current revision.
    pub start_revision: Revision,
    /// Send [`WatchMessage::Progress`] at about this interval when nothing else was sent.
    pub progress_interval: Option<Duration>,
}

/// A live watch. Dropping it cancels the watch.
pub struct Watch {
    rx: tokio::sync::mpsc::Receiver<Result<WatchMessage, Error>>,
}

impl Watch {
    /// Wraps a channel fed by a backend's watch task. The task ends the watch by sending an error (or by
    /// dropping its sender when the store closes); it must stop when `rx` is dropped.
    pub fn from_channel(rx: tokio::sync::mpsc::Receiver<Result<WatchMessage, Error>>) -> Self {
        Watch { rx }
    }

    /// The next message; `None` once the watch has ended (after an error, or when the store closed).
    pub async fn next(&mut self) -> Option<Result<WatchMessage, Error>> {
        self.rx.recv().await
    }
}

/// Every way a store operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The empty key is not a key.
    #[error("the key must not be empty")]
    EmptyKey,
    /// The value is larger than this backend accepts.
    #[error("request is too large: value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge { size: usize, limit: usize },
    /// The requested revision has been compacted away.
    #[error("required revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision {requested} is a future revision (current revision {current})")]
    FutureRevision { requested: Revision, current: Revision },
    /// The watcher did not keep up with the write rate and was cut off; resume from the last revision + 1.
    #[error("watcher cut off: it fell too far behind the writes")]
    WatcherTooSlow,
    /// The endpoint URL could not be understood.
    #[error(
        "invalid datastore endpoint {0:?}: expected sqlite://PATH, http://host:port[,host:port] or etcd://host:port"
    )]
    InvalidEndpoint(String),
    /// The database file exists but is not an rkube store (corrupt, or another program's file).
    #[error("{path} is not an rkube store database: {reason}")]
    NotAStore { path: String, reason: String },
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// etcd failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// Filesystem or other I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The store contract. Both backends implement it; the API server holds an `Arc<dyn Backend>`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The current (latest) revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The revision below which history is gone (0 if never compacted).
    async fn compacted_revision(&self) -> Result<Revision>;

    /// One key, at `revision` (0 = latest).
    async fn get(&self, key: &[u8], revision: Revision) -> Result<Option<KeyValue>>;

    /// Keys under a prefix at one revision, with limit and continuation.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// How many keys are under a prefix now.
    async fn count(&self, prefix: &[u8]) -> Result<i64>;

    /// Create `key` only if it does not exist.
    async fn create(&self, key: &[u8], value: Bytes) -> Result<WriteResult>;

    /// Replace `key`'s value only if its `mod_revision` is `expected`.
    async fn update(&self, key: &[u8], value: Bytes, expected: Revision) -> Result<WriteResult>;

    /// Delete `key` only if its `mod_revision` is `expected` (`None`: whatever it is, if it exists).
    async fn delete(&self, key: &[u8], expected: Option<Revision>) -> Result<WriteResult>;

    /// Watch every key under a prefix from a revision.
    async fn watch(&self, req: WatchRequest) -> Result<Watch>;

    /// Discard history below `revision`. Backends also compact by themselves (keeping ≥ 5 minutes).
    async fn compact(&self, revision: Revision) -> Result<()>;
}

/// Where to find the store: `None` or `sqlite://PATH` for the embedded backend (with `default_sqlite_path`
/// when the URL is absent), `http://…`/`https://…`/`etcd://…` (comma-separated) for an etcd cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Sqlite(std::path::PathBuf),
    Etcd(Vec<String>),
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        let invalid = || Error::InvalidEndpoint(url.to_string());
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(invalid());
            }
            return Ok(Endpoint::Sqlite(path.into()));
        }
        let mut endpoints = Vec::new();
        for part in url.split(',') {
            let part = part.trim();
            let hostport = if let Some(rest) = part.strip_prefix("etcd://") {
                format!("http://{rest}")
            } else if part.starts_with("http://") || part.starts_with("https://") {
                part.to_string()
            } else {
                return Err(invalid());
            };
            let authority = hostport.split_once("://").map(|(_, a)| a).unwrap_or_default();
            if authority.is_empty() || authority.contains('/') && !authority.ends_with('/') {
                return Err(invalid());
            }
            endpoints.push(hostport.trim_end_matches('/').to_string());
        }
        if endpoints.is_empty() {
            return Err(invalid());
        }
        Ok(Endpoint::Etcd(endpoints))
    }
}

/// Opens the backend an endpoint names.
pub async fn open(endpoint: &Endpoint) -> Result<std::sync::Arc<dyn Backend>> {
    Ok(match endpoint {
        Endpoint::Sqlite(path) => {
            std::sync::Arc::new(sqlite::SqliteBackend::open(path, Default::default()).await?)
        }
        Endpoint::Etcd(endpoints) => std::sync::Arc::new(etcd::EtcdBackend::connect(endpoints).await?),
    })
}

/// Validates a write's key and value against the limits every backend shares.
pub(crate) fn check_write(key: &[u8], value_len: usize, limit: usize) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if value_len > limit {
        return Err(Error::ValueTooLarge {
            size: value_len,
            limit,
        });
    }
    Ok(())
}

/// The smallest key greater than every key with this prefix (etcd's "range end" for a prefix); empty when
/// no such key exists (prefix of all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            Endpoint::parse("sqlite:///tmp/x.db").unwrap(),
            Endpoint::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:2379,http://127.0.0.1:2381").unwrap(),
            Endpoint::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://127.0.0.1:2381".into()
            ])
        );
        assert_eq!(
            Endpoint::parse("etcd://127.0.0.1:2379").unwrap(),
            Endpoint::Etcd(vec!["http://127.0.0.1:2379".into()])
        );
        assert!(matches!(
            Endpoint::parse("mysql://x"),
            Err(Error::InvalidEndpoint(_))
        ));
        assert!(matches!(
            Endpoint::parse("sqlite://"),
            Err(Error::InvalidEndpoint(_))
        ));
        assert!(matches!(Endpoint::parse(""), Err(Error::InvalidEndpoint(_))));
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
    }
}
