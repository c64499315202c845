//! The Redis source against the real server: every queue idiom the adapter reads, served through
//! the external metrics API. Each test uses its own key prefix and removes its keys.

mod common;

use queue_metrics_adapter::apimachinery::label::encode_value;

use common::{
    Adapter, Cleanup, cmd, connect, prefix, quantity, redis_url, server_now_ms, single_value,
};

fn config(metrics: &str) -> String {
    format!(
        "poll_interval: 200ms\ndiscovery_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n{metrics}",
        redis_url()
    )
}

fn assert_age(got: f64, want: f64) {
    assert!(
        (got - want).abs() < 1.5,
        "age {got} should be within 1.5 s of {want}"
    );
}

#[tokio::test]
async fn sidekiq_list_length_and_oldest_age() {
    let p = prefix("sidekiq");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let now = server_now_ms(&mut c).await;
    let key = format!("{p}queue:embed");
    // LPUSH: the oldest job ends up at the tail (index -1), as in Sidekiq.
    for age_ms in [42_000, 10_000, 1_000] {
        let job = format!(
            r#"{{"class":"EmbedJob","args":[1],"enqueued_at":{},"created_at":{}}}"#,
            now - age_ms,
            now - age_ms
        );
        cmd::<i64>(&mut c, &["LPUSH", &key, &job]).await;
    }
    let a = Adapter::start(&config(&format!(
        "  - {{name: len, source: jobs, measure: length, labels: {{queue: embed}}, redis: {{type: list, key: \"{key}\"}}}}\n  - {{name: age, source: jobs, measure: oldest_age_seconds, redis: {{type: list, key: \"{key}\", oldest_at: tail, timestamp: {{json_pointer: /enqueued_at, unit: ms}}}}}}\n"
    )))
    .await;
    a.polls(1).await;
    let (status, body) = a.metric("len", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["value"], "3");
    assert_eq!(body["items"][0]["metricLabels"]["queue"], "embed");
    let (status, body) = a.metric("age", None).await;
    assert_eq!(status, 200, "{body}");
    assert_age(single_value(&body), 42.0);
    a.stop().await;
}

#[tokio::test]
async fn rq_list_age_comes_from_the_job_hash() {
    let p = prefix("rq");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let now = server_now_ms(&mut c).await;
    let queue = format!("{p}rq:queue:default");
    // RQ: RPUSH of job ids, oldest at the head; the enqueue time is an ISO string in rq:job:<id>.
    for (id, age_s) in [("job-a", 30), ("job-b", 5)] {
        cmd::<i64>(&mut c, &["RPUSH", &queue, id]).await;
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(
            ((now - age_s * 1000) as i128) * 1_000_000,
        )
        .expect("time");
        let iso = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            at.year(),
            at.month() as u8,
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.microsecond()
        );
        cmd::<i64>(
            &mut c,
            &[
                "HSET",
                &format!("{p}rq:job:{id}"),
                "enqueued_at",
                &iso,
                "status",
                "queued",
            ],
        )
        .await;
    }
    let a = Adapter::start(&config(&format!(
        "  - {{name: rq-age, source: jobs, measure: oldest_age_seconds, redis: {{type: list, key: \"{queue}\", oldest_at: head, timestamp: {{hash: \"{p}rq:job:{{id}}\", field: enqueued_at, unit: rfc3339}}}}}}\n"
    )))
    .await;
    a.polls(1).await;
    let (status, body) = a.metric("rq-age", None).await;
    assert_eq!(status, 200, "{body}");
    assert_age(single_value(&body), 30.0);
    // The job hash disappearing is an error for the series, never an age of 0.
    cmd::<i64>(&mut c, &["DEL", &format!("{p}rq:job:job-a")]).await;
    a.polls(2).await;
    let (status, body) = a.metric("rq-age", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("has no field \"enqueued_at\""),
        "{body}"
    );
    a.stop().await;
}

