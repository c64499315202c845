//! The RabbitMQ source: queue depth, consumers, rates, oldest-message age and drain time, read
//! strictly without touching messages.
//!
//! Through the management API (default) a poll is one paged `GET /api/queues/{vhost}` per vhost
//! (500 queues a page) with only the columns we use, plus, where a rate measure is configured,
//! a `GET /api/overview` of two columns once a minute to learn whether the broker collects
//! message rates at all (without them every rate is an error, not 0); through AMQP it is a passive
//! `queue.declare` per queue. Neither consumes, gets, acknowledges or requeues anything:
//! `basic.get` + requeue would set `redelivered`, reorder quorum queues and count toward
//! delivery limits (docs/reference/sources.md §3.4).
//!
//! A job library's queue (`{library: celery, queue: embed}`) is read the same way: `libraries`
//! says which queue and which of its counts each measure is (dramatiq's dead letters are
//! `embed.XQ`'s total), or why none is.

pub mod amqp;
pub mod config;
pub mod idle;
pub mod libraries;
pub mod management;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use regex::Regex;

use self::amqp::{Amqp, DeclareOutcome};
use self::config::{
    DEFAULT_IDLE_MAX_QUEUES, RabbitLibrary, RabbitMqSourceConfig, RabbitMqTarget, ReadVia,
};
use self::idle::IdleWatch;
use self::management::{ListError, Management, QueueInfo, Reading};
use super::build::{Blocks, SourceSpec};
use super::source::{Source, SourceError};
use crate::model::{Labels, Sample, SeriesError};
use crate::primitives::ConfigError;
use crate::sources::kubernetes::replicas::ReplicaReader;
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;
use crate::sources::rates::{Increase, Rates};
use crate::sources::workers::Workload;

/// Label naming the queue of a series (encoded where the name is not a valid label value:
/// [`crate::apimachinery::label::encode_value`]).
pub const QUEUE_LABEL: &str = "queue";
/// Label naming the vhost of a series (encoded the same way: `/` is served as `8a5edab282`).
pub const VHOST_LABEL: &str = "vhost";
/// How often the broker's rate collection is re-checked: it changes only with its config.
const OVERVIEW_EVERY: Duration = Duration::from_secs(60);

/// Labels a job library's series carry besides `queue` and `vhost`.
pub const LIBRARY_LABELS: [&str; 2] = ["library", "scope"];

struct MetricPlan {
    name: Arc<str>,
    /// The metric's labels, and for a job library's queue `library`, `queue` and `scope`.
    labels: Labels,
    /// The vhost read: the metric's own, else the one `amqp_url` names, else `/`.
    vhost: String,
    target: RabbitMqTarget,
    read: Read,
}

/// What a metric reads of its vhost's queues.
enum Read {
    /// One queue, and which of its counts (for a job library, the queue and count its measure
    /// is kept in: dramatiq's dead letters are `<q>.XQ`'s total).
    Queue(String, Measure),
    /// Every queue whose name matches, one series each.
    Pattern(Regex, Measure),
    /// A job library's measure no queue holds (or a block the config checks refuse, so not
    /// reached): every poll answers this error.
    Unknowable(String),
}

impl MetricPlan {
    /// The labels of its series over RabbitMQ queue `queue`: a job library's series are
    /// labelled with the library's queue, whichever of its RabbitMQ queues is read.
    fn labels(&self, queue: &str) -> Arc<Labels> {
        let mut labels = self.labels.clone();
        if self.target.library.is_none() {
            labels.insert(QUEUE_LABEL.into(), queue.into());
        }
        labels.insert(VHOST_LABEL.into(), self.vhost.clone());
        Arc::new(labels)
    }
}

enum Reader {
    Management(Management),
    Amqp(Box<Amqp>),
}

/// A RabbitMQ broker and the metrics read from it.
pub struct RabbitMqSource {
    name: String,
    reader: Reader,
    metrics: Vec<MetricPlan>,
    max_drain_seconds: f64,
    /// The counter readings of each `arrival_rate` and `completion_rate` metric's queues, by
    /// metric name.
    counters: HashMap<Arc<str>, Rates<String>>,
    /// Each `workers_needed` metric's queue and workload, by metric name (one queue each).
    workers: HashMap<Arc<str>, Workload>,
    /// Reads the workloads' replicas (`Some` when a metric is `workers_needed`).
    replicas: Option<ReplicaReader>,
    /// Whether the broker collects message rates, and when that was last asked.
    rates: Option<(Instant, Result<(), String>)>,
    /// Management calls made by the last poll, for tests and benchmarks.
    last_calls: u32,
    /// The check of idle queues between polls (`read_via: amqp`).
    idle: Option<IdleWatch>,
}

