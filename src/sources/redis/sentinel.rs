//! A master found through Redis Sentinel, and a failover followed without serving a demoted
//! node's answers.
//!
//! The sentinels are asked for the master (`SENTINEL GET-MASTER-ADDR-BY-NAME`), in order, the
//! first that answers deciding; with `read_from: replica`, a replica they list as healthy and
//! linked to that master (`SENTINEL REPLICAS`) is read instead, or the master when there is none.
//! Every poll then checks what it read, two ways, at no extra latency:
//! - round one carries `ROLE`, so the node itself says it is the master (or a replica of the
//!   current master, link up) at the moment it answered; a demoted master says `slave`;
//! - the sentinel is asked again for the master concurrently with round one; if it names
//!   another node, a failover has happened (the old master may not know yet, in a partition).
//!
//! Either mismatch fails the poll (the API answers 503, never the old node's value), drops the
//! node connection, and the next poll asks the sentinels again. A sentinel that does not answer
//! within `sentinel.node_timeout` (a quarter of `poll_timeout` by default) is skipped for the
//! next in the list, so one that hangs rather than refusing costs a poll that deadline, not the
//! poll; when none answers the poll fails. redis-rs's own
//! `sentinel` feature picks a node once per connection and does not re-check it per poll, which
//! is the guarantee needed here, so it is not used.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::batch::Batch;
use super::config::{ReadFrom, SentinelConfig};
use super::connect::{Connector, NodeAddr, describe};
use super::node::{Scanned, scan_node, send_batch, within};
use super::reply;
use super::wire::Wire;
use crate::sources::source::SourceError;

/// A Sentinel-managed master and the node this source reads.
pub struct Sentinel {
    display: String,
    master_name: String,
    sentinels: Vec<NodeAddr>,
    /// The sentinel that answered last, asked first next time.
    current: usize,
    sentinel_conn: Option<MultiplexedConnection>,
    to_sentinels: Connector,
    /// How long one sentinel may take to connect or answer.
    sentinel_timeout: Duration,
    to_data: Connector,
    read_from: ReadFrom,
    /// The master when `node` was chosen.
    master: Option<NodeAddr>,
    /// The node read (the master, or a replica of it), and the connection for its scans.
    node: Option<(NodeAddr, MultiplexedConnection)>,
    /// The connection to that node that batches travel on.
    wire: Option<Wire>,
    /// Whether "no healthy replica, reading the master" has been logged for this choice.
    warned_no_replica: bool,
}

impl Sentinel {
    /// The topology for `config`; connects to nothing yet.
    ///
    /// # Errors
    /// [`SourceError::Config`] for an address without a port (validation refuses it first).
    pub fn new(
        config: &SentinelConfig,
        to_data: Connector,
        display: String,
        poll_timeout: Duration,
    ) -> Result<Self, SourceError> {
        let sentinels = NodeAddr::parse_all(&config.addresses)?;
        let to_sentinels = to_data.with_credentials(config.credentials.clone());
        Ok(Sentinel {
            display,
            master_name: config.master_name.clone(),
            sentinels,
            current: 0,
            sentinel_conn: None,
            to_sentinels,
            sentinel_timeout: super::config::node_timeout(config.node_timeout, poll_timeout),
            to_data,
            read_from: config.read_from,
            master: None,
            node: None,
            wire: None,
            warned_no_replica: false,
        })
    }

    /// The database keys are read in.
    pub fn db(&self) -> i64 {
        self.to_data.db()
    }

    /// The node read now, if one has been chosen.
    pub fn current(&self) -> Option<&NodeAddr> {
        self.node.as_ref().map(|(a, _)| a)
    }

    /// The connector to the data nodes.
    pub fn connector(&self) -> &Connector {
        &self.to_data
    }

