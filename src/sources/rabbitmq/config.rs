//! The `rabbitmq:` blocks of the configuration: the connection (under `sources`) and which queues
//! a metric reads (under `metrics`).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::primitives::{ConfigError, HumanDuration};
use crate::primitives::{percent_decode, redact_url};
use crate::sources::credentials::Credentials;
use crate::sources::field_group::{self, Grouped};
use crate::sources::measure::{JOB_LIBRARY_MEASURES, Measure, job_library_measure};

pub use crate::sources::rates::DEFAULT_MAX_DRAIN_SECONDS;
/// How often idle queues are declared again between polls (`read_via: amqp`).
pub const DEFAULT_IDLE_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// Most idle queues declared per idle check.
pub const DEFAULT_IDLE_MAX_QUEUES: usize = 50;

/// How a RabbitMQ source reads queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadVia {
    /// The management HTTP API: every measure, one paged call per vhost.
    Management,
    /// AMQP passive `queue.declare`: `ready` and `consumers` only, for brokers without the plugin.
    Amqp,
}

/// A RabbitMQ broker (`sources.<name>.rabbitmq`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RabbitMqSourceConfig {
    /// `http(s)://host:15672`, the management API.
    #[serde(default)]
    pub management_url: Option<String>,
    /// `amqp(s)://host:5672/vhost`, for `read_via: amqp`. The vhost it names (if any) is the
    /// default of this source's metrics ([`RabbitMqSourceConfig::url_vhost`]).
    #[serde(default)]
    pub amqp_url: Option<String>,
    /// Which of the two to read. Default: `management` when `management_url` is set, else `amqp`.
    #[serde(default)]
    pub read_via: Option<ReadVia>,
    /// `username`, `password_file`, `password_env`: the management API's basic auth, and
    /// AMQP's login when the URL has none.
    #[serde(skip)]
    pub credentials: Credentials,
    /// PEM CA for `https://` / `amqps://` with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Largest management API answer read (one page of the listing), in bytes. Default 32 MiB.
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// Drain time served when a backlog has no acknowledgements at all. Default 86400 (1 day).
    #[serde(default)]
    pub max_drain_seconds: Option<f64>,
    /// With `read_via: amqp`: how often the queues whose `ready` series is at 0 are declared
    /// again between polls, so a message into an idle queue wakes the poll (default 500ms;
    /// `0s` turns it off).
    #[serde(default)]
    pub idle_poll_interval: Option<HumanDuration>,
    /// Most idle queues declared per `idle_poll_interval` (default 50): the bound on the extra
    /// requests (50 every 500ms is at most 100 passive declares a second).
    #[serde(default)]
    pub idle_max_queues: Option<usize>,
    /// Overrides the global `poll_interval`.
    #[serde(default)]
    pub poll_interval: Option<HumanDuration>,
    /// Overrides the global `poll_timeout`.
    #[serde(default)]
    pub poll_timeout: Option<HumanDuration>,
}

impl<'de> Grouped<'de> for RabbitMqSourceConfig {
    type Group = Credentials;
    const NAME: &'static str = "RabbitMqSourceConfig";
    const FIELDS: &'static [&'static str] = &[
        "management_url",
        "amqp_url",
        "read_via",
        "username",
        "password_file",
        "password_env",
        "ca_file",
        "max_response_bytes",
        "max_drain_seconds",
        "idle_poll_interval",
        "idle_max_queues",
        "poll_interval",
        "poll_timeout",
    ];

    fn deserialize_own<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RabbitMqSourceConfig::deserialize(d)
    }

    fn set_group(&mut self, group: Credentials) {
        self.credentials = group;
    }
}

impl<'de> Deserialize<'de> for RabbitMqSourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        field_group::deserialize(d)
    }
}

