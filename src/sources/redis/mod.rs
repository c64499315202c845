//! The Redis source: lists, streams and sorted sets used as queues, read-only, on one server,
//! a Sentinel-managed master, or a Redis Cluster (the `topology` module).
//!
//! One poll is one pipelined round trip per node (plus a second only where a lookup needs the
//! first's answer, see the `reads` module), on the source's own connection per node (the
//! `wire` module: the batch written as it was encoded once, replies read off the socket); scans
//! and topology queries use the `redis` crate's multiplexed connections. Both are dropped and
//! re-made after a failure. Pattern metrics find their keys with `SCAN ... MATCH ... TYPE` on
//! their own, slower interval (`discovery_interval`), never with `KEYS`. After the first
//! discovery, a scan on one server or a Sentinel's master runs beside the polls (a task on the
//! same multiplexed connection) and the first poll after it finishes takes its keys, so a large
//! keyspace never holds back the poll of known keys; a cluster's scan, and one for keys the
//! server reported changed, still run inside the poll. Only read commands are
//! sent; the `read_only`, `redis_sentinel` and `redis_cluster` integration tests audit that
//! against every server's command statistics.
//!
//! What a missing key means depends on its type. Redis deletes a list or sorted set when its
//! last element goes, so a missing one is an empty queue: `0`. A list or sorted-set key found
//! by a pattern therefore stays in the poll set after it empties (served as `0`, and a job
//! pushed into it is seen on the next poll) until it has been missing for
//! `pattern_key_retention`. An exact key that has never existed since start is served as `0`
//! too, but logged once and counted, because it is as likely a typo. Redis never deletes a
//! stream by itself, so a missing stream is an error for every stream measure.

pub mod batch;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod glob;
mod json_pointer;
pub mod node;
pub mod reads;
pub mod reply;
pub mod sentinel;
mod timestamp;
pub mod topology;
pub mod tracking;
pub mod wire;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::batch::Batch;
use self::config::{KEY_LABEL_FULL, KeyType, RedisSourceConfig, RedisTarget};
use self::reads::{Pending, Planned, SeriesRead};
use self::topology::Topology;
use self::tracking::Tracking;
use super::build::{Blocks, SourceSpec};
use super::source::{Source, SourceError};
use crate::model::{Labels, Sample};
use crate::primitives::ConfigError;
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;
use crate::wake::{WakePace, WakeSignal};

/// Most keys one pattern may match; beyond it the pattern is an error rather than a surprise.
pub const MAX_KEYS_PER_PATTERN: usize = 100_000;

/// One configured metric as this source reads it.
#[derive(Debug, Clone)]
struct MetricPlan {
    name: String,
    labels: Labels,
    target: RedisTarget,
    measure: Measure,
}

/// A Redis server (or Sentinel set, or cluster) and the metrics read from it.
pub struct RedisSource {
    name: String,
    /// The servers and how commands reach them.
    topology: Topology,
    /// The servers, for messages (a URL's password redacted).
    display: String,
    /// The database the keys are read in, for messages.
    db: i64,
    metrics: Vec<MetricPlan>,
    discovery_interval: Duration,
    /// Keys polled per (pattern, type): what the last discovery found, plus list and
    /// sorted-set keys that have been missing for less than `key_retention`.
    discovered: HashMap<(String, KeyType), Vec<String>>,
    last_discovery: Option<Instant>,
    /// How long a pattern key that stopped existing stays polled.
    key_retention: Duration,
    /// Pattern keys a poll found missing, and since when.
    missing_since: HashMap<String, Instant>,
    /// Exact keys that have existed at some poll since the source started.
    seen: HashSet<String>,
    /// Exact keys already logged as never seen, so each is logged once.
    warned: HashSet<String>,
    /// The series and their round-one commands, planned once per set of keys and reused by
    /// every poll until discovery changes the keys.
    plan: Option<Plan>,
    /// The watch that wakes the poll loop when a key changes (`None`: `wake.enabled: false`).
    tracking: Option<Tracking>,
    /// Keys reported changed that discovery did not take (another type): not worth another
    /// discovery each time they change.
    passed_over: HashSet<String>,
    /// A discovery running beside the polls, applied by the first poll after it finishes.
    background: Option<BackgroundDiscovery>,
}

