//! The adapter only reads. A private `redis-server` is loaded with every queue idiom, its command
//! statistics are reset, the adapter polls many times, and then: every command the server saw is
//! one Redis itself flags read-only (or a connection command such as `HELLO`, `CLIENT SETINFO`),
//! and every key's serialized content is byte-for-byte what it was.

mod common;

use std::collections::BTreeMap;

use common::{Adapter, RedisProcess, cmd, connect, server_now_ms};

/// Commands that Redis does not flag `readonly` but that change no data: connection set-up,
/// the server clock, and `CLIENT TRACKING` (a setting of the adapter's own connection that asks
/// to be told of key changes). The adapter may send these.
const CONNECTION_COMMANDS: &[&str] = &[
    "hello",
    "client|tracking",
    "client|setinfo",
    "client|setname",
    "auth",
    "select",
    "ping",
    "time",
];
/// What this test's own audit connection sends after resetting the statistics.
const AUDIT_COMMANDS: &[&str] = &["config|resetstat", "info"];

/// The flags of `name` (`xinfo|groups` for a subcommand) in a `COMMAND INFO` reply.
fn flags_of(doc: &redis::Value, name: &str) -> Option<Vec<String>> {
    let redis::Value::Array(entries) = doc else {
        return None;
    };
    for entry in entries {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let this = match fields.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        if this == name {
            // Flags are an array under RESP2 and a set under RESP3.
            let (Some(redis::Value::Array(flags)) | Some(redis::Value::Set(flags))) = fields.get(2)
            else {
                return Some(vec![]);
            };
            return Some(
                flags
                    .iter()
                    .filter_map(|f| match f {
                        redis::Value::SimpleString(s) => Some(s.clone()),
                        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).to_string()),
                        _ => None,
                    })
                    .collect(),
            );
        }
        // Subcommands are the tenth field, in the same shape.
        if let Some(found) = fields.get(9).and_then(|subs| flags_of(subs, name)) {
            return Some(found);
        }
    }
    None
}

