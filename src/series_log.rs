//! Which series of one source fail on their own, so that the log says when one starts failing
//! and when it recovers, once per change.
//!
//! A series whose own read fails (a timestamp in the wrong unit, a key of the wrong type, a
//! missing job hash) answers 503 while its source's poll succeeds, so the poller's "poll failed"
//! line never shows it: without this an operator whose HPA holds has to ask the API why. Only
//! failing series (and those that recovered within [`QUIET`]) are kept, so a healthy source
//! costs one check per sample.
//!
//! A flapping series must not flood the log: a series that starts failing again within
//! [`QUIET`] of its last "failing" line is not logged again until that time has passed, and
//! then only if it is still failing, with the count of changes it made meanwhile. A recovery
//! after a logged failure is logged at once. So each series writes at most one WARN and one
//! INFO per [`QUIET`], and the last line about it tells its state within [`QUIET`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{Labels, Sample, SharedLabels};

/// The least time between two "failing" lines of one series.
pub const QUIET: Duration = Duration::from_secs(60);

/// The failing series of one source, by metric and labels.
#[derive(Debug, Default)]
pub struct SeriesLog {
    tracked: HashMap<Arc<str>, HashMap<SharedLabels, Tracked>>,
}

#[derive(Debug)]
struct Tracked {
    /// Its error at the latest poll; `None` once it reads again.
    error: Option<String>,
    /// When its current failure began (the first poll that failed).
    since: Instant,
    /// Whether the last line written about it said "failing".
    logged_failing: bool,
    /// When the last "failing" line was written.
    warned_at: Option<Instant>,
    /// Changes between failing and reading since the last line.
    unlogged_changes: u32,
    /// Whether the latest poll had this series at all.
    seen: bool,
}

/// One line to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The series answers 503 from now on.
    Failing {
        /// Its metric.
        metric: Arc<str>,
        /// Its labels.
        labels: SharedLabels,
        /// Why.
        error: String,
        /// How often it changed state since the last line (a flapping series).
        flaps: u32,
    },
    /// A series logged as failing reads again.
    Recovered {
        /// Its metric.
        metric: Arc<str>,
        /// Its labels.
        labels: SharedLabels,
        /// How long it failed.
        failed_for: Duration,
    },
    /// A series logged as failing is no longer served (its key left a pattern, its queue was
    /// deleted): nothing of it is failing any more, and nothing recovered.
    Gone {
        /// Its metric.
        metric: Arc<str>,
        /// Its labels.
        labels: SharedLabels,
    },
}

/// The error a sample is served with, if any: a non-finite value is one, as the store makes it.
fn error_of(sample: &Sample) -> Option<std::borrow::Cow<'_, str>> {
    match &sample.value {
        Ok(v) if v.is_finite() => None,
        Ok(v) => Some(crate::model::non_finite(*v).0.into()),
        Err(e) => Some(e.0.as_str().into()),
    }
}

