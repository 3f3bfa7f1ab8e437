//! Restart and pull back-off as the kubelet does it (client-go's `flowcontrol.Backoff`): the first failure
//! is retried at once and arms a delay of `initial`; each failure during a back-off doubles it up to `max`;
//! an entry untouched for `2 × max` (10 minutes with the defaults) starts over, so a container that ran
//! long enough crashes into a short back-off again.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// CrashLoopBackOff and ImagePullBackOff both start at 10 s and stop doubling at 5 minutes.
pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last_update: Instant,
}

/// Back-off delays per key (a container, or a pod's image).
#[derive(Debug)]
pub struct Backoff<K> {
    initial: Duration,
    max: Duration,
    entries: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> Default for Backoff<K> {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_update) > 2 * self.max
    }

    /// How long the retry of a failure that happened at `failed_at` must still wait, `None` when it may go
    /// now. Kubernetes' `IsInBackOffSince`.
    pub fn remaining(&self, key: &K, failed_at: Instant, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, now) {
            return None;
        }
        let waited = now.saturating_duration_since(failed_at);
        (waited < e.delay).then(|| e.delay - waited)
    }

    /// Records a retry at `now`: arms (or doubles) the delay the next failure will wait.
    pub fn next(&mut self, key: &K, now: Instant) {
        let delay = match self.entries.get(key) {
            Some(e) if !self.expired(e, now) => (e.delay * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(
            key.clone(),
            Entry {
                delay,
                last_update: now,
            },
        );
    }

    /// The delay currently armed for `key` (what the `back-off 20s restarting …` message shows).
    pub fn delay(&self, key: &K) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    pub fn forget(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loop_waits_10s_then_doubles_to_five_minutes() {
        let mut b: Backoff<&str> = Backoff::default();
        let t0 = Instant::now();
        // First exit: nothing armed, restart at once.
        assert_eq!(b.remaining(&"c", t0, t0), None);
        b.next(&"c", t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let failed_at = now + Duration::from_secs(1);
            let wait = b.remaining(&"c", failed_at, failed_at).expect("in back-off");
            waits.push(wait.as_secs());
            now = failed_at + wait;
            assert_eq!(
                b.remaining(&"c", failed_at, now),
                None,
                "may restart once the delay passed"
            );
            b.next(&"c", now);
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn ten_quiet_minutes_reset_the_delay() {
        let mut b: Backoff<&str> = Backoff::default();
        let t0 = Instant::now();
        for i in 0..5 {
            b.next(&"c", t0 + Duration::from_secs(i));
        }
        assert_eq!(b.delay(&"c"), Some(Duration::from_secs(160)));
        let later = t0 + Duration::from_secs(4) + Duration::from_secs(601);
        assert_eq!(
            b.remaining(&"c", later, later),
            None,
            "an expired entry does not hold back"
        );
        b.next(&"c", later);
        assert_eq!(b.delay(&"c"), Some(INITIAL));
        let t1 = later + Duration::from_secs(1);
        assert_eq!(b.remaining(&"c", t1, t1), Some(INITIAL));
    }

    #[test]
    fn keys_are_independent() {
        let mut b: Backoff<String> = Backoff::default();
        let t0 = Instant::now();
        b.next(&"a".to_string(), t0);
        assert!(b.remaining(&"a".to_string(), t0, t0).is_some());
        assert!(b.remaining(&"b".to_string(), t0, t0).is_none());
        b.forget(&"a".to_string());
        assert!(b.remaining(&"a".to_string(), t0, t0).is_none());
    }
}