/// What one discovery found: the keys of each (pattern, type).
type Discovered = Vec<((String, KeyType), node::Scanned)>;

/// A discovery task, stopped when its source is dropped (a reload) or a newer one starts.
struct BackgroundDiscovery(tokio::task::JoinHandle<Result<Discovered, SourceError>>);

impl Drop for BackgroundDiscovery {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every series of this source with its round-one plan, and the round-one batch itself.
struct Plan {
    series: Vec<PlannedSeries>,
    first: Batch,
    time_idx: usize,
    /// Where round one's `ROLE` is, for a topology that checks it.
    role_idx: Option<usize>,
}

struct PlannedSeries {
    metric: usize,
    metric_name: Arc<str>,
    /// Shared by the series of every metric over the same key.
    key: Arc<str>,
    labels: Arc<Labels>,
    planned: Planned,
}

impl RedisSource {
    /// Builds the source of `spec`: its connection and the metrics that read it.
    /// Does not connect: the first poll does, so a server that is down at start-up is a poll
    /// error like any other, not a reason to exit.
    ///
    /// # Errors
    /// [`SourceError::Config`] when an address, URL or CA file cannot be used.
    pub fn new(spec: &SourceSpec<'_, Redis>) -> Result<Self, SourceError> {
        let metrics = spec
            .metrics
            .iter()
            .filter_map(|(m, target)| plan_of(m, *target))
            .collect();
        let topology = Topology::new(spec.connection, spec.poll_timeout)?;
        let tracking = spec.connection.wake.enabled.then(|| {
            let (mut keys, mut patterns) = (Vec::new(), Vec::new());
            for (_, target) in &spec.metrics {
                if let Some(t) = target {
                    keys.extend(t.key.clone());
                    patterns.extend(t.pattern.clone());
                }
            }
            let signal = WakeSignal::new(WakePace {
                debounce: spec.connection.wake.debounce.0,
                max_polls_per_second: spec.connection.wake.max_polls_per_second,
            });
            Tracking::new(spec.name, signal, &keys, &patterns)
        });
        Ok(RedisSource {
            name: spec.name.to_string(),
            db: topology.db(),
            topology,
            display: spec.connection.display(),
            metrics,
            discovery_interval: spec.discovery_interval,
            discovered: HashMap::new(),
            last_discovery: None,
            key_retention: spec.pattern_key_retention,
            missing_since: HashMap::new(),
            seen: HashSet::new(),
            warned: HashSet::new(),
            plan: None,
            tracking,
            passed_over: HashSet::new(),
            background: None,
        })
    }

    /// The (pattern, type) pairs discovery scans for.
    fn wanted_patterns(&self) -> BTreeSet<(String, KeyType)> {
        self.metrics
            .iter()
            .filter_map(|m| m.target.pattern.clone().map(|p| (p, m.target.key_type)))
            .collect()
    }

    /// Discovery inside the poll: the first one (nothing to poll before it), one for keys the
    /// backend reported, and every one on a cluster.
    async fn discover(&mut self) -> Result<(), SourceError> {
        // A scan running beside the polls is older than this one: its answer is not wanted.
        self.background = None;
        let mut scanned = Vec::new();
        for (pattern, key_type) in self.wanted_patterns() {
            let found = self
                .topology
                .scan(&pattern, key_type.redis_name(), MAX_KEYS_PER_PATTERN)
                .await?;
            scanned.push(((pattern, key_type), found));
        }
        self.apply_discovery(scanned);
        self.last_discovery = Some(Instant::now());
        Ok(())
    }

    /// Starts discovery beside the polls, on a clone of the multiplexed connection, where the
    /// topology has one node to scan (one server, a Sentinel's master). A `SCAN` of a large
    /// keyspace is many round trips (1,000,000 keys: 1,000 of them); inside a poll it held back
    /// the poll of every known key for as long. Returns whether it started.
    async fn start_background_discovery(&mut self) -> Result<bool, SourceError> {
        let Some((display, mut conn)) = self.topology.scan_connection().await? else {
            return Ok(false);
        };
        let wanted = self.wanted_patterns();
        let deadline = self.topology.node_deadline();
        let task = tokio::spawn(async move {
            let mut scanned = Vec::new();
            for (pattern, key_type) in wanted {
                let keys = node::scan_node(
                    &mut conn,
                    &pattern,
                    key_type.redis_name(),
                    MAX_KEYS_PER_PATTERN,
                    &display,
                    deadline,
                )
                .await?;
                let found = node::Scanned {
                    keys,
                    partial: false,
                };
                scanned.push(((pattern, key_type), found));
            }
            Ok(scanned)
        });
        self.background = Some(BackgroundDiscovery(task));
        self.last_discovery = Some(Instant::now());
        Ok(true)
    }