/// An AMQP reader for `conn` (the poll's, or the idle watch's own).
fn amqp_of(
    conn: &RabbitMqSourceConfig,
    ca: Option<&[u8]>,
    name: &str,
) -> Result<Amqp, SourceError> {
    Amqp::new(
        conn.amqp_url.as_deref().unwrap_or_default(),
        conn.credentials.username.as_deref(),
        conn.credentials.password.clone(),
        ca.map(|c| String::from_utf8_lossy(c).into_owned()),
        name,
    )
    .map_err(|message| SourceError::Config { message })
}

/// The RabbitMQ kind: `sources.<name>.rabbitmq` and `metrics[].rabbitmq`.
pub struct RabbitMq;

impl Blocks for RabbitMq {
    type Connection = RabbitMqSourceConfig;
    type Target = RabbitMqTarget;
}

/// What a job library's metric reads.
fn library_read(library: RabbitLibrary, queue: &str, measure: Measure) -> Read {
    match libraries::layout(library, queue, measure) {
        libraries::Layout::Queue { queue, measure } => Read::Queue(queue, measure),
        libraries::Layout::Unknowable(why) => {
            Read::Unknowable(format!("{} {measure}: {why}", library.as_str()))
        }
    }
}

/// Checks metric `m` of a RabbitMQ source (`at` names it); `target` is its `rabbitmq:` block.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_metric(
    conn: &RabbitMqSourceConfig,
    m: &MetricConfig,
    target: Option<&RabbitMqTarget>,
    at: &str,
) -> Result<(), ConfigError> {
    let library = target.is_some_and(|t| t.library.is_some());
    let own: &[&str] = if library { &LIBRARY_LABELS } else { &[] };
    for reserved in [QUEUE_LABEL, VHOST_LABEL].iter().chain(own) {
        if m.labels.contains_key(*reserved) {
            return Err(ConfigError::invalid(
                format!("{at}.labels"),
                format!("must not set {reserved:?}: every RabbitMQ series gets it from its queue"),
            ));
        }
    }
    match target {
        Some(t) => t.validate(&format!("{at}.rabbitmq"), m.measure, conn),
        None => Ok(()),
    }
}

impl RabbitMqSource {
    /// Builds the source named `name`. Does not connect: the first poll does.
    ///
    /// # Errors
    /// [`SourceError::Config`] when the CA file cannot be read or a client cannot be built.
    pub fn new(
        spec: &SourceSpec<'_, RabbitMq>,
        replicas: Option<ReplicaReader>,
    ) -> Result<Self, SourceError> {
        let (name, conn) = (spec.name, spec.connection);
        let bad = |message: String| SourceError::Config { message };
        let ca = match &conn.ca_file {
            Some(path) => Some(crate::sources::http::read_ca_file(path)?),
            None => None,
        };
        let timeout = spec.poll_timeout;
        let reader = match conn.read_via() {
            ReadVia::Management => Reader::Management(
                Management::new(
                    conn.management_url.as_deref().unwrap_or_default(),
                    conn.credentials.username.as_deref(),
                    conn.credentials.password.clone(),
                    ca.as_deref(),
                    timeout,
                    conn.max_response_bytes
                        .unwrap_or(crate::sources::http::DEFAULT_MAX_RESPONSE_BYTES),
                )
                .map_err(bad)?,
            ),
            ReadVia::Amqp => Reader::Amqp(Box::new(amqp_of(conn, ca.as_deref(), name)?)),
        };
        let idle = match conn.idle_poll_interval() {
            Some(every) => IdleWatch::start(
                name,
                amqp_of(conn, ca.as_deref(), name)?,
                every,
                conn.idle_max_queues.unwrap_or(DEFAULT_IDLE_MAX_QUEUES),
            ),
            None => None,
        };
        let mut metrics = Vec::new();
        for &(m, target) in &spec.metrics {
            let Some(target) = target else { continue };
            let mut labels = Labels::from(&m.labels);
            let read = match (target.library, &target.queue, &target.queue_pattern) {
                (Some(library), Some(q), _) => {
                    labels.insert("library".into(), library.as_str().into());
                    labels.insert(QUEUE_LABEL.into(), q.clone());
                    labels.insert("scope".into(), "queue".into());
                    library_read(library, q, m.measure)
                }
                (None, Some(q), _) => Read::Queue(q.clone(), m.measure),
                (_, None, Some(p)) => match Regex::new(p) {
                    Ok(re) => Read::Pattern(re, m.measure),
                    Err(e) => Read::Unknowable(format!("queue_pattern {p:?}: {e}")),
                },
                (_, None, None) => Read::Unknowable("no queue named".into()),
            };
            if let Read::Unknowable(why) = &read {
                tracing::warn!(source = %name, metric = %m.name, "every series of this metric answers an error: {why}");
            }
            metrics.push(MetricPlan {
                name: Arc::from(m.name.as_str()),
                labels,
                vhost: target.vhost_in(conn).map_err(bad)?,
                target: target.clone(),
                read,
            });
        }
        let counters = spec
            .metrics
            .iter()
            .filter(|(m, _)| m.measure.is_counter_rate())
            .map(|(m, _)| (Arc::from(m.name.as_str()), Rates::new(m.window())))
            .collect();
        let workers = spec
            .metrics
            .iter()
            .filter_map(|(m, _)| Some((Arc::from(m.name.as_str()), Workload::of(m)?)))
            .collect();
        Ok(RabbitMqSource {
            name: name.to_string(),
            reader,
            metrics,
            max_drain_seconds: conn.max_drain_seconds(),
            counters,
            workers,
            replicas,
            rates: None,
            last_calls: 0,
            idle,
        })
    }

