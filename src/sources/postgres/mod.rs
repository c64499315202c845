//! The PostgreSQL source: job libraries that keep their queue in tables (Procrastinate,
//! graphile-worker, pg-boss, pgmq, Solid Queue, GoodJob, Oban, River), read by presets; a
//! table of another kind described by conditions, or a user's query ([`table`]).
//!
//! A poll sends, for each library (and schema) its metrics name, one simple query: the
//! server's clock and the library's schema version, then a statement per group of rows one
//! index finds ([`libraries`]), all in one transaction; the rates of a window are a query of
//! their own (the jobs created and finished within it, counted from the rows' own times, so
//! they have a value at the first poll); a described table and a user's query are a query
//! each. All are pipelined on one connection, so the poll is one round trip; each
//! reply is read by [`rows`]. Sessions are read-only with bounded statements
//! and lock waits ([`connect`]); the statements take no lock but the `ACCESS SHARE` every
//! `SELECT` takes, call no function that locks, and write nothing. Where the library notifies
//! new jobs, a second connection `LISTEN`s and wakes the poll ([`wake`]).

pub mod config;
pub mod connect;
pub mod libraries;
pub mod rows;
pub mod table;
pub mod wake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio_postgres::SimpleQueryMessage;

use self::config::{
    Endpoint, PgLibrary, PostgresSourceConfig, PostgresTarget, QueueSelection, TableSpec,
    TargetKind,
};
use self::rows::{Column, Reading, ResultSet};
use self::wake::Listener;
use super::build::{Blocks, SourceSpec};
use super::source::{Source, SourceError};
use crate::model::{Labels, Sample, SeriesError};
use crate::primitives::ConfigError;
use crate::sources::age::age_seconds;
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;
use crate::sources::rates::drain_seconds;
use crate::wake::WakeSignal;

/// Label naming the job library of a series.
pub const LIBRARY_LABEL: &str = "library";
/// Label naming the queue of a series.
pub const QUEUE_LABEL: &str = "queue";

/// Most queues one statement may return: a table with more distinct queues than this is an
/// error, not a reply of unbounded size.
pub const MAX_QUEUES: usize = 10_000;

/// The PostgreSQL kind: `sources.<name>.postgres` and `metrics[].postgres`.
pub struct Postgres;

impl Blocks for Postgres {
    type Connection = PostgresSourceConfig;
    type Target = PostgresTarget;
}

