//! The RabbitMQ management HTTP API: one paged listing per vhost with only the columns we use,
//! and the measures computed from it. Only `GET`s; never `POST /api/queues/.../get`, which
//! consumes and requeues messages.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::{Measure, Secret};
use crate::model::SeriesError;

/// Queues asked for per page: the API's maximum, so 1,000 queues take two calls.
pub const PAGE_SIZE: u32 = 500;

/// The columns we read; asking for them keeps responses small (and, on 3.13+, detailed).
pub const COLUMNS: &str = "name,vhost,type,messages,messages_ready,messages_unacknowledged,consumers,\
head_message_timestamp,message_stats.publish_details.rate,message_stats.deliver_get_details.rate,\
message_stats.ack_details.rate";

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

/// The rate part of `message_stats`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct MessageStats {
    /// Publishes into the queue.
    #[serde(default)]
    pub publish_details: Option<Rate>,
    /// Deliveries (consume + get).
    #[serde(default)]
    pub deliver_get_details: Option<Rate>,
    /// Acknowledgements.
    #[serde(default)]
    pub ack_details: Option<Rate>,
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

/// The paged envelope of `/api/queues/{vhost}?page=...`.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// The queues of this page.
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

/// A management API client for one broker.
pub struct Management {
    http: reqwest::Client,
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
            base: base.trim_end_matches('/').to_string(),
            username: username.unwrap_or("guest").to_string(),
            password,
        })
    }

    /// Every queue of `vhost`, one page of [`PAGE_SIZE`] per call.
    ///
    /// # Errors
    /// [`ListError::VhostMissing`] for a 404, [`ListError::Failed`] for anything else.
    pub async fn list_queues(&self, vhost: &str) -> Result<(Vec<QueueInfo>, u32), ListError> {
        let mut queues = Vec::new();
        let mut page = 1u64;
        let mut calls = 0;
        loop {
            let url = format!(
                "{}/api/queues/{}?page={page}&page_size={PAGE_SIZE}&columns={COLUMNS}",
                self.base,
                encode(vhost)
            );
            calls += 1;
            let response = self
                .http
                .get(&url)
                .basic_auth(&self.username, self.password.as_ref().map(Secret::expose))
                .send()
                .await
                .map_err(|e| {
                    ListError::Failed(format!(
                        "GET /api/queues/{}: {}",
                        encode(vhost),
                        crate::sources::http_error_text(&e)
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
                    "GET /api/queues/{}: HTTP {status}{hint}",
                    encode(vhost)
                )));
            }
            let body: Page = response.json().await.map_err(|e| {
                ListError::Failed(format!(
                    "GET /api/queues/{}: unreadable reply: {}",
                    encode(vhost),
                    crate::sources::http_error_text(&e)
                ))
            })?;
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

/// The value of `measure` for a listed queue at `now_s` (the adapter's clock, epoch seconds).
///
/// # Errors
/// When RabbitMQ did not report what the measure needs: never a guess.
pub fn value(
    q: &QueueInfo,
    measure: Measure,
    now_s: f64,
    max_drain_seconds: f64,
) -> Result<f64, SeriesError> {
    let count = |v: Option<u64>, field: &str| {
        v.map(|n| n as f64).ok_or_else(|| {
            SeriesError::new(format!("RabbitMQ has not reported {field} for queue {:?} yet (statistics lag behind new queues)", q.name))
        })
    };
    let rate = |r: Option<Rate>| r.map_or(0.0, |r| r.rate);
    let stats = q.message_stats.clone().unwrap_or_default();
    match measure {
        Measure::Ready => count(q.messages_ready, "messages_ready"),
        Measure::Unacked => count(q.messages_unacknowledged, "messages_unacknowledged"),
        Measure::Total => count(q.messages, "messages"),
        Measure::Consumers => count(q.consumers, "consumers"),
        // A queue without traffic has no message_stats: no messages moved, a rate of 0.
        Measure::PublishRate => Ok(rate(stats.publish_details)),
        Measure::DeliverRate => Ok(rate(stats.deliver_get_details)),
        Measure::AckRate => Ok(rate(stats.ack_details)),
        Measure::OldestAgeSeconds => {
            if count(q.messages, "messages")? == 0.0 {
                return Ok(0.0);
            }
            let kind = q.kind.as_deref().unwrap_or("classic");
            match q.head_message_timestamp {
                Some(Some(ts)) => Ok((now_s - ts).max(0.0)),
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
        Measure::DrainSeconds => {
            let backlog = count(q.messages, "messages")?;
            let acks = rate(stats.ack_details);
            Ok(if backlog == 0.0 {
                0.0
            } else if acks > 0.0 {
                (backlog / acks).min(max_drain_seconds)
            } else {
                max_drain_seconds
            })
        }
        other => Err(SeriesError::new(format!(
            "measure {other} does not apply to RabbitMQ queues"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(value(&q, Measure::Ready, ts, 100.0), Ok(4.0));
        assert_eq!(value(&q, Measure::Unacked, ts, 100.0), Ok(1.0));
        assert_eq!(value(&q, Measure::Total, ts, 100.0), Ok(5.0));
        assert_eq!(
            value(&q, Measure::OldestAgeSeconds, ts + 42.0, 100.0),
            Ok(42.0)
        );
    }

    #[test]
    fn age_is_unavailable_without_timestamps_and_on_quorum_queues() {
        let err = value(&fixture("nots"), Measure::OldestAgeSeconds, 0.0, 100.0)
            .expect_err("no timestamp");
        assert!(err.0.contains("timestamp property"), "{err}");
        let q = fixture("quorum");
        assert_eq!(
            q.head_message_timestamp, None,
            "quorum queues have no such field"
        );
        let err = value(&q, Measure::OldestAgeSeconds, 0.0, 100.0).expect_err("quorum");
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
            assert!(value(q, Measure::Total, 0.0, 1.0).is_ok(), "{q:?}");
        }
    }

    #[test]
    fn drain_time_is_backlog_over_ack_rate_capped() {
        let mut q = fixture("ts");
        q.message_stats = Some(MessageStats {
            ack_details: Some(Rate { rate: 2.5 }),
            ..Default::default()
        });
        assert_eq!(value(&q, Measure::DrainSeconds, 0.0, 100.0), Ok(2.0));
        q.message_stats = None;
        assert_eq!(
            value(&q, Measure::DrainSeconds, 0.0, 100.0),
            Ok(100.0),
            "no acks: the cap"
        );
        q.messages = Some(0);
        assert_eq!(value(&q, Measure::DrainSeconds, 0.0, 100.0), Ok(0.0));
        q.messages = None;
        assert!(
            value(&q, Measure::DrainSeconds, 0.0, 100.0).is_err(),
            "unknown backlog is an error"
        );
    }

    #[test]
    fn vhosts_are_percent_encoded() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("qma test/1"), "qma%20test%2F1");
    }
}