    /// Applies a discovery that finished beside the polls, if one did. A failed one fails this
    /// poll, as a failed discovery inside it would.
    async fn finish_background_discovery(&mut self) -> Result<(), SourceError> {
        if !self.background.as_ref().is_some_and(|b| b.0.is_finished()) {
            return Ok(());
        }
        let Some(mut done) = self.background.take() else {
            return Ok(());
        };
        match (&mut done.0).await {
            Ok(Ok(scanned)) => {
                self.apply_discovery(scanned);
                Ok(())
            }
            Ok(Err(e)) => {
                self.topology.reset();
                Err(e)
            }
            Err(e) => Err(SourceError::BadReply {
                what: format!("key discovery did not finish: {e}"),
            }),
        }
    }

    /// Takes the keys a discovery found as the keys to poll.
    fn apply_discovery(&mut self, scanned: Discovered) {
        let mut found = HashMap::new();
        for ((pattern, key_type), scanned) in scanned {
            let mut keys = scanned.keys;
            if scanned.partial {
                // A cluster node that did not answer keeps the keys it was last known to hold.
                let kept = self.discovered.get(&(pattern.clone(), key_type));
                for key in kept.into_iter().flatten() {
                    if self.topology.unscanned(key) {
                        keys.insert(key.clone());
                    }
                }
            }
            for key in &keys {
                self.missing_since.remove(key);
            }
            let polled = self.discovered.remove(&(pattern.clone(), key_type));
            if key_type.deleted_when_empty() {
                // Keys Redis deleted because they emptied stay until missing for too long.
                let now = Instant::now();
                for key in polled.into_iter().flatten() {
                    if keys.len() >= MAX_KEYS_PER_PATTERN || keys.contains(&key) {
                        continue;
                    }
                    let since = *self.missing_since.entry(key.clone()).or_insert(now);
                    if since.elapsed() < self.key_retention {
                        keys.insert(key);
                    }
                }
            }
            found.insert((pattern, key_type), keys.into_iter().collect());
        }
        let polled: HashSet<&String> = found.values().flatten().collect();
        self.missing_since.retain(|key, _| polled.contains(key));
        if found != self.discovered {
            self.plan = None;
        }
        self.discovered = found;
    }

    fn discovery_due(&self) -> bool {
        let has_patterns = self.metrics.iter().any(|m| m.target.pattern.is_some());
        has_patterns
            && self
                .last_discovery
                .is_none_or(|t| t.elapsed() >= self.discovery_interval)
    }

    /// Keys reported changed that match a pattern but are not polled yet: new queues, which
    /// discovery should pick up now rather than at its interval.
    fn unknown_reported(&self) -> Vec<String> {
        let Some(tracking) = &self.tracking else {
            return Vec::new();
        };
        tracking
            .take_reported()
            .into_iter()
            .filter(|k| !self.is_discovered(k) && !self.passed_over.contains(k))
            .collect()
    }

    fn is_discovered(&self, key: &String) -> bool {
        // Each list is sorted (it comes from a BTreeSet).
        self.discovered
            .values()
            .any(|keys| keys.binary_search(key).is_ok())
    }

