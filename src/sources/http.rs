//! What the kinds that read over HTTP share (dcgm-exporter, model servers, Prometheus,
//! RabbitMQ's management API): error texts without URLs, the CA file read, and bodies read
//! within a limit. It names no kind.

use super::source::SourceError;

/// A reqwest error as text without its URL (URLs can carry credentials), saying first whether
/// it timed out or could not connect: shared by the HTTP sources so their messages read alike.
pub(crate) fn http_error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        return text;
    };
    format!("{kind}: {text}")
}

/// Reads a source's `ca_file` (PEM), with the error every kind gives for one it cannot read.
///
/// # Errors
/// [`SourceError::Config`] naming the file.
pub(crate) fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|e| SourceError::Config {
        message: format!("ca_file {}: {e}", path.display()),
    })
}

/// Default limit on one HTTP answer from an upstream (a dcgm-exporter scrape, a Prometheus
/// query, a page of RabbitMQ's queue listing): 32 MiB, far above any real one.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Reads an HTTP response body of at most `limit` bytes: an upstream that answers more (an
/// exporter gone wrong, a listing far larger than expected) fails this read, with a message
/// naming the setting, instead of growing the adapter until it is killed for memory.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let too_large =
        || format!("the answer is larger than the limit of {limit} bytes (max_response_bytes)");
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http_error_text(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
