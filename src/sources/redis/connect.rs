//! Opening connections to Redis servers: the one a `url` names, and the nodes and sentinels a
//! topology finds (`host:port` pairs, with the source's credentials and TLS).
//!
//! Each connection reads its password afresh: a `password_file` is read on every (re)connect, so
//! a short-lived token that a sidecar rewrites (ElastiCache IAM tokens last 15 minutes, Entra ID
//! tokens about an hour) is used by the next connection without a restart.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::config::{RedisSourceConfig, redact_url};
use super::wire::{Endpoint, Login, Wire};
use crate::primitives::Secret;
use crate::sources::credentials::Credentials;
use crate::sources::source::SourceError;

/// A node's address as a topology reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl NodeAddr {
    /// The addresses of a `sentinel.addresses` or `cluster.nodes` list.
    ///
    /// # Errors
    /// [`SourceError::Config`] for one without a port (validation refuses it first).
    pub fn parse_all(list: &[String]) -> Result<Vec<NodeAddr>, SourceError> {
        list.iter()
            .map(|a| {
                super::config::host_port(a)
                    .map(|(host, port)| NodeAddr { host, port })
                    .map_err(|message| SourceError::Config { message })
            })
            .collect()
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What receives a connection's push messages (RESP3), such as key invalidations.
pub type PushHandler = std::sync::Arc<dyn Fn(redis::PushInfo) + Send + Sync>;

/// Opens connections with one set of credentials and TLS settings.
#[derive(Clone)]
pub struct Connector {
    /// For `url` sources: the URL's connection info (host, scheme, its own db and password).
    base: Option<ConnectionInfo>,
    tls: bool,
    root_cert: Option<Vec<u8>>,
    credentials: Credentials,
    db: Option<i64>,
    timeout: Duration,
    /// The TLS client settings the poll's own connections use (the crate builds its own for
    /// the rest), made once: the `ca_file`'s roots, or the system's as the crate does.
    wire_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connector {
    /// The connector for the data nodes of `conn` (its `url`, or the nodes a topology finds).
    ///
    /// # Errors
    /// [`SourceError::Config`] when the URL or the CA file cannot be used.
    pub fn for_data(conn: &RedisSourceConfig, timeout: Duration) -> Result<Self, SourceError> {
        let base = match &conn.url {
            Some(url) => {
                Some(
                    url.as_str()
                        .into_connection_info()
                        .map_err(|e| SourceError::Config {
                            message: format!("redis url {}: {e}", redact_url(url)),
                        })?,
                )
            }
            None => None,
        };
        let tls = conn.tls
            || conn
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"));
        let root_cert = conn
            .ca_file
            .as_deref()
            .map(crate::sources::http::read_ca_file)
            .transpose()?;
        // Made again at each connect when it fails here, so the error reaches the poll.
        let wire_tls = tls
            .then(|| tls_config(root_cert.as_deref()).ok().map(Arc::new))
            .flatten();
        Ok(Connector {
            base,
            tls,
            root_cert,
            wire_tls,
            credentials: conn.credentials.clone(),
            db: conn.db,
            timeout,
        })
    }

    /// The password now (a `password_file` is read afresh at every connect).
    fn password(&self) -> Result<Option<Secret>, SourceError> {
        self.credentials
            .current_password()
            .map_err(|e| SourceError::Config {
                message: e.to_string(),
            })
    }

    /// The same TLS settings with other credentials and no database (the sentinels).
    pub fn with_credentials(&self, credentials: Credentials) -> Self {
        Connector {
            base: None,
            credentials,
            db: None,
            ..self.clone()
        }
    }

    /// How long a connect or an answer may take on connections this connector opens.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The database the keys are read in.
    pub fn db(&self) -> i64 {
        self.db
            .or_else(|| self.base.as_ref().map(|b| b.redis_settings().db()))
            .unwrap_or(0)
    }

    /// Connects to the `url` this connector was made for; errors name `target` (the URL,
    /// redacted). With `push`, the connection speaks RESP3 and hands push messages to it.
    ///
    /// # Errors
    /// [`SourceError::Connect`] naming the redacted URL.
    pub async fn connect_url(
        &self,
        target: &str,
        push: Option<PushHandler>,
    ) -> Result<MultiplexedConnection, SourceError> {
        let info = self.base.clone().ok_or_else(|| SourceError::Config {
            message: "this Redis source has no url".into(),
        })?;
        self.open(info, target, push).await
    }

    /// Connects to `addr`; with `push`, over RESP3 with push messages handed to it.
    ///
    /// # Errors
    /// [`SourceError::Connect`] naming the address.
    pub async fn connect(
        &self,
        addr: &NodeAddr,
        push: Option<PushHandler>,
    ) -> Result<MultiplexedConnection, SourceError> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let info = format!("{scheme}://{addr}")
            .as_str()
            .into_connection_info()
            .map_err(|e| SourceError::Config {
                message: format!("redis node {addr}: {e}"),
            })?;
        self.open(info, &addr.to_string(), push).await
    }

    /// Opens the poll's own connection ([`Wire`]) to `node`, or to the `url` for `None`, with
    /// the same address, TLS, credentials, database and protocol as [`Connector::connect`] and
    /// [`Connector::connect_url`] use.
    ///
    /// # Errors
    /// [`SourceError::Connect`] naming `target`; [`SourceError::Config`] for what the crate
    /// would refuse too (a TLS URL asking not to verify the host name).
    pub async fn wire(&self, node: Option<&NodeAddr>, target: &str) -> Result<Wire, SourceError> {
        let url_settings = self.base.as_ref().map(|b| b.redis_settings());
        let (host, port, tls) = match (node, &self.base) {
            (Some(n), _) => (n.host.as_str(), n.port, self.tls),
            (None, Some(base)) => match base.addr() {
                ConnectionAddr::Tcp(host, port) => (host.as_str(), *port, false),
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure,
                    ..
                } => {
                    if *insecure {
                        return Err(SourceError::Config {
                            message: format!(
                                "redis {target}: a TLS connection that does not verify the server is not supported"
                            ),
                        });
                    }
                    (host.as_str(), *port, true)
                }
                other => {
                    return Err(SourceError::Config {
                        message: format!("redis {target}: unsupported address {other}"),
                    });
                }
            },
            (None, None) => {
                return Err(SourceError::Config {
                    message: "this Redis source has no url".into(),
                });
            }
        };
        let url = url_settings.filter(|_| node.is_none());
        let login = Login {
            username: self
                .credentials
                .username
                .clone()
                .or_else(|| url.and_then(|u| u.username()).map(str::to_string)),
            password: self.password()?.or_else(|| {
                url.and_then(|u| u.password())
                    .map(|p| Secret::new(p.to_string()))
            }),
            db: self.db.or(url.map(|u| u.db())).unwrap_or(0),
            resp3: url.is_some_and(|u| u.protocol().supports_resp3()),
        };
        let tls = match (tls, &self.wire_tls) {
            (false, _) => None,
            (true, Some(config)) => Some(config.clone()),
            (true, None) => Some(Arc::new(tls_config(self.root_cert.as_deref())?)),
        };
        let endpoint = Endpoint { host, port, tls };
        Wire::open(endpoint, &login, self.timeout, target).await
    }

    async fn open(
        &self,
        mut info: ConnectionInfo,
        target: &str,
        push: Option<PushHandler>,
    ) -> Result<MultiplexedConnection, SourceError> {
        let mut settings = info.redis_settings().clone();
        if push.is_some() {
            settings = settings.set_protocol(redis::ProtocolVersion::RESP3);
        }
        if let Some(db) = self.db {
            settings = settings.set_db(db);
        }
        if let Some(user) = &self.credentials.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = self.password()? {
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
        let bad = |e: redis::RedisError| SourceError::Config {
            message: format!("redis {target}: {e}"),
        };
        let client = match (&self.root_cert, self.tls) {
            (Some(ca), true) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )
            .map_err(bad)?,
            _ => Client::open(info).map_err(bad)?,
        };
        let mut cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        if let Some(handler) = push {
            cfg = cfg.set_push_sender(move |p: redis::PushInfo| {
                handler(p);
                Ok::<(), std::convert::Infallible>(())
            });
        }
        client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| SourceError::Connect {
                target: target.to_string(),
                message: describe(&e),
            })
    }
}