    /// Plans every series: exact keys, and the keys discovery found for each pattern.
    fn make_plan(&self) -> Plan {
        let mut first = Batch::new();
        let time_idx = first.add(&[b"TIME"]);
        let role_idx = self.topology.checks_role().then(|| first.add(&[b"ROLE"]));
        let mut series = Vec::new();
        // Metrics over the same keys with the same labels (a queue's length and its oldest
        // age) share one copy of each label set: a series' labels are most of its memory.
        let mut shared: HashSet<Arc<Labels>> = HashSet::new();
        let mut shared_keys: HashSet<Arc<str>> = HashSet::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let metric_name: Arc<str> = Arc::from(m.name.as_str());
            let keys: Vec<(String, Labels)> = match (&m.target.key, &m.target.pattern) {
                (Some(key), _) => {
                    let mut labels = m.labels.clone();
                    labels.insert(KEY_LABEL_FULL.to_string(), key.clone());
                    vec![(key.clone(), labels)]
                }
                (None, Some(pattern)) => self
                    .discovered
                    .get(&(pattern.clone(), m.target.key_type))
                    .into_iter()
                    .flatten()
                    .map(|key| {
                        let mut labels = m.labels.clone();
                        labels.insert(KEY_LABEL_FULL.to_string(), key.clone());
                        labels.insert(
                            m.target.key_label().to_string(),
                            wildcard_part(pattern, key),
                        );
                        (key.clone(), labels)
                    })
                    .collect(),
                (None, None) => Vec::new(),
            };
            for (key, labels) in keys {
                let read = SeriesRead {
                    target: &m.target,
                    measure: m.measure,
                    key: &key,
                    db: self.db,
                };
                let planned = read.plan(&mut first);
                let key = match shared_keys.get(key.as_str()) {
                    Some(k) => k.clone(),
                    None => {
                        let k: Arc<str> = Arc::from(key.as_str());
                        shared_keys.insert(k.clone());
                        k
                    }
                };
                let labels = match shared.get(&labels) {
                    Some(l) => l.clone(),
                    None => {
                        let l = Arc::new(labels);
                        shared.insert(l.clone());
                        l
                    }
                };
                series.push(PlannedSeries {
                    metric: i,
                    metric_name: metric_name.clone(),
                    key,
                    labels,
                    planned,
                });
            }
        }
        first.seal();
        // Kept until the keys change: no growth slack (a third of the vector's size).
        series.shrink_to_fit();
        Plan {
            series,
            first,
            time_idx,
            role_idx,
        }
    }
}

impl Source for RedisSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn wake(&self) -> Option<WakeSignal> {
        self.tracking.as_ref().map(Tracking::signal)
    }

    async fn poll(&mut self) -> Result<Vec<Sample>, SourceError> {
        self.topology.prepare().await?;
        if let Some(t) = &mut self.tracking {
            t.ensure(&self.topology).await;
        }
        self.finish_background_discovery().await?;
        let reported = self.unknown_reported();
        let inline = if !reported.is_empty() {
            true
        } else if self.discovery_due() && self.background.is_none() {
            self.last_discovery.is_none() || !self.start_background_discovery().await?
        } else {
            false
        };
        if inline {
            self.discover().await?;
            if self.passed_over.len() > 10_000 {
                self.passed_over.clear();
            }
            // A key discovery did not take (another type) does not trigger it again.
            for key in reported {
                if !self.is_discovered(&key) {
                    self.passed_over.insert(key);
                }
            }
        }
        let outcome = self.read().await;
        if outcome.is_err() {
            // A refusal or a broken reply: start from fresh connections next time.
            self.topology.reset();
        }
        outcome
    }
}