#[tokio::test]
async fn bullmq_wait_list_age_comes_from_the_job_hash_timestamp() {
    let p = prefix("bullmq");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let now = server_now_ms(&mut c).await;
    let wait = format!("{p}bull:embed:wait");
    for (id, age_ms) in [("1", 20_000), ("2", 2_000)] {
        cmd::<i64>(&mut c, &["LPUSH", &wait, id]).await;
        cmd::<i64>(
            &mut c,
            &[
                "HSET",
                &format!("{p}bull:embed:{id}"),
                "timestamp",
                &(now - age_ms).to_string(),
                "name",
                "embed",
            ],
        )
        .await;
    }
    let a = Adapter::start(&config(&format!(
        "  - {{name: bull-age, source: jobs, measure: oldest_age_seconds, redis: {{type: list, key: \"{wait}\", timestamp: {{hash: \"{p}bull:embed:{{id}}\", field: timestamp, unit: ms}}}}}}\n  - {{name: bull-len, source: jobs, measure: length, redis: {{type: list, key: \"{wait}\"}}}}\n"
    )))
    .await;
    a.polls(1).await;
    assert_age(single_value(&a.metric("bull-age", None).await.1), 20.0);
    assert_eq!(single_value(&a.metric("bull-len", None).await.1), 2.0);
    a.stop().await;
}

#[tokio::test]
async fn celery_priority_sub_lists_are_summed() {
    let p = prefix("celery");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let q = format!("{p}celery");
    cmd::<i64>(&mut c, &["LPUSH", &q, "m1", "m2"]).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{q}\x06\x163"), "m3"]).await;
    cmd::<i64>(
        &mut c,
        &["LPUSH", &format!("{q}\x06\x169"), "m4", "m5", "m6"],
    )
    .await;
    let a = Adapter::start(&config(&format!(
        "  - {{name: celery-len, source: jobs, measure: length, redis: {{type: list, key: \"{q}\", kombu_priority_steps: [3, 6, 9]}}}}\n"
    )))
    .await;
    a.polls(1).await;
    assert_eq!(single_value(&a.metric("celery-len", None).await.1), 6.0);
    a.stop().await;
}

#[tokio::test]
async fn stream_group_lag_pending_and_ages() {
    let p = prefix("stream");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let s = format!("{p}requests");
    let now = server_now_ms(&mut c).await;
    cmd::<String>(
        &mut c,
        &["XGROUP", "CREATE", &s, "workers", "$", "MKSTREAM"],
    )
    .await;
    // Six entries with IDs 60..55 s in the past; a consumer takes two and leaves them unacked.
    for i in 0..6 {
        cmd::<String>(
            &mut c,
            &[
                "XADD",
                &s,
                &format!("{}-0", now - 60_000 + i * 1000),
                "doc",
                &i.to_string(),
            ],
        )
        .await;
    }
    let _: redis::Value = cmd(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "w1",
            "COUNT",
            "2",
            "STREAMS",
            &s,
            ">",
        ],
    )
    .await;
    let m = |name: &str, measure: &str| {
        format!(
            "  - {{name: {name}, source: jobs, measure: {measure}, redis: {{type: stream, key: \"{s}\", group: workers}}}}\n"
        )
    };
    let metrics = [
        m("s-len", "length"),
        m("s-lag", "lag"),
        m("s-pending", "pending"),
        m("s-pending-age", "oldest_pending_age_seconds"),
        m("s-unprocessed-age", "oldest_unprocessed_age_seconds"),
    ]
    .concat();
    let a = Adapter::start(&config(&metrics)).await;
    a.polls(1).await;
    assert_eq!(single_value(&a.metric("s-len", None).await.1), 6.0);
    assert_eq!(single_value(&a.metric("s-lag", None).await.1), 4.0);
    assert_eq!(single_value(&a.metric("s-pending", None).await.1), 2.0);
    assert_age(single_value(&a.metric("s-pending-age", None).await.1), 60.0);
    assert_age(
        single_value(&a.metric("s-unprocessed-age", None).await.1),
        60.0,
    );

    // Ack both: nothing pending, so the oldest unprocessed is the first undelivered entry (58 s).
    let pending: Vec<Vec<redis::Value>> =
        cmd(&mut c, &["XPENDING", &s, "workers", "-", "+", "10"]).await;
    for entry in pending {
        if let redis::Value::BulkString(id) = &entry[0] {
            cmd::<i64>(
                &mut c,
                &["XACK", &s, "workers", &String::from_utf8_lossy(id)],
            )
            .await;
        }
    }
    a.polls(2).await;
    assert_eq!(single_value(&a.metric("s-pending", None).await.1), 0.0);
    assert_eq!(
        single_value(&a.metric("s-pending-age", None).await.1),
        0.0,
        "nothing pending: age 0"
    );
    assert_age(
        single_value(&a.metric("s-unprocessed-age", None).await.1),
        58.0,
    );

    // XDEL of an undelivered entry makes Redis 7.0 report lag nil: an error, never 0.
    let first_undelivered = format!("{}-0", now - 58_000);
    cmd::<i64>(&mut c, &["XDEL", &s, &first_undelivered]).await;
    a.polls(2).await;
    let (status, body) = a.metric("s-lag", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot tell the lag"),
        "{body}"
    );
    a.stop().await;
}

