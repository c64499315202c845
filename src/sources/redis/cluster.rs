//! A Redis Cluster's primaries, and a batch split over them: one pipeline per node, all sent at
//! once, so a poll is one round trip per node (the slowest node sets its time).
//!
//! The slot map comes from `CLUSTER SLOTS` on any node that answers (the known primaries
//! first, then the seeds), at start, after a node failed or redirected a command, and every
//! [`REFRESH_EVERY`]. Each command goes to the primary owning its key's hash slot (CRC16 of the
//! key, or of its `{hash tag}`); `TIME` goes to every node and the latest clock is used, so an
//! age measured on any node is never negative by clock skew. A `MOVED` reply (a slot that moved
//! for good) updates the map and resends the command there; an `ASK` reply (a slot being
//! migrated) resends it once with `ASKING` to the importing node; both within the same poll,
//! at most [`MAX_REDIRECTS`] times. A node that cannot be reached fails only the commands
//! routed to it: their series report the node, the others are served.
//!
//! redis-rs's `cluster-async` connection routes a pipeline by its first key and fails it whole
//! when one node fails, so it is not used.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::config::{ClusterConfig, host_port};
use super::connect::{Connector, NodeAddr, describe};
use super::reads::Batch;
use super::reply;
use super::topology::{Scanned, error_reply, scan_node, send_batch, too_many};
use super::wire::{self, Wire};
use crate::sources::SourceError;

/// Hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;
/// How often the slot map is re-read even when nothing redirected.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Redirections followed for one command in one poll.
pub const MAX_REDIRECTS: usize = 3;
/// A slot that no node serves, in the slot map.
const UNASSIGNED: u16 = u16::MAX;

/// The cluster, its slot map and a connection per primary.
pub struct Cluster {
    display: String,
    seeds: Vec<NodeAddr>,
    connector: Connector,
    /// The primaries the slot map names; slot owners index into it.
    nodes: Vec<NodeAddr>,
    /// The primary of every slot (`UNASSIGNED` for none).
    slots: Vec<u16>,
    /// Per primary, the connection for the slot map and scans.
    conns: HashMap<NodeAddr, MultiplexedConnection>,
    /// Per primary, the connection batches travel on (taken out while a batch is on it).
    wires: HashMap<NodeAddr, Wire>,
    /// Nodes that failed at the last poll (their keys stay discovered).
    unreachable: BTreeSet<usize>,
    refreshed_at: Option<Instant>,
    refresh_due: bool,
    /// Changes with every new slot map, so a kept split is known to be stale.
    epoch: u64,
    /// The per-node split of the last batch with an id seen twice (the round-one batch).
    split: Option<(u64, u64, Arc<Split>)>,
}

/// One batch split over the nodes.
struct Split {
    /// Per node: its commands, encoded, and which batch commands they are, in order.
    groups: Vec<Group>,
    /// Commands no node serves (their slot is unassigned).
    orphans: Vec<usize>,
}

#[derive(Clone)]
struct Group {
    node: usize,
    packed: Vec<u8>,
    commands: Vec<usize>,
}

impl Cluster {
    /// The topology for `config`; connects to nothing yet.
    ///
    /// # Errors
    /// [`SourceError::Config`] for a seed without a port (validation refuses it first).
    pub fn new(
        config: &ClusterConfig,
        connector: Connector,
        display: String,
    ) -> Result<Self, SourceError> {
        let seeds = NodeAddr::parse_all(&config.nodes)?;
        Ok(Cluster {
            display,
            seeds,
            connector,
            nodes: Vec::new(),
            slots: vec![UNASSIGNED; SLOTS],
            conns: HashMap::new(),
            wires: HashMap::new(),
            unreachable: BTreeSet::new(),
            refreshed_at: None,
            refresh_due: true,
            epoch: 0,
            split: None,
        })
    }

