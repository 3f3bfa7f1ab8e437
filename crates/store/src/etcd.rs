//! The etcd v3 backend: the [`Backend`] contract over an etcd cluster, through `etcd-client`.
//!
//! Mapping of the contract onto etcd:
//! - reads are linearizable ranges; the store revision is the response header's revision;
//! - guarded writes are one txn each: the guard compares `create_revision`/`version`/`mod_revision`, the
//!   success branch writes (asking for `prev_kv`), the failure branch reads the key so a failed guard
//!   returns the current value in the same round trip;
//! - watches use `prev_kv` and, when progress was asked for, `progress_notify` (see `WatchTask` for how
//!   progress marks are kept from running ahead of events);
//! - a background compactor, like kube-apiserver's, compacts every [`EtcdOptions::compaction_interval`] to
//!   the revision it saw one interval earlier, so at least one interval of history is kept.
//!
//! Operating note: a watch started at a past revision gets idle progress marks only once it is known to
//! have caught up — it received a live event, or one of etcd's own progress notifications. For a prefix
//! that stays quiet, run etcd with `--experimental-watch-progress-notify-interval` of a few seconds (its
//! default is 10 minutes). Watches from "now" get marks at once.
//!
//! etcd 3.4 has no call that returns the compacted revision. [`EtcdBackend`] remembers the highest one it
//! has seen (its own compactions, compaction errors, cancelled watches) and, when a read at that revision
//! fails as compacted, asks etcd by opening a watch at revision 1, which etcd cancels at once with the
//! compacted revision.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient, PutOptions,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions, WatchResponse, WatchStream,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::{
    Backend, Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision, Watch,
    WatchMessage, WatchRequest, WriteResult,
};

/// etcd's default `--max-request-bytes`: the largest request (and so roughly the largest value) it accepts.
/// Reported as the limit in [`Error::ValueTooLarge`]; a server started with another limit enforces its own.
pub const ETCD_DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// The key the compaction probe watches; it need not exist.
const PROBE_KEY: &[u8] = b"/rkube/compaction-probe";

/// Tuning for the etcd backend.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// How often the background compactor runs; each run compacts to the revision the previous run saw,
    /// so at least this much history is kept. `None` disables it (tests that inspect history).
    pub compaction_interval: Option<Duration>,
    /// How long `connect` (and a dial of one member) may take before it fails.
    pub connect_timeout: Duration,
    /// How long a read may keep retrying while no member answers (e.g. during a leader election).
    pub retry_timeout: Duration,
    /// Messages one watch buffers for its consumer.
    pub watch_buffer: usize,
    /// How long a full watch buffer may stay full before the watcher is cut off with
    /// [`Error::WatcherTooSlow`].
    pub slow_watcher_grace: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            compaction_interval: Some(Duration::from_secs(5 * 60)),
            connect_timeout: Duration::from_secs(5),
            retry_timeout: Duration::from_secs(10),
            watch_buffer: 1024,
            slow_watcher_grace: Duration::from_secs(1),
        }
    }
}

/// A [`Backend`] on an etcd v3 cluster.
pub struct EtcdBackend {
    /// Kept so the balanced channel's endpoint list lives as long as the backend.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    options: EtcdOptions,
    /// The highest compacted revision seen so far (a lower bound of etcd's).
    compacted: Arc<AtomicI64>,
    compactor: Option<JoinHandle<()>>,
}

impl Drop for EtcdBackend {
    fn drop(&mut self) {
        if let Some(compactor) = self.compactor.take() {
            compactor.abort();
        }
    }
}

