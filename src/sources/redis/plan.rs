//! The series a Redis source polls and their round-one commands, planned once per set of keys
//! and reused by every poll until discovery changes the keys.
//!
//! Each series is one metric over one key (an exact key, or one a pattern's discovery found),
//! or one job library's queue (its preset expanded into generic targets by `libraries`); what
//! it sends and how its replies become a value is the `reads` module's, per key type.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::batch::Batch;
use super::config::{KEY_LABEL_FULL, KeyType, LibraryTarget, QueueNames, RedisMetric, RedisTarget};
use super::discovery::{Discovery, Wanted, wildcard_part};
use super::libraries::{self, Layout, Registry, SCOPE_ALL_QUEUES, SCOPE_QUEUE};
use super::reads::{Planned, SeriesRead};
use crate::model::Labels;
use crate::sources::kubernetes::replicas::WorkersConfig;
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;

/// One configured metric as a Redis source reads it.
#[derive(Debug, Clone)]
pub struct MetricPlan {
    pub name: String,
    pub labels: Labels,
    pub target: RedisMetric,
    pub measure: Measure,
    /// The window of a rate (and of `drain_seconds`' rate).
    pub window: Duration,
    /// `workers_needed`: the workload whose replicas run the jobs, and the target wait.
    pub workers: Option<(WorkersConfig, Duration)>,
}

impl MetricPlan {
    /// Metric `m` as read through `target`, its `redis:` block (`None`: not this kind's).
    pub fn of(m: &MetricConfig, target: Option<&RedisMetric>) -> Option<MetricPlan> {
        Some(MetricPlan {
            name: m.name.clone(),
            labels: m.labels.clone().into_iter().collect(),
            target: target?.clone(),
            measure: m.measure,
            window: m.window(),
            workers: m.workers.clone().zip(m.target_wait.map(|t| t.0)),
        })
    }

    /// What discovery must find for this metric: its pattern, or its library's queues.
    fn wanted(&self, wanted: &mut Wanted) {
        match &self.target {
            RedisMetric::Keys(t) => {
                if let Some(p) = &t.pattern {
                    wanted.patterns.insert((p.clone(), t.key_type));
                }
            }
            RedisMetric::Library(l) => {
                if l.queue != QueueNames::All {
                    return;
                }
                match libraries::registry(l.library, l.prefix()) {
                    Registry::Set(key) => {
                        wanted.sets.insert(key);
                    }
                    Registry::SetsMatching(pattern) => {
                        wanted.set_patterns.insert(pattern);
                    }
                    Registry::Marker(pattern, key_type) => {
                        wanted.patterns.insert((pattern, key_type));
                    }
                }
            }
        }
    }

    /// Why this metric can never be read, when it names a measure its library does not keep.
    pub fn unknowable(&self) -> Option<String> {
        match &self.target {
            RedisMetric::Keys(_) => None,
            RedisMetric::Library(l) => {
                match libraries::layout(l.library, l.prefix(), "", self.measure) {
                    Layout::Unknowable(why) => Some(why),
                    Layout::PerQueue(_) | Layout::AllQueues(_) | Layout::Drain { .. } => None,
                }
            }
        }
    }

    /// The keys and patterns a change to which should wake a poll.
    pub fn watched(&self, keys: &mut Vec<String>, patterns: &mut Vec<String>) {
        // A rate is over a window: a counter's every increment is no reason to poll at once
        // (a busy counter would wake every poll the pace allows).
        if self.measure.is_counter_rate() {
            return;
        }
        match &self.target {
            RedisMetric::Keys(t) => {
                keys.extend(t.key.clone());
                patterns.extend(t.pattern.clone());
                keys.extend(
                    t.also
                        .iter()
                        .filter(|a| !a.key.contains("{match}"))
                        .map(|a| a.key.clone()),
                );
            }
            RedisMetric::Library(l) => match &l.queue {
                QueueNames::Named(queues) => {
                    for queue in queues {
                        for read in preset_reads(l, queue, self.measure) {
                            keys.extend(read.target.key.clone());
                            keys.extend(read.target.also.iter().map(|a| a.key.clone()));
                        }
                    }
                }
                QueueNames::All => {
                    keys.extend(libraries::key_prefix(l.library, l.prefix()));
                    // A registry set is a pattern matching itself: its change is reported, and
                    // discovery reads it again at once (a new queue).
                    match libraries::registry(l.library, l.prefix()) {
                        Registry::Set(key) => patterns.push(key),
                        Registry::SetsMatching(p) | Registry::Marker(p, _) => patterns.push(p),
                    }
                    for read in preset_reads(l, "", self.measure) {
                        keys.extend(read.target.key.clone());
                    }
                }
            },
        }
    }
}