impl std::fmt::Debug for RabbitMqSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqSourceConfig")
            .field(
                "management_url",
                &self.management_url.as_deref().map(redact_url),
            )
            .field("amqp_url", &self.amqp_url.as_deref().map(redact_url))
            .field("read_via", &self.read_via())
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl RabbitMqSourceConfig {
    /// How this source reads.
    pub fn read_via(&self) -> ReadVia {
        self.read_via.unwrap_or(if self.management_url.is_some() {
            ReadVia::Management
        } else {
            ReadVia::Amqp
        })
    }

    /// The idle re-check interval, `None` when off (management reads, or `0s`).
    pub fn idle_poll_interval(&self) -> Option<std::time::Duration> {
        if self.read_via() != ReadVia::Amqp {
            return None;
        }
        let d = self
            .idle_poll_interval
            .map_or(DEFAULT_IDLE_POLL_INTERVAL, |d| d.0);
        (!d.is_zero()).then_some(d)
    }

    /// The vhost `amqp_url` names, read as the AMQP URI specification says: no path names none
    /// (`amqp://h`), `amqp://h/` names the empty vhost, `amqp://h/%2f` names `/`, escapes
    /// decoded. Management URLs name no vhost.
    ///
    /// It is the default vhost of this source's metrics, under either API: a user who wrote
    /// `amqp://host/jobs` means `jobs`, and reading `/` instead would serve a same-named queue
    /// of another vhost without any error.
    ///
    /// # Errors
    /// A path of more than one segment (a `/` in a vhost is written `%2F`).
    pub fn url_vhost(&self) -> Result<Option<String>, String> {
        let Some(url) = &self.amqp_url else {
            return Ok(None);
        };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        // The user-info ends at the last `@`, as `redact_url` reads it: a password with an
        // unescaped `/` must not be taken for the vhost (and so printed in an error).
        let rest = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let Some((_, path)) = rest.split_once('/') else {
            return Ok(None);
        };
        if path.contains('/') {
            return Err(format!(
                "the vhost in amqp_url is one path segment, but {path:?} has several (write a / in a vhost name as %2F)"
            ));
        }
        Ok(Some(percent_decode(path)))
    }

    /// The drain time served for an unacknowledged backlog.
    pub fn max_drain_seconds(&self) -> f64 {
        self.max_drain_seconds.unwrap_or(DEFAULT_MAX_DRAIN_SECONDS)
    }

    pub(crate) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        match self.read_via() {
            ReadVia::Management => {
                let Some(url) = &self.management_url else {
                    return Err(ConfigError::invalid(
                        at,
                        "read_via: management needs management_url",
                    ));
                };
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        format!("{at}.management_url"),
                        format!("{:?} must start with http:// or https://", redact_url(url)),
                    ));
                }
            }
            ReadVia::Amqp => {
                if self.amqp_url.is_none() {
                    return Err(ConfigError::invalid(at, "needs management_url or amqp_url"));
                }
            }
        }
        if let Some(url) = &self.amqp_url {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(ConfigError::invalid(
                    format!("{at}.amqp_url"),
                    format!("{:?} must start with amqp:// or amqps://", redact_url(url)),
                ));
            }
            self.url_vhost()
                .map_err(|e| ConfigError::invalid(format!("{at}.amqp_url"), e))?;
        }
        if self.read_via() == ReadVia::Management
            && self.idle_poll_interval.is_some_and(|d| !d.0.is_zero())
        {
            return Err(ConfigError::invalid(
                format!("{at}.idle_poll_interval"),
                "applies to read_via: amqp only: the management API's counts refresh every collect_statistics_interval (5 s by default), so asking it more often wakes nothing sooner; read the activation metric through a second source with amqp_url",
            ));
        }
        if self.idle_max_queues == Some(0) {
            return Err(ConfigError::invalid(
                format!("{at}.idle_max_queues"),
                "must be greater than zero (set idle_poll_interval: 0s to turn idle checks off)",
            ));
        }
        if self.max_response_bytes == Some(0) {
            return Err(ConfigError::invalid(
                format!("{at}.max_response_bytes"),
                "must be greater than zero",
            ));
        }
        if let Some(d) = self.max_drain_seconds
            && !(d.is_finite() && d > 0.0)
        {
            return Err(ConfigError::invalid(
                format!("{at}.max_drain_seconds"),
                "must be a positive number",
            ));
        }
        Ok(())
    }

    pub(crate) fn resolve_secrets(&mut self, at: &str) -> Result<(), ConfigError> {
        self.credentials.resolve(at)
    }
}

/// Which queues a metric reads (`metrics[].rabbitmq`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqTarget {
    /// The virtual host. Default: the one the source's `amqp_url` names, else `/`
    /// ([`RabbitMqTarget::vhost_in`]).
    #[serde(default)]
    pub vhost: Option<String>,
    /// One queue by name.
    #[serde(default)]
    pub queue: Option<String>,
    /// A regular expression (Rust `regex` syntax) over queue names: one series per match.
    /// Management API only.
    #[serde(default)]
    pub queue_pattern: Option<String>,
    /// For `oldest_age_seconds`: how publishers write the AMQP `timestamp` property. Default
    /// `s` (POSIX seconds, as AMQP 0-9-1 defines it); `ms` for publishers that write
    /// milliseconds (JavaScript `Date.now()`, many Java clients).
    #[serde(default)]
    pub timestamp_unit: Option<HeadTimestampUnit>,
    /// A job library whose queue `queue` is: the measures are the library's
    /// (`length`, `in_flight`, ...), read from the queues it keeps ([`super::libraries`]).
    #[serde(default)]
    pub library: Option<RabbitLibrary>,
}

