//! Config primitives every layer shares: durations as the config writes them, secrets that
//! never print, URLs with their passwords masked and their escapes decoded, bounded quotes of
//! client input, and the error a refused config is. This module imports nothing of the crate,
//! so sources, the config root and the CLI can all use it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a configuration was refused. The process does not start with one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The YAML is malformed or does not fit the schema (unknown field, bad duration, ...).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the field and position.
        message: String,
    },
    /// A value is well-formed YAML but not acceptable.
    #[error("config field {field}: {message}")]
    Invalid {
        /// Where, as a path such as `metrics[2].redis.group`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A secret read from a file or the environment. `Debug` and `Display` print `<redacted>`, so a
/// secret cannot reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that sends it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from `file` or the environment variable `env`; at most one may be given.
    /// Trailing newlines of a file are dropped (editors and `echo` add one).
    ///
    /// # Errors
    /// When both are given, the file cannot be read, or the variable is unset.
    pub fn resolve(
        file: Option<&Path>,
        env: Option<&str>,
        field: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        match (file, env) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                field,
                "give either password_file or password_env, not both",
            )),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(
                        format!("{field}.password_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Ok(Some(Secret(
                    text.trim_end_matches(['\n', '\r']).to_string(),
                )))
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) => Ok(Some(Secret(v))),
                Err(_) => Err(ConfigError::invalid(
                    format!("{field}.password_env"),
                    format!("environment variable {var} is not set"),
                )),
            },
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A duration written as a number with a unit, or several: `500ms`, `2s`, `1m30s`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `500ms`, `2s`, `1.5s`, `1m30s`, `1h`.
    ///
    /// # Errors
    /// A message quoting the text and showing the accepted forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {text:?}: write a number with a unit, e.g. 500ms, 2s, 1m30s, 1h"
            )
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(bad());
        }
        let mut total = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if num_len == 0 {
                return Err(bad());
            }
            let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            total += number * scale;
            rest = &rest[unit_len..];
        }
        if !total.is_finite() || total > 1e9 {
            return Err(bad());
        }
        Ok(HumanDuration(Duration::from_secs_f64(total)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Decodes `%XX` escapes (a URL's path segment, a header's key); a `%` not followed by two hex
/// digits stays as it is, and bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces the password in a URL's user-info with `***`, so URLs can be logged.
///
/// The user-info ends at the **last** `@` of the URL, not at the first `/`: a password with an
/// unescaped `/`, `?` or `#` (invalid in a URL, but typed that way) must not end the search
/// early and be printed whole. Only the user name before the first `:` is kept, and only when
/// it holds no path characters; an `@` in a path or query over-redacts, which is harmless.
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let user = rest[..at].split(':').next().unwrap_or("");
    let user = if user.contains(['/', '?', '#']) {
        ""
    } else {
        user
    };
    format!("{prefix}{user}:***@{}", &rest[at + 1..])
}

/// How much of a long value an error message quotes.
pub const QUOTED_CHARS: usize = 64;

/// `text` quoted, or its first [`QUOTED_CHARS`] characters and its length when it is longer: what an error
/// message echoes of a value a client sent (a selector, a trigger setting), so a megabyte in
/// cannot become a megabyte out.
pub fn quoted_prefix(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_common_forms() {
        for (text, ms) in [
            ("500ms", 500),
            ("2s", 2000),
            ("1.5s", 1500),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(
                HumanDuration::parse(text).map(|d| d.0.as_millis()),
                Ok(ms),
                "{text}"
            );
        }
        for bad in ["", "2", "s", "2 sec", "-1s", "1d"] {
            assert!(
                HumanDuration::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
