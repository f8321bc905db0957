//! The bounded queue of images waiting for conversion, with one entry per image.
//!
//! A burst of notifications for one image leaves one entry; the worker takes it out when it
//! starts converting, so a push that arrives during that conversion queues it once more (the
//! conversion may have read the manifest before that push). Failed images come back with a
//! not-before time (the backoff); a new push of such an image makes it due at once.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::event::Source;
use crate::matching::Target;

/// Why an image is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A notification on this endpoint.
    Notification(Source),
    /// The periodic full pass over the wish list.
    FullPass,
    /// A retry after a failure.
    Retry,
}

/// What [`Queue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// A new entry.
    Queued,
    /// The image was queued already; nothing was added.
    AlreadyQueued,
    /// The queue is full; nothing was added.
    Full,
}

/// An image waiting in the queue.
#[derive(Debug, Clone)]
pub struct Entry {
    target: Target,
    trigger: Trigger,
    queued_at: SystemTime,
    not_before: Instant,
    attempt: u32,
}

impl Entry {
    /// The image and its thin image.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Why it was queued.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    /// When it was queued.
    pub fn queued_at(&self) -> SystemTime {
        self.queued_at
    }

    /// Failed attempts so far (0 for a fresh entry).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How long until it is due (zero when it is).
    pub fn due_in(&self, now: Instant) -> Duration {
        self.not_before.saturating_duration_since(now)
    }
}

/// The queue; see the module documentation. Shared between the HTTP threads and the worker.
#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    entries: Mutex<Vec<Entry>>,
    changed: Condvar,
}

impl Queue {
    /// An empty queue holding at most `capacity` images (at least one).
    pub fn new(capacity: usize) -> Queue {
        Queue {
            capacity: capacity.max(1),
            entries: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panic while holding the lock cannot leave the list half-changed (every change is
        // one push, remove or field store), so a poisoned lock is still a consistent queue.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `target`, due after `settle`, unless it is queued already (then a pending retry
    /// of it becomes due by then).
    pub fn push(&self, target: Target, trigger: Trigger, settle: Duration) -> Pushed {
        let now = Instant::now() + settle;
        let mut entries = self.lock();
        let key = target.key();
        if let Some(entry) = entries.iter_mut().find(|e| e.target.key() == key) {
            entry.not_before = entry.not_before.min(now);
            self.changed.notify_all();
            return Pushed::AlreadyQueued;
        }
        if entries.len() >= self.capacity {
            return Pushed::Full;
        }
        entries.push(Entry {
            target,
            trigger,
            queued_at: SystemTime::now(),
            not_before: now,
            attempt: 0,
        });
        self.changed.notify_all();
        Pushed::Queued
    }

    /// Queues a failed image again, due after `delay`, as its `attempt`th failure. A push that
    /// queued it meanwhile keeps its place and becomes the retry.
    pub fn retry(&self, target: Target, attempt: u32, delay: Duration) -> Pushed {
        let mut entries = self.lock();
        let key = target.key();
        if let Some(entry) = entries.iter_mut().find(|e| e.target.key() == key) {
            entry.attempt = entry.attempt.max(attempt);
            return Pushed::AlreadyQueued;
        }
        if entries.len() >= self.capacity {
            return Pushed::Full;
        }
        entries.push(Entry {
            target,
            trigger: Trigger::Retry,
            queued_at: SystemTime::now(),
            not_before: Instant::now() + delay,
            attempt,
        });
        self.changed.notify_all();
        Pushed::Queued
    }

    /// Takes out the oldest entry that is due.
    pub fn take_due(&self) -> Option<Entry> {
        let now = Instant::now();
        let mut entries = self.lock();
        let index = entries.iter().position(|e| e.not_before <= now)?;
        Some(entries.remove(index))
    }

    /// Takes out the entry for the image with this key (the full pass converts it anyway).
    pub fn take(&self, key: &str) -> Option<Entry> {
        let mut entries = self.lock();
        let index = entries.iter().position(|e| e.target.key() == key)?;
        Some(entries.remove(index))
    }

    /// Waits until an entry is due, something is queued, or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let entries = self.lock();
        let now = Instant::now();
        if entries.iter().any(|e| e.not_before <= now) {
            return;
        }
        let until_due = entries
            .iter()
            .map(|e| e.not_before - now)
            .min()
            .unwrap_or(timeout);
        let _ = self
            .changed
            .wait_timeout(entries, timeout.min(until_due))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }

    /// How many images wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The most images it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A copy of the entries, oldest first.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ducc_oci::ImageRef;

    fn target(tag: &str) -> Target {
        let image = ImageRef::parse(&format!("http://r.local/app:{tag}")).unwrap();
        let output = ImageRef::parse(&format!("http://r.local/app_thin:{tag}")).unwrap();
        Target::new(image, output)
    }

    const PUSH: Trigger = Trigger::Notification(Source::Distribution);

    #[test]
    fn a_burst_for_one_image_leaves_one_entry() {
        let queue = Queue::new(4);
        assert_eq!(
            queue.push(target("1"), PUSH, Duration::ZERO),
            Pushed::Queued
        );
        for _ in 0..500 {
            assert_eq!(
                queue.push(target("1"), PUSH, Duration::ZERO),
                Pushed::AlreadyQueued
            );
        }
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take_due().unwrap().target(), &target("1"));
        assert!(queue.take_due().is_none());
    }

    #[test]
    fn a_push_during_the_conversion_queues_the_image_once_more() {
        let queue = Queue::new(4);
        queue.push(target("1"), PUSH, Duration::ZERO);
        let running = queue.take_due().unwrap();
        assert_eq!(
            queue.push(target("1"), PUSH, Duration::ZERO),
            Pushed::Queued
        );
        assert_eq!(
            queue.push(target("1"), PUSH, Duration::ZERO),
            Pushed::AlreadyQueued
        );
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take_due().unwrap().target(), running.target());
    }