impl EtcdBackend {
    /// Connects to an etcd cluster with [`EtcdOptions::default`]. Requests are balanced over `endpoints`
    /// (`http://host:port`) and fail over between them; the call fails unless a member answers.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdBackend> {
        Self::connect_with(endpoints, EtcdOptions::default()).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(endpoints: &[String], options: EtcdOptions) -> Result<EtcdBackend> {
        if endpoints.is_empty() {
            return Err(Error::InvalidEndpoint(String::new()));
        }
        let unreachable = |reason: String| {
            Error::Etcd(etcd_client::Error::EndpointError(format!(
                "no etcd member answered at {}: {reason}",
                endpoints.join(",")
            )))
        };
        // `require_leader`: a member cut off from its cluster refuses requests (and ends watches) instead of
        // serving stale reads or stalling, so requests fail over to a member that has a leader.
        let connect_options = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(connect_options))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut backend = EtcdBackend {
            // Lists of many objects exceed tonic's default 4 MiB response limit.
            kv: client.kv_client().max_decoding_message_size(usize::MAX),
            watch: client.watch_client().max_decoding_message_size(usize::MAX),
            options: options.clone(),
            compacted: Arc::new(AtomicI64::new(0)),
            compactor: None,
            _client: client,
        };
        // The client dials lazily; prove now that a member answers, so a wrong URL fails here, clearly.
        let probe = retry(options.connect_timeout, || {
            let mut kv = backend.kv.clone();
            async move { kv.get(PROBE_KEY, Some(GetOptions::new().with_count_only())).await }
        });
        match tokio::time::timeout(options.connect_timeout, probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "timed out after {:?}",
                    options.connect_timeout
                )));
            }
        }
        if let Some(interval) = options.compaction_interval {
            backend.compactor = Some(tokio::spawn(run_compactor(
                backend.kv.clone(),
                interval,
                backend.compacted.clone(),
            )));
        }
        Ok(backend)
    }

    fn kv(&self) -> KvClient {
        self.kv.clone()
    }

    /// A read, retried while no member answers, with etcd's errors mapped to the contract's.
    async fn read<T, F, Fut>(&self, revision: Revision, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match retry(self.options.retry_timeout, op).await {
            Ok(value) => Ok(value),
            Err(e) => Err(self.map_revision_error(e, revision).await),
        }
    }

    /// Turns etcd's "compacted" / "future revision" errors into the typed ones, with the revisions filled.
    async fn map_revision_error(&self, e: etcd_client::Error, requested: Revision) -> Error {
        match classify(&e) {
            Failure::Compacted => {
                let compacted = self
                    .compacted_revision()
                    .await
                    .unwrap_or_else(|_| self.compacted.load(Ordering::Relaxed));
                Error::Compacted { requested, compacted }
            }
            Failure::FutureRevision => match self.current_revision().await {
                Ok(current) => Error::FutureRevision { requested, current },
                Err(_) => Error::Etcd(e),
            },
            _ => Error::Etcd(e),
        }
    }

    /// A guarded write: the txn is sent once (a write must not be repeated blindly), except when the
    /// request provably never reached a member.
    async fn write(&self, txn: Txn, value_len: usize) -> Result<TxnResponse> {
        let deadline = Instant::now() + self.options.retry_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.kv().txn(txn.clone()).await {
                Ok(response) => return Ok(response),
                Err(e) => match classify(&e) {
                    Failure::TooLarge => {
                        return Err(Error::ValueTooLarge {
                            size: value_len,
                            limit: ETCD_DEFAULT_MAX_REQUEST_BYTES,
                        });
                    }
                    Failure::NotSent if Instant::now() + backoff < deadline => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    _ => return Err(Error::Etcd(e)),
                },
            }
        }
    }

    /// Asks etcd for its compacted revision: a watch at revision 1 is cancelled at once with it.
    async fn probe_compacted_revision(&self) -> Result<Revision> {
        let options = WatchOptions::new().with_start_revision(1);
        let mut stream = self.watch.clone().watch(PROBE_KEY, Some(options)).await?;
        let probe = async {
            while let Some(response) = stream.message().await? {
                if response.compact_revision() > 0 {
                    return Ok(response.compact_revision());
                }
                if response.canceled() {
                    break;
                }
            }
            Err(etcd_client::Error::WatchError(
                "compaction probe ended without an answer".into(),
            ))
        };
        let compacted = tokio::time::timeout(self.options.retry_timeout, probe)
            .await
            .map_err(|_| etcd_client::Error::WatchError("compaction probe timed out".into()))??;
        self.compacted.fetch_max(compacted, Ordering::Relaxed);
        Ok(compacted)
    }

    /// Opens an etcd watch and waits for its "created" answer, so that a watch from "now" sees every
    /// write made after this returns.
    async fn open_watch(
        &self,
        prefix: &[u8],
        start_revision: Revision,
        progress_notify: bool,
    ) -> Result<(WatchStream, Revision)> {
        let timeout = self.options.retry_timeout;
        open_watch(
            self.watch.clone(),
            prefix,
            start_revision,
            progress_notify,
            timeout,
        )
        .await
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn current_revision(&self) -> Result<Revision> {
        let response = self
            .read(0, || {
                let mut kv = self.kv();
                async move { kv.get(PROBE_KEY, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(header_revision(response.header()))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        let known = self.compacted.load(Ordering::Relaxed);
        // Reading at the known compacted revision succeeds unless someone compacted further since.
        let at = known.max(1);
        let read = retry(self.options.retry_timeout, || {
            let mut kv = self.kv();
            async move {
                kv.get(
                    PROBE_KEY,
                    Some(GetOptions::new().with_count_only().with_revision(at)),
                )
                .await
            }
        })
        .await;
        match read {
            Ok(_) => Ok(known),
            Err(e) if matches!(classify(&e), Failure::Compacted) => self.probe_compacted_revision().await,
            Err(e) => Err(Error::Etcd(e)),
        }
    }

    async fn get(&self, key: &[u8], revision: Revision) -> Result<Option<KeyValue>> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let mut response = self
            .read(revision, || {
                let mut kv = self.kv();
                let mut options = GetOptions::new();
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                async move { kv.get(key, Some(options)).await }
            })
            .await?;
        Ok(response.take_kvs().into_iter().next().map(from_etcd))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let (start, end) = range_bounds(&req.prefix, &req.start_after);
        let mut response = self
            .read(req.revision, || {
                let mut kv = self.kv();
                let mut options = GetOptions::new().with_range(end.clone());
                if req.revision > 0 {
                    options = options.with_revision(req.revision);
                }
                if req.limit > 0 {
                    options = options.with_limit(i64::try_from(req.limit).unwrap_or(i64::MAX));
                }
                let start = start.clone();
                async move { kv.get(start, Some(options)).await }
            })
            .await?;
        let revision = if req.revision > 0 {
            req.revision
        } else {
            header_revision(response.header())
        };
        let more = response.more();
        let kvs = response.take_kvs().into_iter().map(from_etcd).collect();
        Ok(RangeResponse { kvs, more, revision })
    }

    async fn count(&self, prefix: &[u8]) -> Result<i64> {
        let (start, end) = range_bounds(prefix, &[]);
        let response = self
            .read(0, || {
                let mut kv = self.kv();
                let options = GetOptions::new().with_range(end.clone()).with_count_only();
                let start = start.clone();
                async move { kv.get(start, Some(options)).await }
            })
            .await?;
        Ok(response.count())
    }

    async fn create(&self, key: &[u8], value: Bytes) -> Result<WriteResult> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.write(txn, value.len()).await?;
        if !response.succeeded() {
            return Ok(WriteResult::Conflict {
                current: current_of(&response),
            });
        }
        let revision = header_revision(response.header());
        let kv = KeyValue {
            key: Bytes::copy_from_slice(key),
            value,
            create_revision: revision,
            mod_revision: revision,
        };
        Ok(WriteResult::Done { revision, kv })
    }

    async fn update(&self, key: &[u8], value: Bytes, expected: Revision) -> Result<WriteResult> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        // `version > 0` keeps an update of a missing key from passing a guard of `mod_revision == 0`.
        let txn = Txn::new()
            .when([
                Compare::version(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.write(txn, value.len()).await?;
        if !response.succeeded() {
            return Ok(WriteResult::Conflict {
                current: current_of(&response),
            });
        }
        let revision = header_revision(response.header());
        let create_revision = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(put) => put.prev_key().map(|prev| prev.create_revision()),
                _ => None,
            })
            .unwrap_or(revision);
        let kv = KeyValue {
            key: Bytes::copy_from_slice(key),
            value,
            create_revision,
            mod_revision: revision,
        };
        Ok(WriteResult::Done { revision, kv })
    }

    async fn delete(&self, key: &[u8], expected: Option<Revision>) -> Result<WriteResult> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let mut guard = vec![Compare::version(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            guard.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(guard)
            .and_then([TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(key, None)]);
        let response = self.write(txn, 0).await?;
        if !response.succeeded() {
            return Ok(WriteResult::Conflict {
                current: current_of(&response),
            });
        }
        let revision = header_revision(response.header());
        let deleted = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(mut delete) => delete.take_prev_kvs().into_iter().next(),
            _ => None,
        });
        match deleted {
            Some(kv) => Ok(WriteResult::Done {
                revision,
                kv: from_etcd(kv),
            }),
            None => Err(Error::Etcd(etcd_client::Error::Internal(
                "etcd deleted a key but returned no previous value".into(),
            ))),
        }
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watch> {
        if req.start_revision > 0 {
            // Fail a start below the compacted revision here rather than on the first `next()`; etcd would
            // cancel the watch a moment after creating it.
            let compacted = self.compacted_revision().await?;
            if req.start_revision < compacted {
                return Err(Error::Compacted {
                    requested: req.start_revision,
                    compacted,
                });
            }
        }
        let progress_notify = req.progress_interval.is_some();
        let (stream, created_revision) = self
            .open_watch(&req.prefix, req.start_revision, progress_notify)
            .await?;
        let (tx, rx) = mpsc::channel(self.options.watch_buffer.max(1));
        let task = WatchTask {
            client: self.watch.clone(),
            prefix: req.prefix,
            progress_interval: req.progress_interval,
            slow_watcher_grace: self.options.slow_watcher_grace,
            retry_timeout: self.options.retry_timeout,
            compacted: self.compacted.clone(),
            tx,
            last_delivered: 0,
            synced: false,
            progress: ProgressState::Idle,
            last_sent: Instant::now(),
        };
        tokio::spawn(task.run(stream, req.start_revision, created_revision));
        Ok(Watch::from_channel(rx))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.kv().compact(revision, None).await {
            Ok(_) => {
                self.compacted.fetch_max(revision, Ordering::Relaxed);
                Ok(())
            }
            // Compacting at or below the compacted revision has nothing left to do.
            Err(e) if matches!(classify(&e), Failure::Compacted) => Ok(()),
            Err(e) => Err(self.map_revision_error(e, revision).await),
        }
    }
}

/// How an etcd error should be treated.
enum Failure {
    /// The revision asked for has been compacted.
    Compacted,
    /// The revision asked for is newer than the store's.
    FutureRevision,
    /// The request exceeds etcd's request size limit (etcd's own check, or gRPC's message limit).
    TooLarge,
    /// The request never reached a member (no connection could be made): safe to resend, even a write.
    NotSent,
    /// The member is unavailable or lost its leader; the request may or may not have been applied.
    Unavailable,
    Other,
}

/// etcd identifies its errors by message (its Go client does the same), gRPC's by code.
fn classify(e: &etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            let code = format!("{:?}", status.code());
            if message.contains("required revision has been compacted") {
                Failure::Compacted
            } else if message.contains("required revision is a future revision") {
                Failure::FutureRevision
            } else if message.contains("request is too large") || message.contains("larger than max") {
                Failure::TooLarge
            } else if code == "Unavailable" && is_connect_failure(message) {
                Failure::NotSent
            } else if message.contains("etcdserver: no leader") {
                // Refused up front by a member without a leader (`require_leader`); nothing was proposed.
                Failure::NotSent
            } else if code == "Unavailable"
                || message.contains("leader changed")
                || message.contains("request timed out")
            {
                Failure::Unavailable
            } else {
                Failure::Other
            }
        }
        etcd_client::Error::TransportError(error) if is_connect_failure(&error.to_string()) => {
            Failure::NotSent
        }
        etcd_client::Error::TransportError(_) => Failure::Unavailable,
        _ => Failure::Other,
    }
}

