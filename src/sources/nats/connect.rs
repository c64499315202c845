//! The connection to NATS: the official client (`async-nats`) with the source's servers,
//! credentials and TLS. The client keeps one connection and reconnects by itself; a poll made
//! while it is away fails at once with "not connected" rather than waiting for its requests to
//! time out.
//!
//! Secrets are the ones the config read at load (the password file is read again when the
//! source connects: its first poll, or after it was built anew; the client's own reconnects
//! reuse what it was given). A rotated password, token, seed or `.creds` file is a changed
//! config, which builds the source anew and so connects with it. They are handed to the client only: the client's own `Debug`
//! prints no credential, and its errors name none.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr, ServerError};

use super::config::NatsSourceConfig;
use crate::sources::source::SourceError;

/// What the connection's events tell the source: a refused wake subscription turns waking off.
pub type OnRefusedSubscription = Arc<dyn Fn(String) + Send + Sync>;

/// The servers, as the client parses them.
///
/// # Errors
/// [`SourceError::Config`] naming the server that cannot be read.
pub fn servers(conn: &NatsSourceConfig) -> Result<Vec<ServerAddr>, SourceError> {
    conn.servers
        .iter()
        .map(|s| {
            s.parse::<ServerAddr>().map_err(|e| SourceError::Config {
                message: format!("server {s:?}: {e}"),
            })
        })
        .collect()
}

/// A description of the servers for errors (no credentials: the config refuses them in URLs).
pub fn target(conn: &NatsSourceConfig) -> String {
    conn.servers.join(",")
}

/// Connects source `name` with `conn`'s settings, each attempt bounded by `timeout`.
/// `on_refused` is told when the server refuses a subscription (the wake's).
///
/// # Errors
/// [`SourceError::Config`] when a secret file cannot be read, [`SourceError::Connect`] when no
/// server accepts the connection.
pub async fn connect(
    name: &str,
    conn: &NatsSourceConfig,
    timeout: Duration,
    on_refused: OnRefusedSubscription,
) -> Result<async_nats::Client, SourceError> {
    let config = |e: crate::primitives::ConfigError| SourceError::Config {
        message: e.to_string(),
    };
    let source = name.to_string();
    let mut options = ConnectOptions::new()
        .name(format!("queue-metrics-adapter/{name}"))
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        .event_callback(move |event| {
            let source = source.clone();
            let on_refused = on_refused.clone();
            async move { log_event(&source, event, &on_refused) }
        });
    if let Some(user) = &conn.credentials.username {
        let password = conn
            .credentials
            .current_password()
            .map_err(config)?
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        options = options.user_and_password(user.clone(), password);
    }
    if let Some(token) = &conn.token {
        options = options.token(token.expose().to_string());
    }
    if let Some(seed) = &conn.nkey_seed {
        options = options.nkey(seed.expose().to_string());
    }
    if let Some(creds) = &conn.creds {
        options = options
            .credentials(creds.expose())
            .map_err(|e| SourceError::Config {
                // Never the content: the error kind only.
                message: format!(
                    "creds_file does not hold a user JWT and seed ({})",
                    e.kind()
                ),
            })?;
    }
    if conn.tls_required() {
        options = options.require_tls(true);
    }
    if let Some(ca) = &conn.ca_file {
        readable(ca, "ca_file")?;
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&conn.cert_file, &conn.key_file) {
        readable(cert, "cert_file")?;
        readable(key, "key_file")?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let servers = servers(conn)?;
    options
        .connect(servers)
        .await
        .map_err(|e| SourceError::Connect {
            target: target(conn),
            message: e.to_string(),
        })
}

fn readable(path: &Path, field: &str) -> Result<(), SourceError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| SourceError::Config {
            message: format!("{field} {}: {e}", path.display()),
        })
}

/// Logs what the client reports about its connection; a refused subscription goes to
/// `on_refused`, which turns the wake off.
fn log_event(source: &str, event: Event, on_refused: &OnRefusedSubscription) {
    match event {
        Event::Connected => tracing::info!(source, "NATS connected"),
        Event::Disconnected => {
            tracing::warn!(source, "NATS disconnected; the client reconnects by itself");
        }
        Event::LameDuckMode => tracing::warn!(source, "NATS server entered lame duck mode"),
        Event::ServerError(ServerError::Other(text))
            if text.contains("Permissions Violation for Subscription") =>
        {
            if text.contains("_INBOX") {
                // The replies' inbox: without it no request is ever answered.
                tracing::error!(
                    source,
                    error = %crate::primitives::quoted_prefix(&text),
                    "NATS refused the subscription to the reply inbox: every JetStream request of this source will time out; allow this user to subscribe to _INBOX.>"
                );
            } else {
                on_refused(crate::primitives::quoted_prefix(&text));
            }
        }
        Event::ServerError(e) => tracing::warn!(source, error = %e, "NATS server error"),
        Event::ClientError(e) => tracing::warn!(source, error = %e, "NATS client error"),
        Event::SlowConsumer(_) | Event::Draining | Event::Closed => {
            tracing::debug!(source, %event, "NATS connection event");
        }
    }
}
