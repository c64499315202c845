//! One served metric as the config declares it: the fields every metric has, and the block of
//! its source's kind ([`MetricTargets`], one field per kind).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use super::kinds::MetricTargets;
use crate::model::Measure;

/// One served metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricConfig {
    /// What the HPA names: lowercase letters, digits, `_`, `.`, `-`.
    pub name: String,
    /// Free text, shown in `/metrics` help and `check`.
    pub description: Option<String>,
    /// The name of an entry under `sources`.
    pub source: String,
    /// What to compute; which measures exist depends on the key type.
    pub measure: Measure,
    /// Labels added to every series of this metric (served as `metricLabels`).
    pub labels: BTreeMap<String, String>,
    /// Namespaces this metric is served in; absent means every namespace.
    pub namespaces: Option<Vec<String>>,
    /// What to read, in the block of its source's kind (`redis: {...}`, `rabbitmq: {...}`).
    pub targets: MetricTargets,
}

/// The fields of a metric besides the kinds' blocks.
const METRIC_FIELDS: &[&str] = &[
    "name",
    "description",
    "source",
    "measure",
    "labels",
    "namespaces",
];

impl<'de> Deserialize<'de> for MetricConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = MetricConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metric: name, source, measure and the block of its source's kind")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetricConfig, A::Error> {
                let (mut name, mut description, mut source, mut measure) = (None, None, None, None);
                let (mut labels, mut namespaces) = (None, None);
                let mut targets = MetricTargets::default();
                while let Some(key) = map.next_key::<String>()? {
                    fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
                        slot: &mut Option<T>,
                        key: &'static str,
                        map: &mut A,
                    ) -> Result<(), A::Error> {
                        if slot.is_some() {
                            return Err(A::Error::duplicate_field(key));
                        }
                        *slot = Some(map.next_value()?);
                        Ok(())
                    }
                    match key.as_str() {
                        "name" => once(&mut name, "name", &mut map)?,
                        "description" => once(&mut description, "description", &mut map)?,
                        "source" => once(&mut source, "source", &mut map)?,
                        "measure" => once(&mut measure, "measure", &mut map)?,
                        "labels" => once(&mut labels, "labels", &mut map)?,
                        "namespaces" => once(&mut namespaces, "namespaces", &mut map)?,
                        other => {
                            if !targets.read(other, &mut map)? {
                                let mut expected: Vec<&str> = METRIC_FIELDS.to_vec();
                                expected.extend(super::kinds::KINDS);
                                let expected: Vec<String> =
                                    expected.iter().map(|f| format!("`{f}`")).collect();
                                return Err(A::Error::custom(format!(
                                    "unknown field `{other}`, expected one of {}",
                                    expected.join(", ")
                                )));
                            }
                        }
                    }
                }
                Ok(MetricConfig {
                    name: name.ok_or_else(|| A::Error::missing_field("name"))?,
                    description: description.unwrap_or_default(),
                    source: source.ok_or_else(|| A::Error::missing_field("source"))?,
                    measure: measure.ok_or_else(|| A::Error::missing_field("measure"))?,
                    labels: labels.unwrap_or_default(),
                    namespaces: namespaces.unwrap_or_default(),
                    targets,
                })
            }
        }
        d.deserialize_map(Fields)
    }
}
