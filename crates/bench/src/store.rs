//! `rkube-bench store`: throughput and latency of the store contract on one backend.
//!
//! Three phases, each against the same store under a fresh key prefix:
//! 1. writes — every client cycles through its own keys: a create, then guarded updates with the
//!    mod revision it got back (the API server's pattern); the backend's durability settings stay on;
//! 2. reads — every client reads its own keys at the latest revision;
//! 3. watch fan-out (with `--watchers`) — N watchers on one prefix while paced writes land under it: the
//!    delivery latency of every event to every watcher, from the write's acknowledgement to receipt, and a
//!    check that every watcher got every event, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use rkube_store::testing::EtcdServer;
use rkube_store::{Backend, Endpoint, Revision, WatchMessage, WatchRequest, WriteResult};

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// `sqlite://PATH`, `http://host:port[,…]`, or `etcd` to start a throwaway local etcd for this run.
    #[arg(long)]
    endpoint: String,
    /// Concurrent clients in the write and read phases.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Writes in the write phase, and reads in the read phase (over all clients).
    #[arg(long, default_value_t = 100_000)]
    ops: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Watchers of one prefix in the fan-out phase (0: no fan-out phase).
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Writes made under the watched prefix in the fan-out phase.
    #[arg(long, default_value_t = 2000)]
    watch_events: usize,
    /// Those writes per second (0: as fast as the writers go).
    #[arg(long, default_value_t = 1000)]
    watch_rate: u64,
    /// Keys each client cycles through in the write phase.
    #[arg(long, default_value_t = 16)]
    keys_per_client: usize,
}

/// Latencies are recorded in microseconds, up to a minute.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 60_000_000)
}

fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1000.0
}

/// What one client did in one phase.
struct ClientRun {
    latencies: Histogram<u64>,
    errors: usize,
    conflicts: usize,
    first_error: Option<String>,
}

/// A phase's merged result.
struct Phase {
    ops: usize,
    elapsed: Duration,
    latencies: Histogram<u64>,
    errors: usize,
    conflicts: usize,
    first_error: Option<String>,
}

impl Phase {
    fn merge(ops: usize, elapsed: Duration, runs: Vec<ClientRun>) -> Phase {
        let mut phase = Phase {
            ops,
            elapsed,
            latencies: histogram(),
            errors: 0,
            conflicts: 0,
            first_error: None,
        };
        for run in runs {
            phase
                .latencies
                .add(&run.latencies)
                .expect("same histogram bounds");
            phase.errors += run.errors;
            phase.conflicts += run.conflicts;
            phase.first_error = phase.first_error.or(run.first_error);
        }
        phase
    }

    fn per_sec(&self) -> f64 {
        (self.ops as f64 / self.elapsed.as_secs_f64()).round()
    }

    fn describe(&self, what: &str) -> String {
        let mut line = format!(
            "{what}: {} in {:.2} s = {:.0}/s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.per_sec(),
            ms(&self.latencies, 0.5),
            ms(&self.latencies, 0.99),
            self.latencies.max() as f64 / 1000.0,
        );
        if self.errors + self.conflicts > 0 {
            line += &format!(
                "; {} errors, {} conflicts (first error: {})",
                self.errors,
                self.conflicts,
                self.first_error.as_deref().unwrap_or("-")
            );
        }
        line
    }
}

/// How many of `total` operations client `c` of `clients` does.
fn share(total: usize, clients: usize, c: usize) -> usize {
    total / clients + usize::from(c < total % clients)
}

fn client_key(prefix: &str, c: usize, k: usize) -> Bytes {
    Bytes::from(format!("{prefix}w/{c:04}/{k:04}"))
}

async fn write_phase(store: &Arc<dyn Backend>, prefix: &str, args: &StoreArgs, value: &Bytes) -> Phase {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let (store, prefix, value) = (store.clone(), prefix.to_string(), value.clone());
        let (n, keys) = (share(args.ops, args.clients, c), args.keys_per_client.max(1));
        clients.spawn(async move {
            let mut run = ClientRun {
                latencies: histogram(),
                errors: 0,
                conflicts: 0,
                first_error: None,
            };
            let mut mod_revisions: Vec<Option<Revision>> = vec![None; keys];
            for j in 0..n {
                let k = j % keys;
                let key = client_key(&prefix, c, k);
                let t = Instant::now();
                let result = match mod_revisions[k] {
                    None => store.create(&key, value.clone()).await,
                    Some(expected) => store.update(&key, value.clone(), expected).await,
                };
                run.latencies.record(micros(t.elapsed())).expect("in range");
                match result {
                    Ok(WriteResult::Done { revision, .. }) => mod_revisions[k] = Some(revision),
                    Ok(WriteResult::Conflict { current }) => {
                        run.conflicts += 1;
                        mod_revisions[k] = current.map(|kv| kv.mod_revision);
                    }
                    Err(e) => {
                        run.errors += 1;
                        run.first_error.get_or_insert_with(|| e.to_string());
                        mod_revisions[k] = store.get(&key, 0).await.ok().flatten().map(|kv| kv.mod_revision);
                    }
                }
            }
            run
        });
    }
    let runs = clients.join_all().await;
    Phase::merge(args.ops, started.elapsed(), runs)
}