fn is_connect_failure(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("connection refused")
        || message.contains("tcp connect error")
        || message.contains("error trying to connect")
}

/// Runs a read, retrying while members are unreachable or electing a leader, until `timeout`.
async fn retry<T, F, Fut>(timeout: Duration, mut op: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                let retriable = matches!(classify(&e), Failure::NotSent | Failure::Unavailable);
                if !retriable || Instant::now() + backoff >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// The etcd key range `[start, end)` for keys under `prefix` strictly after `start_after`.
fn range_bounds(prefix: &[u8], start_after: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = crate::prefix_end(prefix);
    if end.is_empty() {
        // No key bounds the prefix from above: etcd's "\0" range end means "every key from start on".
        end = vec![0];
    }
    let mut start = prefix.to_vec();
    if !start_after.is_empty() {
        let mut after = start_after.to_vec();
        after.push(0);
        if after > start {
            start = after;
        }
    }
    if start.is_empty() {
        // The empty key is not a key; "\0" is the smallest one.
        start = vec![0];
    }
    (start, end)
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map(|h| h.revision()).unwrap_or_default()
}

fn from_etcd(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision,
        mod_revision,
    }
}

/// The current value a failed guard's else-branch read.
fn current_of(response: &TxnResponse) -> Option<KeyValue> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next().map(from_etcd),
        _ => None,
    })
}

