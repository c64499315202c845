//! The `postgres` source against private PostgreSQL servers of the tests' own
//! (`common::postgres::PrivatePostgres`: Debian's binaries, a free port, a scratch directory):
//! TLS, whose certificate is verified against `ca_file` in every TLS mode, on a server that lets
//! in TLS sessions only (`hostssl`), so that a wrong CA or a plain session is an error naming
//! the certificate or `pg_hba.conf`, never a number; and a server stopped (fast shutdown, as an
//! operator's restart) and started again, during which the metric is an error, then served
//! again from a new session; River's `public.river_insert` notification wakes a source polled
//! once an hour.

mod common;

use std::time::{Duration, Instant};

use common::postgres::PrivatePostgres;
use common::{Adapter, value_is};

const LIMIT: Duration = Duration::from_secs(10);

/// Database `jobs` with River's tables (tests/fixtures/postgres/river.sql), three jobs ready in
/// `emb`, and the login roles `readers` (no password: trust), each with the README's grants.
async fn river(pg: &PrivatePostgres, readers: &[&str]) {
    pg.exec("postgres", "CREATE DATABASE jobs").await;
    pg.apply_fixture("jobs", "river.sql").await;
    let mut sql = String::from(
        "INSERT INTO river_job (args, kind, queue, state, scheduled_at) \
         SELECT '{}', 'embed', 'emb', 'available', now() - interval '5 seconds' FROM generate_series(1, 3);",
    );
    for r in readers {
        sql.push_str(&format!(
            "CREATE ROLE {r} LOGIN; GRANT USAGE ON SCHEMA public TO {r}; GRANT SELECT ON river_job, river_migration TO {r};"
        ));
    }
    pg.exec("jobs", &sql).await;
}

/// A source block for database `jobs` on `pg` as `user`, with `extra` fields.
fn source(pg: &PrivatePostgres, user: &str, extra: &str) -> String {
    format!(
        "postgres: {{host: 127.0.0.1, port: {}, dbname: jobs, username: {user}{extra}}}",
        pg.port
    )
}

/// A metric `name` of source `source`: River's queue `emb`, its length.
fn metric(name: &str, source: &str) -> String {
    format!(
        "  - {{name: {name}, source: {source}, measure: length, postgres: {{library: river, queue: emb}}}}\n"
    )
}