    #[test]
    fn a_full_queue_refuses_new_images_but_still_deduplicates() {
        let queue = Queue::new(2);
        assert_eq!(
            queue.push(target("1"), PUSH, Duration::ZERO),
            Pushed::Queued
        );
        assert_eq!(
            queue.push(target("2"), PUSH, Duration::ZERO),
            Pushed::Queued
        );
        assert_eq!(queue.push(target("3"), PUSH, Duration::ZERO), Pushed::Full);
        assert_eq!(
            queue.push(target("1"), PUSH, Duration::ZERO),
            Pushed::AlreadyQueued
        );
        assert_eq!(queue.retry(target("4"), 1, Duration::ZERO), Pushed::Full);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.capacity(), 2);
    }

    #[test]
    fn entries_come_out_oldest_first() {
        let queue = Queue::new(8);
        for tag in ["a", "b", "c"] {
            queue.push(target(tag), PUSH, Duration::ZERO);
        }
        let order: Vec<String> = std::iter::from_fn(|| queue.take_due())
            .map(|e| e.target().image().tag().unwrap().to_owned())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn a_retry_waits_for_its_backoff_unless_pushed_again() {
        let queue = Queue::new(4);
        assert_eq!(
            queue.retry(target("1"), 2, Duration::from_secs(3600)),
            Pushed::Queued
        );
        assert!(queue.take_due().is_none());
        let started = Instant::now();
        queue.wait(Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(
            queue.push(target("1"), PUSH, Duration::ZERO),
            Pushed::AlreadyQueued
        );
        let entry = queue.take_due().unwrap();
        assert_eq!(entry.attempt(), 2);
        assert_eq!(entry.trigger(), Trigger::Retry);
    }

    #[test]
    fn a_notified_image_waits_for_its_settle_time() {
        let queue = Queue::new(4);
        queue.push(target("1"), PUSH, Duration::from_millis(200));
        assert!(queue.take_due().is_none());
        queue.wait(Duration::from_secs(5));
        queue.wait(Duration::from_millis(300));
        assert!(queue.take_due().is_some());
    }

    #[test]
    fn a_short_backoff_comes_due_by_itself() {
        let queue = Queue::new(4);
        queue.retry(target("1"), 1, Duration::from_millis(30));
        queue.wait(Duration::from_secs(5));
        queue.wait(Duration::from_millis(40));
        assert!(queue.take_due().is_some());
    }

    #[test]
    fn the_full_pass_takes_out_what_it_converts() {
        let queue = Queue::new(4);
        queue.push(target("1"), PUSH, Duration::ZERO);
        queue.push(target("2"), PUSH, Duration::ZERO);
        assert!(queue.take(&target("1").key()).is_some());
        assert!(queue.take(&target("1").key()).is_none());
        assert_eq!(queue.len(), 1);
        assert!(!queue.is_empty());
    }
}