/// Checks metric `m` of a PostgreSQL source (`at` names it); `target` is its `postgres:` block.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_metric(
    _conn: &PostgresSourceConfig,
    m: &MetricConfig,
    target: Option<&PostgresTarget>,
    at: &str,
) -> Result<(), ConfigError> {
    for reserved in [LIBRARY_LABEL, QUEUE_LABEL] {
        if m.labels.contains_key(reserved) {
            return Err(ConfigError::invalid(
                format!("{at}.labels"),
                format!(
                    "must not set {reserved:?}: every PostgreSQL series gets it from its library and queue"
                ),
            ));
        }
    }
    let Some(t) = target else { return Ok(()) };
    let at = format!("{at}.postgres");
    t.validate(&at, m.measure)?;
    if libraries::column_of(m.measure).is_none() {
        return Err(ConfigError::invalid(
            at,
            format!(
                "measure {} is not read from PostgreSQL tables: length, oldest_age_seconds, in_flight, due, delayed, failed, arrival_rate, completion_rate and drain_seconds are",
                m.measure
            ),
        ));
    }
    match t.kind() {
        Some(TargetKind::Library(library)) => {
            if let Some(why) = libraries::unknowable(library, m.measure) {
                return Err(ConfigError::invalid(
                    at,
                    format!("{} has no {}: {why}", library.as_str(), m.measure),
                ));
            }
        }
        // A described table's measures are checked with the table (`TableSpec::validate`).
        Some(TargetKind::Query(_)) if libraries::over_window(m.measure) => {
            return Err(ConfigError::invalid(
                at,
                format!(
                    "measure {} is counted only by the presets of libraries that keep finished jobs with their times (river, good-job, solid-queue), not from a query",
                    m.measure
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

struct MetricPlan {
    name: Arc<str>,
    labels: Labels,
    /// The `library` label: the library, `table` or `query`.
    library: &'static str,
    /// Index into the source's reads.
    read: usize,
    queues: QueueSelection,
    measure: Measure,
    /// The column served (a rate's: what it counts).
    column: Column,
    /// The rate window, in seconds, for a measure counted over one.
    window_s: f64,
}

impl MetricPlan {
    fn labels(&self, queue: Option<&str>) -> Arc<Labels> {
        let mut labels = self.labels.clone();
        labels.insert(LIBRARY_LABEL.into(), self.library.into());
        if let Some(q) = queue {
            labels.insert(QUEUE_LABEL.into(), q.into());
        }
        Arc::new(labels)
    }
}

/// What one query reads.
#[derive(Debug, Clone, PartialEq)]
enum ReadKind {
    /// A job library's tables.
    Library(PgLibrary),
    /// A described table.
    Table(TableSpec),
    /// A user's query, its `value` served as this column.
    Query(String, Column),
}

/// One library's tables (or a described table, or a user's query) in one schema, and the
/// query that reads them.
struct Read {
    kind: ReadKind,
    schema: String,
    /// The window of the rates this read counts (`None`: it counts none): a read per window,
    /// as the window is in the statements.
    window: Option<Duration>,
    columns: Vec<Column>,
    sql: String,
}

impl Read {
    /// What the reply's errors name.
    fn what(&self) -> String {
        match &self.kind {
            ReadKind::Library(l) => l.as_str().to_string(),
            ReadKind::Table(t) => format!("table {}.{}", self.schema, t.name),
            ReadKind::Query(..) => "the query".to_string(),
        }
    }

    /// Whether the tables are ones the statements know (the first statement's `version`),
    /// and where rates are counted, whether they keep finished jobs to count.
    fn check(&self, reading: &Reading) -> Result<(), String> {
        match &self.kind {
            ReadKind::Library(l) => {
                libraries::check_version(*l, reading.version.as_deref())?;
                match (self.window, reading.finished_kept) {
                    (Some(_), Some(true)) | (None, _) => Ok(()),
                    (Some(_), Some(false)) => Err(format!(
                        "no finished job is kept in its tables, so the jobs finished and created within the window cannot be counted: none has finished yet, or the library deletes finished jobs ({})",
                        libraries::keeping_finished(*l)
                    )),
                    (Some(_), None) => {
                        Err("the statements did not say whether finished jobs are kept".into())
                    }
                }
            }
            ReadKind::Table(t) => table::check_time_type(t, reading.version.as_deref()),
            ReadKind::Query(..) => Ok(()),
        }
    }
}

/// A PostgreSQL database and the job tables read from it.
pub struct PostgresSource {
    name: String,
    connection: PostgresSourceConfig,
    endpoint: Endpoint,
    poll_timeout: Duration,
    statement_timeout: Duration,
    client: Option<Arc<tokio_postgres::Client>>,
    metrics: Vec<MetricPlan>,
    reads: Vec<Read>,
    max_drain_seconds: f64,
    signal: Option<WakeSignal>,
    listener: Option<Listener>,
}

impl PostgresSource {
    /// Builds the source. Does not connect: the first poll does.
    ///
    /// # Errors
    /// [`SourceError::Config`] when the connection's settings cannot be used.
    pub fn new(spec: &SourceSpec<'_, Postgres>) -> Result<Self, SourceError> {
        let conn = spec.connection;
        let endpoint = conn
            .endpoint()
            .map_err(|message| SourceError::Config { message })?;
        let mut reads: Vec<Read> = Vec::new();
        let mut metrics = Vec::new();
        for &(m, target) in &spec.metrics {
            let Some(t) = target else { continue };
            let Some(column) = libraries::column_of(m.measure) else {
                continue;
            };
            let kind = match t.kind() {
                Some(TargetKind::Library(l)) => ReadKind::Library(l),
                Some(TargetKind::Table(spec)) => ReadKind::Table(spec.clone()),
                Some(TargetKind::Query(q)) => ReadKind::Query(q.to_string(), column),
                None => continue,
            };
            let window = libraries::over_window(m.measure).then(|| m.window());
            let read = match reads
                .iter()
                .position(|r| r.kind == kind && r.schema == t.schema() && r.window == window)
            {
                Some(i) => i,
                None => {
                    reads.push(Read {
                        kind,
                        schema: t.schema().to_string(),
                        window,
                        columns: Vec::new(),
                        sql: String::new(),
                    });
                    reads.len() - 1
                }
            };
            // `drain_seconds` is the waiting jobs over the completions: it reads both.
            let waiting = (m.measure == Measure::DrainSeconds).then_some(Column::Waiting);
            for c in std::iter::once(column).chain(waiting) {
                if !reads[read].columns.contains(&c) {
                    reads[read].columns.push(c);
                }
            }
            metrics.push(MetricPlan {
                name: Arc::from(m.name.as_str()),
                labels: Labels::from(&m.labels),
                library: t.library_label(),
                read,
                queues: t.queues(),
                measure: m.measure,
                column,
                window_s: m.window().as_secs_f64(),
            });
        }
        for r in &mut reads {
            // Every statement's reply is bounded: one row more than is taken, to tell.
            let bounded = |sql: String| -> String {
                let limited: Vec<String> = sql
                    .split(";\n")
                    .map(|st| format!("{st} LIMIT {}", MAX_QUEUES + 1))
                    .collect();
                limited.join(";\n")
            };
            r.sql = match &r.kind {
                ReadKind::Library(l) => bounded(libraries::statements(
                    *l,
                    &r.schema,
                    &r.columns,
                    r.window.unwrap_or_default(),
                )),
                ReadKind::Table(t) => bounded(table::table_statements(t, &r.schema, &r.columns)),
                ReadKind::Query(q, _) => table::query_statements(q, MAX_QUEUES),
            };
        }
        let signal = conn.wake.enabled.then(|| WakeSignal::new(conn.wake.pace()));
        let mut channels: Vec<String> = reads
            .iter()
            .filter_map(|r| match &r.kind {
                ReadKind::Library(l) => libraries::notify_channel(*l, &r.schema),
                ReadKind::Table(_) | ReadKind::Query(..) => None,
            })
            .collect();
        channels.sort();
        channels.dedup();
        let listener = match &signal {
            Some(s) if !channels.is_empty() => Some(Listener::new(spec.name, channels, s.clone())),
            _ => None,
        };
        Ok(PostgresSource {
            name: spec.name.to_string(),
            connection: conn.clone(),
            endpoint,
            poll_timeout: spec.poll_timeout,
            statement_timeout: conn.statement_timeout(spec.poll_timeout),
            client: None,
            metrics,
            reads,
            max_drain_seconds: conn.max_drain_seconds(),
            signal,
            listener,
        })
    }

    /// The session, opening one first if there is none (or the last one closed).
    async fn client(&mut self) -> Result<Arc<tokio_postgres::Client>, SourceError> {
        if let Some(c) = self.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        self.client = None;
        let (client, connection) = connect::open(
            &self.connection,
            &self.endpoint,
            self.statement_timeout,
            self.poll_timeout / 2,
        )
        .await?;
        let source = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(source = %source, error = %connect::describe(&e), "PostgreSQL session ended");
            }
        });
        let client = Arc::new(client);
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn poll_postgres(&mut self) -> Result<Vec<Sample>, SourceError> {
        if let Some(l) = &mut self.listener {
            l.ensure(&self.connection, &self.endpoint, self.statement_timeout);
        }
        let client = self.client().await?;
        let queries = self.reads.iter().map(|r| query(&client, r));
        let results = match tokio::time::timeout(self.poll_timeout, join_all(queries)).await {
            Ok(results) => results,
            Err(_) => {
                // The session may still hold the statements: a fresh one next poll.
                self.client = None;
                return Err(SourceError::Timeout {
                    after: self.poll_timeout,
                });
            }
        };
        if client.is_closed() {
            self.client = None;
            let message = results
                .iter()
                .find_map(|r| r.as_ref().err().cloned())
                .unwrap_or_else(|| "the session closed".into());
            return Err(SourceError::Io {
                target: self.endpoint.to_string(),
                message,
            });
        }
        let mut samples = Vec::new();
        for m in &self.metrics {
            let reading = results[m.read].as_ref();
            let reading = reading.map_err(Clone::clone).and_then(|r| {
                self.reads[m.read]
                    .check(r)
                    .map_err(|e| format!("{}: {e}", self.reads[m.read].what()))?;
                Ok(r)
            });
            let reading = match reading {
                Ok(r) => r,
                Err(e) => {
                    samples.push(Sample::new(
                        m.name.clone(),
                        m.labels(None),
                        Err(SeriesError::new(e)),
                    ));
                    continue;
                }
            };
            match &m.queues {
                QueueSelection::Named(q) => samples.push(Sample::new(
                    m.name.clone(),
                    m.labels(Some(q)),
                    self.served(m, reading, q),
                )),
                QueueSelection::All => {
                    for q in reading.queues.keys() {
                        samples.push(Sample::new(
                            m.name.clone(),
                            m.labels(Some(q)),
                            self.served(m, reading, q),
                        ));
                    }
                }
            }
        }
        Ok(samples)
    }

    /// What metric `m` serves for `queue`: a column's value, or a rate of the jobs counted
    /// within the window (per second), or the waiting jobs' drain time at that rate.
    fn served(&self, m: &MetricPlan, reading: &Reading, queue: &str) -> Result<f64, SeriesError> {
        match m.measure {
            Measure::ArrivalRate | Measure::CompletionRate => {
                Ok(value(m.column, reading, queue)? / m.window_s)
            }
            Measure::DrainSeconds => {
                let waiting = value(Column::Waiting, reading, queue)?;
                let leaving = value(Column::Completed, reading, queue)? / m.window_s;
                Ok(drain_seconds(waiting, leaving, self.max_drain_seconds))
            }
            _ => value(m.column, reading, queue),
        }
    }
}

/// Runs `read`'s query on `client`: its reading, or why not (the server's message, with what
/// to grant where it refused). A described table's time column type is asked in a query of its
/// own, sent at once with the other (pipelined: no round trip more), so that a column of
/// another type is named as such rather than as the failed `extract` it would cause.
async fn query(client: &tokio_postgres::Client, read: &Read) -> Result<Reading, String> {
    let what = read.what();
    let head = match (&read.kind, read.sql.split_once(";\n")) {
        (ReadKind::Table(t), Some((head, body))) if t.time_column.is_some() => Some((head, body)),
        _ => None,
    };
    let mut sets = match head {
        Some((head, body)) => {
            let (head, body) =
                futures_util::join!(client.simple_query(head), client.simple_query(body));
            let mut sets = result_sets(head.map_err(|e| describe_error(read, &e))?, &what)?;
            let reading = rows::read(&sets).map_err(|e| format!("{what}: {e}"))?;
            read.check(&reading).map_err(|e| format!("{what}: {e}"))?;
            sets.extend(result_sets(
                body.map_err(|e| describe_error(read, &e))?,
                &what,
            )?);
            sets
        }
        None => {
            let messages = client
                .simple_query(&read.sql)
                .await
                .map_err(|e| describe_error(read, &e))?;
            result_sets(messages, &what)?
        }
    };
    if let ReadKind::Query(_, column) = read.kind {
        match sets.get_mut(1) {
            Some(set) => table::query_result(set, column).map_err(|e| format!("{what}: {e}"))?,
            None => return Err(format!("{what}: returned no result")),
        }
    }
    rows::read(&sets).map_err(|e| format!("{what}: {e}"))
}

/// A failed query's error as served: the server's message, and what to do where that is known.
fn describe_error(read: &Read, e: &tokio_postgres::Error) -> String {
    let what = read.what();
    let text = connect::describe(e);
    let hint = match (e.as_db_error().map(|d| d.code().code()), &read.kind) {
        (Some("42P01" | "3F000"), ReadKind::Library(_)) => format!(
            ": is {what} installed in this database, with its tables in schema {:?}?",
            read.schema
        ),
        (Some("42703"), ReadKind::Library(_)) => format!(
            ": {what}'s tables lack a column this preset reads: a schema version it does not know"
        ),
        (Some("42501"), ReadKind::Library(l)) => format!(
            ": the adapter's role needs {}",
            libraries::grants(*l, &read.schema)
        ),
        (Some("42501"), _) => ": the adapter's role needs SELECT on what is read".into(),
        _ => String::new(),
    };
    format!("{what}: {text}{hint}")
}

/// The statements' results out of a simple query's messages, at most [`MAX_QUEUES`] rows each.
fn result_sets(messages: Vec<SimpleQueryMessage>, what: &str) -> Result<Vec<ResultSet>, String> {
    let mut sets: Vec<ResultSet> = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => sets.push(ResultSet {
                columns: columns.iter().map(|c| c.name().to_string()).collect(),
                rows: Vec::new(),
            }),
            SimpleQueryMessage::Row(row) => {
                let Some(set) = sets.last_mut() else {
                    return Err(format!("{what}: a row came before its columns"));
                };
                if set.rows.len() >= MAX_QUEUES {
                    return Err(format!(
                        "{what}: more than {MAX_QUEUES} queues in one statement's reply"
                    ));
                }
                set.rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            _ => {}
        }
    }
    Ok(sets)
}

/// The value of `column` for `queue` in `reading`: a queue with no unfinished row has none
/// waiting, in flight or scheduled.
fn value(column: Column, reading: &Reading, queue: &str) -> Result<f64, SeriesError> {
    let returned = reading.returned.contains(&column)
        || (column == Column::OldestMs && reading.returned.contains(&Column::AgeSeconds));
    if !returned && !reading.queues.is_empty() {
        return Err(SeriesError::new(format!(
            "the statements returned no {}",
            column.as_str()
        )));
    }
    let empty = BTreeMap::new();
    let values = reading.queues.get(queue).unwrap_or(&empty);
    let get = |c: Column| values.get(&c).copied().flatten();
    match column {
        Column::OldestMs if reading.returned.contains(&Column::AgeSeconds) => {
            match values.get(&Column::AgeSeconds) {
                Some(Some(age)) if *age >= 0.0 => Ok(*age),
                Some(Some(age)) => Err(SeriesError::new(format!(
                    "the query returned a negative age ({age} s)"
                ))),
                Some(None) => Err(SeriesError::new("the query returned a NULL age")),
                None => Ok(0.0),
            }
        }
        Column::OldestMs => {
            if let Some(n) = get(Column::Untimed)
                && n > 0.0
            {
                return Err(SeriesError::new(format!(
                    "{n} waiting jobs carry no enqueue time, so the oldest age cannot be told"
                )));
            }
            match get(Column::OldestMs) {
                Some(t) => {
                    age_seconds(t, reading.now_ms, "PostgreSQL's clock").map_err(SeriesError::new)
                }
                None if get(Column::Waiting).unwrap_or(0.0) > 0.0 => Err(SeriesError::new(
                    "jobs are waiting but the oldest one's time was not returned",
                )),
                None => Ok(0.0),
            }
        }
        c => match values.get(&c) {
            Some(Some(v)) => Ok(*v),
            Some(None) => Err(SeriesError::new(format!("{} is NULL", c.as_str()))),
            None => Ok(0.0),
        },
    }
}

impl Source for PostgresSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn wake(&self) -> Option<WakeSignal> {
        self.signal.clone()
    }

    async fn poll(&mut self) -> Result<Vec<Sample>, SourceError> {
        self.poll_postgres().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Values<'a> = &'a [(Column, Option<f64>)];

    fn reading(queues: &[(&str, Values<'_>)]) -> Reading {
        Reading {
            now_ms: 10_000.0,
            version: None,
            finished_kept: None,
            returned: vec![Column::Waiting, Column::OldestMs, Column::Untimed],
            queues: queues
                .iter()
                .map(|(q, vs)| (q.to_string(), vs.iter().copied().collect()))
                .collect(),
        }
    }

    #[test]
    fn an_absent_queue_is_empty_and_an_untimed_job_makes_the_age_an_error() {
        let r = reading(&[(
            "a",
            &[
                (Column::Waiting, Some(2.0)),
                (Column::OldestMs, Some(4_000.0)),
                (Column::Untimed, Some(0.0)),
            ],
        )]);
        assert_eq!(value(Column::Waiting, &r, "a"), Ok(2.0));
        assert_eq!(value(Column::OldestMs, &r, "a"), Ok(6.0));
        assert_eq!(value(Column::Waiting, &r, "b"), Ok(0.0));
        assert_eq!(value(Column::OldestMs, &r, "b"), Ok(0.0));
        let r = reading(&[(
            "a",
            &[
                (Column::Waiting, Some(2.0)),
                (Column::OldestMs, Some(4_000.0)),
                (Column::Untimed, Some(1.0)),
            ],
        )]);
        assert!(value(Column::OldestMs, &r, "a").is_err());
        let r = reading(&[(
            "a",
            &[(Column::Waiting, Some(2.0)), (Column::OldestMs, None)],
        )]);
        assert!(value(Column::OldestMs, &r, "a").is_err());
        let r = reading(&[(
            "a",
            &[
                (Column::Waiting, Some(1.0)),
                (Column::OldestMs, Some(90_000.0)),
            ],
        )]);
        assert!(value(Column::OldestMs, &r, "a").is_err(), "far future");
    }
}
