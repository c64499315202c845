//! Noticing that mounted files changed. Kubernetes updates Secret and ConfigMap volumes in place
//! by swapping a symlink, which file-change notifications on the file itself do not reliably
//! report, so the contents are read and compared on an interval (a few small files: cheap).

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The contents of the watched files, in order; `None` for one that cannot be read.
pub type Contents = Vec<Option<Vec<u8>>>;

/// A set of files and the contents last accepted.
pub struct FileWatch {
    paths: Vec<PathBuf>,
    accepted: Contents,
    tick: Interval,
}

impl FileWatch {
    /// Watches `paths`, checking every `every`; their current contents count as accepted.
    pub fn new(paths: Vec<PathBuf>, every: Duration) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let accepted = read(&paths);
        FileWatch {
            paths,
            accepted,
            tick,
        }
    }

    /// Waits until every file is readable and their contents differ from the accepted ones,
    /// and returns them; `None` once `token` is cancelled. The caller [`accept`](Self::accept)s
    /// what it used; what it does not accept (a half-written pair) is offered again next time.
    pub async fn changed(&mut self, token: &CancellationToken) -> Option<Contents> {
        loop {
            tokio::select! {
                () = token.cancelled() => return None,
                _ = self.tick.tick() => {}
            }
            let now = read(&self.paths);
            if now != self.accepted && now.iter().all(Option::is_some) {
                return Some(now);
            }
        }
    }

    /// Marks `contents` as handled.
    pub fn accept(&mut self, contents: Contents) {
        self.accepted = contents;
    }
}

fn read(paths: &[PathBuf]) -> Contents {
    paths.iter().map(|p| std::fs::read(p).ok()).collect()
}
