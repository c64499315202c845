//! The checks of a whole configuration, after each block has parsed: durations, names,
//! labels, and every metric against its source (each kind checks its own blocks,
//! [`crate::sources::SourceConfig::validate_metric`]).

use std::collections::BTreeSet;

use super::{Config, ConfigError};
use crate::apimachinery::label::{validate_key, validate_value};
use crate::model::validate_metric_name;

impl Config {
    /// Checks what each block cannot check alone: names valid and unique, every metric's
    /// source declared, each measure and target fitting its source's kind (asked of the kind).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("poll_interval", self.poll_interval),
            ("poll_timeout", self.poll_timeout),
            ("max_staleness", self.max_staleness),
            ("max_backoff", self.max_backoff),
            ("discovery_interval", self.discovery_interval),
            ("pattern_key_retention", self.pattern_key_retention),
        ];
        for (field, d) in positive {
            if d.0.is_zero() {
                return Err(ConfigError::invalid(field, "must be greater than zero"));
            }
        }
        if let Some(clients) = &self.keda_clients {
            if clients.is_empty() {
                return Err(ConfigError::invalid(
                    "keda_clients",
                    "an empty list would refuse every KEDA caller; leave it out for no restriction",
                ));
            }
            crate::security::keda_clients::validate(clients)
                .map_err(|(field, message)| ConfigError::invalid(field, message))?;
        }
        if self.sources.is_empty() {
            return Err(ConfigError::invalid(
                "sources",
                "must name at least one source",
            ));
        }
        for (name, source) in &self.sources {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(ConfigError::invalid(
                    format!("sources.{name}"),
                    "a source name uses letters, digits, '_', '-' and '.'",
                ));
            }
            source.validate(name, self.poll_timeout.0)?;
        }
        if self.metrics.is_empty() {
            return Err(ConfigError::invalid(
                "metrics",
                "must declare at least one metric",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let at = format!("metrics[{i}]");
            validate_metric_name(&m.name).map_err(|e| {
                ConfigError::invalid(format!("{at}.name"), format!("{:?} {e}", m.name))
            })?;
            if !names.insert(m.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("{:?} is declared twice", m.name),
                ));
            }
            let at = format!("metrics[{i}] ({})", m.name);
            for (k, v) in &m.labels {
                validate_key(k).map_err(|e| {
                    ConfigError::invalid(format!("{at}.labels"), format!("label key {k:?} {e}"))
                })?;
                validate_value(v).map_err(|e| {
                    ConfigError::invalid(
                        format!("{at}.labels.{k}"),
                        format!("label value {v:?} {e}"),
                    )
                })?;
            }
            if let Some(ns) = &m.namespaces
                && ns.is_empty()
            {
                return Err(ConfigError::invalid(
                    format!("{at}.namespaces"),
                    "an empty list would serve the metric nowhere; leave it out to serve every namespace",
                ));
            }
            let Some(source) = self.sources.get(&m.source) else {
                let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
                return Err(ConfigError::invalid(
                    format!("{at}.source"),
                    format!("unknown source {:?}; the sources are {known:?}", m.source),
                ));
            };
            source.validate_metric(m, &at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "sources:\n  jobs:\n    redis: {url: \"redis://127.0.0.1:6379/0\"}\n";

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, Path::new("test.yaml"))
    }

    fn with_metric(metric: &str) -> String {
        format!("{BASE}metrics:\n  - {metric}\n")
    }

    #[test]
    fn invalid_configs_are_refused_naming_the_field() {
        struct Case {
            name: &'static str,
            yaml: String,
            mentions: &'static [&'static str],
        }
        let m = |s: &str| with_metric(s);
        let cases = [
            Case {
                name: "unknown top-level field",
                yaml: format!("pol_interval: 2s\n{BASE}metrics: []\n"),
                mentions: &["unknown field", "pol_interval"],
            },
            Case {
                name: "bad duration",
                yaml: format!("poll_interval: 2 sec\n{}", m("{name: a, source: jobs, measure: length, redis: {type: list, key: q}}")),
                mentions: &["poll_interval", "2 sec"],
            },
            Case {
                name: "uppercase metric name",
                yaml: m("{name: Queue, source: jobs, measure: length, redis: {type: list, key: q}}"),
                mentions: &["metrics[0].name", "\"Queue\""],
            },
            Case {
                name: "duplicate name",
                yaml: format!(
                    "{BASE}metrics:\n  - {{name: a, source: jobs, measure: length, redis: {{type: list, key: q}}}}\n  - {{name: a, source: jobs, measure: length, redis: {{type: list, key: r}}}}\n"
                ),
                mentions: &["metrics[1].name", "declared twice"],
            },
            Case {
                name: "unknown source",
                yaml: m("{name: a, source: nope, measure: length, redis: {type: list, key: q}}"),
                mentions: &["metrics[0] (a).source", "unknown source \"nope\"", "jobs"],
            },
            Case {
                name: "measure unknown for key type",
                yaml: m("{name: a, source: jobs, measure: lag, redis: {type: list, key: q}}"),
                mentions: &["metrics[0] (a).redis", "lag does not apply to type list"],
            },
            Case {
                name: "unknown measure",
                yaml: m("{name: a, source: jobs, measure: depth, redis: {type: list, key: q}}"),
                mentions: &["unknown variant `depth`"],
            },
            Case {
                name: "unknown field in target",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, key: q, grup: x}}"),
                mentions: &["unknown field `grup`"],
            },
            Case {
                name: "key and pattern",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, key: q, pattern: \"q*\"}}"),
                mentions: &["either key or pattern"],
            },
            Case {
                name: "pattern without wildcard",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, pattern: q}}"),
                mentions: &["redis.pattern", "no wildcard"],
            },
            Case {
                name: "age without timestamp",
                yaml: m("{name: a, source: jobs, measure: oldest_age_seconds, redis: {type: list, key: q}}"),
                mentions: &["needs timestamp"],
            },
            Case {
                name: "stream lag without group",
                yaml: m("{name: a, source: jobs, measure: lag, redis: {type: stream, key: s}}"),
                mentions: &["needs group"],
            },
            Case {
                name: "group on a list",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, key: q, group: g}}"),
                mentions: &["redis.group", "only applies to type stream"],
            },
            Case {
                name: "hash template without id",
                yaml: m("{name: a, source: jobs, measure: oldest_age_seconds, redis: {type: list, key: q, timestamp: {hash: \"rq:job\", field: t, unit: rfc3339}}}"),
                mentions: &["timestamp.hash", "{id}"],
            },
            Case {
                name: "a hash without id and without a pointer",
                yaml: m("{name: a, source: jobs, measure: oldest_age_seconds, redis: {type: list, key: q, timestamp: {hash: \"{key}.msgs\", unit: ms}}}"),
                mentions: &["timestamp", "give json_pointer"],
            },
            Case {
                name: "a hash per element read by a pointer",
                yaml: m("{name: a, source: jobs, measure: oldest_age_seconds, redis: {type: list, key: q, timestamp: {hash: \"rq:job:{id}\", json_pointer: /t, unit: ms}}}"),
                mentions: &["timestamp.hash", "give field"],
            },
            Case {
                name: "bad label value",
                yaml: m("{name: a, source: jobs, measure: length, labels: {queue: \"a:b\"}, redis: {type: list, key: q}}"),
                mentions: &["labels.queue", "\"a:b\""],
            },
            Case {
                name: "reserved label",
                yaml: m("{name: a, source: jobs, measure: length, labels: {key: x}, redis: {type: list, key: q}}"),
                mentions: &["must not set \"key\""],
            },
            Case {
                name: "missing redis block",
                yaml: m("{name: a, source: jobs, measure: length}"),
                mentions: &["needs a `redis:` block"],
            },
            Case {
                name: "bad url scheme",
                yaml: "sources:\n  jobs:\n    redis: {url: \"http://x\"}\nmetrics:\n  - {name: a, source: jobs, measure: length, redis: {type: list, key: q}}\n".into(),
                mentions: &["sources.jobs.redis.url", "redis://"],
            },
            Case {
                name: "unset password env",
                yaml: "sources:\n  jobs:\n    redis: {url: \"redis://x\", password_env: QMA_TEST_UNSET_VARIABLE}\nmetrics:\n  - {name: a, source: jobs, measure: length, redis: {type: list, key: q}}\n".into(),
                mentions: &["password_env", "QMA_TEST_UNSET_VARIABLE is not set"],
            },
            Case {
                name: "rabbitmq source without urls",
                yaml: "sources:\n  r:\n    rabbitmq: {username: guest}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue: q}}\n".into(),
                mentions: &["sources.r.rabbitmq", "management_url or amqp_url"],
            },
            Case {
                name: "rabbitmq measure not over amqp",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672/%2f\"}\nmetrics:\n  - {name: a, source: r, measure: oldest_age_seconds, rabbitmq: {queue: q}}\n".into(),
                mentions: &["metrics[0] (a).rabbitmq", "not available over AMQP"],
            },
            Case {
                name: "rabbitmq pattern over amqp",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672/%2f\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue_pattern: \"^x\"}}\n".into(),
                mentions: &["queue_pattern", "AMQP cannot list queues"],
            },
            Case {
                name: "rabbitmq vhost other than amqp_url's",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672/jobs\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {vhost: other, queue: q}}\n".into(),
                mentions: &["metrics[0] (a).rabbitmq.vhost", "\"other\"", "\"jobs\"", "amqp_url"],
            },
            Case {
                name: "rabbitmq amqp_url path of two segments",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672/a/b\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue: q}}\n".into(),
                mentions: &["sources.r.rabbitmq.amqp_url", "%2F"],
            },
            Case {
                name: "rabbitmq bad regex",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue_pattern: \"(\"}}\n".into(),
                mentions: &["queue_pattern", "not a valid regex"],
            },
            Case {
                name: "redis measure on rabbitmq",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: lag, rabbitmq: {queue: q}}\n".into(),
                mentions: &["measure lag is not available from RabbitMQ"],
            },
            Case {
                name: "unknown library",
                yaml: m("{name: a, source: jobs, measure: length, redis: {library: resque, queue: q}}"),
                mentions: &["metrics[0]", "library", "unknown variant `resque`", "bullmq"],
            },
            Case {
                name: "unknown field in a library block, with the generic knobs",
                yaml: m("{name: a, source: jobs, measure: length, redis: {library: bullmq, queue: q, type: list}}"),
                mentions: &["unknown field `type`", "`library`, `queue`, `prefix`"],
            },
            Case {
                name: "inner path of a generic block",
                yaml: m("{name: a, source: jobs, measure: oldest_age_seconds, redis: {type: list, key: q, timestamp: {json_pointer: /t, unit: hours}}}"),
                mentions: &["redis: timestamp.unit", "unknown variant `hours`"],
            },
            Case {
                name: "library measure it has not",
                yaml: m("{name: a, source: jobs, measure: lag, redis: {library: rq, queue: q}}"),
                mentions: &["metrics[0] (a).redis", "measure lag does not apply to a job library's queue", "in_flight"],
            },
            Case {
                name: "star in a list of queues",
                yaml: m("{name: a, source: jobs, measure: length, redis: {library: rq, queue: [a, \"*\"]}}"),
                mentions: &["redis.queue", "stands alone"],
            },
            Case {
                name: "prefix for a library without one",
                yaml: m("{name: a, source: jobs, measure: length, redis: {library: sidekiq, queue: q, prefix: ns}}"),
                mentions: &["redis.prefix", "take no prefix"],
            },
            Case {
                name: "a preset's labels set by hand",
                yaml: m("{name: a, source: jobs, measure: length, labels: {queue: x}, redis: {library: rq, queue: q}}"),
                mentions: &["must not set \"queue\""],
            },
            Case {
                name: "also on a sorted set",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: zset, key: z, also: [{type: list, key: l}]}}"),
                mentions: &["redis.also", "only applies to type list"],
            },
            Case {
                name: "also of a hash",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, key: l, also: [{type: hash, key: h}]}}"),
                mentions: &["redis.also[0].type", "list or zset"],
            },
            Case {
                name: "match without a pattern",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, key: l, also: [{type: zset, key: \"{match}:p\"}]}}"),
                mentions: &["redis.also[0].key", "only applies with pattern"],
            },
            Case {
                name: "in_flight without in_progress",
                yaml: m("{name: a, source: jobs, measure: in_flight, redis: {type: zset, key: z}}"),
                mentions: &["needs in_progress"],
            },
            Case {
                name: "in_progress without id",
                yaml: m("{name: a, source: jobs, measure: ready, redis: {type: zset, key: z, in_progress: \"arq:in-progress\"}}"),
                mentions: &["redis.in_progress", "{id}"],
            },
            Case {
                name: "a hash has only length and its counters' rates",
                yaml: m("{name: a, source: jobs, measure: oldest_age_seconds, redis: {type: hash, key: unacked}}"),
                mentions: &["does not apply to type hash", "[\"length\", \"arrival_rate\", \"completion_rate\"]"],
            },
            Case {
                name: "a list keeps no counter",
                yaml: m("{name: a, source: jobs, measure: arrival_rate, redis: {type: list, key: q}}"),
                mentions: &["metrics[0] (a).redis", "keeps no count", "never inferred from length differences"],
            },
            Case {
                name: "a list has no drain time",
                yaml: m("{name: a, source: jobs, measure: drain_seconds, window: 30s, redis: {type: list, key: q}}"),
                mentions: &["does not apply to type list", "keeps no count"],
            },
            Case {
                name: "a hash counter needs its field",
                yaml: m("{name: a, source: jobs, measure: completion_rate, redis: {type: hash, key: 'bull:q:metrics:completed'}}"),
                mentions: &["needs field"],
            },
            Case {
                name: "a field is for counters",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: hash, key: h, field: count}}"),
                mentions: &["metrics[0] (a).redis.field", "only applies to arrival_rate and completion_rate"],
            },
            Case {
                name: "a stream's completions need its group",
                yaml: m("{name: a, source: jobs, measure: completion_rate, redis: {type: stream, key: s}}"),
                mentions: &["needs group"],
            },
            Case {
                name: "window only over a window",
                yaml: m("{name: a, source: jobs, measure: length, window: 30s, redis: {type: list, key: q}}"),
                mentions: &["metrics[0] (a).window", "not computed over a window"],
            },
            Case {
                name: "window at least a second",
                yaml: m("{name: a, source: jobs, measure: arrival_rate, window: 500ms, redis: {type: stream, key: s}}"),
                mentions: &["metrics[0] (a).window", "at least 1s"],
            },
            Case {
                name: "a counter's also keys are counters",
                yaml: m("{name: a, source: jobs, measure: completion_rate, redis: {type: string, key: c, also: [{type: list, key: l}]}}"),
                mentions: &["also[0].type", "must be string"],
            },
            Case {
                name: "workers_needed needs a target wait",
                yaml: m("{name: a, source: jobs, measure: workers_needed, workers: {deployment: w, namespace: ml}, redis: {type: stream, key: s, group: g}}"),
                mentions: &["metrics[0] (a)", "needs target_wait"],
            },
            Case {
                name: "workers_needed needs its workload",
                yaml: m("{name: a, source: jobs, measure: workers_needed, target_wait: 30s, redis: {type: stream, key: s, group: g}}"),
                mentions: &["needs workers"],
            },
            Case {
                name: "one workload kind",
                yaml: m("{name: a, source: jobs, measure: workers_needed, target_wait: 30s, workers: {deployment: w, statefulset: w, namespace: ml}, redis: {type: stream, key: s, group: g}}"),
                mentions: &["metrics[0] (a).workers", "exactly one of deployment or statefulset"],
            },
            Case {
                name: "a workload name is a Kubernetes name",
                yaml: m("{name: a, source: jobs, measure: workers_needed, target_wait: 30s, workers: {deployment: Embed_Workers, namespace: ml}, redis: {type: stream, key: s, group: g}}"),
                mentions: &["workers.name", "not a Kubernetes object name"],
            },
            Case {
                name: "target_wait only for workers_needed",
                yaml: m("{name: a, source: jobs, measure: lag, target_wait: 30s, redis: {type: stream, key: s, group: g}}"),
                mentions: &["metrics[0] (a).target_wait", "only applies to measure workers_needed"],
            },
            Case {
                name: "workers_needed is one queue",
                yaml: m("{name: a, source: jobs, measure: workers_needed, target_wait: 30s, workers: {deployment: w, namespace: ml}, redis: {library: bullmq, queue: \"*\"}}"),
                mentions: &["redis.queue", "name one queue"],
            },
            Case {
                name: "workers_needed is one key",
                yaml: m("{name: a, source: jobs, measure: workers_needed, target_wait: 30s, workers: {deployment: w, namespace: ml}, redis: {type: stream, pattern: \"s:*\", group: g}}"),
                mentions: &["redis.pattern", "give key"],
            },
            Case {
                name: "rabbitmq drain time is over the broker's rates",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: drain_seconds, window: 30s, rabbitmq: {queue: q}}\n".into(),
                mentions: &["metrics[0] (a).window", "not computed over a window"],
            },
            Case {
                name: "rabbitmq library without its queue",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: length, rabbitmq: {library: celery, queue_pattern: \"^e\"}}\n".into(),
                mentions: &["metrics[0] (a).rabbitmq.queue", "names its queue"],
            },
            Case {
                name: "rabbitmq library with a timestamp unit",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: length, rabbitmq: {library: dramatiq, queue: q, timestamp_unit: ms}}\n".into(),
                mentions: &["rabbitmq.timestamp_unit", "does not apply with library"],
            },
            Case {
                name: "rabbitmq library measure over AMQP",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672\"}\nmetrics:\n  - {name: a, source: r, measure: in_flight, rabbitmq: {library: celery, queue: q}}\n".into(),
                mentions: &["celery in_flight is read as the queue's unacked", "AMQP cannot tell"],
            },
            Case {
                name: "a job library's measure without library",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: in_flight, rabbitmq: {queue: q}}\n".into(),
                mentions: &["measure in_flight is a job library's: add library"],
            },
            Case {
                name: "redis block on a rabbitmq metric",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue: q}, redis: {type: list, key: q}}\n".into(),
                mentions: &["metrics[0] (a).redis", "remove the `redis:` block"],
            },
            Case {
                name: "reserved rabbitmq label",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: ready, labels: {vhost: x}, rabbitmq: {queue: q}}\n".into(),
                mentions: &["must not set \"vhost\""],
            },
            Case {
                name: "two kinds in one source",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://x\"}\n    redis: {url: \"redis://x\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue: q}}\n".into(),
                mentions: &["exactly one kind"],
            },
            Case {
                name: "nats metric without a consumer",
                yaml: "sources:\n  n:\n    nats: {servers: [\"nats://127.0.0.1:4222\"]}\nmetrics:\n  - {name: a, source: n, measure: lag, nats: {stream: JOBS}}\n".into(),
                mentions: &["metrics[0] (a).nats", "name it with consumer"],
            },
            Case {
                name: "nats source without a server",
                yaml: "sources:\n  n:\n    nats: {servers: []}\nmetrics:\n  - {name: a, source: n, measure: length, nats: {stream: JOBS}}\n".into(),
                mentions: &["sources.n.nats.servers", "at least one server"],
            },
            Case {
                name: "nats window on a gauge",
                yaml: "sources:\n  n:\n    nats: {servers: [\"nats://127.0.0.1:4222\"]}\nmetrics:\n  - {name: a, source: n, measure: lag, window: 5s, nats: {stream: JOBS, consumer: w}}\n".into(),
                mentions: &["metrics[0] (a).window", "not computed over a window"],
            },
            Case {
                name: "postgres url with a password",
                yaml: "sources:\n  p:\n    postgres: {url: \"postgres://r:hunter2@db/app\"}\nmetrics:\n  - {name: a, source: p, measure: length, postgres: {library: river, queue: q}}\n".into(),
                mentions: &["sources.p.postgres", "password_file"],
            },
            Case {
                name: "postgres measure a library keeps no",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: failed, postgres: {library: pgmq, queue: q}}\n".into(),
                mentions: &["metrics[0] (a).postgres", "pgmq keeps no failed"],
            },
            Case {
                name: "postgres rate of a library that keeps no finish time",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: arrival_rate, postgres: {library: oban, queue: q}}\n".into(),
                mentions: &["metrics[0] (a).postgres", "oban has no arrival_rate", "Pruner"],
            },
            Case {
                name: "postgres rate of a described table",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: completion_rate, postgres: {table: {name: jobs, ready: [{column: a, is_null: true}]}}}\n".into(),
                mentions: &["metrics[0] (a).postgres.table", "not read from a table"],
            },
            Case {
                name: "postgres rate of a query",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: arrival_rate, postgres: {query: \"select count(*) as value from jobs\"}}\n".into(),
                mentions: &["metrics[0] (a).postgres", "river, good-job, solid-queue"],
            },
            Case {
                name: "postgres workers_needed",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: workers_needed, target_wait: 30s, workers: {deployment: w, namespace: ml}, postgres: {library: river, queue: q}}\n".into(),
                mentions: &["metrics[0] (a).postgres", "not read from PostgreSQL"],
            },
            Case {
                name: "postgres drain window at least a second",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: drain_seconds, window: 500ms, postgres: {library: river, queue: q}}\n".into(),
                mentions: &["metrics[0] (a).window", "at least 1s"],
            },
            Case {
                name: "postgres two targets",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: length, postgres: {library: oban, table: {name: jobs, ready: [{column: a, is_null: true}]}}}\n".into(),
                mentions: &["exactly one of library"],
            },
            Case {
                name: "postgres query with two statements",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: length, postgres: {query: \"select 1 as value; delete from jobs\"}}\n".into(),
                mentions: &["metrics[0] (a).postgres.query", "one statement"],
            },
            Case {
                name: "postgres quoted schema",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: length, postgres: {library: river, queue: q, schema: \"x; drop\"}}\n".into(),
                mentions: &["metrics[0] (a).postgres.schema", "plain identifier"],
            },
            Case {
                name: "reserved postgres label",
                yaml: "sources:\n  p:\n    postgres: {host: 127.0.0.1, dbname: app}\nmetrics:\n  - {name: a, source: p, measure: length, labels: {queue: x}, postgres: {library: river, queue: q}}\n".into(),
                mentions: &["must not set \"queue\""],
            },
            Case {
                name: "reserved nats label",
                yaml: "sources:\n  n:\n    nats: {servers: [\"nats://127.0.0.1:4222\"]}\nmetrics:\n  - {name: a, source: n, measure: lag, labels: {consumer: x}, nats: {stream: JOBS, consumer: w}}\n".into(),
                mentions: &["must not set \"consumer\""],
            },
            Case {
                name: "zero interval",
                yaml: format!("poll_interval: 0s\n{}", m("{name: a, source: jobs, measure: length, redis: {type: list, key: q}}")),
                mentions: &["poll_interval", "greater than zero"],
            },
        ];
        for c in cases {
            let err = load(&c.yaml).expect_err(c.name).to_string();
            for want in c.mentions {
                assert!(
                    err.contains(want),
                    "case {}: {err:?} should mention {want:?}",
                    c.name
                );
            }
        }
    }
}