    /// Reads the slot map when it is due.
    ///
    /// # Errors
    /// When no node answers `CLUSTER SLOTS` and there is no map yet.
    pub async fn prepare(&mut self) -> Result<(), SourceError> {
        let due = self.refresh_due
            || self
                .refreshed_at
                .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if !due {
            return Ok(());
        }
        match self.refresh().await {
            Ok(()) => Ok(()),
            // A stale map still routes most keys; redirections correct the rest.
            Err(e) if !self.nodes.is_empty() => {
                tracing::warn!(source = %self.display, error = %e, "cluster: slot map not refreshed; keeping the last one");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn refresh(&mut self) -> Result<(), SourceError> {
        let mut candidates: Vec<NodeAddr> = self.nodes.clone();
        candidates.extend(self.seeds.iter().cloned());
        let mut failures = Vec::new();
        for addr in candidates {
            let mut conn = match self.connection(&addr).await {
                Ok(c) => c,
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            };
            let answer = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut conn)
                .await;
            match answer
                .map_err(|e| describe(&e))
                .and_then(|v| slot_map(&v, &addr).map_err(|e| format!("CLUSTER SLOTS: {e}")))
            {
                Ok((nodes, slots)) => {
                    if nodes != self.nodes || slots != self.slots {
                        self.epoch += 1;
                        self.split = None;
                        tracing::info!(source = %self.display, primaries = %nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","), "cluster: slot map read");
                    }
                    self.conns.retain(|a, _| nodes.contains(a));
                    self.wires.retain(|a, _| nodes.contains(a));
                    self.nodes = nodes;
                    self.slots = slots;
                    self.refreshed_at = Some(Instant::now());
                    self.refresh_due = false;
                    return Ok(());
                }
                Err(e) => {
                    self.conns.remove(&addr);
                    failures.push(format!("{addr}: {e}"));
                }
            }
        }
        Err(SourceError::Connect {
            target: self.display.clone(),
            message: format!("no node gave the slot map: {}", failures.join("; ")),
        })
    }

    async fn connection(&mut self, addr: &NodeAddr) -> Result<MultiplexedConnection, SourceError> {
        if let Some(c) = self.conns.get(addr) {
            return Ok(c.clone());
        }
        let c = self.connector.connect(addr, None).await?;
        self.conns.insert(addr.clone(), c.clone());
        Ok(c)
    }

    /// The indices (into `nodes`) of the primaries that own slots now: a node a `MOVED` or a new
    /// map left without slots is no longer scanned or watched.
    fn owning(&self) -> Vec<usize> {
        let mut owns = vec![false; self.nodes.len()];
        for s in &self.slots {
            if let Some(o) = owns.get_mut(usize::from(*s)) {
                *o = true;
            }
        }
        (0..self.nodes.len()).filter(|n| owns[*n]).collect()
    }

    /// The primaries that own slots now.
    pub fn primaries(&self) -> Vec<NodeAddr> {
        self.owning()
            .into_iter()
            .map(|n| self.nodes[n].clone())
            .collect()
    }

    /// The connector to the nodes.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Drops every node connection and re-reads the slot map at the next poll.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.wires.clear();
        self.refresh_due = true;
    }

    /// The primary owning `key`, if the map has one.
    fn owner(&self, key: &[u8]) -> Option<usize> {
        let node = self.slots[usize::from(slot(key))];
        (node != UNASSIGNED).then_some(usize::from(node))
    }

    /// Whether the primary owning `key` failed at the last poll or scan.
    pub fn owner_unreachable(&self, key: &str) -> bool {
        self.owner(key.as_bytes())
            .is_none_or(|n| self.unreachable.contains(&n))
    }

    fn split_of(&self, batch: &Batch) -> Split {
        let mut per_node: Vec<Option<Group>> = vec![None; self.nodes.len()];
        let mut orphans = Vec::new();
        for i in 0..batch.len() {
            let targets: Vec<usize> = match batch.key(i) {
                None => (0..self.nodes.len()).collect(),
                Some(key) => match self.owner(key) {
                    Some(n) => vec![n],
                    None => {
                        orphans.push(i);
                        continue;
                    }
                },
            };
            for n in targets {
                let group = per_node[n].get_or_insert_with(|| Group {
                    node: n,
                    packed: Vec::new(),
                    commands: Vec::new(),
                });
                group.packed.extend_from_slice(batch.command(i));
                group.commands.push(i);
            }
        }
        Split {
            groups: per_node.into_iter().flatten().collect(),
            orphans,
        }
    }

