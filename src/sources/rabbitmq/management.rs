//! The RabbitMQ management HTTP API: one paged listing per vhost with only the columns we use,
//! and the measures computed from it. Only `GET`s; never `POST /api/queues/.../get`, which
//! consumes and requeues messages.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::config::HeadTimestampUnit;
use crate::model::SeriesError;
use crate::primitives::Secret;
use crate::sources::measure::Measure;

/// Queues asked for per page: the API's maximum, so 1,000 queues take two calls.
pub const PAGE_SIZE: u32 = 500;

/// The columns we read; asking for them keeps responses small (and, on 3.13+, detailed).
pub const COLUMNS: &str = "name,vhost,type,messages,messages_ready,messages_unacknowledged,consumers,\
head_message_timestamp,message_stats.publish_details.rate,message_stats.deliver_get_details.rate,\
message_stats.ack_details.rate,message_stats.deliver_no_ack_details.rate,\
message_stats.get_no_ack_details.rate,message_stats.publish,message_stats.deliver_get,\
message_stats.ack,message_stats.deliver_no_ack,message_stats.get_no_ack";

/// What `/api/overview` is asked for: whether the broker collects message rates at all.
pub const OVERVIEW_COLUMNS: &str = "rates_mode,disable_stats";

/// A binding as `/api/bindings/{vhost}` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Binding {
    /// The exchange (`""` is the default exchange).
    pub source: String,
    /// The queue or exchange bound.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    /// The routing key.
    #[serde(default)]
    pub routing_key: String,
}

/// One queue as the listing reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Its vhost.
    #[serde(default)]
    pub vhost: String,
    /// `classic`, `quorum` or `stream`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Ready + unacknowledged.
    #[serde(default)]
    pub messages: Option<u64>,
    /// Waiting for a consumer.
    #[serde(default)]
    pub messages_ready: Option<u64>,
    /// Delivered, not yet acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
    /// Consumers attached.
    #[serde(default)]
    pub consumers: Option<u64>,
    /// `None`: field absent (quorum queues, 3.13+ basic listings); `Some(None)`: null (no
    /// timestamp on the head message); `Some(Some(t))`: epoch seconds.
    #[serde(default, deserialize_with = "present")]
    pub head_message_timestamp: Option<Option<f64>>,
    /// Rates; absent until the queue has seen traffic.
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
}

/// The rate part of `message_stats`. RabbitMQ keeps two groups of per-queue counters that
/// appear independently: publishes, and deliveries (`deliver_get`, `ack`, `deliver_no_ack`,
/// `get_no_ack`, ... always all together). A group that is absent has counted nothing: a rate
/// of 0. A field missing from a group that is there is an error naming it.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct MessageStats {
    /// Publishes into the queue.
    #[serde(default)]
    pub publish_details: Option<Rate>,
    /// Deliveries (consume + get, with and without acknowledgement).
    #[serde(default)]
    pub deliver_get_details: Option<Rate>,
    /// Acknowledgements.
    #[serde(default)]
    pub ack_details: Option<Rate>,
    /// Deliveries to consumers in automatic-acknowledgement mode, which never ack.
    #[serde(default)]
    pub deliver_no_ack_details: Option<Rate>,
    /// `basic.get`s without acknowledgement.
    #[serde(default)]
    pub get_no_ack_details: Option<Rate>,
    /// Publishes into the queue since the statistics began (cumulative).
    #[serde(default)]
    pub publish: Option<u64>,
    /// Deliveries and gets, cumulative.
    #[serde(default)]
    pub deliver_get: Option<u64>,
    /// Acknowledgements, cumulative.
    #[serde(default)]
    pub ack: Option<u64>,
    /// Deliveries in automatic-acknowledgement mode, cumulative.
    #[serde(default)]
    pub deliver_no_ack: Option<u64>,
    /// `basic.get`s without acknowledgement, cumulative.
    #[serde(default)]
    pub get_no_ack: Option<u64>,
}

/// A `*_details` object.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Rate {
    /// Messages per second over the last sample interval.
    pub rate: f64,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// Queue objects read through a JSON map, so that a key sent twice (RabbitMQ 4.0.0–4.0.2 sent