/// Waits until `metric` answers an error whose message holds every one of `parts`; every
/// answer on the way must be an error too (these metrics never have a value to serve).
async fn error_holds(a: &Adapter, metric: &str, parts: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = a.metric(metric, None).await;
        let text = body.to_string();
        assert_ne!(status, 200, "{metric} served a value: {text}");
        if parts.iter().all(|p| text.contains(p)) {
            return text;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{metric}: {status} {text} does not name {parts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_and_a_hostssl_only_server_refuses_plain_sessions() {
    let started = Instant::now();
    let pg = PrivatePostgres::start_with(true, true);
    river(&pg, &["reader", "preferrer"]).await;
    let ca = pg.ca_file.clone().expect("a TLS server has a CA");
    let other = pg.dir.join("other-ca.pem");
    std::fs::write(&other, common::pki::ca("qma-test-other-ca").pem()).expect("other CA");
    let sources = [
        (
            "verified",
            source(
                &pg,
                "reader",
                &format!(", sslmode: verify-full, ca_file: {}", ca.display()),
            ),
        ),
        (
            "wrong_ca",
            source(
                &pg,
                "reader",
                &format!(", sslmode: require, ca_file: {}", other.display()),
            ),
        ),
        (
            "system_roots",
            source(&pg, "reader", ", sslmode: verify-full"),
        ),
        ("plain", source(&pg, "reader", ", sslmode: disable")),
        (
            "preferred",
            source(
                &pg,
                "preferrer",
                &format!(", sslmode: prefer, ca_file: {}", ca.display()),
            ),
        ),
    ];
    let mut config = String::from("poll_interval: 200ms\nmax_backoff: 1s\nsources:\n");
    for (name, block) in &sources {
        config.push_str(&format!("  {name}:\n    {block}\n"));
    }
    config.push_str("metrics:\n");
    for (name, _) in &sources {
        config.push_str(&metric(&name.replace('_', "-"), name));
    }
    let a = Adapter::start(&config).await;

    // (a) verify-full against the test CA: served.
    a.wait_for("verified", None, LIMIT, value_is(3.0)).await;
    // (d) prefer with the test CA: served, over TLS.
    a.wait_for("preferred", None, LIMIT, value_is(3.0)).await;
    // (b) require against another CA: the certificate is refused, by name.
    let wrong = error_holds(&a, "wrong-ca", &["127.0.0.1", "certificate"]).await;
    // With no ca_file, the system's roots do not know the test CA either.
    let system = error_holds(&a, "system-roots", &["certificate"]).await;
    // (c) disable: the server lets in TLS sessions only, and says so.
    let plain = error_holds(&a, "plain", &["pg_hba.conf", "no encryption"]).await;

    // Every session the adapter holds is TLS (`prefer` as well), as the server tells.
    let admin = pg.admin("jobs").await;
    let rows = admin
        .query(
            "SELECT usename::text, ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'queue-metrics-adapter' ORDER BY 1",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    let sessions: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(
        sessions.iter().any(|(u, _)| u == "preferrer")
            && sessions.iter().any(|(u, _)| u == "reader"),
        "sessions of both roles: {sessions:?}"
    );
    assert!(
        sessions.iter().all(|(_, ssl)| *ssl),
        "every adapter session uses TLS: {sessions:?}"
    );
    // The superuser's own session came over TLS too (hostssl only).
    let own: bool = admin
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("own ssl")
        .get(0);
    assert!(own);
    // The refused plain session reached the server and was refused by pg_hba.conf.
    assert!(
        pg.log().contains("no pg_hba.conf entry"),
        "server log:\n{}",
        pg.log()
    );
    // Still refused, still served.
    for (metric, ok) in [
        ("verified", true),
        ("preferred", true),
        ("wrong-ca", false),
        ("system-roots", false),
        ("plain", false),
    ] {
        let (status, body) = a.metric(metric, None).await;
        assert_eq!(status == 200, ok, "{metric}: {status} {body}");
    }
    a.stop().await;
    eprintln!("wrong CA: {wrong}\nsystem roots: {system}\nplain: {plain}");
    eprintln!("TLS test took {:?}", started.elapsed());
}

/// Waits until the adapter's session `LISTEN`s on `channel` (its last statement, done).
async fn listening(admin: &tokio_postgres::Client, channel: &str) {
    let start = Instant::now();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'queue-metrics-adapter' \
                 AND state = 'idle' AND query = $1",
                &[&format!("LISTEN \"{channel}\"")],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "no adapter session LISTENs on {channel}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_an_error_never_a_number_then_served_again() {
    let started = Instant::now();
    let mut pg = PrivatePostgres::start();
    river(&pg, &["reader"]).await;
    // `fast` polls every 200 ms (no LISTEN); `slow` once an hour, woken by River's
    // notification.
    let config = format!(
        "poll_interval: 200ms\npoll_timeout: 2s\nmax_backoff: 1s\nsources:\n  fast:\n    {}\n  slow:\n    {}\nmetrics:\n{}{}",
        source(&pg, "reader", ", sslmode: disable, wake: {enabled: false}"),
        source(&pg, "reader", ", sslmode: disable, poll_interval: 1h"),
        metric("m", "fast"),
        metric("w", "slow"),
    );
    let a = Adapter::start(&config).await;
    a.wait_for("m", None, LIMIT, value_is(3.0)).await;
    a.wait_for("w", None, LIMIT, value_is(3.0)).await;

    // Wake: a job inserted without a notification is not seen by the hourly poll; River's
    // `NOTIFY "public.river_insert"` (as its Go client sends after an insert) wakes it.
    let admin = pg.admin("jobs").await;
    listening(&admin, "public.river_insert").await;
    admin
        .batch_execute(
            "INSERT INTO river_job (args, kind, queue, state) VALUES ('{}', 'embed', 'emb', 'available')",
        )
        .await
        .expect("insert");
    a.wait_for("m", None, LIMIT, value_is(4.0)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, body) = a.metric("w", None).await;
    assert_eq!(common::single_value(&body), 3.0, "no poll without a wake");
    let notified = Instant::now();
    admin
        .batch_execute(r#"NOTIFY "public.river_insert", '{"queue": "emb"}'"#)
        .await
        .expect("notify");
    a.wait_for("w", None, Duration::from_secs(2), value_is(4.0))
        .await;
    eprintln!("woken in {:?}", notified.elapsed());
    drop(admin);

    // Fast shutdown: the adapter's sessions are ended; the metric becomes an error (503)
    // within a few polls and stays one while the server is down, never a number.
    pg.stop();
    let stopped = Instant::now();
    let (status, body) = a
        .wait_for("m", None, Duration::from_secs(3), |s, _| s != 200)
        .await;
    assert_eq!(status, 503, "{body}");
    eprintln!(
        "error {:?} after the stop: {body}; w meanwhile: {:?}",
        stopped.elapsed(),
        a.metric("w", None).await
    );
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(2) {
        let (status, body) = a.metric("m", None).await;
        assert_eq!(status, 503, "while the server is down: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Started again on the same port and data: a new session, the same jobs.
    pg.start_again();
    let back = Instant::now();
    a.wait_for("m", None, LIMIT, value_is(4.0)).await;
    eprintln!("served again {:?} after the start", back.elapsed());
    let admin = pg.admin("jobs").await;
    let sessions: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'queue-metrics-adapter'",
            &[],
        )
        .await
        .expect("sessions")
        .get(0);
    // Observed, not asserted: the hourly source's LISTEN session is opened again only at one
    // of its polls (src/sources/postgres/wake.rs), so after the restart it is polled only.
    eprintln!(
        "after the restart: {sessions} adapter sessions; w: {:?}",
        a.metric("w", None).await
    );
    assert!(sessions >= 1);
    a.stop().await;
    eprintln!("stop/start test took {:?}", started.elapsed());
}

/// The `LISTEN` session opens itself again within `RETRY_AFTER` (30 s) of a server restart,
/// not at the next poll (an hour away here), and its opening wakes the poll, so the jobs
/// inserted while nobody listened are read at once, and a notified insert wakes it again.
/// Takes about 35 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wake_comes_back_after_a_server_restart() {
    let mut pg = PrivatePostgres::start();
    river(&pg, &["reader"]).await;
    let config = format!(
        "poll_interval: 1h\nmax_staleness: 2h\npoll_timeout: 2s\nmax_backoff: 1s\nsources:\n  slow:\n    {}\nmetrics:\n{}",
        source(&pg, "reader", ", sslmode: disable"),
        metric("w", "slow"),
    );
    let a = Adapter::start(&config).await;
    a.wait_for("w", None, LIMIT, value_is(3.0)).await;
    listening(&pg.admin("jobs").await, "public.river_insert").await;

    pg.stop();
    pg.start_again();
    let admin = pg.admin("jobs").await;
    // Inserted while nobody listens, and not notified.
    admin
        .batch_execute(
            "INSERT INTO river_job (args, kind, queue, state) VALUES ('{}', 'embed', 'emb', 'available')",
        )
        .await
        .expect("insert");
    // The listener opens itself again within RETRY_AFTER, and its opening wakes the poll.
    let start = Instant::now();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'queue-metrics-adapter' \
                 AND state = 'idle' AND query = 'LISTEN \"public.river_insert\"'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no LISTEN session 40 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.wait_for("w", None, Duration::from_secs(3), value_is(4.0))
        .await;
    // And a notified job wakes it as before the restart.
    admin
        .batch_execute(
            r#"INSERT INTO river_job (args, kind, queue, state) VALUES ('{}', 'embed', 'emb', 'available'); NOTIFY "public.river_insert", '{"queue": "emb"}'"#,
        )
        .await
        .expect("insert and notify");
    a.wait_for("w", None, Duration::from_secs(2), value_is(5.0))
        .await;
    a.stop().await;
}
