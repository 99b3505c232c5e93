//! Rendezvous sets (docs/protocols.md): the `K` brokers closest, by Kademlia XOR distance, to
//! `sha256("tidings/rv/" + root)`; the primary for a topic is the member closest to
//! `sha256(topic)`. Distances use rust-libp2p's own keys (sha256 of the peer-id bytes).

use std::collections::BTreeSet;

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
    v.sort_by_key(|p| KBucketKey::from(*p).distance(&key));
    v.truncate(k.max(1));
    v
}

/// The members of `set` in the order a publisher tries them for `topic`: primary first.
pub fn publish_order(set: &[PeerId], topic: &str) -> Vec<PeerId> {
    let key = topic_key(topic);
    let mut v = set.to_vec();
    v.sort_by_key(|p| KBucketKey::from(*p).distance(&key));
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

    #[test]
    fn majority_of_k() {
        assert_eq!(
            (majority(1), majority(2), majority(3), majority(5)),
            (1, 2, 2, 3)
        );
    }
}