/// a quorum queue's `messages*` twice, rabbitmq-server #12374) takes its last value instead of
/// failing the whole listing.
fn lenient_items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<QueueInfo>, D::Error> {
    Vec::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
        .into_iter()
        .map(|item| QueueInfo::deserialize(serde_json::Value::Object(item)))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

/// What `/api/overview?columns=rates_mode,disable_stats` answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Overview {
    /// `basic` or `detailed` when the broker computes message rates, `none` when it does not
    /// (`management.rates_mode = none`).
    #[serde(default)]
    pub rates_mode: Option<String>,
    /// True when the broker keeps no statistics (`management.disable_stats`,
    /// `management_agent.disable_metrics_collector`): no `message_stats` anywhere.
    #[serde(default)]
    pub disable_stats: Option<bool>,
}

impl Overview {
    /// `Ok` when the broker collects message rates; otherwise why not, for every rate measure.
    pub fn rates(&self) -> Result<(), String> {
        if self.disable_stats == Some(true) {
            return Err("RabbitMQ collects no statistics on this broker (/api/overview reports disable_stats: true: management.disable_stats or management_agent.disable_metrics_collector is set), so it reports no message rates".into());
        }
        match self.rates_mode.as_deref() {
            Some("none") => Err("RabbitMQ collects no message rates on this broker (/api/overview reports rates_mode: none)".into()),
            Some(_) => Ok(()),
            None => Err("RabbitMQ's /api/overview did not report rates_mode, so whether it collects message rates is unknown".into()),
        }
    }
}

/// The paged envelope of `/api/queues/{vhost}?page=...`.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// The queues of this page.
    #[serde(deserialize_with = "lenient_items")]
    pub items: Vec<QueueInfo>,
    /// How many pages there are.
    #[serde(default)]
    pub page_count: u64,
}

/// Why a listing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// The vhost does not exist (404): an error for its series only.
    VhostMissing,
    /// Anything else fails the poll.
    Failed(String),
}

impl ListError {
    /// The error as a message about `GET path`.
    fn message(self, path: &str) -> String {
        match self {
            ListError::VhostMissing => format!("GET {path}: HTTP 404"),
            ListError::Failed(message) => message,
        }
    }
}

/// A management API client for one broker.
pub struct Management {
    http: reqwest::Client,
    /// Largest answer read (`crate::sources::http::read_body`).
    max_bytes: usize,
    base: String,
    username: String,
    password: Option<Secret>,
}

impl Management {
    /// A client for `base` (`http(s)://host:15672`), with `ca_pem` trusted for `https://`.
    ///
    /// # Errors
    /// When the CA cannot be read or the client cannot be built.
    pub fn new(
        base: &str,
        username: Option<&str>,
        password: Option<Secret>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Self, String> {
        crate::tls::ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent("queue-metrics-adapter");
        if let Some(pem) = ca_pem {
            builder = builder.tls_certs_only(
                reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("ca_file is not a PEM bundle: {e}"))?,
            );
        }
        Ok(Management {
            http: builder.build().map_err(|e| format!("HTTP client: {e}"))?,
            max_bytes,
            base: base.trim_end_matches('/').to_string(),
            username: username.unwrap_or("guest").to_string(),
            password,
        })
    }

    /// Whether the broker collects message rates (one `GET /api/overview`, two columns).
    ///
    /// # Errors
    /// When the call fails or the answer is not an overview.
    pub async fn overview(&self) -> Result<Overview, String> {
        self.get_json("/api/overview", &format!("columns={OVERVIEW_COLUMNS}"))
            .await
            .map_err(|e| e.message("/api/overview"))
    }

