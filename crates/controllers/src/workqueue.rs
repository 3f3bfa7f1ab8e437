//! A work queue of object keys (client-go's `workqueue`): a key is queued at most once however often it is
//! added, is never processed by two workers at once (re-added while processing → processed again after), and
//! failed keys come back with exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Backoff of a failing key: 5 ms doubling up to 1000 s, like client-go's default controller rate limiter.
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(5);
    base.saturating_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .min(Duration::from_secs(1000))
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys waiting in `queue` or to be re-queued when their processing ends.
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl WorkQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue::default())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.state.lock();
        if s.shut_down || !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Add `key` once `delay` has passed (the timer is a task, so it needs a Tokio runtime).
    pub fn add_after(self: &Arc<Self>, key: String, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = queue.upgrade() {
                q.add(key);
            }
        });
    }

    /// Add `key` after its backoff (and count one more failure).
    pub fn add_rate_limited(self: &Arc<Self>, key: String) {
        let failures = {
            let mut s = self.state.lock();
            let n = s.failures.entry(key.clone()).or_default();
            *n += 1;
            *n - 1
        };
        self.add_after(key, backoff(failures));
    }

    /// The key succeeded: reset its backoff.
    pub fn forget(&self, key: &str) {
        self.state.lock().failures.remove(key);
    }

    /// The next key to process; `None` once the queue is shut down.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if s.shut_down {
                    return None;
                }
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Processing of `key` ended; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.state.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    pub fn shut_down(&self) {
        self.state.lock().shut_down = true;
        self.notify.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a sync asks for after it succeeded.
pub type Requeue = Option<Duration>;

/// Run `workers` loops that take keys and call `sync`; success with `Some(d)` re-adds the key after `d`, an
/// error re-adds it with backoff. Returns when the queue is shut down.
pub async fn run_workers<F, Fut, E>(queue: Arc<WorkQueue>, workers: usize, controller: &'static str, sync: F)
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Requeue, E>> + Send,
    E: std::fmt::Display,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let sync = sync.clone();
        set.spawn(async move {
            while let Some(key) = queue.get().await {
                match sync(key.clone()).await {
                    Ok(requeue) => {
                        queue.forget(&key);
                        if let Some(after) = requeue {
                            queue.add_after(key.clone(), after);
                        }
                    }
                    Err(e) => {
                        tracing::info!(controller, key = %key, error = %e, "sync failed; retrying with backoff");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn duplicate_adds_are_one_item() {
        let q = WorkQueue::new();
        q.add("ns/a");
        q.add("ns/a");
        q.add("ns/b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await.as_deref(), Some("ns/a"));
        assert_eq!(q.get().await.as_deref(), Some("ns/b"));
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = WorkQueue::new();
        q.add("ns/a");
        let key = q.get().await.unwrap();
        q.add("ns/a");
        assert!(
            q.is_empty(),
            "not handed to a second worker while the first works on it"
        );
        q.done(&key);
        assert_eq!(q.get().await.as_deref(), Some("ns/a"));
    }

    #[tokio::test]
    async fn shut_down_releases_waiting_workers() {
        let q = WorkQueue::new();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_waits_for_the_delay() {
        let q = WorkQueue::new();
        q.add_after("ns/a".into(), Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(3), Duration::from_millis(40));
        assert_eq!(backoff(40), Duration::from_secs(1000));
    }
}
