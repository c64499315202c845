//! Kubernetes `resource.Quantity` strings for metric values. No I/O here.
//!
//! The HPA reads `value.MilliValue()` (docs/reference/external-metrics-api.md §1.3), so milli precision is all
//! that survives: whole numbers are written bare (`"92"`), anything else as milli-units (`"1500m"`).

/// The largest magnitude, in milli-units, that we write: Go's `MilliValue()` is an `int64`.
const MAX_MILLI: f64 = i64::MAX as f64;

/// Formats `value` as a quantity string with milli precision, rounding half away from zero.
///
/// Returns `None` for NaN, infinities and magnitudes that do not fit an `int64` of milli-units:
/// such a value cannot be served faithfully, and the caller must say so rather than invent one.
pub fn format_quantity(value: f64) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    let milli = (value * 1000.0).round();
    if milli.abs() >= MAX_MILLI {
        return None;
    }
    // The range check above makes the cast exact for the integer `milli` holds.
    let milli = milli as i64;
    Some(if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_bare_integers_or_milli_units() {
        struct Case {
            name: &'static str,
            input: f64,
            want: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "zero",
                input: 0.0,
                want: Some("0"),
            },
            Case {
                name: "negative zero",
                input: -0.0,
                want: Some("0"),
            },
            Case {
                name: "integer",
                input: 92.0,
                want: Some("92"),
            },
            Case {
                name: "large integer",
                input: 1_000_000.0,
                want: Some("1000000"),
            },
            Case {
                name: "one and a half",
                input: 1.5,
                want: Some("1500m"),
            },
            Case {
                name: "sub-milli rounds",
                input: 0.0004,
                want: Some("0"),
            },
            Case {
                name: "half milli rounds away",
                input: 0.0005,
                want: Some("1m"),
            },
            Case {
                name: "negative fraction",
                input: -2.25,
                want: Some("-2250m"),
            },
            Case {
                name: "float noise",
                input: 0.1 + 0.2,
                want: Some("300m"),
            },
            Case {
                name: "nan",
                input: f64::NAN,
                want: None,
            },
            Case {
                name: "infinity",
                input: f64::INFINITY,
                want: None,
            },
            Case {
                name: "too large",
                input: 1e17,
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(
                format_quantity(c.input).as_deref(),
                c.want,
                "case {}",
                c.name
            );
        }
    }

    proptest::proptest! {
        /// Every value an HPA can be given reads back (as a Kubernetes quantity) within half
        /// a milli-unit of itself.
        #[test]
        fn quantities_round_trip_to_the_milli_unit(v in -1.0e12f64..1.0e12) {
            let q = format_quantity(v).expect("finite and in range");
            let back = match q.strip_suffix('m') {
                Some(milli) => milli.parse::<f64>().expect("milli") / 1000.0,
                None => q.parse::<f64>().expect("plain"),
            };
            proptest::prop_assert!((back - v).abs() <= 0.0005 + v.abs() * 1e-15, "{} -> {}", v, q);
        }
    }
}
