//! The `postgres` source's truth and manners, on the PostgreSQL at 127.0.0.1:5432 (`make test`
//! starts it), a database of its own per test: what cannot be read (no server, no table, no
//! grant, a schema version the preset does not know) is an error naming it, never 0; and the
//! adapter only reads: its sessions hold no lock but `AccessShareLock` on what they read, no
//! advisory lock, no transaction id, and the tables are byte for byte what they were.

mod common;

use std::time::Duration;

use common::Adapter;
use common::postgres::TestDb;

const LIMIT: Duration = Duration::from_secs(30);

fn config(source: &str, library: &str, measure: &str) -> String {
    format!(
        "poll_interval: 200ms\nsources:\n  db:\n    {source}\nmetrics:\n  - {{name: m, source: db, measure: {measure}, postgres: {{library: {library}, queue: emb}}}}\n"
    )
}

/// Waits until `metric` answers an error whose message holds every one of `parts` (a value
/// still served from before a change is let pass until the next poll).
async fn error_holds(a: &Adapter, metric: &str, parts: &[&str]) -> String {
    let start = std::time::Instant::now();
    loop {
        let (status, body) = a.metric(metric, None).await;
        let text = body.to_string();
        if status != 200 && parts.iter().all(|p| text.contains(p)) {
            return text;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{metric}: {status} {text} does not name {parts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// River's tables (tests/fixtures/postgres/river.sql) with jobs in `emb`, read by a role
/// with the README's grants.
async fn river_db(test: &str) -> TestDb {
    let db = TestDb::create(test).await;
    db.apply_fixture("river.sql").await;
    db.exec(
        "INSERT INTO river_job (args, kind, queue, state, scheduled_at) \
         SELECT '{}', 'embed', 'emb', 'available', now() - interval '5 seconds' FROM generate_series(1, 3)",
    )
    .await;
    let r = &db.reader;
    db.exec(&format!(
        "GRANT USAGE ON SCHEMA public TO {r}; GRANT SELECT ON river_job, river_migration TO {r}"
    ))
    .await;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_read_is_an_error_naming_it() {
    // No server on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let a = Adapter::start(&config(
        &format!("postgres: {{host: 127.0.0.1, port: {port}, dbname: x, sslmode: disable}}"),
        "river",
        "length",
    ))
    .await;
    error_holds(&a, "m", &[&format!("127.0.0.1:{port}")]).await;
    a.stop().await;

    let db = river_db("truth").await;
    // No such tables: another library's preset on this database.
    let a = Adapter::start(&config(&db.source_yaml(), "pg-boss", "length")).await;
    error_holds(&a, "m", &["pgboss", "does not exist", "pg-boss installed"]).await;
    a.stop().await;

    // No grant on the table: the error says what to grant.
    db.exec(&format!("REVOKE SELECT ON river_job FROM {}", db.reader))
        .await;
    let a = Adapter::start(&config(&db.source_yaml(), "river", "length")).await;
    error_holds(
        &a,
        "m",
        &["permission denied", "GRANT SELECT ON public.river_job"],
    )
    .await;
    a.stop().await;
    db.exec(&format!("GRANT SELECT ON river_job TO {}", db.reader))
        .await;

    // A schema version the preset does not know.
    let a = Adapter::start(&config(&db.source_yaml(), "river", "length")).await;
    a.wait_for("m", None, LIMIT, common::value_is(3.0)).await;
    db.exec("INSERT INTO river_migration (line, version) VALUES ('main', 8)")
        .await;
    error_holds(&a, "m", &["schema version", "\\\"8\\\"", "5 to 7"]).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_takes_no_lock_and_changes_nothing() {
    let db = river_db("readonly").await;
    db.exec(
        "INSERT INTO river_job (args, kind, queue, state, scheduled_at, attempted_at, attempt) \
         VALUES ('{}', 'embed', 'emb', 'running', now(), now(), 1)",
    )
    .await;
    let snapshot = "SELECT md5(string_agg(j::text, ',' ORDER BY id)) FROM river_job j";
    let admin = db.admin().await;
    let before: String = admin.query_one(snapshot, &[]).await.expect("md5").get(0);
    let metrics: String = ["length", "oldest_age_seconds", "in_flight", "due", "delayed", "failed"]
        .iter()
        .map(|m| {
            format!("  - {{name: {}, source: db, measure: {m}, postgres: {{library: river, queue: '*'}}}}\n", m.replace('_', "-"))
        })
        .collect();
    let a = Adapter::start(&format!(
        "poll_interval: 50ms\nsources:\n  db:\n    {}\nmetrics:\n{metrics}",
        db.source_yaml()
    ))
    .await;
    a.ready().await;
    // While it polls every 50 ms, every lock an adapter session holds is the AccessShareLock a
    // SELECT takes (or its own transaction's virtual id), none advisory, and no session of
    // its has a transaction id (which only writing gets).
    let locks = "SELECT l.locktype, l.mode, coalesce(a.backend_xid::text, '') \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE a.application_name = 'queue-metrics-adapter' AND a.datname = $1";
    let mut seen = 0;
    for _ in 0..200 {
        for row in admin.query(locks, &[&db.name]).await.expect("pg_locks") {
            let (kind, mode, xid): (String, String, String) = (row.get(0), row.get(1), row.get(2));
            seen += 1;
            assert!(
                (kind == "relation" && mode == "AccessShareLock")
                    || (kind == "virtualxid" && mode == "ExclusiveLock"),
                "the adapter holds a {mode} {kind} lock"
            );
            assert!(
                xid.is_empty(),
                "the adapter's session has transaction id {xid}"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(a.metric("length", None).await.0, 200);
    a.stop().await;
    let after: String = admin.query_one(snapshot, &[]).await.expect("md5").get(0);
    assert_eq!(before, after, "river_job is unchanged");
    let advisory: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .await
        .expect("advisory")
        .get(0);
    assert_eq!(advisory, 0);
    // The sessions are read-only from their first statement: a write through the same
    // settings fails.
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={} options='{}'",
            db.name,
            queue_metrics_adapter::sources::postgres::connect::session_options(
                Duration::from_secs(1)
            )
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("session");
    tokio::spawn(connection);
    let err = client
        .batch_execute("DELETE FROM river_job")
        .await
        .expect_err("read-only");
    assert!(
        err.to_string().contains("read-only") || format!("{err:?}").contains("read-only"),
        "{err:?}"
    );
    eprintln!("lock rows seen while polling: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_described_table_and_a_users_query() {
    let db = TestDb::create("generic").await;
    db.exec(
        "CREATE TABLE jobs (id bigserial PRIMARY KEY, queue text NOT NULL, state text NOT NULL, \
           run_at timestamptz NOT NULL DEFAULT now(), created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'), \
           locked_by text); \
         INSERT INTO jobs (queue, state, created_at) VALUES \
           ('emb', 'ready', (now() AT TIME ZONE 'UTC') - interval '20 seconds'), ('emb', 'ready', now() AT TIME ZONE 'UTC'), \
           ('o''dd', 'ready', now() AT TIME ZONE 'UTC'), ('emb', 'running', now() AT TIME ZONE 'UTC'), \
           ('emb', 'done', (now() AT TIME ZONE 'UTC') - interval '1 day'); \
         INSERT INTO jobs (queue, state, run_at) VALUES ('emb', 'ready', now() + interval '1 hour')",
    )
    .await;
    db.exec(&format!(
        // USAGE on the sequence would let the role call nextval: only the session's READ ONLY
        // stops the `bumper` query below.
        "GRANT USAGE ON SCHEMA public TO {r}; GRANT SELECT ON jobs TO {r}; GRANT USAGE ON SEQUENCE jobs_id_seq TO {r}",
        r = db.reader
    ))
    .await;
    let table = "table: {name: jobs, queue_column: queue, time_column: created_at, time_zone: UTC, \
                 ready: [{column: state, equals: ready}, {column: run_at, not_after_now: true}], \
                 in_flight: [{column: state, in: [running]}], \
                 delayed: [{column: state, equals: ready}, {column: run_at, not_after_now: false}]}";
    let a = Adapter::start(&format!(
        "poll_interval: 200ms\nsources:\n  db:\n    {src}\nmetrics:\n\
         - {{name: waiting, source: db, measure: length, postgres: {{queue: '*', {table}}}}}\n\
         - {{name: age, source: db, measure: oldest_age_seconds, postgres: {{queue: emb, {table}}}}}\n\
         - {{name: running, source: db, measure: in_flight, postgres: {{queue: emb, {table}}}}}\n\
         - {{name: later, source: db, measure: delayed, postgres: {{queue: emb, {table}}}}}\n\
         - {{name: counted, source: db, measure: length, postgres: {{query: \"SELECT queue, count(*) AS value FROM jobs WHERE state = 'ready' GROUP BY queue\"}}}}\n\
         - {{name: oldest, source: db, measure: oldest_age_seconds, postgres: {{query: \"SELECT extract(epoch FROM now() - min(run_at)) AS value FROM jobs WHERE state = 'ready' AND run_at <= now()\"}}}}\n\
         - {{name: shapeless, source: db, measure: length, postgres: {{query: \"SELECT queue, count(*) AS n FROM jobs GROUP BY queue\"}}}}\n\
         - {{name: writer, source: db, measure: length, postgres: {{query: \"WITH d AS (DELETE FROM jobs RETURNING 1) SELECT count(*) AS value FROM d\"}}}}\n\
         - {{name: bumper, source: db, measure: length, postgres: {{query: \"SELECT nextval('jobs_id_seq') - nextval('jobs_id_seq') + 1 AS value\"}}}}\n",
        src = db.source_yaml()
    ))
    .await;
    a.ready().await;
    let (_, body) = a.metric("waiting", None).await;
    let mut got: Vec<(String, String)> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            assert_eq!(i["metricLabels"]["library"], "table");
            (
                i["metricLabels"]["queue"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                i["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    // A queue name that is no label value is served as one (`o'dd` becomes `o_dd-<hash>`).
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], ("emb".into(), "2".into()));
    assert!(got[1].0.starts_with("o_dd-") && got[1].1 == "1", "{got:?}");
    let (_, body) = a.metric("age", None).await;
    let age = common::single_value(&body);
    assert!(
        (19.0..40.0).contains(&age),
        "created 20 s ago (UTC without zone): {age}"
    );
    assert_eq!(
        common::single_value(&a.metric("running", None).await.1),
        1.0
    );
    assert_eq!(common::single_value(&a.metric("later", None).await.1), 1.0);
    let (_, body) = a.metric("counted", Some("queue=emb")).await;
    assert_eq!(common::single_value(&body), 3.0, "{body}");
    let (_, body) = a.metric("oldest", None).await;
    assert!(common::single_value(&body) < 30.0, "{body}");
    error_holds(&a, "shapeless", &["must return value"]).await;
    error_holds(&a, "writer", &["data-modifying"]).await;
    error_holds(&a, "bumper", &["read-only transaction"]).await;
    a.stop().await;
    assert_eq!(
        db.scalar("SELECT count(*) FROM jobs").await,
        6,
        "nothing deleted"
    );
    assert_eq!(
        db.scalar("SELECT last_value FROM jobs_id_seq").await,
        6,
        "the sequence did not move"
    );

    // A time column that is not a time, and one without a zone not said to hold UTC.
    for (time, wanted) in [("id", "not a timestamp"), ("created_at", "time_zone: UTC")] {
        let a = Adapter::start(&format!(
            "poll_interval: 200ms\nsources:\n  db:\n    {src}\nmetrics:\n\
             - {{name: age, source: db, measure: oldest_age_seconds, postgres: {{table: {{name: jobs, time_column: {time}, ready: [{{column: state, equals: ready}}]}}}}}}\n",
            src = db.source_yaml()
        ))
        .await;
        error_holds(&a, "age", &[wanted]).await;
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_recognises_the_libraries_tables() {
    let db = river_db("discover").await;
    db.exec(
        "INSERT INTO river_job (args, kind, queue, state, scheduled_at) VALUES ('{}', 'x', 'ocr', 'available', now())",
    )
    .await;
    db.apply_fixture("good_job.sql").await;
    db.exec(&format!("GRANT SELECT ON good_jobs TO {}", db.reader))
        .await;
    let url = format!(
        "postgres://{}@127.0.0.1:5432/{}?sslmode=disable",
        db.reader, db.name
    );
    let found =
        queue_metrics_adapter::discover::run(&queue_metrics_adapter::cli::discover::DiscoverArgs {
            postgres: vec![url],
            ..Default::default()
        })
        .await
        .expect("discover");
    let config = &found.config;
    for needle in [
        "measure: length, postgres: {library: river, queue: \"emb\"}",
        "measure: length, postgres: {library: river, queue: \"ocr\"}",
        "measure: failed, postgres: {library: river, queue: \"emb\"}",
        "measure: length, postgres: {library: good-job, queue: \"*\"}",
    ] {
        assert!(config.contains(needle), "{needle}\n{config}");
    }
    assert!(
        !config.contains("pg-boss") && !config.contains("oban"),
        "{config}"
    );
    assert!(found.summary.contains("emb"), "{}", found.summary);
    // Served as written, the discovered metric is the queue's length.
    let name = config
        .lines()
        .find(|l| l.contains("measure: length, postgres: {library: river, queue: \"emb\"}"))
        .and_then(|l| l.split("name: ").nth(1))
        .and_then(|r| r.split(',').next())
        .expect("a name")
        .to_string();
    let a = Adapter::start(&format!("poll_interval: 200ms\n{config}")).await;
    a.wait_for(&name, None, LIMIT, common::value_is(3.0)).await;
    a.stop().await;
}
