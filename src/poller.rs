//! Runs each source on its interval and records every outcome in the store.
//!
//! One task per source. A poll is bounded by the source's timeout. While a source fails, the next
//! attempt waits `interval × 2^(failures−1)`, capped at `max_backoff`, with "equal jitter" (half
//! fixed, half random) so that replicas of the adapter do not retry in lockstep; the first success
//! returns to the plain interval. A healthy source that can be told of changes
//! ([`crate::wake`]) also polls as soon as its backend reports one, paced by its debounce and
//! rate limit. Errors are logged here, once per change of error, not where they are raised; so
//! are series that fail on their own while their source polls well ([`SeriesLog`]).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::series_log::{Change, SeriesLog};
use crate::sources::{Source, SourceError};
use crate::store::{Store, render_labels};
use crate::telemetry::Telemetry;

/// How one source is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Time between the starts of two successful polls.
    pub interval: Duration,
    /// Limit on one poll.
    pub timeout: Duration,
    /// Ceiling of the retry delay while failing.
    pub max_backoff: Duration,
}

impl Schedule {
    /// The delay before the next attempt after `failures` consecutive failures (0 = healthy),
    /// without jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.interval;
        }
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        self.interval
            .saturating_mul(factor)
            .min(self.max_backoff.max(self.interval))
    }

    /// The longest a healthy loop may go without ticking: beyond it `/livez` fails.
    pub fn liveness_deadline(&self) -> Duration {
        self.interval.max(self.max_backoff) + self.timeout + Duration::from_secs(30)
    }
}

