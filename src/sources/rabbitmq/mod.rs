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

pub mod amqp;
pub mod config;
pub mod idle;
pub mod management;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use regex::Regex;

use self::amqp::{Amqp, DeclareOutcome};
use self::config::{DEFAULT_IDLE_MAX_QUEUES, RabbitMqSourceConfig, RabbitMqTarget, ReadVia};
use self::idle::IdleWatch;
use self::management::{ListError, Management, QueueInfo, Reading};
use super::build::{Blocks, SourceSpec};
use super::source::{Source, SourceError};
use crate::model::{Labels, Sample, SeriesError};
use crate::primitives::ConfigError;
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;

/// Label naming the queue of a series (encoded where the name is not a valid label value:
/// [`crate::apimachinery::label::encode_value`]).
pub const QUEUE_LABEL: &str = "queue";
/// Label naming the vhost of a series (encoded the same way: `/` is served as `8a5edab282`).
pub const VHOST_LABEL: &str = "vhost";
/// How often the broker's rate collection is re-checked: it changes only with its config.
const OVERVIEW_EVERY: Duration = Duration::from_secs(60);

struct MetricPlan {
    name: Arc<str>,
    labels: Labels,
    /// The vhost read: the metric's own, else the one `amqp_url` names, else `/`.
    vhost: String,
    target: RabbitMqTarget,
    pattern: Option<Regex>,
    measure: Measure,
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
    for reserved in [QUEUE_LABEL, VHOST_LABEL] {
        if m.labels.contains_key(reserved) {
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
    pub fn new(spec: &SourceSpec<'_, RabbitMq>) -> Result<Self, SourceError> {
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
            let pattern = target
                .queue_pattern
                .as_deref()
                .and_then(|p| Regex::new(p).ok());
            metrics.push(MetricPlan {
                name: Arc::from(m.name.as_str()),
                labels: Labels::from(&m.labels),
                vhost: target.vhost_in(conn).map_err(bad)?,
                target: target.clone(),
                pattern,
                measure: m.measure,
            });
        }
        Ok(RabbitMqSource {
            name: name.to_string(),
            reader,
            metrics,
            max_drain_seconds: conn.max_drain_seconds(),
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

    fn labels(&self, m: &MetricPlan, vhost: &str, queue: &str) -> Arc<Labels> {
        let mut labels = m.labels.clone();
        labels.insert(QUEUE_LABEL.into(), queue.into());
        labels.insert(VHOST_LABEL.into(), vhost.into());
        Arc::new(labels)
    }

    async fn poll_management(&mut self) -> Result<Vec<Sample>, SourceError> {
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
                m.measure,
                Measure::PublishRate
                    | Measure::DeliverRate
                    | Measure::AckRate
                    | Measure::DrainSeconds
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
            let listing = match listings.get(vhost) {
                Some(Ok(l)) => l,
                _ => {
                    if let Some(q) = &m.target.queue {
                        samples.push(Sample::new(
                            m.name.clone(),
                            self.labels(m, vhost, q),
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
            match (&m.target.queue, &m.pattern) {
                (Some(q), _) => samples.push(Sample::new(
                    m.name.clone(),
                    self.labels(m, vhost, q),
                    match listing.get(q) {
                        Some(info) => management::value(info, m.measure, &at),
                        None => Err(SeriesError::new(format!(
                            "queue {q:?} not found in vhost {vhost:?}"
                        ))),
                    },
                )),
                (None, Some(re)) => {
                    for (q, info) in listing.iter().filter(|(q, _)| re.is_match(q)) {
                        samples.push(Sample::new(
                            m.name.clone(),
                            self.labels(m, vhost, q),
                            management::value(info, m.measure, &at),
                        ));
                    }
                }
                (None, None) => {}
            }
        }
        Ok(samples)
    }

    async fn poll_amqp(&mut self) -> Result<Vec<Sample>, SourceError> {
        let mut per_vhost: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in &self.metrics {
            if let Some(q) = &m.target.queue {
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
            let Some(q) = &m.target.queue else { continue };
            let vhost = &m.vhost;
            let value = match outcomes.get(&(vhost.clone(), q.clone())) {
                Some(DeclareOutcome::Found(d)) => match m.measure {
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
            if m.measure == Measure::Ready && value == Ok(0.0) {
                idle.push((vhost.clone(), q.clone()));
            }
            samples.push(Sample::new(m.name.clone(), self.labels(m, vhost, q), value));
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
