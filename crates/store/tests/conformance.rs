//! The store conformance suite: one set of checks of the [`Backend`] contract, run against both backends
//! (`sqlite::…` on a fresh database in a temp dir, `etcd::…` on a fresh real etcd member per test).
//!
//! Each check is a plain async function in [`suite`] taking the test's store; [`conformance_suite!`]
//! instantiates every one of them once per backend, so a check cannot be forgotten for one backend.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rkube_store::{
    Backend, Error, Event, EventKind, KeyValue, RangeRequest, Revision, Watch, WatchMessage, WatchRequest,
    WriteResult,
};
use support::backends::{TestStore, wait_until};

/// Instantiates every listed suite function as a test for each backend.
macro_rules! conformance_suite {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store = crate::TestStore::sqlite(stringify!($check)).await;
                    crate::suite::$check(&store).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store = crate::TestStore::etcd(stringify!($check)).await;
                    crate::suite::$check(&store).await;
                }
            )*
        }
    };
}

conformance_suite!(
    guarded_writes_and_conflicts,
    revisions_increase_by_one_per_write,
    reads_at_past_revisions,
    future_revisions_are_an_error,
    pagination_is_one_snapshot_while_writes_continue,
    count_counts_live_keys_under_a_prefix,
    watch_delivers_every_revision_once_in_order,
    watch_resumes_from_last_revision_plus_one,
    watch_from_an_old_revision_catches_up_while_writes_continue,
    watch_reports_previous_values,
    watch_below_the_compacted_revision_is_an_error,
    progress_never_runs_ahead_of_events,
    slow_watcher_is_cut_off_not_skipped,
    bad_input_is_rejected,
    guarded_read_modify_write_is_linearizable,
);

/// Long enough for a loaded CI machine; the happy path takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(30);

fn done(result: WriteResult) -> (Revision, KeyValue) {
    match result {
        WriteResult::Done { revision, kv } => (revision, kv),
        WriteResult::Conflict { current } => {
            panic!("expected the write to succeed, got a conflict: {current:?}")
        }
    }
}

fn conflict(result: WriteResult) -> Option<KeyValue> {
    match result {
        WriteResult::Conflict { current } => current,
        WriteResult::Done { revision, kv } => {
            panic!("expected a conflict, the write happened at {revision}: {kv:?}")
        }
    }
}

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// The next message, failing the test if none comes within the deadline.
async fn next_message(watch: &mut Watch) -> Option<Result<WatchMessage, Error>> {
    tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("the watch went silent")
}

/// Reads events until one with revision ≥ `until` has arrived; checks ascending revisions and non-empty
/// event messages on the way. Progress messages are skipped.
async fn events_until(watch: &mut Watch, until: Revision) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    while events.last().is_none_or(|e| e.kv.mod_revision < until) {
        match next_message(watch).await {
            Some(Ok(WatchMessage::Events(batch))) => {
                assert!(!batch.is_empty(), "an events message carries events");
                events.extend(batch);
            }
            Some(Ok(WatchMessage::Progress(_))) => {}
            Some(Err(e)) => panic!("the watch failed: {e}"),
            None => panic!("the watch ended"),
        }
    }
    assert_strictly_ascending(&events);
    events
}

fn assert_strictly_ascending(events: &[Event]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].kv.mod_revision < pair[1].kv.mod_revision,
            "events out of order or duplicated: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// A watch from `start`; a backend may refuse a compacted start either here or as the first message.
async fn watch_from(store: &Arc<dyn Backend>, prefix: &Bytes, start: Revision) -> Result<Watch, Error> {
    store
        .watch(WatchRequest {
            prefix: prefix.clone(),
            start_revision: start,
            progress_interval: None,
        })
        .await
}

/// What one acknowledged write must look like as a watch event.
#[derive(Clone, Debug)]
struct Expected {
    revision: Revision,
    kind: EventKind,
    key: Bytes,
    value: Bytes,
    create_revision: Revision,
    prev: Option<KeyValue>,
}

fn assert_event_matches(event: &Event, expected: &Expected) {
    let context = || format!("event {event:?} for the write {expected:?}");
    assert_eq!(event.kind, expected.kind, "{}", context());
    assert_eq!(event.kv.key, expected.key, "{}", context());
    assert_eq!(event.kv.mod_revision, expected.revision, "{}", context());
    assert_eq!(event.kv.value, expected.value, "{}", context());
    if expected.kind == EventKind::Put {
        assert_eq!(
            event.kv.create_revision,
            expected.create_revision,
            "{}",
            context()
        );
    }
    assert_eq!(event.prev, expected.prev, "prev of {}", context());
}