/// A job library on RabbitMQ whose queue layout the adapter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RabbitLibrary {
    /// Celery (Python) on kombu's AMQP transport, 5.7.
    Celery,
    /// dramatiq (Python) on its RabbitMQ broker, 2.2.
    Dramatiq,
}

impl RabbitLibrary {
    /// The library's name as the config and the `library` label spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            RabbitLibrary::Celery => "celery",
            RabbitLibrary::Dramatiq => "dramatiq",
        }
    }
}

/// The unit of the AMQP `timestamp` property that RabbitMQ reports as `head_message_timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeadTimestampUnit {
    /// Seconds since the epoch (the AMQP 0-9-1 definition).
    #[default]
    S,
    /// Milliseconds since the epoch.
    Ms,
}

/// Measures a RabbitMQ queue has, and which of them AMQP can serve.
pub const MANAGEMENT_MEASURES: &[Measure] = &[
    Measure::Ready,
    Measure::Unacked,
    Measure::Total,
    Measure::Consumers,
    Measure::PublishRate,
    Measure::DeliverRate,
    Measure::AckRate,
    Measure::OldestAgeSeconds,
    Measure::DrainSeconds,
    Measure::ArrivalRate,
    Measure::CompletionRate,
    Measure::WorkersNeeded,
];
/// What a passive `queue.declare` tells: ready messages and consumers.
pub const AMQP_MEASURES: &[Measure] = &[Measure::Ready, Measure::Consumers];

impl RabbitMqTarget {
    /// The vhost this metric reads through `conn`: its own, else the one `conn.amqp_url` names,
    /// else `/`.
    ///
    /// # Errors
    /// The metric names another vhost than `amqp_url` does (naming both), or `amqp_url`'s
    /// path is not a vhost.
    pub fn vhost_in(&self, conn: &RabbitMqSourceConfig) -> Result<String, String> {
        match (&self.vhost, conn.url_vhost()?) {
            (Some(own), Some(url)) if *own != url => Err(format!(
                "vhost {own:?} differs from the vhost {url:?} that the source's amqp_url names; name one vhost in both, or drop the path from amqp_url"
            )),
            (Some(own), _) => Ok(own.clone()),
            (None, Some(url)) => Ok(url),
            (None, None) => Ok("/".into()),
        }
    }

    pub(crate) fn validate(
        &self,
        at: &str,
        measure: Measure,
        conn: &RabbitMqSourceConfig,
    ) -> Result<(), ConfigError> {
        let via = conn.read_via();
        self.vhost_in(conn)
            .map_err(|e| ConfigError::invalid(format!("{at}.vhost"), e))?;
        if let Some(library) = self.library {
            return self.validate_library(at, library, measure, via);
        }
        match (&self.queue, &self.queue_pattern) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    at,
                    "give either queue or queue_pattern, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    at,
                    "needs queue (a name) or queue_pattern (a regex)",
                ));
            }
            (None, Some(p)) => {
                regex::Regex::new(p).map_err(|e| {
                    ConfigError::invalid(
                        format!("{at}.queue_pattern"),
                        format!("{p:?} is not a valid regex: {e}"),
                    )
                })?;
                if via == ReadVia::Amqp {
                    return Err(ConfigError::invalid(
                        format!("{at}.queue_pattern"),
                        "AMQP cannot list queues; use the management API (management_url) for patterns",
                    ));
                }
            }
            (Some(q), None) if q.is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{at}.queue"),
                    "must not be empty",
                ));
            }
            _ => {}
        }
        if measure == Measure::WorkersNeeded && self.queue.is_none() {
            return Err(ConfigError::invalid(
                format!("{at}.queue_pattern"),
                "workers_needed is about one queue and the workload that runs it: give queue",
            ));
        }
        if self.timestamp_unit.is_some() && measure != Measure::OldestAgeSeconds {
            return Err(ConfigError::invalid(
                format!("{at}.timestamp_unit"),
                format!("only applies to measure oldest_age_seconds, not {measure}"),
            ));
        }
        let allowed = match via {
            ReadVia::Management => MANAGEMENT_MEASURES,
            ReadVia::Amqp => AMQP_MEASURES,
        };
        if !allowed.contains(&measure) {
            let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            if JOB_LIBRARY_MEASURES.contains(&measure) && !MANAGEMENT_MEASURES.contains(&measure) {
                return Err(ConfigError::invalid(
                    at,
                    format!(
                        "measure {measure} is a job library's: add library (celery or dramatiq), or use one of {names:?}"
                    ),
                ));
            }
            let how = if via == ReadVia::Amqp {
                "over AMQP"
            } else {
                "from RabbitMQ"
            };
            return Err(ConfigError::invalid(
                at,
                format!("measure {measure} is not available {how}; the measures are {names:?}"),
            ));
        }
        Ok(())
    }
}

