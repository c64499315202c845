//! The latest snapshot of every metric series, with when it was observed and the last error.
//!
//! The poller writes here ([`Store::record_poll`]); API surfaces read through [`MetricsProvider`]. Readers never wait on I/O or
//! on a writer: each metric's state sits behind an [`ArcSwap`], so a read is an atomic load and a
//! filter over a few series. Freshness is judged at read time against a caller-given `now`, so the
//! rule "older than `max_staleness` is refused" is checked on every read, and tests need no clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::apimachinery::selector::Selector;
use crate::model::{Labels, MetricValue, Sample, SeriesError, SharedLabels};

/// What the API surfaces know of a metric without reading its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    /// The metric's name, as requested by the HPA.
    pub name: String,
    /// The source it is read from.
    pub source: String,
    /// Free-text description from config.
    pub description: Option<String>,
    /// Namespaces it is served in; `None` means all.
    pub namespaces: Option<Vec<String>>,
    /// The label naming the namespace each series belongs to, for metrics about namespaced
    /// things (GPU workloads): a request then sees only its own namespace's series, so an HPA in
    /// one team's namespace cannot read another's. `None`: every series is served everywhere.
    pub namespace_label: Option<&'static str>,
    /// Whether having no series is itself an observation of an empty backlog: a Redis list or
    /// sorted-set pattern, whose keys Redis deletes when they empty. KEDA then answers `0` for
    /// a trigger that matches nothing; for any other metric no series means nothing to report.
    pub empty_means_zero: bool,
}

/// Why a lookup produced no values. Each surface maps these to its own error (HTTP status, gRPC).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LookupError {
    /// No metric of that name is configured (or not in that namespace).
    #[error("the server could not find the metric {metric} in namespace {namespace}")]
    UnknownMetric {
        /// The requested name.
        metric: String,
        /// The requested namespace.
        namespace: String,
    },
    /// The newest value is older than `max_staleness`.
    #[error(
        "metric {metric}: the newest value of series {series} is {age:.1?} old, older than max_staleness {limit:?}; refusing to serve it"
    )]
    Stale {
        /// The metric.
        metric: String,
        /// The stale series' labels, rendered.
        series: String,
        /// Its age.
        age: Duration,
        /// The configured limit.
        limit: Duration,
    },
    /// The source failed on its last poll, has not been polled yet, or a matched series has an error.
    #[error("metric {metric} is unavailable: {reason}")]
    Unavailable {
        /// The metric.
        metric: String,
        /// Why, naming the source or series.
        reason: String,
    },
}

/// The read side of the store: what every API surface is given, and all it is given.
pub trait MetricsProvider: Send + Sync + 'static {
    /// Every configured metric. Cannot fail: discovery must always list what is configured.
    fn list_metrics(&self) -> Vec<MetricInfo>;

    /// The series of `metric` in `namespace` that match `selector`, judged fresh at `now`.
    /// `metric` is matched case-insensitively (client-go lowercases it).
    ///
    /// A selector that matches no series gives an empty list; a matched series with an error, a
    /// failed source or a stale value fails the whole lookup, because a partial sum would be a
    /// number nobody measured.
    ///
    /// # Errors
    /// [`LookupError`] for an unknown metric, a stale value or an unavailable source or series.
    fn get(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
        now: SystemTime,
    ) -> Result<Vec<MetricValue>, LookupError>;

    /// For a lookup of `metric` in `namespace` that matched no series: when that emptiness is
    /// itself an observed empty backlog ([`MetricInfo::empty_means_zero`], the source's last
    /// poll succeeded within `max_staleness`), the time of that poll; otherwise `None`, and
    /// no series means nothing to report.
    fn observed_empty(&self, namespace: &str, metric: &str, now: SystemTime) -> Option<SystemTime>;

    /// Whether `metric` is served in `namespace` at all (whatever its values now).
    fn serves(&self, namespace: &str, metric: &str) -> bool;

    /// A receiver that changes after every recorded poll: what push surfaces (KEDA's
    /// `StreamIsActive`) wait on instead of polling.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// One series as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its labels.
    pub labels: SharedLabels,
    /// Its value or its error from the latest successful poll of the source.
    pub value: Result<f64, SeriesError>,
    /// When the value was observed: the end of that poll, or the backend's own earlier
    /// timestamp for it.
    pub observed_at: SystemTime,
    /// The key it reads has not existed since the source started (see [`Sample::unseen`]).
    pub unseen: bool,
}

