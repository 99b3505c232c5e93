//! A durable subscription's backlog, whole per stream.
//!
//! A returning durable subscriber gets its unacknowledged backlog, read from a majority of the
//! root's rendezvous set, then live events. Members that were just restarted or cut off can lack
//! events in the middle of a stream, or not have matched them for the durable yet; if the
//! backlog skipped them and went on to later ones, the missing events would reach the
//! subscriber afterwards (by repair or live) behind events of their stream it already has: out
//! of `seq` order. So each stream of the backlog is rebuilt from its chain: from what the
//! durable acknowledged (or its first backlog event) up to its newest backlog event, every event
//! that matches the subscription, with the chain's holes fetched from the network first
//! (retried for 2 s). A hole that stays leaves that stream's backlog as the members listed it:
//! never fewer events than they listed.
//!
//! A stream's backlog also stops at the last event this node has handed to its subscribers
//! since it started: what lies beyond is still to come live through the same gap repair as for
//! any subscriber, in order; sent from the backlog first, it would overtake the live events
//! below it (a broker restarted moments before its subscriber reconnects is still repairing).

use std::collections::HashMap;
use std::time::Duration;

use libp2p::PeerId;
use tidings_ipld_schema::{Block, Cid, Event, json as ipld_json};
use tidings_matcher::Filter;

use crate::history::{self, Chain};
use crate::pubsub::error::blocking;
use crate::pubsub::held::StreamKey;
use crate::pubsub::receive::UNKNOWN_AFTER;
use crate::pubsub::router::Router;
use crate::store::Store;

/// How long a backlog waits for the holes in its streams to be fetched before it sends a
/// stream with a hole as the members listed it.
const FILL_FOR: Duration = Duration::from_secs(2);
const RETRY_FIRST: Duration = Duration::from_millis(200);

/// Backlog events with their CIDs.
type Listed = Vec<(Cid, Event)>;

/// The first backlog event of a stream whose chain below it (down to the previous backlog
/// event, or to `floor`) is not whole in `store`: its index in `list`.
fn first_hole(
    store: &Store,
    list: &[(Cid, Event)],
    idx: &[usize],
    floor: Option<u64>,
) -> Option<usize> {
    let mut below = floor;
    for &i in idx {
        let event = &list[i].1;
        if let Some(b) = below
            && event.seq > b + 1
            && !whole_between(store, event, b).unwrap_or(false)
        {
            return Some(i);
        }
        below = Some(event.seq);
    }
    None
}

/// Whether `store` holds every event of `head`'s stream above seq `down_to` and below `head`.
fn whole_between(
    store: &Store,
    head: &Event,
    down_to: u64,
) -> Result<bool, crate::store::StoreError> {
    let chain = chain_of(head, down_to);
    let found = history::chain_back(store, head, &chain)?;
    // chain_back stops at the first block it lacks: whole if it reached down_to + 1.
    Ok(found.len() as u64 == head.seq - down_to - 1)
}

fn chain_of(head: &Event, down_to: u64) -> Chain {
    Chain {
        author: head.author.clone(),
        topic: head.topic.clone(),
        after_seq: down_to,
        since_ms: 0,
        whole: false,
    }
}