impl SeriesLog {
    /// Takes the samples of one successful poll at `now` and returns the lines to write.
    pub fn observe(&mut self, samples: &[Sample], now: Instant) -> Vec<Change> {
        for series in self.tracked.values_mut() {
            for t in series.values_mut() {
                t.seen = false;
            }
        }
        for s in samples {
            match error_of(s) {
                Some(error) => {
                    let t = self
                        .tracked
                        .entry(s.metric.clone())
                        .or_default()
                        .entry(s.labels.clone())
                        .or_insert_with(|| Tracked {
                            error: None,
                            since: now,
                            logged_failing: false,
                            warned_at: None,
                            unlogged_changes: 0,
                            seen: false,
                        });
                    if t.error.is_none() {
                        t.since = now;
                        t.unlogged_changes += 1;
                    }
                    if t.error.as_deref() != Some(&error) {
                        t.error = Some(error.into_owned());
                    }
                    t.seen = true;
                }
                None if self.tracked.is_empty() => {}
                None => {
                    let labels: &Labels = &s.labels;
                    if let Some(t) = self
                        .tracked
                        .get_mut(&*s.metric)
                        .and_then(|m| m.get_mut(labels))
                    {
                        if t.error.take().is_some() {
                            t.unlogged_changes += 1;
                        }
                        t.seen = true;
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for (metric, series) in &mut self.tracked {
            series.retain(|labels, t| {
                if !t.seen {
                    if t.logged_failing {
                        changes.push(Change::Gone {
                            metric: metric.clone(),
                            labels: labels.clone(),
                        });
                    }
                    return false;
                }
                let quiet = t.warned_at.is_none_or(|at| now.duration_since(at) >= QUIET);
                match (&t.error, t.logged_failing) {
                    (Some(error), false) if quiet => {
                        changes.push(Change::Failing {
                            metric: metric.clone(),
                            labels: labels.clone(),
                            error: error.clone(),
                            flaps: t.unlogged_changes.saturating_sub(1),
                        });
                        t.logged_failing = true;
                        t.warned_at = Some(now);
                        t.unlogged_changes = 0;
                    }
                    (None, true) => {
                        changes.push(Change::Recovered {
                            metric: metric.clone(),
                            labels: labels.clone(),
                            failed_for: now.duration_since(t.since),
                        });
                        t.logged_failing = false;
                        t.unlogged_changes = 0;
                    }
                    _ => {}
                }
                // A recovered series is forgotten once a new failure would be logged anyway.
                t.error.is_some() || t.logged_failing || !quiet
            });
        }
        self.tracked.retain(|_, series| !series.is_empty());
        changes
    }

    /// How many series are tracked (failing, or recovered within [`QUIET`]).
    pub fn len(&self) -> usize {
        self.tracked.values().map(HashMap::len).sum()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeriesError;

    fn sample(key: &str, value: Result<f64, &str>) -> Sample {
        let mut labels = Labels::new();
        labels.insert("key".into(), key.into());
        Sample::new(
            Arc::from("m"),
            Arc::new(labels),
            value.map_err(SeriesError::new),
        )
    }

    fn kinds(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Failing { labels, flaps, .. } => {
                    format!("failing {} flaps={flaps}", labels.get("key").unwrap_or(""))
                }
                Change::Recovered { labels, .. } => {
                    format!("recovered {}", labels.get("key").unwrap_or(""))
                }
                Change::Gone { labels, .. } => format!("gone {}", labels.get("key").unwrap_or("")),
            })
            .collect()
    }

    #[test]
    fn a_series_is_logged_when_it_starts_failing_and_when_it_recovers_once_each() {
        let mut log = SeriesLog::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(log.observe(&[sample("a", Ok(1.0))], at(0)).is_empty());
        assert!(log.is_empty(), "healthy series are not kept");
        let c = log.observe(&[sample("a", Err("key a is a hash"))], at(1));
        assert_eq!(kinds(&c), ["failing a flaps=0"]);
        let Change::Failing { error, .. } = &c[0] else {
            unreachable!()
        };
        assert_eq!(error, "key a is a hash");
        for s in 2..20 {
            assert!(
                log.observe(&[sample("a", Err("key a is a hash"))], at(s))
                    .is_empty()
            );
        }
        let c = log.observe(&[sample("a", Ok(2.0))], at(20));
        assert_eq!(kinds(&c), ["recovered a"]);
        let Change::Recovered { failed_for, .. } = &c[0] else {
            unreachable!()
        };
        assert_eq!(*failed_for, Duration::from_secs(19));
        assert!(log.observe(&[sample("a", Ok(2.0))], at(21)).is_empty());
        // Forgotten once a new failure would be logged anyway.
        assert!(log.observe(&[sample("a", Ok(2.0))], at(62)).is_empty());
        assert!(log.is_empty());
    }

    #[test]
    fn a_flapping_series_writes_at_most_two_lines_a_minute_and_ends_true() {
        let mut log = SeriesLog::default();
        let t0 = Instant::now();
        let mut lines = Vec::new();
        // Fails on even seconds, reads on odd ones, for 150 s, then keeps failing.
        for s in 0..150u64 {
            let v = if s % 2 == 0 { Err("stale") } else { Ok(1.0) };
            lines.extend(kinds(&log.observe(
                &[sample("f", v), sample("ok", Ok(1.0))],
                t0 + Duration::from_secs(s),
            )));
        }
        assert_eq!(
            lines,
            [
                "failing f flaps=0",
                "recovered f",
                "failing f flaps=58",
                "recovered f",
                "failing f flaps=58",
                "recovered f",
            ]
        );
        // Still failing now: within one quiet period the log says so.
        let mut tail = Vec::new();
        for s in 150..215u64 {
            tail.extend(kinds(
                &log.observe(&[sample("f", Err("stale"))], t0 + Duration::from_secs(s)),
            ));
        }
        assert_eq!(tail, ["failing f flaps=28"]);
    }

    #[test]
    fn a_series_that_leaves_while_failing_is_said_to_be_gone_and_forgotten() {
        let mut log = SeriesLog::default();
        let t0 = Instant::now();
        let c = log.observe(&[sample("a", Err("x")), sample("b", Ok(f64::NAN))], t0);
        let mut k = kinds(&c);
        k.sort();
        assert_eq!(k, ["failing a flaps=0", "failing b flaps=0"]);
        let c = log.observe(&[sample("b", Ok(1.0))], t0 + Duration::from_secs(1));
        let mut k = kinds(&c);
        k.sort();
        assert_eq!(k, ["gone a", "recovered b"]);
        assert_eq!(log.len(), 1, "b is kept for its quiet period");
    }
}