/// A source-wide failure, as recorded by the poller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFailure {
    /// The error's text (already free of secrets).
    pub message: String,
    /// When the failed poll ended.
    pub at: SystemTime,
}

/// Everything known of one metric at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricState {
    /// Series from the latest successful poll; kept while the source fails, but not served.
    pub series: Vec<Series>,
    /// Which series hold which label values, built when the poll is recorded so that an
    /// equality selector on a metric with thousands of series is a lookup, not a scan.
    index: Arc<LabelIndex>,
    /// Set while the source's latest poll failed.
    pub failure: Option<SourceFailure>,
    /// Whether any poll (successful or not) has finished for this metric's source.
    pub polled: bool,
    /// When the latest successful poll completed: what an empty answer was observed at.
    pub polled_at: Option<SystemTime>,
}

struct MetricSlot {
    info: MetricInfo,
    state: ArcSwap<MetricState>,
}

/// The store. Cheap to share (`Arc<Store>`); all methods take `&self`.
pub struct Store {
    layout: ArcSwap<Layout>,
    changes: watch::Sender<u64>,
}

/// Which metrics exist, by name and by source: replaced whole when the config is reloaded, read
/// with one atomic load per request.
struct Layout {
    metrics: HashMap<String, Arc<MetricSlot>>,
    by_source: HashMap<String, Vec<String>>,
    max_staleness: Duration,
    polled: HashMap<String, Arc<AtomicBool>>,
}

impl Store {
    /// A store for `metrics`, refusing values older than `max_staleness`.
    pub fn new(metrics: Vec<MetricInfo>, max_staleness: Duration) -> Self {
        Store {
            layout: ArcSwap::from_pointee(Layout::new(
                metrics,
                max_staleness,
                None,
                &HashSet::new(),
            )),
            changes: watch::channel(0).0,
        }
    }

    /// Switches to a new set of metrics (a reloaded config). A metric whose [`MetricInfo`] is
    /// unchanged, whose source is not in `restarted` and whose name is not in `changed` (it
    /// reads another key, pattern or queue now) keeps its values; every other metric starts
    /// unpolled (503 until its source's first poll), so nothing read under the old settings is
    /// served as the new ones'.
    pub fn reconfigure(
        &self,
        metrics: Vec<MetricInfo>,
        max_staleness: Duration,
        restarted: &HashSet<String>,
        changed: &HashSet<String>,
    ) {
        let current = self.layout.load();
        self.layout.store(Arc::new(Layout::new(
            metrics,
            max_staleness,
            Some((&current, changed)),
            restarted,
        )));
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The configured staleness limit.
    pub fn max_staleness(&self) -> Duration {
        self.layout.load().max_staleness
    }

    /// Records the outcome of one poll of `source`, completed at `observed_at`.
    ///
    /// On success every metric of the source gets exactly the series of that poll (a pattern
    /// whose keys vanished loses them). A non-finite value becomes a series error. On failure the
    /// previous series are kept for diagnosis but each metric is marked failed, so nothing is
    /// served from them until a poll succeeds again.
    pub fn record_poll(
        &self,
        source: &str,
        observed_at: SystemTime,
        outcome: Result<Vec<Sample>, String>,
    ) {
        let layout = self.layout.load();
        let Some(names) = layout.by_source.get(source) else {
            return;
        };
        match outcome {
            Ok(samples) => {
                // Sized as the last poll was: a steady source needs no growth, nor its slack.
                let mut per_metric: HashMap<&str, Vec<Series>> = names
                    .iter()
                    .map(|n| {
                        let last = layout
                            .metrics
                            .get(n)
                            .map_or(0, |slot| slot.state.load().series.len());
                        (n.as_str(), Vec::with_capacity(last))
                    })
                    .collect();
                for s in samples {
                    let Some(list) = per_metric.get_mut(&*s.metric) else {
                        continue;
                    };
                    let value = match s.value {
                        Ok(v) if !v.is_finite() => Err(crate::model::non_finite(v)),
                        other => other,
                    };
                    list.push(Series {
                        labels: s.labels,
                        value,
                        // A backend time after the poll ended is a skewed clock: never fresher
                        // than the poll itself.
                        observed_at: s.observed_at.map_or(observed_at, |t| t.min(observed_at)),
                        unseen: s.unseen,
                    });
                }
                for (name, series) in per_metric {
                    if let Some(slot) = layout.metrics.get(name) {
                        // A source that planned its series once hands over the same label
                        // sets every poll: the index of the last poll still holds.
                        let previous = slot.state.load();
                        let index = if same_labels(&previous.series, &series) {
                            previous.index.clone()
                        } else {
                            Arc::new(LabelIndex::of(&series))
                        };
                        slot.state.store(Arc::new(MetricState {
                            series,
                            index,
                            failure: None,
                            polled: true,
                            polled_at: Some(observed_at),
                        }));
                    }
                }
            }
            Err(message) => {
                for name in names {
                    if let Some(slot) = layout.metrics.get(name) {
                        let mut next = MetricState::clone(&slot.state.load());
                        next.failure = Some(SourceFailure {
                            message: message.clone(),
                            at: observed_at,
                        });
                        next.polled = true;
                        slot.state.store(Arc::new(next));
                    }
                }
            }
        }
        if let Some(flag) = layout.polled.get(source) {
            flag.store(true, Ordering::Release);
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes after every recorded poll.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Sources that have not finished a poll yet (readiness waits for them).
    pub fn unpolled_sources(&self) -> Vec<String> {
        let layout = self.layout.load();
        let mut v: Vec<String> = layout
            .polled
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Acquire))
            .map(|(s, _)| s.clone())
            .collect();
        v.sort();
        v
    }

    /// The current state of a metric, for telemetry and the `check` command.
    pub fn state(&self, metric: &str) -> Option<(MetricInfo, Arc<MetricState>)> {
        self.layout
            .load()
            .metrics
            .get(metric)
            .map(|slot| (slot.info.clone(), slot.state.load_full()))
    }

    /// Whether `metric` (any case) is configured and served in `namespace`.
    pub fn serves(&self, namespace: &str, metric: &str) -> bool {
        self.layout.load().slot(namespace, metric).is_some()
    }

    /// Every metric's name, sorted.
    pub fn metric_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.layout.load().metrics.keys().cloned().collect();
        v.sort();
        v
    }
}

