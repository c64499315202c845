//! The NATS JetStream source: a consumer's lag, its work in flight, its waiting pull requests,
//! the age of the oldest message it has not finished, a stream's length, and the rates and
//! drain time that follow from their sequence counters. Read strictly without touching a
//! message's delivery.
//!
//! A poll is one round of info requests, all at once: `STREAM.INFO` of every stream the metrics
//! name, `CONSUMER.INFO` of every named consumer, `CONSUMER.LIST` of every stream with a
//! consumer pattern. Then one more round where needed, also at once: for the oldest
//! unprocessed message, a `STREAM.MSG.GET` of the first message past the consumer's ack floor
//! on its filter (the info tells where the floor is); for a filtered consumer's `length`, the
//! stream's per-subject counts. No consumer is created, no pull issued, nothing acknowledged
//! (`api` says which requests exist). Where the account allows it, `wake` subscribes (core NATS)
//! to the subjects of metrics at zero so that a publish wakes the poll.
//!
//! Ages are measured against the server's clock where the reply carries it (`ts`, 2.10 and
//! later), else the adapter's: on 2.9 the skew between the two clocks adds to every age (a
//! clock 60 s behind reads a message stored now as 60 s in the future, which the age rule
//! calls skew and serves as 0; further is an error).

pub mod api;
pub mod config;
pub mod connect;
pub mod wake;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use regex::Regex;

use self::api::{Api, ApiError, ConsumerInfo, StreamInfo};
use self::config::{NatsSourceConfig, NatsTarget};
use self::wake::SubjectWatch;
use super::build::{Blocks, SourceSpec};
use super::source::{Source, SourceError};
use crate::model::{Labels, Sample, SeriesError};
use crate::primitives::ConfigError;
use crate::sources::age::age_seconds;
use crate::sources::kubernetes::replicas::ReplicaReader;
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;
use crate::sources::rates::{Increase, Rates, drain_seconds};
use crate::sources::workers::Workload;
use crate::wake::WakeSignal;

/// Label naming the stream of a series.
pub const STREAM_LABEL: &str = "stream";
/// Label naming the consumer of a series.
pub const CONSUMER_LABEL: &str = "consumer";

/// The NATS kind: `sources.<name>.nats` and `metrics[].nats`.
pub struct Nats;

impl Blocks for Nats {
    type Connection = NatsSourceConfig;
    type Target = NatsTarget;
}

/// Checks metric `m` of a NATS source (`at` names it); `target` is its `nats:` block.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_metric(
    _conn: &NatsSourceConfig,
    m: &MetricConfig,
    target: Option<&NatsTarget>,
    at: &str,
) -> Result<(), ConfigError> {
    for reserved in [STREAM_LABEL, CONSUMER_LABEL] {
        if m.labels.contains_key(reserved) {
            return Err(ConfigError::invalid(
                format!("{at}.labels"),
                format!(
                    "must not set {reserved:?}: every NATS series gets it from its stream and consumer"
                ),
            ));
        }
    }
    match target {
        Some(t) => t.validate(&format!("{at}.nats"), m.measure),
        None => Ok(()),
    }
}

/// Which consumers of its stream a metric reads.
enum Consumers {
    /// None: the stream itself (`length`, `arrival_rate`).
    Stream,
    /// One durable consumer.
    One(String),
    /// Every consumer whose name matches.
    Pattern(Regex),
}

struct MetricPlan {
    name: Arc<str>,
    labels: Labels,
    stream: String,
    consumers: Consumers,
    measure: Measure,
}

impl MetricPlan {
    fn labels(&self, consumer: Option<&str>) -> Arc<Labels> {
        let mut labels = self.labels.clone();
        labels.insert(STREAM_LABEL.into(), self.stream.clone());
        if let Some(c) = consumer {
            labels.insert(CONSUMER_LABEL.into(), c.into());
        }
        Arc::new(labels)
    }
}

