//! The rendezvous member's side of `/tidings/history/1`: durable subscription records and
//! pages of stored events for backlogs and replays. Pure store work: callers run it off the
//! async runtime.

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tidings_ipld_schema::{Event, json as ipld_json};
use tidings_matcher::Filter;

use crate::net::batch::{Batch, Budget, pair_size};
use crate::net::history::{Ack, HistoryRequest, HistoryResponse, Tip, TipsFrom};
use crate::store::{DurableRecord, Store, StoreError, StreamTip};

/// Log entries read per store transaction while scanning.
const SCAN_CHUNK: usize = 2048;
/// Most log entries one page request scans, so a sparse filter cannot hold a member for long.
const SCAN_LIMIT: usize = 100_000;
/// Most events in a page, whatever is asked (and at most
/// [`MESSAGE_BUDGET`](crate::net::batch::MESSAGE_BUDGET) bytes of them).
pub const MAX_PAGE: u32 = 4096;
/// Most stream tips and durable records in one `Tips` answer (and at most
/// [`MESSAGE_BUDGET`](crate::net::batch::MESSAGE_BUDGET)
/// bytes of them).
pub const MAX_TIPS: usize = 16 * 1024;
/// Upper bound of the CBOR framing of one tip (its field names, headers, `seq` and `pruned`).
const TIP_OVERHEAD: usize = 64;

/// Key of `peer`'s durable `name` in the store.
pub fn key(peer: &PeerId, name: &str) -> String {
    format!("{peer}/{name}")
}

/// Answers one request from `peer`.
pub fn serve(store: &Store, peer: PeerId, req: HistoryRequest, now_ms: u64) -> HistoryResponse {
    match serve_inner(store, peer, req, now_ms) {
        Ok(r) => r,
        Err(e) => HistoryResponse::Refused(format!("store: {e}")),
    }
}

fn serve_inner(
    store: &Store,
    peer: PeerId,
    req: HistoryRequest,
    now_ms: u64,
) -> Result<HistoryResponse, StoreError> {
    match req {
        HistoryRequest::DurableOpen {
            name,
            filter,
            since,
        } => {
            let f = match Filter::parse(&filter) {
                Ok(f) => f,
                Err(e) => return Ok(HistoryResponse::Refused(format!("bad filter: {e}"))),
            };
            let root = f.root().to_string();
            // A new durable starts live: at the end of the log as it is now (or at its
            // beginning when it asks for history).
            let start = if since.is_some() {
                0
            } else {
                store.log_next(&root)?
            };
            store.update_durable(&key(&peer, &name), move |cur| match cur {
                Some(rec) if rec.filter != filter => {
                    let msg = format!(
                        "durable subscription {name:?} exists with another filter ({:?}); delete it first",
                        rec.filter
                    );
                    (Some(rec), HistoryResponse::Conflict(msg))
                }
                Some(mut rec) => {
                    rec.last_used_ms = now_ms;
                    (Some(rec), HistoryResponse::Ok { existed: true })
                }
                None => (
                    Some(DurableRecord {
                        filter,
                        root,
                        start,
                        since,
                        acked: Vec::new(),
                        last_used_ms: now_ms,
                        created_ms: now_ms,
                    }),
                    HistoryResponse::Ok { existed: false },
                ),
            })
        }
        HistoryRequest::DurableAck { name, acks } => {
            store.update_durable(&key(&peer, &name), move |cur| match cur {
                Some(mut rec) => {
                    for a in &acks {
                        rec.ack(&a.author, &a.topic, a.seq);
                    }
                    rec.last_used_ms = now_ms;
                    (Some(rec), HistoryResponse::Ok { existed: true })
                }
                None => (None, HistoryResponse::NotFound),
            })
        }
        HistoryRequest::DurableDelete { name } => {
            store.update_durable(&key(&peer, &name), move |cur| match cur {
                Some(_) => (None, HistoryResponse::Ok { existed: true }),
                None => (None, HistoryResponse::NotFound),
            })
        }
        // Leases live in the router, which answers this before the store is asked.
        HistoryRequest::Leases { .. } => Ok(HistoryResponse::Refused(
            "leases are not kept in the store".into(),
        )),
        HistoryRequest::Tips { root, from } => tips(store, &root, from, Budget::items(MAX_TIPS)),
        HistoryRequest::Query {
            filter,
            durable,
            since,
            cursor,
            max_events,
        } => {
            let f = match Filter::parse(&filter) {
                Ok(f) => f,
                Err(e) => return Ok(HistoryResponse::Refused(format!("bad filter: {e}"))),
            };
            let (start, since, rec) = match durable {
                Some(name) => match store.durable(&key(&peer, &name))? {
                    Some(rec) => (cursor.max(rec.start), rec.since, Some(rec)),
                    None => return Ok(HistoryResponse::NotFound),
                },
                None => (cursor, since, None),
            };
            let budget = Budget::items(max_events.clamp(1, MAX_PAGE) as usize);
            page(store, &f, start, since, rec.as_ref(), budget)
        }
    }
}

