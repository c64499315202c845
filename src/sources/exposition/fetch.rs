//! One bounded HTTP read of an upstream that serves Prometheus text or a Prometheus API answer:
//! the time and the size allowed are the source's ([`Fetch`]), transport errors come back as
//! text without the URL (which can carry credentials), and the client is built the same way
//! for every such source ([`client`]).

use std::path::Path;
use std::time::Duration;

use crate::primitives::ConfigError;
use crate::sources::source::SourceError;

/// How one HTTP read of an upstream is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Fetch {
    /// Time allowed for the whole request.
    pub timeout: Duration,
    /// Largest body read (`crate::sources::http::read_body`).
    pub max_bytes: usize,
}

/// Checks a scraping source's limits found at `at`: the per-target `scrape` timeout within the
/// poll timeout, and a non-zero `max_response_bytes`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_limits(
    at: &str,
    scrape: Duration,
    poll_timeout: Duration,
    max_response_bytes: Option<usize>,
) -> Result<(), ConfigError> {
    if max_response_bytes == Some(0) {
        return Err(ConfigError::invalid(
            format!("{at}.max_response_bytes"),
            "must be greater than zero",
        ));
    }
    if scrape.is_zero() || scrape > poll_timeout {
        return Err(ConfigError::invalid(
            format!("{at}.scrape_timeout"),
            format!("must be greater than zero and at most the poll timeout ({poll_timeout:?})"),
        ));
    }
    Ok(())
}

/// Checks the `scheme` and `path` of discovered targets found at `at`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_scheme_and_path(at: &str, scheme: &str, path: &str) -> Result<(), ConfigError> {
    if !matches!(scheme, "http" | "https") {
        return Err(ConfigError::invalid(
            format!("{at}.scheme"),
            format!("{scheme:?} must be http or https"),
        ));
    }
    if !path.starts_with('/') {
        return Err(ConfigError::invalid(
            format!("{at}.path"),
            format!("{path:?} must start with '/'"),
        ));
    }
    Ok(())
}

/// The HTTP client of a scraping source: our user agent, one idle connection kept per target
/// (each is polled every few seconds), and `ca_file`'s certificates added for `https://`
/// targets behind a private CA.
///
/// # Errors
/// [`SourceError::Config`] when the CA file cannot be read or is not PEM.
pub fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, SourceError> {
    let bad = |message: String| SourceError::Config { message };
    crate::tls::ensure_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("queue-metrics-adapter/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(1);
    if let Some(path) = ca_file {
        let pem = crate::sources::http::read_ca_file(path)?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| bad(format!("ca_file {}: {e}", path.display())))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| bad(e.to_string()))
}

/// Sends a GET and reads the whole body (bounded by `fetch`) as text, whatever the status (the
/// caller decides what a status means); transport errors come back as URL-free text.
///
/// # Errors
/// The transport's error, a timeout, or a body over the limit, as text.
pub async fn get_text(
    request: reqwest::RequestBuilder,
    fetch: Fetch,
) -> Result<(reqwest::StatusCode, String), String> {
    let response = request
        .timeout(fetch.timeout)
        .send()
        .await
        .map_err(|e| crate::sources::http::http_error_text(&e))?;
    let status = response.status();
    let body = crate::sources::http::read_body(response, fetch.max_bytes).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A scrape: `GET url`, whose body counts only with a success status.
///
/// # Errors
/// As [`get_text`], and `HTTP <status>` for any other status.
pub async fn scrape(client: &reqwest::Client, url: &str, fetch: Fetch) -> Result<String, String> {
    match get_text(client.get(url), fetch).await? {
        (status, _) if !status.is_success() => Err(format!("HTTP {status}")),
        (_, body) => Ok(body),
    }
}
