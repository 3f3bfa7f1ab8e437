//! Watch fan-out: the writer publishes each committed batch's events here; one dispatcher thread delivers
//! them to every watcher; a bounded ring of recent events lets a watch start slightly in the past without
//! touching SQLite.
//!
//! Consistency comes from one lock and two revisions: `published` (the writer has handed over every event up
//! to here) and `dispatched` (every registered watcher has been sent its events up to here). A watcher is
//! registered under the lock after being sent, from the ring, everything from its start up to `dispatched`;
//! the dispatcher sends it everything after. So no event is sent twice or skipped, and since the writer
//! publishes before it answers its callers, a watch from "now" never sees a write that was acknowledged
//! before the watch began.
//!
//! Each watcher's channel holds `capacity + 1` messages: the extra slot is kept for
//! [`Error::WatcherTooSlow`], so a watcher that is cut off always learns why, and the dispatcher never
//! waits for anyone.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc;

use crate::{Error, Event, Result, Revision, WatchMessage};

pub(super) type WatchSender = mpsc::Sender<Result<WatchMessage>>;

/// The events of one committed batch, in revision order (one event per revision).
#[derive(Debug)]
pub(super) struct Batch {
    pub first: Revision,
    pub last: Revision,
    pub events: Vec<Event>,
}

/// One registered watcher.
pub(super) struct Watcher {
    pub tx: WatchSender,
    pub prefix: Bytes,
    /// The first revision it has not been sent yet (it may start in the future).
    pub next: Revision,
    pub progress_interval: Option<Duration>,
    pub last_sent: Instant,
}

/// What the lock protects.
pub(super) struct HubState {
    ring: VecDeque<Arc<Batch>>,
    ring_events: usize,
    ring_capacity: usize,
    /// Every event from this revision on is in the ring (or not yet published).
    pub ring_first: Revision,
    pub published: Revision,
    pub dispatched: Revision,
    watchers: Vec<Watcher>,
    pub closed: bool,
}

pub(super) struct Hub {
    pub state: Mutex<HubState>,
    wake: Condvar,
}

/// The events of `batches` from revision `from` on, under `prefix`.
fn matching<'a>(
    batches: impl Iterator<Item = &'a Arc<Batch>>,
    prefix: &[u8],
    from: Revision,
    to: Revision,
) -> Vec<Event> {
    batches
        .filter(|b| b.last >= from && b.first <= to)
        .flat_map(|b| b.events.iter())
        .filter(|e| e.kv.mod_revision >= from && e.kv.mod_revision <= to && e.kv.key.starts_with(prefix))
        .cloned()
        .collect()
}

/// Sends one message to a registered watcher without ever waiting. Returns false when the watcher is gone:
/// it went away, or it was too slow and has been sent its last message.
fn deliver(watcher: &mut Watcher, message: WatchMessage, now: Instant) -> bool {
    if watcher.tx.capacity() <= 1 {
        let _ = watcher.tx.try_send(Err(Error::WatcherTooSlow));
        return false;
    }
    watcher.last_sent = now;
    watcher.tx.try_send(Ok(message)).is_ok()
}

impl HubState {
    pub fn new(current: Revision, ring_capacity: usize) -> Self {
        HubState {
            ring: VecDeque::new(),
            ring_events: 0,
            ring_capacity,
            ring_first: current + 1,
            published: current,
            dispatched: current,
            watchers: Vec::new(),
            closed: false,
        }
    }

    fn push(&mut self, batch: Batch) {
        self.published = batch.last;
        self.ring_events += batch.events.len();
        self.ring.push_back(Arc::new(batch));
        self.trim();
    }

