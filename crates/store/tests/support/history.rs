//! A client that runs guarded operations on a store and records each one — invocation and return times
//! from a monotonic clock, the request, the answer — as a history for the linearizability checker.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rkube_store::{Backend, KeyValue, WriteResult};

use super::linearizability::{Op, Operation, Outcome, Time, Version};

pub struct RecordingClient {
    pub id: usize,
    store: Arc<dyn Backend>,
    /// The shared start of the history, so all clients' times are comparable.
    epoch: Instant,
    pub history: Vec<Operation>,
}

/// The version a stored key-value stands for; the tests write decimal numbers as values.
pub fn version(kv: &KeyValue) -> Version {
    let text = std::str::from_utf8(&kv.value).expect("test values are text");
    Version {
        value: text
            .parse()
            .unwrap_or_else(|_| panic!("value {text:?} of {kv:?} is not a test value")),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }
}

impl RecordingClient {
    pub fn new(id: usize, store: Arc<dyn Backend>, epoch: Instant) -> Self {
        RecordingClient {
            id,
            store,
            epoch,
            history: Vec::new(),
        }
    }

    fn now(&self) -> Time {
        self.epoch.elapsed().as_nanos() as Time
    }

    fn record(&mut self, key: &str, op: Op, outcome: Outcome, invoke: Time) -> Outcome {
        let ret = self.now();
        self.history.push(Operation {
            client: self.id,
            key: key.to_string(),
            op,
            outcome,
            invoke,
            ret,
        });
        outcome
    }

    pub async fn get(&mut self, key: &str) -> Option<Version> {
        let invoke = self.now();
        let found = self
            .store
            .get(key.as_bytes(), 0)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        let seen = found.as_ref().map(version);
        self.record(key, Op::Get, Outcome::Read(seen), invoke);
        seen
    }

    pub async fn create(&mut self, key: &str, value: u64) -> Outcome {
        let invoke = self.now();
        let result = self
            .store
            .create(key.as_bytes(), Bytes::from(value.to_string()))
            .await;
        let result = result.unwrap_or_else(|e| panic!("create {key}: {e}"));
        if let WriteResult::Done { revision, kv } = &result {
            assert_eq!(
                kv.create_revision, *revision,
                "a created key's create revision is the create's"
            );
        }
        let outcome = self.written(key, value, result);
        self.record(key, Op::Create { value }, outcome, invoke)
    }

    pub async fn update(&mut self, key: &str, value: u64, expected: i64) -> Outcome {
        let invoke = self.now();
        let result = self
            .store
            .update(key.as_bytes(), Bytes::from(value.to_string()), expected)
            .await;
        let outcome = self.written(key, value, result.unwrap_or_else(|e| panic!("update {key}: {e}")));
        self.record(key, Op::Update { value, expected }, outcome, invoke)
    }

    pub async fn delete(&mut self, key: &str, expected: Option<i64>) -> Outcome {
        let invoke = self.now();
        let result = self.store.delete(key.as_bytes(), expected).await;
        let outcome = match result.unwrap_or_else(|e| panic!("delete {key}: {e}")) {
            WriteResult::Done { revision, kv } => {
                assert_eq!(kv.key, key.as_bytes(), "a delete reports the deleted key");
                assert!(
                    kv.mod_revision < revision,
                    "the deleted {kv:?} predates the delete at {revision}"
                );
                Outcome::Deleted {
                    revision,
                    prev: version(&kv),
                }
            }
            WriteResult::Conflict { current } => Outcome::Conflict {
                current: current.as_ref().map(version),
            },
        };
        self.record(key, Op::Delete { expected }, outcome, invoke)
    }

    /// A put's answer, after checking that a success reports the key-value it wrote.
    fn written(&self, key: &str, value: u64, result: WriteResult) -> Outcome {
        match result {
            WriteResult::Done { revision, kv } => {
                assert_eq!(kv.key, key.as_bytes());
                assert_eq!(
                    kv.value,
                    value.to_string().as_bytes(),
                    "a write reports the value it wrote"
                );
                assert_eq!(
                    kv.mod_revision, revision,
                    "a write's kv carries the write's revision"
                );
                Outcome::Written { revision }
            }
            WriteResult::Conflict { current } => Outcome::Conflict {
                current: current.as_ref().map(version),
            },
        }
    }
}