    /// The node to read and its connection, asking the sentinels when there is none.
    ///
    /// # Errors
    /// When no sentinel answers, none knows the master, or the node cannot be reached.
    pub async fn node(&mut self) -> Result<(NodeAddr, MultiplexedConnection), SourceError> {
        if let Some(n) = &self.node {
            return Ok(n.clone());
        }
        let master = self.ask(master_query).await.and_then(|v| {
            master_addr(&v).map_err(|what| SourceError::BadReply {
                what: format!("sentinel about master {:?}: {what}", self.master_name),
            })
        })?;
        let addr = match self.read_from {
            ReadFrom::Master => master.clone(),
            ReadFrom::Replica => {
                let listed = self
                    .ask(|name| redis::cmd("SENTINEL").arg("REPLICAS").arg(name).clone())
                    .await?;
                match healthy_replicas(&listed, &master).into_iter().next() {
                    Some(r) => r,
                    None => {
                        if !self.warned_no_replica {
                            tracing::warn!(source = %self.display, master = %master, "no replica is healthy and linked to the master; reading the master until one is");
                            self.warned_no_replica = true;
                        }
                        master.clone()
                    }
                }
            }
        };
        let conn = self.to_data.connect(&addr, None).await?;
        tracing::info!(source = %self.display, master = %master, reading = %addr, "sentinel: reading this node");
        self.master = Some(master);
        self.node = Some((addr.clone(), conn.clone()));
        Ok((addr, conn))
    }

    /// Sends `cmd(master_name)` to the sentinels in turn, from the last one that answered;
    /// the first answer is returned.
    async fn ask(&mut self, cmd: impl Fn(&str) -> redis::Cmd) -> Result<Value, SourceError> {
        let mut failures = Vec::new();
        for step in 0..self.sentinels.len() {
            let at = (self.current + step) % self.sentinels.len();
            let addr = self.sentinels[at].clone();
            let conn = self.sentinel_conn.clone().filter(|_| step == 0);
            let query = cmd(&self.master_name);
            match self.query_sentinel(addr.clone(), conn, query).await {
                Ok((_, Value::ServerError(e))) => {
                    failures.push(format!(
                        "{addr}: {} {}",
                        e.code(),
                        e.details().unwrap_or("")
                    ));
                }
                Ok((conn, v)) if v != Value::Nil => {
                    self.current = at;
                    self.sentinel_conn = Some(conn);
                    return Ok(v);
                }
                Ok(_) => failures.push(format!(
                    "{addr} does not monitor a master named {:?}",
                    self.master_name
                )),
                Err(e) => failures.push(e.to_string()),
            }
            self.sentinel_conn = None;
        }
        Err(SourceError::Connect {
            target: self.display.clone(),
            message: format!("no sentinel answered: {}", failures.join("; ")),
        })
    }

    /// `query` on the sentinel at `addr` (on `conn`, or a new connection), connecting and
    /// answering within the sentinel deadline.
    fn query_sentinel(
        &self,
        addr: NodeAddr,
        conn: Option<MultiplexedConnection>,
        query: redis::Cmd,
    ) -> impl Future<Output = Result<(MultiplexedConnection, Value), SourceError>> + use<> {
        let connector = self.to_sentinels.clone();
        let target = format!("sentinel {addr}");
        let op = async move {
            let mut conn = match conn {
                Some(c) => c,
                None => connector.connect(&addr, None).await?,
            };
            let v = query
                .query_async::<Value>(&mut conn)
                .await
                .map_err(|e| SourceError::Io {
                    target: addr.to_string(),
                    message: describe(&e),
                })?;
            Ok((conn, v))
        };
        within(self.sentinel_timeout, move || target, op)
    }

