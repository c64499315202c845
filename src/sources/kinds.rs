//! The one file that dispatches over every source kind: the config's [`SourceConfig`]
//! (`jobs: {redis: {...}}`), the checks and constructor each kind's config leads to, and the
//! [`RunningSource`] the poller drives. The metric blocks (`metrics[].redis`) are
//! [`super::metric::MetricTargets`], beside the metric that holds them, which imports only the
//! kinds' config types: a kind's reading code takes a metric without an import circle.
//!
//! Every `match` here lists the kinds, so a new kind is a compile error in each place until its
//! arm is written (KEDA's one `switch` in `buildScaler`, with exhaustiveness on top). A kind's
//! own module holds ordinary functions (`validate_metric`, `build`) and types; nothing is
//! generated and nothing is downcast.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};

use super::build::{Blocks, BuildContext, Globals, SourceSpec};
use super::dcgm::{self, Dcgm, DcgmSource, config::DcgmSourceConfig, config::DcgmTarget};
use super::inference::{
    self, Inference, InferenceSource, config::InferenceSourceConfig, config::InferenceTarget,
};
use super::kubernetes::replicas::ReplicaReader;
use super::kubernetes::workloads::NAMESPACE_LABEL;
use super::metric::{KINDS, MetricConfig};
use super::nats::{self, Nats, NatsSource, config::NatsSourceConfig, config::NatsTarget};
use super::postgres::{
    self, Postgres, PostgresSource, config::PostgresSourceConfig, config::PostgresTarget,
};
use super::rabbitmq::{
    self, RabbitMq, RabbitMqSource, config::RabbitMqSourceConfig, config::RabbitMqTarget,
};
use super::redis::{self, Redis, RedisSource, config::RedisMetric, config::RedisSourceConfig};
use super::source::{Source, SourceError};
use crate::model::Sample;
use crate::primitives::{ConfigError, HumanDuration};
use crate::wake::WakeSignal;

/// One connection; the key names its kind (`jobs: {redis: {...}}`).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// A `redis` source.
    Redis(RedisSourceConfig),
    /// A `rabbitmq` source.
    RabbitMq(RabbitMqSourceConfig),
    /// A `dcgm` source.
    Dcgm(DcgmSourceConfig),
    /// An `inference` source.
    Inference(InferenceSourceConfig),
    /// A `nats` (JetStream) source.
    Nats(NatsSourceConfig),
    /// A `postgres` source (job libraries' tables).
    Postgres(PostgresSourceConfig),
}