/// A counter derived from a stream's or consumer's sequences, kept continuous: a stream or
/// consumer deleted and made again, or a purge that lowers the count, is no increase (never the
/// whole count read as new jobs, as a counter reset would be).
#[derive(Debug)]
struct Continuity {
    identity: String,
    last_raw: f64,
    fed: f64,
    /// When it was last read (unix seconds), so that vanished consumers are forgotten: after
    /// the rates that use it have forgotten them too.
    seen: f64,
}

/// The two counters rates are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Count {
    /// Messages that reached the consumer (or the stream).
    Arrived,
    /// Messages the consumer finished.
    Completed,
}

/// This poll's readings of one consumer's counters, for rates.
#[derive(Debug, Clone, Copy)]
struct Counts {
    /// Messages that reached the consumer: delivered stream position + pending.
    arrived: f64,
    /// Messages it finished: delivered stream position − in flight.
    completed: f64,
}

/// A NATS server (or cluster) and the metrics read from it.
pub struct NatsSource {
    name: String,
    connection: NatsSourceConfig,
    poll_timeout: Duration,
    client: Option<async_nats::Client>,
    metrics: Vec<MetricPlan>,
    max_drain_seconds: f64,
    /// The counter readings of each rate and drain metric, by metric name, keyed by consumer
    /// (`""`: the stream).
    counters: HashMap<Arc<str>, Rates<String>>,
    continuity: HashMap<(Arc<str>, String, Count), Continuity>,
    /// How long a counter's continuity is kept after its last reading: longer than its rates
    /// keep their readings (two windows), so a series that failed a few polls never restarts
    /// from a lower count its rates would take for a reset.
    forget_after: f64,
    /// Each `workers_needed` metric's consumer and workload, by metric name.
    workers: HashMap<Arc<str>, Workload>,
    replicas: Option<ReplicaReader>,
    signal: Option<WakeSignal>,
    watch: Option<SubjectWatch>,
}

impl NatsSource {
    /// Builds the source. Does not connect: the first poll does.
    ///
    /// # Errors
    /// [`SourceError::Config`] when a server address cannot be read.
    pub fn new(
        spec: &SourceSpec<'_, Nats>,
        replicas: Option<ReplicaReader>,
    ) -> Result<Self, SourceError> {
        connect::servers(spec.connection)?;
        let mut metrics = Vec::new();
        for &(m, target) in &spec.metrics {
            let Some(t) = target else { continue };
            let consumers = match (&t.consumer, &t.consumer_pattern) {
                (Some(c), _) => Consumers::One(c.clone()),
                (None, Some(p)) => {
                    Consumers::Pattern(Regex::new(p).map_err(|e| SourceError::Config {
                        message: format!("metric {}: consumer_pattern: {e}", m.name),
                    })?)
                }
                (None, None) => Consumers::Stream,
            };
            metrics.push(MetricPlan {
                name: Arc::from(m.name.as_str()),
                labels: Labels::from(&m.labels),
                stream: t.stream.clone(),
                consumers,
                measure: m.measure,
            });
        }
        let max_window = spec
            .metrics
            .iter()
            .map(|(m, _)| m.window().as_secs_f64())
            .fold(0.0, f64::max);
        let counters = spec
            .metrics
            .iter()
            .filter(|(m, _)| m.measure.is_counter_rate() || m.measure == Measure::DrainSeconds)
            .map(|(m, _)| (Arc::from(m.name.as_str()), Rates::new(m.window())))
            .collect();
        let workers = spec
            .metrics
            .iter()
            .filter_map(|(m, _)| Some((Arc::from(m.name.as_str()), Workload::of(m)?)))
            .collect();
        let conn = spec.connection;
        let signal = conn.wake.enabled.then(|| WakeSignal::new(conn.wake.pace()));
        let watch = signal
            .as_ref()
            .map(|s| SubjectWatch::new(spec.name, s.clone()));
        Ok(NatsSource {
            name: spec.name.to_string(),
            connection: conn.clone(),
            poll_timeout: spec.poll_timeout,
            client: None,
            metrics,
            max_drain_seconds: conn.max_drain_seconds(),
            counters,
            continuity: HashMap::new(),
            forget_after: 2.0 * max_window + 60.0,
            workers,
            replicas,
            signal,
            watch,
        })
    }

