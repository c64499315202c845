//! Job libraries' own queues, written by their real clients and drained by their real workers
//! (pinned versions that `scripts/ensure-job-libraries.sh` installs under `target/`): the
//! adapter serves the exact waiting count and the oldest job's age within a second, and after
//! the worker has run every job exactly once (the adapter disturbed nothing), `0`.
//!
//! Sidekiq writes `enqueued_at` as float seconds up to 7.x and integer milliseconds from 8.x;
//! `unit: sidekiq` tells them apart by the JSON number's type, as Sidekiq's own reader does.
//!
//! dramatiq and bee-queue keep each job's JSON, with its enqueue time, as the field `<id>` of
//! one hash per queue (`dramatiq:<q>.msgs`, `bq:<q>:jobs`): a list's oldest id is looked up
//! there (`timestamp: {hash, json_pointer}` without `{id}`). RQ keeps it in a hash per job
//! (`rq:job:<id>`), arq as the score of the queue's sorted set (ms), BullMQ in a hash per job
//! (`timestamp`, ms; prioritized jobs wait in a sorted set beside the list). huey's and Celery's
//! lists record no enqueue time: only their counts are served. These read through the generic
//! knobs; the presets of issue 32 will name them for the user.
//!
//! Libraries whose keys take no prefix (Sidekiq, RQ, arq) get a private Redis server.

mod common;

use std::time::Duration;

use common::job_libraries::{
    celery_python, celery_worker, check_error, huey_consumer, node, python, recorded_once, ruby,
    sidekiq_worker,
};
use common::{
    Adapter, Cleanup, RedisProcess, cmd, connect, prefix, redis_url, server_now_ms, single_value,
    value_is,
};

const SCRIPT_LIMIT: Duration = Duration::from_secs(60);
const SERVED: Duration = Duration::from_secs(15);

/// A source `jobs` on `url`, polled every 200 ms, and `metrics` (YAML list items).
fn with_source(url: &str, metrics: &str) -> String {
    format!(
        "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{url}\", wake: {{enabled: false}}}}\nmetrics:\n{metrics}"
    )
}

/// The generic metrics `waiting` and `oldest` of list `key`, its times in the JSON a hash keeps
/// under each element, and `more` metrics.
fn config(url: &str, key: &str, oldest_at: &str, hash: &str, pointer: &str, more: &str) -> String {
    with_source(
        url,
        &format!(
            r#"  - name: waiting
    source: jobs
    measure: length
    redis: {{type: list, key: "{key}"}}
  - name: oldest
    source: jobs
    measure: oldest_age_seconds
    redis:
      type: list
      key: "{key}"
      oldest_at: {oldest_at}
      timestamp: {{hash: "{hash}", json_pointer: "{pointer}", unit: ms}}
{more}"#
        ),
    )
}

/// The preset metrics `p_waiting` and `p_oldest` of `library`'s queue `embed` (`extra`: more
/// fields of the `redis:` block, each after a comma).
fn preset(library: &str, extra: &str) -> String {
    format!(
        "  - {{name: p_waiting, source: jobs, measure: length, redis: {{library: {library}, queue: embed{extra}}}}}\n  - {{name: p_oldest, source: jobs, measure: oldest_age_seconds, redis: {{library: {library}, queue: embed{extra}}}}}\n"
    )
}

/// Waits until the oldest job has waited at least a second, then checks the served count and
/// the served age against the first job's enqueue time (`first_ms`, the client's clock, which
/// is the server's here).
async fn check_served(a: &Adapter, url: &str, count: f64, first_ms: f64) {
    check_served_as(a, url, count, first_ms, "waiting", "oldest").await;
}

/// [`check_served`] for the preset metrics of [`preset`], whose series carry the labels
/// `library`, `queue` and `scope`.
async fn check_preset(a: &Adapter, url: &str, count: f64, first_ms: f64, library: &str) {
    check_served_as(a, url, count, first_ms, "p_waiting", "p_oldest").await;
    for metric in ["p_waiting", "p_oldest"] {
        let (_, body) = a.metric(metric, None).await;
        let labels = &body["items"][0]["metricLabels"];
        assert_eq!(labels["library"], library, "{body}");
        assert_eq!(labels["queue"], "embed", "{body}");
        assert_eq!(labels["scope"], "queue", "{body}");
    }
}

