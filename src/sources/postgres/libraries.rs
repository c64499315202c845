//! Job libraries' tables, as the statements that read them: for each library, what "ready"
//! means in its own fetch query, which rows a worker holds, which wait for their time, which
//! failed, and the time each job became ready. Checked against the libraries' code
//! (`../shared/reference/job-libraries.md` §4) and, where they run here, their real clients and
//! workers (`tests/postgres_libraries.rs`).
//!
//! Every statement reads only rows that are not finished, by the predicate of an index the
//! library keeps for its own workers' fetch, except `failed`, which reads the failed rows and
//! is sent only when a metric asks for it, and the rates' statement, which reads the rows
//! finished within the window by the index the library keeps on its finish time. Times the
//! libraries store as `timestamp without time zone` (Oban, GoodJob, Solid Queue: UTC by the
//! libraries' rule) are read as UTC, and compared with `now() AT TIME ZONE 'UTC'` so that
//! their indexes still serve.

use std::time::Duration;

use super::config::PgLibrary;
use super::rows::Column;
use crate::sources::measure::Measure;

/// The column a measure is served from.
pub fn column_of(measure: Measure) -> Option<Column> {
    match measure {
        Measure::Length => Some(Column::Waiting),
        Measure::OldestAgeSeconds => Some(Column::OldestMs),
        Measure::InFlight => Some(Column::InFlight),
        Measure::Due => Some(Column::Due),
        Measure::Delayed => Some(Column::Delayed),
        Measure::Failed => Some(Column::Failed),
        Measure::ArrivalRate => Some(Column::Arrived),
        Measure::CompletionRate | Measure::DrainSeconds => Some(Column::Completed),
        _ => None,
    }
}

/// Whether `measure` is counted over the metric's window from the rows' own times.
pub fn over_window(measure: Measure) -> bool {
    matches!(
        measure,
        Measure::ArrivalRate | Measure::CompletionRate | Measure::DrainSeconds
    )
}

/// Why `library` cannot give `measure`, where it cannot: it keeps no such state.
pub fn unknowable(library: PgLibrary, measure: Measure) -> Option<&'static str> {
    match (library, measure) {
        (
            PgLibrary::Procrastinate | PgLibrary::GraphileWorker | PgLibrary::PgBoss,
            Measure::Due,
        ) => Some(
            "the library runs a scheduled job as soon as its time comes (its fetch query compares the run-at time with now()): there is no separate step, and due jobs are counted in length",
        ),
        (PgLibrary::GoodJob | PgLibrary::Pgmq, Measure::Due) => Some(
            "the library's workers take a job as soon as its time comes: due jobs are counted in length",
        ),
        (PgLibrary::Pgmq, Measure::Failed) => Some(
            "pgmq keeps no failed messages: a consumer deletes or archives (pgmq.archive) what it is done with",
        ),
        (library, m) if over_window(m) => no_rates(library),
        _ => None,
    }
}

/// Why `library`'s arrivals and completions cannot be counted from its tables, where they
/// cannot: a rate is counted from the rows created and finished within the window, which needs
/// finished rows kept with their finish time, and an index that finds them without reading
/// every job kept for history.
fn no_rates(library: PgLibrary) -> Option<&'static str> {
    match library {
        PgLibrary::River | PgLibrary::GoodJob | PgLibrary::SolidQueue => None,
        PgLibrary::GraphileWorker => Some(
            "graphile-worker deletes a job when it succeeds, so finished jobs cannot be counted",
        ),
        PgLibrary::Pgmq => Some(
            "a consumer deletes or archives a message without a time kept in the queue, and the msg_id sequence skips values (it is not rolled back), so neither finished nor arrived messages can be counted",
        ),
        PgLibrary::Procrastinate => Some(
            "Procrastinate keeps finish times only in procrastinate_events, which has no index on them (every event kept would be read), and deletes finished jobs when asked to",
        ),
        PgLibrary::PgBoss => Some(
            "pg-boss 10 keeps no index on completed_on (every job kept for history would be read) and moves finished jobs to its archive",
        ),
        PgLibrary::Oban => Some(
            "Oban keeps no index on completed_at, and its Pruner deletes finished jobs after 60 s by default, so jobs finished in a window may be gone",
        ),
    }
}

