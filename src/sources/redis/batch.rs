//! A batch of Redis commands for one pipelined round trip: deduplicated, encoded once and kept
//! as the bytes that are sent, with where each command's key is (which decides its cluster
//! node). What the commands mean is [`super::reads`]'; how a batch reaches the servers is the
//! topology's ([`super::topology`], [`super::node`]).

use std::collections::HashMap;

#[cfg(test)]
use redis::Value;

use super::wire;

/// A deduplicated, ready-to-send list of commands for one pipelined round trip.
///
/// The round-one batch is kept and sent by every poll, so it is kept as what is sent: every
/// command encoded once, back to back in one buffer (written to the socket as it is, see the
/// `wire` module), with where each command and its key are in it.
pub struct Batch {
    /// Tells batches apart, so a topology can keep what it worked out for one (a cluster's
    /// per-node split of the round-one batch, which is reused by every poll).
    id: u64,
    /// The commands in RESP, in reply order.
    packed: Vec<u8>,
    /// Where command `i` ends in `packed` (it starts where `i - 1` ends).
    ends: Vec<usize>,
    /// Where the key command `i` reads is in `packed` (start, length), which decides its
    /// cluster node; start [`NO_KEY`] for `TIME` and `ROLE`, which read none.
    key_spans: Vec<(usize, usize)>,
    /// Each command's bytes, to find duplicates; emptied by [`Batch::seal`] once nothing more
    /// is added (a copy of every command).
    index: HashMap<Box<[u8]>, usize>,
}

/// `key_spans` start of a command without a key.
const NO_KEY: usize = usize::MAX;

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("commands", &self.len())
            .field("bytes", &self.packed.len())
            .finish()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Batch {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            packed: Vec::new(),
            ends: Vec::new(),
            key_spans: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Adds a command (name first) unless the same one is already queued; returns its reply index.
    pub fn add(&mut self, args: &[&[u8]]) -> usize {
        let is = |name: &str| args[0].eq_ignore_ascii_case(name.as_bytes());
        let key_at = if is("TIME") || is("ROLE") {
            None
        } else if is("XINFO") {
            Some(2)
        } else {
            Some(1)
        };
        let start = self.packed.len();
        self.packed.reserve(wire::encoded_len(args));
        wire::encode_header(&mut self.packed, args.len());
        let mut span = (NO_KEY, 0);
        for (at, a) in args.iter().enumerate() {
            wire::encode_arg(&mut self.packed, a);
            if key_at == Some(at) {
                span = (self.packed.len() - 2 - a.len(), a.len());
            }
        }
        if let Some(&i) = self.index.get(&self.packed[start..]) {
            self.packed.truncate(start);
            return i;
        }
        let i = self.len();
        self.key_spans.push(span);
        self.ends.push(self.packed.len());
        self.index
            .insert(self.packed[start..].to_vec().into_boxed_slice(), i);
        i
    }

    /// How many commands are queued.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every command, encoded, in reply order: what is written to a server.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// Command `i`, encoded.
    pub fn command(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1],
        };
        &self.packed[start..self.ends[i]]
    }

    /// This batch's identity (unique in the process).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Command `i`'s name, upper case (its first argument), for tests that answer a batch.
    #[cfg(test)]
    pub(super) fn name(&self, i: usize) -> String {
        match wire::parse(self.command(i)) {
            Ok(Some((Some(Value::Array(args)), _))) => match args.first() {
                Some(Value::BulkString(name)) => String::from_utf8_lossy(name).to_ascii_uppercase(),
                _ => String::new(),
            },
            _ => String::new(),
        }
    }

    /// Frees what only adding needs (the duplicate index) and the slack of growing, for a
    /// batch that is kept and sent by every poll. A command added after this is not matched
    /// against earlier ones.
    pub fn seal(&mut self) {
        self.index = HashMap::new();
        self.packed.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.key_spans.shrink_to_fit();
    }

    /// The key command `i` reads, or `None` for a command without one (`TIME`).
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        let (start, len) = self.key_spans[i];
        (start != NO_KEY).then(|| &self.packed[start..start + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_commands_are_sent_once() {
        let mut b = Batch::default();
        let a = b.add(&[b"LLEN", b"q"]);
        let c = b.add(&[b"LINDEX", b"q", b"-1"]);
        assert_eq!(b.add(&[b"LLEN", b"q"]), a);
        assert_ne!(a, c);
        assert_eq!(b.len(), 2);
    }
}
