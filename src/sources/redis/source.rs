//! The running Redis source: one poll brings the keys up to date (the `discovery` module),
//! plans the series once per set of keys (the `plan` module), and reads them in one pipelined
//! round trip per node, plus a second only where a lookup needs the first's answer (the
//! `reads` module). Connections belong to the `topology`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::batch::Batch;
use super::config::{RedisMetric, RedisSourceConfig};
use super::discovery::Discovery;
use super::plan::{self, KeyOrigin, MetricPlan, Plan, Serve};
use super::reads::Pending;
use super::reply;
use super::topology::Topology;
use super::tracking::Tracking;
use crate::model::{Labels, Sample, SeriesError};
use crate::sources::build::{Blocks, SourceSpec};
use crate::sources::kubernetes::replicas::ReplicaReader;
use crate::sources::measure::Measure;
use crate::sources::rates::{self, Increase, Rates};
use crate::sources::source::{Source, SourceError};
use crate::sources::workers::Workload;
use crate::wake::{WakePace, WakeSignal};

/// The Redis kind, naming its two blocks: `sources.<name>.redis` ([`RedisSourceConfig`]) and
/// `metrics[].redis` ([`RedisMetric`]).
pub struct Redis;

impl Blocks for Redis {
    type Connection = RedisSourceConfig;
    type Target = RedisMetric;
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
    /// The keys each pattern metric polls.
    discovery: Discovery,
    /// Exact keys that have existed at some poll since the source started.
    seen: HashSet<String>,
    /// Exact keys already logged as never seen, so each is logged once.
    warned: HashSet<String>,
    /// The series and their round-one commands, planned once per set of keys and reused by
    /// every poll until discovery changes the keys.
    plan: Option<Plan>,
    /// The watch that wakes the poll loop when a key changes (`None`: `wake.enabled: false`).
    tracking: Option<Tracking>,
    /// The counter readings of each rate metric's series (and of `drain_seconds`'
    /// completions), by metric name.
    rates: HashMap<Arc<str>, Rates<Arc<Labels>>>,
    /// `drain_seconds` when work waits and nothing finished in the window.
    max_drain_seconds: f64,
    /// Each `workers_needed` metric's queue and workload, by metric name (one series each).
    workers: HashMap<Arc<str>, Workload>,
    /// Reads the workloads' replicas (`Some` when a metric is `workers_needed`).
    replicas: Option<ReplicaReader>,
}

impl RedisSource {
    /// Builds the source of `spec`: its connection and the metrics that read it.
    /// Does not connect: the first poll does, so a server that is down at start-up is a poll
    /// error like any other, not a reason to exit.
    ///
    /// # Errors
    /// [`SourceError::Config`] when an address, URL or CA file cannot be used.
    pub fn new(
        spec: &SourceSpec<'_, Redis>,
        replicas: Option<ReplicaReader>,
    ) -> Result<Self, SourceError> {
        let metrics: Vec<MetricPlan> = spec
            .metrics
            .iter()
            .filter_map(|(m, target)| MetricPlan::of(m, *target))
            .collect();
        for m in &metrics {
            if let Some(why) = m.unknowable() {
                tracing::warn!(source = %spec.name, metric = %m.name, "every series of this metric answers an error: {why}");
            }
        }
        let topology = Topology::new(spec.connection, spec.poll_timeout)?;
        let tracking = spec.connection.wake.enabled.then(|| {
            let (mut keys, mut patterns) = (Vec::new(), Vec::new());
            for m in &metrics {
                m.watched(&mut keys, &mut patterns);
            }
            let signal = WakeSignal::new(WakePace {
                debounce: spec.connection.wake.debounce.0,
                max_polls_per_second: spec.connection.wake.max_polls_per_second,
            });
            Tracking::new(spec.name, signal, &keys, &patterns)
        });
        let discovery = Discovery::new(
            plan::wanted(&metrics),
            spec.discovery_interval,
            spec.pattern_key_retention,
        );
        let rates = metrics
            .iter()
            .filter(|m| m.measure.is_counter_rate() || m.measure == Measure::DrainSeconds)
            .map(|m| (Arc::from(m.name.as_str()), Rates::new(m.window)))
            .collect();
        let workers = metrics
            .iter()
            .filter_map(|m| {
                let (config, target_wait) = m.workers.clone()?;
                Some((
                    Arc::from(m.name.as_str()),
                    Workload::new(config, target_wait, m.window),
                ))
            })
            .collect();
        Ok(RedisSource {
            workers,
            replicas,
            max_drain_seconds: spec.connection.max_drain_seconds(),
            rates,
            name: spec.name.to_string(),
            db: topology.db(),
            topology,
            display: spec.connection.display(),
            metrics,
            discovery,
            seen: HashSet::new(),
            warned: HashSet::new(),
            plan: None,
            tracking,
        })
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
        let keys_changed = self
            .discovery
            .run(&mut self.topology, self.tracking.as_ref())
            .await?;
        if keys_changed {
            self.plan = None;
        }
        self.read_replicas().await;
        let outcome = self.read().await;
        if outcome.is_err() {
            // A refusal or a broken reply: start from fresh connections next time.
            self.topology.reset();
        }
        outcome
    }
}

