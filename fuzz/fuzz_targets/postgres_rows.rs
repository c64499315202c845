//! The PostgreSQL presets' row reader (`sources::postgres::rows::read`): whatever result sets a
//! server (or something that speaks its protocol) returns, the reading is a value or an error,
//! never a panic. A reading that parsed holds a finite clock, a whole non-negative count or a
//! finite time in each value, only columns it lists as returned, and reads back the same from
//! result sets written out of it.
//!
//! The input is text: result sets separated by `#`, rows by `/`, values by `,`; the first row
//! of a set is its column names, the others its values; `~` is SQL NULL. A name of one digit is
//! a known column (`0` queue, `1` waiting, `2` oldest_ms, `3` untimed, `4` in_flight, `5` due,
//! `6` delayed, `7` failed, `8` now_ms, `9` version; `a` age_seconds), so that valid shapes are
//! reached from an empty corpus. The first byte's low bit puts the preset's first statement in front
//! (`now_ms`, `version`, one row), taking its two values from the first set's first row when
//! its second bit is set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::sources::postgres::rows::{Column, Reading, ResultSet, read};

const NAMES: [&str; 10] = [
    "queue",
    "waiting",
    "oldest_ms",
    "untimed",
    "in_flight",
    "due",
    "delayed",
    "failed",
    "now_ms",
    "version",
];

fn name(text: &str) -> String {
    match text.as_bytes() {
        [d @ b'0'..=b'9'] => NAMES[usize::from(d - b'0')].to_string(),
        b"a" => "age_seconds".into(),
        _ => text.to_string(),
    }
}

/// The columns that hold counts (the others hold times, any finite number).
const COUNTS: [Column; 6] = [
    Column::Waiting,
    Column::Untimed,
    Column::InFlight,
    Column::Due,
    Column::Delayed,
    Column::Failed,
];

/// A value as text that reads back as the same number: a whole one in digits, as the
/// server writes a count, any other as Rust writes it (which reads back exactly).
fn text_of(v: f64) -> String {
    if v.fract() == 0.0 && (0.0..=18_446_744_073_709_551_615.0).contains(&v) {
        format!("{}", v as u64)
    } else {
        format!("{v}")
    }
}

fn value(text: &str) -> Option<String> {
    (text != "~").then(|| text.to_string())
}

fn values(row: &str) -> Vec<Option<String>> {
    row.split(',').map(value).collect()
}

/// The result sets the input makes.
fn sets(data: &[u8]) -> Option<Vec<ResultSet>> {
    let (&flags, rest) = data.split_first()?;
    let text = String::from_utf8_lossy(rest);
    let mut parts: Vec<&str> = text.split('#').collect();
    let mut out = Vec::new();
    if flags & 1 == 1 {
        let row = if flags & 2 == 2 {
            let first = parts.remove(0);
            values(first.split('/').next().unwrap_or_default())
        } else {
            vec![Some("1795311069997.25".into()), Some("24".into())]
        };
        out.push(ResultSet {
            columns: vec!["now_ms".into(), "version".into()],
            rows: vec![row],
        });
    }
    for part in parts {
        let mut rows = part.split('/');
        let columns = rows
            .next()
            .unwrap_or_default()
            .split(',')
            .filter(|c| !c.is_empty())
            .map(name)
            .collect();
        out.push(ResultSet {
            columns,
            rows: rows.map(values).collect(),
        });
    }
    Some(out)
}

/// Result sets that say what `r` holds: the first statement, one that names every queue, then
/// one statement per column (in the order `returned` lists them) with a row for each queue
/// that has it.
fn written(r: &Reading) -> Vec<ResultSet> {
    let mut out = vec![ResultSet {
        columns: vec!["now_ms".into(), "version".into()],
        rows: vec![vec![Some(format!("{}", r.now_ms)), r.version.clone()]],
    }];
    // Every queue, those a statement named without a value too.
    out.push(ResultSet {
        columns: vec!["queue".into()],
        rows: r.queues.keys().map(|q| vec![Some(q.clone())]).collect(),
    });
    for &c in &r.returned {
        let rows = r
            .queues
            .iter()
            .filter_map(|(q, vs)| {
                let v = vs.get(&c)?;
                let text = v.map(text_of);
                Some(vec![Some(q.clone()), text])
            })
            .collect();
        out.push(ResultSet {
            columns: vec!["queue".into(), c.as_str().into()],
            rows,
        });
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some(sets) = sets(data) else { return };
    let Ok(r) = read(&sets) else { return };
    assert!(r.now_ms.is_finite(), "{r:?}");
    let rows: usize = sets.iter().skip(1).map(|s| s.rows.len()).sum();
    assert!(r.queues.len() <= rows, "{r:?}");
    for (q, vs) in &r.queues {
        for (c, v) in vs {
            assert!(
                r.returned.contains(c),
                "queue {q:?}: {c:?} not listed: {r:?}"
            );
            let Some(v) = *v else { continue };
            assert!(v.is_finite(), "queue {q:?}: {c:?} = {v}");
            if COUNTS.contains(c) {
                assert!(v >= 0.0 && v.fract() == 0.0, "queue {q:?}: {c:?} = {v}");
            }
        }
    }
    let again = read(&written(&r)).expect("what a reading holds reads back");
    assert_eq!(again, r);
});