async fn open_watch(
    mut client: WatchClient,
    prefix: &[u8],
    start_revision: Revision,
    progress_notify: bool,
    timeout: Duration,
) -> Result<(WatchStream, Revision)> {
    let refused = |reason: String| Error::Etcd(etcd_client::Error::WatchError(reason));
    let (start, end) = range_bounds(prefix, &[]);
    let mut options = WatchOptions::new()
        .with_range(end)
        .with_prev_key()
        .with_start_revision(start_revision);
    if progress_notify {
        options = options.with_progress_notify();
    }
    let mut stream = client.watch(start, Some(options)).await?;
    let first = tokio::time::timeout(timeout, stream.message())
        .await
        .map_err(|_| refused(format!("etcd did not confirm the watch within {timeout:?}")))??;
    match first {
        // etcd 3.4 confirms first and cancels a compacted start a moment later; newer ones may refuse at once.
        Some(response) if response.compact_revision() > 0 => Err(Error::Compacted {
            requested: start_revision,
            compacted: response.compact_revision(),
        }),
        Some(response) if response.created() => Ok((stream, header_revision(response.header()))),
        Some(response) if response.canceled() => Err(refused(format!(
            "etcd refused the watch: {}",
            response.cancel_reason()
        ))),
        _ => Err(refused("etcd did not confirm the watch".into())),
    }
}