/// Writes a key's lifecycle (create, updates, delete, create again, …) and returns what a watch must show.
/// The caller owns `key`: nobody else writes it.
async fn churn(store: Arc<dyn Backend>, key: Bytes, writes: usize, seed: u64) -> Vec<Expected> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut current: Option<KeyValue> = None;
    let mut expected = Vec::with_capacity(writes);
    for i in 0..writes {
        let new_value = Bytes::from(format!("{}-{seed}-{i}", String::from_utf8_lossy(&key)));
        match current.take() {
            None => {
                let (revision, kv) = done(store.create(&key, new_value.clone()).await.expect("create"));
                expected.push(Expected {
                    revision,
                    kind: EventKind::Put,
                    key: key.clone(),
                    value: new_value,
                    create_revision: revision,
                    prev: None,
                });
                current = Some(kv);
            }
            Some(kv) if rng.random_bool(0.2) => {
                let (revision, deleted) =
                    done(store.delete(&key, Some(kv.mod_revision)).await.expect("delete"));
                assert_eq!(deleted, kv, "a delete returns the deleted key-value");
                expected.push(Expected {
                    revision,
                    kind: EventKind::Delete,
                    key: key.clone(),
                    value: Bytes::new(),
                    create_revision: 0,
                    prev: Some(kv),
                });
            }
            Some(kv) => {
                let (revision, new) = done(
                    store
                        .update(&key, new_value.clone(), kv.mod_revision)
                        .await
                        .expect("update"),
                );
                expected.push(Expected {
                    revision,
                    kind: EventKind::Put,
                    key: key.clone(),
                    value: new_value,
                    create_revision: kv.create_revision,
                    prev: Some(kv),
                });
                current = Some(new);
            }
        }
    }
    expected
}

/// Runs `churn` on `keys` keys under `prefix`, one task per key, and returns every expected event sorted by
/// revision.
async fn churn_concurrently(
    store: &Arc<dyn Backend>,
    prefix: &Bytes,
    keys: usize,
    writes: usize,
) -> Vec<Expected> {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..keys {
        let key = Bytes::from(format!("{}k{k:03}", String::from_utf8_lossy(prefix)));
        tasks.spawn(churn(store.clone(), key, writes, k as u64));
    }
    let mut all: Vec<Expected> = tasks.join_all().await.into_iter().flatten().collect();
    all.sort_by_key(|e| e.revision);
    all
}

mod suite {
    use super::*;

    /// Create-if-absent, update/delete-if-mod-revision, and what a failed guard answers.
    pub async fn guarded_writes_and_conflicts(t: &TestStore) {
        let store = t.store();
        let key = t.key("a");
        let r0 = store.current_revision().await.unwrap();

        let (r1, kv1) = done(store.create(&key, value("v1")).await.unwrap());
        assert_eq!(r1, r0 + 1);
        assert_eq!(
            kv1,
            KeyValue {
                key: key.clone(),
                value: value("v1"),
                create_revision: r1,
                mod_revision: r1
            }
        );
        assert_eq!(store.get(&key, 0).await.unwrap(), Some(kv1.clone()));

        assert_eq!(
            conflict(store.create(&key, value("other")).await.unwrap()),
            Some(kv1.clone())
        );
        assert_eq!(
            conflict(store.update(&key, value("v2"), r1 + 100).await.unwrap()),
            Some(kv1.clone())
        );
        assert_eq!(
            conflict(store.delete(&key, Some(r0)).await.unwrap()),
            Some(kv1.clone())
        );
        assert_eq!(
            store.get(&key, 0).await.unwrap(),
            Some(kv1.clone()),
            "failed guards change nothing"
        );

        let (r2, kv2) = done(store.update(&key, value("v2"), r1).await.unwrap());
        assert_eq!(r2, r1 + 1);
        assert_eq!(
            kv2,
            KeyValue {
                key: key.clone(),
                value: value("v2"),
                create_revision: r1,
                mod_revision: r2
            }
        );
        // The version the update was based on is stale now: the conflict carries the new current value.
        assert_eq!(
            conflict(store.update(&key, value("v3"), r1).await.unwrap()),
            Some(kv2.clone())
        );
        assert_eq!(
            conflict(store.delete(&key, Some(r1)).await.unwrap()),
            Some(kv2.clone())
        );

        let (r3, deleted) = done(store.delete(&key, Some(r2)).await.unwrap());
        assert_eq!(r3, r2 + 1);
        assert_eq!(deleted, kv2, "a delete returns what it deleted");
        assert_eq!(store.get(&key, 0).await.unwrap(), None);

        // Guards on a missing key fail with no current value.
        assert_eq!(conflict(store.update(&key, value("v4"), r2).await.unwrap()), None);
        assert_eq!(conflict(store.delete(&key, Some(r2)).await.unwrap()), None);
        assert_eq!(conflict(store.delete(&key, None).await.unwrap()), None);

        let (r4, kv4) = done(store.create(&key, value("again")).await.unwrap());
        assert_eq!(r4, r3 + 1);
        assert_eq!(kv4.create_revision, r4, "a re-created key starts a new life");
        let (r5, deleted) = done(store.delete(&key, None).await.unwrap());
        assert_eq!((r5, deleted), (r4 + 1, kv4));
        assert_eq!(
            store.current_revision().await.unwrap(),
            r5,
            "five writes, five revisions"
        );
    }

