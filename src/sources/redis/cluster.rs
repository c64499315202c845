//! A Redis Cluster's primaries, and a batch split over them: one pipeline per node, all sent at
//! once, so a poll is one round trip per node.
//!
//! Every node's part of a poll (connecting, its pipeline, a redirected resend, its `SCAN`, its
//! view of the slot map) has its own deadline, `cluster.node_timeout` (a quarter of
//! `poll_timeout` by default): a node that hangs rather than refusing (stopped, behind a
//! partition that drops packets) fails only the commands routed to it, the others are answered
//! from the same poll, and the poll waits for it at most that long. A node that failed is not
//! asked again within the same poll, so a hung node costs a poll one deadline, not one per step.
//!
//! The slot map is read at start, after a node failed or redirected a command, and every
//! [`REFRESH_EVERY`]: every known primary and seed is asked at once for `CLUSTER SLOTS` and
//! `CLUSTER NODES`, and each slot goes to the primary claimed with the highest config epoch
//! (see `newest_map`), so a woken old primary that still claims its slots does not win. Each command goes to the primary owning its key's hash slot (CRC16 of the
//! key, or of its `{hash tag}`); `TIME` goes to every node and the latest clock is used, so an
//! age measured on any node is never negative by clock skew. A `MOVED` reply (a slot that moved
//! for good) updates the map and resends the command there; an `ASK` reply (a slot being
//! migrated) resends it once with `ASKING` to the importing node; both within the same poll,
//! at most [`MAX_REDIRECTS`] times. A node that cannot be reached or misses its deadline fails
//! only the commands routed to it: their series report the node, the others are served.
//!
//! redis-rs's `cluster-async` connection routes a pipeline by its first key and fails it whole
//! when one node fails, so it is not used.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::Value;
use redis::aio::MultiplexedConnection;

