//! Enqueue times as job libraries write them: epoch seconds, epoch milliseconds or RFC 3339,
//! inside a JSON payload or as a plain string. Pure functions; no I/O.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::config::TimeUnit;

/// 2000-01-01T00:00:00Z in milliseconds. An enqueue time before it is a unit mix-up (seconds
/// read as milliseconds), not a job that old.
const EARLIEST_PLAUSIBLE_MS: f64 = 946_684_800_000.0;

/// Parses a textual time in `unit` into epoch milliseconds.
///
/// # Errors
/// A message quoting the text and naming the expected form.
pub fn parse_text(text: &str, unit: TimeUnit) -> Result<f64, String> {
    let text = text.trim();
    let ms = match unit {
        TimeUnit::S | TimeUnit::Ms | TimeUnit::Sidekiq => {
            let n: f64 = text
                .parse()
                .map_err(|_| format!("{text:?} is not a number of {}", unit_name(unit)))?;
            if in_seconds(unit, text.contains(['.', 'e', 'E'])) {
                n * 1000.0
            } else {
                n
            }
        }
        TimeUnit::Rfc3339 => {
            let t = OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))?;
            t.unix_timestamp_nanos() as f64 / 1e6
        }
    };
    plausible(ms, unit)
}

/// Reads the value at `pointer` in a JSON payload as a time in `unit`, in epoch milliseconds.
///
/// # Errors
/// When the payload is not JSON, the pointer finds nothing, or the value is not a time.
pub fn from_json(payload: &[u8], pointer: &str, unit: TimeUnit) -> Result<f64, String> {
    let found = super::json_pointer::find(payload, pointer)
        .map_err(|e| format!("the element is not JSON ({e}); cannot read {pointer}"))?
        .ok_or_else(|| format!("the element's JSON has nothing at {pointer}"))?;
    match &found {
        serde_json::Value::Number(n) if unit != TimeUnit::Rfc3339 => {
            let seconds = in_seconds(unit, n.is_f64());
            let n = n
                .as_f64()
                .ok_or_else(|| format!("{n} at {pointer} is not a usable number"))?;
            plausible(if seconds { n * 1000.0 } else { n }, unit)
        }
        serde_json::Value::String(s) => parse_text(s, unit).map_err(|e| format!("{pointer}: {e}")),
        other => Err(format!(
            "{pointer} holds {other}, not a time in {}",
            unit_name(unit)
        )),
    }
}

/// Whether a number in `unit` counts seconds (else milliseconds); `has_fraction`: it was
/// written with a fraction or an exponent, which `unit: sidekiq` reads as seconds, as Sidekiq's
/// own reader does (a float is seconds, an integer milliseconds: sidekiq v8.1.7
/// `lib/sidekiq/api.rb:576-582`).
fn in_seconds(unit: TimeUnit, has_fraction: bool) -> bool {
    match unit {
        TimeUnit::S => true,
        TimeUnit::Sidekiq => has_fraction,
        TimeUnit::Ms | TimeUnit::Rfc3339 => false,
    }
}

/// Age in seconds of an item enqueued at `enqueued_ms`, seen at `now_ms` (both epoch ms, `now`
/// from the Redis server's clock), by the rule every source shares ([`crate::sources::age`]).
///
/// # Errors
/// When the time lies further in the future than clock skew explains: a wrong unit or a
/// producer's wrong clock, which must not be served as "age 0".
pub fn age_seconds(enqueued_ms: f64, now_ms: f64) -> Result<f64, String> {
    crate::sources::age::age_seconds(enqueued_ms, now_ms, "the Redis server's clock")
}

fn plausible(ms: f64, unit: TimeUnit) -> Result<f64, String> {
    if !ms.is_finite() || ms < EARLIEST_PLAUSIBLE_MS {
        return Err(format!(
            "time {ms} ms since the epoch is before the year 2000; is the unit {} right?",
            unit_name(unit)
        ));
    }
    Ok(ms)
}