    /// Concurrent writers: every success gets its own revision, with no gaps; failed guards get none.
    pub async fn revisions_increase_by_one_per_write(t: &TestStore) {
        let store = t.store();
        let r0 = store.current_revision().await.unwrap();
        let shared = t.key("shared");
        done(store.create(&shared, value("x")).await.unwrap());
        let (writers, writes) = (8, 40);
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            let (store, prefix, shared) = (store.clone(), t.prefix.clone(), shared.clone());
            tasks.spawn(async move {
                let mut revisions = Vec::new();
                let mut last = 0;
                for i in 0..writes {
                    let key = format!("{prefix}w{w}/{i}");
                    let (revision, _) = done(store.create(key.as_bytes(), value("v")).await.unwrap());
                    assert!(
                        revision > last,
                        "one client's revisions go up: {last} then {revision}"
                    );
                    last = revision;
                    revisions.push(revision);
                    // A failed guard in between must not use up a revision.
                    assert!(conflict(store.create(&shared, value("y")).await.unwrap()).is_some());
                    assert!(conflict(store.update(key.as_bytes(), value("z"), 1).await.unwrap()).is_some());
                }
                revisions
            });
        }
        let mut revisions: Vec<Revision> = tasks.join_all().await.into_iter().flatten().collect();
        revisions.sort_unstable();
        let expected: Vec<Revision> = (r0 + 2..=r0 + 1 + writers * writes).collect();
        assert_eq!(
            revisions, expected,
            "exactly one revision per successful write, no gaps, no repeats"
        );
        assert_eq!(store.current_revision().await.unwrap(), r0 + 1 + writers * writes);
    }

    /// `get` and `range` at earlier revisions show the store as it was then.
    pub async fn reads_at_past_revisions(t: &TestStore) {
        let store = t.store();
        let (a, b, c) = (t.key("a"), t.key("b"), t.key("c"));
        let (r1, a1) = done(store.create(&a, value("a1")).await.unwrap());
        let (r2, b1) = done(store.create(&b, value("b1")).await.unwrap());
        let (r3, a2) = done(store.update(&a, value("a2"), r1).await.unwrap());
        let (r4, _) = done(store.delete(&b, Some(r2)).await.unwrap());
        let (r5, c1) = done(store.create(&c, value("c1")).await.unwrap());

        assert_eq!(store.get(&a, r1 - 1).await.unwrap(), None);
        assert_eq!(store.get(&a, r1).await.unwrap(), Some(a1.clone()));
        assert_eq!(store.get(&a, r2).await.unwrap(), Some(a1.clone()));
        assert_eq!(store.get(&a, r3).await.unwrap(), Some(a2.clone()));
        assert_eq!(store.get(&a, 0).await.unwrap(), Some(a2.clone()));
        assert_eq!(store.get(&b, r3).await.unwrap(), Some(b1.clone()));
        assert_eq!(store.get(&b, r4).await.unwrap(), None);
        assert_eq!(store.get(&c, r4).await.unwrap(), None);

        let prefix = Bytes::from(t.prefix.clone());
        let at = |revision| RangeRequest {
            prefix: prefix.clone(),
            revision,
            ..Default::default()
        };
        let snapshots = [
            (r1, vec![a1.clone()]),
            (r2, vec![a1.clone(), b1.clone()]),
            (r3, vec![a2.clone(), b1.clone()]),
            (r4, vec![a2.clone()]),
            (r5, vec![a2.clone(), c1.clone()]),
        ];
        for (revision, kvs) in snapshots {
            let response = store.range(at(revision)).await.unwrap();
            assert_eq!(response.kvs, kvs, "range at {revision}");
            assert_eq!(
                response.revision, revision,
                "a range reports the revision it read at"
            );
            assert!(!response.more);
        }
        let latest = store.range(at(0)).await.unwrap();
        assert_eq!(latest.kvs, vec![a2, c1]);
        assert_eq!(latest.revision, store.current_revision().await.unwrap());
    }

    /// Reading at a revision the store has not reached yet is an error, not an empty answer.
    pub async fn future_revisions_are_an_error(t: &TestStore) {
        let store = t.store();
        done(store.create(&t.key("a"), value("v")).await.unwrap());
        let current = store.current_revision().await.unwrap();
        let future = current + 10;
        let got = store.get(&t.key("a"), future).await;
        assert!(
            matches!(got, Err(Error::FutureRevision { requested, .. }) if requested == future),
            "{got:?}"
        );
        let request = RangeRequest {
            prefix: Bytes::from(t.prefix.clone()),
            revision: future,
            ..Default::default()
        };
        let got = store.range(request).await;
        assert!(
            matches!(got, Err(Error::FutureRevision { requested, .. }) if requested == future),
            "{got:?}"
        );
    }

    /// A paginated list (limit + start_after, later pages at the first page's revision) is one consistent
    /// snapshot even while other clients keep writing between pages.
    pub async fn pagination_is_one_snapshot_while_writes_continue(t: &TestStore) {
        let store = t.store();
        let prefix = t.sub_prefix("list");
        let base = String::from_utf8_lossy(&prefix).into_owned();
        let key = move |i: usize| Bytes::from(format!("{base}{i:03}"));
        // What each acknowledged write left behind, by revision: (key, Some(kv) | None for a delete).
        let mut log: Vec<(Revision, Bytes, Option<KeyValue>)> = Vec::new();
        for i in (0..60).step_by(2) {
            let (revision, kv) = done(
                store
                    .create(&key(i), value(&format!("initial-{i}")))
                    .await
                    .unwrap(),
            );
            log.push((revision, kv.key.clone(), Some(kv)));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (store, stop, acked) = (store.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(7);
                let mut log = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let k = key(rng.random_range(0..60));
                    let result = match store.get(&k, 0).await.unwrap() {
                        None => store.create(&k, value(&format!("created-{n}"))).await.unwrap(),
                        Some(kv) if rng.random_bool(0.3) => {
                            store.delete(&k, Some(kv.mod_revision)).await.unwrap()
                        }
                        Some(kv) => store
                            .update(&k, value(&format!("updated-{n}")), kv.mod_revision)
                            .await
                            .unwrap(),
                    };
                    let (revision, kv) = done(result);
                    let after = (kv.mod_revision == revision).then_some(kv);
                    log.push((revision, k, after));
                    acked.fetch_add(1, Ordering::Release);
                }
                log
            })
        };

        let mut pages = Vec::new();
        let mut snapshot = 0;
        let mut start_after = Bytes::new();
        loop {
            let seen = acked.load(Ordering::Acquire);
            let page = store
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    start_after: start_after.clone(),
                    revision: snapshot,
                    limit: 7,
                })
                .await
                .unwrap();
            if snapshot == 0 {
                snapshot = page.revision;
            }
            assert_eq!(
                page.revision, snapshot,
                "every page is served at the first page's revision"
            );
            assert!(page.kvs.len() <= 7, "a page holds at most `limit` keys");
            pages.extend(page.kvs.iter().cloned());
            if !page.more {
                break;
            }
            assert!(!page.kvs.is_empty(), "a page that says there is more has keys");
            start_after = page.kvs.last().unwrap().key.clone();
            wait_until(DEADLINE, "the writer wrote between two pages", || {
                let acked = acked.clone();
                async move { acked.load(Ordering::Acquire) >= seen + 3 }
            })
            .await;
        }
        stop.store(true, Ordering::Relaxed);
        log.extend(writer.await.unwrap());
        assert!(
            log.iter().any(|(revision, ..)| *revision > snapshot),
            "writes landed after the snapshot"
        );

        let mut expected: BTreeMap<Bytes, KeyValue> = BTreeMap::new();
        log.sort_by_key(|(revision, ..)| *revision);
        for (_, k, after) in log.into_iter().filter(|(revision, ..)| *revision <= snapshot) {
            match after {
                Some(kv) => expected.insert(k, kv),
                None => expected.remove(&k),
            };
        }
        assert_eq!(
            pages,
            expected.into_values().collect::<Vec<_>>(),
            "the pages are the store at {snapshot}"
        );

        // `more` is exact at the boundary.
        let all = store
            .range(RangeRequest {
                prefix: prefix.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let n = all.kvs.len();
        let exactly = store.range(RangeRequest {
            prefix: prefix.clone(),
            limit: n,
            ..Default::default()
        });
        assert!(
            !exactly.await.unwrap().more,
            "a limit equal to the number of keys leaves no more"
        );
        let one_short = store
            .range(RangeRequest {
                prefix,
                limit: n - 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(one_short.more);
        assert_eq!(one_short.kvs[..], all.kvs[..n - 1]);
    }

    pub async fn count_counts_live_keys_under_a_prefix(t: &TestStore) {
        let store = t.store();
        let (x, y) = (t.sub_prefix("x"), t.sub_prefix("y"));
        let mut x_revisions = Vec::new();
        for i in 0..5 {
            let key = [&x[..], format!("{i}").as_bytes()].concat();
            x_revisions.push(done(store.create(&key, value("v")).await.unwrap()).0);
        }
        for i in 0..3 {
            let key = [&y[..], format!("{i}").as_bytes()].concat();
            done(store.create(&key, value("v")).await.unwrap());
        }
        // A key that merely starts like the prefix's parent must not count ("x" vs "x/").
        done(store.create(&t.key("xylophone"), value("v")).await.unwrap());
        assert_eq!(store.count(&x).await.unwrap(), 5);
        done(
            store
                .delete(&[&x[..], b"0"].concat(), Some(x_revisions[0]))
                .await
                .unwrap(),
        );
        assert_eq!(store.count(&x).await.unwrap(), 4, "deleted keys do not count");
        assert_eq!(store.count(&y).await.unwrap(), 3);
        assert_eq!(store.count(t.prefix.as_bytes()).await.unwrap(), 8);
        assert_eq!(store.count(&t.sub_prefix("nothing")).await.unwrap(), 0);
    }

    /// Concurrent writers churn keys inside and outside the watched prefix: the watch shows exactly the
    /// writes inside, each once, in revision order, with the right values and previous values.
    pub async fn watch_delivers_every_revision_once_in_order(t: &TestStore) {
        let store = t.store();
        let (inside, outside) = (t.sub_prefix("in"), t.sub_prefix("out"));
        let start = store.current_revision().await.unwrap() + 1;
        let mut watch = watch_from(&store, &inside, start).await.unwrap();
        let (expected, _) = tokio::join!(
            churn_concurrently(&store, &inside, 8, 40),
            churn_concurrently(&store, &outside, 4, 40)
        );
        let events = events_until(&mut watch, expected.last().unwrap().revision).await;
        assert_eq!(
            events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
            expected.iter().map(|e| e.revision).collect::<Vec<_>>(),
            "the watch shows exactly the acknowledged writes under its prefix, in order"
        );
        for (event, expected) in events.iter().zip(&expected) {
            assert_event_matches(event, expected);
        }
    }

    /// A watch cut short and resumed from its last revision + 1 delivers exactly the rest; a watch from
    /// revision 0 starts after the current revision.
    pub async fn watch_resumes_from_last_revision_plus_one(t: &TestStore) {
        let store = t.store();
        let prefix = t.sub_prefix("w");
        let start = store.current_revision().await.unwrap() + 1;
        let expected = churn_concurrently(&store, &prefix, 4, 25).await;
        let last = expected.last().unwrap().revision;

        let mut full_watch = watch_from(&store, &prefix, start).await.unwrap();
        let full = events_until(&mut full_watch, last).await;
        assert_eq!(full.len(), expected.len());

        // Read part of the history, stop at a message boundary, and resume.
        let mut first_part: Vec<Event> = Vec::new();
        let mut watch = watch_from(&store, &prefix, start).await.unwrap();
        while first_part.len() < expected.len() / 3 {
            match next_message(&mut watch).await {
                Some(Ok(WatchMessage::Events(batch))) => first_part.extend(batch),
                Some(Ok(WatchMessage::Progress(_))) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(watch);
        let resume_at = first_part.last().unwrap().kv.mod_revision + 1;
        let mut resumed = watch_from(&store, &prefix, resume_at).await.unwrap();
        let rest = if resume_at > last {
            Vec::new()
        } else {
            events_until(&mut resumed, last).await
        };
        let joined: Vec<Event> = first_part.into_iter().chain(rest).collect();
        assert_eq!(
            joined, full,
            "first part + resumed rest = the whole history, nothing lost or repeated"
        );

        // From 0: nothing old, the next write first.
        let mut from_now = watch_from(&store, &prefix, 0).await.unwrap();
        let (revision, _) = done(store.create(&t.key("w/new"), value("new")).await.unwrap());
        let events = events_until(&mut from_now, revision).await;
        assert_eq!(
            events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
            vec![revision]
        );
    }

    /// A watch starting far in the past replays history (from disk, for the embedded store) and then
    /// switches to live events while writers keep going: the switch must neither drop nor repeat events.
    pub async fn watch_from_an_old_revision_catches_up_while_writes_continue(t: &TestStore) {
        let store = t.store();
        let prefix = t.sub_prefix("old");
        let start = store.current_revision().await.unwrap() + 1;
        let mut expected = churn_concurrently(&store, &prefix, 8, 150).await;
        let mut watch = watch_from(&store, &prefix, start).await.unwrap();
        let live_prefix = Bytes::from(format!("{}live/", String::from_utf8_lossy(&prefix)));
        let live = {
            let (store, live_prefix) = (store.clone(), live_prefix.clone());
            tokio::spawn(async move { churn_concurrently(&store, &live_prefix, 8, 60).await })
        };
        // Read while the live writes happen; the last revision is known only once they are done.
        let mut events: Vec<Event> = Vec::new();
        let mut live = live;
        let mut last: Option<Revision> = None;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while last.is_none() || events.last().map(|e| e.kv.mod_revision) < last {
            tokio::select! {
                written = &mut live, if last.is_none() => {
                    expected.extend(written.unwrap());
                    expected.sort_by_key(|e| e.revision);
                    last = expected.last().map(|e| e.revision);
                }
                message = watch.next() => match message {
                    Some(Ok(WatchMessage::Events(batch))) => events.extend(batch),
                    Some(Ok(WatchMessage::Progress(_))) => {}
                    other => panic!("the watch ended: {other:?}"),
                },
                _ = tokio::time::sleep_until(deadline) => panic!("the watch went silent after {} events", events.len()),
            }
        }
        assert_strictly_ascending(&events);
        assert_eq!(
            events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
            expected.iter().map(|e| e.revision).collect::<Vec<_>>(),
            "history then live events, each exactly once"
        );
        for (event, expected) in events.iter().zip(&expected) {
            assert_event_matches(event, expected);
        }
    }

    pub async fn watch_reports_previous_values(t: &TestStore) {
        let store = t.store();
        let key = t.key("p/a");
        let mut watch = watch_from(&store, &t.sub_prefix("p"), 0).await.unwrap();
        let (r1, v1) = done(store.create(&key, value("one")).await.unwrap());
        let (r2, v2) = done(store.update(&key, value("two"), r1).await.unwrap());
        let (r3, _) = done(store.delete(&key, Some(r2)).await.unwrap());
        let (r4, _) = done(store.create(&key, value("three")).await.unwrap());
        let events = events_until(&mut watch, r4).await;
        let expected = [
            Expected {
                revision: r1,
                kind: EventKind::Put,
                key: key.clone(),
                value: value("one"),
                create_revision: r1,
                prev: None,
            },
            Expected {
                revision: r2,
                kind: EventKind::Put,
                key: key.clone(),
                value: value("two"),
                create_revision: r1,
                prev: Some(v1),
            },
            Expected {
                revision: r3,
                kind: EventKind::Delete,
                key: key.clone(),
                value: Bytes::new(),
                create_revision: 0,
                prev: Some(v2),
            },
            Expected {
                revision: r4,
                kind: EventKind::Put,
                key: key.clone(),
                value: value("three"),
                create_revision: r4,
                prev: None,
            },
        ];
        assert_eq!(events.len(), expected.len(), "{events:?}");
        for (event, expected) in events.iter().zip(&expected) {
            assert_event_matches(event, expected);
        }
    }

    /// After compaction, history below the compacted revision is gone — and asking for it says so instead
    /// of silently starting later. History from the compacted revision on is intact.
    pub async fn watch_below_the_compacted_revision_is_an_error(t: &TestStore) {
        let store = t.store();
        let prefix = t.sub_prefix("c");
        let key = t.key("c/a");
        let mut revisions = vec![done(store.create(&key, value("0")).await.unwrap()).0];
        for i in 1..10 {
            let previous = *revisions.last().unwrap();
            revisions.push(done(store.update(&key, value(&i.to_string()), previous).await.unwrap()).0);
        }
        let compact_at = revisions[5];
        store.compact(compact_at).await.unwrap();
        assert_eq!(store.compacted_revision().await.unwrap(), compact_at);

        let below = revisions[2];
        match watch_from(&store, &prefix, below).await {
            Err(Error::Compacted { requested, compacted }) => {
                assert_eq!((requested, compacted), (below, compact_at));
            }
            Err(e) => panic!("a watch below the compacted revision failed with {e} instead of Compacted"),
            Ok(mut watch) => match next_message(&mut watch).await {
                Some(Err(Error::Compacted { .. })) => {}
                other => panic!("a watch from compacted revision {below} must fail, got {other:?}"),
            },
        }
        assert!(matches!(
            store.get(&key, below).await,
            Err(Error::Compacted { .. })
        ));
        let old_range = store.range(RangeRequest {
            prefix: prefix.clone(),
            revision: below,
            ..Default::default()
        });
        assert!(matches!(old_range.await, Err(Error::Compacted { .. })));

        // The window [compacted, current] is still whole.
        assert_eq!(
            store.get(&key, compact_at).await.unwrap().unwrap().value,
            value("5")
        );
        let mut watch = watch_from(&store, &prefix, compact_at + 1).await.unwrap();
        let events = events_until(&mut watch, *revisions.last().unwrap()).await;
        let seen: Vec<Revision> = events.iter().map(|e| e.kv.mod_revision).collect();
        assert_eq!(seen, revisions[6..].to_vec());
        assert_eq!(events[0].prev.as_ref().map(|p| p.value.clone()), Some(value("5")));
        let mut watch = watch_from(&store, &prefix, compact_at)
            .await
            .expect("a watch at the compacted revision");
        let events = events_until(&mut watch, *revisions.last().unwrap()).await;
        assert_eq!(
            events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
            revisions[5..].to_vec()
        );
    }

    /// Progress marks promise that every event up to their revision was delivered: check each mark
    /// against the complete list of acknowledged writes. Writes outside the prefix move the revision on
    /// without events, so marks must also come when the watch itself is idle.
    pub async fn progress_never_runs_ahead_of_events(t: &TestStore) {
        let store = t.store();
        let (inside, outside) = (t.sub_prefix("in"), t.sub_prefix("out"));
        let mut watch = store
            .watch(WatchRequest {
                prefix: inside.clone(),
                start_revision: 0,
                progress_interval: Some(Duration::from_millis(100)),
            })
            .await
            .unwrap();

        let mut writer = {
            let (store, inside, outside) = (store.clone(), inside.clone(), outside.clone());
            tokio::spawn(async move {
                let mut inside_revisions = Vec::new();
                let mut pace = tokio::time::interval(Duration::from_millis(2));
                let started = Instant::now();
                let mut i = 0;
                // Bursts with writes inside the prefix, then stretches with writes only outside it.
                while started.elapsed() < Duration::from_secs(3) {
                    pace.tick().await;
                    i += 1;
                    let burst = (i / 100) % 2 == 0;
                    let prefix = if burst && i % 3 != 0 { &inside } else { &outside };
                    let key = [&prefix[..], format!("{i}").as_bytes()].concat();
                    let (revision, _) = done(store.create(&key, value("v")).await.unwrap());
                    if prefix == &inside {
                        inside_revisions.push(revision);
                    }
                }
                let key = [&outside[..], b"last"].concat();
                let (last, _) = done(store.create(&key, value("v")).await.unwrap());
                (inside_revisions, last)
            })
        };

        // Everything the watch says, in order, until the writer is done and a mark covers its last write.
        let mut stream: Vec<WatchMessage> = Vec::new();
        let mut written: Option<(Vec<Revision>, Revision)> = None;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            tokio::select! {
                result = &mut writer, if written.is_none() => written = Some(result.unwrap()),
                message = watch.next() => {
                    let message = message.expect("the watch ended").expect("the watch failed");
                    let covers_last = match (&message, &written) {
                        (WatchMessage::Progress(r), Some((_, last))) => r >= last,
                        _ => false,
                    };
                    stream.push(message);
                    if covers_last {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    panic!("no progress mark covered the last write: {:?}", written.map(|w| w.1))
                }
            }
        }

        let (inside_revisions, _) = written.unwrap();
        let mut delivered = std::collections::HashSet::new();
        let mut marks = 0;
        for message in &stream {
            match message {
                WatchMessage::Events(events) => delivered.extend(events.iter().map(|e| e.kv.mod_revision)),
                WatchMessage::Progress(mark) => {
                    marks += 1;
                    let missing: Vec<_> = inside_revisions
                        .iter()
                        .filter(|r| *r <= mark && !delivered.contains(r))
                        .collect();
                    assert!(
                        missing.is_empty(),
                        "progress {mark} ran ahead of the events of {missing:?}"
                    );
                }
            }
        }
        let mut delivered: Vec<Revision> = delivered.into_iter().collect();
        delivered.sort_unstable();
        assert_eq!(
            delivered, inside_revisions,
            "the watch delivered exactly the writes under its prefix"
        );
        assert!(marks >= 1);
    }

    /// A watcher that never reads while writes pour in must end with `WatcherTooSlow` after an unbroken run
    /// of events — never skip ahead, stall, or buffer without bound. The backends' buffers differ, so the
    /// write volume grows until the cut-off shows.
    pub async fn slow_watcher_is_cut_off_not_skipped(t: &TestStore) {
        let store = t.store();
        let prefix = t.sub_prefix("slow");
        for (round, writes) in [5_000usize, 20_000, 80_000].into_iter().enumerate() {
            let start = store.current_revision().await.unwrap() + 1;
            let mut watch = watch_from(&store, &prefix, start).await.unwrap();
            let began = Instant::now();
            // Keep writing past the backend's grace period, so that the watcher has been full for longer.
            let min_duration = t.slow_watcher_grace * 3;
            let count = Arc::new(AtomicUsize::new(0));
            let mut writers = tokio::task::JoinSet::new();
            for w in 0..4 {
                let (store, prefix, count) = (store.clone(), prefix.clone(), count.clone());
                writers.spawn(async move {
                    let mut i = 0;
                    while count.fetch_add(1, Ordering::Relaxed) < writes || began.elapsed() < min_duration {
                        i += 1;
                        let key = [&prefix[..], format!("{round}/{w}/{i}").as_bytes()].concat();
                        done(store.create(&key, value("v")).await.unwrap());
                    }
                });
            }
            writers.join_all().await;
            let end = store.current_revision().await.unwrap();

            let mut events: Vec<Event> = Vec::new();
            let ending = loop {
                if events.last().is_some_and(|e| e.kv.mod_revision >= end) {
                    break None;
                }
                match next_message(&mut watch).await {
                    Some(Ok(WatchMessage::Events(batch))) => events.extend(batch),
                    Some(Ok(WatchMessage::Progress(_))) => {}
                    Some(Err(e)) => break Some(e),
                    None => panic!("the watch ended without an error after {} events", events.len()),
                }
            };
            let revisions: Vec<Revision> = events.iter().map(|e| e.kv.mod_revision).collect();
            let unbroken: Vec<Revision> = (start..start + events.len() as Revision).collect();
            assert!(
                revisions == unbroken,
                "the events before the cut-off have gaps or repeats"
            );
            match ending {
                Some(Error::WatcherTooSlow) => {
                    eprintln!(
                        "DEBUG cut off round {round} after {} events of {}",
                        events.len(),
                        end - start + 1
                    );
                    assert!(watch.next().await.is_none(), "nothing follows the cut-off");
                    return;
                }
                Some(e) => panic!("a slow watcher ended with {e} instead of WatcherTooSlow"),
                None => {} // Everything fit in the buffers: write more.
            }
        }
        panic!("a watcher that never read was still not cut off after 80,000 writes");
    }

    /// Empty keys and values over the backend's limit are refused up front, and use no revision.
    pub async fn bad_input_is_rejected(t: &TestStore) {
        let store = t.store();
        let r0 = store.current_revision().await.unwrap();
        assert!(matches!(
            store.create(b"", value("v")).await,
            Err(Error::EmptyKey)
        ));
        assert!(matches!(
            store.update(b"", value("v"), 1).await,
            Err(Error::EmptyKey)
        ));
        assert!(matches!(store.delete(b"", None).await, Err(Error::EmptyKey)));

        let key = t.key("big");
        let too_big = Bytes::from(vec![b'x'; t.value_limit + 1]);
        match store.create(&key, too_big.clone()).await {
            Err(Error::ValueTooLarge { size, limit }) => {
                assert_eq!((size, limit), (t.value_limit + 1, t.value_limit))
            }
            other => panic!("a value over the limit was not refused as too large: {other:?}"),
        }
        assert_eq!(store.get(&key, 0).await.unwrap(), None);
        let accepted = Bytes::from(vec![b'y'; t.largest_accepted_value]);
        let (revision, kv) = done(store.create(&key, accepted.clone()).await.unwrap());
        assert_eq!(revision, r0 + 1, "refused writes use no revision");
        assert_eq!(store.get(&key, 0).await.unwrap().unwrap().value, accepted);
        assert!(matches!(
            store.update(&key, too_big, kv.mod_revision).await,
            Err(Error::ValueTooLarge { .. })
        ));
        assert_eq!(store.get(&key, 0).await.unwrap(), Some(kv));
        assert_eq!(store.current_revision().await.unwrap(), r0 + 1);
    }

    /// 16 clients do guarded read-modify-write (and some creates and deletes) on three shared keys; the
    /// recorded history must be linearizable for a compare-and-set register per key.
    pub async fn guarded_read_modify_write_is_linearizable(t: &TestStore) {
        use support::history::RecordingClient;
        use support::linearizability::{self, Outcome};

        let store = t.store();
        let epoch = Instant::now();
        let keys: Arc<Vec<String>> = Arc::new((0..3).map(|k| format!("{}lin/{k}", t.prefix)).collect());
        let mut clients = tokio::task::JoinSet::new();
        for id in 0..16 {
            let (store, keys) = (store.clone(), keys.clone());
            clients.spawn(async move {
                let mut client = RecordingClient::new(id, store, epoch);
                let mut rng = StdRng::seed_from_u64(id as u64);
                let mut next_value = id as u64 * 1_000_000;
                for _ in 0..30 {
                    let key = &keys[rng.random_range(0..keys.len())];
                    let mut seen = client.get(key).await;
                    // Retry on conflict with the current value the conflict returned, as the API server does.
                    for _attempt in 0..5 {
                        next_value += 1;
                        let outcome = match seen {
                            None => client.create(key, next_value).await,
                            Some(v) if rng.random_bool(0.12) => {
                                client.delete(key, Some(v.mod_revision)).await
                            }
                            // Now and then an unconditional delete, which only fails on a missing key.
                            Some(_) if rng.random_bool(0.03) => client.delete(key, None).await,
                            Some(v) => client.update(key, next_value, v.mod_revision).await,
                        };
                        match outcome {
                            Outcome::Conflict { current } => seen = current,
                            _ => break,
                        }
                    }
                }
                client.history
            });
        }
        let history: Vec<_> = clients.join_all().await.into_iter().flatten().collect();
        let conflicts = history
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Conflict { .. }))
            .count();
        assert!(
            conflicts > 0,
            "the clients never contended; the test proves nothing"
        );
        if let Err(violation) = linearizability::check(&history) {
            panic!(
                "not linearizable ({} operations, {conflicts} conflicts): {violation}",
                history.len()
            );
        }
    }
}

/// Checks only the embedded backend has: its own database file.
mod sqlite_only {
    use super::*;
    use rkube_store::sqlite::{SqliteBackend, SqliteOptions};

    fn listing(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        names
    }

    async fn assert_refused_untouched(dir: &std::path::Path, path: &std::path::Path) {
        let (before, files_before) = (std::fs::read(path).unwrap(), listing(dir));
        match SqliteBackend::open(path, SqliteOptions::default()).await {
            Err(Error::NotAStore { path: reported, .. }) => {
                assert!(reported.contains("store.db"), "{reported}")
            }
            Err(e) => panic!("a foreign file was refused with {e} instead of NotAStore"),
            Ok(_) => panic!("a foreign file was opened as a store"),
        }
        assert_eq!(
            std::fs::read(path).unwrap(),
            before,
            "the foreign file was modified"
        );
        assert_eq!(
            listing(dir),
            files_before,
            "files appeared next to the foreign file"
        );
    }

    #[tokio::test]
    async fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let garbage: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&path, garbage).unwrap();
        assert_refused_untouched(dir.path(), &path).await;
    }

    #[tokio::test]
    async fn another_programs_sqlite_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('mine');")
                .unwrap();
        }
        assert_refused_untouched(dir.path(), &path).await;
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteBackend::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        let (r1, _) = done(store.create(b"/a", value("one")).await.unwrap());
        let (r2, kv) = done(store.update(b"/a", value("two"), r1).await.unwrap());
        drop(store);
        let store = SqliteBackend::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        assert_eq!(store.current_revision().await.unwrap(), r2);
        assert_eq!(store.get(b"/a", 0).await.unwrap(), Some(kv));
        assert_eq!(store.get(b"/a", r1).await.unwrap().unwrap().value, value("one"));
        let (r3, _) = done(store.create(b"/b", value("three")).await.unwrap());
        assert_eq!(r3, r2 + 1, "the revision continues where it was");
    }
}
