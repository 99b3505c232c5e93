//! What each subscription connection sent, so a client that reconnects with `Last-Event-ID`
//! (an `EventSource` does so by itself) can be sent what it missed and nothing it had.
//!
//! On one connection, a client that received event X received everything sent before X. So
//! the node keeps, per connection, the events it sent (CID hash and `time`, the last
//! [`PER_STREAM`]: 64 KiB at most), for [`KEEP_ENDED`] after the connection ends (16 MiB of
//! ended connections at most). A reconnection naming X is
//! resumed with a replay from a minute before the oldest event that may not have arrived (X
//! and everything sent after it), skipping what was sent up to X. When the earlier connection
//! is unknown (the node restarted), the replay starts a minute before X and only X is skipped:
//! nothing is lost, a few events may come again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Events remembered per connection.
pub const PER_STREAM: usize = 4096;
/// How long an ended connection is remembered.
pub const KEEP_ENDED: Duration = Duration::from_secs(600);
/// Slack for authors' clocks: a resumed replay starts this much before the events it must
/// cover, since events are replayed by their `time`, which is the author's clock.
pub const CLOCK_SLACK_MS: u64 = 60_000;
/// Most events remembered of ended connections, all together (16 bytes each): the oldest
/// ended connections are forgotten first.
const MAX_ENDED_EVENTS: usize = 1 << 20;

/// (filter source, durable name): connections that can resume each other.
type Key = (Arc<str>, Option<String>);

/// One connection's record.
struct Log {
    key: Key,
    /// (CID hash, event time) of what was sent, oldest first.
    sent: VecDeque<(u64, u64)>,
    /// When the connection ended, if it has.
    ended: Option<Instant>,
    /// Tells a live connection it has been replaced.
    replaced: watch::Sender<bool>,
}

/// The registry of connections' logs.
#[derive(Default)]
pub struct Sent {
    hasher: std::collections::hash_map::RandomState,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    logs: HashMap<u64, Arc<Mutex<Log>>>,
    by_key: HashMap<Key, Vec<u64>>,
    /// (when, id, events remembered) of ended connections, oldest first.
    ended: VecDeque<(Instant, u64, usize)>,
    /// The events remembered of ended connections.
    ended_events: usize,
}

/// A connection's handle: records what it sends; marks it ended when dropped.
pub struct Stream {
    id: u64,
    log: Arc<Mutex<Log>>,
    sent: Arc<Sent>,
    /// Becomes `true` when a newer connection resuming the same durable replaces this one.
    pub replaced: watch::Receiver<bool>,
}

/// How to resume after `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Replay stored events from this time (ms).
    pub since: u64,
    /// CID hashes of events the client had: not to be sent again.
    pub skip: HashSet<u64>,
    /// Whether the earlier connection was known (else: a few events may repeat).
    pub exact: bool,
}

impl Sent {
    /// The hash this registry keeps of a CID.
    pub fn hash(&self, cid: &str) -> u64 {
        self.hasher.hash_one(cid)
    }

    /// Starts recording a connection of `filter` (and durable `durable`).
    pub fn open(self: &Arc<Self>, filter: &str, durable: Option<&str>) -> Stream {
        let (tx, rx) = watch::channel(false);
        let key: Key = (filter.into(), durable.map(str::to_string));
        let log = Arc::new(Mutex::new(Log {
            key: key.clone(),
            sent: VecDeque::new(),
            ended: None,
            replaced: tx,
        }));
        let id = match self.inner.lock() {
            Ok(mut inner) => {
                inner.forget_old(Instant::now());
                let id = inner.next;
                inner.next += 1;
                inner.logs.insert(id, log.clone());
                inner.by_key.entry(key).or_default().push(id);
                id
            }
            Err(_) => u64::MAX,
        };
        Stream {
            id,
            log,
            sent: self.clone(),
            replaced: rx,
        }
    }

    /// How to resume a connection of `filter` (and `durable`) whose client last received the
    /// event `last` (its CID), if a connection that sent it is remembered: a live one of a
    /// durable subscription is told it has been replaced.
    pub fn resume(&self, filter: &str, durable: Option<&str>, last: &str) -> Option<Resume> {
        let h = self.hash(last);
        let key: Key = (filter.into(), durable.map(str::to_string));
        let logs: Vec<Arc<Mutex<Log>>> = {
            let inner = self.inner.lock().ok()?;
            inner
                .by_key
                .get(&key)?
                .iter()
                .filter_map(|id| inner.logs.get(id).cloned())
                .collect()
        };
        // Prefer ended connections (the client's own, most likely), the latest first.
        let mut found: Option<(Option<Instant>, Resume, Arc<Mutex<Log>>)> = None;
        for log in logs {
            let Ok(l) = log.lock() else { continue };
            let Some(pos) = l.sent.iter().rposition(|(c, _)| *c == h) else {
                continue;
            };
            let oldest_unsure = l.sent.iter().skip(pos).map(|(_, t)| *t).min().unwrap_or(0);
            let resume = Resume {
                since: oldest_unsure.saturating_sub(CLOCK_SLACK_MS),
                skip: l.sent.iter().take(pos + 1).map(|(c, _)| *c).collect(),
                exact: true,
            };
            let better = match &found {
                None => true,
                Some((None, ..)) => l.ended.is_some(),
                Some((Some(t), ..)) => l.ended.is_some_and(|e| e > *t),
            };
            if better {
                found = Some((l.ended, resume, log.clone()));
            }
        }
        let (ended, resume, log) = found?;
        if ended.is_none()
            && durable.is_some()
            && let Ok(l) = log.lock()
        {
            // One connection per durable: the client is back on a new one, so the old one
            // (which it no longer reads) is replaced rather than the new one refused.
            let _ = l.replaced.send(true);
        }
        Some(resume)
    }

