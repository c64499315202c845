//! The one list of source kinds. Everything that differs by kind is generated from it: the
//! config's [`SourceConfig`] (`jobs: {redis: {...}}`) and [`MetricTargets`]
//! (`metrics[].redis`), and the dispatch from a source's config to its kind's checks and
//! constructor. Adding a kind is its folder (a type implementing
//! [`SourceKind`](super::kind::SourceKind)) and one line in [`source_kinds!`]'s invocation
//! below; the checklist is in [`super`]'s documentation.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::kind::{BuildContext, Built, SourceKind, SourceSpec};
use crate::config::{Config, ConfigError, MetricConfig};
use crate::poller::Schedule;
use crate::store::{MetricInfo, Store};

macro_rules! source_kinds {
    ($($key:ident => $variant:ident($kind:ty),)+) => {
        /// One connection; the key names its kind (`jobs: {redis: {...}}`).
        #[derive(Debug, Clone, PartialEq)]
        pub enum SourceConfig {
            $(
                #[doc = concat!("A `", stringify!($key), "` source.")]
                $variant(<$kind as SourceKind>::Connection),
            )+
        }

        /// The kinds' names, as the config spells them.
        pub const KINDS: &[&str] = &[$(<$kind as SourceKind>::NAME),+];

        /// A metric's kind-specific block (`metrics[].redis`, ...): at most one is meant to
        /// be set, the one of its source's kind (checked by [`SourceConfig::validate_metric`]).
        #[derive(Debug, Clone, Default, PartialEq)]
        #[allow(missing_docs)]
        pub struct MetricTargets {
            $(pub $key: Option<<$kind as SourceKind>::Target>,)+
        }

        impl MetricTargets {
            /// Reads the block named `key` from `map` if `key` names a kind; `Ok(false)` if it
            /// does not.
            pub(crate) fn read<'de, A: MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $(
                        _ if key == <$kind as SourceKind>::NAME => {
                            if self.$key.is_some() {
                                return Err(de::Error::duplicate_field(<$kind as SourceKind>::NAME));
                            }
                            self.$key = Some(map.next_value()?);
                            Ok(true)
                        }
                    )+
                    _ => Ok(false),
                }
            }

            /// The kinds whose block is set.
            pub fn present(&self) -> Vec<&'static str> {
                let mut v = Vec::new();
                $(if self.$key.is_some() { v.push(<$kind as SourceKind>::NAME); })+
                v
            }
        }

        impl SourceConfig {
            /// The kind's name, as config and telemetry spell it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(SourceConfig::$variant(_) => <$kind as SourceKind>::NAME,)+
                }
            }

            /// This source's poll interval, or the global one.
            pub fn poll_interval(&self, global: Duration) -> Duration {
                match self {
                    $(SourceConfig::$variant(c) => <$kind>::poll_interval(c).unwrap_or(global),)+
                }
            }

            /// This source's poll timeout, or the global one.
            pub fn poll_timeout(&self, global: Duration) -> Duration {
                match self {
                    $(SourceConfig::$variant(c) => <$kind>::poll_timeout(c).unwrap_or(global),)+
                }
            }

            /// Checks the connection block of source `name`.
            ///
            /// # Errors
            /// [`ConfigError::Invalid`] naming the field.
            pub fn validate(&self, name: &str, global_timeout: Duration) -> Result<(), ConfigError> {
                let at = format!("sources.{name}.{}", self.kind());
                let timeout = self.poll_timeout(global_timeout);
                match self {
                    $(SourceConfig::$variant(c) => <$kind>::validate(c, &at, timeout),)+
                }
            }

            /// Checks metric `m` (`at` names it) of this source: its block is of this kind
            /// (present if the kind needs one), and the kind's own checks pass.
            ///
            /// # Errors
            /// [`ConfigError::Invalid`] naming the field.
            pub fn validate_metric(&self, m: &MetricConfig, at: &str) -> Result<(), ConfigError> {
                match self {
                    $(SourceConfig::$variant(c) => {
                        validate_metric_of::<$kind>(c, m, m.targets.$key.as_ref(), at)
                    })+
                }
            }

            /// Reads the secrets the connection of source `name` names.
            ///
            /// # Errors
            /// When one cannot be read.
            pub fn resolve_secrets(&mut self, name: &str) -> Result<(), ConfigError> {
                let at = format!("sources.{name}.{}", self.kind());
                match self {
                    $(SourceConfig::$variant(c) => <$kind>::resolve_secrets(c, &at),)+
                }
            }

            /// The password file this connection reads, if any.
            pub fn password_file(&self) -> Option<PathBuf> {
                match self {
                    $(SourceConfig::$variant(c) => <$kind>::password_file(c),)+
                }
            }

            /// The label holding each series' namespace, for kinds whose series have one.
            pub fn namespace_label(&self) -> Option<&'static str> {
                match self {
                    $(SourceConfig::$variant(_) => <$kind>::namespace_label(),)+
                }
            }

            /// Whether metric `m` of this source having no series is an observed empty backlog.
            pub fn empty_means_zero(&self, m: &MetricConfig) -> bool {
                match self {
                    $(SourceConfig::$variant(_) => <$kind>::empty_means_zero(m.targets.$key.as_ref()),)+
                }
            }

            /// Whether building this source needs the Kubernetes API.
            pub fn needs_kubernetes(&self) -> bool {
                match self {
                    $(SourceConfig::$variant(_) => <$kind>::needs_kubernetes(),)+
                }
            }

            /// Builds source `name` of `config`, ready to poll.
            ///
            /// # Errors
            /// When its settings cannot be used; the message names the source.
            pub async fn build(
                &self,
                config: &Config,
                name: &str,
                context: &mut BuildContext,
            ) -> anyhow::Result<Built> {
                use anyhow::Context as _;
                let built = match self {
                    $(SourceConfig::$variant(c) => {
                        let spec = SourceSpec::<$kind> {
                            name,
                            connection: c,
                            metrics: config
                                .metrics_of(name)
                                .map(|m| (m, m.targets.$key.as_ref()))
                                .collect(),
                            poll_timeout: self.poll_timeout(config.poll_timeout.0),
                            discovery_interval: config.discovery_interval.0,
                            pattern_key_retention: config.pattern_key_retention.0,
                        };
                        <$kind>::build(spec, context).await
                    })+
                };
                built.with_context(|| format!("source {name}"))
            }
        }

        /// The spec of source `name` in `config` as kind `K`: its connection, its metrics with
        /// their `K` blocks and its settings; `None` if there is no such source of that kind.
        /// (Benchmarks and tests build a kind's concrete source type from it.)
        pub fn spec_of<'a, K: SourceKind>(
            config: &'a Config,
            name: &'a str,
        ) -> Option<SourceSpec<'a, K>> {
            use std::any::Any;
            let source = config.sources.get(name)?;
            let connection: &K::Connection = match source {
                $(SourceConfig::$variant(c) => (c as &dyn Any).downcast_ref()?,)+
            };
            let metrics = config
                .metrics_of(name)
                .map(|m| {
                    let target = match source {
                        $(SourceConfig::$variant(_) => m
                            .targets
                            .$key
                            .as_ref()
                            .and_then(|t| (t as &dyn Any).downcast_ref::<K::Target>()),)+
                    };
                    (m, target)
                })
                .collect();
            Some(SourceSpec {
                name,
                connection,
                metrics,
                poll_timeout: source.poll_timeout(config.poll_timeout.0),
                discovery_interval: config.discovery_interval.0,
                pattern_key_retention: config.pattern_key_retention.0,
            })
        }

        impl<'de> Deserialize<'de> for SourceConfig {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct OneKind;
                impl<'de> Visitor<'de> for OneKind {
                    type Value = SourceConfig;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a map with one key naming the kind: {}", KINDS.join(", "))
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SourceConfig, A::Error> {
                        let exactly_one = || {
                            de::Error::custom(format!(
                                "a source needs exactly one kind: {}",
                                KINDS.join(", ")
                            ))
                        };
                        let Some(key) = map.next_key::<String>()? else {
                            return Err(exactly_one());
                        };
                        let source = match key.as_str() {
                            $(
                                k if k == <$kind as SourceKind>::NAME => {
                                    SourceConfig::$variant(map.next_value()?)
                                }
                            )+
                            other => return Err(de::Error::unknown_field(other, KINDS)),
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
    };
}

/// Builds the store for `config`'s metrics.
pub fn store_for(config: &Config) -> Store {
    Store::new(metric_infos(config), config.max_staleness.0)
}

/// What the store and the API surfaces know of each configured metric.
pub fn metric_infos(config: &Config) -> Vec<MetricInfo> {
    config
        .metrics
        .iter()
        .map(|m| MetricInfo {
            name: m.name.clone(),
            source: m.source.clone(),
            description: m.description.clone(),
            namespaces: m.namespaces.clone(),
            namespace_label: config
                .sources
                .get(&m.source)
                .and_then(SourceConfig::namespace_label),
            empty_means_zero: config
                .sources
                .get(&m.source)
                .is_some_and(|s| s.empty_means_zero(m)),
        })
        .collect()
}

/// The schedule of source `name`.
pub fn schedule_of(config: &Config, source: &SourceConfig) -> Schedule {
    Schedule {
        interval: source.poll_interval(config.poll_interval.0),
        timeout: source.poll_timeout(config.poll_timeout.0),
        max_backoff: config.max_backoff.0,
    }
}

/// The checks every kind shares around its own: a needed block is there, no other kind's is.
fn validate_metric_of<K: SourceKind>(
    conn: &K::Connection,
    m: &MetricConfig,
    target: Option<&K::Target>,
    at: &str,
) -> Result<(), ConfigError> {
    if K::TARGET_REQUIRED && target.is_none() {
        return Err(ConfigError::invalid(
            format!("{at}.{}", K::NAME),
            format!(
                "source {:?} is a {} source, so the metric needs a `{}:` block",
                m.source,
                K::NAME,
                K::NAME
            ),
        ));
    }
    K::validate_metric(conn, m, target, at)?;
    if let Some(block) = m.targets.present().into_iter().find(|k| *k != K::NAME) {
        return Err(ConfigError::invalid(
            format!("{at}.{block}"),
            format!(
                "source {:?} is a {} source; remove the `{block}:` block",
                m.source,
                K::NAME
            ),
        ));
    }
    Ok(())
}

source_kinds! {
    redis => Redis(crate::sources::redis::Redis),
    rabbitmq => Rabbitmq(crate::sources::rabbitmq::RabbitMq),
    dcgm => Dcgm(crate::sources::dcgm::Dcgm),
}