/// The etcd compactor: every `interval`, compact to the revision seen at the previous run.
async fn run_compactor(mut kv: KvClient, interval: Duration, compacted: Arc<AtomicI64>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous: Option<Revision> = None;
    loop {
        ticker.tick().await;
        let current = match kv.get(PROBE_KEY, Some(GetOptions::new().with_count_only())).await {
            Ok(response) => header_revision(response.header()),
            Err(e) => {
                tracing::warn!(error = %e, "etcd compactor: cannot read the current revision");
                continue;
            }
        };
        if let Some(target) = previous.filter(|&target| target > compacted.load(Ordering::Relaxed)) {
            match kv.compact(target, None).await {
                Ok(_) => {
                    compacted.fetch_max(target, Ordering::Relaxed);
                    tracing::debug!(revision = target, "etcd compactor: compacted");
                }
                // Another client (another API server) compacted further already.
                Err(e) if matches!(classify(&e), Failure::Compacted) => {}
                Err(e) => tracing::warn!(error = %e, revision = target, "etcd compactor: compaction failed"),
            }
        }
        previous = Some(current);
    }
}

/// Where the idle-progress handshake stands (see [`WatchTask`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressState {
    /// No progress request outstanding.
    Idle,
    /// A progress request was sent; its answer is the candidate mark.
    Requested,
    /// The candidate arrived; a second request confirms it (see [`WatchTask`]).
    Confirming(Revision),
}

