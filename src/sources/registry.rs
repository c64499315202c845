//! What is generated from the one list of source kinds (in [`super`]): the config's
//! [`SourceConfig`](super::SourceConfig) (`jobs: {redis: {...}}`) and
//! [`MetricTargets`](super::MetricTargets) (`metrics[].redis`), and the dispatch from a
//! source's config to its kind's checks and constructor (`source_kinds!`).

use super::MetricConfig;
use super::kind::SourceKind;
use crate::primitives::ConfigError;

/// Generates, from `key => Variant(KindType),` lines, everything that names every kind.
macro_rules! source_kinds {
    ($($key:ident => $variant:ident($kind:ty),)+) => {
        use $crate::sources::kind::SourceKind as _;
        use $crate::primitives::ConfigError;
        use $crate::sources::kind::{BuildContext, Built, Globals, SourceSpec};
        /// One connection; the key names its kind (`jobs: {redis: {...}}`).
        #[derive(Debug, Clone, PartialEq)]
        pub enum SourceConfig {
            $(
                #[doc = concat!("A `", stringify!($key), "` source.")]
                $variant(<$kind as $crate::sources::kind::SourceKind>::Connection),
            )+
        }

        /// The kinds' names, as the config spells them.
        pub const KINDS: &[&str] = &[$(<$kind>::NAME),+];

        /// A metric's kind-specific block (`metrics[].redis`, ...): at most one is meant to
        /// be set, the one of its source's kind (checked by [`SourceConfig::validate_metric`]).
        #[derive(Debug, Clone, Default, PartialEq)]
        #[allow(missing_docs)]
        pub struct MetricTargets {
            $(pub $key: Option<<$kind as $crate::sources::kind::SourceKind>::Target>,)+
        }

        impl MetricTargets {
            /// Reads the block named `key` from `map` if `key` names a kind; `Ok(false)` if it
            /// does not.
            pub(crate) fn read<'de, A: ::serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $(
                        _ if key == <$kind>::NAME => {
                            if self.$key.is_some() {
                                return Err(::serde::de::Error::duplicate_field(<$kind>::NAME));
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
                $(if self.$key.is_some() { v.push(<$kind>::NAME); })+
                v
            }
        }

        impl SourceConfig {
            /// The kind's name, as config and telemetry spell it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(SourceConfig::$variant(_) => <$kind>::NAME,)+
                }
            }

            /// This source's poll interval, or the global one.
            pub fn poll_interval(&self, global: ::std::time::Duration) -> ::std::time::Duration {
                match self {
                    $(SourceConfig::$variant(c) => <$kind>::poll_interval(c).unwrap_or(global),)+
                }
            }

            /// This source's poll timeout, or the global one.
            pub fn poll_timeout(&self, global: ::std::time::Duration) -> ::std::time::Duration {
                match self {
                    $(SourceConfig::$variant(c) => <$kind>::poll_timeout(c).unwrap_or(global),)+
                }
            }

            /// Checks the connection block of source `name`.
            ///
            /// # Errors
            /// [`ConfigError::Invalid`](ConfigError::Invalid) naming the field.
            pub fn validate(
                &self,
                name: &str,
                global_timeout: ::std::time::Duration,
            ) -> Result<(), ConfigError> {
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
            /// [`ConfigError::Invalid`](ConfigError::Invalid) naming the field.
            pub fn validate_metric(
                &self,
                m: &$crate::sources::MetricConfig,
                at: &str,
            ) -> Result<(), ConfigError> {
                match self {
                    $(SourceConfig::$variant(c) => {
                        let target = m.targets.$key.as_ref();
                        $crate::sources::registry::validate_metric_of::<$kind>(c, m, target, at)
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

            /// The password files this connection reads.
            pub fn password_files(&self) -> Vec<::std::path::PathBuf> {
                match self {
                    $(SourceConfig::$variant(c) => <$kind>::password_files(c),)+
                }
            }

            /// The label holding each series' namespace, for kinds whose series have one.
            pub fn namespace_label(&self) -> Option<&'static str> {
                match self {
                    $(SourceConfig::$variant(_) => <$kind>::namespace_label(),)+
                }
            }

            /// Whether metric `m` of this source having no series is an observed empty backlog.
            pub fn empty_means_zero(&self, m: &$crate::sources::MetricConfig) -> bool {
                match self {
                    $(SourceConfig::$variant(_) => {
                        <$kind>::empty_means_zero(m.targets.$key.as_ref())
                    })+
                }
            }

            /// Whether building this source needs the Kubernetes API.
            pub fn needs_kubernetes(&self) -> bool {
                match self {
                    $(SourceConfig::$variant(_) => <$kind>::needs_kubernetes(),)+
                }
            }

            /// Builds this source, named `name`, with its metrics out of `metrics` and the
            /// top-level settings `globals`, ready to poll.
            ///
            /// # Errors
            /// When its settings cannot be used; the message names the source.
            pub async fn build(
                &self,
                name: &str,
                metrics: &[$crate::sources::MetricConfig],
                globals: Globals,
                context: &mut BuildContext,
            ) -> ::anyhow::Result<Built> {
                use ::anyhow::Context as _;
                let built = match self {
                    $(SourceConfig::$variant(_) => {
                        let spec = spec_of::<$kind>(name, self, metrics, globals)
                            .expect("the variant is of this kind");
                        <$kind>::build(spec, context).await
                    })+
                };
                built.with_context(|| format!("source {name}"))
            }
        }

        /// The spec of `source`, named `name`, as kind `K`: its connection, its metrics out of
        /// `metrics` with their `K` blocks, and its settings; `None` if it is of another kind.
        pub fn spec_of<'a, K: $crate::sources::kind::SourceKind>(
            name: &'a str,
            source: &'a SourceConfig,
            metrics: &'a [$crate::sources::MetricConfig],
            globals: Globals,
        ) -> Option<SourceSpec<'a, K>> {
            use std::any::Any;
            let connection: &K::Connection = match source {
                $(SourceConfig::$variant(c) => (c as &dyn Any).downcast_ref()?,)+
            };
            let metrics = metrics
                .iter()
                .filter(|m| m.source == name)
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
                poll_timeout: source.poll_timeout(globals.poll_timeout),
                discovery_interval: globals.discovery_interval,
                pattern_key_retention: globals.pattern_key_retention,
            })
        }

        impl<'de> ::serde::Deserialize<'de> for SourceConfig {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct OneKind;
                impl<'de> ::serde::de::Visitor<'de> for OneKind {
                    type Value = SourceConfig;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a map with one key naming the kind: {}", KINDS.join(", "))
                    }

                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<SourceConfig, A::Error> {
                        let exactly_one = || {
                            ::serde::de::Error::custom(format!(
                                "a source needs exactly one kind: {}",
                                KINDS.join(", ")
                            ))
                        };
                        let Some(key) = map.next_key::<String>()? else {
                            return Err(exactly_one());
                        };
                        let source = match key.as_str() {
                            $(
                                k if k == <$kind>::NAME => {
                                    SourceConfig::$variant(map.next_value()?)
                                }
                            )+
                            other => return Err(::serde::de::Error::unknown_field(other, KINDS)),
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

pub(crate) use source_kinds;

/// The checks every kind shares around its own: a needed block is there, no other kind's is.
pub(crate) fn validate_metric_of<K: SourceKind>(
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