impl Router {
    /// Rebuilds each stream of the backlog `list` from its chain (see the module docs), first
    /// fetching its holes from `members` for up to [`FILL_FOR`]; `acked` is the durable's
    /// acknowledged seq per stream. The result is not in any order yet.
    pub(crate) async fn backlog_whole(
        &self,
        list: Vec<(Cid, Event)>,
        acked: &HashMap<StreamKey, u64>,
        members: &[PeerId],
        filter: &Filter,
    ) -> Vec<(Cid, Event)> {
        // What this node has not handed to its subscribers yet comes live, in order, behind
        // what it has: a backlog event above that point would overtake the live ones below it
        // (a restarted broker repairing a stream while its subscriber reconnects).
        let (list, mut later): (Listed, Listed) = list.into_iter().partition(|(_, e)| {
            self.receiver()
                .last_seq(&e.author, &e.topic)
                .is_none_or(|handed| e.seq <= handed)
        });
        // Those go the live way now, through the gap repair from what was handed (this node's
        // store first): the new subscription is registered, so it gets them behind its backlog,
        // and none waits for a later event of its stream to reveal it.
        later.sort_by(|a, b| {
            (&a.1.author, &a.1.topic, a.1.seq).cmp(&(&b.1.author, &b.1.topic, b.1.seq))
        });
        let me = self.net().local_peer();
        let later: Vec<(Block, Event)> = later
            .into_iter()
            .filter_map(|(_, e)| e.to_block().ok().map(|b| (b, e)))
            .collect();
        let mut streams: HashMap<StreamKey, Vec<usize>> = HashMap::new();
        for (i, (_, e)) in list.iter().enumerate() {
            streams
                .entry((e.author.clone(), e.topic.clone()))
                .or_default()
                .push(i);
        }
        for idx in streams.values_mut() {
            idx.sort_by_key(|i| list[*i].1.seq);
        }
        let began = tokio::time::Instant::now();
        let mut wait = RETRY_FIRST;
        loop {
            let holes = self.backlog_holes(&list, &streams, acked).await;
            if holes.is_empty() {
                break;
            }
            if began.elapsed() >= FILL_FOR {
                for (key, i) in holes {
                    let seq = list[i].1.seq;
                    tracing::warn!(topic = %key.1, seq, "durable backlog: a gap below this event could not be fetched; the stream's backlog goes as the members listed it");
                }
                break;
            }
            for (key, i) in &holes {
                let (cid, event) = &list[*i];
                let down_to = previous_seq(&list, &streams[key], *i, acked.get(key).copied());
                let prev_cid = previous_cid(&list, &streams[key], *i);
                let fetched = history::fetch_chain(
                    self.net(),
                    self.store(),
                    *cid,
                    prev_cid,
                    members.to_vec(),
                    chain_of(event, down_to),
                    event.seq - down_to,
                )
                .await;
                if let Err(e) = fetched {
                    tracing::debug!(topic = %key.1, error = %e, "durable backlog: gap fetch failed");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        // Each stream rebuilt from its chain (as listed, if a hole stays).
        let store = self.store().clone();
        let filter = filter.clone();
        let acked = acked.clone();
        for (block, event) in &later {
            self.take_delivered(me, block, event, UNKNOWN_AFTER).await;
        }
        let listed = list.len();
        let out = blocking(move || Ok(rebuild(&store, &list, &streams, &acked, &filter)))
            .await
            .unwrap_or_default();
        if out.len() != listed {
            tracing::info!(
                listed,
                rebuilt = out.len(),
                "durable backlog rebuilt from the streams' chains"
            );
        }
        out
    }

    /// Per stream with a hole, the index of the first backlog event above it.
    async fn backlog_holes(
        &self,
        list: &[(Cid, Event)],
        streams: &HashMap<StreamKey, Vec<usize>>,
        acked: &HashMap<StreamKey, u64>,
    ) -> Vec<(StreamKey, usize)> {
        let store = self.store().clone();
        let list = list.to_vec();
        let streams = streams.clone();
        let acked = acked.clone();
        blocking(move || {
            Ok(streams
                .iter()
                .filter_map(|(key, idx)| {
                    first_hole(&store, &list, idx, acked.get(key).copied())
                        .map(|i| (key.clone(), i))
                })
                .collect())
        })
        .await
        .unwrap_or_default()
    }
}

/// The seq below backlog event `i` of its stream: the previous backlog event's, else the
/// durable's acknowledged one.
fn previous_seq(list: &[(Cid, Event)], idx: &[usize], i: usize, floor: Option<u64>) -> u64 {
    let pos = idx.iter().position(|j| *j == i).unwrap_or(0);
    match pos {
        0 => floor.unwrap_or(0),
        p => list[idx[p - 1]].1.seq,
    }
}

/// The CID of the backlog event before `i` in its stream, if any.
fn previous_cid(list: &[(Cid, Event)], idx: &[usize], i: usize) -> Option<Cid> {
    let pos = idx.iter().position(|j| *j == i)?;
    pos.checked_sub(1).map(|p| list[idx[p]].0)
}

/// Each stream's backlog from its chain: the events above its floor (the acknowledged seq, else
/// just below its first backlog event) up to its newest backlog event, those that match
/// `filter`, oldest first; a stream whose chain has a hole, as listed. Streams follow one
/// another in no set order.
///
/// The chain is walked from each listed event down to the one listed below it, not from the
/// newest one down: the listed events came with their blocks from the members and need not be
/// in this node's store yet (a broker just restarted), and a walk from the top would stop at
/// the first of them it lacks, dropping every listed event below (the chaos run's "delivered
/// seq 150 after 183": a backlog of 150-183 sent as 183 alone).
fn rebuild(
    store: &Store,
    list: &[(Cid, Event)],
    streams: &HashMap<StreamKey, Vec<usize>>,
    acked: &HashMap<StreamKey, u64>,
    filter: &Filter,
) -> Vec<(Cid, Event)> {
    let mut out = Vec::with_capacity(list.len());
    for (key, idx) in streams {
        let Some(&first) = idx.first() else {
            continue;
        };
        // A hole that stays: the stream's listed events as they are (never fewer).
        if first_hole(store, list, idx, acked.get(key).copied()).is_some() {
            out.extend(idx.iter().map(|i| list[*i].clone()));
            continue;
        }
        let mut below = acked
            .get(key)
            .copied()
            .unwrap_or_else(|| list[first].1.seq.saturating_sub(1));
        for &i in idx {
            let (cid, event) = &list[i];
            if event.seq > below + 1 {
                let between =
                    history::chain_back(store, event, &chain_of(event, below)).unwrap_or_default();
                out.extend(
                    between
                        .into_iter()
                        .map(|(b, e)| (b.cid, e))
                        .filter(|(_, e)| {
                            filter.matches(&e.topic, &ipld_json::ipld_to_json(&e.body))
                        }),
                );
            }
            // Listed by the members as matching: sent whatever the store holds.
            out.push((*cid, event.clone()));
            below = below.max(event.seq);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_ipld_schema::{Block, Ipld, Keypair};

    /// Events 1..=n of one author's stream on `/b/x`, body `{"n": seq}`.
    fn stream(n: u64) -> Vec<(Block, Event)> {
        let kp = Keypair::ed25519_from_bytes([5; 32]).expect("key");
        let mut prev = vec![];
        (1..=n)
            .map(|seq| {
                let body = Ipld::Map([("n".to_string(), Ipld::Integer(seq as i128))].into());
                let (e, b) =
                    Event::sign_block(&kp, "/b/x", body, seq, seq, prev.clone()).expect("sign");
                prev = vec![b.cid];
                (b, e)
            })
            .collect()
    }

    /// `rebuild` of a backlog holding `listed` (seqs) of `stream(n)`, with `stored` (seqs)
    /// in the store; the seqs it returns.
    fn rebuilt(
        n: u64,
        listed: &[u64],
        stored: &[u64],
        acked: Option<u64>,
        filter: &str,
    ) -> Vec<u64> {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        let s = stream(n);
        let held: Vec<(Block, Event)> = s
            .iter()
            .filter(|(_, e)| stored.contains(&e.seq))
            .cloned()
            .collect();
        store.insert_events(&held, &[]).expect("insert");
        let list: Vec<(Cid, Event)> = s
            .iter()
            .filter(|(_, e)| listed.contains(&e.seq))
            .map(|(b, e)| (b.cid, e.clone()))
            .collect();
        let key = (s[0].1.author.clone(), s[0].1.topic.clone());
        let streams: HashMap<StreamKey, Vec<usize>> =
            [(key.clone(), (0..list.len()).collect())].into();
        let acked: HashMap<StreamKey, u64> = acked.map(|a| (key, a)).into_iter().collect();
        let filter = Filter::parse(filter).expect("filter");
        let mut out: Vec<u64> = rebuild(&store, &list, &streams, &acked, &filter)
            .into_iter()
            .map(|(_, e)| e.seq)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_backlog_missing_matching_events_in_the_middle_gets_them_from_the_chain() {
        // The members listed 1, 2 and 5; the chain here holds 1-5: 3 and 4 are owed too.
        assert_eq!(
            rebuilt(5, &[1, 2, 5], &[1, 2, 3, 4, 5], None, "/b/**"),
            [1, 2, 3, 4, 5]
        );
        // Only what the filter matches.
        assert_eq!(
            rebuilt(5, &[2, 4], &[1, 2, 3, 4, 5], None, "/b/** where n != 3"),
            [2, 4]
        );
        // From the acknowledged seq up, even below the first listed event.
        assert_eq!(
            rebuilt(6, &[4, 6], &[1, 2, 3, 4, 5, 6], Some(1), "/b/**"),
            [2, 3, 4, 5, 6]
        );
    }

    /// Seeded random backlogs over a whole chain: the rebuild never drops a listed event.
    #[test]
    fn a_whole_chain_keeps_every_listed_event() {
        // A small seeded generator (splitmix64): the node crate has no rand.
        let mut state = 14u64;
        let mut next = move |below: u64| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % below
        };
        for _ in 0..200 {
            let n = 1 + next(39);
            let all: Vec<u64> = (1..=n).collect();
            let acked = (next(2) == 0).then(|| next(n));
            let listed: Vec<u64> = all
                .iter()
                .copied()
                .filter(|s| acked.is_none_or(|a| *s > a) && next(5) < 2)
                .collect();
            if listed.is_empty() {
                continue;
            }
            let got = rebuilt(n, &listed, &all, acked, "/b/**");
            for s in &listed {
                assert!(
                    got.contains(s),
                    "n={n} acked={acked:?} listed={listed:?} got={got:?}"
                );
            }
            let floor = acked.unwrap_or(listed[0] - 1);
            let top = listed[listed.len() - 1];
            assert_eq!(got, ((floor + 1)..=top).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_backlog_stream_with_a_hole_in_its_chain_goes_as_listed() {
        // Seq 4 is held nowhere here: the stream's listed events stay as they are.
        assert_eq!(
            rebuilt(6, &[1, 2, 5, 6], &[1, 2, 3, 5, 6], None, "/b/**"),
            [1, 2, 5, 6]
        );
        // A hole between the acknowledged seq and the first listed event: the same.
        assert_eq!(rebuilt(6, &[4, 5], &[1, 4, 5], Some(1), "/b/**"), [4, 5]);
        // Whole: everything listed.
        assert_eq!(rebuilt(3, &[1, 2, 3], &[1, 2, 3], None, "/b/**"), [1, 2, 3]);
    }

    /// A broker just restarted holds the stream only up to what it had before: the backlog
    /// events the members listed above that come with their blocks but are not in its store.
    /// They are all sent (a walk from the newest one down through the store stopped at once and
    /// sent 6 alone), with the events between the acknowledged seq and them from the chain.
    #[test]
    fn listed_events_missing_from_the_store_are_all_sent() {
        assert_eq!(
            rebuilt(6, &[3, 4, 5, 6], &[1, 2], Some(1), "/b/**"),
            [2, 3, 4, 5, 6]
        );
        assert_eq!(rebuilt(6, &[3, 4, 5, 6], &[], None, "/b/**"), [3, 4, 5, 6]);
        // Listed 3 and 6, the store holds 4 and 5 but not the listed ones: whole between them.
        assert_eq!(
            rebuilt(6, &[3, 6], &[1, 2, 4, 5], Some(2), "/b/**"),
            [3, 4, 5, 6]
        );
    }
}