    /// `GET path?query`, read as JSON; a 404 is [`ListError::VhostMissing`].
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &str,
    ) -> Result<T, ListError> {
        let response = self
            .http
            .get(format!("{}{path}?{query}", self.base))
            .basic_auth(&self.username, self.password.as_ref().map(Secret::expose))
            .send()
            .await
            .map_err(|e| {
                ListError::Failed(format!(
                    "GET {path}: {}",
                    crate::sources::http::http_error_text(&e)
                ))
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ListError::VhostMissing);
        }
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 => " (check username and password)",
                403 => " (the user lacks the monitoring tag or permission on this vhost)",
                _ => "",
            };
            return Err(ListError::Failed(format!(
                "GET {path}: HTTP {status}{hint}"
            )));
        }
        let body = crate::sources::http::read_body(response, self.max_bytes)
            .await
            .map_err(|e| ListError::Failed(format!("GET {path}: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| ListError::Failed(format!("GET {path}: unreadable reply: {e}")))
    }

    /// Every vhost's name (`GET /api/vhosts`, one column), for `discover`.
    ///
    /// # Errors
    /// When the call fails or the answer is not a list of vhosts.
    pub async fn list_vhosts(&self) -> Result<Vec<String>, String> {
        #[derive(Deserialize)]
        struct Vhost {
            name: String,
        }
        let vhosts: Vec<Vhost> = self
            .get_json("/api/vhosts", "columns=name")
            .await
            .map_err(|e| e.message("/api/vhosts"))?;
        Ok(vhosts.into_iter().map(|v| v.name).collect())
    }

    /// Every binding in `vhost` from a named exchange to a queue, for `discover` (kombu binds
    /// a Celery queue from the exchange of its own name).
    ///
    /// # Errors
    /// When the call fails or the answer is not a list of bindings.
    pub async fn list_bindings(&self, vhost: &str) -> Result<Vec<Binding>, String> {
        let path = format!("/api/bindings/{}", encode(vhost));
        let all: Vec<Binding> = self
            .get_json(
                &path,
                "columns=source,destination,destination_type,routing_key",
            )
            .await
            .map_err(|e| e.message(&path))?;
        Ok(all
            .into_iter()
            .filter(|b| !b.source.is_empty() && b.destination_type == "queue")
            .collect())
    }

    /// Every queue of `vhost`, one page of [`PAGE_SIZE`] per call.
    ///
    /// # Errors
    /// [`ListError::VhostMissing`] for a 404, [`ListError::Failed`] for anything else.
    pub async fn list_queues(&self, vhost: &str) -> Result<(Vec<QueueInfo>, u32), ListError> {
        let mut queues = Vec::new();
        let mut page = 1u64;
        let mut calls = 0;
        let path = format!("/api/queues/{}", encode(vhost));
        loop {
            calls += 1;
            let body: Page = self
                .get_json(
                    &path,
                    // enable_queue_totals keeps the three counts on a broker whose statistics
                    // are disabled; where they are enabled it changes nothing.
                    &format!(
                        "page={page}&page_size={PAGE_SIZE}&enable_queue_totals=true&columns={COLUMNS}"
                    ),
                )
                .await?;
            queues.extend(body.items);
            if page >= body.page_count {
                break;
            }
            page += 1;
        }
        Ok((queues, calls))
    }
}

/// Percent-encodes a path segment (`/` -> `%2F`, as the management API wants vhosts).
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a queue's value is judged against besides the queue itself.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    /// The adapter's clock, epoch milliseconds.
    pub now_ms: f64,
    /// Drain time served for a backlog that nothing takes.
    pub max_drain_seconds: f64,
    /// `Ok` when the broker collects message rates, else why not ([`Overview::rates`]).
    pub rates: &'a Result<(), String>,
    /// How publishers write the AMQP `timestamp` property.
    pub timestamp_unit: HeadTimestampUnit,
}

/// Earliest plausible enqueue time, 2000-01-01, in epoch ms: an earlier one is a unit mix-up.
const EARLIEST_PLAUSIBLE_MS: f64 = 946_684_800_000.0;