    /// How many management API calls the last poll made.
    pub fn last_calls(&self) -> u32 {
        self.last_calls
    }

    fn vhosts(&self) -> BTreeSet<String> {
        self.metrics.iter().map(|m| m.vhost.clone()).collect()
    }

    async fn poll_management(&mut self) -> Result<Vec<Sample>, SourceError> {
        if let Some(reader) = &self.replicas {
            reader.read_into(self.workers.values_mut()).await;
        }
        let Reader::Management(client) = &self.reader else {
            unreachable!("management reader")
        };
        let mut listings: HashMap<String, Result<BTreeMap<String, QueueInfo>, ()>> = HashMap::new();
        let mut calls = 0;
        for vhost in self.vhosts() {
            match client.list_queues(&vhost).await {
                Ok((queues, n)) => {
                    calls += n;
                    listings.insert(
                        vhost,
                        Ok(queues.into_iter().map(|q| (q.name.clone(), q)).collect()),
                    );
                }
                Err(ListError::VhostMissing) => {
                    calls += 1;
                    listings.insert(vhost, Err(()));
                }
                Err(ListError::Failed(message)) => {
                    // A broker that comes back may have restarted with other settings.
                    self.rates = None;
                    return Err(SourceError::Io {
                        target: "management API".into(),
                        message,
                    });
                }
            }
        }
        let uses_rates = self.metrics.iter().any(|m| {
            matches!(
                m.read,
                Read::Queue(_, measure) | Read::Pattern(_, measure)
                    if matches!(
                        measure,
                        Measure::PublishRate
                            | Measure::DeliverRate
                            | Measure::AckRate
                            | Measure::DrainSeconds
                            | Measure::ArrivalRate
                            | Measure::CompletionRate
                            | Measure::WorkersNeeded
                    )
            )
        });
        let rates_due = self
            .rates
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= OVERVIEW_EVERY);
        if uses_rates && rates_due {
            calls += 1;
            let overview = client.overview().await.map_err(|message| SourceError::Io {
                target: "management API".into(),
                message,
            })?;
            self.rates = Some((Instant::now(), overview.rates()));
        }
        self.last_calls = calls;
        let unknown = Err("the broker's rate collection has not been read".to_string());
        let rates = self.rates.as_ref().map_or(&unknown, |(_, r)| r);
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1000.0;
        let mut samples = Vec::new();
        for m in &self.metrics {
            let vhost = &m.vhost;
            let series_queue = m.target.queue.as_deref();
            if let Read::Unknowable(why) = &m.read {
                samples.extend(series_queue.map(|q| {
                    Sample::new(
                        m.name.clone(),
                        m.labels(q),
                        Err(SeriesError::new(why.clone())),
                    )
                }));
                continue;
            }
            let listing = match listings.get(vhost) {
                Some(Ok(l)) => l,
                _ => {
                    if let Some(q) = series_queue {
                        samples.push(Sample::new(
                            m.name.clone(),
                            m.labels(q),
                            Err(SeriesError::new(format!("vhost {vhost:?} does not exist"))),
                        ));
                    }
                    continue;
                }
            };
            let at = Reading {
                now_ms,
                max_drain_seconds: self.max_drain_seconds,
                rates,
                timestamp_unit: m.target.timestamp_unit.unwrap_or_default(),
            };
            // A counter's reading becomes its rate over the metric's window; workers_needed
            // follows from the queue's backlog, its two counters and its workload.
            let mut served = |queue: &str, measure: Measure, info: Option<&QueueInfo>| {
                let read = |measure| match info {
                    Some(info) => management::value(info, measure, &at),
                    None => Err(SeriesError::new(format!(
                        "queue {queue:?} not found in vhost {vhost:?}"
                    ))),
                };
                match (
                    self.counters.get_mut(&m.name),
                    self.workers.get_mut(&m.name),
                ) {
                    (Some(counters), _) if measure.is_counter_rate() => {
                        read(measure).and_then(|count| {
                            counters
                                .observe(queue.to_string(), now_ms / 1000.0, count)
                                .map(Increase::rate)
                        })
                    }
                    (_, Some(w)) if measure == Measure::WorkersNeeded => w.serve(
                        now_ms / 1000.0,
                        read(Measure::Total),
                        read(Measure::CompletionRate),
                        read(Measure::ArrivalRate),
                    ),
                    _ => read(measure),
                }
            };
            match &m.read {
                Read::Queue(q, measure) => samples.push(Sample::new(
                    m.name.clone(),
                    m.labels(series_queue.unwrap_or(q)),
                    served(q, *measure, listing.get(q)),
                )),
                Read::Pattern(re, measure) => {
                    for (q, info) in listing.iter().filter(|(q, _)| re.is_match(q)) {
                        samples.push(Sample::new(
                            m.name.clone(),
                            m.labels(q),
                            served(q, *measure, Some(info)),
                        ));
                    }
                }
                Read::Unknowable(_) => {}
            }
        }
        for counters in self.counters.values_mut() {
            counters.prune(now_ms / 1000.0);
        }
        Ok(samples)
    }

    async fn poll_amqp(&mut self) -> Result<Vec<Sample>, SourceError> {
        let mut per_vhost: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in &self.metrics {
            if let Read::Queue(q, _) = &m.read {
                per_vhost
                    .entry(m.vhost.clone())
                    .or_default()
                    .push(q.clone());
            }
        }
        let Reader::Amqp(amqp) = &mut self.reader else {
            unreachable!("amqp reader")
        };
        let mut outcomes: HashMap<(String, String), DeclareOutcome> = HashMap::new();
        for (vhost, mut queues) in per_vhost {
            queues.sort();
            queues.dedup();
            let results = amqp.declare_all(&vhost, &queues).await.map_err(|message| {
                SourceError::Connect {
                    target: "AMQP".into(),
                    message,
                }
            })?;
            for (q, r) in queues.into_iter().zip(results) {
                outcomes.insert((vhost.clone(), q), r);
            }
        }
        let mut samples = Vec::new();
        let mut idle = Vec::new();
        for m in &self.metrics {
            let Some(series_queue) = m.target.queue.as_deref() else {
                continue;
            };
            let (q, measure) = match &m.read {
                Read::Queue(q, measure) => (q, *measure),
                Read::Unknowable(why) => {
                    let error = Err(SeriesError::new(why.clone()));
                    samples.push(Sample::new(m.name.clone(), m.labels(series_queue), error));
                    continue;
                }
                Read::Pattern(..) => continue,
            };
            let vhost = &m.vhost;
            let value = match outcomes.get(&(vhost.clone(), q.clone())) {
                Some(DeclareOutcome::Found(d)) => match measure {
                    Measure::Ready => Ok(f64::from(d.ready)),
                    Measure::Consumers => Ok(f64::from(d.consumers)),
                    other => Err(SeriesError::new(format!(
                        "measure {other} is not available over AMQP"
                    ))),
                },
                Some(DeclareOutcome::NotFound) => Err(SeriesError::new(format!(
                    "queue {q:?} not found in vhost {vhost:?}"
                ))),
                Some(DeclareOutcome::Refused(e)) => {
                    Err(SeriesError::new(format!("queue {q:?}: {e}")))
                }
                None => Err(SeriesError::new(format!("queue {q:?} was not read"))),
            };
            if measure == Measure::Ready && value == Ok(0.0) {
                idle.push((vhost.clone(), q.clone()));
            }
            samples.push(Sample::new(m.name.clone(), m.labels(series_queue), value));
        }
        if let Some(watch) = &self.idle {
            idle.sort();
            idle.dedup();
            watch.set_idle(idle);
        }
        Ok(samples)
    }
}

impl Source for RabbitMqSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn wake(&self) -> Option<crate::wake::WakeSignal> {
        self.idle.as_ref().map(IdleWatch::signal)
    }

    async fn poll(&mut self) -> Result<Vec<Sample>, SourceError> {
        match self.reader {
            Reader::Management(_) => self.poll_management().await,
            Reader::Amqp(_) => self.poll_amqp().await,
        }
    }
}
