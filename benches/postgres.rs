//! The `postgres` source's poll on job tables of a million rows, nearly all finished (kept for
//! history, as real tables keep them) and about 3,000 unfinished across 20 queues, for pg-boss
//! (its tables made by the real pg-boss 10.4.2 client: a partition and its `job_i5` per queue),
//! Oban, River and GoodJob (`tests/fixtures/postgres/`), in a scratch database
//! `qma_bench_<pid>` on the PostgreSQL at 127.0.0.1:5432, dropped at the end.
//!
//! For each library, the statements the adapter sends
//! (`libraries::statements(library, schema, [waiting, oldest_ms, in_flight, due where kept,
//! delayed])`; pg-boss first without `in_flight`, then with it and the index the README says to
//! add for it, `(name) WHERE state = 'active'`: pg-boss 10 keeps none that finds active jobs;
//! then River's and GoodJob's `arrival_rate` and `completion_rate` over the default minute,
//! with 600 jobs created and finished within it):
//! - each one under `EXPLAIN (ANALYZE, BUFFERS)`: the key lines are printed, and a statement
//!   that reads the finished rows (a sequential scan of a job table, more buffers than twice the
//!   unfinished rows plus 1,000, or a filter that throws away more rows than there are
//!   unfinished jobs) is
//!   named; under `cargo bench` any such statement fails the run at its end;
//! - the poll's time: the adapter's own poll (a `PostgresSource` built from YAML; the values
//!   checked against what was inserted), against, in the same run, the same text as one simple
//!   query from a bare `tokio-postgres` client (replies not read), from `psql` inside one session
//!   (`\timing`, the statements joined with `\;` so that they go as one request, as the adapter
//!   sends them), and `psql -c` as a process per query (connection and start-up included).
//!   Medians; the figures are printed as a table for BENCHMARKS.md.
//!
//! `cargo bench --bench postgres` (or `scripts/bench-postgres.sh`, which starts PostgreSQL and
//! installs pg-boss first) builds the million rows per library (a few minutes); `cargo test`
//! runs it once as a test on 20,000 rows per library and 3 polls, checking the values only (a
//! table that small may well be read whole). `QMA_BENCH_PG_ROWS` and `QMA_BENCH_PG_POLLS`
//! override the sizes. Needs `psql`, Node.js and pg-boss under target/job-libraries
//! (`scripts/ensure-job-libraries.sh postgres`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use queue_metrics_adapter::config::Config;
use queue_metrics_adapter::sources::Source;
use queue_metrics_adapter::sources::postgres::config::PgLibrary;
use queue_metrics_adapter::sources::postgres::libraries::statements;
use queue_metrics_adapter::sources::postgres::rows::Column;
use queue_metrics_adapter::sources::postgres::{Postgres, PostgresSource};

/// Queues the jobs are spread over.
const QUEUES: u64 = 20;
/// The rates' window: the metrics' default (`window` is not set in the YAML).
const WINDOW: Duration = Duration::from_secs(60);
/// One row in this many is unfinished (about 3,000 of a million).
const UNFINISHED_EVERY: u64 = 333;