/// The generic reads of `l`'s preset for `queue` (none where the measure is unknowable).
fn preset_reads(l: &LibraryTarget, queue: &str, measure: Measure) -> Vec<libraries::PresetRead> {
    match libraries::layout(l.library, l.prefix(), queue, measure) {
        Layout::PerQueue(r) => vec![*r],
        Layout::AllQueues(reads) => reads,
        Layout::Drain { waiting, .. } => vec![*waiting],
        Layout::Unknowable(_) => Vec::new(),
    }
}

/// What discovery must find for `metrics`.
pub fn wanted(metrics: &[MetricPlan]) -> Wanted {
    let mut wanted = Wanted::default();
    for m in metrics {
        m.wanted(&mut wanted);
    }
    wanted
}

/// Every series of a source with its round-one plan, and the round-one batch itself.
pub struct Plan {
    pub series: Vec<PlannedSeries>,
    pub first: Batch,
    /// Where round one's `TIME` is: every age is measured on the server's clock.
    pub time_idx: usize,
    /// Where round one's `ROLE` is, for a topology that checks it.
    pub role_idx: Option<usize>,
}

/// One metric over one key.
pub struct PlannedSeries {
    pub metric_name: Arc<str>,
    /// What is read: the metric's target, or the target a preset expanded to for this queue.
    pub target: Arc<RedisTarget>,
    /// The generic measure read (a preset's `due` is a sorted set's `ready`).
    pub measure: Measure,
    /// Shared by the series of every metric over the same key.
    pub key: Arc<str>,
    pub labels: Arc<Labels>,
    pub planned: Planned,
    /// How the series' key was chosen, which says what its absence means.
    pub origin: KeyOrigin,
    /// How the value read becomes the value served.
    pub serve: Serve,
}

/// How a series' value read at a poll becomes the value served.
#[derive(Debug)]
pub enum Serve {
    /// As read.
    AsRead,
    /// The value read is a counter: served is its rate over the metric's window.
    Rate,
    /// The value read is the work waiting; served is that over the rate of the completions
    /// counter read beside it (`drain_seconds`).
    Drain(Box<CounterRead>),
    /// The value read is the work waiting; served is the replicas needed, from the
    /// completions and arrivals counters read beside it and the workload's replicas
    /// (`workers_needed`).
    Workers(Box<[CounterRead; 2]>),
}

/// A counter a series reads beside its waiting work: completions (`drain_seconds`,
/// `workers_needed`) or arrivals (`workers_needed`).
#[derive(Debug)]
pub struct CounterRead {
    pub target: Arc<RedisTarget>,
    pub key: Arc<str>,
    /// `completion_rate` or `arrival_rate`.
    pub measure: Measure,
    pub planned: Planned,
}

impl CounterRead {
    /// Plans the counter `measure` of `key` (read through `target`) into `batch`.
    fn plan(
        target: Arc<RedisTarget>,
        key: &str,
        measure: Measure,
        db: i64,
        batch: &mut Batch,
    ) -> Self {
        let key: Arc<str> = Arc::from(key);
        let planned = SeriesRead {
            target: &target,
            measure,
            key: &key,
            db,
        }
        .plan(batch);
        CounterRead {
            target,
            key,
            measure,
            planned,
        }
    }

    /// How this counter is read, in database `db`.
    pub fn read(&self, db: i64) -> SeriesRead<'_> {
        SeriesRead {
            target: &self.target,
            measure: self.measure,
            key: &self.key,
            db,
        }
    }
}

/// How a series' key was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Written in the config (a `key`, or a named queue of a preset): a key that has never
    /// existed is as likely a typo, and is logged.
    Configured,
    /// Found by a pattern: kept while missing for `pattern_key_retention`.
    Pattern,
    /// A queue a library's registry or layout showed, or a structure for all queues.
    Found,
}

impl PlannedSeries {
    /// How this series is read, in database `db`.
    pub fn read(&self, db: i64) -> SeriesRead<'_> {
        SeriesRead {
            target: &self.target,
            measure: self.measure,
            key: &self.key,
            db,
        }
    }
}

