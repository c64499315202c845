//! Which Redis servers a source reads, and how a batch of commands reaches them: one server
//! (`url`), the master (or a replica) that Sentinel names, or the primaries of a Redis Cluster.
//! The source plans its commands once; a topology only moves them and their replies, so every
//! measure works the same on all three.

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::batch::Batch;
use super::cluster::Cluster;
use super::config::RedisSourceConfig;
use super::connect::Connector;
use super::node::{Scanned, scan_node, send_batch};
use super::sentinel::Sentinel;
use super::wire::Wire;
use crate::sources::source::SourceError;

/// The servers of one source.
#[allow(clippy::large_enum_variant)] // one per source, never moved in a hot path
pub enum Topology {
    /// One server, from `url`.
    Single(Single),
    /// A Sentinel-managed master or its replica.
    Sentinel(Sentinel),
    /// A Redis Cluster's primaries.
    Cluster(Cluster),
}

/// A node a tracking connection watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchTarget {
    /// The server of a `url` source.
    Url,
    /// A node a topology found.
    Node(super::connect::NodeAddr),
}

impl std::fmt::Display for WatchTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchTarget::Url => f.write_str("the server"),
            WatchTarget::Node(a) => write!(f, "{a}"),
        }
    }
}

impl Topology {
    /// The topology `conn` describes. Connects to nothing yet.
    ///
    /// # Errors
    /// [`SourceError::Config`] when an address, URL or CA file cannot be used.
    pub fn new(
        conn: &RedisSourceConfig,
        timeout: std::time::Duration,
    ) -> Result<Self, SourceError> {
        let data = Connector::for_data(conn, timeout)?;
        Ok(match (&conn.sentinel, &conn.cluster) {
            (Some(s), _) => Topology::Sentinel(Sentinel::new(s, data, conn.display(), timeout)?),
            (None, Some(c)) => Topology::Cluster(Cluster::new(c, data, conn.display(), timeout)?),
            (None, None) => Topology::Single(Single {
                display: conn.display(),
                connector: data,
                conn: None,
                wire: None,
            }),
        })
    }

    /// The database keys are read in.
    pub fn db(&self) -> i64 {
        match self {
            Topology::Single(s) => s.connector.db(),
            Topology::Sentinel(s) => s.db(),
            Topology::Cluster(_) => 0,
        }
    }

    /// Whether round one must carry `ROLE`, so that the answers are known to come from the
    /// node this topology meant to read (Sentinel: the master, or a replica of it).
    pub fn checks_role(&self) -> bool {
        matches!(self, Topology::Sentinel(_))
    }

    /// Sends `batch` and returns one reply per command, in order. A per-command error is a
    /// reply (`Value::ServerError`); `Err` means no reply can be trusted. `role_at` is where
    /// round one's `ROLE` is, when [`Topology::checks_role`].
    ///
    /// # Errors
    /// When the server cannot be reached, the reply stream breaks, or (Sentinel) the node
    /// answering is no longer the one to read.
    pub async fn run(
        &mut self,
        batch: &Batch,
        role_at: Option<usize>,
    ) -> Result<Vec<Value>, SourceError> {
        match self {
            Topology::Single(s) => {
                let (wire, outcome) = send_batch(
                    &s.connector,
                    None,
                    s.wire.take(),
                    batch.packed(),
                    batch.len(),
                    &s.display,
                )
                .await;
                s.wire = wire;
                outcome
            }
            Topology::Sentinel(s) => s.run(batch, role_at).await,
            Topology::Cluster(c) => c.run(batch).await,
        }
    }

    /// The keys of type `ty` matching `pattern`, by `SCAN` (on every primary of a cluster).
    ///
    /// # Errors
    /// When no node answers, or the pattern matches more than `limit` keys.
    pub async fn scan(
        &mut self,
        pattern: &str,
        ty: &str,
        limit: usize,
    ) -> Result<Scanned, SourceError> {
        match self {
            Topology::Single(s) => {
                let mut conn = s.connection().await?;
                let deadline = s.connector.timeout();
                let keys = scan_node(&mut conn, pattern, ty, limit, &s.display, deadline).await;
                if matches!(keys, Err(SourceError::Io { .. })) {
                    s.conn = None;
                }
                Ok(Scanned {
                    keys: keys?,
                    partial: false,
                })
            }
            Topology::Sentinel(s) => s.scan(pattern, ty, limit).await,
            Topology::Cluster(c) => c.scan(pattern, ty, limit).await,
        }
    }