fn host() -> String {
    std::env::var("QMA_POSTGRES_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

fn port() -> String {
    std::env::var("QMA_POSTGRES_PORT").unwrap_or_else(|_| "5432".into())
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a generated row is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Ready now.
    Waiting,
    /// Scheduled an hour ahead.
    Later,
    /// Held by a worker.
    Running,
    /// Scheduled, its time come (Oban and River make it ready; the others count it ready).
    Due,
    /// To be retried ten minutes ahead.
    RetryLater,
    Failed,
    Cancelled,
    Done,
}

/// Row `i`'s kind and queue; `kind_sql` and `queue_sql` say the same in SQL.
fn kind(i: u64) -> Kind {
    if i.is_multiple_of(UNFINISHED_EVERY) {
        match (i / UNFINISHED_EVERY) % 20 {
            0..=13 => Kind::Waiting,
            14 | 15 => Kind::Later,
            16 | 17 => Kind::Running,
            18 => Kind::Due,
            _ => Kind::RetryLater,
        }
    } else if i.is_multiple_of(41) {
        Kind::Failed
    } else if i.is_multiple_of(97) {
        Kind::Cancelled
    } else {
        Kind::Done
    }
}

fn queue(i: u64) -> String {
    let q = if i.is_multiple_of(UNFINISHED_EVERY) {
        let k = i / UNFINISHED_EVERY;
        (k / 20 + k) % QUEUES
    } else {
        i % QUEUES
    };
    format!("q{q:02}")
}

/// The generated rows, as a table `bench_gen (i, queue, kind, created timestamptz)`: the
/// unfinished ones created in the last 10 minutes, the others over the last 14 days.
fn generator_sql(rows: u64) -> String {
    let u = UNFINISHED_EVERY;
    format!(
        "CREATE UNLOGGED TABLE bench_gen AS SELECT i, \
           'q' || lpad((CASE WHEN i % {u} = 0 THEN (i / {u} / 20 + i / {u}) % {QUEUES} ELSE i % {QUEUES} END)::text, 2, '0') AS queue, \
           CASE WHEN i % {u} = 0 THEN \
             CASE WHEN (i / {u}) % 20 < 14 THEN 'waiting' WHEN (i / {u}) % 20 < 16 THEN 'later' \
                  WHEN (i / {u}) % 20 < 18 THEN 'running' WHEN (i / {u}) % 20 = 18 THEN 'due' ELSE 'retry_later' END \
           WHEN i % 41 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'cancelled' ELSE 'done' END AS kind, \
           CASE WHEN i % {u} = 0 THEN now() - make_interval(secs => 5 + (i / {u}) % 600) \
                ELSE now() - make_interval(secs => ({rows} - i + 700) * (1209600.0 / {rows})) END AS created \
         FROM generate_series(1, {rows}) AS i"
    )
}

/// When a row of its kind may run (`created` for the ready ones).
const RUN_AT: &str = "CASE g.kind WHEN 'later' THEN now() + interval '1 hour' \
     WHEN 'retry_later' THEN now() + interval '10 minutes' WHEN 'due' THEN now() - interval '2 seconds' ELSE g.created END";
/// When a finished row finished.
const FINISHED: &str = "g.created + interval '3 seconds'";

struct Lib {
    /// Its name in the report.
    label: &'static str,
    library: PgLibrary,
    /// Its `library:` in the YAML.
    yaml: &'static str,
    schema: &'static str,
    /// The measures read, in this order (so that the source's statements are `columns`').
    measures: &'static [(&'static str, Column)],
    /// Loads `bench_gen` into its tables (`None`: another case loaded them).
    load: Option<&'static str>,
    /// Run before its statements are explained and timed.
    setup: Option<&'static str>,
    /// Expected value of a column for a queue, from the kinds' counts.
    expect: fn(Column, &BTreeMap<Kind, u64>) -> f64,
}

impl Lib {
    fn columns(&self) -> Vec<Column> {
        self.measures.iter().map(|(_, c)| *c).collect()
    }
}

const ALL_MEASURES: &[(&str, Column)] = &[
    ("length", Column::Waiting),
    ("oldest_age_seconds", Column::OldestMs),
    ("in_flight", Column::InFlight),
    ("due", Column::Due),
    ("delayed", Column::Delayed),
];
const NO_DUE_NO_IN_FLIGHT: &[(&str, Column)] = &[
    ("length", Column::Waiting),
    ("oldest_age_seconds", Column::OldestMs),
    ("delayed", Column::Delayed),
];
const NO_DUE: &[(&str, Column)] = &[
    ("length", Column::Waiting),
    ("oldest_age_seconds", Column::OldestMs),
    ("in_flight", Column::InFlight),
    ("delayed", Column::Delayed),
];

const RATES: &[(&str, Column)] = &[
    ("arrival_rate", Column::Arrived),
    ("completion_rate", Column::Completed),
];

fn n(kinds: &BTreeMap<Kind, u64>, ks: &[Kind]) -> f64 {
    ks.iter()
        .map(|k| kinds.get(k).copied().unwrap_or(0))
        .sum::<u64>() as f64
}