/// The statements that read `library`'s tables in `schema` for the columns in `wanted` (each
/// only where a wanted column is one it returns), joined into one simple query: first the
/// server's clock and the schema version, then a statement per group of rows. Arrivals and
/// completions are counted over `window` back from `now()`.
pub fn statements(library: PgLibrary, schema: &str, wanted: &[Column], window: Duration) -> String {
    let s = schema;
    let rates = wanted.contains(&Column::Arrived) || wanted.contains(&Column::Completed);
    let kept = match finished_kept(library, s) {
        Some(kept) if rates => format!(", ({kept}) AS finished_kept"),
        _ => String::new(),
    };
    let mut out = vec![format!(
        "SELECT (extract(epoch FROM now()) * 1000)::float8 AS now_ms, {} AS version{kept}",
        version_expression(library, s)
    )];
    let since = format!("(now() - interval '{} milliseconds')", window.as_millis());
    let since_utc = format!(
        "((now() AT TIME ZONE 'UTC') - interval '{} milliseconds')",
        window.as_millis()
    );
    // A statement is sent only when a metric asks for a column it returns: pg-boss 10 has no
    // index that finds its active jobs, and the failed rows of any library are many.
    let mut add = |returns: &[Column], sql: String| {
        if returns.iter().any(|c| wanted.contains(c)) {
            out.push(sql);
        }
    };
    // The epoch-ms of a timestamptz expression, and of a UTC `timestamp without time zone`.
    let ms = |e: &str| format!("(extract(epoch FROM {e}) * 1000)::float8");
    let utc_ms = |e: &str| format!("(extract(epoch FROM ({e}) AT TIME ZONE 'UTC') * 1000)::float8");
    const NOW_UTC: &str = "(now() AT TIME ZONE 'UTC')";
    match library {
        // procrastinate 3.x `schema.sql`: a job is taken by `procrastinate_fetch_job` when
        // `status = 'todo'` and `scheduled_at` is NULL or past (partial index on
        // `status = 'todo'`); the row has no creation time: its latest `deferred`,
        // `deferred_for_retry` or `retried` event has when it was (made) ready.
        PgLibrary::Procrastinate => {
            let ready = "(j.scheduled_at IS NULL OR j.scheduled_at <= now())";
            add(
                &[Column::Waiting, Column::OldestMs, Column::Delayed],
                format!(
                    "SELECT j.queue_name AS queue, \
                 count(*) FILTER (WHERE {ready}) AS waiting, \
                 min({t}) FILTER (WHERE {ready}) AS oldest_ms, \
                 count(*) FILTER (WHERE {ready} AND j.deferred_at IS NULL AND j.scheduled_at IS NULL) AS untimed, \
                 count(*) FILTER (WHERE NOT {ready}) AS delayed \
                 FROM (SELECT j.queue_name, j.scheduled_at, \
                   (SELECT max(e.at) FROM {s}.procrastinate_events e WHERE e.job_id = j.id \
                     AND e.type IN ('deferred', 'deferred_for_retry', 'retried')) AS deferred_at \
                   FROM {s}.procrastinate_jobs j WHERE j.status = 'todo') j \
                 GROUP BY j.queue_name",
                    t = ms("greatest(j.deferred_at, j.scheduled_at)"),
                ),
            );
            add(
                &[Column::InFlight],
                count_where(
                    Column::InFlight,
                    "queue_name",
                    &format!("{s}.procrastinate_jobs"),
                    "status = 'doing'",
                ),
            );
            add(
                &[Column::Failed],
                count_where(
                    Column::Failed,
                    "queue_name",
                    &format!("{s}.procrastinate_jobs"),
                    "status = 'failed'",
                ),
            );
        }
        // graphile-worker 0.17 (`getJobs.ts`, the `jobs` view): a job is available when not
        // locked (or its lock is older than 4 hours, as its fetch takes it again) and has
        // attempts left, and is ready when `run_at` is past. Success deletes the row; a job
        // out of attempts stays, failed. Read through the view: the `_private_` tables have
        // row security, and a role without it would read no rows at all.
        PgLibrary::GraphileWorker => {
            let free = "(locked_at IS NULL OR locked_at < now() - interval '4 hours')";
            add(
                &[
                    Column::Waiting,
                    Column::OldestMs,
                    Column::Delayed,
                    Column::InFlight,
                ],
                format!(
                    "SELECT coalesce(queue_name, '') AS queue, \
                 count(*) FILTER (WHERE {free} AND run_at <= now()) AS waiting, \
                 min({t}) FILTER (WHERE {free} AND run_at <= now()) AS oldest_ms, \
                 count(*) FILTER (WHERE {free} AND run_at > now()) AS delayed, \
                 count(*) FILTER (WHERE NOT {free}) AS in_flight \
                 FROM {s}.jobs WHERE attempts < max_attempts GROUP BY 1",
                    t = ms("greatest(created_at, run_at)"),
                ),
            );
            add(
                &[Column::Failed],
                count_where(
                    Column::Failed,
                    "coalesce(queue_name, '')",
                    &format!("{s}.jobs"),
                    "attempts >= max_attempts",
                ),
            );
        }
        // pg-boss 10 (`plans.js` fetchNextJob): `state < 'active'` and `start_after < now()`
        // (index `job_i5 (name, start_after) WHERE state < 'active'`); a queue is a job name.
        PgLibrary::PgBoss => {
            add(
                &[Column::Waiting, Column::OldestMs, Column::Delayed],
                format!(
                    "SELECT name AS queue, \
                 count(*) FILTER (WHERE start_after < now()) AS waiting, \
                 min({t}) FILTER (WHERE start_after < now()) AS oldest_ms, \
                 count(*) FILTER (WHERE start_after >= now()) AS delayed \
                 FROM {s}.job WHERE state < 'active' GROUP BY name",
                    t = ms("greatest(created_on, start_after)"),
                ),
            );
            add(
                &[Column::InFlight],
                count_where(
                    Column::InFlight,
                    "name",
                    &format!("{s}.job"),
                    "state = 'active'",
                ),
            );
            add(
                &[Column::Failed],
                count_where(
                    Column::Failed,
                    "name",
                    &format!("{s}.job"),
                    "state = 'failed'",
                ),
            );
        }
        // pgmq 1.5 (`pgmq.read`): a message is visible when `vt <= clock_timestamp()`; a read
        // moves `vt` ahead and counts `read_ct`; a message sent with a delay starts with `vt`
        // ahead and `read_ct` 0. A queue is a table `q_<name>` (lowercased, as `pgmq.create`
        // names it; `meta` keeps the name as given) listed in `meta`: each is read by a
        // statement built from that list inside this one (`query_to_xml`).
        PgLibrary::Pgmq => {
            let inner = format!(
                "SELECT count(*) FILTER (WHERE vt <= now()) AS w, \
                 min({t}) FILTER (WHERE vt <= now()) AS o, \
                 count(*) FILTER (WHERE vt > now() AND read_ct > 0) AS f, \
                 count(*) FILTER (WHERE vt > now() AND read_ct = 0) AS d FROM {s}.%I",
                t = ms("greatest(enqueued_at, vt)"),
            );
            let field =
                |name: &str, ty: &str| format!("(xpath('/row/{name}/text()', x))[1]::text::{ty}");
            add(
                &[
                    Column::Waiting,
                    Column::OldestMs,
                    Column::InFlight,
                    Column::Delayed,
                ],
                format!(
                    "SELECT m.queue_name AS queue, {w} AS waiting, {o} AS oldest_ms, {f} AS in_flight, {d} AS delayed \
                 FROM {s}.meta m, LATERAL query_to_xml(format('{inner}', lower('q_' || m.queue_name)), false, true, '') AS x",
                    inner = inner.replace('\'', "''"),
                    w = field("w", "int8"),
                    o = field("o", "float8"),
                    f = field("f", "int8"),
                    d = field("d", "int8"),
                ),
            );
        }
        // Solid Queue 1.x (`queue_schema.rb`): a job is ready while it has a row in
        // `ready_executions` (made when it became ready, so its `created_at` is that time),
        // claimed while in `claimed_executions`, scheduled while in `scheduled_executions`
        // (the dispatcher moves due ones), failed while in `failed_executions`. A paused
        // queue's jobs are not taken, so not waiting.
        PgLibrary::SolidQueue => {
            add(
                &[Column::Waiting, Column::OldestMs],
                format!(
                    "SELECT r.queue_name AS queue, count(*) AS waiting, min({t}) AS oldest_ms \
                 FROM {s}.solid_queue_ready_executions r \
                 WHERE NOT EXISTS (SELECT 1 FROM {s}.solid_queue_pauses p WHERE p.queue_name = r.queue_name) \
                 GROUP BY r.queue_name",
                    t = utc_ms("r.created_at"),
                ),
            );
            add(
                &[Column::InFlight],
                format!(
                    "SELECT j.queue_name AS queue, count(*) AS in_flight \
                 FROM {s}.solid_queue_claimed_executions c JOIN {s}.solid_queue_jobs j ON j.id = c.job_id \
                 GROUP BY j.queue_name"
                ),
            );
            add(
                &[Column::Due, Column::Delayed],
                format!(
                    "SELECT queue_name AS queue, \
                 count(*) FILTER (WHERE scheduled_at <= {NOW_UTC}) AS due, \
                 count(*) FILTER (WHERE scheduled_at > {NOW_UTC}) AS delayed \
                 FROM {s}.solid_queue_scheduled_executions GROUP BY queue_name"
                ),
            );
            add(
                &[Column::Failed],
                format!(
                    "SELECT j.queue_name AS queue, count(*) AS failed \
                 FROM {s}.solid_queue_failed_executions f JOIN {s}.solid_queue_jobs j ON j.id = f.job_id \
                 GROUP BY j.queue_name"
                ),
            );
            // Finished: `finished_at` (index `index_solid_queue_jobs_on_finished_at`), set
            // when a job succeeds (an Active Job retry is a new job row), and a failed
            // execution made within the window (the job stays unfinished, in
            // `failed_executions`). Arrived: the jobs created in the window, finished within
            // it or not finished (the same index, `finished_at IS NULL`): no index on
            // `created_at`.
            add(
                &[Column::Arrived, Column::Completed],
                format!(
                    "SELECT queue_name AS queue, \
                 count(*) FILTER (WHERE created_at > {since_utc}) AS arrived, \
                 count(*) FILTER (WHERE finished_at > {since_utc} OR failed) AS completed \
                 FROM (SELECT queue_name, created_at, finished_at, false AS failed FROM {s}.solid_queue_jobs \
                   WHERE finished_at > {since_utc} \
                   UNION ALL SELECT queue_name, created_at, NULL, false FROM {s}.solid_queue_jobs \
                   WHERE finished_at IS NULL AND created_at > {since_utc} \
                   UNION ALL SELECT j.queue_name, NULL, NULL, true FROM {s}.solid_queue_failed_executions f \
                   JOIN {s}.solid_queue_jobs j ON j.id = f.job_id WHERE f.created_at > {since_utc}) j \
                 GROUP BY queue_name"
                ),
            );
        }
        // GoodJob 4 (`job.rb` scopes `queued`, `running`): unfinished jobs (partial index on
        // `finished_at IS NULL`), queued when not performed and `scheduled_at` past (set to
        // the enqueue time when not scheduled), running when performed and not finished.
        PgLibrary::GoodJob => {
            let at = "coalesce(scheduled_at, created_at)";
            add(
                &[
                    Column::Waiting,
                    Column::OldestMs,
                    Column::Delayed,
                    Column::InFlight,
                ],
                format!(
                    "SELECT queue_name AS queue, \
                 count(*) FILTER (WHERE performed_at IS NULL AND {at} <= {NOW_UTC}) AS waiting, \
                 min({t}) FILTER (WHERE performed_at IS NULL AND {at} <= {NOW_UTC}) AS oldest_ms, \
                 count(*) FILTER (WHERE performed_at IS NULL AND {at} > {NOW_UTC}) AS delayed, \
                 count(*) FILTER (WHERE performed_at IS NOT NULL) AS in_flight \
                 FROM {s}.good_jobs WHERE finished_at IS NULL GROUP BY queue_name",
                    t = utc_ms(at),
                ),
            );
            add(
                &[Column::Failed],
                count_where(
                    Column::Failed,
                    "queue_name",
                    &format!("{s}.good_jobs"),
                    "finished_at IS NOT NULL AND error IS NOT NULL",
                ),
            );
            // Created and finished (succeeded, or discarded with an error) within the window:
            // `index_good_jobs_on_created_at`, `index_good_jobs_jobs_on_finished_at_only`. A
            // retry runs the same row again, so neither counts twice.
            add(
                &[Column::Arrived],
                count_where(
                    Column::Arrived,
                    "queue_name",
                    &format!("{s}.good_jobs"),
                    &format!("created_at > {since_utc}"),
                ),
            );
            add(
                &[Column::Completed],
                count_where(
                    Column::Completed,
                    "queue_name",
                    &format!("{s}.good_jobs"),
                    &format!("finished_at > {since_utc}"),
                ),
            );
        }
        // Oban 2.x (`engines/basic.ex` fetch: `state = 'available'`; the Stager makes
        // `scheduled` and `retryable` jobs whose time has come available).
        PgLibrary::Oban => {
            add(
                &[
                    Column::Waiting,
                    Column::OldestMs,
                    Column::InFlight,
                    Column::Due,
                    Column::Delayed,
                ],
                format!(
                    "SELECT queue, \
                 count(*) FILTER (WHERE state = 'available') AS waiting, \
                 min({t}) FILTER (WHERE state = 'available') AS oldest_ms, \
                 count(*) FILTER (WHERE state = 'executing') AS in_flight, \
                 count(*) FILTER (WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= {NOW_UTC}) AS due, \
                 count(*) FILTER (WHERE state IN ('scheduled', 'retryable') AND scheduled_at > {NOW_UTC}) AS delayed \
                 FROM {s}.oban_jobs WHERE state IN ('available', 'executing', 'scheduled', 'retryable') \
                 GROUP BY queue",
                    t = utc_ms("greatest(inserted_at, scheduled_at)"),
                ),
            );
            add(
                &[Column::Failed],
                count_where(
                    Column::Failed,
                    "queue",
                    &format!("{s}.oban_jobs"),
                    "state = 'discarded'",
                ),
            );
        }
        // River (`river_job.sql` JobGetAvailable: `state = 'available' AND scheduled_at <=
        // now()`; the scheduler makes `scheduled` and `retryable` jobs whose time has come
        // available).
        PgLibrary::River => {
            add(
                &[
                    Column::Waiting,
                    Column::OldestMs,
                    Column::InFlight,
                    Column::Due,
                    Column::Delayed,
                ],
                format!(
                    "SELECT queue, \
                 count(*) FILTER (WHERE state = 'available' AND scheduled_at <= now()) AS waiting, \
                 min({t}) FILTER (WHERE state = 'available' AND scheduled_at <= now()) AS oldest_ms, \
                 count(*) FILTER (WHERE state = 'running') AS in_flight, \
                 count(*) FILTER (WHERE (state IN ('scheduled', 'retryable') AND scheduled_at <= now())) AS due, \
                 count(*) FILTER (WHERE (state IN ('scheduled', 'retryable') AND scheduled_at > now()) \
                   OR (state = 'available' AND scheduled_at > now())) AS delayed \
                 FROM {s}.river_job WHERE state IN ('available', 'running', 'scheduled', 'retryable') \
                 GROUP BY queue",
                    t = ms("scheduled_at"),
                ),
            );
            add(
                &[Column::Failed],
                count_where(
                    Column::Failed,
                    "queue",
                    &format!("{s}.river_job"),
                    "state = 'discarded'",
                ),
            );
            // Finished: `finalized_at` set when a job is completed, discarded or cancelled
            // (index `(state, finalized_at) WHERE finalized_at IS NOT NULL`). Arrived: the
            // jobs created in the window, which are either finished within it or not finished
            // (every other state, through the fetch index on `state`): River keeps no index
            // on `created_at`.
            add(
                &[Column::Arrived, Column::Completed],
                format!(
                    "SELECT queue, \
                 count(*) FILTER (WHERE created_at > {since}) AS arrived, \
                 count(*) FILTER (WHERE finalized_at > {since}) AS completed \
                 FROM (SELECT queue, created_at, finalized_at FROM {s}.river_job \
                   WHERE state IN ('completed', 'discarded', 'cancelled') AND finalized_at > {since} \
                   UNION ALL SELECT queue, created_at, NULL FROM {s}.river_job \
                   WHERE state IN ('available', 'pending', 'running', 'scheduled', 'retryable') \
                   AND created_at > {since}) j \
                 GROUP BY queue"
                ),
            );
        }
    }
    out.join(";\n")
}