    /// Sends `batch` split over the primaries, follows redirections, and returns one reply per
    /// command.
    ///
    /// # Errors
    /// When no node answered at all.
    pub async fn run(&mut self, batch: &Batch) -> Result<Vec<Value>, SourceError> {
        self.prepare().await?;
        let split = match &self.split {
            Some((id, epoch, s)) if *id == batch.id() && *epoch == self.epoch => s.clone(),
            _ => {
                let s = Arc::new(self.split_of(batch));
                // Only round one repeats; keeping round two's split would only cost memory.
                if self
                    .split
                    .as_ref()
                    .is_none_or(|(id, _, _)| *id != batch.id())
                {
                    self.split = Some((batch.id(), self.epoch, s.clone()));
                }
                s
            }
        };
        let taken: Vec<(NodeAddr, Option<Wire>)> = split
            .groups
            .iter()
            .map(|g| {
                let addr = self.nodes[g.node].clone();
                let wire = self.wires.remove(&addr);
                (addr, wire)
            })
            .collect();
        let connector = &self.connector;
        let sends = split
            .groups
            .iter()
            .zip(taken)
            .map(|(g, (addr, wire))| async move {
                let target = addr.to_string();
                let (wire, answer) = send_batch(
                    connector,
                    Some(&addr),
                    wire,
                    &g.packed,
                    g.commands.len(),
                    &target,
                )
                .await;
                (addr, wire, answer)
            });
        let answers = join_all(sends).await;
        let answers: Vec<(NodeAddr, Result<Vec<Value>, SourceError>)> = answers
            .into_iter()
            .map(|(addr, wire, answer)| {
                if let Some(w) = wire {
                    self.wires.insert(addr.clone(), w);
                }
                (addr, answer)
            })
            .collect();
        let mut replies: Vec<Option<Value>> = vec![None; batch.len()];
        let mut latest_time: HashMap<usize, (f64, Value)> = HashMap::new();
        let mut failures = Vec::new();
        self.unreachable.clear();
        let mut answered = 0;
        for (g, (addr, answer)) in split.groups.iter().zip(answers) {
            match answer {
                Ok(values) => {
                    answered += 1;
                    for (&i, v) in g.commands.iter().zip(values) {
                        if batch.key(i).is_none() {
                            // TIME: the latest clock of the nodes that answered.
                            let ms = reply::time_ms(&v).unwrap_or(f64::NEG_INFINITY);
                            if latest_time.get(&i).is_none_or(|(t, _)| ms > *t) {
                                latest_time.insert(i, (ms, v));
                            }
                        } else {
                            replies[i] = Some(v);
                        }
                    }
                }
                Err(e) => {
                    self.conns.remove(&addr);
                    self.unreachable.insert(g.node);
                    self.refresh_due = true;
                    let message = format!("cluster node {addr} did not answer: {e}");
                    for &i in &g.commands {
                        if batch.key(i).is_some() {
                            replies[i] = Some(error_reply("UNREACHABLE", &message));
                        }
                    }
                    failures.push(message);
                }
            }
        }
        if answered == 0 && !split.groups.is_empty() {
            return Err(SourceError::Connect {
                target: self.display.clone(),
                message: failures.join("; "),
            });
        }
        for (i, (_, v)) in latest_time {
            replies[i] = Some(v);
        }
        for &i in &split.orphans {
            let slot = batch.key(i).map_or(0, slot);
            replies[i] = Some(error_reply(
                "CLUSTERDOWN",
                &format!("hash slot {slot} is served by no node in the slot map"),
            ));
            self.refresh_due = true;
        }
        let mut replies: Vec<Value> = replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| error_reply("NOREPLY", "no node answered")))
            .collect();
        self.follow_redirects(batch, &mut replies).await;
        Ok(replies)
    }

    /// Resends commands answered with `MOVED` or `ASK` to the node named, until none is left
    /// or [`MAX_REDIRECTS`] rounds have passed.
    async fn follow_redirects(&mut self, batch: &Batch, replies: &mut [Value]) {
        for _ in 0..MAX_REDIRECTS {
            let mut by_node: HashMap<NodeAddr, Vec<(usize, bool)>> = HashMap::new();
            for (i, v) in replies.iter().enumerate() {
                if let Some((ask, slot, addr)) = redirect(v) {
                    if !ask {
                        self.moved(slot, &addr);
                    }
                    by_node.entry(addr).or_default().push((i, ask));
                }
            }
            if by_node.is_empty() {
                return;
            }
            let mut sends = Vec::new();
            let connector = &self.connector;
            for (addr, commands) in by_node {
                let wire = self.wires.remove(&addr);
                let mut packed = Vec::new();
                for &(i, ask) in &commands {
                    if ask {
                        wire::encode(&mut packed, &[b"ASKING"]);
                    }
                    packed.extend_from_slice(batch.command(i));
                }
                let len = commands.iter().map(|(_, ask)| 1 + usize::from(*ask)).sum();
                sends.push(async move {
                    let target = addr.to_string();
                    let (wire, answer) =
                        send_batch(connector, Some(&addr), wire, &packed, len, &target).await;
                    (addr, wire, commands, answer)
                });
            }
            for (addr, wire, commands, answer) in join_all(sends).await {
                if let Some(w) = wire {
                    self.wires.insert(addr.clone(), w);
                }
                match answer {
                    Ok(values) => {
                        let mut values = values.into_iter();
                        for (i, ask) in commands {
                            if ask {
                                values.next();
                            }
                            if let Some(v) = values.next() {
                                replies[i] = v;
                            }
                        }
                    }
                    Err(e) => {
                        self.conns.remove(&addr);
                        let message =
                            format!("cluster node {addr} (redirected to) did not answer: {e}");
                        for (i, _) in commands {
                            replies[i] = error_reply("UNREACHABLE", &message);
                        }
                    }
                }
            }
        }
    }

    /// Records that `slot` now lives on `addr` (a `MOVED` reply) until the map is re-read.
    fn moved(&mut self, slot: u16, addr: &NodeAddr) {
        let node = match self.nodes.iter().position(|n| n == addr) {
            Some(n) => n,
            None => {
                self.nodes.push(addr.clone());
                self.nodes.len() - 1
            }
        };
        if let Some(owner) = self.slots.get_mut(usize::from(slot)) {
            *owner = node as u16;
        }
        self.epoch += 1;
        self.split = None;
        self.refresh_due = true;
    }

    /// `SCAN` on every primary at once; a primary that fails makes the result partial.
    ///
    /// # Errors
    /// When no primary answers, or the pattern matches more than `limit` keys in all.
    pub async fn scan(
        &mut self,
        pattern: &str,
        ty: &str,
        limit: usize,
    ) -> Result<Scanned, SourceError> {
        self.prepare().await?;
        self.unreachable.clear();
        let mut conns = Vec::new();
        for n in self.owning() {
            let addr = self.nodes[n].clone();
            let conn = self.connection(&addr).await;
            conns.push((n, addr, conn));
        }
        let scans = conns.into_iter().map(|(n, addr, conn)| async move {
            let target = addr.to_string();
            let keys = match conn {
                Ok(mut c) => scan_node(&mut c, pattern, ty, limit, &target).await,
                Err(e) => Err(e),
            };
            (n, addr, keys)
        });
        let mut scanned = Scanned::default();
        let mut failures = Vec::new();
        let mut answered = 0;
        for (n, addr, keys) in join_all(scans).await {
            match keys {
                Ok(keys) => {
                    answered += 1;
                    scanned.keys.extend(keys);
                    if scanned.keys.len() > limit {
                        return Err(too_many(pattern, ty, limit));
                    }
                }
                Err(e @ SourceError::BadReply { .. }) => return Err(e),
                Err(e) => {
                    self.conns.remove(&addr);
                    self.unreachable.insert(n);
                    self.refresh_due = true;
                    scanned.partial = true;
                    failures.push(format!("{addr}: {e}"));
                }
            }
        }
        if answered == 0 {
            return Err(SourceError::Connect {
                target: self.display.clone(),
                message: format!("SCAN {pattern:?} on no primary: {}", failures.join("; ")),
            });
        }
        Ok(scanned)
    }
}