/// What an answer to a progress request leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressStep {
    Nothing,
    /// Send a second request to confirm the candidate.
    AskAgain,
    /// Pass this mark on to the consumer.
    Emit(Revision),
}

impl ProgressState {
    /// The handshake's transition on an answer carrying `revision`, for a watcher that is `synced` (or not)
    /// and has delivered everything up to `last_delivered`.
    fn on_answer(self, revision: Revision, synced: bool, last_delivered: Revision) -> (Self, ProgressStep) {
        match self {
            // A stray answer (after a resume, say) is no evidence of anything.
            ProgressState::Idle => (ProgressState::Idle, ProgressStep::Nothing),
            // A watcher still catching up on history would get a mark far ahead of its events.
            ProgressState::Requested if !synced => (ProgressState::Idle, ProgressStep::Nothing),
            ProgressState::Requested => (ProgressState::Confirming(revision), ProgressStep::AskAgain),
            // Events delivered meanwhile may already cover more than the candidate; never go backwards.
            ProgressState::Confirming(candidate) if candidate < last_delivered => {
                (ProgressState::Idle, ProgressStep::Nothing)
            }
            ProgressState::Confirming(candidate) => (ProgressState::Idle, ProgressStep::Emit(candidate)),
        }
    }
}

/// Why a watch task ended.
enum End {
    /// The consumer dropped its [`Watch`].
    Dropped,
    /// The watch failed; the consumer gets this error last.
    Failed(Error),
}

/// Feeds one [`Watch`] from one etcd watch stream.
///
/// Progress marks come from two places. etcd's periodic notifications (`progress_notify`, sent per
/// watcher, in order with its events, only once the watcher has caught up) are passed on as they come.
/// When the consumer asked for a shorter `progress_interval`, the task asks etcd for progress on a timer
/// while the watch is idle. etcd 3.4.23 (what we test with; later releases fixed it) answers such a
/// request outside the watcher's event queue (with watch id -1), so the answer can overtake events of
/// revisions it covers (`progress_marks_hold_under_bursty_load` saw it happen), and for a watcher
/// still catching up on history it can be far ahead. So an answer is only used once the watcher is known
/// to be caught up, and only after a second request's answer has arrived: by then etcd's send loop has had
/// a whole round trip with nothing else to send but those queued events.
struct WatchTask {
    client: WatchClient,
    prefix: Bytes,
    progress_interval: Option<Duration>,
    slow_watcher_grace: Duration,
    retry_timeout: Duration,
    compacted: Arc<AtomicI64>,
    tx: mpsc::Sender<Result<WatchMessage, Error>>,
    /// Every event with a revision ≤ this one has been delivered; the resume point is one past it.
    last_delivered: Revision,
    /// The etcd watcher has caught up with the store (so etcd's progress answers apply to it).
    synced: bool,
    progress: ProgressState,
    /// When the consumer was last sent something.
    last_sent: Instant,
}

impl WatchTask {
    async fn run(mut self, stream: WatchStream, start_revision: Revision, created_revision: Revision) {
        let end = self.pump(stream, start_revision, created_revision).await;
        if let End::Failed(error) = end {
            // The etcd stream is gone by now; waiting here only holds this task until the consumer reads
            // what it has buffered or drops the watch.
            let _ = self.tx.send(Err(error)).await;
        }
    }