#[tokio::test]
async fn polling_sends_only_read_commands_and_changes_no_key() {
    let redis = RedisProcess::start().await;
    let mut c = connect(&redis.url()).await;
    let now = server_now_ms(&mut c).await;
    cmd::<i64>(
        &mut c,
        &[
            "LPUSH",
            "queue:embed",
            &format!(r#"{{"enqueued_at":{}}}"#, now - 5000),
        ],
    )
    .await;
    cmd::<i64>(&mut c, &["RPUSH", "rq:queue:default", "j1"]).await;
    cmd::<i64>(
        &mut c,
        &[
            "HSET",
            "rq:job:j1",
            "enqueued_at",
            "2026-01-01T00:00:00.000000Z",
        ],
    )
    .await;
    cmd::<i64>(&mut c, &["LPUSH", "celery", "m"]).await;
    cmd::<i64>(&mut c, &["LPUSH", "celery\x06\x163", "m"]).await;
    cmd::<String>(&mut c, &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]).await;
    for i in 0..4 {
        cmd::<String>(&mut c, &["XADD", "s", "*", "n", &i.to_string()]).await;
    }
    let _: redis::Value = cmd(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ],
    )
    .await;
    // A second group that has read nothing: its oldest unprocessed entry needs XRANGE.
    cmd::<String>(&mut c, &["XGROUP", "CREATE", "s", "g2", "0"]).await;
    cmd::<i64>(
        &mut c,
        &[
            "ZADD",
            "schedule",
            &((now / 1000) - 10).to_string(),
            "due",
            &((now / 1000) + 100).to_string(),
            "later",
        ],
    )
    .await;

    // Job libraries' registries and keys, for the presets.
    cmd::<i64>(&mut c, &["SADD", "queues", "embed"]).await;
    cmd::<i64>(&mut c, &["SADD", "rq:queues", "rq:queue:default"]).await;
    cmd::<i64>(
        &mut c,
        &[
            "SADD",
            "_kombu.binding.celery",
            "celery\x06\x16\x06\x16celery",
        ],
    )
    .await;
    cmd::<i64>(&mut c, &["HSET", "unacked", "tag", "m"]).await;
    cmd::<i64>(&mut c, &["HSET", "bull:q:meta", "version", "bullmq:6"]).await;
    cmd::<i64>(&mut c, &["ZADD", "bull:q:prioritized", "4294967297", "1"]).await;
    cmd::<i64>(&mut c, &["HSET", "bull:q:1", "timestamp", &now.to_string()]).await;
    cmd::<i64>(&mut c, &["ZADD", "arq:queue", &now.to_string(), "a1"]).await;
    cmd::<String>(&mut c, &["SET", "arq:in-progress:a1", "1"]).await;
    cmd::<i64>(&mut c, &["SADD", "bq:q:failed", "7"]).await;
    // Counters: Sidekiq's processed count, BullMQ's job id and completion count.
    cmd::<String>(&mut c, &["SET", "stat:processed", "41"]).await;
    cmd::<String>(&mut c, &["SET", "bull:q:id", "9"]).await;
    cmd::<i64>(&mut c, &["HSET", "bull:q:metrics:completed", "count", "5"]).await;

    let keys: Vec<String> = cmd(&mut c, &["KEYS", "*"]).await;
    let mut before = BTreeMap::new();
    for k in &keys {
        let dump: Vec<u8> = cmd(&mut c, &["DUMP", k]).await;
        before.insert(k.clone(), dump);
    }
    let _: String = cmd(&mut c, &["CONFIG", "RESETSTAT"]).await;

    let lens = |name: &str, measure: &str, target: &str| {
        format!("  - {{name: {name}, source: r, measure: {measure}, redis: {target}}}\n")
    };
    let metrics = [
        lens("a", "length", "{type: list, pattern: \"queue:*\"}"),
        lens("b", "oldest_age_seconds", "{type: list, key: \"queue:embed\", timestamp: {json_pointer: /enqueued_at, unit: ms}}"),
        lens("c", "oldest_age_seconds", "{type: list, key: \"rq:queue:default\", oldest_at: head, timestamp: {hash: \"rq:job:{id}\", field: enqueued_at, unit: rfc3339}}"),
        lens("d", "length", "{type: list, key: celery, kombu_priority_steps: [3, 6, 9]}"),
        lens("e", "lag", "{type: stream, key: s, group: g}"),
        lens("f", "oldest_unprocessed_age_seconds", "{type: stream, key: s, group: g}"),
        lens("g", "oldest_pending_age_seconds", "{type: stream, key: s, group: g}"),
        lens("h", "ready", "{type: zset, key: schedule}"),
        lens("i", "oldest_age_seconds", "{type: zset, key: schedule}"),
        lens("j", "length", "{type: stream, key: s}"),
        lens("k", "oldest_unprocessed_age_seconds", "{type: stream, key: s, group: g2}"),
        lens("l", "arrival_rate", "{type: stream, key: s}"),
        lens("m", "completion_rate", "{type: stream, key: s, group: g}"),
        lens("n", "drain_seconds", "{type: stream, key: s, group: g}"),
        lens("o", "completion_rate", "{type: string, key: \"stat:processed\"}"),
        lens("p", "arrival_rate", "{type: hash, key: \"bull:q:metrics:completed\", field: count}"),
    ]
    .concat();
    let mut presets = String::new();
    for library in [
        "sidekiq",
        "rq",
        "celery",
        "dramatiq",
        "arq",
        "huey",
        "bullmq",
        "bee-queue",
    ] {
        for measure in [
            "length",
            "oldest_age_seconds",
            "in_flight",
            "due",
            "failed",
            "arrival_rate",
            "completion_rate",
            "drain_seconds",
        ] {
            let name = format!("{}_{measure}", library.replace('-', "_"));
            let target = format!("{{library: {library}, queue: \"*\"}}");
            presets.push_str(&lens(&name, measure, &target));
            let named = format!("{{library: {library}, queue: [q, embed]}}");
            presets.push_str(&lens(&format!("{name}_named"), measure, &named));
        }
    }
    let metrics = metrics + &presets;
    let a = Adapter::start(&format!(
        "poll_interval: 100ms\ndiscovery_interval: 100ms\nsources:\n  r:\n    redis: {{url: \"{}\"}}\nmetrics:\n{metrics}",
        redis.url()
    ))
    .await;
    a.polls(20).await;
    a.stop().await;

    let mut c = connect(&redis.url()).await;
    let info: String = cmd(&mut c, &["INFO", "commandstats"]).await;
    let mut seen = Vec::new();
    for line in info.lines().filter_map(|l| l.strip_prefix("cmdstat_")) {
        let name = line.split(':').next().unwrap_or_default().to_string();
        seen.push(name);
    }
    for expected in [
        "lindex",
        "hget",
        "xinfo|groups",
        "xinfo|stream",
        "get",
        "xpending",
        "xrange",
        "zcount",
        "zrange",
        "scan",
        "client|tracking",
        "smembers",
        "hlen",
        "scard",
        "exists",
        "zcard",
        "llen",
    ] {
        assert!(
            seen.iter().any(|c| c == expected),
            "the audit saw {expected} from the polls: {seen:?}"
        );
    }
    for name in &seen {
        if CONNECTION_COMMANDS.contains(&name.as_str()) || AUDIT_COMMANDS.contains(&name.as_str()) {
            continue;
        }
        let container = name.split('|').next().unwrap_or_default();
        let doc: redis::Value = cmd(&mut c, &["COMMAND", "INFO", container]).await;
        let flags = flags_of(&doc, name)
            .unwrap_or_else(|| panic!("COMMAND INFO has no entry for {name}: {doc:?}"));
        assert!(
            flags.iter().any(|f| f == "readonly"),
            "the adapter sent {name}, which is not read-only (flags {flags:?})"
        );
        assert!(
            !flags.iter().any(|f| f == "write"),
            "the adapter sent {name}, a write command"
        );
    }
    eprintln!("commands seen while polling: {seen:?}");
    for (k, dump) in &before {
        let now: Vec<u8> = cmd(&mut c, &["DUMP", k]).await;
        assert_eq!(&now, dump, "key {k} changed");
    }
    let keys_after: Vec<String> = cmd(&mut c, &["KEYS", "*"]).await;
    assert_eq!(keys_after.len(), keys.len(), "no key added or removed");
}