/// `(is ASK, slot, node)` of a `MOVED 3999 127.0.0.1:6381` or `ASK ...` error reply.
fn redirect(v: &Value) -> Option<(bool, u16, NodeAddr)> {
    let Value::ServerError(e) = v else {
        return None;
    };
    let ask = match e.code() {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let mut parts = e.details()?.split_whitespace();
    let slot = parts.next()?.parse().ok()?;
    let (host, port) = host_port(parts.next()?).ok()?;
    Some((ask, slot, NodeAddr { host, port }))
}

/// The primaries and the slot → primary map of a `CLUSTER SLOTS` reply. `asked` stands in for
/// a node that reports its own address as empty (a node that does not know its IP).
fn slot_map(v: &Value, asked: &NodeAddr) -> Result<(Vec<NodeAddr>, Vec<u16>), String> {
    let mut nodes: Vec<NodeAddr> = Vec::new();
    let mut slots = vec![UNASSIGNED; SLOTS];
    for range in reply::array(v)? {
        let fields = reply::array(range)?;
        let (Some(start), Some(end), Some(primary)) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(format!("a slot range of {} fields", fields.len()));
        };
        let (start, end) = (reply::int(start)?, reply::int(end)?);
        if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
            return Err(format!(
                "slot range {start}-{end} is outside 0-{}",
                SLOTS - 1
            ));
        }
        let primary = reply::array(primary)?;
        let host = reply::text_at(primary, 0)?.unwrap_or_default();
        let port = reply::int_at(primary, 1)?.unwrap_or(0);
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {port} of slots {start}-{end}"))?;
        let host = if host.is_empty() || host == "?" {
            asked.host.clone()
        } else {
            host
        };
        let addr = NodeAddr { host, port };
        let n = match nodes.iter().position(|x| *x == addr) {
            Some(n) => n,
            None => {
                nodes.push(addr);
                nodes.len() - 1
            }
        };
        for s in start..=end {
            slots[s as usize] = n as u16;
        }
    }
    Ok((nodes, slots))
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the first non-empty `{...}`) or of
/// the whole key, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS as u16
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // The specification's check value, and slots `CLUSTER KEYSLOT` gives.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{bull:embed}:wait"), slot(b"bull:embed"));
        // An empty tag is no tag; only the first `{` counts.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_slot_map_is_read_and_a_bad_one_refused() {
        let asked = NodeAddr {
            host: "127.0.0.1".into(),
            port: 7000,
        };
        let v = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                Value::Array(vec![bulk("10.0.0.1"), Value::Int(7000), bulk("id1")]),
            ]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001), bulk("id2")]),
                Value::Array(vec![bulk("10.0.0.3"), Value::Int(7002), bulk("id3")]),
            ]),
        ]);
        let (nodes, slots) = slot_map(&v, &asked).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].to_string(), "127.0.0.1:7001");
        assert_eq!(slots[0], 0);
        assert_eq!(slots[16383], 1);
        let bad = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(20000),
            Value::Array(vec![bulk("h"), Value::Int(1)]),
        ])]);
        assert!(slot_map(&bad, &asked).is_err());
        assert!(slot_map(&Value::Int(1), &asked).is_err());
    }

    #[test]
    fn redirections_are_read() {
        let moved = redis::parse_redis_value(b"-MOVED 3999 127.0.0.1:6381\r\n").unwrap();
        let (ask, slot, addr) = redirect(&moved).unwrap();
        assert!(!ask);
        assert_eq!(slot, 3999);
        assert_eq!(addr.to_string(), "127.0.0.1:6381");
        let ask = redis::parse_redis_value(b"-ASK 1 [::1]:7000\r\n").unwrap();
        assert!(redirect(&ask).unwrap().0);
        let other = redis::parse_redis_value(b"-ERR no\r\n").unwrap();
        assert!(redirect(&other).is_none());
    }
}
