//! The rows a preset's statements return, read into counts per queue. Pure, and fuzzed
//! (`fuzz/fuzz_targets/postgres_rows.rs`): the server's text is checked, never trusted.
//!
//! A preset sends several statements in one simple query (one round trip, one transaction, so
//! one `now()`). The first returns one row: `now_ms` (the server's clock, epoch ms) and
//! `version` (the library's schema version as its tables record it, or NULL where they record
//! none), and where rates are read, `finished_kept` (whether any finished job is kept at all,
//! without which jobs finished in a window cannot be counted). Each of the others returns a
//! row per queue: `queue` and some of the columns below, so that each statement can read the
//! rows one index finds. A queue's column comes from one
//! statement only; a column no statement returns is a measure the library does not keep.

use std::collections::BTreeMap;

/// One statement's result: its column names and its rows (`None`: SQL NULL).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSet {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// The rows, each as long as `columns`.
    pub rows: Vec<Vec<Option<String>>>,
}

/// A column the statements may return for a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// Jobs ready to run now.
    Waiting,
    /// The oldest ready job's time (epoch ms) it became ready; NULL when none is.
    OldestMs,
    /// Ready jobs with no time at all, which make the oldest age unknowable.
    Untimed,
    /// Jobs a worker holds.
    InFlight,
    /// Scheduled jobs whose time has come, not yet made ready.
    Due,
    /// Scheduled jobs whose time has not come.
    Delayed,
    /// Failed or discarded jobs kept.
    Failed,
    /// The oldest ready job's age in seconds, where the server computed it (a user's query).
    AgeSeconds,
    /// Jobs created within the rate window.
    Arrived,
    /// Jobs finished (for good: completed, failed for the last time, cancelled) within the
    /// rate window.
    Completed,
}

impl Column {
    const ALL: [Column; 10] = [
        Column::Waiting,
        Column::OldestMs,
        Column::Untimed,
        Column::InFlight,
        Column::Due,
        Column::Delayed,
        Column::Failed,
        Column::AgeSeconds,
        Column::Arrived,
        Column::Completed,
    ];

    /// Its name in a statement's result.
    pub fn as_str(self) -> &'static str {
        match self {
            Column::Waiting => "waiting",
            Column::OldestMs => "oldest_ms",
            Column::Untimed => "untimed",
            Column::InFlight => "in_flight",
            Column::Due => "due",
            Column::Delayed => "delayed",
            Column::Failed => "failed",
            Column::AgeSeconds => "age_seconds",
            Column::Arrived => "arrived",
            Column::Completed => "completed",
        }
    }

    fn named(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// One queue's values: by column, the ones its statements returned (`None` inside: NULL).
pub type QueueValues = BTreeMap<Column, Option<f64>>;

/// Everything one preset's statements read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The server's clock at the transaction's start, epoch ms.
    pub now_ms: f64,
    /// The library's schema version, where its tables record one.
    pub version: Option<String>,
    /// Whether any finished job is kept, where the statements asked (rates).
    pub finished_kept: Option<bool>,
    /// The columns some statement returned (for any queue, or for none when no rows came).
    pub returned: Vec<Column>,
    /// Per queue, its values.
    pub queues: BTreeMap<String, QueueValues>,
}

/// Reads `sets` as the statements of one preset return them.
///
/// # Errors
/// What is wrong with the shape or a value: a missing or unknown column, a count that is not a
/// whole non-negative number, a time that is not a number, a queue's column returned twice.
pub fn read(sets: &[ResultSet]) -> Result<Reading, String> {
    let Some((head, rest)) = sets.split_first() else {
        return Err("no result at all".into());
    };
    let kept_asked = head.columns == ["now_ms", "version", "finished_kept"];
    if (head.columns != ["now_ms", "version"] && !kept_asked) || head.rows.len() != 1 {
        return Err(format!(
            "the first statement returned columns {:?} in {} rows, not now_ms and version (and finished_kept) in one row",
            head.columns,
            head.rows.len()
        ));
    }
    let row = &head.rows[0];
    if row.len() != head.columns.len() {
        return Err(format!(
            "the first statement returned {} values for {} columns",
            row.len(),
            head.columns.len()
        ));
    }
    let now_ms = match row[0].as_deref() {
        Some(t) => finite(t).map_err(|e| format!("now_ms: {e}"))?,
        None => return Err("now_ms is NULL".into()),
    };
    let version = row[1].clone();
    let finished_kept = match row.get(2).map(Option::as_deref) {
        None => None,
        Some(Some("t")) => Some(true),
        Some(Some("f")) => Some(false),
        Some(other) => return Err(format!("finished_kept is {other:?}, not a boolean")),
    };
    let mut reading = Reading {
        now_ms,
        version,
        finished_kept,
        returned: Vec::new(),
        queues: BTreeMap::new(),
    };
    for (i, set) in rest.iter().enumerate() {
        let at = i + 2;
        let mut columns = Vec::with_capacity(set.columns.len());
        let mut queue_at = None;
        for (j, name) in set.columns.iter().enumerate() {
            if name == "queue" {
                if queue_at.replace(j).is_some() {
                    return Err(format!("statement {at} returned `queue` twice"));
                }
                continue;
            }
            let c = Column::named(name)
                .ok_or_else(|| format!("statement {at} returned an unknown column {name:?}"))?;
            if columns.iter().any(|(_, seen)| *seen == c) {
                return Err(format!("statement {at} returned {name:?} twice"));
            }
            columns.push((j, c));
        }
        let Some(queue_at) = queue_at else {
            return Err(format!("statement {at} returned no `queue` column"));
        };
        for (_, c) in &columns {
            if !reading.returned.contains(c) {
                reading.returned.push(*c);
            }
        }
        for row in &set.rows {
            if row.len() != set.columns.len() {
                return Err(format!(
                    "statement {at} returned a row of {} values for {} columns",
                    row.len(),
                    set.columns.len()
                ));
            }
            // A job in no named queue (graphile-worker) is in the queue "".
            let queue = row[queue_at].clone().unwrap_or_default();
            let values = reading.queues.entry(queue.clone()).or_default();
            for &(j, c) in &columns {
                let value = match row[j].as_deref() {
                    None => None,
                    Some(text) => Some(
                        match c {
                            Column::OldestMs | Column::AgeSeconds => finite(text),
                            _ => count(text),
                        }
                        .map_err(|e| format!("queue {queue:?}: {}: {e}", c.as_str()))?,
                    ),
                };
                if values.insert(c, value).is_some() {
                    return Err(format!(
                        "queue {queue:?}: {} was returned twice",
                        c.as_str()
                    ));
                }
            }
        }
    }
    Ok(reading)
}