/// The library's setting that keeps finished jobs, for the error saying none is kept.
pub fn keeping_finished(library: PgLibrary) -> &'static str {
    match library {
        PgLibrary::River => {
            "River keeps them for CompletedJobRetentionPeriod, CancelledJobRetentionPeriod and DiscardedJobRetentionPeriod"
        }
        PgLibrary::GoodJob => "GoodJob keeps them with preserve_job_records: true, its default",
        PgLibrary::SolidQueue => {
            "Solid Queue keeps them with preserve_finished_jobs: true, its default"
        }
        _ => "this library's rates are not read",
    }
}

/// Whether any finished job is kept at all, as SQL (`None`: `library` has no rates). Jobs
/// finished in a window are counted from the rows kept: a library told to delete finished
/// jobs (GoodJob's `preserve_job_records: false`, Solid Queue's `preserve_finished_jobs:
/// false`) keeps none, and its rates are errors, never `0`. Asked as the latest finish time
/// (one step down the finish-time index: an `EXISTS` would be planned as a sequential scan,
/// which stops at once in a table of finished jobs but reads every row where none is kept).
fn finished_kept(library: PgLibrary, s: &str) -> Option<String> {
    let latest = |table: &str, column: &str, predicate: &str| {
        format!("(SELECT max({column}) FROM {s}.{table}{predicate}) IS NOT NULL")
    };
    match library {
        PgLibrary::River => Some(
            ["completed", "discarded", "cancelled"]
                .map(|state| {
                    latest(
                        "river_job",
                        "finalized_at",
                        &format!(" WHERE state = '{state}'"),
                    )
                })
                .join(" OR "),
        ),
        PgLibrary::GoodJob => Some(latest("good_jobs", "finished_at", "")),
        PgLibrary::SolidQueue => Some(latest("solid_queue_jobs", "finished_at", "")),
        _ => None,
    }
}