    /// Drops the oldest batches beyond the capacity, but never one the dispatcher has not sent yet.
    fn trim(&mut self) {
        while self.ring_events > self.ring_capacity {
            match self.ring.front() {
                Some(front) if front.last <= self.dispatched => {
                    self.ring_first = front.last + 1;
                    self.ring_events -= front.events.len();
                    self.ring.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Registers a watcher whose events before `watcher.next` have been sent, provided the ring still holds
    /// everything from `watcher.next` on. Returns the watcher back when it does not.
    pub fn register(&mut self, mut watcher: Watcher) -> Result<(), Watcher> {
        if self.closed {
            return Ok(()); // dropping the sender ends the watch
        }
        if watcher.next < self.ring_first {
            return Err(watcher);
        }
        let now = Instant::now();
        if watcher.next <= self.dispatched {
            let events = matching(self.ring.iter(), &watcher.prefix, watcher.next, self.dispatched);
            if !events.is_empty() && !deliver(&mut watcher, WatchMessage::Events(events), now) {
                return Ok(());
            }
            watcher.next = self.dispatched + 1;
        }
        self.watchers.push(watcher);
        Ok(())
    }

    #[cfg(test)]
    pub fn ring_len(&self) -> usize {
        self.ring_events
    }
}

impl Hub {
    pub fn new(current: Revision, ring_capacity: usize) -> Self {
        Hub {
            state: Mutex::new(HubState::new(current, ring_capacity)),
            wake: Condvar::new(),
        }
    }

    /// Called by the writer after each commit with that batch's events.
    pub fn publish(&self, events: Vec<Event>) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        let batch = Batch {
            first: first.kv.mod_revision,
            last: last.kv.mod_revision,
            events,
        };
        self.state.lock().push(batch);
        self.wake.notify_one();
    }

    /// Stops the dispatcher; every watch ends.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.wake.notify_all();
    }

    /// The dispatcher thread: sends new events to every watcher, progress marks to idle ones, and drops
    /// watchers that went away.
    pub fn run_dispatcher(&self) {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                state.watchers.clear();
                return;
            }
            let tick = state
                .watchers
                .iter()
                .filter_map(|w| w.progress_interval)
                .min()
                .map_or(Duration::from_millis(500), |d| {
                    (d / 4).clamp(Duration::from_millis(5), Duration::from_millis(500))
                });
            if state.published == state.dispatched {
                self.wake.wait_for(&mut state, tick);
                if state.closed {
                    continue;
                }
            }
            // Take the work out and fan out without the lock, so the writer never waits for watchers.
            // Watchers registering meanwhile are caught up to `upto` from the ring by `register`.
            let from = state.dispatched + 1;
            let upto = state.published;
            // The new batches are at the back of the ring.
            let fresh = state.ring.iter().rev().take_while(|b| b.last >= from).count();
            let batches: Vec<Arc<Batch>> = state
                .ring
                .iter()
                .skip(state.ring.len() - fresh)
                .cloned()
                .collect();
            state.dispatched = upto;
            state.trim();
            let mut watchers = std::mem::take(&mut state.watchers);
            drop(state);
            fan_out(&mut watchers, &batches, from, upto);
            state = self.state.lock();
            watchers.append(&mut state.watchers);
            state.watchers = watchers;
        }
    }
}

/// Sends each watcher its events of `batches` (revisions `from..=upto`), or a progress mark if it has been
/// idle for its interval. Watchers with the same prefix and position share one computed event list.
fn fan_out(watchers: &mut Vec<Watcher>, batches: &[Arc<Batch>], from: Revision, upto: Revision) {
    let now = Instant::now();
    let mut shared: HashMap<(Bytes, Revision), Vec<Event>> = HashMap::new();
    watchers.retain_mut(|watcher| {
        if watcher.tx.is_closed() {
            return false;
        }
        let start = watcher.next.max(from);
        if start <= upto {
            let events = shared
                .entry((watcher.prefix.clone(), start))
                .or_insert_with(|| matching(batches.iter(), &watcher.prefix, start, upto));
            watcher.next = upto + 1;
            if !events.is_empty() {
                return deliver(watcher, WatchMessage::Events(events.clone()), now);
            }
        }
        match watcher.progress_interval {
            Some(interval) if now.duration_since(watcher.last_sent) >= interval => {
                // Progress is best effort: a full channel only means the watcher has plenty to read.
                if watcher.tx.capacity() > 1 {
                    watcher.last_sent = now;
                    let _ = watcher
                        .tx
                        .try_send(Ok(WatchMessage::Progress(upto.min(watcher.next - 1))));
                }
                true
            }
            _ => true,
        }
    });
}