/// Due jobs counted as waiting (pg-boss, GoodJob: their workers take them as they are).
fn expect_due_waiting(c: Column, k: &BTreeMap<Kind, u64>) -> f64 {
    match c {
        Column::Waiting => n(k, &[Kind::Waiting, Kind::Due]),
        Column::InFlight => n(k, &[Kind::Running]),
        Column::Delayed => n(k, &[Kind::Later, Kind::RetryLater]),
        _ => f64::NAN,
    }
}

/// Due jobs counted apart (Oban, River: a stager makes them available).
fn expect_due_apart(c: Column, k: &BTreeMap<Kind, u64>) -> f64 {
    match c {
        Column::Waiting => n(k, &[Kind::Waiting]),
        Column::InFlight => n(k, &[Kind::Running]),
        Column::Due => n(k, &[Kind::Due]),
        Column::Delayed => n(k, &[Kind::Later, Kind::RetryLater]),
        _ => f64::NAN,
    }
}

/// Rates depend on when the rows were made, which the kinds' counts do not hold: `NaN`, any
/// rate a poll serves is taken.
fn expect_rates(_: Column, _: &BTreeMap<Kind, u64>) -> f64 {
    f64::NAN
}

impl Ord for Kind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}
impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn libs() -> Vec<Lib> {
    vec![
        // pg-boss 10 keeps no index that finds its active jobs: `in_flight` reads the whole job
        // table unless the index the README gives is added, so it is a case of its own, second.
        Lib {
            label: "pg-boss",
            library: PgLibrary::PgBoss,
            yaml: "pg-boss",
            schema: "pgboss",
            measures: NO_DUE_NO_IN_FLIGHT,
            setup: None,
            // pg-boss 10: created -> active -> completed | failed (after retries) | cancelled;
            // a retry waits in `retry` until its start_after.
            load: Some(
                "INSERT INTO pgboss.job (name, data, state, start_after, created_on, started_on, completed_on, retry_count) \
                   SELECT g.queue, jsonb_build_object('i', g.i), \
                     (CASE g.kind WHEN 'waiting' THEN 'created' WHEN 'later' THEN 'created' WHEN 'running' THEN 'active' \
                       WHEN 'due' THEN 'retry' WHEN 'retry_later' THEN 'retry' WHEN 'done' THEN 'completed' ELSE g.kind END)::pgboss.job_state, \
                     RUN_AT, g.created, \
                     CASE WHEN g.kind IN ('running', 'failed', 'done') THEN g.created + interval '1 second' END, \
                     CASE WHEN g.kind IN ('failed', 'cancelled', 'done') THEN FINISHED END, \
                     CASE WHEN g.kind IN ('due', 'retry_later', 'failed') THEN 1 ELSE 0 END \
                   FROM bench_gen g",
            ),
            expect: expect_due_waiting,
        },
        Lib {
            label: "pg-boss + in_flight, with the README's index",
            library: PgLibrary::PgBoss,
            yaml: "pg-boss",
            schema: "pgboss",
            measures: NO_DUE,
            load: None,
            setup: Some(
                "CREATE INDEX ON pgboss.job (name) WHERE state = 'active'; ANALYZE pgboss.job",
            ),
            expect: expect_due_waiting,
        },
        Lib {
            label: "Oban",
            library: PgLibrary::Oban,
            yaml: "oban",
            schema: "public",
            measures: ALL_MEASURES,
            setup: None,
            load: Some(
                "INSERT INTO oban_jobs (state, queue, worker, args, attempt, inserted_at, scheduled_at, attempted_at, attempted_by, completed_at, discarded_at, cancelled_at) \
                   SELECT (CASE g.kind WHEN 'waiting' THEN 'available' WHEN 'later' THEN 'scheduled' WHEN 'running' THEN 'executing' \
                       WHEN 'due' THEN 'scheduled' WHEN 'retry_later' THEN 'retryable' WHEN 'failed' THEN 'discarded' \
                       WHEN 'cancelled' THEN 'cancelled' ELSE 'completed' END)::oban_job_state, \
                     g.queue, 'Bench.Worker', jsonb_build_object('i', g.i), \
                     CASE WHEN g.kind IN ('waiting', 'later', 'due') THEN 0 WHEN g.kind = 'failed' THEN 20 ELSE 1 END, \
                     g.created AT TIME ZONE 'UTC', (RUN_AT) AT TIME ZONE 'UTC', \
                     CASE WHEN g.kind IN ('running', 'retry_later', 'failed', 'done') THEN (g.created + interval '1 second') AT TIME ZONE 'UTC' END, \
                     CASE WHEN g.kind IN ('running', 'retry_later', 'failed', 'done') THEN ARRAY['bench-node'] END, \
                     CASE WHEN g.kind = 'done' THEN (FINISHED) AT TIME ZONE 'UTC' END, \
                     CASE WHEN g.kind = 'failed' THEN (FINISHED) AT TIME ZONE 'UTC' END, \
                     CASE WHEN g.kind = 'cancelled' THEN (FINISHED) AT TIME ZONE 'UTC' END \
                   FROM bench_gen g",
            ),
            expect: expect_due_apart,
        },
        Lib {
            label: "River",
            library: PgLibrary::River,
            yaml: "river",
            schema: "public",
            measures: ALL_MEASURES,
            setup: None,
            load: Some(
                "INSERT INTO river_job (state, attempt, attempted_at, created_at, finalized_at, scheduled_at, args, attempted_by, kind, queue) \
                   SELECT (CASE g.kind WHEN 'waiting' THEN 'available' WHEN 'later' THEN 'scheduled' WHEN 'running' THEN 'running' \
                       WHEN 'due' THEN 'scheduled' WHEN 'retry_later' THEN 'retryable' WHEN 'failed' THEN 'discarded' \
                       WHEN 'cancelled' THEN 'cancelled' ELSE 'completed' END)::river_job_state, \
                     CASE WHEN g.kind IN ('waiting', 'later', 'due') THEN 0 ELSE 1 END, \
                     CASE WHEN g.kind IN ('running', 'retry_later', 'failed', 'done') THEN g.created + interval '1 second' END, \
                     g.created, \
                     CASE WHEN g.kind IN ('failed', 'cancelled', 'done') THEN FINISHED END, \
                     RUN_AT, jsonb_build_object('i', g.i), \
                     CASE WHEN g.kind IN ('running', 'retry_later', 'failed', 'done') THEN ARRAY['bench-client'] END, \
                     'bench_job', g.queue \
                   FROM bench_gen g",
            ),
            expect: expect_due_apart,
        },
        Lib {
            label: "GoodJob",
            library: PgLibrary::GoodJob,
            yaml: "good-job",
            schema: "public",
            measures: NO_DUE,
            // GoodJob 4: `scheduled_at` is the enqueue time when not scheduled; a discarded or
            // cancelled job is finished with an error.
            setup: None,
            load: Some(
                "INSERT INTO good_jobs (queue_name, priority, serialized_params, scheduled_at, performed_at, finished_at, error, \
                     created_at, updated_at, active_job_id, job_class, executions_count, locked_by_id, locked_at) \
                   SELECT g.queue, 0, jsonb_build_object('i', g.i), (RUN_AT) AT TIME ZONE 'UTC', \
                     CASE WHEN g.kind IN ('running', 'failed', 'cancelled', 'done') THEN (g.created + interval '1 second') AT TIME ZONE 'UTC' END, \
                     CASE WHEN g.kind IN ('failed', 'cancelled', 'done') THEN (FINISHED) AT TIME ZONE 'UTC' END, \
                     CASE g.kind WHEN 'failed' THEN 'RuntimeError: bench' WHEN 'cancelled' THEN 'ActiveJob::DeserializationError' END, \
                     g.created AT TIME ZONE 'UTC', g.created AT TIME ZONE 'UTC', gen_random_uuid(), 'BenchJob', \
                     CASE WHEN g.kind IN ('waiting', 'later', 'due') THEN 0 ELSE 1 END, \
                     CASE WHEN g.kind = 'running' THEN gen_random_uuid() END, \
                     CASE WHEN g.kind = 'running' THEN (g.created + interval '1 second') AT TIME ZONE 'UTC' END \
                   FROM bench_gen g",
            ),
            expect: expect_due_waiting,
        },
        // The rates of the libraries that keep finished jobs with their times, last (their
        // set-up moves rows into the window): 600 of the newest finished jobs made to have
        // arrived 8 s and finished 5 s before the statements run, 10 a second over the window.
        Lib {
            label: "River rates",
            library: PgLibrary::River,
            yaml: "river",
            schema: "public",
            measures: RATES,
            load: None,
            setup: Some(
                "UPDATE river_job SET created_at = now() - interval '8 seconds', finalized_at = now() - interval '5 seconds' \
                   WHERE id IN (SELECT id FROM river_job WHERE state = 'completed' ORDER BY id DESC LIMIT 600); \
                 ANALYZE river_job",
            ),
            expect: expect_rates,
        },
        Lib {
            label: "GoodJob rates",
            library: PgLibrary::GoodJob,
            yaml: "good-job",
            schema: "public",
            measures: RATES,
            load: None,
            setup: Some(
                "UPDATE good_jobs SET created_at = (now() - interval '8 seconds') AT TIME ZONE 'UTC', \
                   finished_at = (now() - interval '5 seconds') AT TIME ZONE 'UTC' \
                   WHERE id IN (SELECT id FROM good_jobs WHERE finished_at IS NOT NULL AND error IS NULL \
                     ORDER BY created_at DESC LIMIT 600); \
                 ANALYZE good_jobs",
            ),
            expect: expect_rates,
        },
    ]
}