use super::batch::Batch;
use super::config::{ClusterConfig, host_port};
use super::connect::{Connector, NodeAddr, describe};
use super::node::{Scanned, error_reply, scan_node, send_batch, too_many, within};
use super::reply;
use super::wire::{self, Wire};
use crate::sources::source::SourceError;

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
    /// How long one node may take for its part of a poll.
    node_timeout: Duration,
    /// Nodes that failed during this poll, and why: not asked again before the next poll.
    failed: HashMap<NodeAddr, SourceError>,
    /// Whether a refused `CLUSTER NODES` has been logged.
    warned_no_epochs: bool,
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
        poll_timeout: Duration,
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
            node_timeout: super::config::node_timeout(config.node_timeout, poll_timeout),
            failed: HashMap::new(),
            warned_no_epochs: false,
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

    /// Starts a poll: every node is asked again, even one that failed in the last poll.
    pub fn begin_poll(&mut self) {
        self.failed.clear();
    }

    /// How long one node may take for its part of a poll.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// The nodes that failed during this poll (for the tracking connections, which treat them
    /// as lost).
    pub fn failed_nodes(&self) -> Vec<NodeAddr> {
        self.failed.keys().cloned().collect()
    }

    /// `op` on `addr` within the node deadline, or at once the failure `addr` already had in
    /// this poll.
    fn on_node<'a, T: 'a>(
        &self,
        addr: &'a NodeAddr,
        op: impl Future<Output = Result<T, SourceError>> + 'a,
    ) -> impl Future<Output = Result<T, SourceError>> + 'a {
        let failed = self.failed.get(addr).cloned();
        let deadline = self.node_timeout;
        async move {
            match failed {
                Some(e) => Err(e),
                None => within(deadline, || format!("cluster node {addr}"), op).await,
            }
        }
    }

    /// Records that `addr` failed in this poll: its connections are dropped, the slot map is
    /// read again, and it is not asked again in this poll. A reply that could not be read
    /// (`BadReply`) says nothing about the node's health and is not recorded.
    fn note_failure(&mut self, addr: &NodeAddr, e: &SourceError) {
        self.conns.remove(addr);
        self.wires.remove(addr);
        self.refresh_due = true;
        if !matches!(e, SourceError::BadReply { .. }) {
            self.failed.insert(addr.clone(), e.clone());
        }
    }

    async fn refresh(&mut self) -> Result<(), SourceError> {
        let mut candidates: Vec<NodeAddr> = self.nodes.clone();
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let connector = &self.connector;
        let asks = candidates.iter().map(|addr| {
            let conn = self.conns.get(addr).cloned();
            self.on_node(addr, async move {
                let mut conn = match conn {
                    Some(c) => c,
                    None => connector.connect(addr, None).await?,
                };
                let (slots, nodes): (Value, Value) = redis::pipe()
                    .ignore_errors()
                    .cmd("CLUSTER")
                    .arg("SLOTS")
                    .cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| SourceError::Io {
                        target: addr.to_string(),
                        message: describe(&e),
                    })?;
                // An ACL written before `CLUSTER NODES` was needed refuses it: the map is still
                // read, without config epochs (every claim equal, the first view's wins).
                let refused = reply::server_error(&nodes);
                let nodes = if refused.is_some() { Value::Nil } else { nodes };
                let claims =
                    claims(&slots, &nodes, addr).map_err(|what| SourceError::BadReply { what })?;
                Ok((conn, claims, refused))
            })
        });
        let answers = join_all(asks).await;
        let mut views = Vec::new();
        let mut failures = Vec::new();
        for (addr, answer) in candidates.iter().zip(answers) {
            match answer {
                Ok((conn, claims, refused)) => {
                    if let Some(refused) = refused
                        && !self.warned_no_epochs
                    {
                        self.warned_no_epochs = true;
                        tracing::warn!(source = %self.display, node = %addr, error = %refused, "cluster: CLUSTER NODES refused (add +cluster|nodes to the ACL); the slot map is read without config epochs, so an old primary that wakes up may be believed until it learns of its failover");
                    }
                    self.conns.insert(addr.clone(), conn);
                    views.push(claims);
                }
                Err(e) => {
                    failures.push(failure(addr, &e));
                    self.note_failure(addr, &e);
                }
            }
        }
        if views.is_empty() {
            return Err(SourceError::Connect {
                target: self.display.clone(),
                message: format!("no node gave the slot map: {}", failures.join("; ")),
            });
        }
        let (nodes, slots) = newest_map(&views);
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
        // A primary that stays silent fails its commands, which makes the map due again; a
        // seed that is gone for good must not cost every poll a deadline.
        self.refresh_due = false;
        Ok(())
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
        let sends = split.groups.iter().zip(taken).map(|(g, (addr, wire))| {
            let failed = self.failed.get(&addr).cloned();
            let deadline = self.node_timeout;
            async move {
                if let Some(e) = failed {
                    return (addr, None, Err(e));
                }
                let target = addr.to_string();
                let sent = send_batch(
                    connector,
                    Some(&addr),
                    wire,
                    &g.packed,
                    g.commands.len(),
                    &target,
                );
                match tokio::time::timeout(deadline, sent).await {
                    Ok((wire, answer)) => (addr, wire, answer),
                    // The wire was mid-exchange: it went with the dropped future.
                    Err(_) => {
                        let e = late(&addr, deadline);
                        (addr, None, Err(e))
                    }
                }
            }
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
                    self.unreachable.insert(g.node);
                    let message = failure(&addr, &e);
                    self.note_failure(&addr, &e);
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
                let failed = self.failed.get(&addr).cloned();
                let deadline = self.node_timeout;
                sends.push(async move {
                    if let Some(e) = failed {
                        return (addr, None, commands, Err(e));
                    }
                    let target = addr.to_string();
                    let sent = send_batch(connector, Some(&addr), wire, &packed, len, &target);
                    match tokio::time::timeout(deadline, sent).await {
                        Ok((wire, answer)) => (addr, wire, commands, answer),
                        Err(_) => {
                            let e = late(&addr, deadline);
                            (addr, None, commands, Err(e))
                        }
                    }
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
                        let message = format!("{} (redirected to)", failure(&addr, &e));
                        self.note_failure(&addr, &e);
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
        let owning: Vec<(usize, NodeAddr)> = self
            .owning()
            .into_iter()
            .map(|n| (n, self.nodes[n].clone()))
            .collect();
        let connector = &self.connector;
        let deadline = self.node_timeout;
        let scans = owning.iter().map(|(_, addr)| {
            let conn = self.conns.get(addr).cloned();
            let connecting = self.on_node(addr, async move {
                match conn {
                    Some(c) => Ok(c),
                    None => connector.connect(addr, None).await,
                }
            });
            async move {
                let mut conn = connecting.await?;
                // Each SCAN call has the node deadline: a large keyspace takes many calls.
                let target = format!("cluster node {addr}");
                let keys = scan_node(&mut conn, pattern, ty, limit, &target, deadline).await?;
                Ok::<_, SourceError>((conn, keys))
            }
        });
        let answers = join_all(scans).await;
        let mut scanned = Scanned::default();
        let mut failures = Vec::new();
        let mut answered = 0;
        for ((n, addr), answer) in owning.into_iter().zip(answers) {
            match answer {
                Ok((conn, keys)) => {
                    self.conns.insert(addr, conn);
                    answered += 1;
                    scanned.keys.extend(keys);
                    if scanned.keys.len() > limit {
                        return Err(too_many(pattern, ty, limit));
                    }
                }
                Err(e @ SourceError::BadReply { .. }) => return Err(e),
                Err(e) => {
                    self.unreachable.insert(n);
                    scanned.partial = true;
                    failures.push(failure(&addr, &e));
                    self.note_failure(&addr, &e);
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

/// The error of `addr` missing its `deadline`.
fn late(addr: &NodeAddr, deadline: Duration) -> SourceError {
    SourceError::Late {
        target: format!("cluster node {addr}"),
        after: deadline,
    }
}

/// Why `addr` failed, as the series it owns report it: `cluster node 10.0.0.3:7001 did not
/// answer within 250ms`, the client's error, or what in its answer could not be read.
fn failure(addr: &NodeAddr, e: &SourceError) -> String {
    match e {
        SourceError::Late { .. } => e.to_string(),
        SourceError::BadReply { .. } => format!("cluster node {addr}: {e}"),
        other => format!("cluster node {addr} did not answer: {other}"),
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

/// One slot range and the primary a node says serves it, with that primary's config epoch as
/// the same node knows it.
#[derive(Debug, Clone, PartialEq)]
struct Claim {
    start: usize,
    end: usize,
    primary: NodeAddr,
    config_epoch: u64,
}

/// One node's view of the slot map: its `CLUSTER SLOTS` ranges, each with the config epoch its
/// `CLUSTER NODES` gives the range's primary (0 when it lists no such node). `asked` stands in
/// for a node that reports its own address as empty (a node that does not know its IP).
fn claims(slots: &Value, nodes: &Value, asked: &NodeAddr) -> Result<Vec<Claim>, String> {
    let nodes = reply::text(nodes)
        .map_err(|e| format!("CLUSTER NODES: {e}"))?
        .unwrap_or_default();
    let epochs = config_epochs(&nodes);
    let mut out = Vec::new();
    for range in reply::array(slots).map_err(|e| format!("CLUSTER SLOTS: {e}"))? {
        let fields = reply::array(range)?;
        let (Some(start), Some(end), Some(primary)) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(format!(
                "CLUSTER SLOTS: a slot range of {} fields",
                fields.len()
            ));
        };
        let (start, end) = (reply::int(start)?, reply::int(end)?);
        if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
            return Err(format!(
                "CLUSTER SLOTS: slot range {start}-{end} is outside 0-{}",
                SLOTS - 1
            ));
        }
        let primary = reply::array(primary)?;
        let host = reply::text_at(primary, 0)?.unwrap_or_default();
        let port = reply::int_at(primary, 1)?.unwrap_or(0);
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("CLUSTER SLOTS: port {port} of slots {start}-{end}"))?;
        let host = if host.is_empty() || host == "?" {
            asked.host.clone()
        } else {
            host
        };
        let id = reply::text_at(primary, 2)?.unwrap_or_default();
        out.push(Claim {
            start: start as usize,
            end: end as usize,
            primary: NodeAddr { host, port },
            config_epoch: epochs.get(id.as_str()).copied().unwrap_or(0),
        });
    }
    Ok(out)
}

/// Node id → config epoch, from `CLUSTER NODES` (`<id> <ip:port@cport> <flags> <master>
/// <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...`, one node a line).
fn config_epochs(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?;
            let epoch = fields.nth(5)?.parse().ok()?;
            Some((id, epoch))
        })
        .collect()
}

/// The slot map several nodes' views agree on: each slot goes to the primary claimed with the
/// highest config epoch (on a tie, the first view's), and the primaries that own a slot.
///
/// Why this rule: it is Redis Cluster's own. A failover gives the promoted replica a config
/// epoch above every other, and a node takes a slot claim only from a config epoch greater than
/// its current owner's. An old primary that wakes (SIGCONT, a healed partition) still claims its
/// slots, with its old config epoch, until it hears of the promotion; asking it alone, as
/// reading `CLUSTER SLOTS` from the first node that answers did, would send its slots' commands
/// back to it and serve its stale copy. Any node that saw the promotion outbids it here. (Taking
/// the whole map from the node with the highest `cluster_current_epoch` would not be enough: a
/// node's current epoch rises with any gossip, before it learns which slots moved.)
fn newest_map(views: &[Vec<Claim>]) -> (Vec<NodeAddr>, Vec<u16>) {
    let mut candidates: Vec<NodeAddr> = Vec::new();
    let mut best: Vec<Option<(u64, usize)>> = vec![None; SLOTS];
    for claim in views.iter().flatten() {
        let n = match candidates.iter().position(|c| *c == claim.primary) {
            Some(n) => n,
            None => {
                candidates.push(claim.primary.clone());
                candidates.len() - 1
            }
        };
        for owner in &mut best[claim.start..=claim.end] {
            if owner.is_none_or(|(epoch, _)| claim.config_epoch > epoch) {
                *owner = Some((claim.config_epoch, n));
            }
        }
    }
    // Only primaries left owning a slot are kept, in the order first met.
    let mut index: Vec<Option<u16>> = vec![None; candidates.len()];
    let mut nodes = Vec::new();
    let slots = best
        .iter()
        .map(|owner| match owner {
            None => UNASSIGNED,
            Some((_, n)) => *index[*n].get_or_insert_with(|| {
                nodes.push(candidates[*n].clone());
                (nodes.len() - 1) as u16
            }),
        })
        .collect();
    (nodes, slots)
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

    fn addr(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// A `CLUSTER SLOTS` range served by `port` (node id `id`).
    fn range(start: i64, end: i64, host: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![bulk(host), Value::Int(port), bulk(id)]),
        ])
    }

    #[test]
    fn a_slot_map_is_read_and_a_bad_one_refused() {
        let asked = addr(7000);
        let v = Value::Array(vec![
            range(0, 8191, "10.0.0.1", 7000, "id1"),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001), bulk("id2")]),
                Value::Array(vec![bulk("10.0.0.3"), Value::Int(7002), bulk("id3")]),
            ]),
        ]);
        // As Redis 7.0 writes it (fields: id, address, flags, master, ping, pong, config
        // epoch, link, slots).
        let nodes = bulk(
            "id1 10.0.0.1:7000@17000 master - 0 1700000000000 1 connected 0-8191\n\
             id2 :7001@17001 myself,master - 0 0 2 connected 8192-16383\n\
             id3 10.0.0.3:7002@17002 slave id2 0 1700000000000 2 connected\n",
        );
        let got = claims(&v, &nodes, &asked).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].primary.to_string(), "127.0.0.1:7001");
        assert_eq!((got[0].config_epoch, got[1].config_epoch), (1, 2));
        let (nodes_read, slots) = newest_map(&[got]);
        assert_eq!(nodes_read.len(), 2);
        assert_eq!(slots[0], 0);
        assert_eq!(slots[16383], 1);
        let bad = Value::Array(vec![range(0, 20000, "h", 1, "x")]);
        assert!(claims(&bad, &nodes, &asked).is_err());
        assert!(claims(&Value::Int(1), &nodes, &asked).is_err());
        // A node id CLUSTER NODES does not list claims with epoch 0.
        let got = claims(&v, &bulk(""), &asked).unwrap();
        assert_eq!(got[0].config_epoch, 0);
    }

    #[test]
    fn the_claim_with_the_newest_config_epoch_wins_each_slot() {
        // Three primaries; A (epoch 3) has been replaced by its replica D (epoch 7). A woke up
        // and still claims its slots with epoch 3; B and C know of D.
        let nodes_known = "a 127.0.0.1:7000@17000 master,fail - 0 0 3 connected\n\
                           b 127.0.0.1:7001@17001 myself,master - 0 0 4 connected 5461-10922\n\
                           c 127.0.0.1:7002@17002 master - 0 0 5 connected 10923-16383\n\
                           d 127.0.0.1:7003@17003 master - 0 0 7 connected 0-5460\n";
        let nodes_woken = "a 127.0.0.1:7000@17000 myself,master - 0 0 3 connected 0-5460\n\
                           b 127.0.0.1:7001@17001 master - 0 0 4 connected 5461-10922\n\
                           c 127.0.0.1:7002@17002 master - 0 0 5 connected 10923-16383\n\
                           d 127.0.0.1:7003@17003 slave a 0 0 3 connected\n";
        let slots_known = Value::Array(vec![
            range(0, 5460, "127.0.0.1", 7003, "d"),
            range(5461, 10922, "127.0.0.1", 7001, "b"),
            range(10923, 16383, "127.0.0.1", 7002, "c"),
        ]);
        let slots_woken = Value::Array(vec![
            range(0, 5460, "127.0.0.1", 7000, "a"),
            range(5461, 10922, "127.0.0.1", 7001, "b"),
            range(10923, 16383, "127.0.0.1", 7002, "c"),
        ]);
        let woken = claims(&slots_woken, &bulk(nodes_woken), &addr(7000)).unwrap();
        let known = claims(&slots_known, &bulk(nodes_known), &addr(7001)).unwrap();
        // Whichever view comes first, the woken primary's claim loses.
        for views in [
            vec![woken.clone(), known.clone()],
            vec![known.clone(), woken.clone()],
        ] {
            let (nodes, slots) = newest_map(&views);
            assert!(!nodes.contains(&addr(7000)), "{nodes:?}");
            assert_eq!(nodes[usize::from(slots[0])], addr(7003));
            assert_eq!(nodes[usize::from(slots[5460])], addr(7003));
            assert_eq!(nodes[usize::from(slots[5461])], addr(7001));
            assert_eq!(nodes[usize::from(slots[16383])], addr(7002));
            assert_eq!(nodes.len(), 3);
        }
        // Alone, the woken primary's view is all there is: it is taken (redirects correct it).
        let (nodes, slots) = newest_map(&[woken]);
        assert_eq!(nodes[usize::from(slots[0])], addr(7000));
        // A slot no view assigns stays unassigned.
        let partial = vec![Claim {
            start: 0,
            end: 99,
            primary: addr(7001),
            config_epoch: 1,
        }];
        let (_, slots) = newest_map(&[partial]);
        assert_eq!(slots[100], UNASSIGNED);
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