impl SourceConfig {
    /// The kind's name, as config and telemetry spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Redis(_) => "redis",
            SourceConfig::RabbitMq(_) => "rabbitmq",
            SourceConfig::Dcgm(_) => "dcgm",
            SourceConfig::Inference(_) => "inference",
            SourceConfig::Nats(_) => "nats",
            SourceConfig::Postgres(_) => "postgres",
        }
    }

    fn own_poll_interval(&self) -> Option<HumanDuration> {
        match self {
            SourceConfig::Redis(c) => c.poll_interval,
            SourceConfig::RabbitMq(c) => c.poll_interval,
            SourceConfig::Dcgm(c) => c.poll_interval,
            SourceConfig::Inference(c) => c.poll_interval,
            SourceConfig::Nats(c) => c.poll_interval,
            SourceConfig::Postgres(c) => c.poll_interval,
        }
    }

    fn own_poll_timeout(&self) -> Option<HumanDuration> {
        match self {
            SourceConfig::Redis(c) => c.poll_timeout,
            SourceConfig::RabbitMq(c) => c.poll_timeout,
            SourceConfig::Dcgm(c) => c.poll_timeout,
            SourceConfig::Inference(c) => c.poll_timeout,
            SourceConfig::Nats(c) => c.poll_timeout,
            SourceConfig::Postgres(c) => c.poll_timeout,
        }
    }

    /// This source's poll interval, or the global one.
    pub fn poll_interval(&self, global: Duration) -> Duration {
        self.own_poll_interval().map_or(global, |d| d.0)
    }

    /// This source's poll timeout, or the global one.
    pub fn poll_timeout(&self, global: Duration) -> Duration {
        self.own_poll_timeout().map_or(global, |d| d.0)
    }

    /// Checks the connection block of source `name`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self, name: &str, global_timeout: Duration) -> Result<(), ConfigError> {
        let at = format!("sources.{name}.{}", self.kind());
        let timeout = self.poll_timeout(global_timeout);
        match self {
            SourceConfig::Redis(c) => c.validate(&at, timeout),
            SourceConfig::RabbitMq(c) => c.validate(&at),
            SourceConfig::Dcgm(c) => c.validate(&at, timeout),
            SourceConfig::Inference(c) => c.validate(&at, timeout),
            SourceConfig::Nats(c) => c.validate(&at),
            SourceConfig::Postgres(c) => c.validate(&at, timeout),
        }
    }

    /// Checks metric `m` (`at` names it) of this source: it has no other kind's block, its own
    /// is there if the kind needs one, and the kind's own checks pass.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate_metric(&self, m: &MetricConfig, at: &str) -> Result<(), ConfigError> {
        let kind = self.kind();
        let required = |present: bool| {
            if present {
                return Ok(());
            }
            Err(ConfigError::invalid(
                format!("{at}.{kind}"),
                format!(
                    "source {:?} is a {kind} source, so the metric needs a `{kind}:` block",
                    m.source
                ),
            ))
        };
        let t = &m.targets;
        match self {
            SourceConfig::Redis(c) => {
                required(t.redis.is_some())?;
                redis::validate_metric(c, m, t.redis.as_ref(), at)?;
            }
            SourceConfig::RabbitMq(c) => {
                required(t.rabbitmq.is_some())?;
                rabbitmq::validate_metric(c, m, t.rabbitmq.as_ref(), at)?;
            }
            SourceConfig::Dcgm(c) => dcgm::validate_metric(c, m, t.dcgm.as_ref(), at)?,
            SourceConfig::Inference(c) => {
                inference::validate_metric(c, m, t.inference.as_ref(), at)?;
            }
            SourceConfig::Nats(c) => {
                required(t.nats.is_some())?;
                nats::validate_metric(c, m, t.nats.as_ref(), at)?;
            }
            SourceConfig::Postgres(c) => {
                required(t.postgres.is_some())?;
                postgres::validate_metric(c, m, t.postgres.as_ref(), at)?;
            }
        }
        m.validate_window(at, m.over_window())?;
        m.validate_workers(at)?;
        if let Some(block) = t.present().into_iter().find(|k| *k != kind) {
            return Err(ConfigError::invalid(
                format!("{at}.{block}"),
                format!(
                    "source {:?} is a {kind} source; remove the `{block}:` block",
                    m.source
                ),
            ));
        }
        Ok(())
    }

    /// Reads the secrets the connection of source `name` names.
    ///
    /// # Errors
    /// When one cannot be read.
    pub fn resolve_secrets(&mut self, name: &str) -> Result<(), ConfigError> {
        let at = format!("sources.{name}.{}", self.kind());
        match self {
            SourceConfig::Redis(c) => c.resolve_secrets(&at),
            SourceConfig::RabbitMq(c) => c.resolve_secrets(&at),
            SourceConfig::Nats(c) => c.resolve_secrets(&at),
            SourceConfig::Postgres(c) => c.resolve_secrets(&at),
            SourceConfig::Dcgm(_) | SourceConfig::Inference(_) => Ok(()),
        }
    }

    /// The password files this connection reads, which the config watch re-reads.
    pub fn password_files(&self) -> Vec<PathBuf> {
        match self {
            SourceConfig::Redis(c) => c.password_files(),
            SourceConfig::RabbitMq(c) => c.credentials.password_file.iter().cloned().collect(),
            SourceConfig::Nats(c) => c.secret_files(),
            SourceConfig::Postgres(c) => c.secret_files(),
            SourceConfig::Dcgm(_) | SourceConfig::Inference(_) => Vec::new(),
        }
    }

    /// The label holding each series' own namespace, for kinds whose series belong to one
    /// (GPU workloads); `None`: the request's namespace is the metric's.
    pub fn namespace_label(&self) -> Option<&'static str> {
        match self {
            SourceConfig::Redis(_)
            | SourceConfig::RabbitMq(_)
            | SourceConfig::Nats(_)
            | SourceConfig::Postgres(_) => None,
            SourceConfig::Dcgm(_) | SourceConfig::Inference(_) => Some(NAMESPACE_LABEL),
        }
    }

    /// Whether metric `m` of this source having no series is itself an observed empty backlog
    /// (a Redis list pattern: Redis deletes the keys as they empty). A job library's `*` that
    /// finds no queue is not: the wrong db or prefix looks the same.
    pub fn empty_means_zero(&self, m: &MetricConfig) -> bool {
        match self {
            SourceConfig::Redis(_) => m
                .targets
                .redis
                .as_ref()
                .and_then(|t| t.keys())
                .is_some_and(|t| t.pattern.is_some() && t.key_type.deleted_when_empty()),
            // A table read with no unfinished row in any queue: nothing waits.
            SourceConfig::Postgres(_) => true,
            SourceConfig::RabbitMq(_)
            | SourceConfig::Dcgm(_)
            | SourceConfig::Inference(_)
            | SourceConfig::Nats(_) => false,
        }
    }

    /// Whether building this source needs the Kubernetes API (to map pods to workloads).
    pub fn needs_kubernetes(&self) -> bool {
        match self {
            SourceConfig::Redis(_)
            | SourceConfig::RabbitMq(_)
            | SourceConfig::Nats(_)
            | SourceConfig::Postgres(_) => false,
            SourceConfig::Dcgm(_) | SourceConfig::Inference(_) => true,
        }
    }

    /// Builds this source, named `name`, with its metrics out of `metrics` and the top-level
    /// settings `globals`, ready to poll.
    ///
    /// # Errors
    /// When its settings cannot be used; the message names the source.
    pub async fn build(
        &self,
        name: &str,
        metrics: &[MetricConfig],
        globals: Globals,
        context: &mut BuildContext,
    ) -> anyhow::Result<RunningSource> {
        let timeout = self.poll_timeout(globals.poll_timeout);
        let built: anyhow::Result<RunningSource> = match self {
            SourceConfig::Redis(c) => {
                let spec =
                    SourceSpec::<Redis>::new(name, c, timeout, metrics, Redis::target_of, globals);
                let replicas = replica_reader(name, metrics, timeout, context).await?;
                RedisSource::new(&spec, replicas)
                    .map(|s| RunningSource::Redis(Box::new(s)))
                    .map_err(Into::into)
            }
            SourceConfig::RabbitMq(c) => {
                let spec = SourceSpec::<RabbitMq>::new(
                    name,
                    c,
                    timeout,
                    metrics,
                    RabbitMq::target_of,
                    globals,
                );
                let replicas = replica_reader(name, metrics, timeout, context).await?;
                RabbitMqSource::new(&spec, replicas)
                    .map(|s| RunningSource::RabbitMq(Box::new(s)))
                    .map_err(Into::into)
            }
            SourceConfig::Dcgm(c) => {
                let spec =
                    SourceSpec::<Dcgm>::new(name, c, timeout, metrics, Dcgm::target_of, globals);
                dcgm::build(spec, context)
                    .await
                    .map(|s| RunningSource::Dcgm(Box::new(s)))
            }
            SourceConfig::Inference(c) => {
                let spec = SourceSpec::<Inference>::new(
                    name,
                    c,
                    timeout,
                    metrics,
                    Inference::target_of,
                    globals,
                );
                inference::build(spec, context)
                    .await
                    .map(|s| RunningSource::Inference(Box::new(s)))
            }
            SourceConfig::Nats(c) => {
                let spec =
                    SourceSpec::<Nats>::new(name, c, timeout, metrics, Nats::target_of, globals);
                let replicas = replica_reader(name, metrics, timeout, context).await?;
                NatsSource::new(&spec, replicas)
                    .map(|s| RunningSource::Nats(Box::new(s)))
                    .map_err(Into::into)
            }
            SourceConfig::Postgres(c) => {
                let spec = SourceSpec::<Postgres>::new(
                    name,
                    c,
                    timeout,
                    metrics,
                    Postgres::target_of,
                    globals,
                );
                PostgresSource::new(&spec)
                    .map(|s| RunningSource::Postgres(Box::new(s)))
                    .map_err(Into::into)
            }
        };
        built.with_context(|| format!("source {name}"))
    }
}