async fn check_served_as(
    a: &Adapter,
    url: &str,
    count: f64,
    first_ms: f64,
    waiting: &str,
    oldest: &str,
) {
    a.wait_for(waiting, None, SERVED, value_is(count)).await;
    let mut conn = connect(url).await;
    loop {
        let now = server_now_ms(&mut conn).await as f64;
        if now - first_ms >= 1500.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.polls(2).await;
    let (status, body) = a.metric(oldest, None).await;
    assert_eq!(status, 200, "{body}");
    let age = single_value(&body);
    let truth = (server_now_ms(&mut conn).await as f64 - first_ms) / 1000.0;
    assert!(
        (age - truth).abs() <= 1.0,
        "served age {age} s, the first job has waited {truth} s: {body}"
    );
}

/// The JSON a script printed last (workers log to standard output before it).
fn printed(out: &str) -> serde_json::Value {
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: the script printed {out}"))
}

/// Each job's number as many times as the worker ran it: every one exactly once.
fn ran_once(report: &serde_json::Value, count: usize) {
    let runs = report["runs"].as_object().expect("runs");
    assert_eq!(runs.len(), count, "every job ran: {report}");
    for (job, n) in runs {
        assert_eq!(n.as_u64(), Some(1), "job {job} ran once: {report}");
    }
}

const DRAMATIQ_ENQUEUE: &str = r#"
import json, sys, time
import dramatiq
from dramatiq.brokers.redis import RedisBroker
url, namespace = sys.argv[1], sys.argv[2]
broker = RedisBroker(url=url, namespace=namespace)
dramatiq.set_broker(broker)

@dramatiq.actor(queue_name="embed")
def embed(n):
    pass

first = time.time() * 1000
for n in range(5):
    embed.send(n)
print(json.dumps({"first_ms": first}))
"#;

const DRAMATIQ_WORK: &str = r#"
import json, sys, collections
import dramatiq
from dramatiq.brokers.redis import RedisBroker
url, namespace = sys.argv[1], sys.argv[2]
broker = RedisBroker(url=url, namespace=namespace)
dramatiq.set_broker(broker)
runs = collections.Counter()

@dramatiq.actor(queue_name="embed")
def embed(n):
    runs[str(n)] += 1

worker = dramatiq.Worker(broker, worker_threads=1)
worker.start()
broker.join("embed", timeout=30000)
worker.join()
worker.stop()
print(json.dumps({"runs": runs}))
"#;

#[tokio::test]
async fn dramatiq_jobs_are_counted_and_aged_from_the_messages_hash() {
    let url = redis_url();
    let p = prefix("dramatiq");
    let _cleanup = Cleanup {
        url: url.clone(),
        prefix: p.clone(),
    };
    // dramatiq's keys are `<namespace>:<queue>` and `<namespace>:<queue>.msgs`.
    let namespace = p.trim_end_matches(':').to_string();
    let key = format!("{namespace}:embed");
    let out = python(DRAMATIQ_ENQUEUE, &[&url, &namespace], SCRIPT_LIMIT).await;
    let first_ms = printed(&out)["first_ms"].as_f64().expect("first_ms");
    let a = Adapter::start(&config(
        &url,
        &key,
        "head",
        "{key}.msgs",
        "/message_timestamp",
        &preset("dramatiq", &format!(", prefix: \"{namespace}\"")),
    ))
    .await;
    check_served(&a, &url, 5.0, first_ms).await;
    check_preset(&a, &url, 5.0, first_ms, "dramatiq").await;
    let report = python(DRAMATIQ_WORK, &[&url, &namespace], SCRIPT_LIMIT).await;
    ran_once(&printed(&report), 5);
    a.wait_for("waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("oldest", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_oldest", None, SERVED, value_is(0.0)).await;
    a.stop().await;
}

const BEE_ENQUEUE: &str = r#"
const Queue = require('bee-queue');
const [url, prefix] = process.argv.slice(1);
(async () => {
  const q = new Queue('embed', { prefix, redis: { url }, isWorker: false, getEvents: false, sendEvents: false });
  await q.ready();
  const first = Date.now();
  for (let n = 0; n < 5; n++) await q.createJob({ n }).save();
  // Delayed: one due in 300 ms, one in an hour (no worker here promotes them).
  await q.createJob({ n: 100 }).delayUntil(Date.now() + 300).save();
  await q.createJob({ n: 101 }).delayUntil(Date.now() + 3600000).save();
  await q.close();
  console.log(JSON.stringify({ first_ms: first }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

const BEE_WORK: &str = r#"
const Queue = require('bee-queue');
const [url, prefix] = process.argv.slice(1);
const runs = {};
const q = new Queue('embed', { prefix, redis: { url }, getEvents: false, sendEvents: false });
q.process(async (job) => { runs[job.data.n] = (runs[job.data.n] || 0) + 1; });
(async () => {
  await q.ready();
  const deadline = Date.now() + 30000;
  while (Object.keys(runs).length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  // A second run of any job would show in this time.
  await new Promise((r) => setTimeout(r, 500));
  await q.close();
  console.log(JSON.stringify({ runs }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test]
async fn bee_queue_jobs_are_counted_and_aged_from_the_jobs_hash() {
    let url = redis_url();
    let p = prefix("bee");
    let _cleanup = Cleanup {
        url: url.clone(),
        prefix: p.clone(),
    };
    // bee-queue's keys are `<prefix>:<queue>:waiting` and `<prefix>:<queue>:jobs`.
    let bee_prefix = p.trim_end_matches(':').to_string();
    let key = format!("{bee_prefix}:embed:waiting");
    let out = node(BEE_ENQUEUE, &[&url, &bee_prefix], SCRIPT_LIMIT).await;
    let first_ms = printed(&out)["first_ms"].as_f64().expect("first_ms");
    let hash = format!("{bee_prefix}:embed:jobs");
    let more = format!(
        "{}  - {{name: p_due, source: jobs, measure: due, redis: {{library: bee-queue, queue: embed, prefix: \"{bee_prefix}\"}}}}\n  - {{name: p_delayed, source: jobs, measure: delayed, redis: {{library: bee-queue, queue: embed, prefix: \"{bee_prefix}\"}}}}\n",
        preset("bee-queue", &format!(", prefix: \"{bee_prefix}\""))
    );
    let a = Adapter::start(&config(
        &url,
        &key,
        "tail",
        &hash,
        "/options/timestamp",
        &more,
    ))
    .await;
    check_served(&a, &url, 5.0, first_ms).await;
    check_preset(&a, &url, 5.0, first_ms, "bee-queue").await;
    // The delayed job due after 300 ms, not the one due in an hour; both are delayed.
    a.wait_for("p_due", None, SERVED, value_is(1.0)).await;
    a.wait_for("p_delayed", None, SERVED, value_is(2.0)).await;
    let report = node(BEE_WORK, &[&url, &bee_prefix], SCRIPT_LIMIT).await;
    ran_once(&printed(&report), 5);
    a.wait_for("waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("oldest", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_oldest", None, SERVED, value_is(0.0)).await;
    a.stop().await;
}

const SIDEKIQ_ENQUEUE: &str = r#"
require "sidekiq"
require "json"
Sidekiq.configure_client { |config| config.redis = { url: ARGV[0] } }
first = Time.now.to_f * 1000
5.times { |n| Sidekiq::Client.push("queue" => "embed", "class" => "EmbedJob", "args" => [n]) }
# Scheduled 300 ms ahead: it waits in `schedule`, kept for all queues.
Sidekiq::Client.push("queue" => "embed", "class" => "EmbedJob", "args" => [99], "at" => Time.now.to_f + 0.3)
puts JSON.generate({ first_ms: first, version: Sidekiq::VERSION })
"#;

const SIDEKIQ_WORKER: &str = r#"
require "sidekiq"
class EmbedJob
  include Sidekiq::Worker
  def perform(n)
    Sidekiq.redis { |conn| conn.rpush("qma:ran", n) }
  end
end
"#;

/// A job as Sidekiq 8 pushes it: `enqueued_at` and `created_at` are integer epoch milliseconds,
/// `::Process.clock_gettime(::Process::CLOCK_REALTIME, :millisecond)` (sidekiq v8.1.7
/// `lib/sidekiq/client.rb:293-298`, `lib/sidekiq/job_util.rb:61,65-66`). Sidekiq 8 cannot be
/// installed here (Debian packages 6.4), so this payload stands in for its client.
fn sidekiq8_payload(now_ms: i64, n: u32) -> String {
    format!(
        r#"{{"retry":true,"queue":"embed8","class":"EmbedJob","args":[{n}],"jid":"{:024x}","created_at":{now_ms},"enqueued_at":{now_ms}}}"#,
        u64::from(n) + 1
    )
}

#[tokio::test]
async fn sidekiq_jobs_are_aged_in_seconds_or_milliseconds_as_their_version_wrote_them() {
    // Sidekiq's keys (`queue:<q>`, `queues`, `stat:*`) take no prefix: a private server.
    let server = RedisProcess::start().await;
    let url = server.url();
    let out = ruby(SIDEKIQ_ENQUEUE, &[&url], SCRIPT_LIMIT).await;
    let pushed = printed(&out);
    assert!(
        pushed["version"]
            .as_str()
            .is_some_and(|v| v.starts_with('6')),
        "{pushed}"
    );
    let first_ms = pushed["first_ms"].as_f64().expect("first_ms");
    let mut conn = connect(&url).await;
    let sidekiq8_ms = server_now_ms(&mut conn).await;
    for n in 0..3 {
        let _: i64 = cmd(
            &mut conn,
            &["LPUSH", "queue:embed8", &sidekiq8_payload(sidekiq8_ms, n)],
        )
        .await;
    }
    let config = with_source(
        &url,
        r#"  - {name: waiting, source: jobs, measure: length, redis: {type: list, key: "queue:embed"}}
  - name: oldest
    source: jobs
    measure: oldest_age_seconds
    redis: {type: list, key: "queue:embed", timestamp: {json_pointer: /enqueued_at, unit: sidekiq}}
  - name: oldest8
    source: jobs
    measure: oldest_age_seconds
    redis: {type: list, key: "queue:embed8", timestamp: {json_pointer: /enqueued_at, unit: sidekiq}}
  - {name: p_waiting, source: jobs, measure: length, redis: {library: sidekiq, queue: "*"}}
  - {name: p_oldest, source: jobs, measure: oldest_age_seconds, redis: {library: sidekiq, queue: "*"}}
  - {name: p_oldest8, source: jobs, measure: oldest_age_seconds, redis: {library: sidekiq, queue: embed8}}
  - {name: p_due, source: jobs, measure: due, redis: {library: sidekiq, queue: "*"}}
  - {name: p_in_flight, source: jobs, measure: in_flight, redis: {library: sidekiq, queue: embed}}
"#,
    );
    let a = Adapter::start(&config).await;
    check_served(&a, &url, 5.0, first_ms).await;
    // `*`: the queues Sidekiq's client listed in `queues` (the raw Sidekiq 8 pushes did not).
    check_preset(&a, &url, 5.0, first_ms, "sidekiq").await;
    for metric in ["oldest8", "p_oldest8"] {
        let (status, body) = a.metric(metric, None).await;
        assert_eq!(status, 200, "{body}");
        let truth = (server_now_ms(&mut conn).await - sidekiq8_ms) as f64 / 1000.0;
        let age = single_value(&body);
        assert!(
            (age - truth).abs() <= 1.0,
            "{metric}: Sidekiq 8's milliseconds: served {age} s, truth {truth} s: {body}"
        );
    }
    // The scheduled job is due, in the one `schedule` of all queues; `retry` is empty.
    let (_, body) = a
        .wait_for("p_due", Some("key=schedule"), SERVED, value_is(1.0))
        .await;
    let labels = &body["items"][0]["metricLabels"];
    assert_eq!(
        (&labels["scope"], &labels["queue"], &labels["library"]),
        (
            &"all-queues".into(),
            &"all-queues".into(),
            &"sidekiq".into()
        ),
        "{body}"
    );
    a.wait_for("p_due", Some("key=retry"), SERVED, value_is(0.0))
        .await;
    // Sidekiq keeps running jobs per process, not per queue: an error that says so.
    check_error(&a, "p_in_flight", "per process", SERVED).await;
    // The test (not the adapter) removes the scheduled job, so that the worker runs five.
    let _: i64 = cmd(&mut conn, &["DEL", "schedule"]).await;
    // Sidekiq's own server process runs the jobs.
    let dir = std::env::temp_dir().join(format!("qma-sidekiq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("worker.rb");
    std::fs::write(&file, SIDEKIQ_WORKER).expect("worker file");
    let worker = sidekiq_worker(&file, "embed", &url);
    recorded_once(&mut conn, "qma:ran", 5).await;
    drop(worker);
    a.wait_for("waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("oldest", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_oldest", None, SERVED, value_is(0.0)).await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

const RQ_ENQUEUE: &str = r#"
import json, sys, time
from redis import Redis
from rq import Queue
r = Redis.from_url(sys.argv[1])
q = Queue("embed", connection=r)
first = time.time() * 1000
for n in range(5):
    q.enqueue("builtins.abs", n, job_id=f"job-{n}")
# Scheduled: due in 300 ms; only a worker started --with-scheduler would move it.
from datetime import timedelta
q.enqueue_in(timedelta(milliseconds=300), "builtins.abs", 99, job_id="later")
print(json.dumps({"first_ms": first}))
"#;

const RQ_WORK: &str = r#"
import json, sys
from redis import Redis
from rq import Queue, SimpleWorker
r = Redis.from_url(sys.argv[1])
q = Queue("embed", connection=r)
ran = []
class Counting(SimpleWorker):
    def perform_job(self, job, *args, **kwargs):
        ran.append(job.id)
        return super().perform_job(job, *args, **kwargs)
Counting([q], connection=r).work(burst=True)
runs = {}
for job in ran:
    runs[job] = runs.get(job, 0) + 1
print(json.dumps({"runs": runs}))
"#;

#[tokio::test]
async fn rq_jobs_are_counted_and_aged_from_their_job_hashes() {
    // RQ's registries (`rq:queues`, `rq:workers`, ...) take no prefix: a private server.
    let server = RedisProcess::start().await;
    let url = server.url();
    let out = python(RQ_ENQUEUE, &[&url], SCRIPT_LIMIT).await;
    let first_ms = printed(&out)["first_ms"].as_f64().expect("first_ms");
    let config = with_source(
        &url,
        r#"  - {name: waiting, source: jobs, measure: length, redis: {type: list, key: "rq:queue:embed"}}
  - name: oldest
    source: jobs
    measure: oldest_age_seconds
    redis:
      type: list
      key: "rq:queue:embed"
      oldest_at: head
      timestamp: {hash: "rq:job:{id}", field: enqueued_at, unit: rfc3339}
  - {name: p_waiting, source: jobs, measure: length, redis: {library: rq, queue: "*"}}
  - {name: p_oldest, source: jobs, measure: oldest_age_seconds, redis: {library: rq, queue: "*"}}
  - {name: p_due, source: jobs, measure: due, redis: {library: rq, queue: embed}}
  - {name: p_delayed, source: jobs, measure: delayed, redis: {library: rq, queue: embed}}
"#,
    );
    let a = Adapter::start(&config).await;
    check_served(&a, &url, 5.0, first_ms).await;
    // `*`: the queues RQ lists in `rq:queues`.
    check_preset(&a, &url, 5.0, first_ms, "rq").await;
    a.wait_for("p_due", None, SERVED, value_is(1.0)).await;
    a.wait_for("p_delayed", None, SERVED, value_is(1.0)).await;
    let report = python(RQ_WORK, &[&url], SCRIPT_LIMIT).await;
    ran_once(&printed(&report), 5);
    a.wait_for("waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("oldest", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_oldest", None, SERVED, value_is(0.0)).await;
    a.stop().await;
}

const ARQ_ENQUEUE: &str = r#"
import asyncio, json, sys, time
from arq import create_pool
from arq.connections import RedisSettings

async def main():
    pool = await create_pool(RedisSettings.from_dsn(sys.argv[1]))
    first = time.time() * 1000
    for n in range(5):
        await pool.enqueue_job("embed", n, _job_id=f"job-{n}")
    # Deferred: in the queue, not yet due.
    await pool.enqueue_job("embed", 99, _job_id="later", _defer_by=3600)
    await pool.aclose()
    print(json.dumps({"first_ms": first}))

asyncio.run(main())
"#;

const ARQ_WORK: &str = r#"
import asyncio, json, sys
from arq.connections import RedisSettings
from arq.worker import Worker

runs = {}

async def embed(ctx, n):
    runs[str(n)] = runs.get(str(n), 0) + 1
    # The first job runs long enough to be seen in flight.
    if n == 0:
        await asyncio.sleep(float(sys.argv[2]))

async def main():
    # The deferred job keeps the queue from emptying: stop after the five that are due.
    worker = Worker(functions=[embed], redis_settings=RedisSettings.from_dsn(sys.argv[1]), burst=True, max_burst_jobs=5, poll_delay=0.05)
    await worker.async_run()
    await worker.close()
    print(json.dumps({"runs": runs}))

asyncio.run(main())
"#;

#[tokio::test]
async fn arq_jobs_are_counted_and_aged_from_their_scores() {
    // arq's job and result keys (`arq:job:<id>`, ...) take no prefix: a private server.
    let server = RedisProcess::start().await;
    let url = server.url();
    let out = python(ARQ_ENQUEUE, &[&url], SCRIPT_LIMIT).await;
    let first_ms = printed(&out)["first_ms"].as_f64().expect("first_ms");
    let config = with_source(
        &url,
        r#"  - {name: queued, source: jobs, measure: length, redis: {type: zset, key: "arq:queue"}}
  - {name: waiting, source: jobs, measure: ready, redis: {type: zset, key: "arq:queue", score_unit: ms}}
  - {name: oldest, source: jobs, measure: oldest_age_seconds, redis: {type: zset, key: "arq:queue", score_unit: ms}}
  - {name: p_waiting, source: jobs, measure: length, redis: {library: arq, queue: "arq:queue"}}
  - {name: p_oldest, source: jobs, measure: oldest_age_seconds, redis: {library: arq, queue: "*"}}
  - {name: p_in_flight, source: jobs, measure: in_flight, redis: {library: arq, queue: "arq:queue"}}
"#,
    );
    let a = Adapter::start(&config).await;
    // Five due and one deferred an hour: all six queued, five waiting.
    check_served(&a, &url, 5.0, first_ms).await;
    check_served_as(&a, &url, 5.0, first_ms, "p_waiting", "p_oldest").await;
    a.wait_for("queued", None, SERVED, value_is(6.0)).await;
    a.wait_for("p_in_flight", None, SERVED, value_is(0.0)).await;
    // The worker runs the five at once, the first for 3 s. While it runs, it stays in the
    // sorted set: the generic `ready` still counts it as waiting, the preset sees its
    // in-progress key and counts it in flight.
    let args = [url.as_str(), "3"];
    let (report, ()) = tokio::join!(python(ARQ_WORK, &args, SCRIPT_LIMIT), async {
        a.wait_for("p_in_flight", None, SERVED, value_is(1.0)).await;
        a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
        a.wait_for("p_oldest", None, SERVED, value_is(0.0)).await;
        let (status, body) = a.metric("waiting", None).await;
        assert_eq!((status, single_value(&body)), (200, 1.0), "{body}");
        let (status, body) = a.metric("p_in_flight", None).await;
        assert_eq!(
            (status, single_value(&body)),
            (200, 1.0),
            "still running: {body}"
        );
    });
    ran_once(&printed(&report), 5);
    a.wait_for("waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("oldest", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_oldest", None, SERVED, value_is(0.0)).await;
    a.wait_for("queued", None, SERVED, value_is(1.0)).await;
    a.wait_for("p_in_flight", None, SERVED, value_is(0.0)).await;
    a.stop().await;
}

/// A Celery app on the Redis broker, its one task recording each run (the worker's module).
const CELERY_TASKS: &str = r#"
import os
from celery import Celery
from redis import Redis
app = Celery("tasks", broker=os.environ["QMA_BROKER"])
app.conf.task_default_queue = "embed"

@app.task(name="embed")
def embed(n):
    Redis.from_url(os.environ["QMA_BROKER"]).rpush("qma:ran", n)
"#;

/// Five tasks, two with priorities: kombu keeps those in the sub-lists `embed\x06\x163` and
/// `embed\x06\x169` (its default steps, set or not).
///
/// The producer stamps each task with an enqueue time in a `before_task_publish` handler, as the
/// preset's age error advises: a header the generic block reads.
const CELERY_ENQUEUE: &str = r#"
import json, sys, time
from celery import Celery
from celery.signals import before_task_publish
@before_task_publish.connect
def stamp(headers=None, **kwargs):
    headers["enqueued_at"] = int(time.time() * 1000)
app = Celery("tasks", broker=sys.argv[1])
first = time.time() * 1000
for n, priority in [(0, None), (1, None), (2, 0), (3, 5), (4, 9)]:
    app.send_task("embed", args=[n], queue="embed", priority=priority)
print(json.dumps({"first_ms": first}))
"#;

#[tokio::test]
async fn celery_tasks_are_counted_across_kombu_priority_lists() {
    // kombu's bindings (`_kombu.binding.*`) and `unacked` take no prefix: a private server.
    let server = RedisProcess::start().await;
    let url = server.url();
    let out = celery_python(CELERY_ENQUEUE, &[&url], SCRIPT_LIMIT).await;
    let first_ms = printed(&out)["first_ms"].as_f64().expect("first_ms");
    let mut conn = connect(&url).await;
    let sub_lists: i64 = cmd(&mut conn, &["EXISTS", "embed\x06\x163", "embed\x06\x169"]).await;
    assert_eq!(
        sub_lists, 2,
        "kombu put the tasks with priorities 5 and 9 in sub-lists"
    );
    let config = with_source(
        &url,
        r#"  - {name: waiting, source: jobs, measure: length, redis: {type: list, key: embed, kombu_priority_steps: [3, 6, 9]}}
  - {name: base_list_only, source: jobs, measure: length, redis: {type: list, key: embed}}
  - {name: p_waiting, source: jobs, measure: length, redis: {library: celery, queue: "*"}}
  - {name: p_oldest, source: jobs, measure: oldest_age_seconds, redis: {library: celery, queue: embed}}
  - {name: p_in_flight, source: jobs, measure: in_flight, redis: {library: celery, queue: embed}}
  - name: stamped
    source: jobs
    measure: oldest_age_seconds
    redis: {type: list, key: embed, kombu_priority_steps: [3, 6, 9], timestamp: {json_pointer: /headers/enqueued_at, unit: ms}}
"#,
    );
    let a = Adapter::start(&config).await;
    a.wait_for("waiting", None, SERVED, value_is(5.0)).await;
    // The preset reads kombu's priority sub-lists without being told; `*` finds the queue in
    // kombu's binding set.
    let (_, body) = a.wait_for("p_waiting", None, SERVED, value_is(5.0)).await;
    assert_eq!(body["items"][0]["metricLabels"]["queue"], "embed", "{body}");
    check_error(&a, "p_oldest", "before_task_publish", SERVED).await;
    // Nothing prefetched yet: the `unacked` hash of all queues is empty.
    let (_, body) = a.wait_for("p_in_flight", None, SERVED, value_is(0.0)).await;
    assert_eq!(
        body["items"][0]["metricLabels"]["scope"], "all-queues",
        "{body}"
    );
    // With the producer's stamp, the generic block ages the oldest task across the sub-lists.
    check_served_as(&a, &url, 5.0, first_ms, "waiting", "stamped").await;
    // Without the steps the sub-lists are not read: what the README warns of.
    a.wait_for("base_list_only", None, SERVED, value_is(3.0))
        .await;
    let dir = std::env::temp_dir().join(format!("qma-celery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("tasks.py"), CELERY_TASKS).expect("tasks module");
    let worker = celery_worker(&dir, "tasks", "embed", &url);
    recorded_once(&mut conn, "qma:ran", 5).await;
    drop(worker);
    a.wait_for("waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A huey app on Redis (list storage), its one task recording each run (the consumer's module).
const HUEY_TASKS: &str = r#"
import os
from huey import RedisHuey
from redis import Redis
huey = RedisHuey("embed", url=os.environ["QMA_BROKER"])

@huey.task()
def embed(n):
    Redis.from_url(os.environ["QMA_BROKER"]).rpush("qma:ran", n)
"#;

const HUEY_ENQUEUE: &str = r#"
import os, sys
sys.path.insert(0, sys.argv[2])
os.environ["QMA_BROKER"] = sys.argv[1]
import tasks
for n in range(5):
    tasks.embed(n)
print("{}")
"#;

#[tokio::test]
async fn huey_tasks_are_counted_in_its_list() {
    // huey's keys (`huey.redis.<name>`, `huey.results.<name>`) take no prefix: a private server.
    let server = RedisProcess::start().await;
    let url = server.url();
    let dir = std::env::temp_dir().join(format!("qma-huey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("tasks.py"), HUEY_TASKS).expect("tasks module");
    let dir_text = dir.to_string_lossy().into_owned();
    python(HUEY_ENQUEUE, &[&url, &dir_text], SCRIPT_LIMIT).await;
    // huey records no enqueue time in its list storage: only the count can be served.
    let config = with_source(
        &url,
        r#"  - {name: waiting, source: jobs, measure: length, redis: {type: list, key: huey.redis.embed}}
  - {name: p_waiting, source: jobs, measure: length, redis: {library: huey, queue: "*"}}
  - {name: p_oldest, source: jobs, measure: oldest_age_seconds, redis: {library: huey, queue: embed}}
"#,
    );
    let a = Adapter::start(&config).await;
    a.wait_for("waiting", None, SERVED, value_is(5.0)).await;
    a.wait_for("p_waiting", None, SERVED, value_is(5.0)).await;
    check_error(&a, "p_oldest", "no enqueue time", SERVED).await;
    let mut conn = connect(&url).await;
    let consumer = huey_consumer(&dir, "tasks", &url);
    recorded_once(&mut conn, "qma:ran", 5).await;
    drop(consumer);
    a.wait_for("waiting", None, SERVED, value_is(0.0)).await;
    a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// BullMQ (the package named by argv[0]: `bullmq` 6 or `bullmq5`): five jobs, then one with a
/// priority, which BullMQ keeps in the sorted set `:prioritized`, not in the `:wait` list.
const BULLMQ_ENQUEUE: &str = r#"
const [pkg, url, prefix] = process.argv.slice(1);
const { Queue } = require(pkg);
const u = new URL(url);
const connection = { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1) || 0) };
(async () => {
  const q = new Queue('embed', { prefix, connection });
  const first = Date.now();
  for (let n = 0; n < 5; n++) await q.add('embed', { n });
  await q.add('embed', { n: 5 }, { priority: 1 });
  // Delayed: one due in 300 ms (a worker promotes it, none runs yet), one in an hour.
  await q.add('embed', { n: 6 }, { delay: 300 });
  await q.add('embed', { n: 99 }, { delay: 3600000 });
  await q.close();
  console.log(JSON.stringify({ first_ms: first }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// Pauses the queue and adds two jobs: BullMQ 5 moves the waiting jobs to the `:paused` list and
/// adds there; BullMQ 6 keeps them in `:wait` (meta `paused`).
const BULLMQ_PAUSE: &str = r#"
const [pkg, url, prefix] = process.argv.slice(1);
const { Queue } = require(pkg);
const u = new URL(url);
const connection = { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1) || 0) };
(async () => {
  const q = new Queue('embed', { prefix, connection });
  await q.pause();
  await q.add('embed', { n: 7 });
  await q.add('embed', { n: 8 });
  await q.close();
  console.log('{}');
})().catch((e) => { console.error(e); process.exit(1); });
"#;

const BULLMQ_WORK: &str = r#"
const [pkg, url, prefix, count] = process.argv.slice(1);
const { Queue, Worker } = require(pkg);
const u = new URL(url);
const connection = { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1) || 0) };
const runs = {};
(async () => {
  const q = new Queue('embed', { prefix, connection });
  await q.resume();
  await q.close();
  const w = new Worker('embed', async (job) => { runs[job.data.n] = (runs[job.data.n] || 0) + 1; }, { prefix, connection });
  const deadline = Date.now() + 30000;
  while (Object.keys(runs).length < Number(count) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 500));
  await w.close();
  console.log(JSON.stringify({ runs }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// BullMQ 6 and 5 keep plain jobs in the `:wait` list (oldest at the tail, each job's hash holding
/// its `timestamp` in ms) and prioritized ones in the `:prioritized` sorted set: the two read
/// apart here, as the generic knobs allow; the BullMQ preset will sum them.
#[tokio::test]
async fn bullmq_jobs_are_counted_in_wait_and_prioritized_and_aged_from_their_hashes() {
    let url = redis_url();
    for pkg in ["bullmq", "bullmq5"] {
        let p = prefix(pkg);
        let _cleanup = Cleanup {
            url: url.clone(),
            prefix: p.clone(),
        };
        let bull = p.trim_end_matches(':').to_string();
        let out = node(BULLMQ_ENQUEUE, &[pkg, &url, &bull], SCRIPT_LIMIT).await;
        let first_ms = printed(&out)["first_ms"].as_f64().expect("first_ms");
        let config = with_source(
            &url,
            &format!(
                r#"  - {{name: waiting, source: jobs, measure: length, redis: {{type: list, key: "{bull}:embed:wait"}}}}
  - {{name: prioritized, source: jobs, measure: length, redis: {{type: zset, key: "{bull}:embed:prioritized"}}}}
  - name: oldest
    source: jobs
    measure: oldest_age_seconds
    redis:
      type: list
      key: "{bull}:embed:wait"
      timestamp: {{hash: "{bull}:embed:{{id}}", field: timestamp, unit: ms}}
  - {{name: p_due, source: jobs, measure: due, redis: {{library: bullmq, queue: embed, prefix: "{bull}"}}}}
  - {{name: p_delayed, source: jobs, measure: delayed, redis: {{library: bullmq, queue: embed, prefix: "{bull}"}}}}
  - {{name: by_pattern, source: jobs, measure: length, redis: {{type: list, pattern: "{bull}:*:wait", also: [{{type: zset, key: "{bull}:{{match}}:prioritized"}}]}}}}
{}"#,
                preset("bullmq", &format!(", prefix: \"{bull}\""))
            ),
        );
        let a = Adapter::start(&config).await;
        check_served(&a, &url, 5.0, first_ms).await;
        a.wait_for("prioritized", None, SERVED, value_is(1.0)).await;
        // The preset adds the prioritized job to the five in the list.
        check_preset(&a, &url, 6.0, first_ms, "bullmq").await;
        // The same sum by hand: a pattern whose `also` key names what the wildcard matched.
        a.wait_for("by_pattern", None, SERVED, value_is(6.0)).await;
        a.wait_for("p_due", None, SERVED, value_is(1.0)).await;
        a.wait_for("p_delayed", None, SERVED, value_is(2.0)).await;
        // Paused, two more: still waiting work, wherever this version keeps it.
        node(BULLMQ_PAUSE, &[pkg, &url, &bull], SCRIPT_LIMIT).await;
        let mut conn = connect(&url).await;
        let paused: i64 = cmd(&mut conn, &["LLEN", &format!("{bull}:embed:paused")]).await;
        assert_eq!(
            paused,
            if pkg == "bullmq5" { 7 } else { 0 },
            "{pkg}: BullMQ 5 keeps a paused queue's jobs in :paused, 6 in :wait"
        );
        a.wait_for("p_waiting", None, SERVED, value_is(8.0)).await;
        let (status, body) = a.metric("p_oldest", None).await;
        let age = single_value(&body);
        let truth = (server_now_ms(&mut conn).await as f64 - first_ms) / 1000.0;
        assert!(
            status == 200 && (age - truth).abs() <= 1.0,
            "{pkg} paused: {age} s, truth {truth} s: {body}"
        );
        // The worker resumes the queue and runs the nine due jobs, not the one due in an hour.
        let report = node(BULLMQ_WORK, &[pkg, &url, &bull, "9"], SCRIPT_LIMIT).await;
        ran_once(&printed(&report), 9);
        a.wait_for("waiting", None, SERVED, value_is(0.0)).await;
        a.wait_for("prioritized", None, SERVED, value_is(0.0)).await;
        a.wait_for("oldest", None, SERVED, value_is(0.0)).await;
        a.wait_for("p_waiting", None, SERVED, value_is(0.0)).await;
        a.wait_for("p_oldest", None, SERVED, value_is(0.0)).await;
        a.wait_for("p_due", None, SERVED, value_is(0.0)).await;
        // The job due in an hour is still delayed.
        a.wait_for("p_delayed", None, SERVED, value_is(1.0)).await;
        a.stop().await;
    }
}
