//! The JetStream API requests a poll makes and their replies, read strictly: the four
//! read-only requests (`STREAM.INFO`, `CONSUMER.INFO`, `CONSUMER.LIST`, `STREAM.MSG.GET`), each a
//! core NATS request to `<prefix>.<API>` answered in JSON by the stream's or consumer's leader.
//!
//! Nothing here creates, deletes, acknowledges or pulls: a consumer's state is only ever read
//! from its info. The reply parsers are pure functions over the reply's bytes (fuzzed in
//! `fuzz/fuzz_targets/nats_replies.rs`): a field the adapter needs and the reply lacks is an
//! error naming it, never a zero.
//!
//! Direct gets (`$JS.API.DIRECT.GET`) are not used: they may be answered by a follower or a
//! mirror, which is not read-your-writes, so the oldest message could be one already
//! acknowledged on the leader.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{Client, RequestError};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Most consumers of one stream a listing reads (the server sends up to 256 a page).
const MAX_LISTED: usize = 10_000;

/// The JetStream error codes a poll tells apart.
const STREAM_NOT_FOUND: u64 = 10059;
const CONSUMER_NOT_FOUND: u64 = 10014;
const NO_MESSAGE_FOUND: u64 = 10037;

/// Why one API request gave no usable answer; its `Display` is the series' error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The stream does not exist (or is not visible to this account).
    #[error("stream {0:?} not found")]
    StreamNotFound(String),
    /// The consumer does not exist on its stream.
    #[error("consumer {consumer:?} not found on stream {stream:?}")]
    ConsumerNotFound {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
    },
    /// Another error JetStream answered (a leader being elected, a permission): its own words.
    #[error("JetStream answered {request}: {description} (code {code}, err_code {err_code})")]
    Server {
        /// The request, `STREAM.INFO.jobs`.
        request: String,
        /// HTTP-like status.
        code: u64,
        /// JetStream's error code.
        err_code: u64,
        /// The server's description.
        description: String,
    },
    /// Nobody listens on the API subject.
    #[error(
        "nothing answered {subject}: JetStream is not enabled for this account, or the domain or api_prefix is wrong"
    )]
    NoResponders {
        /// The full subject.
        subject: String,
    },
    /// The leader did not answer in time (a clustered stream electing a leader, a hung server).
    #[error("{request} was not answered within {after:?}")]
    TimedOut {
        /// The request.
        request: String,
        /// The request's time bound.
        after: Duration,
    },
    /// The reply is larger than `max_response_bytes`.
    #[error("the reply to {request} is {size} bytes, more than max_response_bytes ({limit})")]
    TooLarge {
        /// The request.
        request: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The request could not be sent or its reply not received.
    #[error("{request} failed: {message}")]
    Io {
        /// The request.
        request: String,
        /// The client's error.
        message: String,
    },
    /// The reply cannot be read.
    #[error("unexpected reply to {request}: {what}")]
    BadReply {
        /// The request.
        request: String,
        /// What is wrong with it.
        what: String,
    },
}

/// `io.nats.jetstream.api.v1.*` error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: u64,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
struct ErrorOnly {
    #[serde(default)]
    error: Option<ErrorBody>,
}

/// What `STREAM.INFO` tells of a stream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StreamInfo {
    /// Its configuration.
    pub config: StreamConfig,
    /// When it was created (RFC 3339): a stream deleted and created again is another.
    pub created: String,
    /// Its messages.
    pub state: StreamState,
    /// With `subjects_filter`: subjects in all (the page may hold fewer).
    #[serde(default)]
    pub total: Option<u64>,
}

/// The part of a stream's configuration a poll uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StreamConfig {
    /// The subjects it stores (none for a mirror or a stream of sources).
    #[serde(default)]
    pub subjects: Vec<String>,
}

/// A stream's message counts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// The last sequence given to a message: every message stored ever moved it by one, so it
    /// counts arrivals.
    pub last_seq: u64,
    /// With `subjects_filter`: messages per matching subject.
    #[serde(default)]
    pub subjects: Option<std::collections::BTreeMap<String, u64>>,
}

/// What `CONSUMER.INFO` (or a `CONSUMER.LIST` entry) tells of a consumer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// When it was created: a consumer deleted and made again is another.
    pub created: String,
    /// Its configuration.
    pub config: ConsumerConfig,
    /// The last message delivered.
    pub delivered: SequenceInfo,
    /// Every message up to here is acknowledged.
    pub ack_floor: SequenceInfo,
    /// Delivered, not acknowledged.
    pub num_ack_pending: u64,
    /// Of those, delivered more than once.
    pub num_redelivered: u64,
    /// Pull requests waiting.
    pub num_waiting: u64,
    /// Matching messages not yet delivered.
    pub num_pending: u64,
    /// The server's time of this reply (2.10 and later; 2.9 sends none).
    #[serde(default)]
    pub ts: Option<String>,
}