    /// Runs `batch` on the node; with `role_at`, also checks the node's `ROLE` and, at the
    /// same time, the sentinel's current master.
    ///
    /// # Errors
    /// When the node fails, or it is no longer the one to read.
    pub async fn run(
        &mut self,
        batch: &Batch,
        role_at: Option<usize>,
    ) -> Result<Vec<Value>, SourceError> {
        let (addr, _) = self.node().await?;
        let target = addr.to_string();
        let wire = self.wire.take();
        // The sentinel last asked (connected again if its connection was dropped), within its
        // own deadline: one that hangs is passed over, not waited for.
        let sentinel = role_at.map(|_| {
            let at = self.current % self.sentinels.len();
            let addr = self.sentinels[at].clone();
            let conn = self.sentinel_conn.clone();
            self.query_sentinel(addr, conn, master_query(&self.master_name))
        });
        let ((wire, replies), current) = tokio::join!(
            send_batch(
                &self.to_data,
                Some(&addr),
                wire,
                batch.packed(),
                batch.len(),
                &target
            ),
            async {
                match sentinel {
                    Some(asked) => Some(asked.await),
                    None => None,
                }
            }
        );
        let current = current.map(|answer| {
            answer.map(|(conn, v)| {
                self.sentinel_conn = Some(conn);
                v
            })
        });
        let replies = match replies {
            Ok(r) => r,
            Err(e) => {
                self.forget_node();
                return Err(e);
            }
        };
        self.wire = wire;
        let Some(role_at) = role_at else {
            return Ok(replies);
        };
        let master = self.master.clone().unwrap_or_else(|| addr.clone());
        match current.map(|r| r.map(|v| master_addr(&v))) {
            Some(Ok(Ok(now))) if now != master => {
                self.forget_node();
                return Err(SourceError::Refused {
                    target: self.display.clone(),
                    message: format!(
                        "failover: the sentinels name {now} as master {:?}, no longer {master}; asking them again",
                        self.master_name
                    ),
                });
            }
            Some(Ok(Ok(_))) => {}
            // The sentinel did not answer: ROLE still vouches for the node; try the next
            // sentinel next time.
            Some(_) => {
                self.sentinel_conn = None;
                self.current = (self.current + 1) % self.sentinels.len();
            }
            None => {}
        }
        let role = replies.get(role_at).map(role_of);
        let fits = match (&role, self.read_from, addr == master) {
            (Some(Ok(Role::Master)), _, true) => true,
            (Some(Ok(Role::Replica { master: m, linked })), ReadFrom::Replica, false) => {
                *linked && *m == master
            }
            _ => false,
        };
        if !fits {
            let said = match role {
                Some(Ok(r)) => format!("{r:?}"),
                Some(Err(e)) => e,
                None => "nothing".into(),
            };
            self.forget_node();
            return Err(SourceError::Refused {
                target: target.clone(),
                message: format!(
                    "node {target} is not the node to read for master {:?} (its ROLE: {said}); asking the sentinels again",
                    self.master_name
                ),
            });
        }
        Ok(replies)
    }

    /// `SCAN` on the node read.
    ///
    /// # Errors
    /// When it cannot be reached or the pattern matches too many keys.
    pub async fn scan(
        &mut self,
        pattern: &str,
        ty: &str,
        limit: usize,
    ) -> Result<Scanned, SourceError> {
        let (addr, mut conn) = self.node().await?;
        let deadline = self.to_data.timeout();
        let keys: Result<BTreeSet<String>, SourceError> =
            scan_node(&mut conn, pattern, ty, limit, &addr.to_string(), deadline).await;
        if matches!(keys, Err(SourceError::Io { .. })) {
            self.forget_node();
        }
        Ok(Scanned {
            keys: keys?,
            partial: false,
        })
    }

    /// Forgets the node and the sentinel connection: the next poll asks the sentinels again.
    pub fn reset(&mut self) {
        self.forget_node();
        self.sentinel_conn = None;
    }

    fn forget_node(&mut self) {
        self.node = None;
        self.wire = None;
        self.master = None;
        self.warned_no_replica = false;
    }
}

fn master_query(name: &str) -> redis::Cmd {
    redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(name)
        .clone()
}

/// The `[host, port]` of `GET-MASTER-ADDR-BY-NAME`.
fn master_addr(v: &Value) -> Result<NodeAddr, String> {
    let items = reply::array(v)?;
    let (Some(host), Some(port)) = (items.first(), items.get(1)) else {
        return Err(format!("expected [host, port], got {} items", items.len()));
    };
    let host = reply::text(host)?.unwrap_or_default();
    let port = reply::int(port)?;
    let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
    if host.is_empty() {
        return Err("the master's host is empty".into());
    }
    Ok(NodeAddr { host, port })
}