/// A statement counting, per queue (`queue`, an expression), the rows of `table` where
/// `predicate` holds, as `column`.
fn count_where(column: Column, queue: &str, table: &str, predicate: &str) -> String {
    format!(
        "SELECT {queue} AS queue, count(*) AS {} FROM {table} WHERE {predicate} GROUP BY 1",
        column.as_str()
    )
}

/// The schema version `library`'s tables record, as SQL text (NULL where they record none).
fn version_expression(library: PgLibrary, s: &str) -> String {
    match library {
        PgLibrary::GraphileWorker => format!("(SELECT max(id)::text FROM {s}.migrations)"),
        PgLibrary::PgBoss => format!("(SELECT max(version)::text FROM {s}.version)"),
        PgLibrary::Oban => format!("obj_description('{s}.oban_jobs'::regclass, 'pg_class')"),
        PgLibrary::River => {
            format!("(SELECT max(version)::text FROM {s}.river_migration WHERE line = 'main')")
        }
        PgLibrary::Pgmq => {
            "(SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgmq')".into()
        }
        PgLibrary::Procrastinate | PgLibrary::SolidQueue | PgLibrary::GoodJob => {
            "NULL::text".into()
        }
    }
}

/// Whether the statements know `library`'s schema at `version` (what its tables record).
///
/// # Errors
/// The message naming the version and the ones known.
pub fn check_version(library: PgLibrary, version: Option<&str>) -> Result<(), String> {
    let number = version.and_then(|v| v.trim().parse::<u32>().ok());
    let known = match library {
        // graphile-worker 0.17.x ends at migration 19 (the one read here, with its `jobs` view).
        PgLibrary::GraphileWorker => (19..=19, "19 (graphile-worker 0.17)"),
        // pg-boss 10.x records 21 to 24 (10.4.2: 24): `state`, `start_after`, `created_on`,
        // no `blocked`; 11 (25, 26) moved queues into shared partitions, 12.19 (31) added
        // `blocked` and changed the ready test.
        PgLibrary::PgBoss => (21..=24, "21 to 24 (pg-boss 10.x)"),
        // Oban's migrations V8 (the fetch index) to V14 (2.23, `suspended`, never available).
        PgLibrary::Oban => (8..=14, "8 to 14 (Oban 2.x)"),
        // River's main line 5 (0.10, which added the `line` column) to 7 (0.40 to 0.43):
        // `river_job` with `state`, `queue`, `scheduled_at`. An older table has no `line`.
        PgLibrary::River => (5..=7, "5 to 7 (River 0.10 to 0.43)"),
        PgLibrary::Pgmq => {
            // The extension's version where installed; a layout installed from its SQL
            // without the extension records none, and the table columns are the check.
            return match version {
                None => Ok(()),
                Some(v) if v.starts_with("1.") => Ok(()),
                Some(v) => Err(format!("pgmq {v} is not a version this preset knows (1.x)")),
            };
        }
        PgLibrary::Procrastinate | PgLibrary::SolidQueue | PgLibrary::GoodJob => return Ok(()),
    };
    match (version, number) {
        (_, Some(n)) if known.0.contains(&n) => Ok(()),
        (None, _) => Err(format!(
            "{}'s tables record no schema version; known: {}",
            library.as_str(),
            known.1
        )),
        (Some(v), _) => Err(format!(
            "{}'s schema version {v:?} is not one this preset knows ({}): its tables may have other columns or states",
            library.as_str(),
            known.1
        )),
    }
}

