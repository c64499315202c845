//! Which Redis servers a source reads, and how a batch of commands reaches them: one server
//! (`url`), the master (or a replica) that Sentinel names, or the primaries of a Redis Cluster.
//! The source plans its commands once; a topology only moves them and their replies, so every
//! measure works the same on all three.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::cluster::Cluster;
use super::config::RedisSourceConfig;
use super::connect::{Connector, NodeAddr, describe};
use super::reads::Batch;
use super::sentinel::Sentinel;
use super::wire::Wire;
use crate::sources::SourceError;

/// Keys `SCAN` asks for per call: large enough that a big keyspace takes few round trips,
/// small enough that one call never blocks the server noticeably.
const SCAN_COUNT: &str = "1000";

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

/// What a pattern's `SCAN` found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The keys of the pattern's type, on every node that answered.
    pub keys: BTreeSet<String>,
    /// Whether some node did not answer: its keys are not in `keys`.
    pub partial: bool,
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

/// Sends `packed` (`count` encoded commands) as one pipeline on `wire`, or on a connection
/// `connector` opens to `node` (the `url` for `None`) when there is none, and returns a reply
/// for each. The connection is handed back only when it can be used again.
///
/// # Errors
/// [`SourceError::Connect`] when no connection can be opened; [`SourceError::Io`] naming
/// `target` when the exchange fails.
pub(super) async fn send_batch(
    connector: &Connector,
    node: Option<&NodeAddr>,
    wire: Option<Wire>,
    packed: &[u8],
    count: usize,
    target: &str,
) -> (Option<Wire>, Result<Vec<Value>, SourceError>) {
    let mut wire = match wire {
        Some(w) => w,
        None => match connector.wire(node, target).await {
            Ok(w) => w,
            Err(e) => return (None, Err(e)),
        },
    };
    match wire.exchange(packed, count).await {
        Ok(replies) => (Some(wire), Ok(replies)),
        Err(message) => (
            None,
            Err(SourceError::Io {
                target: target.to_string(),
                message,
            }),
        ),
    }
}

/// `SCAN ... MATCH pattern TYPE ty` over one node's whole keyspace, each call within
/// `deadline` (a large keyspace takes many calls; a hung node misses the first).
///
/// # Errors
/// [`SourceError::Io`] or [`SourceError::Late`] when the node fails; `BadReply` beyond `limit`
/// keys.
pub(super) async fn scan_node(
    conn: &mut MultiplexedConnection,
    pattern: &str,
    ty: &str,
    limit: usize,
    target: &str,
    deadline: Duration,
) -> Result<BTreeSet<String>, SourceError> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let call = async {
            redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg(ty)
                .query_async::<(String, Vec<Vec<u8>>)>(&mut *conn)
                .await
                .map_err(|e| SourceError::Io {
                    target: target.to_string(),
                    message: format!("SCAN {pattern:?}: {}", describe(&e)),
                })
        };
        let (next, batch) = within(deadline, || target.to_string(), call).await?;
        keys.extend(
            batch
                .into_iter()
                .map(|k| String::from_utf8_lossy(&k).into_owned()),
        );
        if keys.len() > limit {
            return Err(too_many(pattern, ty, limit));
        }
        cursor = next;
        if cursor == "0" {
            return Ok(keys);
        }
    }
}

/// The error for a pattern that matches more keys than allowed.
pub(super) fn too_many(pattern: &str, ty: &str, limit: usize) -> SourceError {
    SourceError::BadReply {
        what: format!("pattern {pattern:?} matches more than {limit} {ty} keys; narrow it"),
    }
}

/// `op`, one node's part of a poll, within `deadline`: a node that hangs (stopped, behind a
/// partition that drops packets) costs the poll this deadline, not the whole poll. The error
/// names the node as `target` gives it. Whatever connection `op` held mid-exchange is dropped
/// with it, so a late reply is never read as the answer to a later command.
///
/// # Errors
/// `op`'s own, or [`SourceError::Late`].
pub(super) async fn within<T>(
    deadline: Duration,
    target: impl FnOnce() -> String,
    op: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    tokio::time::timeout(deadline, op)
        .await
        .unwrap_or_else(|_| {
            Err(SourceError::Late {
                target: target(),
                after: deadline,
            })
        })
}

/// A reply that stands for a command no node answered: the series reading it report `message`.
pub(super) fn error_reply(code: &str, message: &str) -> Value {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    redis::parse_redis_value(format!("-{code} {clean}\r\n").as_bytes())
        .unwrap_or_else(|_| Value::SimpleString(format!("{code} {clean}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_is_a_server_error_with_its_message() {
        let v = error_reply("UNREACHABLE", "node 10.0.0.3:7001: refused\r\nx");
        assert_eq!(
            super::super::reply::server_error(&v).as_deref(),
            Some("UNREACHABLE node 10.0.0.3:7001: refused  x")
        );
    }
}