/// One series about to be planned.
struct Candidate {
    target: Arc<RedisTarget>,
    measure: Measure,
    key: String,
    labels: Labels,
    origin: KeyOrigin,
    /// Why it cannot be read (a preset measure its library does not keep).
    unknowable: Option<Arc<str>>,
    /// `drain_seconds`, `workers_needed`: the counters read beside the waiting work.
    flow: Option<Flow>,
}

/// The counters a `drain_seconds` or `workers_needed` series reads beside its waiting work,
/// each a generic target and its key.
struct Flow {
    completions: (Arc<RedisTarget>, String),
    /// `workers_needed` only.
    arrivals: Option<(Arc<RedisTarget>, String)>,
}

/// The series of generic metric `m` over `t`.
fn key_candidates(m: &MetricPlan, t: &RedisTarget, discovery: &Discovery) -> Vec<Candidate> {
    let shared = Arc::new(t.clone());
    // A stream's drain time and workers needed: its group's waiting entries, the group's
    // completions and the stream's arrivals.
    let one = |key: &str, labels: Labels, target: Arc<RedisTarget>, origin| Candidate {
        flow: matches!(m.measure, Measure::DrainSeconds | Measure::WorkersNeeded).then(|| Flow {
            completions: (target.clone(), key.to_string()),
            arrivals: (m.measure == Measure::WorkersNeeded)
                .then(|| (target.clone(), key.to_string())),
        }),
        target,
        measure: m.measure,
        key: key.to_string(),
        labels,
        origin,
        unknowable: None,
    };
    match (&t.key, &t.pattern) {
        (Some(key), _) => {
            let mut labels = m.labels.clone();
            labels.insert(KEY_LABEL_FULL.to_string(), key.clone());
            vec![one(key, labels, shared, KeyOrigin::Configured)]
        }
        (None, Some(pattern)) => discovery
            .keys(pattern, t.key_type)
            .iter()
            .map(|key| {
                let matched = wildcard_part(pattern, key);
                let mut labels = m.labels.clone();
                labels.insert(KEY_LABEL_FULL.to_string(), key.clone());
                labels.insert(t.key_label().to_string(), matched.clone());
                // `also` keys name the match: this series' own copy of the target.
                let target = if t.also.iter().any(|a| a.key.contains("{match}")) {
                    let mut own = t.clone();
                    for also in &mut own.also {
                        also.key = also.key.replace("{match}", &matched);
                    }
                    Arc::new(own)
                } else {
                    shared.clone()
                };
                one(key, labels, target, KeyOrigin::Pattern)
            })
            .collect(),
        (None, None) => Vec::new(),
    }
}

/// The series of preset metric `m` over `l`: one per queue (named or found), or one per
/// structure the library keeps for all queues.
fn library_candidates(m: &MetricPlan, l: &LibraryTarget, discovery: &Discovery) -> Vec<Candidate> {
    let (queues, origin) = match &l.queue {
        QueueNames::Named(names) => (names.clone(), KeyOrigin::Configured),
        QueueNames::All => (
            libraries::found_queues(l.library, l.prefix(), discovery),
            KeyOrigin::Found,
        ),
    };
    let labels = |queue: &str, scope: &str, key: &str| {
        let mut labels = m.labels.clone();
        labels.insert("library".to_string(), l.library.as_str().to_string());
        labels.insert("queue".to_string(), queue.to_string());
        labels.insert("scope".to_string(), scope.to_string());
        if !key.is_empty() {
            labels.insert(KEY_LABEL_FULL.to_string(), key.to_string());
        }
        labels
    };
    // Whether the measure is kept per queue does not depend on the queue.
    if let Layout::AllQueues(reads) = libraries::layout(l.library, l.prefix(), "", m.measure) {
        return reads
            .into_iter()
            .map(|r| {
                let key = r.target.key.clone().unwrap_or_default();
                Candidate {
                    labels: labels(SCOPE_ALL_QUEUES, SCOPE_ALL_QUEUES, &key),
                    target: Arc::new(r.target),
                    measure: r.measure,
                    key,
                    origin: KeyOrigin::Found,
                    unknowable: None,
                    flow: None,
                }
            })
            .collect();
    }
    queues
        .iter()
        .map(
            |queue| match libraries::layout(l.library, l.prefix(), queue, m.measure) {
                Layout::PerQueue(r) => {
                    let libraries::PresetRead { target, measure } = *r;
                    let key = target.key.clone().unwrap_or_default();
                    Candidate {
                        labels: labels(queue, SCOPE_QUEUE, &key),
                        target: Arc::new(target),
                        measure,
                        key,
                        origin,
                        unknowable: None,
                        flow: None,
                    }
                }
                Layout::Drain {
                    waiting,
                    completions,
                    arrivals,
                } => {
                    let key = waiting.target.key.clone().unwrap_or_default();
                    let counter = |r: libraries::PresetRead| {
                        let key = r.target.key.clone().unwrap_or_default();
                        (Arc::new(r.target), key)
                    };
                    Candidate {
                        labels: labels(queue, SCOPE_QUEUE, &key),
                        target: Arc::new(waiting.target),
                        measure: m.measure,
                        key,
                        origin,
                        unknowable: None,
                        flow: Some(Flow {
                            completions: counter(*completions),
                            arrivals: arrivals.map(|a| counter(*a)),
                        }),
                    }
                }
                other => {
                    let why = match other {
                        Layout::Unknowable(why) => why,
                        // Not reached: a measure kept for all queues returned above.
                        Layout::PerQueue(_) | Layout::AllQueues(_) | Layout::Drain { .. } => {
                            "kept for all queues (see the series with scope all-queues)".into()
                        }
                    };
                    Candidate {
                        labels: labels(queue, SCOPE_QUEUE, ""),
                        target: Arc::new(RedisTarget::exact(KeyType::List, "")),
                        measure: m.measure,
                        key: String::new(),
                        origin: KeyOrigin::Found,
                        unknowable: Some(Arc::from(format!(
                            "{} {}: {why}",
                            l.library.as_str(),
                            m.measure
                        ))),
                        flow: None,
                    }
                }
            },
        )
        .collect()
}