fn psql(db: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &host(),
        "-p",
        &port(),
    ])
    .args(["-U", "postgres", "-d", db]);
    c
}

/// Runs `psql` on `db` with `args`; its standard output, or a panic with its error.
fn psql_run(db: &str, args: &[&str]) -> String {
    let out = psql(db)
        .args(args)
        .output()
        .expect("psql runs (apt-get install postgresql-client)");
    assert!(
        out.status.success(),
        "psql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The scratch database, dropped (with its sessions) when this is.
struct Scratch {
    name: String,
}

impl Scratch {
    fn create() -> Scratch {
        let name = format!("qma_bench_{}", std::process::id());
        psql_run("postgres", &["-c", &format!("CREATE DATABASE {name}")]);
        Scratch { name }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = psql("postgres")
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn job_libraries() -> PathBuf {
    std::env::var_os("QMA_JOB_LIBRARIES_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/job-libraries"),
        PathBuf::from,
    )
}

/// pg-boss's tables, made by its own client: `start()` (schema `pgboss`) and a queue per name.
fn pg_boss_tables(db: &str) {
    let modules = job_libraries().join("node-postgres/node_modules");
    assert!(
        modules.join("pg-boss").exists(),
        "pg-boss is not installed under {}: run scripts/ensure-job-libraries.sh postgres",
        modules.display()
    );
    let script = format!(
        "const PgBoss = require('pg-boss');
(async () => {{
  const boss = new PgBoss({{ connectionString: process.argv[1], schema: 'pgboss', supervise: false, schedule: false }});
  boss.on('error', (e) => {{ console.error(e); process.exit(1); }});
  await boss.start();
  for (let q = 0; q < {QUEUES}; q++) await boss.createQueue('q' + String(q).padStart(2, '0'));
  await boss.stop({{ graceful: false, wait: true }});
}})().catch((e) => {{ console.error(e); process.exit(1); }});"
    );
    let url = format!("postgres://postgres@{}:{}/{db}", host(), port());
    let out = Command::new("node")
        .env("NODE_PATH", modules)
        .args(["-e", &script, "--", &url])
        .output()
        .expect("node runs (Node.js 20)");
    assert!(
        out.status.success(),
        "pg-boss start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn load(db: &str, rows: u64) {
    pg_boss_tables(db);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/postgres");
    for f in ["oban.sql", "river.sql", "good_job.sql"] {
        psql_run(db, &["-f", &fixtures.join(f).to_string_lossy()]);
    }
    psql_run(db, &["-c", &generator_sql(rows)]);
    for lib in libs() {
        let Some(load) = lib.load else { continue };
        let t = Instant::now();
        let sql = load.replace("RUN_AT", RUN_AT).replace("FINISHED", FINISHED);
        psql_run(db, &["-c", &sql]);
        eprintln!(
            "[bench postgres] {}: {rows} rows in {:.1} s",
            lib.label,
            t.elapsed().as_secs_f64()
        );
    }
    psql_run(db, &["-c", "DROP TABLE bench_gen"]);
    let t = Instant::now();
    // As autovacuum leaves a table that has stopped changing: statistics and visibility map.
    psql_run(db, &["-c", "VACUUM ANALYZE"]);
    eprintln!(
        "[bench postgres] VACUUM ANALYZE in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// Per queue, the number of rows of each kind.
fn expected(rows: u64) -> BTreeMap<String, BTreeMap<Kind, u64>> {
    let mut out: BTreeMap<String, BTreeMap<Kind, u64>> = BTreeMap::new();
    for i in 1..=rows {
        *out.entry(queue(i)).or_default().entry(kind(i)).or_default() += 1;
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One statement's plan, checked.
struct Checked {
    statement: String,
    plan: String,
    /// Shared buffers the statement touched (hit + read), the top node's.
    buffers: u64,
    /// Why it reads the finished rows, where it does.
    reads_finished: Option<String>,
}

fn buffers_of(line: &str) -> u64 {
    ["hit=", "read="]
        .iter()
        .filter_map(|k| {
            let at = line.find(k)? + k.len();
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// EXPLAIN (ANALYZE, BUFFERS) of `statement`; `big` are the job tables (name, pages),
/// `unfinished` how many unfinished rows they hold.
async fn explain(
    client: &tokio_postgres::Client,
    statement: &str,
    big: &[(String, i64)],
    unfinished: u64,
) -> Checked {
    let rows = client
        .simple_query(&format!("EXPLAIN (ANALYZE, BUFFERS) {statement}"))
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {statement}: {e}"));
    let plan: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    // The top node's Buffers line comes before the first child's arrow.
    let buffers = plan
        .iter()
        .take_while(|l| !l.contains("->") && !l.starts_with("Planning"))
        .find(|l| l.trim_start().starts_with("Buffers:"))
        .map_or(0, |l| buffers_of(l));
    let pages: i64 = big
        .iter()
        .filter(|(name, _)| plan.iter().any(|l| l.contains(&format!(" {name} "))))
        .map(|(_, p)| p)
        .sum();
    let mut why = None;
    for l in &plan {
        if let Some(at) = l.find("Seq Scan on ") {
            let rel = l[at + 12..].split_whitespace().next().unwrap_or("");
            if big.iter().any(|(name, _)| name == rel) {
                why = Some(format!("sequential scan of {rel}"));
                break;
            }
        }
        if let Some(at) = l.find("Rows Removed by Filter: ") {
            let removed: u64 = l[at + 24..].trim().parse().unwrap_or(0);
            if removed > unfinished.max(1000) {
                why = Some(format!("{removed} rows removed by a filter"));
                break;
            }
        }
    }
    // At worst each unfinished row on a heap page of its own, and the index pages above them.
    let bound = 2 * unfinished + 1000;
    if why.is_none() && pages > 0 && buffers > bound {
        why = Some(format!(
            "{buffers} buffers, over {bound} for {unfinished} unfinished rows (its tables: {pages} pages)"
        ));
    }
    Checked {
        statement: statement.to_string(),
        plan: plan.join("\n"),
        buffers,
        reads_finished: why,
    }
}

/// The lines of a plan worth quoting: its nodes, index conditions, filters and buffers.
fn key_lines(plan: &str) -> String {
    plan.lines()
        .filter(|l| {
            let t = l.trim_start();
            t.contains("Scan")
                || t.starts_with("-> ")
                || t.starts_with("Index Cond")
                || t.starts_with("Filter")
                || t.starts_with("Rows Removed")
                || t.starts_with("Heap Fetches")
                || (t.starts_with("Buffers") && !l.starts_with(' '))
                || t.starts_with("Execution Time")
                || t.starts_with("Subplans Removed")
                || !l.starts_with(' ')
        })
        .filter(|l| !l.trim_start().starts_with("Planning"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn yaml(db: &str, lib: &Lib) -> String {
    let mut out = format!(
        "poll_timeout: 30s\nsources:\n  db:\n    postgres: {{host: \"{}\", port: {}, dbname: {db}, username: postgres, sslmode: disable}}\nmetrics:\n",
        host(),
        port()
    );
    for (measure, _) in lib.measures {
        let _ = writeln!(
            out,
            "  - {{name: {measure}, source: db, measure: {measure}, postgres: {{library: {}, queue: '*', schema: {}}}}}",
            lib.yaml, lib.schema
        );
    }
    out
}

struct Timing {
    adapter: f64,
    raw: f64,
    psql_session: f64,
    psql_process: f64,
}

async fn time(db: &str, lib: &Lib, sql: &str, polls: u64, expect: &Expectation) -> Timing {
    let config = Config::from_yaml(&yaml(db, lib), Path::new("bench.yaml")).expect("config");
    let spec = config.spec_of::<Postgres>("db").expect("a postgres source");
    let mut source = PostgresSource::new(&spec).expect("source");
    let samples = source.poll().await.expect("poll");
    check(lib, &samples, expect);
    let mut adapter = Vec::new();
    for _ in 0..polls {
        let t = Instant::now();
        let s = source.poll().await.expect("poll");
        adapter.push(ms(t.elapsed()));
        assert_eq!(s.len(), samples.len());
    }

    let (client, connection) = tokio_postgres::connect(
        &format!("host={} port={} user=postgres dbname={db}", host(), port()),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(connection);
    client.simple_query(sql).await.expect("the statements run");
    let mut raw = Vec::new();
    for _ in 0..polls {
        let t = Instant::now();
        let m = client.simple_query(sql).await.expect("query");
        raw.push(ms(t.elapsed()));
        assert!(!m.is_empty());
    }

    // psql in one session: the statements as one request (`\;`), as the adapter sends them.
    let request = sql.replace(";\n", " \\;\n") + ";\n";
    let mut script = String::from("\\timing on\n");
    for _ in 0..=polls {
        script.push_str(&request);
    }
    let file = std::env::temp_dir().join(format!("qma-bench-postgres-{}.sql", std::process::id()));
    std::fs::write(&file, script).expect("write the psql script");
    let out = psql_run(db, &["-o", "/dev/null", "-f", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    let mut session: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .skip(1) // the first, as the others were measured after a first poll
        .collect();
    assert_eq!(session.len() as u64, polls, "{out}");

    // psql -c as a process per poll: start-up, connection and the one request.
    let mut process = Vec::new();
    for _ in 0..polls.min(50) {
        let t = Instant::now();
        let status = psql(db)
            .args(["-c", sql])
            .stdout(Stdio::null())
            .status()
            .expect("psql");
        process.push(ms(t.elapsed()));
        assert!(status.success());
    }
    Timing {
        adapter: median(&mut adapter),
        raw: median(&mut raw),
        psql_session: median(&mut session),
        psql_process: median(&mut process),
    }
}

type Expectation = BTreeMap<String, BTreeMap<Kind, u64>>;

/// The adapter's samples are what was inserted: every queue, every value.
fn check(lib: &Lib, samples: &[queue_metrics_adapter::model::Sample], expect: &Expectation) {
    let mut seen = 0;
    for s in samples {
        let queue = s.labels.get("queue").expect("a queue label").to_string();
        let value = s
            .value
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {} {queue}: {e:?}", lib.label, s.metric));
        let column = lib
            .measures
            .iter()
            .find(|(m, _)| **m == *s.metric)
            .map(|(_, c)| *c)
            .expect("a measure of ours");
        let kinds = expect.get(&queue).cloned().unwrap_or_default();
        if column == Column::OldestMs {
            // The oldest ready job was created 5 s to 10 min ago (longer only if the load was slow).
            let waiting = (lib.expect)(Column::Waiting, &kinds);
            assert!(
                (waiting == 0.0 && *value == 0.0) || (*value > 0.0 && *value < 3600.0),
                "{}: oldest age of {queue} is {value}",
                lib.label
            );
        } else if (lib.expect)(column, &kinds).is_nan() {
            assert!(
                value.is_finite() && *value >= 0.0,
                "{}: {} of {queue} is {value}",
                lib.label,
                s.metric
            );
        } else {
            assert_eq!(
                *value,
                (lib.expect)(column, &kinds),
                "{}: {} of {queue}",
                lib.label,
                s.metric
            );
        }
        seen += 1;
    }
    assert!(seen > 0, "{}: no series", lib.label);
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rows = env_number("QMA_BENCH_PG_ROWS", if full { 1_000_000 } else { 20_000 });
    let polls = env_number("QMA_BENCH_PG_POLLS", if full { 200 } else { 3 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let scratch = Scratch::create();
    let db = scratch.name.clone();
    let t = Instant::now();
    load(&db, rows);
    eprintln!(
        "[bench postgres] {} tables of {rows} rows in {:.0} s",
        libs().iter().filter(|l| l.load.is_some()).count(),
        t.elapsed().as_secs_f64()
    );
    let expect = expected(rows);
    let unfinished = rows / UNFINISHED_EVERY;
    let server = psql_run(&db, &["-Atc", "SHOW server_version"]);

    let mut violations = Vec::new();
    let mut table = String::new();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(
            &format!("host={} port={} user=postgres dbname={db}", host(), port()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(connection);
        // The job tables: every table or partition holding more than a queue's share of jobs.
        let big: Vec<(String, i64)> = client
            .query(
                "SELECT relname::text, relpages::int8 FROM pg_class WHERE relkind = 'r' AND reltuples >= $1",
                &[&((rows / QUEUES / 2) as f32)],
            )
            .await
            .expect("pg_class")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for lib in libs() {
            if let Some(setup) = lib.setup {
                client
                    .batch_execute(setup)
                    .await
                    .unwrap_or_else(|e| panic!("{setup}: {e}"));
            }
            let sql = statements(lib.library, lib.schema, &lib.columns(), WINDOW);
            println!("\n### {} ({} rows, {unfinished} unfinished)\n", lib.label, rows);
            let mut buffers = Vec::new();
            for statement in sql.split(";\n") {
                let c = explain(&client, statement, &big, unfinished).await;
                println!("```sql\n{}\n```\n```\n{}\n```", c.statement, key_lines(&c.plan));
                if std::env::var_os("QMA_BENCH_PG_FULL_PLANS").is_some() {
                    println!("full plan:\n```\n{}\n```", c.plan);
                }
                // A table of a few thousand rows may well be read whole: judged at full size only.
                if let Some(why) = c.reads_finished.as_ref().filter(|_| full) {
                    println!("**reads the finished rows: {why}**");
                    violations.push(format!("{}: {why}: {}", lib.label, c.statement));
                }
                buffers.push(c.buffers);
            }
            let t = time(&db, &lib, &sql, polls, &expect).await;
            let _ = writeln!(
                table,
                "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | **{:.2}×** | {:.2}× | {:.2}× |",
                lib.label,
                sql.split(";\n").count(),
                buffers.iter().map(u64::to_string).collect::<Vec<_>>().join(" + "),
                t.adapter,
                t.raw,
                t.psql_session,
                t.psql_process,
                t.adapter / t.psql_session,
                t.adapter / t.raw,
                t.adapter / t.psql_process,
            );
        }
    });
    println!(
        "\n### Poll of {rows} jobs per library ({unfinished} unfinished, {QUEUES} queues), medians of {polls} polls (psql -c: {}), PostgreSQL {}\n",
        polls.min(50),
        server.trim()
    );
    println!(
        "| library | statements | buffers (EXPLAIN, per statement) | adapter poll | tokio-postgres, same text | psql `\\timing`, one session | psql -c, a process each | adapter / psql session | adapter / tokio-postgres | adapter / psql -c |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    print!("{table}");
    drop(scratch);
    if !violations.is_empty() {
        println!("\nStatements that read the finished rows:");
        for v in &violations {
            println!("- {v}");
        }
        eprintln!(
            "[bench postgres] {} statement(s) read the finished rows",
            violations.len()
        );
        std::process::exit(1);
    }
}