    async fn pump(&mut self, mut stream: WatchStream, start_revision: Revision, created: Revision) -> End {
        self.on_created(start_revision, created);
        let period = self.progress_interval.unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.tx.closed() => return End::Dropped,
                message = stream.message() => {
                    let broken = match message {
                        Ok(Some(response)) => {
                            if let Err(end) = self.on_response(&mut stream, response).await {
                                return end;
                            }
                            continue;
                        }
                        Ok(None) => etcd_client::Error::WatchError("etcd closed the watch stream".into()),
                        Err(e) => e,
                    };
                    match self.resume(broken).await {
                        Ok(resumed) => stream = resumed,
                        Err(end) => return end,
                    }
                }
                _ = ticker.tick(), if self.progress_interval.is_some() => {
                    // Half a period of silence is enough: the answer takes two round trips, and a
                    // mark sent just after the previous tick must not make us skip a whole period.
                    let idle = self.last_sent.elapsed() >= period / 2 && self.progress == ProgressState::Idle;
                    if idle && self.synced && stream.request_progress().await.is_ok() {
                        self.progress = ProgressState::Requested;
                    }
                }
            }
        }
    }

    fn on_created(&mut self, start_revision: Revision, created: Revision) {
        if start_revision == 0 {
            self.last_delivered = created;
        } else {
            self.last_delivered = self.last_delivered.max(start_revision - 1);
        }
        // etcd puts a watcher from "now" or from the future straight into its synced group.
        self.synced = start_revision == 0 || start_revision > created;
        self.progress = ProgressState::Idle;
    }

    async fn on_response(&mut self, stream: &mut WatchStream, response: WatchResponse) -> Result<(), End> {
        if response.compact_revision() > 0 {
            let compacted = response.compact_revision();
            self.compacted.fetch_max(compacted, Ordering::Relaxed);
            return Err(End::Failed(Error::Compacted {
                requested: self.last_delivered + 1,
                compacted,
            }));
        }
        if response.canceled() {
            let reason = format!("etcd cancelled the watch: {}", response.cancel_reason());
            return Err(End::Failed(Error::Etcd(etcd_client::Error::WatchError(reason))));
        }
        if response.created() {
            return Ok(());
        }
        let revision = header_revision(response.header());
        if !response.events().is_empty() {
            let events: Vec<Event> = response.events().iter().map(to_event).collect();
            let last = events.last().map(|e| e.kv.mod_revision).unwrap_or(revision);
            self.deliver(WatchMessage::Events(events)).await?;
            self.last_delivered = self.last_delivered.max(last);
            // etcd stamps a batch of history with the store revision it read up to, and a live event with
            // its own revision; a batch that ends at its stamp has caught up, after which etcd keeps the
            // watcher in its synced group.
            if revision == last {
                self.synced = true;
            }
            return Ok(());
        }
        if response.watch_id() >= 0 {
            // etcd's own periodic notification: ordered with this watcher's events, and sent only to a
            // watcher that has caught up.
            self.synced = true;
            if self.progress_interval.is_some() && revision >= self.last_delivered {
                self.deliver(WatchMessage::Progress(revision)).await?;
                self.last_delivered = revision;
            }
            return Ok(());
        }
        // An answer to our progress request (watch id -1).
        let (next, step) = self
            .progress
            .on_answer(revision, self.synced, self.last_delivered);
        self.progress = next;
        match step {
            ProgressStep::Nothing => {}
            ProgressStep::AskAgain => {
                if stream.request_progress().await.is_err() {
                    self.progress = ProgressState::Idle;
                }
            }
            ProgressStep::Emit(candidate) => {
                self.deliver(WatchMessage::Progress(candidate)).await?;
                self.last_delivered = candidate;
            }
        }
        Ok(())
    }

    /// Hands a message to the consumer; a consumer whose buffer stays full for the grace period is cut off.
    async fn deliver(&mut self, message: WatchMessage) -> Result<(), End> {
        self.last_sent = Instant::now();
        match self.tx.try_send(Ok(message)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(End::Dropped),
            Err(mpsc::error::TrySendError::Full(message)) => {
                match tokio::time::timeout(self.slow_watcher_grace, self.tx.send(message)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(End::Dropped),
                    Err(_) => Err(End::Failed(Error::WatcherTooSlow)),
                }
            }
        }
    }

    /// Reopens the watch after its stream broke (a member died, a connection dropped), from one past the
    /// last delivered revision, on whichever member answers.
    async fn resume(&mut self, error: etcd_client::Error) -> Result<WatchStream, End> {
        let from = self.last_delivered + 1;
        tracing::debug!(error = %error, from, "etcd watch stream broke; resuming");
        let deadline = Instant::now() + self.retry_timeout;
        let mut backoff = Duration::from_millis(50);
        let mut last_error = Error::Etcd(error);
        loop {
            if self.tx.is_closed() {
                return Err(End::Dropped);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= backoff {
                return Err(End::Failed(last_error));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(1000));
            let progress_notify = self.progress_interval.is_some();
            match open_watch(self.client.clone(), &self.prefix, from, progress_notify, left).await {
                Ok((stream, created)) => {
                    self.on_created(from, created);
                    return Ok(stream);
                }
                Err(Error::Compacted { requested, compacted }) => {
                    self.compacted.fetch_max(compacted, Ordering::Relaxed);
                    return Err(End::Failed(Error::Compacted { requested, compacted }));
                }
                Err(e) => last_error = e,
            }
        }
    }
}

