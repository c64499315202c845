//! Counter rates computed by the adapter from its own readings: per series, over a window,
//! with counter resets understood the way Prometheus' `rate()` does. No I/O here. Model
//! servers' counters (`inference`), stream and job-library counters (`redis`) and RabbitMQ's
//! cumulative `message_stats` (`rabbitmq`) all go through it, so every rate the adapter serves
//! follows one rule.
//!
//! A counter that goes down was reset (a server restarted, a stream's group was moved, a queue
//! was deleted and declared again): the value after the reset is counted as the increase since
//! it, never a negative rate. A series needs two readings before it has a rate; a new series
//! has none until its second reading, so it answers an error for one poll rather than a rate
//! of 0.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use crate::model::SeriesError;

/// Drain time served for waiting work that nothing finishes: one day (see README). Every
/// kind's `drain_seconds` follows [`drain_seconds`].
pub const DEFAULT_MAX_DRAIN_SECONDS: f64 = 86_400.0;

/// The time `waiting` work takes to drain at `leaving` jobs per second: `waiting / leaving`,
/// capped at `max`, which is also what is served when nothing leaves ("nothing leaves":
/// never an estimate from other numbers); nothing waiting drains in 0 s.
pub fn drain_seconds(waiting: f64, leaving: f64, max: f64) -> f64 {
    if waiting <= 0.0 {
        0.0
    } else if leaving > 0.0 {
        (waiting / leaving).min(max)
    } else {
        max
    }
}

/// The recent readings of every counter series a metric reads, keyed by `K`.
#[derive(Debug)]
pub struct Rates<K> {
    window: f64,
    series: HashMap<K, VecDeque<(f64, f64)>>,
}

/// What a series increased by, and over how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Increase {
    /// The increase, resets accounted for.
    pub by: f64,
    /// Seconds between the first and the last reading used.
    pub over: f64,
}

impl Increase {
    /// Per second.
    pub fn rate(self) -> f64 {
        self.by / self.over
    }
}

impl<K: Hash + Eq> Rates<K> {
    /// Rates over `window`.
    pub fn new(window: Duration) -> Self {
        Rates {
            window: window.as_secs_f64(),
            series: HashMap::new(),
        }
    }

    /// Records a reading of `id` at `at` (unix seconds). A reading no newer than the last one
    /// (Prometheus relaying the same sample) adds nothing. Readings older than the window are
    /// dropped, but the last two are always kept, so a poll slower than the window still has
    /// the rate between its last two readings.
    pub fn record(&mut self, id: K, at: f64, value: f64) {
        if !value.is_finite() || !at.is_finite() {
            return;
        }
        let points = self.series.entry(id).or_default();
        if points.back().is_some_and(|(t, _)| *t >= at) {
            return;
        }
        points.push_back((at, value));
        while points.len() > 2 && points.front().is_some_and(|(t, _)| *t < at - self.window) {
            points.pop_front();
        }
    }

    /// The increase of `id` over its kept readings; `None` before its second reading.
    pub fn increase(&self, id: &K) -> Option<Increase> {
        let points = self.series.get(id)?;
        let (first, last) = (points.front()?, points.back()?);
        let over = last.0 - first.0;
        if points.len() < 2 || over <= 0.0 {
            return None;
        }
        let by = points
            .iter()
            .zip(points.iter().skip(1))
            .map(|((_, a), (_, b))| if b >= a { b - a } else { *b })
            .sum();
        Some(Increase { by, over })
    }

    /// Records `count`, a reading of `id`'s counter at `at`, and returns its increase over the
    /// window.
    ///
    /// # Errors
    /// Before the counter's second reading: a rate is never made up from one.
    pub fn observe(&mut self, id: K, at: f64, count: f64) -> Result<Increase, SeriesError>
    where
        K: Clone,
    {
        self.record(id.clone(), at, count);
        self.increase(&id).ok_or_else(|| {
            SeriesError::new(
                "the counter has been read once so far: a rate needs a second reading (the next poll)",
            )
        })
    }

    /// Forgets series last read before `now - 2 × window` (pods gone, queues gone, series no
    /// longer exported), so the table does not grow with churn.
    pub fn prune(&mut self, now: f64) {
        let horizon = now - 2.0 * self.window;
        self.series
            .retain(|_, points| points.back().is_some_and(|(t, _)| *t >= horizon));
    }

    /// Series tracked (for tests and logs).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> String {
        name.to_string()
    }

    #[test]
    fn a_rate_needs_two_scrapes_and_survives_a_reset() {
        let mut r = Rates::new(Duration::from_secs(30));
        let s = id("vllm:generation_tokens_total{engine=\"0\"}");
        r.record(s.clone(), 100.0, 1000.0);
        assert_eq!(r.increase(&s), None, "one scrape is no rate");
        r.record(s.clone(), 105.0, 1500.0);
        assert_eq!(r.increase(&s).map(Increase::rate), Some(100.0));
        // The server restarts: 1500 -> 200. The 200 since the restart count, nothing negative.
        r.record(s.clone(), 110.0, 200.0);
        let inc = r.increase(&s).expect("rate");
        assert_eq!(inc.by, 700.0);
        assert_eq!(inc.over, 10.0);
        r.record(s.clone(), 110.0, 9999.0);
        assert_eq!(
            r.increase(&s).map(|i| i.by),
            Some(700.0),
            "the same time adds nothing"
        );
    }

    #[test]
    fn a_first_reading_is_an_error_and_the_drain_rule_never_estimates() {
        let mut r = Rates::new(Duration::from_secs(10));
        let err = r.observe(id("q"), 0.0, 5.0).expect_err("one reading");
        assert!(err.to_string().contains("read once"), "{err}");
        assert_eq!(r.observe(id("q"), 2.0, 25.0).map(Increase::rate), Ok(10.0));
        assert_eq!(drain_seconds(50.0, 10.0, 3600.0), 5.0);
        assert_eq!(drain_seconds(0.0, 0.0, 3600.0), 0.0, "nothing waits");
        assert_eq!(
            drain_seconds(50.0, 0.0, 3600.0),
            3600.0,
            "nothing leaves: the cap"
        );
        assert_eq!(drain_seconds(1e9, 0.001, 3600.0), 3600.0, "capped");
    }

    #[test]
    fn old_scrapes_leave_the_window_but_two_always_stay() {
        let mut r = Rates::new(Duration::from_secs(10));
        let s = id("x_total");
        for (t, v) in [(0.0, 0.0), (5.0, 50.0), (10.0, 100.0), (15.0, 110.0)] {
            r.record(s.clone(), t, v);
        }
        assert_eq!(
            r.increase(&s),
            Some(Increase {
                by: 60.0,
                over: 10.0
            })
        );
        let mut slow = Rates::new(Duration::from_secs(1));
        slow.record(s.clone(), 0.0, 0.0);
        slow.record(s.clone(), 60.0, 120.0);
        assert_eq!(slow.increase(&s).map(Increase::rate), Some(2.0));
        r.prune(100.0);
        assert!(
            r.is_empty(),
            "a series not seen for two windows is forgotten"
        );
        r.record(s.clone(), f64::NAN, 1.0);
        r.record(s.clone(), 1.0, f64::INFINITY);
        assert!(r.increase(&s).is_none());
    }
}