#[tokio::test]
async fn stream_with_a_missing_group_or_a_missing_stream_is_an_error() {
    let p = prefix("stream-missing");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let s = format!("{p}s");
    cmd::<String>(&mut c, &["XADD", &s, "*", "doc", "1"]).await;
    let a = Adapter::start(&config(&format!(
        "  - {{name: lag-nogroup, source: jobs, measure: lag, redis: {{type: stream, key: \"{s}\", group: nope}}}}\n  - {{name: lag-nostream, source: jobs, measure: lag, redis: {{type: stream, key: \"{p}absent\", group: g}}}}\n"
    )))
    .await;
    a.polls(1).await;
    let (status, body) = a.metric("lag-nogroup", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("consumer group \"nope\" does not exist"),
        "{body}"
    );
    // Redis never deletes a stream by itself: a missing one is a typo or a deletion, not 0.
    let (status, body) = a.metric("lag-nostream", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("stream \"{p}absent\" does not exist in db 0")),
        "{body}"
    );
    a.stop().await;
}

#[tokio::test]
async fn delay_zset_length_ready_and_overdue_age() {
    let p = prefix("zset");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let z = format!("{p}schedule");
    let now_s = server_now_ms(&mut c).await as f64 / 1000.0;
    for (member, offset) in [("overdue-a", -25.0), ("overdue-b", -3.0), ("later", 600.0)] {
        cmd::<i64>(
            &mut c,
            &["ZADD", &z, &format!("{}", now_s + offset), member],
        )
        .await;
    }
    let m = |name: &str, measure: &str| {
        format!(
            "  - {{name: {name}, source: jobs, measure: {measure}, redis: {{type: zset, key: \"{z}\", score_unit: s}}}}\n"
        )
    };
    let a = Adapter::start(&config(
        &[
            m("z-len", "length"),
            m("z-ready", "ready"),
            m("z-age", "oldest_age_seconds"),
        ]
        .concat(),
    ))
    .await;
    a.polls(1).await;
    assert_eq!(single_value(&a.metric("z-len", None).await.1), 3.0);
    assert_eq!(single_value(&a.metric("z-ready", None).await.1), 2.0);
    assert_age(single_value(&a.metric("z-age", None).await.1), 25.0);
    a.stop().await;
}

#[tokio::test]
async fn missing_keys_are_empty_queues_and_wrong_types_are_errors() {
    let p = prefix("missing");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let hash = format!("{p}not-a-list");
    cmd::<i64>(&mut c, &["HSET", &hash, "a", "1"]).await;
    let a = Adapter::start(&config(&format!(
        "  - {{name: absent-len, source: jobs, measure: length, redis: {{type: list, key: \"{p}absent\"}}}}\n  - {{name: absent-age, source: jobs, measure: oldest_age_seconds, redis: {{type: list, key: \"{p}absent\", timestamp: {{json_pointer: /t, unit: ms}}}}}}\n  - {{name: wrong-type, source: jobs, measure: length, redis: {{type: list, key: \"{hash}\"}}}}\n"
    )))
    .await;
    a.polls(1).await;
    let (status, body) = a.metric("absent-len", None).await;
    assert_eq!(
        (status, body["items"][0]["value"].as_str()),
        (200, Some("0")),
        "an empty queue is 0: {body}"
    );
    let (status, body) = a.metric("absent-age", None).await;
    assert_eq!(
        (status, body["items"][0]["value"].as_str()),
        (200, Some("0")),
        "an empty queue has age 0: {body}"
    );
    let (status, body) = a.metric("wrong-type", None).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.contains("is not a list") && message.contains(&hash),
        "{body}"
    );
    a.stop().await;
}

