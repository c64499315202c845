//! Job libraries on RabbitMQ, written by their real clients and drained by their real workers
//! (Celery 5.7 on py-amqp, dramatiq 2.2 on pika, installed by `scripts/ensure-job-libraries.sh`),
//! each in a vhost of its own on the shared broker: the presets serve the exact waiting count,
//! what the libraries keep apart (dramatiq's delay and dead-letter queues) is never waiting
//! work, and the ages neither library can have are errors saying what a producer can add.
//! Every job runs exactly once after (the adapter disturbed nothing). The workers record their
//! runs in a Redis list of the test's own.

mod common;

use std::time::Duration;

use common::job_libraries::{celery_python, celery_worker, check_error, python, recorded_once};
use common::rabbit::{TestVhost, encode, set_guest_password_env};
use common::{Adapter, Cleanup, connect, prefix, redis_url, single_value, value_is};

const SCRIPT_LIMIT: Duration = Duration::from_secs(60);
/// The management API refreshes its queue statistics every 5 s.
const SERVED: Duration = Duration::from_secs(20);

/// An adapter config reading `vhost` through the management API, with `metrics` as
/// `(name, measure, the rest of the rabbitmq: block)`.
fn config(vhost: &str, metrics: &[(&str, &str, &str)]) -> String {
    set_guest_password_env();
    common::rabbit::config(common::rabbit::MANAGEMENT, vhost, metrics)
}

fn amqp_url(vhost: &TestVhost) -> String {
    format!("amqp://guest:guest@127.0.0.1:5672/{}", encode(&vhost.name))
}

/// Checks the labels of `metric`'s one series.
async fn check_labels(a: &Adapter, metric: &str, library: &str, vhost: &str) {
    let (_, body) = a.metric(metric, None).await;
    let labels = &body["items"][0]["metricLabels"];
    assert_eq!(labels["library"], library, "{body}");
    assert_eq!(labels["queue"], "embed", "{body}");
    assert_eq!(labels["scope"], "queue", "{body}");
    assert_eq!(labels["vhost"], vhost, "{body}");
}

/// A Celery app on RabbitMQ whose one task records each run in Redis (`{ran_url}`, `{ran_key}`
/// are filled in by the test).
const CELERY_TASKS: &str = r#"
import os
from celery import Celery
from redis import Redis
app = Celery("tasks", broker=os.environ["QMA_BROKER"])
app.conf.task_default_queue = "embed"
@app.task(name="embed")
def embed(n):
    Redis.from_url("{ran_url}").rpush("{ran_key}", n)
"#;

/// Five tasks, each stamped with an AMQP `timestamp` (seconds) by a `before_task_publish`
/// handler, as the preset's age error advises; Celery itself sets none.
const CELERY_ENQUEUE: &str = r#"
import json, sys, time
from celery import Celery
from celery.signals import before_task_publish
@before_task_publish.connect
def stamp(properties=None, **kwargs):
    properties["timestamp"] = int(time.time())
app = Celery("tasks", broker=sys.argv[1])
first = time.time()
for n in range(5):
    app.send_task("embed", args=[n], queue="embed")
print(json.dumps({"first_s": first}))
"#;

