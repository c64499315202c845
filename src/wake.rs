//! Being told that a source's data changed, so its poll loop polls now instead of at the next
//! interval: how a queue at zero wakes its workload in milliseconds without polling faster.
//!
//! A source that can be told (Redis, through `CLIENT TRACKING`) hands its poll loop a
//! [`WakeSignal`]; whatever watches the backend calls [`WakeSignal::wake`]. The loop waits for
//! the signal or its interval, whichever comes first; after a wake it lets a short `debounce`
//! pass (so a burst of changes is one poll) and keeps to `max_polls_per_second` extra polls,
//! so a queue taking thousands of pushes a second costs a few polls a second, not thousands.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How a woken loop paces itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WakePace {
    /// Time let pass after a wake before polling, so that a burst is one poll.
    pub debounce: Duration,
    /// Most polls per second a source makes because it was woken (on top of its interval).
    pub max_polls_per_second: f64,
}

/// Shared between a source's watcher and its poll loop.
#[derive(Debug, Clone)]
pub struct WakeSignal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    notify: Notify,
    pace: WakePace,
    /// Whether every key of the source is watched right now; `false`: polling alone.
    watching: AtomicBool,
    /// Changes reported so far.
    changes: AtomicU64,
}

impl WakeSignal {
    /// A signal paced by `pace`, not yet watching.
    pub fn new(pace: WakePace) -> Self {
        WakeSignal {
            inner: Arc::new(Inner {
                notify: Notify::new(),
                pace,
                watching: AtomicBool::new(false),
                changes: AtomicU64::new(0),
            }),
        }
    }

    /// Reports a change: the loop polls soon (wakes made while it waits coalesce).
    pub fn wake(&self) {
        self.inner.changes.fetch_add(1, Ordering::Relaxed);
        self.inner.notify.notify_one();
    }

    /// Records whether the watcher covers the source now.
    pub fn set_watching(&self, watching: bool) {
        self.inner.watching.store(watching, Ordering::Relaxed);
    }

    /// Whether the watcher covers the source (for `/metrics`).
    pub fn watching(&self) -> bool {
        self.inner.watching.load(Ordering::Relaxed)
    }

    /// Changes reported so far (for `/metrics` and tests).
    pub fn changes(&self) -> u64 {
        self.inner.changes.load(Ordering::Relaxed)
    }

    /// The pacing.
    pub fn pace(&self) -> WakePace {
        self.inner.pace
    }

    /// Waits for a wake, then the debounce, then until `last_woken_poll` is far enough in the
    /// past for the rate limit. Returns when the loop should poll. (Tokio's clock, so tests can
    /// run it paused.)
    pub async fn woken(&self, last_woken_poll: Option<Instant>) {
        self.inner.notify.notified().await;
        let pace = self.inner.pace;
        let spacing = if pace.max_polls_per_second > 0.0 {
            Duration::from_secs_f64(1.0 / pace.max_polls_per_second)
        } else {
            Duration::MAX
        };
        let earliest = last_woken_poll
            .and_then(|t| t.checked_add(spacing))
            .unwrap_or_else(Instant::now);
        let at = earliest.max(Instant::now() + pace.debounce);
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(per_second: f64) -> WakePace {
        WakePace {
            debounce: Duration::from_millis(5),
            max_polls_per_second: per_second,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_returns_after_the_debounce() {
        let s = WakeSignal::new(pace(10.0));
        s.wake();
        let start = Instant::now();
        s.woken(None).await;
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        assert_eq!(s.changes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_are_spaced_by_the_rate_limit_and_coalesce() {
        let s = WakeSignal::new(pace(10.0));
        let mut last = None;
        let start = Instant::now();
        let mut polls = 0;
        // A thousand changes, as a busy queue makes them; the loop polls at most 10 times a second.
        for _ in 0..1000 {
            s.wake();
            s.wake();
            s.woken(last).await;
            last = Some(Instant::now());
            polls += 1;
            if start.elapsed() >= Duration::from_secs(1) {
                break;
            }
        }
        assert!(polls <= 11, "{polls} polls in a second");
        assert_eq!(s.changes(), 2 * polls);
    }

    #[tokio::test(start_paused = true)]
    async fn no_wake_no_return() {
        let s = WakeSignal::new(pace(10.0));
        let woke = tokio::time::timeout(Duration::from_secs(60), s.woken(None)).await;
        assert!(woke.is_err());
    }
}
