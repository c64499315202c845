//! The `nats:` blocks of the configuration: the connection (under `sources`) and which stream and
//! consumers a metric reads (under `metrics`).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::primitives::{ConfigError, HumanDuration, Secret};
use crate::sources::credentials::Credentials;
use crate::sources::field_group::{self, Grouped};
use crate::sources::measure::Measure;
use crate::wake::WakeConfig;

pub use crate::sources::rates::DEFAULT_MAX_DRAIN_SECONDS;

/// The JetStream API's subject prefix in the connecting account.
pub const DEFAULT_API_PREFIX: &str = "$JS.API";

/// Largest JetStream API reply read, in bytes (default): a NATS message is at most the
/// server's `max_payload` (1 MiB by default, 64 MiB at most), and a consumer list page of 256
/// consumers stays well below this.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// A NATS server or cluster with JetStream (`sources.<name>.nats`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// `nats://host:4222` or `tls://host:4222`, several for a cluster (the client picks one,
    /// then the others and the ones the servers announce). No user or password in them: those come from files.
    #[serde(default)]
    pub servers: Vec<String>,
    /// `username`, `password_file`, `password_env`: user/password authentication.
    #[serde(skip)]
    pub credentials: Credentials,
    /// File holding a token (token authentication).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding a token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding an NKey seed (`SU...`): NKey authentication.
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and NKey seed), for servers in operator mode.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// PEM CA the server's certificate is checked against; TLS is then required.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// JetStream domain (a leaf node's or hub's): the API is `$JS.<domain>.API`.
    #[serde(default)]
    pub domain: Option<String>,
    /// The JetStream API's subject prefix where another account exports it (`JS.orders.API`).
    /// Default `$JS.API`.
    #[serde(default)]
    pub api_prefix: Option<String>,
    /// Largest API reply read, in bytes (default 8 MiB).
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// Drain time served when a backlog is not moving at all. Default 86400 (1 day).
    #[serde(default)]
    pub max_drain_seconds: Option<f64>,
    /// Waking a metric at zero when a message is published to its stream's subjects (a core
    /// NATS subscription while it is at zero, which changes no delivery).
    #[serde(default)]
    pub wake: WakeConfig,
    /// Overrides the global `poll_interval`.
    #[serde(default)]
    pub poll_interval: Option<HumanDuration>,
    /// Overrides the global `poll_timeout`.
    #[serde(default)]
    pub poll_timeout: Option<HumanDuration>,
    /// The token, read at load from `token_file` or `token_env`.
    #[serde(skip)]
    pub token: Option<Secret>,
    /// The NKey seed, read at load from `nkey_seed_file`.
    #[serde(skip)]
    pub nkey_seed: Option<Secret>,
    /// The `.creds` file's content, read at load from `creds_file`.
    #[serde(skip)]
    pub creds: Option<Secret>,
}

impl<'de> Grouped<'de> for NatsSourceConfig {
    type Group = Credentials;
    const NAME: &'static str = "NatsSourceConfig";
    const FIELDS: &'static [&'static str] = &[
        "servers",
        "username",
        "password_file",
        "password_env",
        "token_file",
        "token_env",
        "nkey_seed_file",
        "creds_file",
        "ca_file",
        "cert_file",
        "key_file",
        "domain",
        "api_prefix",
        "max_response_bytes",
        "max_drain_seconds",
        "wake",
        "poll_interval",
        "poll_timeout",
    ];

    fn deserialize_own<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        NatsSourceConfig::deserialize(d)
    }

    fn set_group(&mut self, group: Credentials) {
        self.credentials = group;
    }
}

impl<'de> Deserialize<'de> for NatsSourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        field_group::deserialize(d)
    }
}

impl std::fmt::Debug for NatsSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSourceConfig")
            .field("servers", &self.servers)
            .field("credentials", &self.credentials)
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .field("token", &self.token)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("api_prefix", &self.api_prefix())
            .finish()
    }
}

