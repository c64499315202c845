//! Being told that a source's data changed, so its poll loop polls now instead of at the next
//! interval: how a queue at zero wakes its workload in milliseconds without polling faster.
//!
//! A source that can be told (Redis, through `CLIENT TRACKING`) hands its poll loop a
//! [`WakeSignal`]; whatever watches the backend calls [`WakeSignal::wake`]. The loop waits for
//! the signal or its interval, whichever comes first; after a wake it lets a short `debounce`
//! pass (so a burst of changes is one poll) and keeps to `max_polls_per_second` extra polls
//! (a token bucket of that size: occasional wakes are never delayed), so a queue taking
//! thousands of pushes a second costs a few polls a second, not thousands.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::primitives::{ConfigError, HumanDuration};

/// `sources.<name>.<kind>.wake` (Redis, NATS): being told when a watched queue changes, so a job
/// pushed into an empty queue is seen in milliseconds rather than at the next poll.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeConfig {
    /// Watch (default `true`); `false`: poll only.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most extra polls per second that changes may cause (default 5): a queue taking
    /// thousands of pushes a second costs this many polls, not thousands.
    #[serde(default = "default_wake_rate")]
    pub max_polls_per_second: f64,
    /// Time let pass after a change before polling, so a burst is one poll (default 5ms).
    #[serde(default = "default_debounce")]
    pub debounce: HumanDuration,
}

impl Default for WakeConfig {
    fn default() -> Self {
        WakeConfig {
            enabled: true,
            max_polls_per_second: default_wake_rate(),
            debounce: default_debounce(),
        }
    }
}

impl WakeConfig {
    /// Checks the block (`at` names it).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if !(self.max_polls_per_second.is_finite() && self.max_polls_per_second > 0.0) {
            return Err(ConfigError::invalid(
                format!("{at}.max_polls_per_second"),
                "must be a positive number (set wake.enabled: false to poll only)",
            ));
        }
        if self.debounce.0 > Duration::from_secs(10) {
            return Err(ConfigError::invalid(
                format!("{at}.debounce"),
                "must be at most 10s (it delays every wake)",
            ));
        }
        Ok(())
    }

    /// The pacing of the woken polls.
    pub fn pace(&self) -> WakePace {
        WakePace {
            debounce: self.debounce.0,
            max_polls_per_second: self.max_polls_per_second,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_wake_rate() -> f64 {
    5.0
}

fn default_debounce() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(5))
}

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

    /// Waits for a wake, then the debounce, then for a token of `budget` (the rate limit).
    /// Returns when the loop should poll. (Tokio's clock, so tests can run it paused.)
    pub async fn woken(&self, budget: &mut WakeBudget) {
        self.inner.notify.notified().await;
        tokio::time::sleep(self.inner.pace.debounce).await;
        budget.take(self.inner.pace.max_polls_per_second).await;
    }
}

/// The rate limit of woken polls, as a token bucket: up to `max_polls_per_second` tokens,
/// refilled at that rate. A queue that wakes now and then is polled at once every time; a
/// queue that changes constantly costs at most that many polls a second (plus one bucket).
#[derive(Debug, Clone)]
pub struct WakeBudget {
    tokens: f64,
    at: Instant,
}

impl Default for WakeBudget {
    fn default() -> Self {
        WakeBudget {
            tokens: f64::INFINITY,
            at: Instant::now(),
        }
    }
}

impl WakeBudget {
    /// Takes one token, waiting for it to refill if there is none.
    async fn take(&mut self, per_second: f64) {
        if per_second <= 0.0 || !per_second.is_finite() {
            return std::future::pending().await;
        }
        let capacity = per_second.max(1.0);
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * per_second).min(capacity);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / per_second);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at = Instant::now();
        }
        self.tokens -= 1.0;
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
        s.woken(&mut WakeBudget::default()).await;
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        assert_eq!(s.changes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_are_spaced_by_the_rate_limit_and_coalesce() {
        let s = WakeSignal::new(pace(10.0));
        let mut budget = WakeBudget::default();
        let start = Instant::now();
        let mut polls = 0;
        // Changes without pause, as a busy queue makes them: over 3 s the loop polls at most
        // one bucket (10) plus 10 a second.
        while start.elapsed() < Duration::from_secs(3) {
            s.wake();
            s.wake();
            s.woken(&mut budget).await;
            polls += 1;
        }
        assert!((35..=41).contains(&polls), "{polls} polls in 3 s");
        assert_eq!(s.changes(), 2 * polls);
        // After a quiet second the bucket is full again: the next wakes are immediate.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let quiet = Instant::now();
        for _ in 0..5 {
            s.wake();
            s.woken(&mut budget).await;
        }
        assert_eq!(
            quiet.elapsed(),
            Duration::from_millis(25),
            "five debounces, no waiting"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_wake_no_return() {
        let s = WakeSignal::new(pace(10.0));
        let woke =
            tokio::time::timeout(Duration::from_secs(60), s.woken(&mut WakeBudget::default()))
                .await;
        assert!(woke.is_err());
    }
}
