//! The rendezvous member's side of `/tidings/history/1`: durable subscription records and
//! pages of stored events for backlogs and replays. Pure store work: callers run it off the
//! async runtime.

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tidings_ipld_schema::{Event, json as ipld_json};
use tidings_matcher::Filter;

use crate::net::history::{Ack, HistoryRequest, HistoryResponse, Tip};
use crate::store::{DurableRecord, Store, StoreError};

/// Log entries read per store transaction while scanning.
const SCAN_CHUNK: usize = 2048;
/// Most log entries one page request scans, so a sparse filter cannot hold a member for long.
const SCAN_LIMIT: usize = 100_000;
/// Most events in a page, whatever is asked.
pub const MAX_PAGE: u32 = 4096;

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
            store.update_durable(&key(&peer, &name), |cur| match cur {
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
            store.update_durable(&key(&peer, &name), |cur| match cur {
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
            store.update_durable(&key(&peer, &name), |cur| match cur {
                Some(_) => (None, HistoryResponse::Ok { existed: true }),
                None => (None, HistoryResponse::NotFound),
            })
        }
        // Leases live in the router, which answers this before the store is asked.
        HistoryRequest::Leases { .. } => Ok(HistoryResponse::Refused(
            "leases are not kept in the store".into(),
        )),
        HistoryRequest::Tips { root } => {
            let streams = store
                .stream_tips(&root)?
                .into_iter()
                .map(|t| Tip {
                    author: ByteBuf::from(t.author),
                    topic: t.topic,
                    seq: t.seq,
                    cid: ByteBuf::from(t.cid.to_bytes()),
                })
                .collect();
            let mut durables = Vec::new();
            for (key, rec) in store.durables()? {
                if rec.root == root {
                    let bytes = serde_ipld_dagcbor::to_vec(&rec)
                        .map_err(|e| StoreError::Corrupt(format!("durable record: {e}")))?;
                    durables.push((key, ByteBuf::from(bytes)));
                }
            }
            Ok(HistoryResponse::Tips { streams, durables })
        }
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
            page(
                store,
                &f,
                start,
                since,
                rec.as_ref(),
                max_events.clamp(1, MAX_PAGE),
            )
        }
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
    max_events: u32,
) -> Result<HistoryResponse, StoreError> {
    let mut events = Vec::new();
    let mut pos = start;
    let mut scanned = 0;
    let next = loop {
        let (entries, after) = store.log_blocks(f.root(), pos, SCAN_CHUNK)?;
        let mut stopped_at = None;
        for (p, cid, data) in entries {
            if events.len() as u32 >= max_events || scanned >= SCAN_LIMIT {
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
            events.push((ByteBuf::from(cid.to_bytes()), ByteBuf::from(data)));
        }
        match (stopped_at, after) {
            (Some(p), _) => break Some(p),
            (None, Some(p)) => pos = p,
            (None, None) => break None,
        }
    };
    let acked = rec
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
    Ok(HistoryResponse::Page {
        events,
        next,
        acked,
    })
}

/// Takes in a durable record another member of its set holds (replica sync), so a member that
/// was away or joined the set late keeps the subscription too. A record not held here is
/// copied with its backlog starting at its creation time (log positions are per node); one
/// held with the same filter takes the higher acks. Returns whether anything changed.
pub fn merge_synced(store: &Store, key: &str, theirs: DurableRecord) -> Result<bool, StoreError> {
    store.update_durable(key, |cur| match cur {
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
    use tidings_ipld_schema::Keypair;

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