/// The reader of the workloads' replicas for source `name`, where one of its metrics is
/// `workers_needed` (which names its workload): each read gets a quarter of the poll's
/// `timeout`, so the queue's own reads keep the rest.
///
/// # Errors
/// When no Kubernetes configuration is found.
async fn replica_reader(
    name: &str,
    metrics: &[MetricConfig],
    timeout: Duration,
    context: &mut BuildContext,
) -> anyhow::Result<Option<ReplicaReader>> {
    if !metrics
        .iter()
        .any(|m| m.source == name && m.workers.is_some())
    {
        return Ok(None);
    }
    Ok(Some(ReplicaReader::new(
        context.kube_client().await?,
        timeout / 4,
    )))
}

/// The spec of source `name` as kind `K` (its connection, its metrics out of `metrics` with
/// their `K` blocks, its settings); `None` if it is of another kind. For tests and benchmarks
/// that build one kind's source themselves.
pub fn spec_of<'a, K: Kind>(
    name: &'a str,
    source: &'a SourceConfig,
    metrics: &'a [MetricConfig],
    globals: Globals,
) -> Option<SourceSpec<'a, K>> {
    let connection = K::connection(source)?;
    let timeout = source.poll_timeout(globals.poll_timeout);
    Some(SourceSpec::new(
        name,
        connection,
        timeout,
        metrics,
        K::target_of,
        globals,
    ))
}

