//! The PostgreSQL source: job libraries that keep their queue in tables (Procrastinate,
//! graphile-worker, pg-boss, pgmq, Solid Queue, GoodJob, Oban, River), read by presets.
//!
//! A poll sends, for each library (and schema) its metrics name, one simple query: the
//! server's clock and the library's schema version, then a statement per group of rows one
//! index finds ([`libraries`]), all in one transaction, all libraries' queries pipelined on one
//! connection, so the poll is one round trip. Sessions are read-only with bounded statements
//! and lock waits ([`connect`]); the statements take no lock but the `ACCESS SHARE` every
//! `SELECT` takes, call no function that locks, and write nothing. Where the library notifies
//! new jobs, a second connection `LISTEN`s and wakes the poll ([`wake`]).

pub mod config;
pub mod connect;
pub mod libraries;
pub mod rows;
pub mod wake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio_postgres::SimpleQueryMessage;

use self::config::{Endpoint, PgLibrary, PostgresSourceConfig, PostgresTarget, QueueSelection};
use self::rows::{Column, Reading, ResultSet};
use self::wake::Listener;
use super::build::{Blocks, SourceSpec};
use super::source::{Source, SourceError};
use crate::model::{Labels, Sample, SeriesError};
use crate::primitives::ConfigError;
use crate::sources::age::age_seconds;
use crate::sources::metric::MetricConfig;
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
                "measure {} is not read from PostgreSQL tables: length, oldest_age_seconds, in_flight, due, delayed and failed are",
                m.measure
            ),
        ));
    }
    if let Some(why) = libraries::unknowable(t.library, m.measure) {
        return Err(ConfigError::invalid(
            at,
            format!("{} has no {}: {why}", t.library.as_str(), m.measure),
        ));
    }
    Ok(())
}

struct MetricPlan {
    name: Arc<str>,
    labels: Labels,
    library: PgLibrary,
    /// Index into the source's reads.
    read: usize,
    queues: QueueSelection,
    column: Column,
}

impl MetricPlan {
    fn labels(&self, queue: Option<&str>) -> Arc<Labels> {
        let mut labels = self.labels.clone();
        labels.insert(LIBRARY_LABEL.into(), self.library.as_str().into());
        if let Some(q) = queue {
            labels.insert(QUEUE_LABEL.into(), q.into());
        }
        Arc::new(labels)
    }
}

/// One library's tables in one schema, and the query that reads them.
struct Read {
    library: PgLibrary,
    schema: String,
    columns: Vec<Column>,
    sql: String,
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
            let read = match reads
                .iter()
                .position(|r| r.library == t.library && r.schema == t.schema())
            {
                Some(i) => i,
                None => {
                    reads.push(Read {
                        library: t.library,
                        schema: t.schema().to_string(),
                        columns: Vec::new(),
                        sql: String::new(),
                    });
                    reads.len() - 1
                }
            };
            if !reads[read].columns.contains(&column) {
                reads[read].columns.push(column);
            }
            metrics.push(MetricPlan {
                name: Arc::from(m.name.as_str()),
                labels: Labels::from(&m.labels),
                library: t.library,
                read,
                queues: t.queues(),
                column,
            });
        }
        for r in &mut reads {
            r.sql = libraries::statements(r.library, &r.schema, &r.columns);
        }
        let signal = conn.wake.enabled.then(|| WakeSignal::new(conn.wake.pace()));
        let channels: Vec<String> = reads
            .iter()
            .filter_map(|r| libraries::notify_channel(r.library, &r.schema))
            .collect();
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
                libraries::check_version(m.library, r.version.as_deref())?;
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
                    value(m.column, reading, q),
                )),
                QueueSelection::All => {
                    for q in reading.queues.keys() {
                        samples.push(Sample::new(
                            m.name.clone(),
                            m.labels(Some(q)),
                            value(m.column, reading, q),
                        ));
                    }
                }
            }
        }
        Ok(samples)
    }
}

/// Runs `read`'s query on `client`: its reading, or why not (the server's message, with what
/// to grant where it refused).
async fn query(client: &tokio_postgres::Client, read: &Read) -> Result<Reading, String> {
    let library = read.library.as_str();
    let messages = client.simple_query(&read.sql).await.map_err(|e| {
        let text = connect::describe(&e);
        let hint = match e.as_db_error().map(|d| d.code().code()) {
            Some("42P01" | "3F000") => format!(
                ": is {library} installed in this database, with its tables in schema {:?}?",
                read.schema
            ),
            Some("42703") => format!(
                ": {library}'s tables lack a column this preset reads: a schema version it does not know"
            ),
            Some("42501") => format!(
                ": the adapter's role needs {}",
                libraries::grants(read.library, &read.schema)
            ),
            _ => String::new(),
        };
        format!("{library}: {text}{hint}")
    })?;
    let mut sets: Vec<ResultSet> = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => sets.push(ResultSet {
                columns: columns.iter().map(|c| c.name().to_string()).collect(),
                rows: Vec::new(),
            }),
            SimpleQueryMessage::Row(row) => {
                let Some(set) = sets.last_mut() else {
                    return Err(format!("{library}: a row came before its columns"));
                };
                if set.rows.len() > MAX_QUEUES {
                    return Err(format!(
                        "{library}: more than {MAX_QUEUES} queues in one statement's reply"
                    ));
                }
                set.rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(_) => {}
            _ => {}
        }
    }
    rows::read(&sets).map_err(|e| format!("{library}: {e}"))
}

/// The value of `column` for `queue` in `reading`: a queue with no unfinished row has none
/// waiting, in flight or scheduled.
fn value(column: Column, reading: &Reading, queue: &str) -> Result<f64, SeriesError> {
    if !reading.returned.contains(&column) && !reading.queues.is_empty() {
        return Err(SeriesError::new(format!(
            "the statements returned no {}",
            column.as_str()
        )));
    }
    let empty = BTreeMap::new();
    let values = reading.queues.get(queue).unwrap_or(&empty);
    let get = |c: Column| values.get(&c).copied().flatten();
    match column {
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
