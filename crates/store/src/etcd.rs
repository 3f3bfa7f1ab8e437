//! The etcd v3 backend. (Being written.)


use async_trait::async_trait;
use bytes::Bytes;

use crate::{Backend, RangeRequest, RangeResponse, Result, Revision, Watch, WatchRequest, WriteResult};


pub struct EtcdBackend {}

impl EtcdBackend {
    pub async fn connect(_endpoints: &[String]) -> Result<EtcdBackend> {
        unimplemented!()
    }
}

#[async_trait]
impl Backend for EtcdBackend {
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
