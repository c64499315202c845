//! Fields several configuration blocks share, written flat among each block's own fields and
//! read into one type: the credentials of a Redis source, its sentinels and a RabbitMQ broker
//! ([`crate::sources::credentials::Credentials`]), the scrape settings of dcgm and inference
//! sources ([`crate::sources::exposition::scrape_settings::ScrapeSettings`]).
//!
//! Why not serde's `flatten`: with it, `deny_unknown_fields` no longer refuses a misspelt field,
//! and values are buffered before they are read, so an error loses its line and column. This is
//! the small deserializer instead. A block derives `Deserialize` with `#[serde(remote = "Self",
//! deny_unknown_fields)]` (which makes the derived code an inherent function) and the group's
//! field `#[serde(skip)]`; its `Deserialize` implementation is [`deserialize`], which hands the
//! derived code every field but the group's, and reads the group's straight off the YAML. So
//! each value is read where it stands (its errors keep their line and column), and a field
//! neither knows is refused with the block's whole field list, as the derived code did
//! before the fields moved: the messages are unchanged (tests in `credentials` and
//! `scrape_settings` hold the exact text).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};

/// Fields that several blocks share, read into one value.
pub trait FieldGroup: Default {
    /// The fields, as the configuration spells them.
    const FIELDS: &'static [&'static str];

    /// Reads the value of `field` (one of [`FieldGroup::FIELDS`]) from `map`.
    ///
    /// # Errors
    /// The value's own deserialization error.
    fn read_value<'de, A: MapAccess<'de>>(
        &mut self,
        field: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error>;
}

/// A configuration block holding a [`FieldGroup`] among its own fields.
pub trait Grouped<'de>: Sized {
    /// The shared fields it holds.
    type Group: FieldGroup;
    /// The struct's name, for "expected struct ..." messages.
    const NAME: &'static str;
    /// Every field the block takes, its own and the group's, in the order messages list them.
    const FIELDS: &'static [&'static str];

    /// The derived deserializer of the block's own fields (`#[serde(remote = "Self")]`).
    ///
    /// # Errors
    /// Whatever the derived code refuses.
    fn deserialize_own<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;

    /// Stores the group's values, once the block is read.
    fn set_group(&mut self, group: Self::Group);
}

/// Reads a [`Grouped`] block: the group's fields into its group, every other field through the
/// block's derived code.
///
/// # Errors
/// The derived code's errors; for a field neither takes, `unknown field`, listing
/// [`Grouped::FIELDS`]; for a group field given twice, `duplicate field`.
pub fn deserialize<'de, T: Grouped<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_struct(T::NAME, T::FIELDS, BlockVisitor(PhantomData))
}

struct BlockVisitor<T>(PhantomData<T>);

impl<'de, T: Grouped<'de>> Visitor<'de> for BlockVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "struct {}", T::NAME)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let mut own = OwnFields {
            map,
            group: T::Group::default(),
            given: 0,
            all: T::FIELDS,
            group_fields: <T::Group as FieldGroup>::FIELDS,
        };
        let mut block = T::deserialize_own(MapAccessDeserializer::new(&mut own))?;
        block.set_group(own.group);
        Ok(block)
    }
}

/// The block's map with the group's fields taken out as they pass.
struct OwnFields<A, G> {
    map: A,
    group: G,
    /// Which of the group's fields have been read (bit `i`: `FIELDS[i]`).
    given: u64,
    all: &'static [&'static str],
    group_fields: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>, G: FieldGroup> MapAccess<'de> for OwnFields<A, G> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        mut seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let key = KeySeed {
                seed,
                all: self.all,
                group_fields: self.group_fields,
            };
            match self.map.next_key_seed(key)? {
                None => return Ok(None),
                Some(Key::Own(value)) => return Ok(Some(value)),
                Some(Key::Group(i, unused)) => {
                    let field = self.group_fields[i];
                    if self.given & (1 << i) != 0 {
                        return Err(de::Error::duplicate_field(field));
                    }
                    self.given |= 1 << i;
                    self.group.read_value(field, &mut self.map)?;
                    seed = unused;
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A key of the block: the group's (with the seed, unused), or one the derived code took.
enum Key<K, V> {
    Own(V),
    Group(usize, K),
}

/// Reads a key and sends it where it belongs. A key the derived code refuses is refused here,
/// inside the visit of the key, so the error carries the key's line and column.
struct KeySeed<K> {
    seed: K,
    all: &'static [&'static str],
    group_fields: &'static [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    type Value = Key<K, K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<K> {
    type Value = Key<K, K::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if let Some(i) = self.group_fields.iter().position(|f| *f == key) {
            return Ok(Key::Group(i, self.seed));
        }
        let as_field: StrDeserializer<'_, KeyError> = key.into_deserializer();
        match self.seed.deserialize(as_field) {
            Ok(value) => Ok(Key::Own(value)),
            Err(KeyError::Unknown) => Err(E::unknown_field(key, self.all)),
            Err(KeyError::Other(message)) => Err(E::custom(message)),
        }
    }
}

/// What the derived code says of a key.
#[derive(Debug)]
enum KeyError {
    /// Not one of its fields.
    Unknown,
    Other(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Unknown => f.write_str("unknown field"),
            KeyError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for KeyError {}

impl de::Error for KeyError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        KeyError::Other(message.to_string())
    }