/// The value of `measure` for a listed queue.
///
/// Rates are messages per second over RabbitMQ's last sample interval. `drain_seconds` is the
/// backlog (`messages`) over the rate at which messages leave the queue: acknowledgements plus
/// deliveries and gets in automatic-acknowledgement mode (`ack + deliver_no_ack + get_no_ack`),
/// capped at `max_drain_seconds`, which is also served when nothing leaves; an empty queue
/// drains in 0 s.
///
/// # Errors
/// When RabbitMQ did not report what the measure needs: never a guess.
pub fn value(q: &QueueInfo, measure: Measure, at: &Reading<'_>) -> Result<f64, SeriesError> {
    let count = |v: Option<u64>, field: &str| {
        v.map(|n| n as f64).ok_or_else(|| {
            let why = match at.rates {
                Err(off) if off.contains("disable_stats") => off.as_str(),
                _ => "statistics lag behind new queues by up to collect_statistics_interval; RabbitMQ 4.3 before 4.3.4 drops the counts of upgraded quorum queues",
            };
            SeriesError::new(format!(
                "RabbitMQ did not report {field} for queue {:?} ({why})",
                q.name
            ))
        })
    };
    // A queue without AMQP 0-9-1 traffic has no message_stats, and a group of counters that
    // has counted nothing is absent: no messages moved, a rate of 0, where the broker collects
    // rates at all.
    let rate = |pick: fn(&MessageStats) -> Option<Rate>, field: &str| {
        at.rates
            .as_ref()
            .map_err(|why| SeriesError::new(format!("{measure} of queue {:?}: {why}", q.name)))?;
        let Some(stats) = &q.message_stats else {
            return Ok(0.0);
        };
        let group_present = if field == "publish_details" {
            stats.publish_details.is_some()
        } else {
            stats.deliver_get_details.is_some()
                || stats.ack_details.is_some()
                || stats.deliver_no_ack_details.is_some()
                || stats.get_no_ack_details.is_some()
        };
        match pick(stats) {
            Some(r) => Ok(r.rate),
            None if !group_present => Ok(0.0),
            None => Err(SeriesError::new(format!(
                "RabbitMQ sent the delivery statistics of queue {:?} without {field}.rate",
                q.name
            ))),
        }
    };
    // A cumulative counter: `pick` says whether its group is there and its value. An absent
    // group has counted nothing yet (0); a group without the field is an error.
    let counter = |pick: fn(&MessageStats) -> (bool, Option<f64>), field: &str| {
        at.rates
            .as_ref()
            .map_err(|why| SeriesError::new(format!("{measure} of queue {:?}: {why}", q.name)))?;
        let Some(stats) = &q.message_stats else {
            return Ok(0.0);
        };
        match pick(stats) {
            (_, Some(n)) => Ok(n),
            (false, None) => Ok(0.0),
            (true, None) => Err(SeriesError::new(format!(
                "RabbitMQ sent the statistics of queue {:?} without the counter {field}",
                q.name
            ))),
        }
    };
    match measure {
        Measure::Ready => count(q.messages_ready, "messages_ready"),
        Measure::Unacked => count(q.messages_unacknowledged, "messages_unacknowledged"),
        Measure::Total => count(q.messages, "messages"),
        Measure::Consumers => count(q.consumers, "consumers"),
        Measure::PublishRate => rate(|s| s.publish_details, "publish_details"),
        Measure::DeliverRate => rate(|s| s.deliver_get_details, "deliver_get_details"),
        Measure::AckRate => rate(|s| s.ack_details, "ack_details"),
        Measure::OldestAgeSeconds => {
            if count(q.messages, "messages")? == 0.0 {
                return Ok(0.0);
            }
            let kind = q.kind.as_deref().unwrap_or("classic");
            match q.head_message_timestamp {
                Some(Some(ts)) => head_age(&q.name, ts, at),
                None if at
                    .rates
                    .as_ref()
                    .is_err_and(|off| off.contains("disable_stats")) =>
                {
                    Err(SeriesError::new(format!(
                        "age unavailable for queue {:?}: {}",
                        q.name,
                        at.rates.as_ref().err().map_or("", String::as_str)
                    )))
                }
                _ if kind != "classic" => Err(SeriesError::new(format!(
                    "age unavailable: queue {:?} is a {kind} queue, and only classic queues report head_message_timestamp",
                    q.name
                ))),
                _ => Err(SeriesError::new(format!(
                    "age unavailable: RabbitMQ reports no timestamp for the head message of queue {:?} (publishers must set the AMQP timestamp property, and RabbitMQ reports it only once the message is paged in)",
                    q.name
                ))),
            }
        }
        // The cumulative counters, whose rate over the metric's window the source computes.
        Measure::ArrivalRate => counter(
            |s| {
                (
                    s.publish.is_some() || s.publish_details.is_some(),
                    s.publish.map(|n| n as f64),
                )
            },
            "publish",
        ),
        Measure::CompletionRate => counter(
            |s| {
                let group = s.deliver_get.is_some()
                    || s.ack.is_some()
                    || s.deliver_no_ack.is_some()
                    || s.get_no_ack.is_some()
                    || s.deliver_get_details.is_some();
                let sum = match (s.ack, s.deliver_no_ack, s.get_no_ack) {
                    (Some(a), Some(d), Some(g)) => Some((a + d + g) as f64),
                    _ => None,
                };
                (group, sum)
            },
            "ack, deliver_no_ack and get_no_ack",
        ),
        Measure::DrainSeconds => {
            let backlog = count(q.messages, "messages")?;
            if backlog == 0.0 {
                return Ok(0.0);
            }
            let leaving = rate(|s| s.ack_details, "ack_details")?
                + rate(|s| s.deliver_no_ack_details, "deliver_no_ack_details")?
                + rate(|s| s.get_no_ack_details, "get_no_ack_details")?;
            Ok(crate::sources::rates::drain_seconds(
                backlog,
                leaving,
                at.max_drain_seconds,
            ))
        }
        other => Err(SeriesError::new(format!(
            "measure {other} does not apply to RabbitMQ queues"
        ))),
    }
}

