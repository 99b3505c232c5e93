//! Rendezvous sets (docs/protocols.md): the `K` brokers closest, by Kademlia XOR distance, to
//! `sha256("tidings/rv/" + root)`; the primary for a topic is the member closest to
//! `sha256(topic)`. Distances use rust-libp2p's own keys (sha256 of the peer-id bytes).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use libp2p::PeerId;
use libp2p::kad::{KBucketKey, RecordKey};

/// Default number of brokers in a rendezvous set.
pub const DEFAULT_REPLICATION: usize = 3;

/// The Kademlia key a root's rendezvous set is chosen by.
pub fn root_key(root: &str) -> KBucketKey<RecordKey> {
    KBucketKey::new(RecordKey::new(&format!("tidings/rv/{root}")))
}

/// The Kademlia key a topic's primary is chosen by.
pub fn topic_key(topic: &str) -> KBucketKey<RecordKey> {
    KBucketKey::new(RecordKey::new(&topic))
}

/// The `k` brokers closest to `root`'s key, closest first.
pub fn set_for_root(brokers: &BTreeSet<PeerId>, root: &str, k: usize) -> Vec<PeerId> {
    let key = root_key(root);
    let mut v: Vec<PeerId> = brokers.iter().copied().collect();
    // Cached: each peer's key is a sha256, worth computing once per peer, not per comparison.
    v.sort_by_cached_key(|p| KBucketKey::from(*p).distance(&key));
    v.truncate(k.max(1));
    v
}

/// Roots whose sets a [`SetCache`] keeps at most (a node serves few roots at once; past this
/// it starts again empty).
const CACHED_SETS: usize = 1024;

/// The rendezvous sets computed since the brokers last changed, by root: a publish asks for
/// its root's set two or three times, and computing it hashes every broker's key.
#[derive(Debug, Default)]
pub struct SetCache {
    /// The directory epoch the sets were computed in, and the sets.
    sets: Mutex<(u64, HashMap<String, Vec<PeerId>>)>,
}

impl SetCache {
    /// [`set_for_root`] of `brokers` as of directory `epoch`: kept until the epoch moves.
    pub fn set_for_root(
        &self,
        epoch: u64,
        brokers: &BTreeSet<PeerId>,
        root: &str,
        k: usize,
    ) -> Vec<PeerId> {
        let Ok(mut cache) = self.sets.lock() else {
            return set_for_root(brokers, root, k);
        };
        let (at, sets) = &mut *cache;
        if *at != epoch {
            *at = epoch;
            sets.clear();
        }
        if let Some(set) = sets.get(root) {
            return set.clone();
        }
        let set = set_for_root(brokers, root, k);
        if sets.len() >= CACHED_SETS {
            sets.clear();
        }
        sets.insert(root.to_owned(), set.clone());
        set
    }
}

/// The members of `set` in the order a publisher tries them for `topic`: primary first.
pub fn publish_order(set: &[PeerId], topic: &str) -> Vec<PeerId> {
    let key = topic_key(topic);
    let mut v = set.to_vec();
    v.sort_by_cached_key(|p| KBucketKey::from(*p).distance(&key));
    v
}

/// How many copies make a majority of a set of `k`: ⌊k/2⌋+1.
pub fn majority(k: usize) -> usize {
    k / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> BTreeSet<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn set_is_the_k_closest_by_xor_distance() {
        let brokers = peers(20);
        let set = set_for_root(&brokers, "stocks", 3);
        assert_eq!(set.len(), 3);
        let key = root_key("stocks");
        let worst_in = set
            .iter()
            .map(|p| KBucketKey::from(*p).distance(&key))
            .max()
            .unwrap();
        for p in brokers.iter().filter(|p| !set.contains(p)) {
            assert!(KBucketKey::from(*p).distance(&key) > worst_in);
        }
    }

    #[test]
    fn fewer_brokers_than_k_gives_all_of_them_and_roots_spread() {
        let brokers = peers(2);
        assert_eq!(set_for_root(&brokers, "x", 3).len(), 2);
        let brokers = peers(10);
        let primaries: BTreeSet<PeerId> = (0..50)
            .map(|i| set_for_root(&brokers, &format!("root{i}"), 3)[0])
            .collect();
        assert!(primaries.len() > 3, "roots should spread over brokers");
    }

    /// `n` brokers whose ids come from fixed keys.
    fn seeded_peers(n: u8) -> BTreeSet<PeerId> {
        (1..=n)
            .map(|i| {
                let key = libp2p::identity::Keypair::ed25519_from_bytes([i; 32]).unwrap();
                key.public().to_peer_id()
            })
            .collect()
    }

    #[test]
    fn kept_sets_are_those_computed_for_the_brokers_of_their_epoch() {
        let cache = SetCache::default();
        let roots: Vec<String> = (0..40).map(|i| format!("root{i}")).collect();
        let few = seeded_peers(4);
        for _ in 0..2 {
            for root in &roots {
                assert_eq!(
                    cache.set_for_root(1, &few, root, 3),
                    set_for_root(&few, root, 3)
                );
            }
        }
        // The brokers changed and the epoch moved: every set is computed again.
        let more = seeded_peers(12);
        let mut moved = 0;
        for root in &roots {
            let now = cache.set_for_root(2, &more, root, 3);
            assert_eq!(now, set_for_root(&more, root, 3));
            moved += usize::from(now != set_for_root(&few, root, 3));
        }
        // Otherwise the comparison above could not tell a kept set from a new one.
        assert!(
            moved > 10,
            "only {moved} of 40 sets changed with 8 more brokers"
        );
    }

    #[test]
    fn majority_of_k() {
        assert_eq!(
            (majority(1), majority(2), majority(3), majority(5)),
            (1, 2, 2, 3)
        );
    }
}