#[tokio::test]
async fn an_unparsable_timestamp_is_an_error_not_zero() {
    let p = prefix("badts");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let key = format!("{p}q");
    cmd::<i64>(&mut c, &["LPUSH", &key, r#"{"enqueued_at":"soon"}"#]).await;
    let a = Adapter::start(&config(&format!(
        "  - {{name: age, source: jobs, measure: oldest_age_seconds, redis: {{type: list, key: \"{key}\", timestamp: {{json_pointer: /enqueued_at, unit: ms}}}}}}\n"
    )))
    .await;
    a.polls(1).await;
    let (status, body) = a.metric("age", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a number"),
        "{body}"
    );
    a.stop().await;
}

#[tokio::test]
async fn pattern_metrics_serve_one_series_per_key_and_follow_new_keys() {
    let p = prefix("pattern");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}queue:embed"), "a", "b"]).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}queue:rerank"), "a"]).await;
    // A hash under the same pattern is not a queue: SCAN ... TYPE list leaves it out.
    cmd::<i64>(&mut c, &["HSET", &format!("{p}queue:stats"), "a", "1"]).await;
    let a = Adapter::start(&config(&format!(
        "  - {{name: queues, source: jobs, measure: length, labels: {{team: ml}}, redis: {{type: list, pattern: \"{p}queue:*\"}}}}\n"
    )))
    .await;
    a.polls(1).await;
    let (status, body) = a.metric("queues", None).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{body}");
    let (_, embed) = a.metric("queues", Some("queue=embed")).await;
    assert_eq!(single_value(&embed), 2.0);
    // The full key, encoded: `:` is not valid in a label value (apimachinery::label::encode_value).
    assert_eq!(
        embed["items"][0]["metricLabels"]["key"],
        encode_value(&format!("{p}queue:embed")).as_ref()
    );
    assert_eq!(embed["items"][0]["metricLabels"]["team"], "ml");
    let (_, both) = a
        .metric("queues", Some("queue in (embed,rerank),team=ml"))
        .await;
    let sum: f64 = both["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| quantity(i["value"].as_str().expect("v")))
        .sum();
    assert_eq!(sum, 3.0);
    let (status, none) = a.metric("queues", Some("queue=nope")).await;
    assert_eq!(
        (status, none["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "no match is an empty list: {none}"
    );

    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}queue:new"), "x"]).await;
    let mut found = false;
    for _ in 0..50 {
        a.polls(1).await;
        if a.metric("queues", Some("queue=new")).await.1["items"]
            .as_array()
            .is_some_and(|v| v.len() == 1)
        {
            found = true;
            break;
        }
    }
    assert!(found, "a new key matching the pattern is discovered");
    a.stop().await;
}

/// After the first discovery, a scan on one server runs beside the polls: the poll that starts it
/// still reads the keys it knew (a scan of a large keyspace would otherwise hold it back), and
/// the next poll takes the keys the scan found.
#[tokio::test]
async fn later_discoveries_run_beside_the_polls_and_the_next_poll_takes_their_keys() {
    use queue_metrics_adapter::config::Config;
    use queue_metrics_adapter::sources::Source;
    use queue_metrics_adapter::sources::redis::{Redis, RedisSource};

    let p = prefix("background");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    for q in ["a", "b"] {
        cmd::<i64>(&mut c, &["LPUSH", &format!("{p}q:{q}"), "job"]).await;
    }
    let yaml = format!(
        "discovery_interval: 100ms\nsources:\n  jobs:\n    redis: {{url: \"{}\", wake: {{enabled: false}}}}\nmetrics:\n  - {{name: len, source: jobs, measure: length, redis: {{type: list, pattern: \"{p}q:*\"}}}}\n",
        redis_url()
    );
    let config = Config::from_yaml(&yaml, std::path::Path::new("t.yaml")).expect("config");
    let spec = config.spec_of::<Redis>("jobs").expect("a redis source");
    let mut source = RedisSource::new(&spec, None).expect("source");
    let keys = |samples: &[queue_metrics_adapter::model::Sample]| -> Vec<String> {
        let mut k: Vec<String> = samples
            .iter()
            .map(|s| s.labels.get("queue").expect("a queue label").to_string())
            .collect();
        k.sort();
        k
    };
    // The first discovery runs inside the first poll: nothing is known before it.
    assert_eq!(keys(&source.poll().await.expect("poll")), ["a", "b"]);
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}q:c"), "job"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    // Discovery is due: this poll starts it and reads the keys it knew.
    assert_eq!(keys(&source.poll().await.expect("poll")), ["a", "b"]);
    let mut found = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        found = keys(&source.poll().await.expect("poll"));
        if found.len() == 3 {
            break;
        }
    }
    assert_eq!(
        found,
        ["a", "b", "c"],
        "the scan's keys are taken by a later poll"
    );
}
