//! The two generic forms of a `postgres:` metric, as the statements that read them: a table
//! described by a fixed grammar (`table:`: identifiers checked, values quoted, nothing else
//! written into SQL), and a user's query (`query:`), run as a subquery in a `READ ONLY`
//! transaction, whose result must be `value` (and `queue`).

use super::config::{Condition, Literal, TableSpec};
use super::rows::Column;

/// `'text'` with `'` doubled: the session has `standard_conforming_strings` on, so a
/// backslash is an ordinary character.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn literal(l: &Literal) -> String {
    match l {
        Literal::Integer(n) => format!("'{n}'"),
        Literal::Text(t) => quote_literal(t),
    }
}

/// One condition as SQL (its column is a checked plain identifier).
fn condition(c: &Condition) -> String {
    let col = &c.column;
    if let Some(v) = &c.equals {
        return format!("{col} = {}", literal(v));
    }
    if let Some(vs) = &c.one_of {
        let list: Vec<String> = vs.iter().map(literal).collect();
        return format!("{col} IN ({})", list.join(", "));
    }
    if let Some(null) = c.is_null {
        return format!("{col} IS {}NULL", if null { "" } else { "NOT " });
    }
    match c.not_after_now {
        Some(false) => format!("{col} > now()"),
        _ => format!("{col} <= now()"),
    }
}

fn conditions(cs: &[Condition]) -> String {
    let parts: Vec<String> = cs.iter().map(condition).collect();
    parts.join(" AND ")
}

/// The statements that read `spec` in `schema` for `wanted`: first the server's clock and the
/// time column's type (as `version`), then one statement per set of conditions.
pub fn table_statements(spec: &TableSpec, schema: &str, wanted: &[Column]) -> String {
    let table = format!("{schema}.{}", spec.name);
    let time_type = match &spec.time_column {
        Some(t) => format!(
            "(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = to_regclass({}) AND a.attname = {} AND NOT a.attisdropped)",
            quote_literal(&table),
            quote_literal(t)
        ),
        None => "NULL::text".into(),
    };
    let mut out = vec![format!(
        "SELECT (extract(epoch FROM now()) * 1000)::float8 AS now_ms, {time_type} AS version"
    )];
    let queue = spec
        .queue_column
        .as_ref()
        .map_or_else(|| "''::text".to_string(), |q| format!("{q}::text"));
    if wanted.contains(&Column::Waiting) || wanted.contains(&Column::OldestMs) {
        let time = match &spec.time_column {
            Some(t) => format!(
                ", min((extract(epoch FROM {t}) * 1000)::float8) AS oldest_ms, count(*) FILTER (WHERE {t} IS NULL) AS untimed"
            ),
            None => String::new(),
        };
        out.push(format!(
            "SELECT {queue} AS queue, count(*) AS waiting{time} FROM {table} WHERE {} GROUP BY 1",
            conditions(&spec.ready)
        ));
    }
    let others = [
        (Column::InFlight, &spec.in_flight),
        (Column::Delayed, &spec.delayed),
        (Column::Failed, &spec.failed),
    ];
    for (column, set) in others {
        if let (true, Some(set)) = (wanted.contains(&column), set) {
            out.push(format!(
                "SELECT {queue} AS queue, count(*) AS {} FROM {table} WHERE {} GROUP BY 1",
                column.as_str(),
                conditions(set)
            ));
        }
    }
    out.join(";\n")
}

/// Whether the time column's type (`version` of the first statement) can be read as a time.
///
/// # Errors
/// The message naming the type and what to do.
pub fn check_time_type(spec: &TableSpec, found: Option<&str>) -> Result<(), String> {
    let Some(column) = &spec.time_column else {
        return Ok(());
    };
    match found {
        Some("timestamp with time zone") => Ok(()),
        Some("timestamp without time zone") if spec.time_zone.is_some() => Ok(()),
        Some(t @ "timestamp without time zone") => Err(format!(
            "time_column {column} is a {t}: say that it holds UTC with time_zone: UTC (the only zone read)"
        )),
        Some(t) => Err(format!(
            "time_column {column} is a {t}, not a timestamp: its unit cannot be told"
        )),
        None => Err(format!("table {} has no column {column}", spec.name)),
    }
}

/// The simple query that runs a user's `query`: as a subquery (so one statement), at most
/// `max_rows` + 1 rows, in the implicit transaction of one simple query on a session whose
/// transactions are all `READ ONLY`. Not an explicit `BEGIN` ... `ROLLBACK`: the source's
/// queries share a pipelined session, and a failed block would leave the next one's query in
/// an aborted transaction; an implicit one ends with its error.
pub fn query_statements(query: &str, max_rows: usize) -> String {
    let q = query.trim().trim_end_matches(';');
    format!(
        "SELECT (extract(epoch FROM now()) * 1000)::float8 AS now_ms, NULL::text AS version;\n\
         SELECT * FROM (\n{q}\n) AS user_query LIMIT {}",
        max_rows + 1
    )
}

/// A user query's result (`value`, and `queue` where it has one) as the statement of
/// `column` (an age as seconds): its `value` renamed.
///
/// # Errors
/// When it has other columns, or no `value`.
pub fn query_result(set: &mut super::rows::ResultSet, column: Column) -> Result<(), String> {
    let shape_ok = set.columns.iter().filter(|c| *c == "value").count() == 1
        && set.columns.iter().all(|c| c == "value" || c == "queue")
        && set.columns.iter().filter(|c| *c == "queue").count() <= 1;
    if !shape_ok {
        return Err(format!(
            "the query returned columns {:?}: it must return value, and queue for a series per queue",
            set.columns
        ));
    }
    let named = match column {
        Column::OldestMs => Column::AgeSeconds,
        c => c,
    };
    let has_queue = set.columns.iter().any(|c| c == "queue");
    for c in &mut set.columns {
        if c == "value" {
            *c = named.as_str().to_string();
        }
    }
    if !has_queue {
        // One row, the queue "" (the metric's only series).
        if set.rows.len() != 1 {
            return Err(format!(
                "the query returned {} rows and no queue column: it must return one row",
                set.rows.len()
            ));
        }
        set.columns.push("queue".into());
        for row in &mut set.rows {
            row.push(Some(String::new()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> TableSpec {
        yaml_serde::from_str(yaml).expect("spec")
    }

    #[test]
    fn a_described_table_becomes_quoted_conditions_grouped_by_queue() {
        let s = spec(
            "{name: jobs, queue_column: queue, time_column: created_at, ready: [{column: state, equals: \"it's\"}, {column: run_at, not_after_now: true}, {column: locked_at, is_null: true}], failed: [{column: state, in: [failed, 3]}]}",
        );
        let sql = table_statements(&s, "app", &[Column::Waiting, Column::Failed]);
        assert!(
            sql.contains("FROM app.jobs WHERE state = 'it''s' AND run_at <= now() AND locked_at IS NULL GROUP BY 1"),
            "{sql}"
        );
        assert!(
            sql.contains("count(*) AS failed FROM app.jobs WHERE state IN ('failed', '3')"),
            "{sql}"
        );
        assert!(sql.contains("to_regclass('app.jobs')"), "{sql}");
        assert!(check_time_type(&s, Some("timestamp with time zone")).is_ok());
        assert!(check_time_type(&s, Some("timestamp without time zone")).is_err());
        assert!(check_time_type(&s, Some("bigint")).is_err());
        assert!(check_time_type(&s, None).is_err());
    }
}