    fn unknown_field(_field: &str, _expected: &'static [&'static str]) -> Self {
        KeyError::Unknown
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, SourceConfig};

    fn error_of(yaml: &str) -> String {
        match Config::from_yaml(yaml, Path::new("c.yaml")) {
            Ok(_) => panic!("{yaml} loaded"),
            Err(e) => e.to_string(),
        }
    }

    /// The messages as they were when each block declared these fields itself (main 34143ae),
    /// line and column included.
    #[test]
    fn messages_are_those_of_the_fields_declared_in_place() {
        let cases = [
            (
                r#"sources: {r: {redis: {url: "redis://127.0.0.1", bogus: 1}}}"#,
                "sources.r.redis.bogus: unknown field `bogus`, expected one of `url`, `sentinel`, `cluster`, `tls`, `db`, `username`, `password_file`, `password_env`, `ca_file`, `poll_interval`, `poll_timeout`, `wake`, `max_drain_seconds` at line 1 column 49",
            ),
            (
                r#"sources: {r: {redis: {sentinel: {addresses: ["a:1"], master_name: m, bogus: 1}}}}"#,
                "sources.r.redis.sentinel.bogus: unknown field `bogus`, expected one of `addresses`, `master_name`, `username`, `password_file`, `password_env`, `read_from`, `node_timeout` at line 1 column 70",
            ),
            (
                r#"sources: {r: {rabbitmq: {management_url: "http://a", bogus: 1}}}"#,
                "sources.r.rabbitmq.bogus: unknown field `bogus`, expected one of `management_url`, `amqp_url`, `read_via`, `username`, `password_file`, `password_env`, `ca_file`, `max_response_bytes`, `max_drain_seconds`, `idle_poll_interval`, `idle_max_queues`, `poll_interval`, `poll_timeout` at line 1 column 54",
            ),
            (
                r#"sources: {r: {dcgm: {endpoints: ["http://a"], bogus: 1}}}"#,
                "sources.r.dcgm.bogus: unknown field `bogus`, expected one of `endpoints`, `discover`, `prometheus`, `scrape_timeout`, `extra_labels`, `aliases`, `ca_file`, `max_response_bytes`, `poll_interval`, `poll_timeout` at line 1 column 47",
            ),
            (
                r#"sources: {r: {inference: {prometheus: {url: "http://a"}, bogus: 1}}}"#,
                "sources.r.inference.bogus: unknown field `bogus`, expected one of `preset`, `pods`, `prometheus`, `scrape_timeout`, `rate_window`, `extra_labels`, `ca_file`, `max_response_bytes`, `poll_interval`, `poll_timeout` at line 1 column 58",
            ),
            (
                r#"sources: {r: {redis: {url: "redis://127.0.0.1", username: 1, username: 2}}}"#,
                "sources.r.redis: duplicate field `username` at line 1 column 22",
            ),
            (
                r#"sources: {r: {redis: {url: "redis://127.0.0.1", password_file: [1]}}}"#,
                "sources.r.redis.password_file: invalid type: sequence, expected path string at line 1 column 64",
            ),
            (
                r#"sources: {r: {dcgm: {endpoints: ["http://a"], scrape_timeout: 7}}}"#,
                "sources.r.dcgm.scrape_timeout: invalid duration \"7\": write a number with a unit, e.g. 500ms, 2s, 1m30s, 1h at line 1 column 21",
            ),
            (
                r#"sources: {r: {redis: {sentinel: {addresses: ["a:1"], username: [x]}}}}"#,
                "sources.r.redis.sentinel.username: invalid type: sequence, expected a string at line 1 column 64",
            ),
            (
                "sources: {r: {redis: {sentinel: 5}}}",
                "sources.r.redis.sentinel: invalid type: integer `5`, expected struct SentinelConfig at line 1 column 33",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(error_of(yaml), format!("config file c.yaml: {want}"));
        }
    }

    #[test]
    fn the_shared_fields_land_in_their_group_and_the_rest_in_the_block() {
        let yaml = "sources:\n  r:\n    redis:\n      sentinel: {addresses: [\"a:1\"], master_name: m, username: watcher, read_from: replica}\n      username: app\n      db: 2\n  g:\n    dcgm: {endpoints: [\"http://a\"], scrape_timeout: 2s, extra_labels: {model: modelName}, max_response_bytes: 1000}\nmetrics:\n  - {name: q, source: r, measure: length, redis: {type: list, key: q}}\n  - {name: u, source: g, measure: gpu_utilization}\n";
        let config = Config::from_yaml(yaml, Path::new("c.yaml")).expect("valid");
        let Some(SourceConfig::Redis(r)) = config.sources.get("r") else {
            panic!("a redis source")
        };
        let sentinel = r.sentinel.as_ref().expect("sentinel");
        assert_eq!(r.credentials.username.as_deref(), Some("app"));
        assert_eq!(r.db, Some(2));
        assert_eq!(sentinel.credentials.username.as_deref(), Some("watcher"));
        assert_eq!(
            sentinel.read_from,
            crate::sources::redis::config::ReadFrom::Replica
        );
        let Some(SourceConfig::Dcgm(g)) = config.sources.get("g") else {
            panic!("a dcgm source")
        };
        assert_eq!(
            g.scrape.scrape_timeout(std::time::Duration::from_secs(5)),
            std::time::Duration::from_secs(2)
        );
        assert_eq!(g.scrape.max_response_bytes, Some(1000));
        assert_eq!(g.scrape.extra_labels().0, vec!["model".to_string()]);
        assert_eq!(g.endpoints.as_deref(), Some(&["http://a".to_string()][..]));
    }
}
