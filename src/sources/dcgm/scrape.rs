//! Scraping dcgm-exporter endpoints: all at once, each with a timeout. A failed endpoint makes
//! only its own GPUs unknown; the others are read. Only `GET /metrics`.

use super::gpus::{Alias, GpuReading, readings};
pub use crate::sources::exposition::fetch::Fetch;
use crate::sources::exposition::fetch::scrape;
use crate::sources::exposition::parse::parse;

/// What one endpoint gave.
#[derive(Debug)]
pub struct EndpointScrape {
    /// The endpoint's URL.
    pub endpoint: String,
    /// Its GPUs, or why it could not be read.
    pub outcome: Result<Vec<GpuReading>, String>,
    /// Lines that could not be read (skipped), and the first few of them.
    pub malformed: usize,
    /// The first malformed lines with their line numbers, for the log.
    pub first_malformed: Vec<(usize, String)>,
    /// When the readings were taken, where that is earlier than now: the oldest sample
    /// timestamp of a target that Prometheus relays. `None` for a direct scrape (now).
    pub observed_at: Option<std::time::SystemTime>,
}

/// Scrapes every endpoint concurrently, each bounded by `fetch`.
pub async fn scrape_all(
    client: &reqwest::Client,
    endpoints: &[String],
    fetch: Fetch,
    aliases: &[Alias],
    extra_labels: &[String],
) -> Vec<EndpointScrape> {
    let calls = endpoints
        .iter()
        .map(|e| scrape_one(client, e, fetch, aliases, extra_labels));
    futures_util::future::join_all(calls).await
}

async fn scrape_one(
    client: &reqwest::Client,
    endpoint: &str,
    fetch: Fetch,
    aliases: &[Alias],
    extra_labels: &[String],
) -> EndpointScrape {
    match scrape(client, endpoint, fetch).await {
        Ok(body) => {
            let parsed = parse(&body);
            EndpointScrape {
                endpoint: endpoint.to_string(),
                outcome: Ok(readings(&parsed.samples, aliases, extra_labels)),
                malformed: parsed.malformed,
                first_malformed: parsed.first_malformed,
                observed_at: None,
            }
        }
        Err(e) => EndpointScrape {
            endpoint: endpoint.to_string(),
            outcome: Err(e),
            malformed: 0,
            first_malformed: Vec::new(),
            observed_at: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sources::dcgm::gpus::builtin_aliases;

    #[tokio::test]
    async fn a_failed_endpoint_leaves_the_others_readable() {
        crate::tls::ensure_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(|| async {
                    include_str!("../../../tests/fixtures/synthetic-4.8-k8s-mig.prom")
                }),
            )
            .route(
                "/broken",
                axum::routing::get(|| async {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no")
                }),
            )
            .route(
                "/huge",
                axum::routing::get(|| async { "# HELP x\n".repeat(200_000) }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let endpoints = vec![
            format!("http://{addr}/metrics"),
            format!("http://{addr}/broken"),
            format!("http://{addr}/slow"),
            "http://127.0.0.1:1/metrics".to_string(),
            format!("http://{addr}/huge"),
        ];
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        let fetch = Fetch {
            timeout: Duration::from_millis(300),
            max_bytes: 1024 * 1024,
        };
        let out = scrape_all(&client, &endpoints, fetch, &builtin_aliases(), &[]).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "concurrent, bounded by the timeout"
        );
        assert_eq!(
            out[0].outcome.as_ref().map(Vec::len),
            Ok(4),
            "GPU0, two MIG instances of GPU1, GPU2"
        );
        assert_eq!(
            out[1].outcome.as_ref().map(Vec::len),
            Err(&"HTTP 500 Internal Server Error".to_string())
        );
        let error = |i: usize| out[i].outcome.as_ref().err().cloned().unwrap_or_default();
        assert!(error(2).starts_with("timed out"), "{}", error(2));
        assert!(error(3).starts_with("connection failed"), "{}", error(3));
        assert!(
            !error(3).contains("127.0.0.1:1"),
            "URLs are left out of messages: {}",
            error(3)
        );
        assert!(
            error(4).contains("larger than the limit of 1048576 bytes (max_response_bytes)"),
            "a 2 MB answer is an error for that endpoint, not memory: {}",
            error(4)
        );
    }
}