impl Layout {
    fn new(
        metrics: Vec<MetricInfo>,
        max_staleness: Duration,
        previous: Option<(&Layout, &HashSet<String>)>,
        restarted: &HashSet<String>,
    ) -> Self {
        let mut by_source: HashMap<String, Vec<String>> = HashMap::new();
        let mut polled = HashMap::new();
        for m in &metrics {
            by_source
                .entry(m.source.clone())
                .or_default()
                .push(m.name.clone());
            let kept = previous
                .filter(|_| !restarted.contains(&m.source))
                .and_then(|(p, _)| p.polled.get(&m.source).cloned());
            polled
                .entry(m.source.clone())
                .or_insert_with(|| kept.unwrap_or_else(|| Arc::new(AtomicBool::new(false))));
        }
        let metrics = metrics
            .into_iter()
            .map(|info| {
                let kept = previous
                    .filter(|(_, changed)| {
                        !restarted.contains(&info.source) && !changed.contains(&info.name)
                    })
                    .and_then(|(p, _)| p.metrics.get(&info.name))
                    .filter(|slot| slot.info == info)
                    .cloned();
                let slot = kept.unwrap_or_else(|| {
                    Arc::new(MetricSlot {
                        info: info.clone(),
                        state: ArcSwap::from_pointee(MetricState::default()),
                    })
                });
                (info.name, slot)
            })
            .collect();
        Layout {
            metrics,
            by_source,
            max_staleness,
            polled,
        }
    }
}

/// For each label key, `(hash of the value, series index)` pairs sorted by hash: a lookup is a
/// binary search. 12 bytes an entry and no allocation per series, where a map of maps held a
/// copy of every label key and value (≈130 bytes a series and label). Different values with
/// the same hash are told apart by the selector itself, which every candidate still passes.
#[derive(Debug, Clone, PartialEq, Default)]
struct LabelIndex {
    by_key: HashMap<String, Vec<(u64, u32)>>,
}

impl LabelIndex {
    fn of(series: &[Series]) -> Self {
        let mut by_key: HashMap<String, Vec<(u64, u32)>> = HashMap::new();
        for (i, s) in series.iter().enumerate() {
            for (k, v) in s.labels.iter() {
                let entry = match by_key.get_mut(k) {
                    Some(e) => e,
                    None => by_key.entry(k.to_string()).or_default(),
                };
                entry.push((value_hash(v), i as u32));
            }
        }
        for entries in by_key.values_mut() {
            entries.sort_unstable();
            entries.shrink_to_fit();
        }
        LabelIndex { by_key }
    }