impl RedisSource {
    /// Reads the ready replicas of every `workers_needed` metric's workload, one `GET` each,
    /// at the adapter's clock. A failure is that metric's series' error, not the source's.
    async fn read_replicas(&mut self) {
        if let Some(reader) = &self.replicas {
            reader.read_into(self.workers.values_mut()).await;
        }
    }

    /// Records `count`, a reading of the counter of `metric`'s series `labels` at `now_s`,
    /// and returns its increase over the metric's window.
    ///
    /// # Errors
    /// Before the counter's second reading: a rate is never made up from one.
    fn rate(
        &mut self,
        metric: &str,
        labels: &Arc<Labels>,
        now_s: f64,
        count: f64,
    ) -> Result<Increase, SeriesError> {
        self.rates
            .get_mut(metric)
            .ok_or_else(|| {
                SeriesError::new(format!("metric {metric:?} keeps no counter readings"))
            })?
            .observe(labels.clone(), now_s, count)
    }

    /// Reads every series: round one, then round two where a lookup needs it.
    async fn read(&mut self) -> Result<Vec<Sample>, SourceError> {
        let plan = match self.plan.take() {
            Some(plan) => plan,
            None => Plan::new(
                &self.metrics,
                &self.discovery,
                self.topology.checks_role(),
                self.db,
            ),
        };
        let samples = self.read_plan(&plan).await;
        self.plan = Some(plan);
        samples
    }

    async fn read_plan(&mut self, plan: &Plan) -> Result<Vec<Sample>, SourceError> {
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
        let pending: Vec<(Pending, Vec<Pending>)> = plan
            .series
            .iter()
            .map(|s| {
                let read = s.read(self.db);
                let exists = read.exists(&s.planned, &replies);
                let never_seen = match s.origin {
                    KeyOrigin::Configured => {
                        if exists && !self.seen.contains(&*s.key) {
                            self.seen.insert(s.key.to_string());
                        }
                        read.target.key_type.deleted_when_empty() && !self.seen.contains(&*s.key)
                    }
                    KeyOrigin::Pattern => {
                        self.discovery.note_presence(&s.key, exists, polled_at);
                        false
                    }
                    KeyOrigin::Found => false,
                };
                if never_seen && !self.warned.contains(&*s.key) {
                    self.warned.insert(s.key.to_string());
                    tracing::warn!(source = %self.name, metric = %s.metric_name, key = %s.key, db = self.db, "key does not exist and has not since start: served as 0, because Redis deletes an empty list or sorted set; if it should hold jobs, check the key for a typo and the db");
                }
                unseen.push(never_seen);
                let mut counter = |c: &plan::CounterRead| {
                    c.read(self.db)
                        .after_round_one(&c.planned, &replies, now_ms, &mut second)
                };
                let counters = match &s.serve {
                    Serve::Drain(c) => vec![counter(c)],
                    Serve::Workers(cs) => cs.iter().map(&mut counter).collect(),
                    Serve::AsRead | Serve::Rate => Vec::new(),
                };
                (
                    read.after_round_one(&s.planned, &replies, now_ms, &mut second),
                    counters,
                )
            })
            .collect();
        drop(replies);
        let replies = if second.is_empty() {
            Vec::new()
        } else {
            self.topology.run(&second, None).await?
        };
        let now_s = now_ms / 1000.0;
        let samples: Vec<Sample> = plan
            .series
            .iter()
            .zip(pending)
            .zip(unseen)
            .map(|((s, (p, counters)), unseen)| {
                let read = s.read(self.db).finish(p, &replies, now_ms);
                let mut counters = counters.into_iter();
                let value = match (&s.serve, counters.next()) {
                    (Serve::Rate, _) => read.and_then(|count| {
                        self.rate(s.metric_name.as_ref(), &s.labels, now_s, count)
                            .map(Increase::rate)
                    }),
                    (Serve::Workers(cs), Some(completed)) => {
                        let [done, arrived] = &**cs;
                        let completed = done.read(self.db).finish(completed, &replies, now_ms);
                        let arrived = match counters.next() {
                            Some(p) => arrived.read(self.db).finish(p, &replies, now_ms),
                            None => Err(SeriesError::new("no arrivals counter was read")),
                        };
                        match self.workers.get_mut(&s.metric_name) {
                            Some(w) => w.serve(now_s, read, completed, arrived),
                            None => Err(SeriesError::new("the metric names no workload")),
                        }
                    }
                    (Serve::Drain(c), Some(counter)) => {
                        let count = c.read(self.db).finish(counter, &replies, now_ms);
                        let done = count
                            .and_then(|n| self.rate(s.metric_name.as_ref(), &s.labels, now_s, n));
                        read.and_then(|waiting| {
                            if waiting <= 0.0 {
                                return Ok(0.0);
                            }
                            let done = done?;
                            Ok(rates::drain_seconds(
                                waiting,
                                done.rate(),
                                self.max_drain_seconds,
                            ))
                        })
                    }
                    (Serve::AsRead | Serve::Drain(_) | Serve::Workers(_), _) => read,
                };
                Sample {
                    unseen,
                    ..Sample::new(s.metric_name.clone(), s.labels.clone(), value)
                }
            })
            .collect();
        for r in self.rates.values_mut() {
            r.prune(now_s);
        }
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
