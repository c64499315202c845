//! Ages from enqueue times, by one rule for every source: a time a little in the future is
//! clock skew (age 0), a time further ahead is wrong (a unit mix-up such as milliseconds read
//! as seconds, or a producer's bad clock) and an error, never the age `0`. Pure; no I/O.

/// How far in the future of the reading clock an enqueue time may be before it is called wrong
/// rather than clock skew: 60 s. Within it, the age is 0.
pub const FUTURE_TOLERANCE_MS: f64 = 60_000.0;

/// Age in seconds of an item enqueued at `enqueued_ms`, seen at `now_ms` (both epoch ms);
/// `clock` names whose clock `now_ms` is, for the message.
///
/// # Errors
/// When the time lies further than [`FUTURE_TOLERANCE_MS`] in the future, or is not a number.
pub fn age_seconds(enqueued_ms: f64, now_ms: f64, clock: &str) -> Result<f64, String> {
    let age_ms = now_ms - enqueued_ms;
    if !age_ms.is_finite() {
        return Err(format!("the enqueue time {enqueued_ms} is not a time"));
    }
    if age_ms < -FUTURE_TOLERANCE_MS {
        let ahead_s = -age_ms / 1000.0;
        // A time in ms read as seconds lies around 1000 times further out than now.
        let hint = if enqueued_ms > now_ms * 100.0 {
            "it looks like milliseconds read as seconds"
        } else {
            "check the timestamp unit and the producers' clocks"
        };
        return Err(format!(
            "the enqueue time lies {ahead_s:.0} s in the future of {clock}; {hint}"
        ));
    }
    Ok(age_ms.max(0.0) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_skew_is_age_zero_and_the_far_future_is_an_error_naming_the_likely_unit() {
        assert_eq!(
            age_seconds(1_000_000_000_000.0, 1_000_000_002_500.0, "c"),
            Ok(2.5)
        );
        assert_eq!(
            age_seconds(1_000_000_001_000.0, 1_000_000_000_000.0, "c"),
            Ok(0.0)
        );
        let ms_as_s = age_seconds(1_795_310_979_997_000.0, 1_795_310_979_997.0, "the clock")
            .expect_err("far future");
        assert!(ms_as_s.contains("milliseconds"), "{ms_as_s}");
        assert!(ms_as_s.contains("the clock"), "{ms_as_s}");
        let skewed =
            age_seconds(1_795_311_979_997.0, 1_795_310_979_997.0, "c").expect_err("1000 s ahead");
        assert!(skewed.contains("producers' clocks"), "{skewed}");
        assert!(age_seconds(f64::NAN, 1.0, "c").is_err());
    }
}