/// One `Tips` answer: the root's stream tips from `from` on, then its durable records, up to
/// `budget`, with where the next answer continues.
fn tips(
    store: &Store,
    root: &str,
    from: Option<TipsFrom>,
    budget: Budget,
) -> Result<HistoryResponse, StoreError> {
    // Streams first (from a stream, or the first), then durables (from a key, or the first).
    let (streams_from, durables_from) = match from {
        None => (Some(None), None),
        Some(TipsFrom::Stream { author, topic }) => (Some(Some((author.into_vec(), topic))), None),
        Some(TipsFrom::Durable(key)) => (None, Some(key)),
    };
    let mut batch = Batch::new(budget);
    let mut next = None;
    if let Some(at) = streams_from {
        let at = at.as_ref().map(|(a, t)| (a.as_slice(), t.as_str()));
        store.stream_tips_from(root, at, |t| {
            let size = t.author.len() + t.topic.len() + t.cid.to_bytes().len() + TIP_OVERHEAD;
            match batch.push(TipsItem::Stream(t), size) {
                Ok(()) => true,
                Err(item) => {
                    next = item.resume();
                    false
                }
            }
        })?;
    }
    if next.is_none() {
        let mut failed = None;
        store.durables_from(durables_from.as_deref(), |key, rec| {
            if rec.root != root {
                return true;
            }
            let bytes = match serde_ipld_dagcbor::to_vec(&rec) {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(StoreError::Corrupt(format!("durable record: {e}")));
                    return false;
                }
            };
            let size = pair_size(key.as_bytes(), &bytes);
            match batch.push(TipsItem::Durable(key, ByteBuf::from(bytes)), size) {
                Ok(()) => true,
                Err(item) => {
                    next = item.resume();
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let (mut streams, mut durables) = (Vec::new(), Vec::new());
    for item in batch.into_items() {
        match item {
            TipsItem::Stream(t) => streams.push(Tip {
                author: ByteBuf::from(t.author),
                topic: t.topic,
                seq: t.seq,
                cid: ByteBuf::from(t.cid.to_bytes()),
                pruned: t.pruned,
            }),
            TipsItem::Durable(key, bytes) => durables.push((key, bytes)),
        }
    }
    Ok(HistoryResponse::Tips {
        streams,
        durables,
        next,
    })
}

/// What a `Tips` answer carries, in order: stream tips, then durable records.
enum TipsItem {
    Stream(StreamTip),
    Durable(String, ByteBuf),
}

impl TipsItem {
    /// Where the next answer starts when this item did not fit.
    fn resume(self) -> Option<TipsFrom> {
        Some(match self {
            TipsItem::Stream(t) => TipsFrom::Stream {
                author: ByteBuf::from(t.author),
                topic: t.topic,
            },
            TipsItem::Durable(key, _) => TipsFrom::Durable(key),
        })
    }
}

/// Scans the root's log from `start` for events matching `f` (and `since`, and above the
/// durable's acks).
fn page(
    store: &Store,
    f: &Filter,
    start: u64,
    since: Option<u64>,
    rec: Option<&DurableRecord>,
    budget: Budget,
) -> Result<HistoryResponse, StoreError> {
    let acked: Vec<Ack> = rec
        .map(|r| {
            r.acked
                .iter()
                .map(|(a, t, s)| Ack {
                    author: a.clone(),
                    topic: t.clone(),
                    seq: *s,
                })
                .collect()
        })
        .unwrap_or_default();
    // The acknowledgements ride in the same message: what they take, the events cannot.
    let acked_bytes: usize = acked
        .iter()
        .map(|a| a.author.len() + a.topic.len() + TIP_OVERHEAD)
        .sum();
    let mut events = Batch::new(budget.less(acked_bytes));
    let mut pos = start;
    let mut scanned = 0;
    let next = loop {
        let (entries, after) = store.log_blocks(f.root(), pos, SCAN_CHUNK)?;
        let mut stopped_at = None;
        for (p, cid, data) in entries {
            if events.is_full() || scanned >= SCAN_LIMIT {
                stopped_at = Some(p);
                break;
            }
            scanned += 1;
            // Stored blocks were verified on the way in.
            let Some(event) = Event::decode_stored(&data) else {
                continue;
            };
            if since.is_some_and(|s| event.time < s)
                || rec.is_some_and(|r| event.seq <= r.acked_seq(&event.author, &event.topic))
                || !f.matches(&event.topic, &ipld_json::ipld_to_json(&event.body))
            {
                continue;
            }
            let cid = cid.to_bytes();
            let size = pair_size(&cid, &data);
            if events
                .push((ByteBuf::from(cid), ByteBuf::from(data)), size)
                .is_err()
            {
                // Read again from here for the next page.
                stopped_at = Some(p);
                break;
            }
        }
        match (stopped_at, after) {
            (Some(p), _) => break Some(p),
            (None, Some(p)) => pos = p,
            (None, None) => break None,
        }
    };
    Ok(HistoryResponse::Page {
        events: events.into_items(),
        next,
        acked,
    })
}

/// Takes in a durable record another member of its set holds (replica sync), so a member that
/// was away or joined the set late keeps the subscription too. A record not held here is
/// copied with its backlog starting at its creation time (log positions are per node); one
/// held with the same filter takes the higher acks. A record unused for longer than
/// `expiry_ms` is not taken in: this node expired its copy (or is about to), and the member
/// that sent it will expire its own; taking it back would bring it to life again, its backlog
/// pinning the log from the start. Returns whether anything changed.
pub fn merge_synced(
    store: &Store,
    key: &str,
    theirs: DurableRecord,
    now_ms: u64,
    expiry_ms: u64,
) -> Result<bool, StoreError> {
    let expired = now_ms.saturating_sub(theirs.last_used_ms) > expiry_ms;
    store.update_durable(key, move |cur| match cur {
        None if expired => (None, false),
        None => {
            let since = match (theirs.since, theirs.created_ms) {
                (Some(s), _) => Some(s),
                (None, 0) => None,
                (None, created) => Some(created),
            };
            let copy = DurableRecord {
                start: 0,
                since,
                ..theirs
            };
            (Some(copy), true)
        }
        Some(mut rec) if rec.filter == theirs.filter => {
            let before = rec.clone();
            for (author, topic, seq) in &theirs.acked {
                rec.ack(author, topic, *seq);
            }
            rec.last_used_ms = rec.last_used_ms.max(theirs.last_used_ms);
            let changed = rec != before;
            (Some(rec), changed)
        }
        // Another filter under the same name: the subscriber's node settles that on open.
        Some(rec) => (Some(rec), false),
    })
}

/// Drops durables unused for longer than `expiry_ms`; returns how many.
pub fn expire(store: &Store, now_ms: u64, expiry_ms: u64) -> Result<usize, StoreError> {
    let mut gone = 0;
    for (k, rec) in store.durables()? {
        if now_ms.saturating_sub(rec.last_used_ms) > expiry_ms {
            store.update_durable(&k, |_| (None, ()))?;
            tracing::info!(durable = %k, "durable subscription expired (unused)");
            gone += 1;
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::batch::MESSAGE_BUDGET;
    use crate::net::wire;
    use tidings_ipld_schema::{Ipld, Keypair};

    fn publish(store: &Store, kp: &Keypair, n: i128, keep: bool) -> tidings_ipld_schema::Cid {
        let author = kp.public().encode_protobuf();
        let body =
            ipld_json::json_to_ipld(&serde_json::json!({"n": n, "keep": keep})).expect("body");
        store
            .append_local(&author, "/d/x", |seq, prev| {
                Event::sign_block(kp, "/d/x", body, seq, 1_000 + seq, prev)
            })
            .expect("append")
            .cid
    }

    fn page_cids(r: HistoryResponse) -> Vec<tidings_ipld_schema::Cid> {
        match r {
            HistoryResponse::Page { events, next, .. } => {
                assert_eq!(next, None);
                events
                    .iter()
                    .map(|(c, _)| tidings_ipld_schema::Cid::try_from(c.as_slice()).expect("cid"))
                    .collect()
            }
            other => panic!("{other:?}"),
        }
    }

    /// 20 events of 900 KB matching a durable made one 18 MB page, over the 16 MiB every
    /// peer refuses: the reader never got its backlog. Pages now stop at the byte budget, and
    /// reading them through the cursor gives every event once, in order.
    #[test]
    fn pages_of_large_events_stay_within_the_budget_and_lose_none() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        let kp = Keypair::ed25519_from_bytes([6; 32]).expect("key");
        let author = kp.public().encode_protobuf();
        let (mut want, mut total) = (Vec::new(), 0);
        for i in 0..40u64 {
            let pad = if i % 3 == 2 { 200_000 } else { 900_000 };
            let body = Ipld::String("x".repeat(if i % 5 == 4 { 10 } else { pad }));
            let appended = store
                .append_local(&author, "/d/big", |seq, prev| {
                    Event::sign_block(&kp, "/d/big", body, seq, 1_000 + seq, prev)
                })
                .expect("append");
            total += appended.block.data.len();
            want.push(appended.cid);
        }
        // One page of all of them would be over the limit every peer enforces.
        assert!(total > crate::net::codec::MAX_MESSAGE as usize, "{total}");
        let peer = PeerId::random();
        let mut cursor = 0;
        let mut got = Vec::new();
        let mut pages = 0;
        loop {
            let req = HistoryRequest::Query {
                filter: "/d/**".into(),
                durable: None,
                since: Some(0),
                cursor,
                max_events: MAX_PAGE,
            };
            let answer = serve(&store, peer, req, 1);
            let bytes = wire::encode(wire::Message::HistoryResponse(answer.clone()))
                .expect("a page within the limit encodes");
            assert!(
                bytes.len() <= MESSAGE_BUDGET + 4096,
                "{} bytes",
                bytes.len()
            );
            let HistoryResponse::Page { events, next, .. } = answer else {
                panic!("{answer:?}");
            };
            assert!(!events.is_empty());
            pages += 1;
            got.extend(
                events
                    .iter()
                    .map(|(c, _)| tidings_ipld_schema::Cid::try_from(c.as_slice()).expect("cid")),
            );
            match next {
                Some(n) => cursor = n,
                None => break,
            }
        }
        assert_eq!(got, want);
        assert!(pages >= total.div_ceil(MESSAGE_BUDGET), "{pages} pages");
    }

    /// A `Tips` answer stops at its budget and says where to go on; following `next` gives
    /// every stream tip and durable record of the root once (none of another root's).
    #[test]
    fn tips_answers_follow_on_until_every_stream_and_durable_came_once() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        for k in 0..4u8 {
            let kp = Keypair::ed25519_from_bytes([10 + k; 32]).expect("key");
            let author = kp.public().encode_protobuf();
            for t in 0..6 {
                let topic = if t == 5 {
                    "/other/x".to_string()
                } else {
                    format!("/d/t{t}")
                };
                store
                    .append_local(&author, &topic, |seq, prev| {
                        Event::sign_block(&kp, &topic, Ipld::Integer(1), seq, seq, prev)
                    })
                    .expect("append");
            }
        }
        for (i, root) in ["d", "other", "d", "d"].iter().enumerate() {
            let open = HistoryRequest::DurableOpen {
                name: format!("n{i}"),
                filter: format!("/{root}/**"),
                since: None,
            };
            serve(&store, PeerId::random(), open, 1);
        }
        let all = store.stream_tips("d").expect("tips");
        assert_eq!(all.len(), 20);
        for count in [1, 3, 7, 100] {
            let budget = Budget {
                bytes: 1 << 20,
                count,
            };
            let (mut streams, mut durables, mut from, mut answers) = (vec![], vec![], None, 0);
            loop {
                let answer = tips(&store, "d", from.take(), budget).expect("tips");
                let HistoryResponse::Tips {
                    streams: s,
                    durables: d,
                    next,
                } = answer
                else {
                    panic!("{answer:?}");
                };
                assert!(s.len() + d.len() <= count);
                answers += 1;
                streams.extend(s);
                durables.extend(d);
                match next {
                    Some(n) => from = Some(n),
                    None => break,
                }
            }
            let cids: Vec<Vec<u8>> = streams.iter().map(|t| t.cid.to_vec()).collect();
            let want: Vec<Vec<u8>> = all.iter().map(|t| t.cid.to_bytes()).collect();
            assert_eq!(cids, want, "count {count}");
            assert_eq!(durables.len(), 3, "count {count}");
            assert_eq!(answers, 23usize.div_ceil(count), "count {count}");
        }
        // By bytes as well: a budget of about two tips.
        let budget = Budget {
            bytes: 2 * (40 + 6 + 36 + TIP_OVERHEAD),
            count: MAX_TIPS,
        };
        let answer = tips(&store, "d", None, budget).expect("tips");
        assert!(
            matches!(answer, HistoryResponse::Tips { ref streams, next: Some(_), .. } if streams.len() <= 2)
        );
    }

    #[test]
    fn a_synced_record_unused_past_the_expiry_is_not_taken_back() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        let rec = |last_used_ms| DurableRecord {
            filter: "/d/**".into(),
            root: "d".into(),
            start: 7,
            since: None,
            acked: Vec::new(),
            last_used_ms,
            created_ms: 1_000,
        };
        // Unused for 3,001 ms with a 3,000 ms expiry: this node expired it; not again.
        assert!(!merge_synced(&store, "p/old", rec(1_000), 4_001, 3_000).expect("merge"));
        assert_eq!(store.durable("p/old").expect("read"), None);
        // Used within the expiry: taken in, its backlog from its creation time.
        assert!(merge_synced(&store, "p/new", rec(2_000), 4_001, 3_000).expect("merge"));
        let got = store.durable("p/new").expect("read").expect("record");
        assert_eq!((got.start, got.since), (0, Some(1_000)));
    }

    #[test]
    fn durables_open_live_conflict_ack_page_delete_and_expire() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        let kp = Keypair::ed25519_from_bytes([5; 32]).expect("key");
        let peer = PeerId::random();
        let f = "/d/** where keep = true";
        publish(&store, &kp, 0, true); // before the durable: not in its backlog
        let open = |filter: &str| HistoryRequest::DurableOpen {
            name: "n".into(),
            filter: filter.into(),
            since: None,
        };
        assert!(matches!(
            serve(&store, peer, open(f), 10),
            HistoryResponse::Ok { existed: false }
        ));
        assert!(matches!(
            serve(&store, peer, open("/d/**"), 10),
            HistoryResponse::Conflict(_)
        ));
        let a = publish(&store, &kp, 1, true);
        publish(&store, &kp, 2, false);
        let c = publish(&store, &kp, 3, true);
        let query = || HistoryRequest::Query {
            filter: f.into(),
            durable: Some("n".into()),
            since: None,
            cursor: 0,
            max_events: 100,
        };
        assert_eq!(page_cids(serve(&store, peer, query(), 11)), vec![a, c]);
        // Acks are cumulative per stream: acking seq 2 (a) leaves c.
        let ack = HistoryRequest::DurableAck {
            name: "n".into(),
            acks: vec![Ack {
                author: ByteBuf::from(kp.public().encode_protobuf()),
                topic: "/d/x".into(),
                seq: 2,
            }],
        };
        assert!(matches!(
            serve(&store, peer, ack, 12),
            HistoryResponse::Ok { .. }
        ));
        assert_eq!(page_cids(serve(&store, peer, query(), 13)), vec![c]);
        // Another node's durable of the same name is another durable.
        assert!(matches!(
            serve(&store, PeerId::random(), query(), 13),
            HistoryResponse::NotFound
        ));
        // Unused for longer than the expiry: gone.
        assert_eq!(expire(&store, 12 + 1_000, 5_000).expect("expire"), 0);
        assert_eq!(expire(&store, 12 + 10_000, 5_000).expect("expire"), 1);
        assert!(matches!(
            serve(&store, peer, query(), 20),
            HistoryResponse::NotFound
        ));
        // Open again, delete, delete again.
        serve(&store, peer, open(f), 30);
        let del = || HistoryRequest::DurableDelete { name: "n".into() };
        assert!(matches!(
            serve(&store, peer, del(), 31),
            HistoryResponse::Ok { .. }
        ));
        assert!(matches!(
            serve(&store, peer, del(), 32),
            HistoryResponse::NotFound
        ));
        // A replay from the start sees every matching event, pre-durable one included.
        let replay = HistoryRequest::Query {
            filter: f.into(),
            durable: None,
            since: Some(0),
            cursor: 0,
            max_events: 100,
        };
        assert_eq!(page_cids(serve(&store, peer, replay, 33)).len(), 3);
    }
}