    /// The one node a discovery scans and a connection to it that can be moved into a task
    /// (a clone of the multiplexed connection the polls use), or `None` for a cluster, whose
    /// scan spans every primary and keeps what a node that did not answer held.
    ///
    /// # Errors
    /// When the server (or the Sentinel's master) cannot be reached.
    pub async fn scan_connection(
        &mut self,
    ) -> Result<Option<(String, MultiplexedConnection)>, SourceError> {
        match self {
            Topology::Single(s) => Ok(Some((s.display.clone(), s.connection().await?))),
            Topology::Sentinel(s) => {
                let (addr, conn) = s.node().await?;
                Ok(Some((addr.to_string(), conn)))
            }
            Topology::Cluster(_) => Ok(None),
        }
    }

    /// Whether `key`, missing from a partial scan, lives on a node that did not answer it (so
    /// it is kept as the last discovery found it).
    pub fn unscanned(&self, key: &str) -> bool {
        match self {
            Topology::Cluster(c) => c.owner_unreachable(key),
            _ => false,
        }
    }

    /// Drops every connection (and the Sentinel's choice of node, and the slot map's
    /// freshness), after a poll that failed as a whole.
    pub fn reset(&mut self) {
        match self {
            Topology::Single(s) => {
                s.conn = None;
                s.wire = None;
            }
            Topology::Sentinel(s) => s.reset(),
            Topology::Cluster(c) => c.reset(),
        }
    }

    /// The nodes that failed during this poll (a cluster's): their tracking connections are
    /// treated as lost, since a hung node never closes them.
    pub fn failed_nodes(&self) -> Vec<WatchTarget> {
        match self {
            Topology::Cluster(c) => c
                .failed_nodes()
                .into_iter()
                .map(WatchTarget::Node)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// How long one node may take for one step (a connect, an answer): a cluster node's
    /// deadline, else the poll's timeout (one node is all there is to wait for).
    pub fn node_deadline(&self) -> std::time::Duration {
        match self {
            Topology::Single(s) => s.connector.timeout(),
            Topology::Sentinel(s) => s.connector().timeout(),
            Topology::Cluster(c) => c.node_timeout(),
        }
    }

    /// The nodes whose key changes this topology's reads depend on: the server, the node a
    /// Sentinel names (once chosen), or every primary of a cluster.
    pub fn watch_targets(&self) -> Vec<WatchTarget> {
        match self {
            Topology::Single(_) => vec![WatchTarget::Url],
            Topology::Sentinel(s) => s
                .current()
                .cloned()
                .map(WatchTarget::Node)
                .into_iter()
                .collect(),
            Topology::Cluster(c) => c.primaries().into_iter().map(WatchTarget::Node).collect(),
        }
    }

    /// A connection to `target` (RESP3) whose push messages go to `push`.
    ///
    /// # Errors
    /// When it cannot be made.
    pub async fn connect_watch(
        &self,
        target: &WatchTarget,
        push: impl Fn(redis::PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static,
    ) -> Result<MultiplexedConnection, SourceError> {
        let push: super::connect::PushHandler = std::sync::Arc::new(move |p| {
            let _ = push(p);
        });
        match (self, target) {
            (Topology::Single(s), _) => s.connector.connect_url(&s.display, Some(push)).await,
            (Topology::Sentinel(s), WatchTarget::Node(addr)) => {
                s.connector().connect(addr, Some(push)).await
            }
            (Topology::Cluster(c), WatchTarget::Node(addr)) => {
                c.connector().connect(addr, Some(push)).await
            }
            (_, WatchTarget::Url) => Err(SourceError::Config {
                message: "this Redis source has no url".into(),
            }),
        }
    }

    /// Connects (or finds the master, or learns the slot map) before the first command, so a
    /// poll fails early and whole when nothing is reachable. (The connection batches travel on
    /// is opened by the first batch.)
    ///
    /// # Errors
    /// When no server can be reached.
    pub async fn prepare(&mut self) -> Result<(), SourceError> {
        match self {
            Topology::Single(s) => s.connection().await.map(drop),
            Topology::Sentinel(s) => s.node().await.map(drop),
            Topology::Cluster(c) => {
                c.begin_poll();
                c.prepare().await
            }
        }
    }
}

/// One server.
pub struct Single {
    display: String,
    connector: Connector,
    /// For scans (and the discovery task's clone of it).
    conn: Option<MultiplexedConnection>,
    /// For batches.
    wire: Option<Wire>,
}

impl Single {
    async fn connection(&mut self) -> Result<MultiplexedConnection, SourceError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let conn = self.connector.connect_url(&self.display, None).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }
}
