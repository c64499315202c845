//! The `nats` source against the NATS server on 127.0.0.1:4222 (JetStream on; `make test`
//! starts one), a stream of its own per test, deleted after: work-queue and limits retention,
//! pull and push consumers, filtered consumers and consumer patterns, with the official client
//! (async-nats' JetStream layer) publishing, fetching and acknowledging as workers do. What is
//! served is compared with what the clients did; what cannot be read is an error naming it,
//! never 0.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use common::nats::{error_of, take};
use common::paced::served;
use common::{Adapter, on_own_runtime, quantity, value_is};
use futures_util::StreamExt as _;

const URL: &str = "nats://127.0.0.1:4222";

/// A stream name and subject root no other test uses.
fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("QMA_{}_{}_{nanos}", test.to_uppercase(), std::process::id())
}

/// Deletes its stream (and so its consumers and messages) when dropped.
struct StreamGuard(String);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        on_own_runtime(async move {
            if let Ok(c) = async_nats::connect(URL).await {
                let _ = jetstream::new(c).delete_stream(&name).await;
            }
        });
    }
}

async fn js() -> (async_nats::Client, jetstream::Context) {
    let client = async_nats::connect(URL)
        .await
        .expect("NATS on 127.0.0.1:4222 (make test starts it: scripts/ensure-nats.sh)");
    let js = jetstream::new(client.clone());
    (client, js)
}

async fn make_stream(
    js: &jetstream::Context,
    name: &str,
    retention: stream::RetentionPolicy,
) -> (stream::Stream, StreamGuard) {
    let s = js
        .create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{}.>", name.to_lowercase())],
            retention,
            ..Default::default()
        })
        .await
        .expect("create stream");
    (s, StreamGuard(name.to_string()))
}

async fn pull_consumer(
    s: &stream::Stream,
    name: &str,
    filter: Option<String>,
) -> consumer::Consumer<consumer::pull::Config> {
    s.create_consumer(consumer::pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: consumer::AckPolicy::Explicit,
        filter_subject: filter.unwrap_or_default(),
        ..Default::default()
    })
    .await
    .expect("create consumer")
}