/// A kind's two config blocks picked out of [`SourceConfig`] and [`super::MetricTargets`], so that
/// [`spec_of`] can be asked for one kind (`spec_of::<Redis>`).
pub trait Kind: Blocks {
    /// The connection of `source`, if it is of this kind.
    fn connection(source: &SourceConfig) -> Option<&Self::Connection>;
    /// The block of this kind of metric `m`, if set.
    fn target_of(m: &MetricConfig) -> Option<&Self::Target>;
}

impl Kind for Redis {
    fn connection(source: &SourceConfig) -> Option<&RedisSourceConfig> {
        match source {
            SourceConfig::Redis(c) => Some(c),
            _ => None,
        }
    }
    fn target_of(m: &MetricConfig) -> Option<&RedisMetric> {
        m.targets.redis.as_ref()
    }
}

impl Kind for RabbitMq {
    fn connection(source: &SourceConfig) -> Option<&RabbitMqSourceConfig> {
        match source {
            SourceConfig::RabbitMq(c) => Some(c),
            _ => None,
        }
    }
    fn target_of(m: &MetricConfig) -> Option<&RabbitMqTarget> {
        m.targets.rabbitmq.as_ref()
    }
}

impl Kind for Dcgm {
    fn connection(source: &SourceConfig) -> Option<&DcgmSourceConfig> {
        match source {
            SourceConfig::Dcgm(c) => Some(c),
            _ => None,
        }
    }
    fn target_of(m: &MetricConfig) -> Option<&DcgmTarget> {
        m.targets.dcgm.as_ref()
    }
}

impl Kind for Inference {
    fn connection(source: &SourceConfig) -> Option<&InferenceSourceConfig> {
        match source {
            SourceConfig::Inference(c) => Some(c),
            _ => None,
        }
    }
    fn target_of(m: &MetricConfig) -> Option<&InferenceTarget> {
        m.targets.inference.as_ref()
    }
}

impl Kind for Nats {
    fn connection(source: &SourceConfig) -> Option<&NatsSourceConfig> {
        match source {
            SourceConfig::Nats(c) => Some(c),
            _ => None,
        }
    }
    fn target_of(m: &MetricConfig) -> Option<&NatsTarget> {
        m.targets.nats.as_ref()
    }
}