/// The channel the library notifies a new job on, where it sends one from the database or
/// its client by default (`None`: it sends none, and its metrics are only polled).
pub fn notify_channel(library: PgLibrary, schema: &str) -> Option<String> {
    match library {
        PgLibrary::Procrastinate => Some("procrastinate_any_queue_v1".into()),
        PgLibrary::GraphileWorker => Some("jobs:insert".into()),
        PgLibrary::Oban => Some(format!("{schema}.oban_insert")),
        PgLibrary::River => Some(format!("{schema}.river_insert")),
        PgLibrary::GoodJob => Some("good_job".into()),
        PgLibrary::PgBoss | PgLibrary::Pgmq | PgLibrary::SolidQueue => None,
    }
}

/// The grants a read-only role needs for `library`'s preset in `schema`, for the README and
/// for an error that says what to grant.
pub fn grants(library: PgLibrary, schema: &str) -> String {
    let s = schema;
    match library {
        PgLibrary::Procrastinate => format!(
            "GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT ON {s}.procrastinate_jobs, {s}.procrastinate_events TO <role>"
        ),
        PgLibrary::GraphileWorker => format!(
            "GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT ON {s}.jobs, {s}.migrations TO <role>"
        ),
        PgLibrary::PgBoss => format!(
            "GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT ON {s}.job, {s}.version TO <role>"
        ),
        PgLibrary::Pgmq => format!(
            "GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO <role>; ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO <role>"
        ),
        PgLibrary::SolidQueue => format!(
            "GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT ON {s}.solid_queue_ready_executions, {s}.solid_queue_pauses, {s}.solid_queue_claimed_executions, {s}.solid_queue_scheduled_executions, {s}.solid_queue_failed_executions, {s}.solid_queue_jobs TO <role>"
        ),
        PgLibrary::GoodJob => {
            format!("GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT ON {s}.good_jobs TO <role>")
        }
        PgLibrary::Oban => {
            format!("GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT ON {s}.oban_jobs TO <role>")
        }
        PgLibrary::River => format!(
            "GRANT USAGE ON SCHEMA {s} TO <role>; GRANT SELECT ON {s}.river_job, {s}.river_migration TO <role>"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_rows_are_read_only_when_a_metric_asks_for_them() {
        for lib in PgLibrary::ALL {
            let minute = Duration::from_secs(60);
            let live = statements(lib, lib.default_schema(), &[Column::Waiting], minute);
            let all = statements(
                lib,
                lib.default_schema(),
                &[Column::Waiting, Column::Failed],
                minute,
            );
            assert!(!live.contains("finished_kept"), "{lib:?}: {live}");
            assert!(
                live.starts_with("SELECT (extract(epoch FROM now())"),
                "{live}"
            );
            if unknowable(lib, Measure::Failed).is_none() {
                assert!(!live.contains("AS failed"), "{lib:?}: {live}");
                assert!(all.contains("AS failed"), "{lib:?}: {all}");
            }
        }
    }

    #[test]
    fn rates_are_counted_only_where_finished_jobs_are_kept_with_their_time() {
        for lib in PgLibrary::ALL {
            let counted = finished_kept(lib, "s").is_some();
            for m in [
                Measure::ArrivalRate,
                Measure::CompletionRate,
                Measure::DrainSeconds,
            ] {
                assert_eq!(unknowable(lib, m).is_none(), counted, "{lib:?} {m}");
            }
            let window = Duration::from_secs(90);
            let sql = statements(lib, "s", &[Column::Completed], window);
            if counted {
                assert!(sql.contains("AS finished_kept"), "{lib:?}: {sql}");
                assert!(sql.contains("AS completed"), "{lib:?}: {sql}");
                assert!(sql.contains("interval '90000 milliseconds'"), "{sql}");
            }
        }
    }

    #[test]
    fn a_version_the_preset_does_not_know_is_an_error_naming_it() {
        assert!(check_version(PgLibrary::PgBoss, Some("24")).is_ok());
        let err = check_version(PgLibrary::PgBoss, Some("26")).expect_err("pg-boss 11");
        assert!(err.contains("\"26\"") && err.contains("10.x"), "{err}");
        assert!(check_version(PgLibrary::River, None).is_err());
        assert!(check_version(PgLibrary::GoodJob, None).is_ok());
        assert!(check_version(PgLibrary::Pgmq, Some("2.0.0")).is_err());
    }
}
