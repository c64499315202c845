//! Kubernetes label rules: what a label key and value may be ([`validate_key`],
//! [`validate_value`]), and how a value read from data becomes one ([`encode_value`]). No I/O.
//!
//! A selector the API server would refuse is refused by [`crate::apimachinery::selector`] with these same
//! rules, so every value the adapter serves must follow them too: a served label that is not a
//! valid label value (`key=queue:emb`) can never be selected, neither by an HPA's `matchLabels`
//! nor by a `labelSelector`.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The longest label value (and label name) Kubernetes accepts.
pub const MAX_VALUE_LEN: usize = 63;

/// Hex digits of the hash an encoded value ends with: 40 bits, so that even 20,000 values
/// cut to the same first 52 characters have about a 1 in 5,000 chance that two of them share
/// a hash (values that differ before the cut never collide).
const HASH_HEX: usize = 10;

/// The character rule shared by label names and values: alphanumerics at both ends, `-`, `_`,
/// `.` inside, at most 63 characters.
fn check_name_part(s: &str) -> Result<(), String> {
    if s.len() > MAX_VALUE_LEN {
        return Err(format!(
            "is {} characters long; the limit is {MAX_VALUE_LEN}",
            s.len()
        ));
    }
    if !is_name_part(s) {
        return Err("must consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric".into());
    }
    Ok(())
}

/// Whether `s` is non-empty, made of `[A-Za-z0-9._-]`, with alphanumerics at both ends (the
/// length is not checked).
fn is_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|&b| is_inner(b))
        }
        _ => false,
    }
}

/// A byte a label name or value may hold inside: an ASCII alphanumeric, `-`, `_` or `.`.
fn is_inner(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters (Kubernetes' qualified-name rule).
///
/// # Errors
/// A message saying what is wrong (without the key, which the caller names).
pub fn validate_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let prefix_ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !part.starts_with('-')
                        && !part.ends_with('-')
                });
            if !prefix_ok {
                return Err("has a prefix that is not a lowercase DNS subdomain".into());
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("must have a name".into());
    }
    check_name_part(name)
}

/// Checks a label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, with alphanumerics at
/// both ends.
///
/// # Errors
/// A message saying what is wrong (without the value, which the caller names).
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        check_name_part(value)
    }
}

/// Whether `value` is a valid label value as it is ([`validate_value`] without the message).
pub fn is_valid_value(value: &str) -> bool {
    value.is_empty() || (value.len() <= MAX_VALUE_LEN && is_name_part(value))
}

