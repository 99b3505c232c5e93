//! Rendezvous duty: subscriptions leased here by subscribers' nodes, in one matcher tree.
//! Leases expire unless renewed, so subscriptions of vanished nodes clean themselves up.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tidings_matcher::{Filter, Matcher, ParallelSearchTree, SubId};

use crate::age::now_ms;

struct Entry {
    peer: PeerId,
    remote_id: u64,
    src: String,
    root: String,
    expires: Instant,
    /// When the subscription was first leased here (ms since epoch): older events were never
    /// meant for it.
    since_ms: u64,
}

#[derive(Default)]
struct Inner {
    tree: ParallelSearchTree,
    by_key: HashMap<(PeerId, u64), SubId>,
    entries: HashMap<SubId, Entry>,
    next: SubId,
    scratch: Vec<SubId>,
}

/// Subscriptions this node holds as a rendezvous member.
#[derive(Default)]
pub struct RemoteSubs {
    inner: Mutex<Inner>,
}

impl RemoteSubs {
    /// Registers or renews `peer`'s subscription `remote_id` for `lease`. A renewal with another
    /// filter replaces the old one.
    pub fn lease(
        &self,
        peer: PeerId,
        remote_id: u64,
        src: &str,
        lease: Duration,
    ) -> Result<(), String> {
        self.lease_since(peer, remote_id, src, lease, now_ms())
    }

    fn lease_since(
        &self,
        peer: PeerId,
        remote_id: u64,
        src: &str,
        lease: Duration,
        since_ms: u64,
    ) -> Result<(), String> {
        let filter = Filter::parse(src).map_err(|e| format!("bad filter: {e}"))?;
        let Ok(mut inner) = self.inner.lock() else {
            return Err("registry unavailable".into());
        };
        let expires = Instant::now() + lease;
        if let Some(id) = inner.by_key.get(&(peer, remote_id)).copied() {
            let same = inner.entries.get(&id).is_some_and(|e| e.src == src);
            if same {
                if let Some(e) = inner.entries.get_mut(&id) {
                    e.expires = expires;
                }
                return Ok(());
            }
            inner.tree.remove(id);
            inner.entries.remove(&id);
            inner.by_key.remove(&(peer, remote_id));
        }
        let id = inner.next;
        inner.next += 1;
        inner.tree.insert(id, &filter);
        inner.by_key.insert((peer, remote_id), id);
        inner.entries.insert(
            id,
            Entry {
                peer,
                remote_id,
                src: src.to_string(),
                root: filter.root().to_string(),
                expires,
                since_ms,
            },
        );
        Ok(())
    }

    /// Takes in a lease another member of the set holds (a broker that just started learns the
    /// subscriptions it must route to): added if absent, and never shortened.
    pub fn adopt(
        &self,
        peer: PeerId,
        remote_id: u64,
        src: &str,
        remaining: Duration,
        since_ms: u64,
    ) -> Result<(), String> {
        let held_longer = self.inner.lock().is_ok_and(|inner| {
            inner
                .by_key
                .get(&(peer, remote_id))
                .and_then(|id| inner.entries.get(id))
                .is_some_and(|e| e.src == src && e.expires >= Instant::now() + remaining)
        });
        if held_longer {
            return Ok(());
        }
        self.lease_since(peer, remote_id, src, remaining, since_ms)
    }

    /// When `peer`'s oldest subscription held here started (ms since epoch).
    pub fn since_ms(&self, peer: PeerId) -> Option<u64> {
        let inner = self.inner.lock().ok()?;
        inner
            .entries
            .values()
            .filter(|e| e.peer == peer)
            .map(|e| e.since_ms)
            .min()
    }

    /// The leases of `root` held here: (peer, its subscription id, filter, time left, start).
    pub fn leases_of(&self, root: &str) -> Vec<(PeerId, u64, String, Duration, u64)> {
        let now = Instant::now();
        self.inner
            .lock()
            .map(|i| {
                i.entries
                    .values()
                    .filter(|e| e.root == root && e.expires > now)
                    .map(|e| {
                        (
                            e.peer,
                            e.remote_id,
                            e.src.clone(),
                            e.expires - now,
                            e.since_ms,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops `peer`'s subscription `remote_id`.
    pub fn cancel(&self, peer: PeerId, remote_id: u64) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(id) = inner.by_key.remove(&(peer, remote_id))
        {
            inner.tree.remove(id);
            inner.entries.remove(&id);
        }
    }

    /// Drops every lease past its expiry; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        let dead: Vec<SubId> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            inner.tree.remove(*id);
            if let Some(e) = inner.entries.remove(id) {
                inner.by_key.remove(&(e.peer, e.remote_id));
            }
        }
        dead.len()
    }

    /// The nodes with at least one subscription matching the event, each once.
    pub fn matching_peers(&self, topic: &str, body: &serde_json::Value) -> Vec<PeerId> {
        let Ok(mut guard) = self.inner.lock() else {
            return Vec::new();
        };
        let inner = &mut *guard;
        let mut hits = std::mem::take(&mut inner.scratch);
        inner.tree.match_event(topic, body, &mut hits);
        let peers: BTreeSet<PeerId> = hits
            .iter()
            .filter_map(|id| inner.entries.get(id).map(|e| e.peer))
            .collect();
        inner.scratch = hits;
        peers.into_iter().collect()
    }

    /// Number of leased subscriptions.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.entries.len())
    }

    /// Whether none are leased.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Roots with leased subscriptions.
    pub fn roots(&self) -> BTreeSet<String> {
        self.inner
            .lock()
            .map(|i| i.entries.values().map(|e| e.root.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leases_match_renew_replace_cancel_and_expire() {
        let r = RemoteSubs::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        r.lease(a, 1, "/s/** where p < 10", Duration::from_secs(30))
            .unwrap();
        r.lease(a, 2, "/s/x", Duration::from_secs(30)).unwrap();
        r.lease(b, 1, "/s/x", Duration::from_millis(0)).unwrap();
        assert_eq!(r.len(), 3);
        // Two of a's subscriptions match: a appears once.
        let m = r.matching_peers("/s/x", &json!({"p": 1}));
        assert_eq!(m.len(), 2);
        assert!(
            r.lease(a, 3, "/s/** where", Duration::from_secs(1))
                .is_err()
        );
        // Replace a's #1 with a filter that does not match.
        r.lease(a, 1, "/s/** where p > 100", Duration::from_secs(30))
            .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.expire(Instant::now()), 1, "b's zero lease expires");
        r.cancel(a, 2);
        assert!(r.matching_peers("/s/x", &json!({"p": 1})).is_empty());
        assert_eq!(r.roots(), BTreeSet::from(["s".to_string()]));
    }
}