impl RedisSource {
    /// Reads every series: round one, then round two where a lookup needs it.
    async fn read(&mut self) -> Result<Vec<Sample>, SourceError> {
        if self.plan.is_none() {
            self.plan = Some(self.make_plan());
        }
        let (Some(plan), metrics) = (&self.plan, &self.metrics) else {
            unreachable!("planned above");
        };
        let started = Instant::now();
        let replies = self.topology.run(&plan.first, plan.role_idx).await?;
        let round_one = started.elapsed();
        if let Some(message) = reply::server_error(&replies[plan.time_idx]) {
            return Err(SourceError::Refused {
                target: self.display.clone(),
                message,
            });
        }
        let now_ms =
            reply::time_ms(&replies[plan.time_idx]).map_err(|e| SourceError::BadReply {
                what: format!("TIME: {e}"),
            })?;
        let mut second = Batch::new();
        let mut unseen = Vec::with_capacity(plan.series.len());
        let polled_at = Instant::now();
        let pending: Vec<Pending> = plan
            .series
            .iter()
            .map(|s| {
                let read = read_of(metrics, s, self.db);
                let exists = read.exists(&s.planned, &replies);
                let target = &metrics[s.metric].target;
                let never_seen = if target.key.is_some() {
                    if exists && !self.seen.contains(&*s.key) {
                        self.seen.insert(s.key.to_string());
                    }
                    target.key_type.deleted_when_empty() && !self.seen.contains(&*s.key)
                } else {
                    // Steady state (every key there) costs no hashing.
                    if exists {
                        if !self.missing_since.is_empty() {
                            self.missing_since.remove(&*s.key);
                        }
                    } else {
                        self.missing_since
                            .entry(s.key.to_string())
                            .or_insert(polled_at);
                    }
                    false
                };
                if never_seen && !self.warned.contains(&*s.key) {
                    self.warned.insert(s.key.to_string());
                    tracing::warn!(source = %self.name, metric = %s.metric_name, key = %s.key, db = self.db, "key does not exist and has not since start: served as 0, because Redis deletes an empty list or sorted set; if it should hold jobs, check the key for a typo and the db");
                }
                unseen.push(never_seen);
                read.after_round_one(&s.planned, &replies, now_ms, &mut second)
            })
            .collect();
        drop(replies);
        let replies = if second.is_empty() {
            Vec::new()
        } else {
            self.topology.run(&second, None).await?
        };
        let samples: Vec<Sample> = plan
            .series
            .iter()
            .zip(pending)
            .zip(unseen)
            .map(|((s, p), unseen)| Sample {
                unseen,
                ..Sample::new(
                    s.metric_name.clone(),
                    s.labels.clone(),
                    read_of(metrics, s, self.db).finish(p, &replies, now_ms),
                )
            })
            .collect();
        // Where a poll's time goes (BENCHMARKS.md): the round trip through the client, the rest.
        tracing::debug!(
            source = %self.name,
            commands = plan.first.len(),
            round_one_ms = round_one.as_secs_f64() * 1000.0,
            total_ms = started.elapsed().as_secs_f64() * 1000.0,
            "read"
        );
        Ok(samples)
    }
}

fn read_of<'a>(metrics: &'a [MetricPlan], s: &'a PlannedSeries, db: i64) -> SeriesRead<'a> {
    let m = &metrics[s.metric];
    SeriesRead {
        target: &m.target,
        measure: m.measure,
        key: &s.key,
        db,
    }
}

fn plan_of(m: &MetricConfig, target: Option<&RedisTarget>) -> Option<MetricPlan> {
    Some(MetricPlan {
        name: m.name.clone(),
        labels: m.labels.clone().into_iter().collect(),
        target: target?.clone(),
        measure: m.measure,
    })
}

/// The Redis kind: `sources.<name>.redis` and `metrics[].redis`.
pub struct Redis;

impl Blocks for Redis {
    type Connection = RedisSourceConfig;
    type Target = RedisTarget;
}

/// Checks metric `m` of a Redis source (`at` names it); `target` is its `redis:` block.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_metric(
    _conn: &RedisSourceConfig,
    m: &MetricConfig,
    target: Option<&RedisTarget>,
    at: &str,
) -> Result<(), ConfigError> {
    match target {
        Some(t) => t.validate(&format!("{at}.redis"), m.measure, &m.labels),
        None => Ok(()),
    }
}

/// The part of `key` that `pattern`'s wildcards matched: the key less the pattern's literal
/// prefix and suffix (`queue:*` and `queue:embed` give `embed`; `bull:*:wait` and
/// `bull:embed:wait` give `embed`).
pub fn wildcard_part(pattern: &str, key: &str) -> String {
    let is_meta = |c: char| matches!(c, '*' | '?' | '[' | '\\');
    let prefix_len = pattern.find(is_meta).unwrap_or(pattern.len());
    let suffix_start = pattern
        .rfind(|c: char| is_meta(c) || c == ']')
        .map_or(pattern.len(), |i| i + 1);
    let prefix = &pattern[..prefix_len];
    let suffix = &pattern[suffix_start.max(prefix_len)..];
    let rest = key.strip_prefix(prefix).unwrap_or(key);
    rest.strip_suffix(suffix).unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_part_strips_the_pattern_literals() {
        assert_eq!(wildcard_part("queue:*", "queue:embed"), "embed");
        assert_eq!(wildcard_part("bull:*:wait", "bull:embed:wait"), "embed");
        assert_eq!(wildcard_part("rq:queue:*", "rq:queue:high"), "high");
        assert_eq!(wildcard_part("q?", "q1"), "1");
        assert_eq!(wildcard_part("jobs:[ab]*", "jobs:a1"), "a1");
    }
}