impl ConsumerInfo {
    /// Its messages not finished: not yet delivered, or delivered and not acknowledged.
    pub fn backlog(&self) -> u64 {
        self.num_pending.saturating_add(self.num_ack_pending)
    }
}

/// The part of a consumer's configuration a poll uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ConsumerConfig {
    /// The one subject it reads (2.9); empty: all of the stream's.
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Several subjects (2.10 and later).
    #[serde(default)]
    pub filter_subjects: Option<Vec<String>>,
    /// Where a push consumer delivers; `None`: a pull consumer.
    #[serde(default)]
    pub deliver_subject: Option<String>,
}

impl ConsumerConfig {
    /// The subjects the consumer reads, if it filters; empty: every subject of its stream.
    pub fn filters(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .filter_subjects
            .iter()
            .flatten()
            .chain(&self.filter_subject)
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        f.sort();
        f.dedup();
        f
    }
}

/// A consumer's position (delivered, ack floor).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub struct SequenceInfo {
    /// The consumer's own sequence (every delivery, redeliveries too).
    pub consumer_seq: u64,
    /// The stream sequence of that message.
    pub stream_seq: u64,
}

#[derive(Debug, Deserialize)]
struct ConsumerList {
    total: u64,
    consumers: Vec<ConsumerInfo>,
    /// Consumers whose info did not arrive (a clustered server's replicas): counted in `total`.
    #[serde(default)]
    missing: Vec<String>,
    /// Consumers offline (2.11 and later), also counted in `total`.
    #[serde(default)]
    offline: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct MessageReply {
    message: StoredMessage,
}

/// A stored message as `STREAM.MSG.GET` answers it; its payload is skipped unread.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StoredMessage {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence.
    pub seq: u64,
    /// When the server stored it (RFC 3339, nanoseconds).
    pub time: String,
}

/// Reads a reply: JetStream's error if it sent one, else the body as `T`.
///
/// # Errors
/// The error JetStream answered, or what cannot be read.
pub fn parse_reply<T: DeserializeOwned>(request: &str, bytes: &[u8]) -> Result<T, ApiError> {
    // serde_json quotes a wrongly typed string whole: the message is cut to a bounded length.
    let bad = |e: serde_json::Error| ApiError::BadReply {
        request: request.to_string(),
        what: bounded(&e.to_string()),
    };
    let head: ErrorOnly = serde_json::from_slice(bytes).map_err(bad)?;
    if let Some(e) = head.error {
        return Err(ApiError::Server {
            request: request.to_string(),
            code: e.code,
            err_code: e.err_code,
            description: crate::primitives::quoted_prefix(&e.description),
        });
    }
    serde_json::from_slice(bytes).map_err(bad)
}

/// Longest error text kept from a reply.
const MAX_ERROR_CHARS: usize = 300;

/// `text`, cut to [`MAX_ERROR_CHARS`] characters.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time as the server writes them.
///
/// # Errors
/// What is wrong with it.
pub fn parse_time_ms(text: &str) -> Result<f64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("time {:?}: {e}", crate::primitives::quoted_prefix(text)))?;
    // i128 nanoseconds to ms: exact enough for ages (f64 holds µs at today's epoch).
    Ok(t.unix_timestamp_nanos() as f64 / 1_000_000.0)
}

/// The JetStream API of one connection: where requests go and how long and large their
/// replies may be.
#[derive(Clone)]
pub struct Api {
    client: Client,
    prefix: String,
    max_bytes: usize,
    timeout: Duration,
    /// When the poll's requests must be done: no request waits past it.
    deadline: tokio::time::Instant,
}