/// Events of the ring from `from` on (for tests of the ring's boundaries).
#[cfg(test)]
pub(super) fn ring_events(state: &HubState, prefix: &[u8], from: Revision) -> Vec<Event> {
    matching(state.ring.iter(), prefix, from, state.published)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, KeyValue};

    fn put(key: &str, revision: Revision) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::new(),
                create_revision: revision,
                mod_revision: revision,
            },
            prev: None,
        }
    }

    fn batch(revisions: std::ops::RangeInclusive<Revision>) -> Batch {
        let events: Vec<Event> = revisions.map(|r| put(&format!("/k/{r}"), r)).collect();
        Batch {
            first: events[0].kv.mod_revision,
            last: events.last().unwrap().kv.mod_revision,
            events,
        }
    }

    fn watcher(prefix: &'static str, next: Revision) -> (Watcher, mpsc::Receiver<Result<WatchMessage>>) {
        let (tx, rx) = mpsc::channel(8);
        let watcher = Watcher {
            tx,
            prefix: Bytes::from_static(prefix.as_bytes()),
            next,
            progress_interval: None,
            last_sent: Instant::now(),
        };
        (watcher, rx)
    }

    fn revisions(message: Result<WatchMessage>) -> Vec<Revision> {
        match message.unwrap() {
            WatchMessage::Events(events) => events.iter().map(|e| e.kv.mod_revision).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn the_ring_keeps_whole_batches_and_never_drops_undispatched_ones() {
        let mut hub = HubState::new(10, 4);
        hub.push(batch(11..=13));
        hub.push(batch(14..=16));
        assert_eq!(
            hub.ring_len(),
            6,
            "nothing dispatched yet: the ring may exceed its capacity"
        );
        assert_eq!(hub.ring_first, 11);
        hub.dispatched = 16;
        hub.trim();
        // Whole batches go: 14..=16 fits the capacity of 4, 11..=13 does not.
        assert_eq!((hub.ring_len(), hub.ring_first), (3, 14));
        assert_eq!(
            ring_events(&hub, b"/k/", 0)
                .iter()
                .map(|e| e.kv.mod_revision)
                .collect::<Vec<_>>(),
            vec![14, 15, 16]
        );
        hub.push(batch(17..=17));
        hub.dispatched = 17;
        hub.trim();
        assert_eq!(
            (hub.ring_len(), hub.ring_first),
            (4, 14),
            "at capacity, nothing more goes"
        );
    }

    #[test]
    fn registration_is_served_from_the_ring_only_down_to_its_first_revision() {
        let mut hub = HubState::new(10, 100);
        hub.push(batch(11..=15));
        hub.dispatched = 15;
        hub.push(batch(16..=16));
        hub.ring_first = 12; // as if revision 11 had been trimmed

        let (too_old, _rx) = watcher("/", 11);
        assert!(
            hub.register(too_old).is_err(),
            "revision 11 is no longer in the ring"
        );

        let (w, mut rx) = watcher("/k/", 12);
        assert!(hub.register(w).is_ok());
        // Sent from the ring up to what the dispatcher has sent everyone; 16 is the dispatcher's to send.
        assert_eq!(revisions(rx.try_recv().unwrap()), vec![12, 13, 14, 15]);
        assert!(rx.try_recv().is_err());
        assert_eq!(hub.watchers.last().unwrap().next, 16);

        let (future, mut rx) = watcher("/k/", 40);
        assert!(hub.register(future).is_ok());
        assert!(rx.try_recv().is_err());
        assert_eq!(hub.watchers.last().unwrap().next, 40);
    }

    #[test]
    fn fan_out_cuts_off_a_full_watcher_with_a_last_message() {
        let (tx, mut rx) = mpsc::channel(3);
        let mut watchers = vec![Watcher {
            tx,
            prefix: Bytes::from_static(b"/k/"),
            next: 1,
            progress_interval: None,
            last_sent: Instant::now(),
        }];
        for r in 1..=2 {
            let batches = [Arc::new(batch(r..=r))];
            fan_out(&mut watchers, &batches, r, r);
            assert_eq!(watchers.len(), 1);
        }
        let batches = [Arc::new(batch(3..=3))];
        fan_out(&mut watchers, &batches, 3, 3);
        assert!(
            watchers.is_empty(),
            "the watcher with one free slot left is cut off"
        );
        assert_eq!(revisions(rx.try_recv().unwrap()), vec![1]);
        assert_eq!(revisions(rx.try_recv().unwrap()), vec![2]);
        assert!(matches!(rx.try_recv().unwrap(), Err(Error::WatcherTooSlow)));
        assert!(rx.try_recv().is_err(), "and the channel is closed after it");
    }
}