async fn read_phase(store: &Arc<dyn Backend>, prefix: &str, args: &StoreArgs) -> Phase {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let (store, prefix) = (store.clone(), prefix.to_string());
        let n = share(args.ops, args.clients, c);
        // Only keys the write phase created.
        let keys = args
            .keys_per_client
            .max(1)
            .min(share(args.ops, args.clients, c))
            .max(1);
        clients.spawn(async move {
            let mut run = ClientRun {
                latencies: histogram(),
                errors: 0,
                conflicts: 0,
                first_error: None,
            };
            for j in 0..n {
                let key = client_key(&prefix, c, (j * 7 + c) % keys);
                let t = Instant::now();
                let result = store.get(&key, 0).await;
                run.latencies.record(micros(t.elapsed())).expect("in range");
                match result {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        run.errors += 1;
                        run.first_error
                            .get_or_insert_with(|| format!("{key:?} is missing"));
                    }
                    Err(e) => {
                        run.errors += 1;
                        run.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            run
        });
    }
    let runs = clients.join_all().await;
    Phase::merge(args.ops, started.elapsed(), runs)
}

/// The fan-out phase's result.
struct FanOut {
    latencies: Histogram<u64>,
    /// Watchers that missed, repeated or reordered an event, or failed.
    incomplete: usize,
    first_problem: Option<String>,
    write_errors: usize,
}

async fn watch_phase(
    store: &Arc<dyn Backend>,
    prefix: &str,
    args: &StoreArgs,
    value: &Bytes,
) -> anyhow::Result<FanOut> {
    let watch_prefix = Bytes::from(format!("{prefix}watch/"));
    let events = args.watch_events;
    // Every watch is registered before the first write, so each must see every event.
    let mut watchers = tokio::task::JoinSet::new();
    let timeout =
        Duration::from_secs(60) + Duration::from_secs_f64(events as f64 / args.watch_rate.max(1) as f64);
    for _ in 0..args.watchers {
        let request = WatchRequest {
            prefix: watch_prefix.clone(),
            start_revision: 0,
            progress_interval: None,
        };
        let mut watch = store.watch(request).await.context("starting a watcher")?;
        watchers.spawn(async move {
            let mut received: Vec<(Revision, Instant)> = Vec::with_capacity(events);
            let outcome = tokio::time::timeout(timeout, async {
                while received.len() < events {
                    match watch.next().await {
                        Some(Ok(WatchMessage::Events(batch))) => {
                            let now = Instant::now();
                            received.extend(batch.iter().map(|e| (e.kv.mod_revision, now)));
                        }
                        Some(Ok(WatchMessage::Progress(_))) => {}
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("the watch ended".to_string()),
                    }
                }
                Ok(())
            })
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {} events", received.len())));
            (received, outcome)
        });
    }

    let writers = args.clients.clamp(1, 16).min(events.max(1));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (store, value, watch_prefix) = (store.clone(), value.clone(), watch_prefix.clone());
        let n = share(events, writers, w);
        let period =
            (args.watch_rate > 0).then(|| Duration::from_secs_f64(writers as f64 / args.watch_rate as f64));
        tasks.spawn(async move {
            let mut acks = Vec::with_capacity(n);
            let mut errors = 0;
            let mut pace = period.map(tokio::time::interval);
            for i in 0..n {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let key = [&watch_prefix[..], format!("{w:02}/{i:06}").as_bytes()].concat();
                match store.create(&key, value.clone()).await {
                    Ok(WriteResult::Done { revision, .. }) => acks.push((revision, Instant::now())),
                    _ => errors += 1,
                }
            }
            (acks, errors)
        });
    }
    let mut acked: HashMap<Revision, Instant> = HashMap::with_capacity(events);
    let mut write_errors = 0;
    for (acks, errors) in tasks.join_all().await {
        acked.extend(acks);
        write_errors += errors;
    }
    let write_time = started.elapsed();
    let mut expected: Vec<Revision> = acked.keys().copied().collect();
    expected.sort_unstable();

    let mut fan_out = FanOut {
        latencies: histogram(),
        incomplete: 0,
        first_problem: None,
        write_errors,
    };
    for (received, outcome) in watchers.join_all().await {
        let revisions: Vec<Revision> = received.iter().map(|(r, _)| *r).collect();
        let problem = match outcome {
            Err(e) => Some(e),
            Ok(()) if revisions != expected => Some("events missing, repeated or out of order".to_string()),
            Ok(()) => None,
        };
        if let Some(problem) = problem {
            fan_out.incomplete += 1;
            fan_out.first_problem.get_or_insert(problem);
        }
        for (revision, at) in received {
            if let Some(acked_at) = acked.get(&revision) {
                // An event can beat its own acknowledgement to a watcher: that is zero latency.
                fan_out
                    .latencies
                    .record(micros(at.saturating_duration_since(*acked_at)))
                    .expect("in range");
            }
        }
    }
    println!(
        "watch: {} watchers × {} events written in {:.2} s ({} write errors)",
        args.watchers,
        expected.len(),
        write_time.as_secs_f64(),
        write_errors
    );
    Ok(fan_out)
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.ops < args.clients {
        bail!("need at least one client and at least one op per client");
    }
    // A throwaway etcd lives as long as this function; it is dropped after the store.
    let mut etcd: Option<EtcdServer> = None;
    let (backend, endpoint) = if args.endpoint == "etcd" {
        let server = tokio::task::spawn_blocking(EtcdServer::start)
            .await?
            .context("starting etcd")?;
        let endpoint = Endpoint::Etcd(vec![server.endpoint()]);
        etcd = Some(server);
        ("etcd", endpoint)
    } else {
        let endpoint = Endpoint::parse(&args.endpoint)?;
        let backend = if matches!(endpoint, Endpoint::Sqlite(_)) {
            "sqlite"
        } else {
            "etcd"
        };
        (backend, endpoint)
    };
    let store = rkube_store::open(&endpoint)
        .await
        .with_context(|| format!("opening {endpoint:?}"))?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let prefix = format!("/bench/{run_id}/");
    // Not all one byte, so that nothing along the way can shrink it.
    let value = Bytes::from(
        (0..args.value_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );

    println!(
        "store benchmark: backend {backend} ({endpoint:?}), {} clients, {} ops, {}-byte values",
        args.clients, args.ops, args.value_size
    );
    let writes = write_phase(&store, &prefix, &args, &value).await;
    println!("{}", writes.describe("writes"));
    let reads = read_phase(&store, &prefix, &args).await;
    println!("{}", reads.describe("reads"));
    let fan_out = if args.watchers > 0 {
        Some(watch_phase(&store, &prefix, &args, &value).await?)
    } else {
        None
    };
    if let Some(f) = &fan_out {
        println!(
            "watch delivery: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {}",
            ms(&f.latencies, 0.5),
            ms(&f.latencies, 0.99),
            f.latencies.max() as f64 / 1000.0,
            match &f.first_problem {
                None => "every watcher got every event, in order".to_string(),
                Some(p) => format!("{} watchers incomplete (first: {p})", f.incomplete),
            }
        );
    }
    drop(store);
    drop(etcd);

    let result = serde_json::json!({
        "benchmark": "store",
        "backend": backend,
        "clients": args.clients,
        "ops": args.ops,
        "value_size": args.value_size,
        "writes_per_sec": writes.per_sec(),
        "write_p50_ms": ms(&writes.latencies, 0.5),
        "write_p99_ms": ms(&writes.latencies, 0.99),
        "write_max_ms": writes.latencies.max() as f64 / 1000.0,
        "write_errors": writes.errors,
        "write_conflicts": writes.conflicts,
        "reads_per_sec": reads.per_sec(),
        "read_p50_ms": ms(&reads.latencies, 0.5),
        "read_p99_ms": ms(&reads.latencies, 0.99),
        "read_errors": reads.errors,
        "watchers": args.watchers,
        "watch_events": fan_out.as_ref().map(|_| args.watch_events),
        "watch_rate": fan_out.as_ref().map(|_| args.watch_rate),
        "watch_p50_ms": fan_out.as_ref().map(|f| ms(&f.latencies, 0.5)),
        "watch_p99_ms": fan_out.as_ref().map(|f| ms(&f.latencies, 0.99)),
        "watch_max_ms": fan_out.as_ref().map(|f| f.latencies.max() as f64 / 1000.0),
        "watchers_incomplete": fan_out.as_ref().map(|f| f.incomplete),
        "watch_write_errors": fan_out.as_ref().map(|f| f.write_errors),
    });
    println!("{result}");
    // The numbers are printed either way; a run that lost data or requests must not pass as a result.
    let incomplete = fan_out.as_ref().map_or(0, |f| f.incomplete + f.write_errors);
    if writes.errors + writes.conflicts + reads.errors + incomplete > 0 {
        bail!("the run had failed requests or incomplete watchers (see above)");
    }
    Ok(())
}