impl Api {
    /// The API at `prefix` (`$JS.API`) over `client`, replies at most `max_bytes`, each request
    /// answered within `timeout` and before `deadline`.
    pub fn new(
        client: Client,
        prefix: String,
        max_bytes: usize,
        timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Self {
        Api {
            client,
            prefix,
            max_bytes,
            timeout,
            deadline,
        }
    }

    async fn request(&self, api: &str, body: Bytes) -> Result<Bytes, ApiError> {
        let subject = format!("{}.{api}", self.prefix);
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let timeout = self.timeout.min(left);
        if timeout.is_zero() {
            return Err(ApiError::TimedOut {
                request: api.to_string(),
                after: Duration::ZERO,
            });
        }
        let request = async_nats::Request::new()
            .payload(body)
            .timeout(Some(timeout));
        match self.client.send_request(subject.clone(), request).await {
            Ok(reply) if reply.payload.len() > self.max_bytes => Err(ApiError::TooLarge {
                request: api.to_string(),
                size: reply.payload.len(),
                limit: self.max_bytes,
            }),
            Ok(reply) => Ok(reply.payload),
            Err(e) => Err(request_error(api, subject, timeout, &e)),
        }
    }

    /// `STREAM.INFO.<stream>`, with per-subject counts for `subjects_filter` if given.
    ///
    /// # Errors
    /// [`ApiError::StreamNotFound`], or why it could not be read.
    pub async fn stream_info(
        &self,
        stream: &str,
        subjects_filter: Option<&str>,
    ) -> Result<StreamInfo, ApiError> {
        let api = format!("STREAM.INFO.{stream}");
        let body = match subjects_filter {
            Some(f) => serde_json::json!({ "subjects_filter": f })
                .to_string()
                .into(),
            None => Bytes::new(),
        };
        let reply = self.request(&api, body).await?;
        parse_reply::<StreamInfo>(&api, &reply).map_err(|e| named(e, stream, None))
    }

    /// `CONSUMER.INFO.<stream>.<consumer>`.
    ///
    /// # Errors
    /// [`ApiError::StreamNotFound`], [`ApiError::ConsumerNotFound`], or why it could not be
    /// read.
    pub async fn consumer_info(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<ConsumerInfo, ApiError> {
        let api = format!("CONSUMER.INFO.{stream}.{consumer}");
        let reply = self.request(&api, Bytes::new()).await?;
        parse_reply::<ConsumerInfo>(&api, &reply).map_err(|e| named(e, stream, Some(consumer)))
    }

    /// Every consumer of `stream` with its info (`CONSUMER.LIST`, page after page), each once.
    ///
    /// # Errors
    /// [`ApiError::StreamNotFound`]; a listing that is not whole (a consumer whose info did not
    /// arrive, fewer consumers than the server counts, one listed twice as consumers came and
    /// went between pages): an error, as a sum over part of the consumers would be a made-up
    /// number; or why a page could not be read.
    pub async fn consumer_list(&self, stream: &str) -> Result<Vec<ConsumerInfo>, ApiError> {
        let api = format!("CONSUMER.LIST.{stream}");
        let partial = |what: String| ApiError::BadReply {
            request: api.clone(),
            what,
        };
        let mut all: Vec<ConsumerInfo> = Vec::new();
        loop {
            let body = serde_json::json!({ "offset": all.len() }).to_string();
            let reply = self.request(&api, body.into()).await?;
            let page =
                parse_reply::<ConsumerList>(&api, &reply).map_err(|e| named(e, stream, None))?;
            if !page.missing.is_empty() || page.offline.as_ref().is_some_and(|o| !o.is_null()) {
                let names: Vec<String> = page
                    .missing
                    .iter()
                    .take(5)
                    .map(|n| crate::primitives::quoted_prefix(n))
                    .collect();
                return Err(partial(format!(
                    "the listing is not whole: the info of consumers {} (and any offline) did not arrive",
                    names.join(", ")
                )));
            }
            let got = page.consumers.len();
            all.extend(page.consumers);
            if all.len() as u64 >= page.total {
                break;
            }
            if got == 0 {
                return Err(partial(format!(
                    "{} consumers listed of the {} the server counts",
                    all.len(),
                    page.total
                )));
            }
            if all.len() > MAX_LISTED {
                return Err(partial(format!("more than {MAX_LISTED} consumers")));
            }
        }
        let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(partial(
                "a consumer was listed twice (consumers came and went between pages); read again at the next poll".into(),
            ));
        }
        Ok(all)
    }

    /// The first message of `stream` at or after sequence `from` on `subject` (`>`: any),
    /// `STREAM.MSG.GET` with `next_by_subj`; `None` when there is none.
    ///
    /// # Errors
    /// Why it could not be read.
    pub async fn first_message_from(
        &self,
        stream: &str,
        from: u64,
        subject: &str,
    ) -> Result<Option<StoredMessage>, ApiError> {
        let api = format!("STREAM.MSG.GET.{stream}");
        let body = serde_json::json!({ "seq": from, "next_by_subj": subject }).to_string();
        let reply = self.request(&api, body.into()).await?;
        match parse_reply::<MessageReply>(&api, &reply) {
            // A server that ignores `next_by_subj` answers the message at `from`, whatever
            // its subject: that is not the oldest on `subject`.
            Ok(r) if r.message.seq < from || !subject_matches(subject, &r.message.subject) => {
                Err(ApiError::BadReply {
                    request: api,
                    what: format!(
                        "asked for the first message from {from} on {subject:?}, got message {} on {:?}: the server does not honour next_by_subj (nats-server 2.9 or later does)",
                        r.message.seq,
                        crate::primitives::quoted_prefix(&r.message.subject)
                    ),
                })
            }
            Ok(r) => Ok(Some(r.message)),
            Err(ApiError::Server { err_code, .. }) if err_code == NO_MESSAGE_FOUND => Ok(None),
            Err(e) => Err(named(e, stream, None)),
        }
    }
}

/// Whether `subject` matches the subject filter `filter` (`*` one token, `>` the rest).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut want = filter.split('.');
    let mut got = subject.split('.');
    loop {
        match (want.next(), got.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(w), Some(g)) if w == g => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A request error in the adapter's words.
fn request_error(api: &str, subject: String, after: Duration, e: &RequestError) -> ApiError {
    match e.kind() {
        RequestErrorKind::NoResponders => ApiError::NoResponders { subject },
        RequestErrorKind::TimedOut => ApiError::TimedOut {
            request: api.to_string(),
            after,
        },
        _ => ApiError::Io {
            request: api.to_string(),
            message: e.to_string(),
        },
    }
}

/// JetStream's "not found" errors as the stream or consumer they name.
fn named(e: ApiError, stream: &str, consumer: Option<&str>) -> ApiError {
    match (e, consumer) {
        (ApiError::Server { err_code, .. }, _) if err_code == STREAM_NOT_FOUND => {
            ApiError::StreamNotFound(stream.to_string())
        }
        (ApiError::Server { err_code, .. }, Some(c)) if err_code == CONSUMER_NOT_FOUND => {
            ApiError::ConsumerNotFound {
                stream: stream.to_string(),
                consumer: c.to_string(),
            }
        }
        (e, _) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_is_the_error_never_an_empty_body() {
        let body = br#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","error":{"code":404,"err_code":10014,"description":"consumer not found"}}"#;
        let e = parse_reply::<ConsumerInfo>("CONSUMER.INFO.s.c", body).unwrap_err();
        assert_eq!(
            named(e, "s", Some("c")),
            ApiError::ConsumerNotFound {
                stream: "s".into(),
                consumer: "c".into()
            }
        );
        let e = parse_reply::<StreamInfo>(
            "STREAM.INFO.s",
            br#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
        )
        .unwrap_err();
        assert_eq!(named(e, "s", None), ApiError::StreamNotFound("s".into()));
    }

    #[test]
    fn a_huge_wrongly_typed_field_gives_a_bounded_error() {
        let body = format!(r#"{{"name":"{}","created":7}}"#, "x".repeat(100_000));
        let e = parse_reply::<ConsumerInfo>("CONSUMER.INFO.s.c", body.as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 1_000, "{} bytes", e.to_string().len());
    }

    #[test]
    fn a_missing_count_is_an_error_naming_it() {
        let body = br#"{"name":"c","created":"2026-12-07T10:00:00Z","config":{},"delivered":{"consumer_seq":1,"stream_seq":1},"ack_floor":{"consumer_seq":1,"stream_seq":1},"num_ack_pending":0,"num_redelivered":0,"num_waiting":0}"#;
        let e = parse_reply::<ConsumerInfo>("CONSUMER.INFO.s.c", body).unwrap_err();
        assert!(e.to_string().contains("num_pending"), "{e}");
    }

    #[test]
    fn times_keep_their_nanoseconds_and_bad_ones_are_errors() {
        let ms = parse_time_ms("2026-12-07T10:00:00.123456789Z").expect("parses");
        assert!((ms - 1_796_637_600_123.456_8).abs() < 0.01, "{ms}");
        assert!(parse_time_ms("yesterday").is_err());
        assert!(parse_time_ms("0001-01-01T00:00:00Z").is_ok());
    }

    #[test]
    fn subject_filters_match_as_nats_does() {
        assert!(subject_matches(">", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
    }

    #[test]
    fn a_filter_list_merges_both_fields() {
        let c: ConsumerConfig =
            serde_json::from_str(r#"{"filter_subject":"a.b","filter_subjects":["a.c","a.b"]}"#)
                .expect("parses");
        assert_eq!(c.filters(), vec!["a.b".to_string(), "a.c".to_string()]);
        let none: ConsumerConfig =
            serde_json::from_str(r#"{"filter_subject":""}"#).expect("parses");
        assert!(none.filters().is_empty());
    }
}