impl RabbitMqTarget {
    /// Checks a job library's queue: a named queue, the library's measures, each available
    /// through `via`.
    fn validate_library(
        &self,
        at: &str,
        library: RabbitLibrary,
        measure: Measure,
        via: ReadVia,
    ) -> Result<(), ConfigError> {
        let lib = library.as_str();
        let Some(queue) = self.queue.as_deref().filter(|q| !q.is_empty()) else {
            return Err(ConfigError::invalid(
                format!("{at}.queue"),
                format!("a {lib} metric names its queue (the library's queue name)"),
            ));
        };
        for (field, set) in [
            ("queue_pattern", self.queue_pattern.is_some()),
            ("timestamp_unit", self.timestamp_unit.is_some()),
        ] {
            if set {
                return Err(ConfigError::invalid(
                    format!("{at}.{field}"),
                    format!(
                        "does not apply with library: a {lib} queue is read as the library keeps it"
                    ),
                ));
            }
        }
        job_library_measure(measure, lib).map_err(|e| ConfigError::invalid(at, e))?;
        if let super::libraries::Layout::Queue { measure: read, .. } =
            super::libraries::layout(library, queue, measure)
            && via == ReadVia::Amqp
            && !AMQP_MEASURES.contains(&read)
        {
            return Err(ConfigError::invalid(
                at,
                format!(
                    "{lib} {measure} is read as the queue's {read}, which AMQP cannot tell; use the management API (management_url)"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(amqp_url: Option<&str>) -> RabbitMqSourceConfig {
        let yaml = match amqp_url {
            Some(u) => format!("{{amqp_url: {u:?}}}"),
            None => "{management_url: \"http://127.0.0.1:15672\"}".into(),
        };
        yaml_serde::from_str(&yaml).unwrap()
    }

    #[test]
    fn the_vhost_of_an_amqp_url_is_read_as_the_uri_specification_says() {
        let vhost = |u: &str| source(Some(u)).url_vhost();
        assert_eq!(vhost("amqp://h"), Ok(None));
        assert_eq!(vhost("amqp://h:5672"), Ok(None));
        assert_eq!(vhost("amqp://h?heartbeat=10"), Ok(None));
        assert_eq!(vhost("amqp://h/"), Ok(Some(String::new())));
        assert_eq!(vhost("amqp://h/%2f"), Ok(Some("/".into())));
        assert_eq!(vhost("amqps://u:p@h:5671/jobs"), Ok(Some("jobs".into())));
        assert_eq!(vhost("amqp://h/a%20b?heartbeat=5"), Ok(Some("a b".into())));
        assert_eq!(vhost("amqp://h/jobs#x"), Ok(Some("jobs".into())));
        // A password typed with an unescaped `/` is not a path, and never quoted in the error.
        assert_eq!(vhost("amqp://u:se/cret@h/jobs"), Ok(Some("jobs".into())));
        assert_eq!(vhost("amqp://u:se/cret@h"), Ok(None));
        let err = vhost("amqp://h/a/b").unwrap_err();
        assert!(err.contains("%2F"), "{err}");
        assert_eq!(source(None).url_vhost(), Ok(None));
    }

    #[test]
    fn a_metric_reads_its_own_vhost_else_the_urls_else_the_root() {
        let target = |vhost: Option<&str>| RabbitMqTarget {
            vhost: vhost.map(str::to_string),
            queue: Some("q".into()),
            queue_pattern: None,
            timestamp_unit: None,
            library: None,
        };
        let jobs = source(Some("amqp://h/jobs"));
        let bare = source(Some("amqp://h"));
        let management = source(None);
        assert_eq!(target(None).vhost_in(&jobs), Ok("jobs".into()));
        assert_eq!(target(Some("jobs")).vhost_in(&jobs), Ok("jobs".into()));
        assert_eq!(target(None).vhost_in(&bare), Ok("/".into()));
        assert_eq!(target(Some("x")).vhost_in(&bare), Ok("x".into()));
        assert_eq!(target(None).vhost_in(&management), Ok("/".into()));
        assert_eq!(target(Some("x")).vhost_in(&management), Ok("x".into()));
        assert_eq!(
            target(None).vhost_in(&source(Some("amqp://h/"))),
            Ok(String::new())
        );
        let err = target(Some("/")).vhost_in(&jobs).unwrap_err();
        assert!(err.contains("\"/\"") && err.contains("\"jobs\""), "{err}");
    }
}