    /// The client, connecting first if there is none yet.
    async fn client(&mut self) -> Result<async_nats::Client, SourceError> {
        if let Some(c) = &self.client {
            return match c.connection_state() {
                async_nats::connection::State::Connected => Ok(c.clone()),
                state => Err(SourceError::Connect {
                    target: connect::target(&self.connection),
                    message: format!("not connected ({state:?}); the client keeps reconnecting"),
                }),
            };
        }
        let on_refused: connect::OnRefusedSubscription = match &self.watch {
            Some(w) => w.on_refused(),
            None => {
                let source = self.name.clone();
                Arc::new(move |error: String| {
                    tracing::warn!(source = %source, %error, "NATS refused a subscription");
                })
            }
        };
        // Connect and request bounds leave room for the second round within the poll.
        let c = connect::connect(
            &self.name,
            &self.connection,
            self.request_timeout(),
            on_refused,
        )
        .await?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Each request's bound: a quarter of the poll's, for the longest chain a poll makes (the
    /// info round, the message gets, and where a message vanished a re-read and a get again).
    fn request_timeout(&self) -> Duration {
        (self.poll_timeout / 4).max(Duration::from_millis(100))
    }

    /// The reading `raw` of counter `which` of `consumer` (`""`: the stream) for `metric`, kept
    /// continuous across a new `identity` (the stream or consumer made again) or a drop (a
    /// purge): what the metric's rates are fed.
    fn counter(
        &mut self,
        metric: &Arc<str>,
        consumer: &str,
        which: Count,
        identity: &str,
        raw: f64,
        now_s: f64,
    ) -> f64 {
        let c = self
            .continuity
            .entry((metric.clone(), consumer.to_string(), which))
            .or_insert_with(|| Continuity {
                identity: identity.to_string(),
                last_raw: raw,
                fed: raw,
                seen: now_s,
            });
        if c.identity == identity && raw >= c.last_raw {
            c.fed += raw - c.last_raw;
        }
        c.identity = identity.to_string();
        c.last_raw = raw;
        c.seen = now_s;
        c.fed
    }
}

/// One series of a metric this poll.
enum Series<'r> {
    /// The stream itself.
    Stream,
    /// A consumer (`None` where the list of a pattern failed), its info or why there is none.
    Consumer(Option<String>, Result<&'r ConsumerInfo, String>),
}

/// What the first round read.
#[derive(Default)]
struct Round {
    streams: HashMap<String, Result<StreamInfo, ApiError>>,
    consumers: HashMap<(String, String), Result<ConsumerInfo, ApiError>>,
    lists: HashMap<String, Result<Vec<ConsumerInfo>, ApiError>>,
    /// Per (stream, consumer): the oldest unprocessed message's age, or why not.
    ages: BTreeMap<(String, String), Result<f64, String>>,
    /// Per (stream, filter subjects): the messages stored on them.
    filtered: HashMap<(String, Vec<String>), Result<u64, String>>,
}

/// The counts a consumer's rates come from, or why it has none: a filtered consumer's position
/// in the stream moves over other subjects' messages too.
fn counts(info: &ConsumerInfo) -> Result<Counts, SeriesError> {
    let filters = info.config.filters();
    if !filters.is_empty() {
        return Err(SeriesError::new(format!(
            "consumer {:?} reads only {}: its stream position moves over other subjects' messages too, so its arrivals and completions cannot be counted (use a consumer without a filter, or a stream of its own)",
            info.name,
            filters.join(", ")
        )));
    }
    let position = info.delivered.stream_seq as f64;
    Ok(Counts {
        arrived: position + info.num_pending as f64,
        completed: position - info.num_ack_pending as f64,
    })
}

/// The age of the oldest message `info`'s consumer has not finished: the first message past its
/// ack floor on its filter, as of the info. A message deleted after the info was read (a
/// work-queue stream removes it at its acknowledgement) is skipped by the get, and the next one
/// is the oldest now; on a limits stream an acknowledged message stays stored, so one
/// acknowledged between the info and the get is still served as the oldest for that poll. If
/// none is left while the info counted some, the info is read again once, never answered 0.
async fn oldest_age(api: &Api, stream: &str, info: &ConsumerInfo) -> Result<f64, String> {
    let mut info = info.clone();
    for attempt in 0..2 {
        if info.backlog() == 0 {
            return Ok(0.0);
        }
        let filters = info.config.filters();
        let subjects = if filters.is_empty() {
            vec![">".to_string()]
        } else {
            filters
        };
        let from = info.ack_floor.stream_seq.saturating_add(1);
        let gets = subjects
            .iter()
            .map(|s| api.first_message_from(stream, from, s));
        let mut oldest: Option<api::StoredMessage> = None;
        for found in join_all(gets).await {
            match found.map_err(|e| e.to_string())? {
                Some(m) if oldest.as_ref().is_none_or(|o| m.seq < o.seq) => oldest = Some(m),
                _ => {}
            }
        }
        if let Some(m) = oldest {
            let stored =
                api::parse_time_ms(&m.time).map_err(|e| format!("message {}: {e}", m.seq))?;
            let (now, clock) = match info.ts.as_deref().map(api::parse_time_ms) {
                Some(Ok(ts)) => (ts, "the NATS server's clock"),
                _ => (unix_ms(), "the adapter's clock"),
            };
            return age_seconds(stored, now, clock);
        }
        if attempt == 0 {
            info = api
                .consumer_info(stream, &info.name)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Err(format!(
        "consumer {:?} counts {} unprocessed messages but none is stored past its ack floor (stream sequence {}), twice: not served",
        info.name,
        info.backlog(),
        info.ack_floor.stream_seq
    ))
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The messages `info` (a filtered stream info) holds on its subjects.
fn filtered_count(info: &StreamInfo) -> Result<u64, String> {
    let Some(subjects) = info.state.subjects.as_ref() else {
        // No subject matches: the server leaves the map out and says there are none.
        return match info.total {
            Some(0) => Ok(0),
            _ => Err("the server sent no per-subject counts for the consumer's filter".into()),
        };
    };
    if let Some(total) = info.total
        && total > subjects.len() as u64
    {
        return Err(format!(
            "the consumer's filter matches {total} subjects, more than one reply holds ({}): its length is not served",
            subjects.len()
        ));
    }
    Ok(subjects.values().fold(0u64, |a, n| a.saturating_add(*n)))
}

impl NatsSource {
    async fn first_round(&self, api: &Api) -> Round {
        let streams: BTreeSet<&str> = self.metrics.iter().map(|m| m.stream.as_str()).collect();
        let named: BTreeSet<(&str, &str)> = self
            .metrics
            .iter()
            .filter_map(|m| match &m.consumers {
                Consumers::One(c) => Some((m.stream.as_str(), c.as_str())),
                _ => None,
            })
            .collect();
        let listed: BTreeSet<&str> = self
            .metrics
            .iter()
            .filter(|m| matches!(m.consumers, Consumers::Pattern(_)))
            .map(|m| m.stream.as_str())
            .collect();
        let (s, (c, l)) = futures_util::join!(
            join_all(streams.iter().map(|s| api.stream_info(s, None))),
            futures_util::future::join(
                join_all(named.iter().map(|(s, c)| api.consumer_info(s, c))),
                join_all(listed.iter().map(|s| api.consumer_list(s))),
            )
        );
        Round {
            streams: streams.iter().map(|s| s.to_string()).zip(s).collect(),
            consumers: named
                .iter()
                .map(|(s, c)| (s.to_string(), c.to_string()))
                .zip(c)
                .collect(),
            lists: listed.iter().map(|s| s.to_string()).zip(l).collect(),
            ..Round::default()
        }
    }

    /// The series metric `m` has this poll: its stream, or each consumer it reads with its
    /// info (or why a consumer or the list is missing: one series naming it).
    fn series_of<'r>(m: &MetricPlan, round: &'r Round) -> Vec<Series<'r>> {
        match &m.consumers {
            Consumers::Stream => vec![Series::Stream],
            Consumers::One(c) => {
                let info = round
                    .consumers
                    .get(&(m.stream.clone(), c.clone()))
                    .map_or(Err(format!("consumer {c:?} was not read")), |r| {
                        r.as_ref().map_err(ToString::to_string)
                    });
                vec![Series::Consumer(Some(c.clone()), info)]
            }
            Consumers::Pattern(re) => match round.lists.get(&m.stream) {
                Some(Ok(list)) => list
                    .iter()
                    .filter(|c| re.is_match(&c.name))
                    .map(|c| Series::Consumer(Some(c.name.clone()), Ok(c)))
                    .collect(),
                Some(Err(e)) => vec![Series::Consumer(None, Err(e.to_string()))],
                None => vec![Series::Consumer(
                    None,
                    Err("the consumers were not listed".into()),
                )],
            },
        }
    }

    async fn second_round(&self, api: &Api, round: &mut Round) {
        let mut ages: BTreeMap<(String, String), ConsumerInfo> = BTreeMap::new();
        let mut filtered: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
        for m in &self.metrics {
            for series in Self::series_of(m, round) {
                let Series::Consumer(_, Ok(info)) = series else {
                    continue;
                };
                match m.measure {
                    Measure::OldestUnprocessedAgeSeconds => {
                        ages.insert((m.stream.clone(), info.name.clone()), info.clone());
                    }
                    Measure::Length => {
                        let f = info.config.filters();
                        if !f.is_empty() {
                            filtered.insert((m.stream.clone(), f));
                        }
                    }
                    _ => {}
                }
            }
        }
        let age_reads = ages.iter().map(|((s, _), info)| oldest_age(api, s, info));
        let filtered_reads = filtered.iter().map(|(s, f)| async move {
            let counts = join_all(f.iter().map(|subject| api.stream_info(s, Some(subject)))).await;
            let mut total: u64 = 0;
            for info in counts {
                let n = filtered_count(&info.map_err(|e| e.to_string())?)?;
                total = total.saturating_add(n);
            }
            Ok(total)
        });
        let (a, f) = futures_util::join!(join_all(age_reads), join_all(filtered_reads));
        round.ages = ages.into_keys().zip(a).collect();
        round.filtered = filtered.into_iter().zip(f).collect();
    }

    async fn poll_nats(&mut self) -> Result<Vec<Sample>, SourceError> {
        // The requests end before the poll's own bound, so a slow server gives each series its
        // error rather than failing the whole poll.
        let deadline = tokio::time::Instant::now() + self.poll_timeout.mul_f64(0.9);
        if let Some(reader) = &self.replicas {
            reader.read_into(self.workers.values_mut()).await;
        }
        let client = self.client().await?;
        let api = Api::new(
            client.clone(),
            self.connection.api_prefix(),
            self.connection.max_response_bytes(),
            self.request_timeout(),
            deadline,
        );
        let mut round = self.first_round(&api).await;
        self.second_round(&api, &mut round).await;
        let now_s = unix_ms() / 1000.0;
        let mut samples = Vec::new();
        let mut idle: BTreeSet<String> = BTreeSet::new();
        let metrics = std::mem::take(&mut self.metrics);
        for m in &metrics {
            let stream = match round.streams.get(&m.stream) {
                Some(Ok(s)) => Ok(s),
                Some(Err(e)) => Err(e.to_string()),
                None => Err(format!("stream {:?} was not read", m.stream)),
            };
            for series in Self::series_of(m, &round) {
                let (consumer, info) = match series {
                    Series::Stream => (None, None),
                    Series::Consumer(name, info) => (name, Some(info)),
                };
                let value = match (&stream, &info) {
                    (Err(e), _) => Err(SeriesError::new(e.clone())),
                    (Ok(s), None) => self.stream_value(m, s, now_s),
                    (Ok(s), Some(Ok(info))) => self.consumer_value(m, s, info, &round, now_s),
                    (Ok(_), Some(Err(e))) => Err(SeriesError::new(e.clone())),
                };
                let info = info.and_then(Result::ok);
                if value == Ok(0.0)
                    && wakes(m.measure)
                    && let Some(subjects) = subjects_of(&stream, info)
                {
                    idle.extend(subjects);
                }
                samples.push(Sample::new(
                    m.name.clone(),
                    m.labels(consumer.as_deref()),
                    value,
                ));
            }
        }
        self.metrics = metrics;
        for rates in self.counters.values_mut() {
            rates.prune(now_s);
        }
        let horizon = now_s - self.forget_after;
        self.continuity.retain(|_, c| c.seen >= horizon);
        if let Some(watch) = &mut self.watch {
            watch.set_idle(&client, idle).await;
        }
        Ok(samples)
    }

    fn stream_value(
        &mut self,
        m: &MetricPlan,
        s: &StreamInfo,
        now_s: f64,
    ) -> Result<f64, SeriesError> {
        match m.measure {
            Measure::Length => Ok(s.state.messages as f64),
            Measure::ArrivalRate => {
                let count = self.counter(
                    &m.name,
                    "",
                    Count::Arrived,
                    &s.created,
                    s.state.last_seq as f64,
                    now_s,
                );
                self.rate(&m.name, "", now_s, count)
            }
            other => Err(SeriesError::new(format!(
                "measure {other} is a consumer's: the metric names none"
            ))),
        }
    }

    fn rate(
        &mut self,
        metric: &Arc<str>,
        key: &str,
        now_s: f64,
        count: f64,
    ) -> Result<f64, SeriesError> {
        match self.counters.get_mut(metric) {
            Some(rates) => rates
                .observe(key.to_string(), now_s, count)
                .map(Increase::rate),
            None => Err(SeriesError::new("no rate window for this metric")),
        }
    }

    fn consumer_value(
        &mut self,
        m: &MetricPlan,
        s: &StreamInfo,
        info: &ConsumerInfo,
        round: &Round,
        now_s: f64,
    ) -> Result<f64, SeriesError> {
        let identity = format!("{} {}", s.created, info.created);
        let backlog = info.backlog() as f64;
        let counted = |this: &mut Self, which: Count| -> Result<f64, SeriesError> {
            let c = counts(info)?;
            let raw = match which {
                Count::Arrived => c.arrived,
                Count::Completed => c.completed,
            };
            Ok(this.counter(&m.name, &info.name, which, &identity, raw, now_s))
        };
        match m.measure {
            Measure::Lag => Ok(info.num_pending as f64),
            Measure::AckPending => Ok(info.num_ack_pending as f64),
            Measure::Redelivered => Ok(info.num_redelivered as f64),
            Measure::WaitingPulls => match &info.config.deliver_subject {
                Some(_) => Err(SeriesError::new(format!(
                    "consumer {:?} is a push consumer: it has no pull requests",
                    info.name
                ))),
                None => Ok(info.num_waiting as f64),
            },
            Measure::Length => {
                let filters = info.config.filters();
                if filters.is_empty() {
                    return Ok(s.state.messages as f64);
                }
                match round.filtered.get(&(m.stream.clone(), filters)) {
                    Some(Ok(n)) => Ok(*n as f64),
                    Some(Err(e)) => Err(SeriesError::new(e.clone())),
                    None => Err(SeriesError::new("the filter's count was not read")),
                }
            }
            Measure::OldestUnprocessedAgeSeconds => {
                match round.ages.get(&(m.stream.clone(), info.name.clone())) {
                    Some(r) => r.clone().map_err(SeriesError::new),
                    None => Err(SeriesError::new("the oldest message was not read")),
                }
            }
            Measure::ArrivalRate => {
                let n = counted(self, Count::Arrived)?;
                self.rate(&m.name, &info.name, now_s, n)
            }
            Measure::CompletionRate => {
                let n = counted(self, Count::Completed)?;
                self.rate(&m.name, &info.name, now_s, n)
            }
            Measure::DrainSeconds => {
                let n = counted(self, Count::Completed)?;
                let leaving = self.rate(&m.name, &info.name, now_s, n)?;
                Ok(drain_seconds(backlog, leaving, self.max_drain_seconds))
            }
            Measure::WorkersNeeded => {
                let done = counted(self, Count::Completed);
                let arrived = counted(self, Count::Arrived);
                match self.workers.get_mut(&m.name) {
                    Some(w) => w.serve(now_s, Ok(backlog), done, arrived),
                    None => Err(SeriesError::new("no workload for this metric")),
                }
            }
            other => Err(SeriesError::new(format!(
                "measure {other} is not read from NATS"
            ))),
        }
    }
}

/// Whether a series of `measure` at 0 is a metric a publish would raise: the ones a queue's
/// arrival moves (not rates, which wait for their window, nor in-flight counts).
fn wakes(measure: Measure) -> bool {
    matches!(
        measure,
        Measure::Lag
            | Measure::Length
            | Measure::OldestUnprocessedAgeSeconds
            | Measure::DrainSeconds
            | Measure::WorkersNeeded
    )
}

/// The subjects a publish to would raise a series: its consumer's filter, else its stream's
/// subjects.
fn subjects_of(
    stream: &Result<&StreamInfo, String>,
    info: Option<&ConsumerInfo>,
) -> Option<Vec<String>> {
    if let Some(info) = info {
        let f = info.config.filters();
        if !f.is_empty() {
            return Some(f);
        }
    }
    stream.as_ref().ok().map(|s| s.config.subjects.clone())
}

impl Source for NatsSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    fn wake(&self) -> Option<WakeSignal> {
        self.signal.clone()
    }

    async fn poll(&mut self) -> Result<Vec<Sample>, SourceError> {
        self.poll_nats().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> ConsumerInfo {
        serde_json::from_str(json).expect("consumer info")
    }

    #[test]
    fn a_filtered_consumer_has_no_counts_and_an_unfiltered_one_counts_from_its_position() {
        let plain = info(
            r#"{"name":"w","created":"x","config":{},"delivered":{"consumer_seq":9,"stream_seq":7},"ack_floor":{"consumer_seq":5,"stream_seq":5},"num_ack_pending":2,"num_redelivered":1,"num_waiting":0,"num_pending":3}"#,
        );
        let c = counts(&plain).expect("counts");
        assert_eq!((c.arrived, c.completed), (10.0, 5.0));
        let filtered = info(
            r#"{"name":"w","created":"x","config":{"filter_subject":"jobs.a"},"delivered":{"consumer_seq":1,"stream_seq":1},"ack_floor":{"consumer_seq":1,"stream_seq":1},"num_ack_pending":0,"num_redelivered":0,"num_waiting":0,"num_pending":0}"#,
        );
        let e = counts(&filtered).unwrap_err();
        assert!(e.0.contains("jobs.a"), "{e:?}");
    }

    #[test]
    fn a_filter_matching_more_subjects_than_one_reply_holds_is_an_error() {
        let s: StreamInfo = serde_json::from_str(
            r#"{"config":{"subjects":["a.>"]},"created":"x","state":{"messages":9,"last_seq":9,"subjects":{"a.1":2,"a.2":3}},"total":2}"#,
        )
        .expect("stream info");
        assert_eq!(filtered_count(&s), Ok(5));
        let paged: StreamInfo = serde_json::from_str(
            r#"{"config":{"subjects":["a.>"]},"created":"x","state":{"messages":9,"last_seq":9,"subjects":{"a.1":2}},"total":2}"#,
        )
        .expect("stream info");
        assert!(filtered_count(&paged).is_err());
        // Nothing stored on the filter: the server leaves the map out and counts none.
        let none: StreamInfo = serde_json::from_str(
            r#"{"config":{"subjects":["a.>"]},"created":"x","state":{"messages":9,"last_seq":9},"total":0,"offset":0,"limit":100000}"#,
        )
        .expect("stream info");
        assert_eq!(filtered_count(&none), Ok(0));
    }
}
