//! `discover`, against what the job libraries' real clients wrote: on a private Redis,
//! Sidekiq, RQ and dramatiq in db 0, BullMQ in db 1, Celery in db 2, and a key of nobody's; in
//! a RabbitMQ vhost, Celery and dramatiq queues and a queue of nobody's. The config it prints
//! loads, is served, and gives the same values as the presets written by hand; every library
//! queue is in it, the stray key and queue are counted, not served; and it wrote nothing (the
//! Redis command statistics, and every key's `DUMP`, are unchanged).

mod common;

use std::time::Duration;

use common::job_libraries::{celery_python, node, python, ruby};
use common::rabbit::{TestVhost, encode};
use common::redis_topology::{command_calls, dumps, ran_between, write_commands};
use common::{Adapter, RedisProcess, cmd, connect, quantity};
use queue_metrics_adapter::cli::discover::DiscoverArgs;

const LIMIT: Duration = Duration::from_secs(60);

const SIDEKIQ: &str = r#"
require "sidekiq"
Sidekiq.configure_client { |config| config.redis = { url: ARGV[0] } }
3.times { |n| Sidekiq::Client.push("queue" => "embed", "class" => "EmbedJob", "args" => [n]) }
"#;

const RQ: &str = r#"
import sys
from redis import Redis
from rq import Queue
q = Queue("rerank", connection=Redis.from_url(sys.argv[1]))
for n in range(2):
    q.enqueue("builtins.abs", n)
"#;

const DRAMATIQ_REDIS: &str = r#"
import sys
import dramatiq
from dramatiq.brokers.redis import RedisBroker
broker = RedisBroker(url=sys.argv[1])
dramatiq.set_broker(broker)
@dramatiq.actor(queue_name="ocr")
def ocr(n):
    pass
for n in range(4):
    ocr.send(n)
"#;

