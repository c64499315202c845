//! AMQP 0-9-1 reads for brokers without the management plugin: a passive `queue.declare` per
//! queue gives its ready count and consumer count, and changes nothing. One connection per vhost,
//! reused across polls; a missing queue closes the channel with 404, so the channel is re-opened
//! and that series reports "queue not found". Never `basic.get`, never a consumer.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::primitives::Secret;

/// What a passive declare reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// Ready messages (unacknowledged ones are not counted over AMQP).
    pub ready: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// The outcome for one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclareOutcome {
    /// The queue exists.
    Found(Declared),
    /// 404: no such queue in that vhost.
    NotFound,
    /// Another channel-level refusal (405 exclusive to another connection, 403 access refused).
    Refused(String),
}

/// Connections to one broker, by vhost.
pub struct Amqp {
    uri: AMQPUri,
    password: Option<Secret>,
    username: Option<String>,
    ca_pem: Option<String>,
    name: String,
    connections: HashMap<String, Arc<Connection>>,
}

impl Amqp {
    /// A reader for `url`; connects lazily.
    ///
    /// # Errors
    /// When `url` is not an AMQP URI.
    pub fn new(
        url: &str,
        username: Option<&str>,
        password: Option<Secret>,
        ca_pem: Option<String>,
        name: &str,
    ) -> Result<Self, String> {
        let uri =
            AMQPUri::from_str(url).map_err(|e| format!("amqp_url is not an AMQP URI: {e}"))?;
        Ok(Amqp {
            uri,
            password,
            username: username.map(str::to_string),
            ca_pem,
            name: name.to_string(),
            connections: HashMap::new(),
        })
    }

    async fn connection(&mut self, vhost: &str) -> Result<Arc<Connection>, String> {
        if let Some(c) = self.connections.get(vhost)
            && c.status().connected()
        {
            return Ok(c.clone());
        }
        let mut uri = self.uri.clone();
        uri.vhost = vhost.to_string();
        if let Some(user) = &self.username {
            uri.authority.userinfo.username = user.clone();
        }
        if let Some(p) = &self.password {
            uri.authority.userinfo.password = p.expose().to_string();
        }
        // A deterministic connection name, so a broker operator can see who is connected.
        let props = ConnectionProperties::default()
            .with_connection_name(format!("queue-metrics-adapter/{}", self.name).into());
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: self.ca_pem.clone(),
        };
        let runtime =
            lapin::runtime::default_runtime().map_err(|e| format!("no async runtime: {e}"))?;
        let conn = Connection::connect_uri_with_config(uri, props, tls, runtime)
            .await
            .map_err(|e| {
                format!(
                    "cannot connect over AMQP to vhost {vhost:?}: {}",
                    self.redact(&e.to_string())
                )
            })?;
        let conn = Arc::new(conn);
        self.connections.insert(vhost.to_string(), conn.clone());
        Ok(conn)
    }

    fn redact(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "***"),
            _ => text.to_string(),
        }
    }

    /// Passively declares each of `queues` in `vhost`.
    ///
    /// # Errors
    /// When no connection or channel can be had; per-queue refusals are outcomes, not errors.
    pub async fn declare_all(
        &mut self,
        vhost: &str,
        queues: &[String],
    ) -> Result<Vec<DeclareOutcome>, String> {
        let conn = self.connection(vhost).await?;
        let mut channel: Option<Channel> = None;
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            let ch = match &channel {
                Some(c) if c.status().connected() => c.clone(),
                _ => {
                    let c = conn.create_channel().await.map_err(|e| {
                        self.connections.remove(vhost);
                        format!(
                            "cannot open an AMQP channel on vhost {vhost:?}: {}",
                            self.redact(&e.to_string())
                        )
                    })?;
                    channel = Some(c.clone());
                    c
                }
            };
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match ch
                .queue_declare(q.as_str().into(), options, FieldTable::default())
                .await
            {
                Ok(queue) => out.push(DeclareOutcome::Found(Declared {
                    ready: queue.message_count(),
                    consumers: queue.consumer_count(),
                })),
                Err(e) => {
                    let text = e.to_string();
                    // The broker closed this channel; the next queue gets a fresh one.
                    channel = None;
                    if text.contains("NOT_FOUND") || text.contains("404") {
                        out.push(DeclareOutcome::NotFound);
                    } else if !conn.status().connected() {
                        self.connections.remove(vhost);
                        return Err(format!(
                            "AMQP connection to vhost {vhost:?} lost: {}",
                            self.redact(&text)
                        ));
                    } else {
                        out.push(DeclareOutcome::Refused(self.redact(&text)));
                    }
                }
            }
        }
        if let Some(c) = channel {
            let _ = c.close(200, "done".into()).await;
        }
        Ok(out)
    }
}