    /// Resuming without a remembered connection: from a minute before `last_time`, skipping
    /// only the named event.
    pub fn resume_unknown(&self, last: &str, last_time: u64) -> Resume {
        Resume {
            since: last_time.saturating_sub(CLOCK_SLACK_MS),
            skip: [self.hash(last)].into_iter().collect(),
            exact: false,
        }
    }

    fn ended(&self, id: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            let now = Instant::now();
            let mut kept = 0;
            if let Some(log) = inner.logs.get(&id)
                && let Ok(mut l) = log.lock()
            {
                l.ended = Some(now);
                kept = l.sent.len();
            }
            inner.ended.push_back((now, id, kept));
            inner.ended_events += kept;
            inner.forget_old(now);
        }
    }
}

impl Inner {
    /// Forgets connections that ended more than [`KEEP_ENDED`] ago, and the oldest ended ones
    /// while they hold more than [`MAX_ENDED_EVENTS`].
    fn forget_old(&mut self, now: Instant) {
        while let Some(&(at, id, kept)) = self.ended.front() {
            if now.duration_since(at) < KEEP_ENDED && self.ended_events <= MAX_ENDED_EVENTS {
                break;
            }
            self.ended.pop_front();
            self.ended_events -= kept;
            if let Some(log) = self.logs.remove(&id) {
                let key = log.lock().map(|l| l.key.clone()).ok();
                if let Some(key) = key
                    && let Some(ids) = self.by_key.get_mut(&key)
                {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_key.remove(&key);
                    }
                }
            }
        }
    }
}

impl Stream {
    /// Records that the event `cid` (with `time`) was sent on this connection.
    pub fn sent(&self, cid: &str, time: u64) {
        let h = self.sent.hash(cid);
        if let Ok(mut l) = self.log.lock() {
            if l.sent.len() == PER_STREAM {
                l.sent.pop_front();
            }
            l.sent.push_back((h, time));
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.sent.ended(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_connection_skips_what_arrived_and_replays_from_before_what_may_not_have() {
        let sent = Arc::new(Sent::default());
        let s = sent.open("/a/**", None);
        for (i, t) in [(1, 100_000), (2, 90_000), (3, 200_000), (4, 300_000)] {
            s.sent(&format!("cid{i}"), t);
        }
        drop(s);
        let r = sent.resume("/a/**", None, "cid2").expect("known");
        assert!(r.exact);
        assert_eq!(r.since, 90_000 - CLOCK_SLACK_MS);
        let want: HashSet<u64> = ["cid1", "cid2"].iter().map(|c| sent.hash(c)).collect();
        assert_eq!(r.skip, want);
        // Another filter, or a CID never sent, is not resumed from this connection.
        assert!(sent.resume("/b/**", None, "cid2").is_none());
        assert!(sent.resume("/a/**", None, "cid9").is_none());
        assert!(sent.resume("/a/**", Some("d"), "cid2").is_none());
        let u = sent.resume_unknown("cid9", 500_000);
        assert!(!u.exact && u.since == 500_000 - CLOCK_SLACK_MS && u.skip.len() == 1);
    }

    #[test]
    fn a_live_durable_connection_is_replaced_by_one_that_resumes_it() {
        let sent = Arc::new(Sent::default());
        let s = sent.open("/a/**", Some("d"));
        s.sent("x", 1);
        assert!(!*s.replaced.borrow());
        assert!(sent.resume("/a/**", Some("d"), "x").is_some());
        assert!(*s.replaced.borrow());
        // A plain connection is never replaced: two clients may share a filter.
        let p = sent.open("/a/**", None);
        p.sent("x", 1);
        assert!(sent.resume("/a/**", None, "x").is_some());
        assert!(!*p.replaced.borrow());
    }

    #[test]
    fn only_the_last_events_of_a_connection_are_kept() {
        let sent = Arc::new(Sent::default());
        let s = sent.open("/a/**", None);
        for i in 0..PER_STREAM + 10 {
            s.sent(&format!("c{i}"), i as u64);
        }
        assert!(sent.resume("/a/**", None, "c5").is_none());
        let r = sent.resume("/a/**", None, "c100").expect("kept");
        assert_eq!(r.skip.len(), 100 - 10 + 1);
    }
}