impl Kind for Postgres {
    fn connection(source: &SourceConfig) -> Option<&PostgresSourceConfig> {
        match source {
            SourceConfig::Postgres(c) => Some(c),
            _ => None,
        }
    }
    fn target_of(m: &MetricConfig) -> Option<&PostgresTarget> {
        m.targets.postgres.as_ref()
    }
}

/// A built source of any kind, as the poller and `check` drive it. Each is boxed: they range
/// from a few hundred bytes to a few kilobytes, and the poll future holds the enum.
pub enum RunningSource {
    /// A Redis source.
    Redis(Box<RedisSource>),
    /// A RabbitMQ source.
    RabbitMq(Box<RabbitMqSource>),
    /// A dcgm-exporter source.
    Dcgm(Box<DcgmSource>),
    /// A model-server source.
    Inference(Box<InferenceSource>),
    /// A NATS JetStream source.
    Nats(Box<NatsSource>),
    /// A PostgreSQL source.
    Postgres(Box<PostgresSource>),
}

impl Source for RunningSource {
    fn name(&self) -> &str {
        match self {
            RunningSource::Redis(s) => s.name(),
            RunningSource::RabbitMq(s) => s.name(),
            RunningSource::Dcgm(s) => s.name(),
            RunningSource::Inference(s) => s.name(),
            RunningSource::Nats(s) => s.name(),
            RunningSource::Postgres(s) => s.name(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            RunningSource::Redis(s) => s.kind(),
            RunningSource::RabbitMq(s) => s.kind(),
            RunningSource::Dcgm(s) => s.kind(),
            RunningSource::Inference(s) => s.kind(),
            RunningSource::Nats(s) => s.kind(),
            RunningSource::Postgres(s) => s.kind(),
        }
    }

    async fn poll(&mut self) -> Result<Vec<Sample>, SourceError> {
        match self {
            RunningSource::Redis(s) => s.poll().await,
            RunningSource::RabbitMq(s) => s.poll().await,
            RunningSource::Dcgm(s) => s.poll().await,
            RunningSource::Inference(s) => s.poll().await,
            RunningSource::Nats(s) => s.poll().await,
            RunningSource::Postgres(s) => s.poll().await,
        }
    }

    fn wake(&self) -> Option<WakeSignal> {
        match self {
            RunningSource::Redis(s) => s.wake(),
            RunningSource::RabbitMq(s) => s.wake(),
            RunningSource::Dcgm(s) => s.wake(),
            RunningSource::Inference(s) => s.wake(),
            RunningSource::Nats(s) => s.wake(),
            RunningSource::Postgres(s) => s.wake(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OneKind;
        impl<'de> Visitor<'de> for OneKind {
            type Value = SourceConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a map with one key naming the kind: {}",
                    KINDS.join(", ")
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SourceConfig, A::Error> {
                let exactly_one = || {
                    A::Error::custom(format!(
                        "a source needs exactly one kind: {}",
                        KINDS.join(", ")
                    ))
                };
                let Some(key) = map.next_key::<String>()? else {
                    return Err(exactly_one());
                };
                let source = match key.as_str() {
                    "redis" => SourceConfig::Redis(map.next_value()?),
                    "rabbitmq" => SourceConfig::RabbitMq(map.next_value()?),
                    "dcgm" => SourceConfig::Dcgm(map.next_value()?),
                    "inference" => SourceConfig::Inference(map.next_value()?),
                    "nats" => SourceConfig::Nats(map.next_value()?),
                    "postgres" => SourceConfig::Postgres(map.next_value()?),
                    other => return Err(A::Error::unknown_field(other, KINDS)),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(exactly_one());
                }
                Ok(source)
            }
        }
        d.deserialize_map(OneKind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_once_and_read_by_its_name() {
        let yaml = |kind: &str| format!("{kind}: {{}}");
        for kind in KINDS {
            let err = yaml_serde::from_str::<SourceConfig>(&yaml(kind))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                !err.contains("unknown field"),
                "{kind} is a kind the reader knows: {err}"
            );
        }
        let err = yaml_serde::from_str::<SourceConfig>(&yaml("kafka")).unwrap_err();
        assert!(err.to_string().contains("unknown field `kafka`"), "{err}");
    }
}