fn to_event(event: &etcd_client::Event) -> Event {
    let kind = match event.event_type() {
        EventType::Put => EventKind::Put,
        EventType::Delete => EventKind::Delete,
    };
    let kv = event.kv().cloned().map(from_etcd).unwrap_or_else(|| KeyValue {
        key: Bytes::new(),
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: 0,
    });
    let prev = event.prev_kv().cloned().map(from_etcd);
    Event { kind, kv, prev }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_answers_are_used_only_once_confirmed() {
        let (state, step) = ProgressState::Requested.on_answer(10, true, 7);
        assert_eq!(
            (state, step),
            (ProgressState::Confirming(10), ProgressStep::AskAgain)
        );
        // The candidate, not the newer confirming answer, is what gets emitted.
        assert_eq!(
            state.on_answer(12, true, 7),
            (ProgressState::Idle, ProgressStep::Emit(10))
        );
        // The same revision again is a valid (idle) mark.
        assert_eq!(
            ProgressState::Confirming(7).on_answer(7, true, 7),
            (ProgressState::Idle, ProgressStep::Emit(7))
        );
    }

    #[test]
    fn progress_answers_never_run_ahead_or_backwards() {
        // Not known to have caught up on history: the answer is ignored.
        assert_eq!(
            ProgressState::Requested.on_answer(10, false, 3),
            (ProgressState::Idle, ProgressStep::Nothing)
        );
        // Events beyond the candidate arrived meanwhile.
        assert_eq!(
            ProgressState::Confirming(10).on_answer(12, true, 11),
            (ProgressState::Idle, ProgressStep::Nothing)
        );
        // Nobody asked.
        assert_eq!(
            ProgressState::Idle.on_answer(10, true, 3),
            (ProgressState::Idle, ProgressStep::Nothing)
        );
    }

    #[test]
    fn range_bounds_cover_the_prefix() {
        assert_eq!(range_bounds(b"/a/", b""), (b"/a/".to_vec(), b"/a0".to_vec()));
        assert_eq!(range_bounds(b"", b""), (vec![0], vec![0]));
        assert_eq!(range_bounds(b"\xff", b""), (b"\xff".to_vec(), vec![0]));
    }

    #[test]
    fn range_bounds_continue_strictly_after_the_last_key() {
        assert_eq!(
            range_bounds(b"/a/", b"/a/x"),
            (b"/a/x\0".to_vec(), b"/a0".to_vec())
        );
        // A continuation key before the prefix cannot widen the range.
        assert_eq!(range_bounds(b"/b/", b"/a/x"), (b"/b/".to_vec(), b"/b0".to_vec()));
    }
}
