//! The embedded backend: SQLite in WAL mode with one group-committing writer task. (Being written.)

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Backend, RangeRequest, RangeResponse, Result, Revision, Watch, WatchRequest, WriteResult};

/// Tuning for the embedded backend.
#[derive(Clone, Debug, Default)]
pub struct SqliteOptions {}

pub struct SqliteBackend {}

impl SqliteBackend {
    pub async fn open(_path: &Path, _options: SqliteOptions) -> Result<SqliteBackend> {
        unimplemented!()
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn current_revision(&self) -> Result<Revision> {
        unimplemented!()
    }
    async fn compacted_revision(&self) -> Result<Revision> {
        unimplemented!()
    }
    async fn get(&self, _key: &[u8], _revision: Revision) -> Result<Option<crate::KeyValue>> {
        unimplemented!()
    }
    async fn range(&self, _req: RangeRequest) -> Result<RangeResponse> {
        unimplemented!()
    }
    async fn count(&self, _prefix: &[u8]) -> Result<i64> {
        unimplemented!()
    }
    async fn create(&self, _key: &[u8], _value: Bytes) -> Result<WriteResult> {
        unimplemented!()
    }
    async fn update(&self, _key: &[u8], _value: Bytes, _expected: Revision) -> Result<WriteResult> {
        unimplemented!()
    }
    async fn delete(&self, _key: &[u8], _expected: Option<Revision>) -> Result<WriteResult> {
        unimplemented!()
    }
    async fn watch(&self, _req: WatchRequest) -> Result<Watch> {
        unimplemented!()
    }
    async fn compact(&self, _revision: Revision) -> Result<()> {
        unimplemented!()
    }
}