/// The replicas in a `SENTINEL REPLICAS` reply that the sentinel sees up and linked to
/// `master`, in a stable order.
fn healthy_replicas(v: &Value, master: &NodeAddr) -> Vec<NodeAddr> {
    let Ok(entries) = reply::array(v) else {
        return Vec::new();
    };
    let mut healthy: Vec<NodeAddr> = entries
        .iter()
        .filter_map(|e| {
            let fields = reply::pairs(e).ok()?;
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| reply::text(v).ok().flatten())
            };
            let flags = field("flags")?;
            let down = flags
                .split(',')
                .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"));
            let linked = field("master-link-status").as_deref() == Some("ok");
            let of_master = field("master-host").as_deref() == Some(master.host.as_str())
                && field("master-port").and_then(|p| p.parse::<u16>().ok()) == Some(master.port);
            if down || !linked || !of_master {
                return None;
            }
            Some(NodeAddr {
                host: field("ip")?,
                port: field("port")?.parse().ok()?,
            })
        })
        .collect();
    healthy.sort();
    healthy
}

/// What a node's `ROLE` said.
#[derive(Debug, PartialEq)]
enum Role {
    Master,
    Replica { master: NodeAddr, linked: bool },
    Other(String),
}

fn role_of(v: &Value) -> Result<Role, String> {
    if let Some(e) = reply::server_error(v) {
        return Err(format!("ROLE failed: {e}"));
    }
    let items = reply::array(v)?;
    let kind = reply::text_at(items, 0)?.unwrap_or_default();
    Ok(match kind.as_str() {
        "master" => Role::Master,
        "slave" | "replica" => {
            let host = reply::text_at(items, 1)?;
            let port = reply::int_at(items, 2)?;
            let state = reply::text_at(items, 3)?;
            Role::Replica {
                master: NodeAddr {
                    host: host.unwrap_or_default(),
                    port: port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                },
                linked: state.as_deref() == Some("connected"),
            }
        }
        other => Role::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn role_replies_are_read() {
        let master = Value::Array(vec![bulk("master"), Value::Int(10), Value::Array(vec![])]);
        assert_eq!(role_of(&master).unwrap(), Role::Master);
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("10.0.0.1"),
            Value::Int(6379),
            bulk("connected"),
            Value::Int(10),
        ]);
        assert_eq!(
            role_of(&replica).unwrap(),
            Role::Replica {
                master: NodeAddr {
                    host: "10.0.0.1".into(),
                    port: 6379
                },
                linked: true
            }
        );
        let syncing = Value::Array(vec![
            bulk("slave"),
            bulk("10.0.0.1"),
            Value::Int(6379),
            bulk("sync"),
            Value::Int(-1),
        ]);
        assert!(matches!(
            role_of(&syncing).unwrap(),
            Role::Replica { linked: false, .. }
        ));
        assert!(role_of(&Value::Int(3)).is_err());
    }

    #[test]
    fn only_up_linked_replicas_of_the_master_are_chosen() {
        let master = NodeAddr {
            host: "10.0.0.1".into(),
            port: 6379,
        };
        let replica = |ip: &str, flags: &str, link: &str, of: &str| {
            Value::Array(
                [
                    ("ip", ip),
                    ("port", "6380"),
                    ("flags", flags),
                    ("master-link-status", link),
                    ("master-host", of),
                    ("master-port", "6379"),
                ]
                .iter()
                .flat_map(|(k, v)| [bulk(k), bulk(v)])
                .collect(),
            )
        };
        let listed = Value::Array(vec![
            replica("10.0.0.9", "slave", "ok", "10.0.0.1"),
            replica("10.0.0.2", "slave", "ok", "10.0.0.1"),
            replica("10.0.0.3", "slave,s_down", "ok", "10.0.0.1"),
            replica("10.0.0.4", "slave", "err", "10.0.0.1"),
            replica("10.0.0.5", "slave", "ok", "10.0.0.7"),
        ]);
        let got: Vec<String> = healthy_replicas(&listed, &master)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.2:6380", "10.0.0.9:6380"]);
    }

    #[test]
    fn a_master_address_reply_is_read_or_refused() {
        let ok = Value::Array(vec![bulk("10.0.0.1"), bulk("6379")]);
        assert_eq!(master_addr(&ok).unwrap().to_string(), "10.0.0.1:6379");
        assert!(master_addr(&Value::Array(vec![bulk("h")])).is_err());
        assert!(master_addr(&Value::Array(vec![bulk("h"), bulk("99999")])).is_err());
    }
}
