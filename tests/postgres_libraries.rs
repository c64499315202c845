//! The `postgres` source's presets against the job libraries' real clients and workers, on the
//! PostgreSQL at 127.0.0.1:5432 (`make test` starts it), a database of its own per test, read
//! by a role that has only the grants the README lists: pg-boss 10.4.2 and graphile-worker
//! 0.17.3 (npm, Node.js 20), Procrastinate 3.10.0 (PyPI), each enqueueing with its own client
//! and draining with its own worker (every job once, length to 0); River (its Python insert
//! client, riverqueue 0.7.0, on River 0.43's tables: River's worker is Go, which this machine
//! cannot build), and Solid Queue, GoodJob, Oban and pgmq on their documented tables
//! (`tests/fixtures/postgres/`, which cite the versions), written as their clients write.
//! What is served is compared with what the clients did.

mod common;

use std::time::Duration;

use common::job_libraries::{pg_node, pg_python};
use common::postgres::{TestDb, by_queue, presets_config as config, url, value};
use common::{Adapter, value_is};

const LIMIT: Duration = Duration::from_secs(60);

/// Checks that each of `0..n` is listed exactly once in `ran` (one id per line).
fn each_once(ran: &str, n: usize) {
    let mut ids: Vec<usize> = ran
        .lines()
        .filter_map(|l| l.strip_prefix("ran "))
        .map(|i| i.trim().parse().expect("an id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..n).collect::<Vec<_>>(), "every job ran once: {ran}");
}

const PGBOSS_SEND: &str = r#"
const PgBoss = require('pg-boss');
(async () => {
  const boss = new PgBoss({ connectionString: process.argv[1], schema: 'pgboss', supervise: false, schedule: false });
  boss.on('error', (e) => { console.error(e); process.exit(1); });
  await boss.start();
  for (const q of ['emb', 'other', 'bad']) await boss.createQueue(q);
  for (let i = 0; i < 5; i++) await boss.send('emb', { i });
  for (let i = 0; i < 2; i++) await boss.send('emb', { later: i }, { startAfter: 3600 });
  await boss.send('other', { i: 0 });
  await boss.send('bad', { i: 0 }, { retryLimit: 0 });
  const [job] = await boss.fetch('bad');
  await boss.fail('bad', job.id, { why: 'test' });
  await boss.stop({ graceful: false, wait: true });
})().catch((e) => { console.error(e); process.exit(1); });
"#;

const PGBOSS_WORK: &str = r#"
const PgBoss = require('pg-boss');
(async () => {
  const boss = new PgBoss({ connectionString: process.argv[1], schema: 'pgboss', supervise: false, schedule: false });
  boss.on('error', (e) => { console.error(e); process.exit(1); });
  await boss.start();
  const seen = new Set();
  await new Promise((done) => {
    boss.work('emb', { batchSize: 1, pollingIntervalSeconds: 0.5 }, async ([job]) => {
      console.log('ran ' + job.data.i);
      await new Promise((r) => setTimeout(r, 300));
      seen.add(job.data.i);
      if (seen.size === 5) setTimeout(done, 200);
    });
  });
  await boss.stop({ graceful: true, wait: true });
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_boss_10_client_and_worker() {
    let db = TestDb::create("pgboss").await;
    let conn = url(&db.name, common::postgres::ADMIN);
    pg_node(PGBOSS_SEND, &[&conn], LIMIT).await;
    let r = &db.reader;
    db.exec(&format!(
        "GRANT USAGE ON SCHEMA pgboss TO {r}; GRANT SELECT ON pgboss.job, pgboss.version TO {r}"
    ))
    .await;
    let a = Adapter::start(&config(
        &db,
        &[
            ("waiting", "length", "pg-boss", "emb"),
            ("all", "length", "pg-boss", "*"),
            ("age", "oldest_age_seconds", "pg-boss", "emb"),
            ("delayed", "delayed", "pg-boss", "emb"),
            ("running", "in_flight", "pg-boss", "emb"),
            ("failed", "failed", "pg-boss", "bad"),
        ],
    ))
    .await;
    a.ready().await;
    assert_eq!(value(&a, "waiting").await, 5.0);
    assert_eq!(value(&a, "delayed").await, 2.0);
    assert_eq!(value(&a, "failed").await, 1.0);
    assert_eq!(value(&a, "running").await, 0.0);
    let age = value(&a, "age").await;
    assert!((0.0..60.0).contains(&age), "age {age}");
    let all = by_queue(&a, "all", "pg-boss").await;
    assert_eq!(all.get("emb"), Some(&5.0), "{all:?}");
    assert_eq!(all.get("other"), Some(&1.0), "{all:?}");
    let (_, body) = a.metric("all", None).await;
    assert_eq!(body["items"][0]["metricLabels"]["library"], "pg-boss");

    // The real worker drains the queue: one job at a time, each held 300 ms.
    let worker = {
        let conn = conn.clone();
        tokio::spawn(async move { pg_node(PGBOSS_WORK, &[&conn], LIMIT).await })
    };
    a.wait_for("running", None, LIMIT, value_is(1.0)).await;
    let ran = worker.await.expect("worker");
    each_once(&ran, 5);
    a.wait_for("waiting", None, LIMIT, value_is(0.0)).await;
    a.wait_for("age", None, LIMIT, value_is(0.0)).await;
    assert_eq!(value(&a, "delayed").await, 2.0);
    assert_eq!(value(&a, "running").await, 0.0);
    a.stop().await;
}

const GRAPHILE_ADD: &str = r#"
const { makeWorkerUtils } = require('graphile-worker');
(async () => {
  const utils = await makeWorkerUtils({ connectionString: process.argv[1] });
  await utils.migrate();
  const n = Number(process.argv[2]);
  for (let i = 0; i < n; i++) await utils.addJob('embed', { i });
  await utils.addJob('embed', { i: -1 }, { queueName: 'serial' });
  await utils.addJob('embed', { later: 1 }, { runAt: new Date(Date.now() + 3600e3) });
  await utils.release();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

const GRAPHILE_WORK: &str = r#"
const { run } = require('graphile-worker');
(async () => {
  const seen = new Set();
  let finish;
  const finished = new Promise((r) => { finish = r; });
  const runner = await run({
    connectionString: process.argv[1],
    concurrency: 1,
    noHandleSignals: true,
    pollInterval: 200,
    logger: undefined,
    taskList: {
      embed: async (payload) => {
        console.log('ran ' + payload.i);
        await new Promise((r) => setTimeout(r, 300));
        if (payload.i >= 0) seen.add(payload.i);
        if (seen.size === Number(process.argv[2])) finish();
      },
    },
  });
  await finished;
  await new Promise((r) => setTimeout(r, 300));
  await runner.stop();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphile_worker_0_17_client_worker_and_wake() {
    let db = TestDb::create("graphile").await;
    let conn = url(&db.name, common::postgres::ADMIN);
    pg_node(GRAPHILE_ADD, &[&conn, "4"], LIMIT).await;
    let r = &db.reader;
    db.exec(&format!(
        "GRANT USAGE ON SCHEMA graphile_worker TO {r}; GRANT SELECT ON graphile_worker.jobs, graphile_worker.migrations TO {r}"
    ))
    .await;
    let a = Adapter::start(&config(
        &db,
        &[
            ("waiting", "length", "graphile-worker", ""),
            ("all", "length", "graphile-worker", "*"),
            ("age", "oldest_age_seconds", "graphile-worker", ""),
            ("delayed", "delayed", "graphile-worker", ""),
            ("running", "in_flight", "graphile-worker", "*"),
            ("failed", "failed", "graphile-worker", ""),
        ],
    ))
    .await;
    a.ready().await;
    assert_eq!(value(&a, "waiting").await, 4.0, "jobs in no named queue");
    let all = by_queue(&a, "all", "graphile-worker").await;
    assert_eq!(all.get(""), Some(&4.0), "{all:?}");
    assert_eq!(all.get("serial"), Some(&1.0), "{all:?}");
    assert_eq!(value(&a, "delayed").await, 1.0);
    assert_eq!(value(&a, "failed").await, 0.0);
    let age = value(&a, "age").await;
    assert!((0.0..60.0).contains(&age), "age {age}");

    // Through the private table, the same role reads nothing at all (row security): the
    // preset reads the view, which runs with its owner's rights.
    let reader = common::postgres::admin(&db.name).await;
    reader
        .batch_execute(&format!(
            "GRANT SELECT ON graphile_worker._private_jobs TO {r}; SET ROLE {r}"
        ))
        .await
        .expect("set role");
    let direct: i64 = reader
        .query_one("SELECT count(*) FROM graphile_worker._private_jobs", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(direct, 0, "row security hides the private table's rows");

    let worker = {
        let conn = conn.clone();
        tokio::spawn(async move { pg_node(GRAPHILE_WORK, &[&conn, "4"], LIMIT).await })
    };
    a.wait_for("all", None, LIMIT, |s, b| {
        s == 200
            && b["items"]
                .as_array()
                .is_some_and(|i| i.iter().all(|i| i["value"] == "0"))
    })
    .await;
    let ran = worker.await.expect("worker");
    let mut ids: Vec<&str> = ran.lines().filter(|l| l.starts_with("ran ")).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["ran -1", "ran 0", "ran 1", "ran 2", "ran 3"], "{ran}");
    assert_eq!(value(&a, "delayed").await, 1.0);
    a.stop().await;

    // Wake: with a poll interval of an hour, a new job is served within a second of
    // graphile-worker's `jobs:insert` notification.
    let slow = config(&db, &[("waiting", "length", "graphile-worker", "")])
        .replace("poll_interval: 200ms", "poll_interval: 1h");
    let a = Adapter::start(&slow).await;
    a.ready().await;
    a.wait_for("waiting", None, LIMIT, value_is(0.0)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = std::time::Instant::now();
    pg_node(GRAPHILE_ADD, &[&conn, "2"], LIMIT).await;
    a.wait_for("waiting", None, Duration::from_secs(5), value_is(2.0))
        .await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "woken in {took:?}");
    a.stop().await;
}

const PROCRASTINATE: &str = r#"
import sys, time, procrastinate
conninfo = sys.argv[1]
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
ran = []

@app.task(name="embed", queue="emb")
def embed(i):
    print("ran", i, flush=True)
    time.sleep(0.3)

@app.task(name="broken", queue="bad")
def broken():
    raise RuntimeError("fails")

with app.open():
    if sys.argv[2] == "schema":
        app.schema_manager.apply_schema()
    elif sys.argv[2] == "defer":
        for i in range(int(sys.argv[3])):
            embed.defer(i=i)
        embed.configure(schedule_in={"hours": 1}).defer(i=-1)
        broken.defer()
    elif sys.argv[2] == "work":
        app.run_worker(queues=[sys.argv[3]], wait=False, concurrency=1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procrastinate_3_client_and_worker() {
    let db = TestDb::create("procrastinate").await;
    let conn = url(&db.name, common::postgres::ADMIN);
    pg_python(PROCRASTINATE, &[&conn, "schema"], LIMIT).await;
    pg_python(PROCRASTINATE, &[&conn, "defer", "5"], LIMIT).await;
    let r = &db.reader;
    db.exec(&format!(
        "GRANT USAGE ON SCHEMA public TO {r}; GRANT SELECT ON procrastinate_jobs, procrastinate_events TO {r}"
    ))
    .await;
    let a = Adapter::start(&config(
        &db,
        &[
            ("waiting", "length", "procrastinate", "emb"),
            ("age", "oldest_age_seconds", "procrastinate", "emb"),
            ("delayed", "delayed", "procrastinate", "emb"),
            ("running", "in_flight", "procrastinate", "emb"),
            ("failed", "failed", "procrastinate", "bad"),
            ("bad", "length", "procrastinate", "bad"),
        ],
    ))
    .await;
    a.ready().await;
    assert_eq!(value(&a, "waiting").await, 5.0);
    assert_eq!(value(&a, "delayed").await, 1.0);
    assert_eq!(value(&a, "bad").await, 1.0);
    let age = value(&a, "age").await;
    assert!((0.0..60.0).contains(&age), "age {age}");

    let worker = {
        let conn = conn.clone();
        tokio::spawn(async move { pg_python(PROCRASTINATE, &[&conn, "work", "emb"], LIMIT).await })
    };
    a.wait_for("running", None, LIMIT, value_is(1.0)).await;
    let ran = worker.await.expect("worker");
    each_once(&ran, 5);
    a.wait_for("waiting", None, LIMIT, value_is(0.0)).await;
    assert_eq!(value(&a, "age").await, 0.0);
    assert_eq!(value(&a, "delayed").await, 1.0);

    pg_python(PROCRASTINATE, &[&conn, "work", "bad"], LIMIT).await;
    a.wait_for("failed", None, LIMIT, value_is(1.0)).await;
    a.wait_for("bad", None, LIMIT, value_is(0.0)).await;
    a.stop().await;
}