#[tokio::test]
async fn celery_tasks_on_rabbitmq_are_counted_and_its_missing_timestamp_is_said() {
    let vhost = TestVhost::new("celery").await;
    let ran = format!("{}ran", prefix("celery-amqp"));
    let _cleanup = Cleanup {
        url: redis_url(),
        prefix: ran.clone(),
    };
    let url = amqp_url(&vhost);
    let out = celery_python(CELERY_ENQUEUE, &[&url], SCRIPT_LIMIT).await;
    let first_s = serde_json::from_str::<serde_json::Value>(out.lines().last().unwrap_or(""))
        .expect("json")["first_s"]
        .as_f64()
        .expect("first_s");
    let lib = "queue: embed, library: celery";
    let a = Adapter::start(&config(
        &vhost.name,
        &[
            ("p_waiting", "length", lib),
            ("p_in_flight", "in_flight", lib),
            ("p_oldest", "oldest_age_seconds", lib),
            ("p_due", "due", lib),
            ("stamped", "oldest_age_seconds", "queue: embed"),
        ],
    ))
    .await;
    a.wait_for("p_waiting", None, SERVED, value_is(5.0)).await;
    check_labels(&a, "p_waiting", "celery", &vhost.name).await;
    a.wait_for("p_in_flight", None, SERVED, value_is(0.0)).await;
    check_error(&a, "p_oldest", "before_task_publish", SERVED).await;
    check_error(&a, "p_due", "in_flight", SERVED).await;
    // The producer's stamp is the queue's head_message_timestamp: the generic block ages it.
    let (status, body) = a.metric("stamped", None).await;
    assert_eq!(status, 200, "{body}");
    let age = single_value(&body);
    let truth = common::rabbit::now_s() as f64 - first_s;
    assert!(
        (age - truth).abs() <= 2.0,
        "stamped age {age} s, the first task has waited {truth} s (whole seconds): {body}"
    );
    let dir = std::env::temp_dir().join(format!("qma-celery-amqp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tasks = CELERY_TASKS
        .replace("{ran_url}", &redis_url())
        .replace("{ran_key}", &ran);
    std::fs::write(dir.join("tasks.py"), tasks).expect("tasks module");
    let worker = celery_worker(&dir, "tasks", "embed", &url);
    recorded_once(&mut connect(&redis_url()).await, &ran, 5).await;
    drop(worker);
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Five messages to `embed` and one delayed an hour (dramatiq puts it in `embed.DQ`).
const DRAMATIQ_ENQUEUE: &str = r#"
import sys
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
broker = RabbitmqBroker(url=sys.argv[1])
dramatiq.set_broker(broker)
@dramatiq.actor(queue_name="embed")
def embed(n):
    pass
for n in range(5):
    embed.send(n)
embed.send_with_options(args=(99,), delay=3600000)
broker.close()
print("{}")
"#;

/// A worker that runs the five and records each run in Redis (argv: the broker, the Redis URL
/// and list); it stops once five have run, leaving the delayed one.
const DRAMATIQ_WORK: &str = r#"
import sys, time
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from redis import Redis
broker = RabbitmqBroker(url=sys.argv[1])
dramatiq.set_broker(broker)
ran = Redis.from_url(sys.argv[2])
@dramatiq.actor(queue_name="embed")
def embed(n):
    ran.rpush(sys.argv[3], n)
worker = dramatiq.Worker(broker, worker_threads=1)
worker.start()
deadline = time.time() + 30
while ran.llen(sys.argv[3]) < 5 and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
worker.stop()
broker.close()
print("{}")
"#;

#[tokio::test]
async fn dramatiq_messages_on_rabbitmq_are_counted_apart_from_its_delay_and_dead_letter_queues() {
    let vhost = TestVhost::new("dramatiq").await;
    let ran = format!("{}ran", prefix("dramatiq-amqp"));
    let _cleanup = Cleanup {
        url: redis_url(),
        prefix: ran.clone(),
    };
    let url = amqp_url(&vhost);
    python(DRAMATIQ_ENQUEUE, &[&url], SCRIPT_LIMIT).await;
    let lib = "queue: embed, library: dramatiq";
    let a = Adapter::start(&config(
        &vhost.name,
        &[
            ("p_waiting", "length", lib),
            ("p_in_flight", "in_flight", lib),
            ("p_delayed", "delayed", lib),
            ("p_failed", "failed", lib),
            ("p_oldest", "oldest_age_seconds", lib),
            ("p_due", "due", lib),
        ],
    ))
    .await;
    a.wait_for("p_waiting", None, SERVED, value_is(5.0)).await;
    check_labels(&a, "p_waiting", "dramatiq", &vhost.name).await;
    a.wait_for("p_delayed", None, SERVED, value_is(1.0)).await;
    a.wait_for("p_failed", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_in_flight", None, SERVED, value_is(0.0)).await;
    check_error(&a, "p_oldest", "set_header_timestamp", SERVED).await;
    check_error(&a, "p_due", "cannot tell the due ones", SERVED).await;
    python(DRAMATIQ_WORK, &[&url, &redis_url(), &ran], SCRIPT_LIMIT).await;
    recorded_once(&mut connect(&redis_url()).await, &ran, 5).await;
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    // The delayed message is still there (its worker gave it back when it stopped).
    a.wait_for("p_delayed", None, SERVED, value_is(1.0)).await;
    a.stop().await;
}