    /// Indices of the series whose `key` label may be `value` (its hash matches), ascending.
    fn lookup<'a>(&'a self, key: &str, value: &str) -> impl Iterator<Item = usize> + 'a {
        let entries = self.by_key.get(key).map_or(&[][..], Vec::as_slice);
        let h = value_hash(value);
        let start = entries.partition_point(|(eh, _)| *eh < h);
        entries[start..]
            .iter()
            .take_while(move |(eh, _)| *eh == h)
            .map(|(_, i)| *i as usize)
    }
}

fn value_hash(v: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(v)
}

/// Whether two polls produced the same label sets in the same order: the same shared `Arc`s,
/// so comparing pointers is enough (and cheap).
fn same_labels(previous: &[Series], next: &[Series]) -> bool {
    previous.len() == next.len()
        && previous
            .iter()
            .zip(next)
            .all(|(a, b)| Arc::ptr_eq(&a.labels, &b.labels))
}

impl MetricState {
    /// Indices of the series that may match `selector`, in order: an index lookup when the
    /// selector has an equality requirement, else every series.
    fn candidates(&self, selector: &Selector) -> Vec<usize> {
        match selector.equality_requirement() {
            Some((key, values)) => {
                let mut v: Vec<usize> = values
                    .flat_map(|value| self.index.lookup(key, value))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            None => (0..self.series.len()).collect(),
        }
    }
}

/// Renders labels as `{a="1",b="2"}` for messages and the `check` table: as served, so the
/// text is what a selector must say, and an encoded value followed by the raw one it stands
/// for, so a person recognises it: `{key="queue_emb-160c44acf9" from "queue:emb"}`.
pub fn render_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels
        .iter()
        .zip(labels.raw_iter())
        .map(|((k, v), (_, raw))| match raw == v {
            true => format!("{k}={v:?}"),
            false => format!("{k}={v:?} from {raw:?}"),
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Layout {
    /// The slot of `metric` (any case) if it is served in `namespace`.
    fn slot(&self, namespace: &str, metric: &str) -> Option<&Arc<MetricSlot>> {
        let slot = match self.metrics.get(metric) {
            Some(slot) => slot,
            None if metric.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.metrics.get(&metric.to_ascii_lowercase())?
            }
            None => return None,
        };
        slot.info
            .namespaces
            .as_ref()
            .is_none_or(|ns| ns.iter().any(|n| n == namespace))
            .then_some(slot)
    }
}

impl MetricsProvider for Store {
    fn serves(&self, namespace: &str, metric: &str) -> bool {
        Store::serves(self, namespace, metric)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.subscribe()
    }

    fn observed_empty(&self, namespace: &str, metric: &str, now: SystemTime) -> Option<SystemTime> {
        let layout = self.layout.load();
        let slot = layout.slot(namespace, metric)?;
        if !slot.info.empty_means_zero {
            return None;
        }
        let state = slot.state.load();
        let at = state.polled_at.filter(|_| state.failure.is_none())?;
        let age = now.duration_since(at).unwrap_or(Duration::ZERO);
        (age <= layout.max_staleness).then_some(at)
    }

    fn list_metrics(&self) -> Vec<MetricInfo> {
        let mut v: Vec<MetricInfo> = self
            .layout
            .load()
            .metrics
            .values()
            .map(|s| s.info.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn get(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
        now: SystemTime,
    ) -> Result<Vec<MetricValue>, LookupError> {
        let layout = self.layout.load();
        let slot = layout
            .slot(namespace, metric)
            .ok_or_else(|| LookupError::UnknownMetric {
                metric: metric.to_string(),
                namespace: namespace.to_string(),
            })?;
        let name = &slot.info.name;
        let state = slot.state.load();
        if !state.polled {
            return Err(LookupError::Unavailable {
                metric: name.clone(),
                reason: format!(
                    "source {} has not completed its first poll yet",
                    slot.info.source
                ),
            });
        }
        if let Some(failure) = &state.failure {
            return Err(LookupError::Unavailable {
                metric: name.clone(),
                reason: format!(
                    "source {} failed its last poll: {}",
                    slot.info.source, failure.message
                ),
            });
        }
        let mut out = Vec::new();
        let matched = state
            .candidates(selector)
            .into_iter()
            .map(|i| &state.series[i])
            .filter(|s| selector.matches(&s.labels))
            .filter(|s| {
                slot.info
                    .namespace_label
                    .is_none_or(|l| s.labels.get(l).is_some_and(|n| n == namespace))
            });
        for series in matched {
            let value = match &series.value {
                Ok(v) => *v,
                Err(e) => {
                    return Err(LookupError::Unavailable {
                        metric: name.clone(),
                        reason: format!("series {}: {e}", render_labels(&series.labels)),
                    });
                }
            };
            let age = now
                .duration_since(series.observed_at)
                .unwrap_or(Duration::ZERO);
            if age > layout.max_staleness {
                return Err(LookupError::Stale {
                    metric: name.clone(),
                    series: render_labels(&series.labels),
                    age,
                    limit: layout.max_staleness,
                });
            }
            out.push(MetricValue {
                metric: name.clone(),
                labels: series.labels.clone(),
                value,
                observed_at: series.observed_at,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, source: &str) -> MetricInfo {
        MetricInfo {
            namespace_label: None,
            empty_means_zero: false,
            name: name.into(),
            source: source.into(),
            description: None,
            namespaces: None,
        }
    }

    fn sample(metric: &str, queue: &str, value: Result<f64, SeriesError>) -> Sample {
        Sample::new(
            metric.into(),
            Labels::from([("queue".to_string(), queue.to_string())]).into(),
            value,
        )
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn fresh_values_are_served_with_their_observation_time() {
        let store = Store::new(vec![info("q", "redis")], Duration::from_secs(30));
        store.record_poll(
            "redis",
            t(0),
            Ok(vec![sample("q", "a", Ok(3.0)), sample("q", "b", Ok(0.0))]),
        );
        let got = store
            .get("default", "q", &Selector::everything(), t(10))
            .expect("fresh");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].observed_at, t(0));
        let only_b = store
            .get(
                "default",
                "q",
                &Selector::parse("queue=b").expect("parses"),
                t(10),
            )
            .expect("fresh");
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].value, 0.0, "an empty queue is served as 0");
    }

    #[test]
    fn a_backend_timestamp_ages_the_value_and_never_makes_it_fresher() {
        let store = Store::new(vec![info("q", "prom")], Duration::from_secs(30));
        let mut old = sample("q", "a", Ok(1.0));
        old.observed_at = Some(t(0));
        let mut future = sample("q", "b", Ok(2.0));
        future.observed_at = Some(t(500));
        store.record_poll("prom", t(20), Ok(vec![old, future]));
        let b = store
            .get(
                "default",
                "q",
                &Selector::parse("queue=b").expect("parses"),
                t(21),
            )
            .expect("fresh");
        assert_eq!(
            b[0].observed_at,
            t(20),
            "a future timestamp counts as the poll's"
        );
        let err = store
            .get(
                "default",
                "q",
                &Selector::parse("queue=a").expect("parses"),
                t(31),
            )
            .expect_err("seen by the backend 31 s ago");
        assert!(matches!(err, LookupError::Stale { .. }), "{err:?}");
    }

    #[test]
    fn an_empty_answer_is_an_observation_only_for_backlogs_whose_keys_vanish() {
        let mut pattern = info("p", "redis");
        pattern.empty_means_zero = true;
        let store = Store::new(vec![pattern, info("q", "redis")], Duration::from_secs(30));
        assert_eq!(
            store.observed_empty("default", "p", t(0)),
            None,
            "not polled"
        );
        store.record_poll("redis", t(0), Ok(vec![]));
        assert_eq!(store.observed_empty("default", "p", t(1)), Some(t(0)));
        assert_eq!(store.observed_empty("default", "q", t(1)), None);
        assert_eq!(store.observed_empty("default", "p", t(31)), None, "stale");
        store.record_poll("redis", t(2), Err("down".into()));
        assert_eq!(store.observed_empty("default", "p", t(3)), None, "failing");
    }

    #[test]
    fn stale_value_is_refused_with_unavailable() {
        let store = Store::new(vec![info("q", "redis")], Duration::from_secs(30));
        store.record_poll("redis", t(0), Ok(vec![sample("q", "a", Ok(3.0))]));
        let err = store
            .get("default", "q", &Selector::everything(), t(31))
            .expect_err("stale");
        assert!(matches!(err, LookupError::Stale { .. }), "{err:?}");
    }

    #[test]
    fn failed_source_is_unavailable_never_zero_and_recovers() {
        let store = Store::new(vec![info("q", "redis")], Duration::from_secs(30));
        let err = store
            .get("default", "q", &Selector::everything(), t(0))
            .expect_err("not polled");
        assert!(err.to_string().contains("first poll"), "{err}");
        store.record_poll("redis", t(0), Ok(vec![sample("q", "a", Ok(3.0))]));
        store.record_poll("redis", t(2), Err("connection refused".into()));
        let err = store
            .get("default", "q", &Selector::everything(), t(3))
            .expect_err("failing");
        assert!(err.to_string().contains("connection refused"), "{err}");
        store.record_poll("redis", t(4), Ok(vec![sample("q", "a", Ok(5.0))]));
        let got = store
            .get("default", "q", &Selector::everything(), t(5))
            .expect("recovered");
        assert_eq!(got[0].value, 5.0);
    }

    #[test]
    fn a_reload_keeps_unchanged_metrics_and_resets_the_rest() {
        let store = Store::new(
            vec![
                info("q", "redis"),
                info("r", "rabbit"),
                info("gone", "redis"),
            ],
            Duration::from_secs(30),
        );
        store.record_poll("redis", t(0), Ok(vec![sample("q", "a", Ok(3.0))]));
        store.record_poll("rabbit", t(0), Ok(vec![sample("r", "a", Ok(4.0))]));
        let mut described = info("q", "redis");
        described.description = Some("changed".into());
        store.reconfigure(
            vec![
                info("q", "redis"),
                info("r", "rabbit"),
                info("new", "redis"),
            ],
            Duration::from_secs(60),
            &HashSet::from(["rabbit".to_string()]),
            &HashSet::new(),
        );
        let q = store
            .get("default", "q", &Selector::everything(), t(40))
            .expect("kept, and the new staleness limit applies");
        assert_eq!(q[0].value, 3.0);
        let err = store
            .get("default", "r", &Selector::everything(), t(1))
            .expect_err("its source restarted");
        assert!(err.to_string().contains("first poll"), "{err}");
        assert!(!store.serves("default", "gone"));
        assert!(store.serves("default", "new"));
        assert_eq!(store.unpolled_sources(), vec!["rabbit".to_string()]);
        store.reconfigure(
            vec![described.clone(), info("r", "rabbit")],
            Duration::from_secs(60),
            &HashSet::new(),
            &HashSet::new(),
        );
        assert!(
            store
                .get("default", "q", &Selector::everything(), t(1))
                .is_err(),
            "a changed metric starts over"
        );
        store.record_poll("redis", t(2), Ok(vec![sample("q", "a", Ok(3.0))]));
        store.reconfigure(
            vec![described, info("r", "rabbit")],
            Duration::from_secs(60),
            &HashSet::new(),
            &HashSet::from(["q".to_string()]),
        );
        let err = store
            .get("default", "q", &Selector::everything(), t(3))
            .expect_err("a metric that reads another key now starts over");
        assert!(err.to_string().contains("first poll"), "{err}");
    }

    #[test]
    fn namespaced_series_are_served_only_to_their_own_namespace() {
        let mut gpus = info("gpu", "dcgm");
        gpus.namespace_label = Some("namespace");
        let store = Store::new(vec![gpus], Duration::from_secs(30));
        let series = |ns: &str, value: Result<f64, SeriesError>| {
            Sample::new(
                "gpu".into(),
                Labels::from([
                    ("namespace".to_string(), ns.to_string()),
                    ("workload".to_string(), "infer".to_string()),
                ])
                .into(),
                value,
            )
        };
        store.record_poll(
            "dcgm",
            t(0),
            Ok(vec![
                series("team-a", Ok(70.0)),
                series("team-b", Err(SeriesError::new("unknown"))),
            ]),
        );
        let got = store
            .get("team-a", "gpu", &Selector::everything(), t(1))
            .expect("team-b's failing series is not team-a's concern");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, 70.0);
        let other = store
            .get("team-c", "gpu", &Selector::everything(), t(1))
            .expect("served");
        assert!(other.is_empty(), "{other:?}");
    }

    #[test]
    fn a_matched_series_error_fails_the_lookup_but_unmatched_ones_do_not() {
        let store = Store::new(vec![info("q", "redis")], Duration::from_secs(30));
        store.record_poll(
            "redis",
            t(0),
            Ok(vec![
                sample("q", "a", Ok(1.0)),
                sample("q", "b", Err(SeriesError::new("key b is a hash"))),
            ]),
        );
        let err = store
            .get("default", "q", &Selector::everything(), t(1))
            .expect_err("b fails");
        assert!(err.to_string().contains("key b is a hash"), "{err}");
        let ok = store
            .get(
                "default",
                "q",
                &Selector::parse("queue=a").expect("parses"),
                t(1),
            )
            .expect("a alone");
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn indexed_selector_lookups_match_a_full_scan() {
        let store = Store::new(vec![info("q", "redis")], Duration::from_secs(30));
        let samples = (0..50)
            .map(|i| sample("q", &format!("q{i}"), Ok(i as f64)))
            .collect();
        store.record_poll("redis", t(0), Ok(samples));
        for selector in [
            "queue=q7",
            "queue in (q1,q3,q49,nope)",
            "queue in (q1,q3),queue!=q3",
            "missing=x",
            "queue!=q0",
            "",
        ] {
            let sel = Selector::parse(selector).expect("parses");
            let got: Vec<f64> = store
                .get("default", "q", &sel, t(1))
                .expect("fresh")
                .iter()
                .map(|v| v.value)
                .collect();
            let (_, state) = store.state("q").expect("metric");
            let want: Vec<f64> = state
                .series
                .iter()
                .filter(|s| sel.matches(&s.labels))
                .map(|s| *s.value.as_ref().expect("value"))
                .collect();
            assert_eq!(got, want, "selector {selector:?}");
        }
    }

    #[test]
    fn the_label_index_is_kept_only_for_the_same_label_sets() {
        let store = Store::new(vec![info("q", "redis")], Duration::from_secs(30));
        let first: Vec<Sample> = (0..20)
            .map(|i| sample("q", &format!("q{i}"), Ok(i as f64)))
            .collect();
        let values = |selector: &str| -> Vec<f64> {
            let sel = Selector::parse(selector).expect("parses");
            store
                .get("default", "q", &sel, t(1))
                .expect("fresh")
                .iter()
                .map(|v| v.value)
                .collect()
        };
        store.record_poll("redis", t(0), Ok(first.clone()));
        let index_before = store.state("q").expect("metric").1.index.clone();
        // The same shared label sets with new values (a source that planned its series once).
        let again = first
            .iter()
            .map(|s| Sample::new(s.metric.clone(), s.labels.clone(), Ok(100.0)))
            .collect();
        store.record_poll("redis", t(1), Ok(again));
        let state = store.state("q").expect("metric").1;
        assert!(Arc::ptr_eq(&state.index, &index_before), "index kept");
        assert_eq!(values("queue=q7"), vec![100.0]);
        // Same count and order, other label values: a new index, or q7 would find q3's slot.
        let shifted = (0..20)
            .map(|i| sample("q", &format!("q{}", (i + 4) % 20), Ok(i as f64)))
            .collect();
        store.record_poll("redis", t(1), Ok(shifted));
        assert_eq!(values("queue=q7"), vec![3.0]);
        assert_eq!(values("queue in (q0,q1)"), vec![16.0, 17.0]);
    }

    #[test]
    fn non_finite_values_become_series_errors() {
        let store = Store::new(vec![info("q", "redis")], Duration::from_secs(30));
        store.record_poll("redis", t(0), Ok(vec![sample("q", "a", Ok(f64::NAN))]));
        assert!(
            store
                .get("default", "q", &Selector::everything(), t(1))
                .is_err()
        );
    }

    #[test]
    fn unknown_metric_and_foreign_namespace_are_not_found() {
        let mut m = info("q", "redis");
        m.namespaces = Some(vec!["ml".into()]);
        let store = Store::new(vec![m], Duration::from_secs(30));
        store.record_poll("redis", t(0), Ok(vec![sample("q", "a", Ok(1.0))]));
        assert!(matches!(
            store.get("ml", "nope", &Selector::everything(), t(1)),
            Err(LookupError::UnknownMetric { .. })
        ));
        assert!(matches!(
            store.get("default", "q", &Selector::everything(), t(1)),
            Err(LookupError::UnknownMetric { .. })
        ));
        assert!(
            store.get("ml", "Q", &Selector::everything(), t(1)).is_ok(),
            "names match case-insensitively"
        );
    }
}