/// The TLS client settings for the poll's connections: trusting only the `ca_file`'s
/// certificates when there is one, else the system's roots, as the `redis` crate does.
fn tls_config(root_cert: Option<&[u8]>) -> Result<rustls::ClientConfig, SourceError> {
    crate::tls::client_config(root_cert).map_err(|message| SourceError::Config { message })
}

/// A Redis client error as text with no URL (and so no password) in it.
pub fn describe(e: &redis::RedisError) -> String {
    let text = e.to_string();
    if e.is_timeout() {
        format!("timed out: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_address_is_written_in_brackets() {
        let v6 = NodeAddr {
            host: "::1".into(),
            port: 7000,
        };
        assert_eq!(v6.to_string(), "[::1]:7000");
        let v4 = NodeAddr {
            host: "10.0.0.1".into(),
            port: 6379,
        };
        assert_eq!(v4.to_string(), "10.0.0.1:6379");
    }

    #[test]
    fn the_password_file_is_read_at_every_connect() {
        let dir = std::env::temp_dir().join(format!("qma-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "first\n").unwrap();
        let creds = Credentials {
            password_file: Some(file.clone()),
            ..Credentials::default()
        };
        let current = |c: &Credentials| c.current_password().unwrap().unwrap();
        assert_eq!(current(&creds).expose(), "first");
        std::fs::write(&file, "second").unwrap();
        assert_eq!(current(&creds).expose(), "second");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