impl Plan {
    /// Plans every series of `metrics`: exact keys, the keys `discovery` holds for each
    /// pattern, and each library queue named or found; `checks_role` asks for a `ROLE` in
    /// round one.
    pub fn new(metrics: &[MetricPlan], discovery: &Discovery, checks_role: bool, db: i64) -> Plan {
        let mut first = Batch::new();
        let time_idx = first.add(&[b"TIME"]);
        let role_idx = checks_role.then(|| first.add(&[b"ROLE"]));
        let mut series = Vec::new();
        // Metrics over the same keys with the same labels (a queue's length and its oldest
        // age) share one copy of each label set: a series' labels are most of its memory.
        let mut shared: HashSet<Arc<Labels>> = HashSet::new();
        let mut shared_keys: HashSet<Arc<str>> = HashSet::new();
        for m in metrics {
            let metric_name: Arc<str> = Arc::from(m.name.as_str());
            let candidates = match &m.target {
                RedisMetric::Keys(t) => key_candidates(m, t, discovery),
                RedisMetric::Library(l) => library_candidates(m, l, discovery),
            };
            for c in candidates {
                let planned = match c.unknowable {
                    Some(why) => Planned::Unknowable(why),
                    None => SeriesRead {
                        target: &c.target,
                        measure: c.measure,
                        key: &c.key,
                        db,
                    }
                    .plan(&mut first),
                };
                let key = match shared_keys.get(c.key.as_str()) {
                    Some(k) => k.clone(),
                    None => {
                        let k: Arc<str> = Arc::from(c.key.as_str());
                        shared_keys.insert(k.clone());
                        k
                    }
                };
                let mut counter = |(target, key): (Arc<RedisTarget>, String), measure| {
                    CounterRead::plan(target, &key, measure, db, &mut first)
                };
                let serve = match c.flow {
                    Some(Flow {
                        completions,
                        arrivals: Some(arrivals),
                    }) => Serve::Workers(Box::new([
                        counter(completions, Measure::CompletionRate),
                        counter(arrivals, Measure::ArrivalRate),
                    ])),
                    Some(Flow { completions, .. }) => {
                        Serve::Drain(Box::new(counter(completions, Measure::CompletionRate)))
                    }
                    None if m.measure.is_counter_rate() => Serve::Rate,
                    None => Serve::AsRead,
                };
                let labels = match shared.get(&c.labels) {
                    Some(l) => l.clone(),
                    None => {
                        let l = Arc::new(c.labels);
                        shared.insert(l.clone());
                        l
                    }
                };
                series.push(PlannedSeries {
                    metric_name: metric_name.clone(),
                    target: c.target,
                    measure: c.measure,
                    key,
                    labels,
                    planned,
                    origin: c.origin,
                    serve,
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