fn unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::S => "seconds (unit: s)",
        TimeUnit::Ms => "milliseconds (unit: ms)",
        TimeUnit::Rfc3339 => "RFC 3339 (unit: rfc3339)",
        TimeUnit::Sidekiq => "Sidekiq's seconds (a fraction) or milliseconds (unit: sidekiq)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_read_in_every_unit_job_libraries_use() {
        struct Case {
            name: &'static str,
            payload: &'static str,
            pointer: &'static str,
            unit: TimeUnit,
            want_ms: f64,
        }
        let cases = [
            Case {
                name: "sidekiq 8 integer ms, told by its type",
                payload: r#"{"queue":"embed","enqueued_at":1795310979997,"created_at":1795310979000}"#,
                pointer: "/enqueued_at",
                unit: TimeUnit::Sidekiq,
                want_ms: 1_795_310_979_997.0,
            },
            Case {
                name: "sidekiq 6 float seconds, told by its type",
                payload: r#"{"queue":"embed","enqueued_at":1796615208.8964033}"#,
                pointer: "/enqueued_at",
                unit: TimeUnit::Sidekiq,
                want_ms: 1_796_615_208_896.403_3,
            },
            Case {
                name: "a whole float is still seconds",
                payload: r#"{"enqueued_at":1796615208.0}"#,
                pointer: "/enqueued_at",
                unit: TimeUnit::Sidekiq,
                want_ms: 1_796_615_208_000.0,
            },
            Case {
                name: "sidekiq 8 epoch ms",
                payload: r#"{"queue":"embed","enqueued_at":1795310979997,"created_at":1795310979000}"#,
                pointer: "/enqueued_at",
                unit: TimeUnit::Ms,
                want_ms: 1_795_310_979_997.0,
            },
            Case {
                name: "sidekiq 7 float seconds",
                payload: r#"{"enqueued_at":1795310979.5}"#,
                pointer: "/enqueued_at",
                unit: TimeUnit::S,
                want_ms: 1_795_310_979_500.0,
            },
            Case {
                name: "rfc3339 string",
                payload: r#"{"meta":{"at":"2026-11-22T01:29:49.000000Z"}}"#,
                pointer: "/meta/at",
                unit: TimeUnit::Rfc3339,
                want_ms: 1_795_310_989_000.0,
            },
            Case {
                name: "ms as a string",
                payload: r#"{"t":"1795310979997"}"#,
                pointer: "/t",
                unit: TimeUnit::Ms,
                want_ms: 1_795_310_979_997.0,
            },
        ];
        for c in cases {
            let got = from_json(c.payload.as_bytes(), c.pointer, c.unit)
                .unwrap_or_else(|e| panic!("case {}: {e}", c.name));
            assert!(
                (got - c.want_ms).abs() < 0.5,
                "case {}: got {got}, want {}",
                c.name,
                c.want_ms
            );
        }
    }

    #[test]
    fn unreadable_timestamps_are_errors_naming_the_problem() {
        struct Case {
            name: &'static str,
            payload: &'static str,
            unit: TimeUnit,
            mentions: &'static str,
        }
        let cases = [
            Case {
                name: "not json",
                payload: "job-17",
                unit: TimeUnit::Ms,
                mentions: "not JSON",
            },
            Case {
                name: "missing field",
                payload: r#"{"other":1}"#,
                unit: TimeUnit::Ms,
                mentions: "nothing at /enqueued_at",
            },
            Case {
                name: "seconds read as ms",
                payload: r#"{"enqueued_at":1795310979.5}"#,
                unit: TimeUnit::Ms,
                mentions: "before the year 2000",
            },
            Case {
                name: "bool",
                payload: r#"{"enqueued_at":true}"#,
                unit: TimeUnit::S,
                mentions: "holds true",
            },
            Case {
                name: "bad rfc3339",
                payload: r#"{"enqueued_at":"yesterday"}"#,
                unit: TimeUnit::Rfc3339,
                mentions: "RFC 3339",
            },
            Case {
                name: "number for rfc3339",
                payload: r#"{"enqueued_at":5}"#,
                unit: TimeUnit::Rfc3339,
                mentions: "not a time",
            },
        ];
        for c in cases {
            let err = from_json(c.payload.as_bytes(), "/enqueued_at", c.unit).expect_err(c.name);
            assert!(
                err.contains(c.mentions),
                "case {}: {err:?} should mention {:?}",
                c.name,
                c.mentions
            );
        }
    }

    #[test]
    fn ages_clamp_small_skew_and_refuse_the_far_future() {
        assert_eq!(
            age_seconds(1_000_000_000_000.0, 1_000_000_002_500.0),
            Ok(2.5)
        );
        assert_eq!(
            age_seconds(1_000_000_001_000.0, 1_000_000_000_000.0),
            Ok(0.0),
            "1 s of skew is age 0"
        );
        assert!(
            age_seconds(1_795_310_979_997_000.0, 1_795_310_979_997.0).is_err(),
            "ms read as s lies in the future"
        );
    }
}
