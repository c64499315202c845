//! Connecting to PostgreSQL as a reader that cannot write: every session the adapter opens has
//! `default_transaction_read_only` on (a statement that would change a row fails), a
//! `statement_timeout`, a `lock_timeout` (a poll never sits in a lock queue behind a
//! migration's `ACCESS EXCLUSIVE`, holding up the workers queued behind it) and an
//! `idle_in_transaction_session_timeout`, all set in the startup packet, so they hold from the
//! first statement. `application_name` is `queue-metrics-adapter`, so that `pg_stat_activity`
//! says who reads.

use std::time::Duration;

use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::{Endpoint, PostgresSourceConfig, SslMode};
use crate::sources::source::SourceError;

/// What `pg_stat_activity.application_name` shows for the adapter's sessions.
pub const APPLICATION_NAME: &str = "queue-metrics-adapter";

/// A connection's driving half, as the TLS connector makes it.
pub type Connection = tokio_postgres::Connection<
    Socket,
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<Socket>>::Stream,
>;

/// The server's settings the adapter's sessions start with: read-only, bounded statements and
/// lock waits (`statement` is the statement timeout), literals as written (a backslash in a
/// described table's value is itself), and UTC, the zone a `timestamp without time zone`
/// column of a job library or a described table (`time_zone: UTC`) holds.
pub fn session_options(statement: Duration) -> String {
    let ms = statement.as_millis().max(1);
    let lock_ms = (ms / 4).max(1);
    format!(
        "-c default_transaction_read_only=on -c statement_timeout={ms} -c lock_timeout={lock_ms} -c idle_in_transaction_session_timeout={ms} -c standard_conforming_strings=on -c TimeZone=UTC"
    )
}

/// Opens one session to `conn` (`endpoint` is its address): the client, and the connection
/// for the caller to drive. Bounded by `timeout`.
///
/// # Errors
/// [`SourceError::Config`] for an unreadable `ca_file` or password file,
/// [`SourceError::Connect`] when the server cannot be reached, refuses the login or the TLS
/// handshake fails.
pub async fn open(
    conn: &PostgresSourceConfig,
    endpoint: &Endpoint,
    statement: Duration,
    timeout: Duration,
) -> Result<(tokio_postgres::Client, Connection), SourceError> {
    let target = endpoint.to_string();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&endpoint.host)
        .port(endpoint.port)
        .dbname(&endpoint.dbname)
        .application_name(APPLICATION_NAME)
        .options(session_options(statement))
        .connect_timeout(timeout)
        .ssl_mode(match endpoint.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
    if let Some(user) = &endpoint.user {
        config.user(user);
    }
    let password = conn
        .credentials
        .current_password()
        .map_err(|e| SourceError::Config {
            message: e.to_string(),
        })?;
    if let Some(p) = &password {
        config.password(p.expose());
    }
    let tls = match endpoint.sslmode {
        SslMode::Disable => {
            crate::tls::ensure_crypto_provider();
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
        _ => {
            let pem = match &conn.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| SourceError::Config {
                    message: format!("ca_file {}: {e}", path.display()),
                })?),
                None => None,
            };
            crate::tls::client_config(pem.as_deref())
                .map_err(|message| SourceError::Config { message })?
        }
    };
    match tokio::time::timeout(timeout, config.connect(MakeRustlsConnect::new(tls))).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(SourceError::Connect {
            target,
            message: describe(&e),
        }),
        Err(_) => Err(SourceError::Connect {
            target,
            message: format!("no session within {timeout:?}"),
        }),
    }
}

/// A client error as text: the server's message with its SQLSTATE, else the client's own.
/// Never holds a password (the client does not echo its configuration).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} (SQLSTATE {}{})",
            db.message(),
            db.code().code(),
            db.hint().map(|h| format!("; {h}")).unwrap_or_default()
        ),
        None => {
            let text = e.to_string();
            match std::error::Error::source(e) {
                Some(cause) if !text.contains(&cause.to_string()) => format!("{text}: {cause}"),
                _ => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_read_only_with_bounded_statements_and_lock_waits() {
        let o = session_options(Duration::from_secs(2));
        assert!(o.contains("default_transaction_read_only=on"), "{o}");
        assert!(o.contains("statement_timeout=2000"), "{o}");
        assert!(o.contains("lock_timeout=500"), "{o}");
    }
}