impl NatsSourceConfig {
    /// The JetStream API prefix requests go to: `api_prefix`, else `$JS.<domain>.API`, else
    /// `$JS.API`.
    pub fn api_prefix(&self) -> String {
        match (&self.api_prefix, &self.domain) {
            (Some(p), _) => p.trim_end_matches('.').to_string(),
            (None, Some(d)) => format!("$JS.{d}.API"),
            (None, None) => DEFAULT_API_PREFIX.to_string(),
        }
    }

    /// The drain time served for a backlog that does not move.
    pub fn max_drain_seconds(&self) -> f64 {
        self.max_drain_seconds.unwrap_or(DEFAULT_MAX_DRAIN_SECONDS)
    }

    /// Largest API reply read.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes.unwrap_or(DEFAULT_MAX_REPLY_BYTES)
    }

    /// Whether TLS is required: a `tls://` server, a CA or a client certificate.
    pub fn tls_required(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.servers.iter().any(|s| s.starts_with("tls://"))
    }

    pub(crate) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.servers"),
                "needs at least one server (nats://host:4222 or tls://host:4222)",
            ));
        }
        for (i, url) in self.servers.iter().enumerate() {
            let field = format!("{at}.servers[{i}]");
            let Some((scheme, rest)) = url.split_once("://") else {
                return Err(ConfigError::invalid(
                    field,
                    "must start with nats:// or tls://",
                ));
            };
            if !matches!(scheme, "nats" | "tls") {
                return Err(ConfigError::invalid(
                    field,
                    format!("scheme {scheme:?}: must be nats:// or tls://"),
                ));
            }
            if rest.contains('@') {
                // Never echoed: it may hold a password.
                return Err(ConfigError::invalid(
                    field,
                    "holds a user or token; give username with password_file or password_env, token_file or token_env, nkey_seed_file or creds_file instead",
                ));
            }
            if rest.is_empty() || rest.contains(['/', ' ', '?']) {
                return Err(ConfigError::invalid(
                    field,
                    format!("{url:?} is not host:port"),
                ));
            }
        }
        let password =
            self.credentials.password_file.is_some() || self.credentials.password_env.is_some();
        if password && self.credentials.username.is_none() {
            return Err(ConfigError::invalid(at, "a password needs a username"));
        }
        if self.credentials.username.is_some() && !password {
            return Err(ConfigError::invalid(
                at,
                "username needs password_file or password_env",
            ));
        }
        if self.token_file.is_some() && self.token_env.is_some() {
            return Err(ConfigError::invalid(
                at,
                "give either token_file or token_env, not both",
            ));
        }
        let methods = [
            ("username", self.credentials.username.is_some()),
            (
                "token",
                self.token_file.is_some() || self.token_env.is_some(),
            ),
            ("nkey_seed_file", self.nkey_seed_file.is_some()),
            ("creds_file", self.creds_file.is_some()),
        ];
        let chosen: Vec<&str> = methods
            .iter()
            .filter_map(|(name, set)| set.then_some(*name))
            .collect();
        if chosen.len() > 1 {
            return Err(ConfigError::invalid(
                at,
                format!(
                    "one way to authenticate, not several: {}",
                    chosen.join(" and ")
                ),
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::invalid(
                at,
                "cert_file and key_file go together (the client certificate and its key)",
            ));
        }
        if self.domain.is_some() && self.api_prefix.is_some() {
            return Err(ConfigError::invalid(
                at,
                "give either domain or api_prefix, not both (a domain is the prefix $JS.<domain>.API)",
            ));
        }
        let bad_token = |t: &str| {
            t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        };
        if let Some(d) = &self.domain
            && (bad_token(d) || d.contains('.'))
        {
            return Err(ConfigError::invalid(
                format!("{at}.domain"),
                format!(
                    "{d:?} is not a JetStream domain (one subject token: no dots, spaces or wildcards)"
                ),
            ));
        }
        if let Some(p) = &self.api_prefix
            && p.trim_end_matches('.').split('.').any(bad_token)
        {
            return Err(ConfigError::invalid(
                format!("{at}.api_prefix"),
                format!(
                    "{p:?} is not a subject prefix (dot-separated tokens, no spaces or wildcards)"
                ),
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
        self.wake.validate(&format!("{at}.wake"))
    }

    pub(crate) fn resolve_secrets(&mut self, at: &str) -> Result<(), ConfigError> {
        self.credentials.resolve(at)?;
        self.token = match (&self.token_file, &self.token_env) {
            (Some(path), None) => Some(read_secret_file(path, &format!("{at}.token_file"))?),
            (None, Some(var)) => Some(Secret::new(std::env::var(var).map_err(|_| {
                ConfigError::invalid(
                    format!("{at}.token_env"),
                    format!("environment variable {var} is not set"),
                )
            })?)),
            _ => None,
        };
        // Kept in the config, so that a rotated file (the config watch re-reads it) is a
        // changed source, which is built and connects anew with it.
        self.nkey_seed = match &self.nkey_seed_file {
            Some(path) => Some(read_secret_file(path, &format!("{at}.nkey_seed_file"))?),
            None => None,
        };
        self.creds = match &self.creds_file {
            Some(path) => Some(read_secret_file(path, &format!("{at}.creds_file"))?),
            None => None,
        };
        Ok(())
    }

    /// The files this connection reads secrets from, which the config watch re-reads.
    pub fn secret_files(&self) -> Vec<PathBuf> {
        self.credentials
            .password_file
            .iter()
            .chain(&self.token_file)
            .chain(&self.nkey_seed_file)
            .chain(&self.creds_file)
            .cloned()
            .collect()
    }
}

/// Reads a secret file (trailing newlines dropped); the error names the field and the file,
/// never the content.
///
/// # Errors
/// When the file cannot be read.
pub fn read_secret_file(path: &std::path::Path, field: &str) -> Result<Secret, ConfigError> {
    std::fs::read_to_string(path)
        .map(|t| Secret::new(t.trim_end_matches(['\n', '\r']).to_string()))
        .map_err(|e| ConfigError::invalid(field, format!("cannot read {}: {e}", path.display())))
}

/// Which stream, and which of its consumers, a metric reads (`metrics[].nats`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTarget {
    /// The stream.
    pub stream: String,
    /// A durable consumer of it.
    #[serde(default)]
    pub consumer: Option<String>,
    /// A regular expression over its consumers' names: one series each.
    #[serde(default)]
    pub consumer_pattern: Option<String>,
}

/// The measures a NATS metric can have.
pub const NATS_MEASURES: &[Measure] = &[
    Measure::Lag,
    Measure::AckPending,
    Measure::Redelivered,
    Measure::WaitingPulls,
    Measure::OldestUnprocessedAgeSeconds,
    Measure::Length,
    Measure::ArrivalRate,
    Measure::CompletionRate,
    Measure::DrainSeconds,
    Measure::WorkersNeeded,
];

/// The measures that need no consumer: a whole stream's messages and arrivals.
pub const STREAM_MEASURES: &[Measure] = &[Measure::Length, Measure::ArrivalRate];

impl NatsTarget {
    /// The consumer this block names, if one (not a pattern).
    pub fn one_consumer(&self) -> Option<&str> {
        self.consumer.as_deref()
    }

    pub(crate) fn validate(&self, at: &str, measure: Measure) -> Result<(), ConfigError> {
        if !NATS_MEASURES.contains(&measure) {
            let fits: Vec<&str> = NATS_MEASURES.iter().map(|m| m.as_str()).collect();
            return Err(ConfigError::invalid(
                at,
                format!(
                    "measure {measure} is not read from NATS; use one of {}",
                    fits.join(", ")
                ),
            ));
        }
        if !valid_name(&self.stream) {
            return Err(ConfigError::invalid(
                format!("{at}.stream"),
                format!(
                    "{:?} is not a stream name (no spaces, dots, *, > or /)",
                    self.stream
                ),
            ));
        }
        if let Some(c) = &self.consumer
            && !valid_name(c)
        {
            return Err(ConfigError::invalid(
                format!("{at}.consumer"),
                format!("{c:?} is not a consumer name (no spaces, dots, *, > or /)"),
            ));
        }
        match (&self.consumer, &self.consumer_pattern) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    at,
                    "give either consumer or consumer_pattern, not both",
                ));
            }
            (None, Some(p)) => {
                if let Err(e) = regex::Regex::new(p) {
                    return Err(ConfigError::invalid(
                        format!("{at}.consumer_pattern"),
                        format!("not a regular expression: {e}"),
                    ));
                }
                if measure == Measure::WorkersNeeded {
                    return Err(ConfigError::invalid(
                        format!("{at}.consumer_pattern"),
                        "workers_needed reads one consumer (its workload runs that consumer's jobs): name it with consumer",
                    ));
                }
            }
            (None, None) if !STREAM_MEASURES.contains(&measure) => {
                return Err(ConfigError::invalid(
                    at,
                    format!(
                        "measure {measure} is a consumer's: name it with consumer (or consumer_pattern); only length and arrival_rate are read for a whole stream"
                    ),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether `name` can be a stream or consumer name: the server refuses names with whitespace,
/// `.`, `*`, `>` (they are subject tokens) and path separators.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(yaml: &str) -> NatsSourceConfig {
        yaml_serde::from_str(yaml).expect("parses")
    }

    #[test]
    fn a_password_in_a_server_url_is_refused_without_being_echoed() {
        let c = source("servers: ['nats://u:hunter2@127.0.0.1:4222']");
        let e = c.validate("sources.js.nats").unwrap_err().to_string();
        assert!(e.contains("servers[0]"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn one_way_to_authenticate_and_the_api_prefix() {
        let c = source(
            "servers: [nats://127.0.0.1:4222]\nusername: a\npassword_env: P\nnkey_seed_file: /x",
        );
        let e = c.validate("s").unwrap_err().to_string();
        assert!(e.contains("username and nkey_seed_file"), "{e}");
        assert_eq!(source("servers: [nats://h:1]").api_prefix(), "$JS.API");
        assert_eq!(
            source("servers: [nats://h:1]\ndomain: hub").api_prefix(),
            "$JS.hub.API"
        );
        assert_eq!(
            source("servers: [nats://h:1]\napi_prefix: JS.A.API.").api_prefix(),
            "JS.A.API"
        );
        let both = source("servers: [nats://h:1]\ndomain: hub\napi_prefix: JS.A.API");
        assert!(both.validate("s").is_err());
        for bad in [
            "domain: hub.",
            "domain: 'a b'",
            "api_prefix: JS..API.",
            "api_prefix: 'JS.*'",
        ] {
            let c = source(&format!("servers: [nats://h:1]\n{bad}"));
            assert!(c.validate("s").is_err(), "{bad}");
        }
        let unknown = yaml_serde::from_str::<NatsSourceConfig>("servers: []\npasword_env: X");
        let e = unknown.unwrap_err().to_string();
        assert!(e.contains("unknown field `pasword_env`"), "{e}");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let mut c = source("servers: [nats://h:1]\ntoken_env: QMA_TEST_NATS_TOKEN_DEBUG");
        // SAFETY: a variable only this test reads.
        unsafe { std::env::set_var("QMA_TEST_NATS_TOKEN_DEBUG", "s3cret-token") };
        c.resolve_secrets("s").expect("resolves");
        assert!(!format!("{c:?}").contains("s3cret-token"));
    }

    #[test]
    fn measures_need_a_consumer_except_the_stream_ones() {
        let t = |y: &str| yaml_serde::from_str::<NatsTarget>(y).expect("parses");
        assert!(t("stream: jobs").validate("m", Measure::Lag).is_err());
        assert!(t("stream: jobs").validate("m", Measure::Length).is_ok());
        assert!(
            t("stream: jobs\nconsumer: w")
                .validate("m", Measure::Lag)
                .is_ok()
        );
        assert!(
            t("stream: jobs\nconsumer: w")
                .validate("m", Measure::Ready)
                .is_err()
        );
        assert!(
            t("stream: a.b\nconsumer: w")
                .validate("m", Measure::Lag)
                .is_err()
        );
        assert!(
            t("stream: jobs\nconsumer_pattern: '^w'")
                .validate("m", Measure::WorkersNeeded)
                .is_err()
        );
        assert!(
            t("stream: jobs\nconsumer_pattern: '('")
                .validate("m", Measure::Lag)
                .is_err()
        );
    }
}