/// When each poll loop last ticked, for `/livez`: a loop that stops ticking is a stuck process.
#[derive(Debug, Default)]
pub struct Heartbeats {
    beats: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl Heartbeats {
    fn beat(&self, source: &str, deadline: Duration) {
        if let Ok(mut b) = self.beats.lock() {
            b.insert(source.to_string(), (Instant::now(), deadline));
        }
    }

    /// Forgets a source that no longer exists (removed by a reload), so liveness stops
    /// waiting for it.
    pub fn forget(&self, source: &str) {
        if let Ok(mut b) = self.beats.lock() {
            b.remove(source);
        }
    }

    /// Sources whose loop has not ticked within its deadline.
    pub fn stuck(&self) -> Vec<String> {
        let Ok(b) = self.beats.lock() else {
            return vec!["<heartbeat lock poisoned>".into()];
        };
        let mut v: Vec<String> = b
            .iter()
            .filter(|(_, (at, dl))| at.elapsed() > *dl)
            .map(|(s, _)| s.clone())
            .collect();
        v.sort();
        v
    }
}

/// What every poll loop shares: where to record, what to report to, and how to stop.
#[derive(Clone)]
pub struct PollContext {
    /// Where outcomes go.
    pub store: Arc<Store>,
    /// Poll telemetry.
    pub telemetry: Telemetry,
    /// Liveness heartbeats.
    pub heartbeats: Arc<Heartbeats>,
    /// Cancelled at shutdown.
    pub token: CancellationToken,
    /// Tracks the loops so shutdown can wait for them.
    pub tracker: TaskTracker,
}

impl PollContext {
    /// Starts the poll loop of `source`; it stops when the token is cancelled.
    pub fn spawn<S: Source>(&self, source: S, schedule: Schedule) -> PollerHandle {
        let PollContext {
            store,
            telemetry: metrics,
            heartbeats,
            token,
            tracker,
        } = self.clone();
        // A token of its own, so a config reload can stop this source alone.
        let token = token.child_token();
        let task = tracker.spawn(run(
            source,
            schedule,
            store,
            metrics,
            heartbeats,
            token.clone(),
        ));
        PollerHandle { token, task }
    }
}

/// One source's poll loop, as a reload stops it.
pub struct PollerHandle {
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PollerHandle {
    /// Stops the loop and waits until it has ended, so no poll of the old configuration is
    /// recorded after this returns. An in-flight poll is dropped.
    pub async fn stop(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}

/// Writes one line about a series that started or stopped failing on its own.
fn log_change(source: &str, change: Change) {
    match change {
        Change::Failing {
            metric,
            labels,
            error,
            flaps,
        } => {
            tracing::warn!(source, metric = %metric, series = %render_labels(&labels), error = %error, flaps, "series failing; it answers 503 until it reads again");
        }
        Change::Recovered {
            metric,
            labels,
            failed_for,
        } => {
            tracing::info!(source, metric = %metric, series = %render_labels(&labels), failed_for = ?failed_for, "series recovered");
        }
        Change::Gone { metric, labels } => {
            tracing::info!(source, metric = %metric, series = %render_labels(&labels), "series no longer served while failing (its key or queue is gone)");
        }
    }
}

async fn run<S: Source>(
    mut source: S,
    schedule: Schedule,
    store: Arc<Store>,
    metrics: Telemetry,
    heartbeats: Arc<Heartbeats>,
    token: CancellationToken,
) {
    let name = source.name().to_string();
    let kind = source.kind();
    let wake = source.wake();
    let mut budget = crate::wake::WakeBudget::default();
    let mut woken = false;
    let mut failures = 0u32;
    let mut last_error: Option<String> = None;
    let mut series_log = SeriesLog::default();
    metrics
        .poll_timeout
        .with_label_values(&[&name])
        .set(schedule.timeout.as_secs_f64());
    loop {
        heartbeats.beat(&name, schedule.liveness_deadline());
        let started = Instant::now();
        let outcome = tokio::select! {
            () = token.cancelled() => break,
            r = tokio::time::timeout(schedule.timeout, source.poll()) => {
                r.unwrap_or(Err(SourceError::Timeout { after: schedule.timeout }))
            }
        };
        metrics
            .poll_duration
            .with_label_values(&[&name])
            .observe(started.elapsed().as_secs_f64());
        let observed_at = SystemTime::now();
        if woken {
            metrics.wake_polls.with_label_values(&[&name]).inc();
        }
        if let Some(w) = &wake {
            metrics
                .push_watching
                .with_label_values(&[&name])
                .set(i64::from(w.watching()));
        }
        match outcome {
            Ok(samples) => {
                if let Some(previous) = last_error.take() {
                    tracing::info!(source = %name, kind, after_failures = failures, previous_error = %previous, "source recovered");
                } else {
                    tracing::debug!(source = %name, series = samples.len(), "polled");
                }
                failures = 0;
                for change in series_log.observe(&samples, Instant::now()) {
                    log_change(&name, change);
                }
                store.record_poll(&name, observed_at, Ok(samples));
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics
                    .poll_errors
                    .with_label_values(&[name.as_str(), e.kind()])
                    .inc();
                let message = e.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(source = %name, kind, error = %message, failures, "poll failed; its metrics answer 503 until a poll succeeds");
                } else {
                    tracing::debug!(source = %name, error = %message, failures, "poll failed again");
                }
                last_error = Some(message.clone());
                store.record_poll(&name, observed_at, Err(message));
            }
        }
        let delay =
            jittered(schedule.delay(failures), failures > 0).saturating_sub(if failures == 0 {
                started.elapsed()
            } else {
                Duration::ZERO
            });
        // A failing source keeps its backoff: a change report does not hurry a retry.
        let signal = wake.as_ref().filter(|_| failures == 0);
        tokio::select! {
            () = token.cancelled() => break,
            () = tokio::time::sleep(delay) => woken = false,
            () = async {
                match signal {
                    Some(w) => w.woken(&mut budget).await,
                    None => std::future::pending().await,
                }
            } => woken = true,
        }
    }
    let _ = metrics.poll_timeout.remove_label_values(&[&name]);
    let _ = metrics.wake_polls.remove_label_values(&[&name]);
    let _ = metrics.push_watching.remove_label_values(&[&name]);
    tracing::debug!(source = %name, "poll loop stopped");
}

/// Equal jitter for retries: half the delay fixed, half random. Healthy polls keep the plain
/// interval so that freshness stays predictable.
fn jittered(delay: Duration, failing: bool) -> Duration {
    if !failing {
        return delay;
    }
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    delay / 2 + delay.mul_f64(0.5 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_up_to_the_cap() {
        let s = Schedule {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
        };
        let delays: Vec<u64> = (0..6).map(|n| s.delay(n).as_secs()).collect();
        assert_eq!(delays, vec![2, 2, 4, 8, 10, 10]);
        assert_eq!(s.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_half_and_whole_delay() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(8), true);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
        assert_eq!(
            jittered(Duration::from_secs(2), false),
            Duration::from_secs(2)
        );
    }
}