/// A value read from data (a Redis key, a RabbitMQ queue or vhost, an exporter's label, a
/// workload name of up to 253 characters) as a valid label value, so that a selector made of
/// the series' own labels picks it out.
///
/// A valid value is returned as it is, borrowed (no allocation: most values of most sources).
/// Any other is encoded, deterministically, the same on every platform and version:
/// 1. every character outside `[A-Za-z0-9._-]` becomes `_` (one `_` per character, also for
///    non-ASCII ones);
/// 2. the result is cut to its first 52 characters, and `-`, `_`, `.` are trimmed off both ends;
/// 3. `-` and the first 10 hex digits of the SHA-256 of the raw value's UTF-8 bytes are appended
///    (the hash alone when nothing is left of step 2).
///
/// `queue:emb` → `queue_emb-` + the first 10 hex digits of SHA-256(`queue:emb`), which anyone can
/// compute for a selector: `printf %s 'queue:emb' | sha256sum | cut -c1-10`. The hash is over
/// the raw value, so `a:b` and `a/b` (the same after step 1) and two long values that share
/// their first 52 characters stay apart; the result is at most 63 characters. A raw value that
/// happens to look exactly like another value's encoding (`queue_emb-` and the right ten hex
/// digits) is the only way two series can meet, and is not worth guarding against.
pub fn encode_value(raw: &str) -> Cow<'_, str> {
    if is_valid_value(raw) {
        return Cow::Borrowed(raw);
    }
    const KEEP: usize = MAX_VALUE_LEN - 1 - HASH_HEX;
    let mapped: String = raw
        .chars()
        .take(KEEP)
        .map(|c| match u8::try_from(c) {
            Ok(b) if is_inner(b) => c,
            _ => '_',
        })
        .collect();
    let body = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    let mut out = String::with_capacity(body.len() + 1 + HASH_HEX);
    out.push_str(body);
    if !body.is_empty() {
        out.push('-');
    }
    for b in &digest.as_ref()[..HASH_HEX / 2] {
        let _ = write!(out, "{b:02x}");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_prefix(raw: &str) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
        d.as_ref()[..5].iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes_rules() {
        assert!(validate_key("queue").is_ok());
        assert!(validate_key("example.com/queue").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("example.com/").is_err());
        assert!(validate_value("").is_ok());
        assert!(validate_value("embed-1.a_b").is_ok());
        assert!(validate_value("-x").is_err());
        for v in [
            "",
            "a",
            "embed-1.a_b",
            &"x".repeat(63),
            "-x",
            "x.",
            "a:b",
            "ä",
            &"x".repeat(64),
        ] {
            assert_eq!(is_valid_value(v), validate_value(v).is_ok(), "{v:?}");
        }
    }

    #[test]
    fn valid_values_are_served_as_they_are_without_copying() {
        for v in ["", "embed", "queue-1.a_b", "NVIDIA-H100", &"x".repeat(63)] {
            assert!(
                matches!(encode_value(v), Cow::Borrowed(b) if b == v),
                "{v:?}"
            );
        }
    }

    #[test]
    fn invalid_values_become_valid_deterministic_and_distinct() {
        // The hash is SHA-256's first 10 hex digits, as `sha256sum` prints them: a user can
        // compute the value a selector needs, and it is the same on every platform and version.
        assert_eq!(sha_prefix("queue:emb").len(), 10);
        assert_eq!(
            encode_value("queue:emb"),
            format!("queue_emb-{}", sha_prefix("queue:emb"))
        );
        assert_eq!(sha_prefix("/"), "8a5edab282");
        assert_eq!(encode_value("/"), "8a5edab282");

        let cases = [
            "queue:emb",
            "a:b",
            "a/b",
            "a b",
            "-x-",
            "_",
            ":::",
            "日本語",
            "ä",
            "caf\u{e9}:q",
            "NVIDIA H100 80GB HBM3",
            "meta-llama/Llama-3.1-8B-Instruct",
            &"a".repeat(64),
            &format!("{}:1", "jobs:".repeat(20)),
            &format!("{}:2", "jobs:".repeat(20)),
            &"é".repeat(40),
        ];
        let mut seen = std::collections::HashSet::new();
        for raw in cases {
            let out = encode_value(raw);
            assert!(validate_value(&out).is_ok(), "{raw:?} -> {out:?}");
            assert!(out.len() <= 63, "{raw:?} -> {out:?}");
            assert!(!out.is_empty(), "{raw:?}");
            assert_eq!(out, encode_value(raw), "deterministic: {raw:?}");
            assert!(out.ends_with(&sha_prefix(raw)), "{raw:?} -> {out:?}");
            assert!(seen.insert(out.clone()), "{raw:?} -> {out:?} collides");
        }
        // The readable part is kept where there is one.
        assert!(encode_value("a:b").starts_with("a_b-"));
        assert!(encode_value("a/b").starts_with("a_b-"));
        assert_ne!(encode_value("a:b"), encode_value("a/b"));
        assert!(encode_value("-x-").starts_with("x-"));
        // All invalid characters: only the hash is left.
        assert_eq!(encode_value(":::"), sha_prefix(":::"));
        assert_eq!(encode_value("日本語"), sha_prefix("日本語"));
        // Too long: cut to 52 characters, then the hash; exactly 63.
        let long = encode_value(&"a".repeat(64)).into_owned();
        assert_eq!(
            long,
            format!("{}-{}", "a".repeat(52), sha_prefix(&"a".repeat(64)))
        );
        assert_eq!(long.len(), 63);
        // A cut that ends on a replaced character is trimmed back to an alphanumeric.
        let cut = encode_value(&format!("{}:1", "jobs:".repeat(20))).into_owned();
        assert!(cut.starts_with("jobs_jobs_"), "{cut}");
        assert!(cut.len() <= 63);
    }
}