const BULLMQ: &str = r#"
const { Queue } = require('bullmq');
const u = new URL(process.argv[1]);
const connection = { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1) || 0) };
(async () => {
  const q = new Queue('thumbs', { connection });
  for (let n = 0; n < 3; n++) await q.add('t', { n });
  await q.add('t', { n: 9 }, { priority: 2 });
  await q.close();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

const CELERY: &str = r#"
import sys
from celery import Celery
app = Celery("tasks", broker=sys.argv[1])
for n, priority in [(0, None), (1, 5)]:
    app.send_task("t", args=[n], queue=sys.argv[2], priority=priority)
"#;

const DRAMATIQ_AMQP: &str = r#"
import sys
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
broker = RabbitmqBroker(url=sys.argv[1])
dramatiq.set_broker(broker)
@dramatiq.actor(queue_name="ocr")
def ocr(n):
    pass
for n in range(3):
    ocr.send(n)
broker.close()
"#;

/// The value of `metric`'s one series, polled by `a`.
async fn value(a: &Adapter, metric: &str) -> f64 {
    let (status, body) = a
        .wait_for(metric, None, Duration::from_secs(20), |s, b| {
            s == 200 && b["items"].as_array().is_some_and(|i| i.len() == 1)
        })
        .await;
    assert_eq!(status, 200, "{body}");
    quantity(body["items"][0]["value"].as_str().expect("value"))
}

#[tokio::test]
async fn discover_finds_every_library_queue_in_every_db_and_writes_nothing() {
    let server = RedisProcess::start().await;
    let url = format!("redis://127.0.0.1:{}", server.port);
    let db = |n: u8| format!("{url}/{n}");
    ruby(SIDEKIQ, &[&db(0)], LIMIT).await;
    python(RQ, &[&db(0)], LIMIT).await;
    python(DRAMATIQ_REDIS, &[&db(0)], LIMIT).await;
    node(BULLMQ, &[&db(1)], LIMIT).await;
    celery_python(CELERY, &[&db(2), "embed"], LIMIT).await;
    let mut c = connect(&url).await;
    let _: String = cmd(&mut c, &["SET", "someone:else", "x"]).await;
    let _: String = cmd(&mut c, &["CONFIG", "RESETSTAT"]).await;
    let mut before = Vec::new();
    for n in 0..3 {
        let mut c = connect(&db(n)).await;
        before.push(dumps(&mut c, "").await);
    }
    let calls_before = command_calls(&mut c).await;

    let found = queue_metrics_adapter::discover::run(&DiscoverArgs {
        redis: vec![url.clone()],
        ..Default::default()
    })
    .await
    .expect("discover");
    let config = &found.config;
    for (metric, source) in [
        ("sidekiq_embed_length", "redis1_db0"),
        ("rq_rerank_length", "redis1_db0"),
        ("dramatiq_ocr_length", "redis1_db0"),
        ("bullmq_thumbs_length", "redis1_db1"),
        ("celery_embed_length", "redis1_db2"),
        ("sidekiq_embed_oldest_age_seconds", "redis1_db0"),
        ("bullmq_thumbs_oldest_age_seconds", "redis1_db1"),
    ] {
        assert!(
            config.contains(&format!("{{name: {metric}, source: {source},")),
            "{metric} in {source}:\n{config}"
        );
    }
    assert!(
        !config.contains("celery_embed_oldest_age_seconds"),
        "Celery records no time: no age metric\n{config}"
    );
    assert!(
        found
            .summary
            .contains("redis1_db0: 1 key(s) no library found explains"),
        "{}",
        found.summary
    );
    // Nothing was written: no write command ran, every key is as it was.
    let ran = ran_between(&calls_before, &command_calls(&mut c).await);
    let writes = write_commands(&mut c, &ran).await;
    assert!(writes.is_empty(), "discover ran {writes:?} ({ran:?})");
    for n in 0..3u8 {
        let mut c = connect(&db(n)).await;
        assert_eq!(dumps(&mut c, "").await, before[usize::from(n)], "db {n}");
    }

    // Served, the discovered metrics equal the presets written by hand.
    let by_hand = "  - {name: hand_sidekiq, source: redis1_db0, measure: length, redis: {library: sidekiq, queue: embed}}\n  - {name: hand_rq, source: redis1_db0, measure: length, redis: {library: rq, queue: rerank}}\n  - {name: hand_dramatiq, source: redis1_db0, measure: length, redis: {library: dramatiq, queue: ocr}}\n  - {name: hand_bullmq, source: redis1_db1, measure: length, redis: {library: bullmq, queue: thumbs}}\n  - {name: hand_celery, source: redis1_db2, measure: length, redis: {library: celery, queue: embed}}\n";
    let a = Adapter::start(&format!("poll_interval: 200ms\n{config}{by_hand}")).await;
    for (discovered, hand, want) in [
        ("sidekiq_embed_length", "hand_sidekiq", 3.0),
        ("rq_rerank_length", "hand_rq", 2.0),
        ("dramatiq_ocr_length", "hand_dramatiq", 4.0),
        ("bullmq_thumbs_length", "hand_bullmq", 4.0),
        ("celery_embed_length", "hand_celery", 2.0),
    ] {
        assert_eq!(value(&a, discovered).await, want, "{discovered}");
        assert_eq!(value(&a, hand).await, want, "{hand}");
    }
    a.stop().await;
}

#[tokio::test]
async fn discover_finds_celery_and_dramatiq_queues_in_a_rabbitmq_vhost() {
    let vhost = TestVhost::new("discover").await;
    let amqp = format!("amqp://guest:guest@127.0.0.1:5672/{}", encode(&vhost.name));
    celery_python(CELERY, &[&amqp, "embed"], LIMIT).await;
    python(DRAMATIQ_AMQP, &[&amqp], LIMIT).await;
    common::rabbit::publish_persistent(&amqp, "someone-else", &["x"]).await;
    // SAFETY: every test sets the same value; none removes it.
    unsafe { std::env::set_var("QMA_TEST_DISCOVER_PASSWORD", "guest") };
    let found = queue_metrics_adapter::discover::run(&DiscoverArgs {
        rabbitmq_management: vec![common::rabbit::MANAGEMENT.into()],
        username: Some("guest".into()),
        password_env: Some("QMA_TEST_DISCOVER_PASSWORD".into()),
        ..Default::default()
    })
    .await
    .expect("discover");
    let config = &found.config;
    let vhost_field = format!("vhost: \"{}\"", vhost.name);
    let ours: Vec<&str> = config
        .lines()
        .filter(|l| l.contains(&vhost_field))
        .collect();
    let has = |needle: &str| ours.iter().any(|l| l.contains(needle));
    assert!(
        has("library: celery, queue: \"embed\"") && has("measure: length"),
        "{config}"
    );
    assert!(has("library: dramatiq, queue: \"ocr\""), "{config}");
    assert!(
        has("measure: delayed") && has("measure: failed"),
        "dramatiq's delay and dead-letter queues as their measures\n{config}"
    );
    assert!(
        !ours
            .iter()
            .any(|l| l.contains("someone-else") || l.contains("ocr.DQ")),
        "{config}"
    );
    assert!(
        found
            .summary
            .contains(&format!("vhost {:?}: 1 queue(s) no library", vhost.name)),
        "{}",
        found.summary
    );
    assert!(
        config.contains("password_env: \"QMA_TEST_DISCOVER_PASSWORD\"")
            && !config.contains("guest\"}"),
        "the password is named, never written\n{config}"
    );
    // Served, the discovered metrics of this vhost equal the presets written by hand.
    let name_of = |library: &str, queue: &str| -> String {
        let line = ours
            .iter()
            .find(|l| {
                l.contains(&format!("library: {library}, queue: \"{queue}\""))
                    && l.contains("measure: length")
            })
            .unwrap_or_else(|| panic!("{library} {queue}: {config}"));
        let rest = line.split("name: ").nth(1).expect("a name");
        rest.split(',').next().expect("a name").to_string()
    };
    let (celery, dramatiq) = (name_of("celery", "embed"), name_of("dramatiq", "ocr"));
    let by_hand = format!(
        "  - {{name: hand_celery, source: rabbitmq1, measure: length, rabbitmq: {{vhost: \"{v}\", library: celery, queue: embed}}}}\n  - {{name: hand_dramatiq, source: rabbitmq1, measure: length, rabbitmq: {{vhost: \"{v}\", library: dramatiq, queue: ocr}}}}\n",
        v = vhost.name
    );
    let a = Adapter::start(&format!("poll_interval: 250ms\n{config}{by_hand}")).await;
    for (discovered, hand, want) in [
        (&celery, "hand_celery", 2.0),
        (&dramatiq, "hand_dramatiq", 3.0),
    ] {
        assert_eq!(
            value_is_eventually(&a, discovered, want).await,
            want,
            "{discovered}"
        );
        assert_eq!(value_is_eventually(&a, hand, want).await, want, "{hand}");
    }
    a.stop().await;
}

/// Waits (bounded) for `metric` to serve `want` (the management API's statistics lag), and
/// returns what it serves then.
async fn value_is_eventually(a: &Adapter, metric: &str, want: f64) -> f64 {
    let _ = a
        .wait_for(
            metric,
            None,
            Duration::from_secs(20),
            common::value_is(want),
        )
        .await;
    value(a, metric).await
}