async fn publish(js: &jetstream::Context, subject: String, n: usize) {
    for i in 0..n {
        js.publish(subject.clone(), format!("job {i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

/// A config of source `js` on the local server with `metrics` (YAML list items).
fn config(poll: &str, metrics: &str) -> String {
    format!(
        "poll_interval: {poll}\nsources:\n  js:\n    nats:\n      servers: [{URL}]\nmetrics:\n{metrics}"
    )
}

fn metric(name: &str, measure: &str, stream: &str, consumer: Option<&str>) -> String {
    let consumer = consumer.map_or(String::new(), |c| format!(", consumer: {c}"));
    format!(
        "  - {{name: {name}, source: js, measure: {measure}, nats: {{stream: {stream}{consumer}}}}}\n"
    )
}

/// Waits until `name` serves `want` (bounded).
async fn until(a: &Adapter, name: &str, want: f64) {
    a.wait_for(name, None, Duration::from_secs(10), value_is(want))
        .await;
}

#[tokio::test]
async fn a_work_queue_pull_consumer_lag_in_flight_and_oldest_age_as_a_worker_takes_and_acks() {
    let (_client, js) = js().await;
    let name = unique("wq");
    let (s, _guard) = make_stream(&js, &name, stream::RetentionPolicy::WorkQueue).await;
    let workers = pull_consumer(&s, "workers", None).await;
    let subject = format!("{}.embed", name.to_lowercase());
    publish(&js, subject.clone(), 1).await;
    let first_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish(&js, subject.clone(), 4).await;
    let metrics = [
        metric("lag", "lag", &name, Some("workers")),
        metric("in_flight", "ack_pending", &name, Some("workers")),
        metric("waiting", "waiting_pulls", &name, Some("workers")),
        metric("redelivered", "redelivered", &name, Some("workers")),
        metric(
            "age",
            "oldest_unprocessed_age_seconds",
            &name,
            Some("workers"),
        ),
        metric("length", "length", &name, None),
        metric("consumer_length", "length", &name, Some("workers")),
    ]
    .concat();
    let a = Adapter::start(&config("200ms", &metrics)).await;
    until(&a, "lag", 5.0).await;
    until(&a, "length", 5.0).await;
    until(&a, "consumer_length", 5.0).await;
    until(&a, "in_flight", 0.0).await;
    until(&a, "waiting", 0.0).await;
    // Read at a poll before now, after the publish: within a poll interval (and slack).
    let age = served(&a, "age").await.expect("age");
    let truth = first_at.elapsed().as_secs_f64();
    assert!(
        age <= truth + 0.1 && age >= truth - 1.0,
        "oldest age {age}, first message published {truth} s ago"
    );

    // A worker takes two and acknowledges neither: in flight, and still the oldest.
    let held = take(&workers, 2).await;
    assert_eq!(held.len(), 2);
    until(&a, "lag", 3.0).await;
    until(&a, "in_flight", 2.0).await;
    let age = served(&a, "age").await.expect("age");
    assert!(
        age >= first_at.elapsed().as_secs_f64() - 0.5,
        "the unacknowledged first message is still the oldest: {age}"
    );
    // Acknowledging the first makes the second (published 1.5 s later) the oldest.
    held[0].ack().await.expect("ack");
    let start = Instant::now();
    loop {
        let age = served(&a, "age").await.expect("age");
        if age < first_at.elapsed().as_secs_f64() - 1.0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "age stays {age}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held[1].ack().await.expect("ack");

    // A pull request waiting at the consumer is an idle worker.
    let mut rest = workers
        .fetch()
        .max_messages(3)
        .messages()
        .await
        .expect("fetch");
    while let Some(m) = rest.next().await {
        m.expect("message").ack().await.expect("ack");
    }
    until(&a, "lag", 0.0).await;
    until(&a, "in_flight", 0.0).await;
    until(&a, "age", 0.0).await;
    until(&a, "length", 0.0).await;
    let waiting = workers
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("pull request");
    until(&a, "waiting", 1.0).await;
    drop(waiting);
    a.stop().await;
}

#[tokio::test]
async fn limits_retention_filters_patterns_and_push_consumers() {
    let (client, js) = js().await;
    let name = unique("limits");
    let root = name.to_lowercase();
    let (s, _guard) = make_stream(&js, &name, stream::RetentionPolicy::Limits).await;
    pull_consumer(&s, "gpu-a", Some(format!("{root}.gpu.a"))).await;
    pull_consumer(&s, "gpu-b", Some(format!("{root}.gpu.b"))).await;
    let all = pull_consumer(&s, "all", None).await;
    pull_consumer(&s, "gpu-c", Some(format!("{root}.gpu.c"))).await;
    let deliver = client.new_inbox();
    s.create_consumer(consumer::push::Config {
        durable_name: Some("pushed".into()),
        deliver_subject: deliver.clone(),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    })
    .await
    .expect("push consumer");
    publish(&js, format!("{root}.cpu"), 4).await;
    let cpu_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish(&js, format!("{root}.gpu.a"), 3).await;
    let gpu_at = Instant::now();
    publish(&js, format!("{root}.gpu.b"), 2).await;
    let pattern = format!(
        "  - {{name: gpu_lag, source: js, measure: lag, nats: {{stream: {name}, consumer_pattern: '^gpu-'}}}}\n"
    );
    let metrics = [
        pattern,
        metric("a_length", "length", &name, Some("gpu-a")),
        metric("all_length", "length", &name, Some("all")),
        metric("c_length", "length", &name, Some("gpu-c")),
        metric(
            "a_age",
            "oldest_unprocessed_age_seconds",
            &name,
            Some("gpu-a"),
        ),
        metric(
            "all_age",
            "oldest_unprocessed_age_seconds",
            &name,
            Some("all"),
        ),
        metric("all_lag", "lag", &name, Some("all")),
        metric("a_arrivals", "arrival_rate", &name, Some("gpu-a")),
        metric("push_lag", "lag", &name, Some("pushed")),
        metric("push_waiting", "waiting_pulls", &name, Some("pushed")),
    ]
    .concat();
    let a = Adapter::start(&config("200ms", &metrics)).await;
    a.ready().await;
    let (status, body) = a
        .wait_for("gpu_lag", None, Duration::from_secs(10), |s, b| {
            s == 200 && b["items"].as_array().is_some_and(|i| i.len() == 3)
        })
        .await;
    assert_eq!(status, 200);
    let mut lags: Vec<(String, f64)> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            assert_eq!(i["metricLabels"]["stream"], name.as_str());
            (
                i["metricLabels"]["consumer"]
                    .as_str()
                    .expect("consumer label")
                    .to_string(),
                quantity(i["value"].as_str().expect("value")),
            )
        })
        .collect();
    lags.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        lags,
        vec![
            ("gpu-a".to_string(), 3.0),
            ("gpu-b".to_string(), 2.0),
            ("gpu-c".to_string(), 0.0)
        ]
    );
    until(&a, "a_length", 3.0).await;
    until(&a, "all_length", 9.0).await;
    until(&a, "c_length", 0.0).await;
    // The filtered consumer's oldest is the first message on its subject, not the stream's.
    let a_age = served(&a, "a_age").await.expect("age");
    assert!(
        a_age <= gpu_at.elapsed().as_secs_f64() + 0.1,
        "gpu.a's oldest: {a_age}"
    );
    let all_age = served(&a, "all_age").await.expect("age");
    assert!(
        all_age >= cpu_at.elapsed().as_secs_f64() - 1.0 && all_age > a_age + 1.0,
        "the unfiltered consumer's oldest is the first cpu message: {all_age}"
    );
    let e = error_of(&a, "a_arrivals", "cannot be counted").await;
    assert!(e.contains(&format!("{root}.gpu.a")), "{e}");
    // Nothing subscribes to the push consumer's subject: it delivers nothing, lag stays.
    until(&a, "push_lag", 9.0).await;
    error_of(&a, "push_waiting", "push consumer").await;
    // Limits retention keeps acknowledged messages: once a worker has acknowledged all nine,
    // the stream's length stays 9 while the consumer's lag and age are 0.
    let mut batch = all.fetch().max_messages(9).messages().await.expect("fetch");
    while let Some(m) = batch.next().await {
        m.expect("message").ack().await.expect("ack");
    }
    until(&a, "all_lag", 0.0).await;
    until(&a, "all_age", 0.0).await;
    until(&a, "all_length", 9.0).await;
    a.stop().await;
}

#[tokio::test]
async fn a_missing_stream_or_consumer_is_an_error_naming_it_until_it_exists() {
    let (_client, js) = js().await;
    let name = unique("missing");
    let metrics = [
        metric("lag", "lag", &name, Some("workers")),
        metric("length", "length", &name, None),
    ]
    .concat();
    let a = Adapter::start(&config("200ms", &metrics)).await;
    let e = error_of(&a, "lag", "not found").await;
    assert!(
        e.contains(&format!("stream \\\"{name}\\\" not found")),
        "{e}"
    );
    error_of(&a, "length", &name).await;
    let (s, _guard) = make_stream(&js, &name, stream::RetentionPolicy::WorkQueue).await;
    until(&a, "length", 0.0).await;
    let e = error_of(&a, "lag", "consumer").await;
    assert!(e.contains("\\\"workers\\\" not found"), "{e}");
    pull_consumer(&s, "workers", None).await;
    until(&a, "lag", 0.0).await;
    a.stop().await;
}

#[tokio::test]
async fn a_deleted_oldest_message_gives_the_next_ones_age_never_zero() {
    let (_client, js) = js().await;
    let name = unique("deleted");
    let (s, _guard) = make_stream(&js, &name, stream::RetentionPolicy::Limits).await;
    pull_consumer(&s, "workers", None).await;
    let subject = format!("{}.x", name.to_lowercase());
    publish(&js, subject.clone(), 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second_at = Instant::now();
    publish(&js, subject.clone(), 1).await;
    let metrics = metric(
        "age",
        "oldest_unprocessed_age_seconds",
        &name,
        Some("workers"),
    );
    let a = Adapter::start(&config("200ms", &metrics)).await;
    a.ready().await;
    let age = served(&a, "age").await.expect("age");
    assert!(age >= 1.4, "the first message's age: {age}");
    s.delete_message(1).await.expect("delete the oldest");
    let start = Instant::now();
    loop {
        let age = served(&a, "age").await.expect("age");
        let truth = second_at.elapsed().as_secs_f64();
        if (age - truth).abs() < 0.5 {
            break;
        }
        assert!(
            age > 0.0,
            "a deleted oldest message is never an age of 0: {age}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "age stays {age}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
}

/// What waits at consumer `c`: undelivered + delivered and not acknowledged.
async fn backlog(c: &mut consumer::Consumer<consumer::pull::Config>) -> f64 {
    let info = c.info().await.expect("consumer info");
    (info.num_pending + info.num_ack_pending as u64) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_drain_time_and_workers_needed_follow_a_publisher_and_a_worker() {
    use common::kube_stub::{KubeStub, deployment};
    use common::paced::Events;
    let stub = KubeStub::start().await;
    stub.apply("deployments", deployment("ml", "embed-worker", 2));
    let (_client, js) = js().await;
    let name = unique("rates");
    let (s, _guard) = make_stream(&js, &name, stream::RetentionPolicy::WorkQueue).await;
    let mut workers = pull_consumer(&s, "workers", None).await;
    let config = format!(
        r#"poll_interval: 200ms
kubernetes:
  kubeconfig: {kubeconfig}
sources:
  js:
    nats: {{servers: [{URL}], wake: {{enabled: false}}, max_drain_seconds: 3600}}
  slow:
    nats: {{servers: [{URL}], wake: {{enabled: false}}, poll_interval: 1h}}
metrics:
  - {{name: slow_arrivals, source: slow, measure: arrival_rate, window: 3s, nats: {{stream: {name}, consumer: workers}}}}
  - {{name: arrivals, source: js, measure: arrival_rate, window: 3s, nats: {{stream: {name}, consumer: workers}}}}
  - {{name: stream_arrivals, source: js, measure: arrival_rate, window: 3s, nats: {{stream: {name}}}}}
  - {{name: completions, source: js, measure: completion_rate, window: 3s, nats: {{stream: {name}, consumer: workers}}}}
  - {{name: drain, source: js, measure: drain_seconds, window: 3s, nats: {{stream: {name}, consumer: workers}}}}
  - name: needed
    source: js
    measure: workers_needed
    window: 3s
    target_wait: 10s
    workers: {{deployment: embed-worker, namespace: ml}}
    nats: {{stream: {name}, consumer: workers}}
"#,
        kubeconfig = stub.kubeconfig().display()
    );
    let a = Adapter::start(&config).await;
    // The first reading of a counter is no rate (a source polled once an hour stays there).
    error_of(&a, "slow_arrivals", "read once").await;

    // 20 messages a second in; one worker takes and acknowledges 10 a second.
    let (published, acked) = (Events::default(), Events::default());
    let producer = {
        let (js, published) = (js.clone(), published.clone());
        let subject = format!("{}.job", name.to_lowercase());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                js.publish(subject.clone(), "job".into())
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
                published.record();
            }
        })
    };
    let worker = {
        let (workers, acked) = (workers.clone(), acked.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let mut batch = workers
                    .fetch()
                    .max_messages(1)
                    .messages()
                    .await
                    .expect("fetch");
                while let Some(m) = batch.next().await {
                    m.expect("message").ack().await.expect("ack");
                    acked.record();
                }
            }
        })
    };
    let window = Duration::from_secs(3);
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    let close = async |metric: &str, truth: &dyn Fn() -> f64| {
        let start = Instant::now();
        loop {
            let got = served(&a, metric).await;
            let want = truth();
            if let Ok(v) = got
                && (v - want).abs() <= 0.15 * want
            {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{metric}: served {got:?}, the clients' {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    close("arrivals", &|| published.rate(window)).await;
    close("stream_arrivals", &|| published.rate(window)).await;
    let done = close("completions", &|| acked.rate(window)).await;

    // Drain time: what waits over the served completion rate; workers needed: the formula
    // ⌈(λ + W / T) / μ⌉ with μ the acknowledgements per ready replica (2).
    let start = Instant::now();
    loop {
        let (rate, drain, needed) = (
            served(&a, "completions").await,
            served(&a, "drain").await,
            served(&a, "needed").await,
        );
        let w = backlog(&mut workers).await;
        if let (Ok(rate), Ok(drain), Ok(needed)) = (&rate, &drain, &needed) {
            let formula = ((published.rate(window) + w / 10.0) / (acked.rate(window) / 2.0)).ceil();
            if (drain - w / rate).abs() <= 0.15 * (w / rate) && (needed - formula).abs() <= 1.0 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "drain {drain:?} / needed {needed:?}: waiting {w}, completions {rate:?} (served {done})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The clients stop: nothing arrives, nothing leaves, a backlog stays: rates 0, the drain
    // time is max_drain_seconds.
    producer.abort();
    worker.abort();
    a.wait_for("arrivals", None, Duration::from_secs(10), value_is(0.0))
        .await;
    a.wait_for("completions", None, Duration::from_secs(10), value_is(0.0))
        .await;
    a.wait_for("drain", None, Duration::from_secs(10), value_is(3600.0))
        .await;
    a.stop().await;
}

/// Publishes one message to each of `streams` in turn, idle until then, and returns how long
/// each took to be served (the metric `lag_<i>` going from 0 to 1).
async fn wake_latencies(poll: &str, n: usize) -> Vec<Duration> {
    let (_client, js) = js().await;
    let mut guards = Vec::new();
    let mut metrics = String::new();
    let mut names = Vec::new();
    for i in 0..n {
        let name = unique(&format!("wake{i}"));
        let (s, guard) = make_stream(&js, &name, stream::RetentionPolicy::WorkQueue).await;
        pull_consumer(&s, "workers", None).await;
        metrics.push_str(&metric(&format!("lag_{i}"), "lag", &name, Some("workers")));
        guards.push(guard);
        names.push(name);
    }
    let a = Adapter::start(&config(poll, &metrics)).await;
    for i in 0..n {
        until(&a, &format!("lag_{i}"), 0.0).await;
    }
    // The subscriptions are made after the first poll; give them a moment to reach the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let start = Instant::now();
        publish(&js, format!("{}.job", name.to_lowercase()), 1).await;
        let metric = format!("lag_{i}");
        loop {
            if served(&a, &metric).await == Ok(1.0) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{metric} never served 1"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        took.push(start.elapsed());
        // Past the wake rate limit's refill (5 a second), as separate arrivals are.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.stop().await;
    took.sort();
    took
}

#[tokio::test]
async fn a_publish_to_an_idle_stream_wakes_the_poll_at_once() {
    // At a 30 s poll interval, only the wake can serve a message within a second.
    let took = wake_latencies("30s", 40).await;
    let (p50, p95) = (took[took.len() / 2], took[took.len() * 95 / 100]);
    eprintln!(
        "NATS wake at poll_interval 30s: p50 {p50:?}, p95 {p95:?}, max {:?}",
        took.last()
    );
    assert!(
        p95 < Duration::from_secs(2),
        "woken polls serve a publish within milliseconds, not at the next poll: p95 {p95:?}"
    );
    let took = wake_latencies("2s", 40).await;
    let (p50, p95) = (took[took.len() / 2], took[took.len() * 95 / 100]);
    // Polling alone would serve them over the whole interval: 1.9 s at p95.
    assert!(
        p95 < Duration::from_millis(500),
        "woken at the default interval too: p95 {p95:?}"
    );
    eprintln!(
        "NATS wake at poll_interval 2s: p50 {p50:?}, p95 {p95:?}, max {:?}",
        took.last()
    );
}
