//! Controller expectations (Kubernetes' `UIDTrackingControllerExpectations`): a controller that has asked for
//! creations or deletions does not act on its owner again until the informer has shown it those changes, so a
//! lagging cache never makes it create or delete twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// After this long, expectations that were never observed (a lost watch event) stop blocking the controller.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    /// Creations asked for and not yet seen in the cache.
    adds: i64,
    /// Keys (`namespace/name`) of dependents whose deletion was asked for and not yet seen.
    deletes: HashSet<String>,
    set_at: Instant,
}

/// Pending creations and deletions per controller key (`namespace/name`). Thread-safe: the workers write it and
/// the informer event handlers lower it.
#[derive(Debug, Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    /// Whether the controller may act on `key`: nothing pending, nothing ever recorded, or the record timed out.
    pub fn satisfied(&self, key: &str, now: Instant) -> bool {
        match self.by_key.lock().get(key) {
            None => true,
            Some(e) => {
                (e.adds <= 0 && e.deletes.is_empty()) || now.duration_since(e.set_at) > EXPECTATIONS_TIMEOUT
            }
        }
    }

    /// Record that `count` creations are about to be requested for `key`.
    pub fn expect_creations(&self, key: &str, count: usize, now: Instant) {
        let mut map = self.by_key.lock();
        map.insert(
            key.to_string(),
            Expectation {
                adds: count as i64,
                deletes: HashSet::new(),
                set_at: now,
            },
        );
    }

    /// Record that the dependents `keys` are about to be deleted for `key`.
    pub fn expect_deletions(&self, key: &str, keys: impl IntoIterator<Item = String>, now: Instant) {
        let mut map = self.by_key.lock();
        map.insert(
            key.to_string(),
            Expectation {
                adds: 0,
                deletes: keys.into_iter().collect(),
                set_at: now,
            },
        );
    }

    /// One creation was seen in the cache, or a requested creation failed (it will never be seen).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.by_key.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// The deletion of `dependent` was seen, or the request failed.
    pub fn deletion_observed(&self, key: &str, dependent: &str) {
        if let Some(e) = self.by_key.lock().get_mut(key) {
            e.deletes.remove(dependent);
        }
    }

    /// The controller's object is gone: forget it.
    pub fn forget(&self, key: &str) {
        self.by_key.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_block_until_observed() {
        let e = Expectations::default();
        let t0 = Instant::now();
        assert!(e.satisfied("ns/rs", t0), "no record means no wait");
        e.expect_creations("ns/rs", 2, t0);
        assert!(!e.satisfied("ns/rs", t0));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs", t0), "one of two creations still in flight");
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs", t0));
    }

    #[test]
    fn deletions_are_tracked_by_dependent() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect_deletions("ns/rs", ["ns/a".to_string(), "ns/b".to_string()], t0);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(
            !e.satisfied("ns/rs", t0),
            "observing the same pod twice does not count for another"
        );
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied("ns/rs", t0));
    }

    #[test]
    fn stale_expectations_expire() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect_creations("ns/rs", 1, t0);
        assert!(!e.satisfied("ns/rs", t0 + Duration::from_secs(60)));
        assert!(e.satisfied("ns/rs", t0 + EXPECTATIONS_TIMEOUT + Duration::from_secs(1)));
        e.forget("ns/rs");
        assert!(e.satisfied("ns/rs", t0));
    }
}