fn finite(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("{text:?} is not a finite number")),
    }
}

fn count(text: &str) -> Result<f64, String> {
    match text.parse::<u64>() {
        Ok(v) => Ok(v as f64),
        Err(_) => Err(format!("{text:?} is not a count")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(columns: &[&str], rows: &[&[Option<&str>]]) -> ResultSet {
        ResultSet {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|v| v.map(str::to_string)).collect())
                .collect(),
        }
    }

    fn head() -> ResultSet {
        set(
            &["now_ms", "version"],
            &[&[Some("1700000000000.5"), Some("24")]],
        )
    }

    #[test]
    fn statements_merge_by_queue_and_a_null_queue_is_the_queue_without_a_name() {
        let r = read(&[
            head(),
            set(
                &["queue", "waiting", "oldest_ms"],
                &[
                    &[Some("a"), Some("3"), Some("1699999999000")],
                    &[None, Some("0"), None],
                ],
            ),
            set(&["queue", "in_flight"], &[&[Some("a"), Some("2")]]),
        ])
        .expect("reads");
        assert_eq!(r.now_ms, 1_700_000_000_000.5);
        assert_eq!(r.version.as_deref(), Some("24"));
        let a = &r.queues["a"];
        assert_eq!(a[&Column::Waiting], Some(3.0));
        assert_eq!(a[&Column::InFlight], Some(2.0));
        assert_eq!(r.queues[""][&Column::OldestMs], None);
        assert_eq!(
            r.returned,
            vec![Column::Waiting, Column::OldestMs, Column::InFlight]
        );
    }

    #[test]
    fn a_wrong_shape_or_value_is_an_error_never_a_number() {
        let cases: Vec<(Vec<ResultSet>, &str)> = vec![
            (vec![], "no result"),
            (vec![set(&["now_ms"], &[&[Some("1")]])], "first statement"),
            (vec![set(&["now_ms", "version"], &[&[None, None]])], "NULL"),
            (
                vec![set(&["now_ms", "version"], &[&[Some("1")]])],
                "1 values",
            ),
            (
                vec![set(
                    &["now_ms", "version", "finished_kept"],
                    &[&[Some("1"), None, Some("yes")]],
                )],
                "not a boolean",
            ),
            (
                vec![head(), set(&["waiting"], &[&[Some("1")]])],
                "no `queue`",
            ),
            (
                vec![head(), set(&["queue", "length"], &[])],
                "unknown column",
            ),
            (
                vec![
                    head(),
                    set(&["queue", "waiting"], &[&[Some("a"), Some("-1")]]),
                ],
                "not a count",
            ),
            (
                vec![
                    head(),
                    set(&["queue", "waiting"], &[&[Some("a"), Some("1.5")]]),
                ],
                "not a count",
            ),
            (
                vec![
                    head(),
                    set(&["queue", "oldest_ms"], &[&[Some("a"), Some("NaN")]]),
                ],
                "finite",
            ),
            (
                vec![
                    head(),
                    set(&["queue", "waiting"], &[&[Some("a"), Some("1")]]),
                    set(&["queue", "waiting"], &[&[Some("a"), Some("1")]]),
                ],
                "twice",
            ),
            (
                vec![head(), set(&["queue", "waiting"], &[&[Some("a")]])],
                "1 values for 2 columns",
            ),
        ];
        for (sets, wanted) in cases {
            let err = read(&sets).expect_err(wanted);
            assert!(err.contains(wanted), "{err} (wanted {wanted})");
        }
    }
}