/// The age of a head message whose AMQP `timestamp` is `ts` in the configured unit.
fn head_age(queue: &str, ts: f64, at: &Reading<'_>) -> Result<f64, SeriesError> {
    let (enqueued_ms, unit_hint) = match at.timestamp_unit {
        HeadTimestampUnit::S => (
            ts * 1000.0,
            "AMQP timestamps are seconds; for publishers that write milliseconds (JavaScript Date.now(), many Java clients) set timestamp_unit: ms",
        ),
        HeadTimestampUnit::Ms => (ts, "timestamp_unit is ms"),
    };
    let bad = |e: String| {
        SeriesError::new(format!(
            "queue {queue:?}: head_message_timestamp {ts}: {e} ({unit_hint})"
        ))
    };
    if enqueued_ms.is_nan() || enqueued_ms < EARLIEST_PLAUSIBLE_MS {
        return Err(bad("that is before the year 2000".into()));
    }
    crate::sources::age::age_seconds(enqueued_ms, at.now_ms, "the adapter's clock").map_err(bad)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const COLLECTED: Result<(), String> = Ok(());

    fn at(now_s: f64, max_drain_seconds: f64) -> Reading<'static> {
        Reading {
            now_ms: now_s * 1000.0,
            max_drain_seconds,
            rates: &COLLECTED,
            timestamp_unit: HeadTimestampUnit::S,
        }
    }

    fn fixture(name: &str) -> QueueInfo {
        let text = match name {
            "ts" => include_str!(
                "../../../tests/fixtures/rabbitmq-3.10.8-api-queues-vhost-embed.classic.ts.json"
            ),
            "nots" => include_str!(
                "../../../tests/fixtures/rabbitmq-3.10.8-api-queues-vhost-embed.classic.nots.json"
            ),
            _ => include_str!(
                "../../../tests/fixtures/rabbitmq-3.10.8-api-queues-vhost-embed.quorum.ts.json"
            ),
        };
        serde_json::from_str(text).expect("fixture parses")
    }

    #[test]
    fn classic_queue_with_timestamps_has_counts_and_age() {
        let q = fixture("ts");
        let ts = q.head_message_timestamp.flatten().expect("timestamp");
        assert_eq!(value(&q, Measure::Ready, &at(ts, 100.0)), Ok(4.0));
        assert_eq!(value(&q, Measure::Unacked, &at(ts, 100.0)), Ok(1.0));
        assert_eq!(value(&q, Measure::Total, &at(ts, 100.0)), Ok(5.0));
        assert_eq!(
            value(&q, Measure::OldestAgeSeconds, &at(ts + 42.0, 100.0)),
            Ok(42.0)
        );
    }

    #[test]
    fn age_is_unavailable_without_timestamps_and_on_quorum_queues() {
        let err = value(&fixture("nots"), Measure::OldestAgeSeconds, &at(0.0, 100.0))
            .expect_err("no timestamp");
        assert!(err.0.contains("timestamp property"), "{err}");
        let q = fixture("quorum");
        assert_eq!(
            q.head_message_timestamp, None,
            "quorum queues have no such field"
        );
        let err = value(&q, Measure::OldestAgeSeconds, &at(0.0, 100.0)).expect_err("quorum");
        assert!(err.0.contains("quorum queue"), "{err}");
    }

    #[test]
    fn paged_listing_parses_with_columns() {
        let page: Page = serde_json::from_str(include_str!(
            "../../../tests/fixtures/rabbitmq-3.10.8-api-queues-paged-columns.json"
        ))
        .expect("page parses");
        assert!(!page.items.is_empty());
        assert!(page.page_count >= 1);
        for q in &page.items {
            assert!(value(q, Measure::Total, &at(0.0, 1.0)).is_ok(), "{q:?}");
        }
    }

    fn stats(ack: f64, deliver_no_ack: f64, get_no_ack: f64) -> Option<MessageStats> {
        Some(MessageStats {
            publish_details: Some(Rate { rate: 9.0 }),
            deliver_get_details: Some(Rate { rate: 9.0 }),
            ack_details: Some(Rate { rate: ack }),
            deliver_no_ack_details: Some(Rate {
                rate: deliver_no_ack,
            }),
            get_no_ack_details: Some(Rate { rate: get_no_ack }),
            ..MessageStats::default()
        })
    }

    #[test]
    fn counters_are_read_whole_and_a_group_without_its_counter_is_an_error() {
        let mut q = fixture("ts");
        q.message_stats = Some(MessageStats {
            publish: Some(120),
            deliver_get: Some(100),
            ack: Some(90),
            deliver_no_ack: Some(7),
            get_no_ack: Some(3),
            ..MessageStats::default()
        });
        let at = at(0.0, 100.0);
        assert_eq!(value(&q, Measure::ArrivalRate, &at), Ok(120.0));
        assert_eq!(
            value(&q, Measure::CompletionRate, &at),
            Ok(100.0),
            "acknowledged, plus delivered and got without acknowledgement"
        );
        q.message_stats = Some(MessageStats {
            publish: Some(5),
            ..MessageStats::default()
        });
        assert_eq!(
            value(&q, Measure::CompletionRate, &at),
            Ok(0.0),
            "nothing delivered yet: the delivery counters are absent together"
        );
        q.message_stats = Some(MessageStats {
            deliver_get: Some(5),
            ack: Some(5),
            ..MessageStats::default()
        });
        let err = value(&q, Measure::CompletionRate, &at).expect_err("half a group");
        assert!(err.to_string().contains("without the counter"), "{err}");
        assert_eq!(value(&q, Measure::ArrivalRate, &at), Ok(0.0));
        let off = Err("rates_mode: none".to_string());
        let at = Reading { rates: &off, ..at };
        assert!(value(&q, Measure::ArrivalRate, &at).is_err());
    }

    #[test]
    fn drain_time_is_backlog_over_the_rate_messages_leave_capped() {
        let mut q = fixture("ts");
        q.message_stats = stats(2.5, 0.0, 0.0);
        assert_eq!(value(&q, Measure::DrainSeconds, &at(0.0, 100.0)), Ok(2.0));
        q.message_stats = stats(0.0, 2.0, 0.5);
        assert_eq!(
            value(&q, Measure::DrainSeconds, &at(0.0, 100.0)),
            Ok(2.0),
            "automatic-acknowledgement consumers drain without acks"
        );
        q.message_stats = stats(1.0, 1.0, 0.5);
        assert_eq!(value(&q, Measure::DrainSeconds, &at(0.0, 100.0)), Ok(2.0));
        let mut partial = stats(1.0, 1.0, 0.5);
        if let Some(s) = partial.as_mut() {
            s.deliver_no_ack_details = None;
        }
        q.message_stats = partial;
        let err = value(&q, Measure::DrainSeconds, &at(0.0, 100.0)).expect_err("field missing");
        assert!(err.0.contains("deliver_no_ack_details"), "{err}");
        q.message_stats = None;
        assert_eq!(
            value(&q, Measure::DrainSeconds, &at(0.0, 100.0)),
            Ok(100.0),
            "no acks: the cap"
        );
        q.messages = Some(0);
        assert_eq!(value(&q, Measure::DrainSeconds, &at(0.0, 100.0)), Ok(0.0));
        q.messages = None;
        assert!(
            value(&q, Measure::DrainSeconds, &at(0.0, 100.0)).is_err(),
            "unknown backlog is an error"
        );
    }

    #[test]
    fn a_broker_without_rates_makes_every_rate_measure_an_error_but_counts_stay() {
        let overview: Overview =
            serde_json::from_str(r#"{"rates_mode":"none","disable_stats":false}"#).expect("json");
        let off = overview.rates();
        assert!(off.as_ref().expect_err("none").contains("rates_mode: none"));
        let disabled: Overview =
            serde_json::from_str(r#"{"rates_mode":"basic","disable_stats":true}"#).expect("json");
        assert!(disabled.rates().expect_err("off").contains("disable_stats"));
        let silent: Overview = serde_json::from_str("{}").expect("json");
        assert!(silent.rates().expect_err("unknown").contains("rates_mode"));
        let basic: Overview = serde_json::from_str(r#"{"rates_mode":"basic"}"#).expect("json");
        assert_eq!(basic.rates(), Ok(()));

        let q = fixture("ts");
        let reading = Reading {
            rates: &off,
            ..at(0.0, 100.0)
        };
        for m in [
            Measure::PublishRate,
            Measure::DeliverRate,
            Measure::AckRate,
            Measure::DrainSeconds,
        ] {
            let err = value(&q, m, &reading).expect_err("no rates");
            assert!(err.0.contains("rates_mode: none"), "{m}: {err}");
        }
        assert_eq!(value(&q, Measure::Ready, &reading), Ok(4.0));
        let mut empty = q.clone();
        empty.messages = Some(0);
        assert_eq!(
            value(&empty, Measure::DrainSeconds, &reading),
            Ok(0.0),
            "an empty queue has nothing to drain"
        );
        let mut idle = q;
        idle.message_stats = None;
        assert_eq!(
            value(&idle, Measure::PublishRate, &at(0.0, 100.0)),
            Ok(0.0),
            "no traffic, no message_stats: an honest 0 where rates are collected"
        );
    }

    #[test]
    fn a_head_timestamp_in_the_future_is_an_error_and_ms_is_a_unit() {
        let mut q = fixture("ts");
        let now_s = 1_795_310_000.0;
        q.head_message_timestamp = Some(Some(now_s * 1000.0 - 120_000.0));
        let err = value(&q, Measure::OldestAgeSeconds, &at(now_s, 100.0))
            .expect_err("milliseconds read as seconds");
        assert!(
            err.0.contains("milliseconds") && err.0.contains("timestamp_unit: ms"),
            "{err}"
        );
        let ms = Reading {
            timestamp_unit: HeadTimestampUnit::Ms,
            ..at(now_s, 100.0)
        };
        assert_eq!(value(&q, Measure::OldestAgeSeconds, &ms), Ok(120.0));
        q.head_message_timestamp = Some(Some(now_s + 30.0));
        assert_eq!(
            value(&q, Measure::OldestAgeSeconds, &at(now_s, 100.0)),
            Ok(0.0),
            "30 s ahead is clock skew"
        );
        q.head_message_timestamp = Some(Some(now_s + 600.0));
        assert!(value(&q, Measure::OldestAgeSeconds, &at(now_s, 100.0)).is_err());
        q.head_message_timestamp = Some(Some(now_s - 120.0));
        let err = value(&q, Measure::OldestAgeSeconds, &ms).expect_err("seconds read as ms");
        assert!(err.0.contains("before the year 2000"), "{err}");
    }

    fn page(text: &str) -> BTreeMap<String, QueueInfo> {
        let page: Page = serde_json::from_str(text).expect("page parses");
        page.items
            .into_iter()
            .map(|q| (q.name.clone(), q))
            .collect()
    }

    #[test]
    fn rabbitmq_4_listings_read_as_3_10_ones_and_duplicate_keys_do_not_fail_them() {
        let queues = page(include_str!(
            "../../../tests/fixtures/rabbitmq-4.x-api-queues-columns.derived.json"
        ));
        assert_eq!(queues.len(), 8);
        let now_s = 1_767_225_700.0;
        let orders = &queues["orders"];
        assert_eq!(value(orders, Measure::Ready, &at(now_s, 100.0)), Ok(40.0));
        assert_eq!(
            value(orders, Measure::OldestAgeSeconds, &at(now_s, 100.0)),
            Ok(100.0)
        );
        assert_eq!(value(orders, Measure::AckRate, &at(now_s, 100.0)), Ok(9.8));

        let ms = &queues["orders.ms-publisher"];
        let err = value(ms, Measure::OldestAgeSeconds, &at(now_s, 100.0)).expect_err("ms");
        assert!(err.0.contains("timestamp_unit: ms"), "{err}");
        let in_ms = Reading {
            timestamp_unit: HeadTimestampUnit::Ms,
            ..at(now_s, 100.0)
        };
        let age = value(ms, Measure::OldestAgeSeconds, &in_ms).expect("age in ms");
        assert!((age - 99.877).abs() < 1e-6, "{age}");

        let idle = &queues["idle"];
        assert_eq!(
            value(idle, Measure::PublishRate, &at(now_s, 100.0)),
            Ok(0.0)
        );
        assert_eq!(
            value(idle, Measure::OldestAgeSeconds, &at(now_s, 100.0)),
            Ok(0.0)
        );

        let consumed = &queues["consumed-only"];
        assert_eq!(
            value(consumed, Measure::PublishRate, &at(now_s, 100.0)),
            Ok(0.0),
            "the publish group is absent: nothing was published over AMQP 0-9-1"
        );
        assert_eq!(
            value(consumed, Measure::DeliverRate, &at(now_s, 100.0)),
            Ok(3.0)
        );
        assert_eq!(
            value(consumed, Measure::DrainSeconds, &at(now_s, 100.0)),
            Ok(0.0)
        );

        let err = value(
            &queues["qq.orders"],
            Measure::OldestAgeSeconds,
            &at(now_s, 1.0),
        )
        .expect_err("quorum");
        assert!(err.0.contains("quorum queue"), "{err}");
        let err = value(&queues["just-declared"], Measure::Ready, &at(now_s, 1.0))
            .expect_err("no counts yet");
        assert!(err.0.contains("messages_ready"), "{err}");
        assert_eq!(
            value(
                &queues["qq.dup-keys-4.0.2"],
                Measure::Total,
                &at(now_s, 1.0)
            ),
            Ok(3.0)
        );
    }

    #[test]
    fn a_broker_with_statistics_disabled_serves_counts_only_where_it_reports_them() {
        let overview: Overview = serde_json::from_str(include_str!(
            "../../../tests/fixtures/rabbitmq-4.3-api-overview-stats-disabled.derived.json"
        ))
        .expect("overview parses");
        let off = overview.rates();
        assert!(off.is_err());
        let reading = Reading {
            rates: &off,
            ..at(0.0, 100.0)
        };
        let bare = page(include_str!(
            "../../../tests/fixtures/rabbitmq-4.x-api-queues-columns-stats-disabled.derived.json"
        ));
        let err = value(&bare["orders"], Measure::Ready, &reading).expect_err("no counts");
        assert!(
            err.0.contains("messages_ready") && err.0.contains("disable_stats"),
            "{err}"
        );
        let totals = page(include_str!(
            "../../../tests/fixtures/rabbitmq-4.x-api-queues-columns-stats-disabled-queue-totals.derived.json"
        ));
        assert_eq!(value(&totals["orders"], Measure::Ready, &reading), Ok(40.0));
        let err = value(&totals["orders"], Measure::PublishRate, &reading).expect_err("no rates");
        assert!(err.0.contains("disable_stats"), "{err}");
        let err = value(&totals["orders"], Measure::Consumers, &reading).expect_err("not sent");
        assert!(err.0.contains("consumers"), "{err}");
        let err =
            value(&totals["orders"], Measure::OldestAgeSeconds, &reading).expect_err("no age");
        assert!(err.0.contains("disable_stats"), "{err}");

        let on: Overview = serde_json::from_str(include_str!(
            "../../../tests/fixtures/rabbitmq-4.3-api-overview.derived.json"
        ))
        .expect("overview parses");
        assert_eq!(on.rates(), Ok(()));
    }

    #[test]
    fn vhosts_are_percent_encoded() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("qma test/1"), "qma%20test%2F1");
    }
}
