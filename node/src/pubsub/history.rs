//! The subscriber's side of durable subscriptions and replay (docs/protocols.md).
//!
//! Opening one, in this order: the live subscription is registered first (locally, and leased on
//! the rendezvous set), so everything routed from then on is queued for it; then the stored
//! history is read from a majority of the set. An acknowledged event is on a majority before
//! the primary routes it, so whatever was routed before the lease is in at least one answer:
//! no gap at the seam. Events in both the history and the live queue are sent once (by CID).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libp2p::PeerId;
use tidings_ipld_schema::{Block, Cid, Event, json as ipld_json};
use tidings_matcher::Filter;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::error::{PublishError, blocking};
use super::local::Subscription;
use super::router::Router;
use crate::age::now_ms;
use crate::history::durable::{self as member, MAX_PAGE};
use crate::net::history::{Ack, HistoryRequest, HistoryResponse};
use crate::net::rendezvous;

/// How long a reconnecting durable subscriber waits for its previous connection, once that one
/// is closing, to flush its last acks and let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);
/// How long a connection to a durable held by a live connection waits for that one to start
/// closing (it may be the same client's, ending as this one starts) before its 409.
const IN_USE_GRACE: Duration = Duration::from_millis(500);
/// How long one history request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a subscription asks of history.
#[derive(Debug, Clone, Default)]
pub struct HistoryAsk {
    /// A durable subscription's name.
    pub durable: Option<String>,
    /// Replay stored events from this time (ms since epoch; 0 = from the start).
    pub since: Option<u64>,
}

/// One stored event to send before the live ones.
#[derive(Debug, Clone)]
pub struct Backlogged {
    /// CID as text.
    pub cid: Arc<str>,
    /// Event JSON.
    pub json: Arc<str>,
    /// (author key, topic, seq), for acknowledgements.
    pub stream: Arc<(Vec<u8>, String, u64)>,
    /// The event's `time` (ms since the epoch, the author's clock).
    pub time: u64,
    /// The event's block, when at hand (history read from the rendezvous set, which may not
    /// be stored here); `None` for live events, which are in this node's store.
    pub block: Option<Arc<[u8]>>,
}

/// A durable subscription held by one connection.
pub struct DurableHandle {
    /// Its name.
    pub name: String,
    /// Its filter's root (selects the set).
    pub root: String,
    /// Held while the connection lasts: a reconnect waits for this one's last acks.
    _guard: OwnedMutexGuard<()>,
    /// The lock's state, to say when this connection is closing.
    lock: Arc<DurableLock>,
}

impl DurableHandle {
    /// Marks the connection as closing (its last acks are on their way): a new connection to
    /// the same durable waits for it instead of being refused as a conflict.
    pub fn closing(&self) {
        self.lock.closing.store(true, Ordering::Release);
    }
}

/// An opened subscription: history to send first, then `sub`'s live events.
pub struct Opened {
    /// The live subscription (already queueing).
    pub sub: Subscription,
    /// Stored events first, oldest first (per stream in `seq` order).
    pub backlog: Vec<Backlogged>,
    /// Set for durable subscriptions.
    pub durable: Option<DurableHandle>,
}

/// One durable's connection lock, and whether its holder is closing.
#[derive(Default)]
struct DurableLock {
    mutex: Arc<AsyncMutex<()>>,
    closing: AtomicBool,
}

/// Per-durable connection locks.
#[derive(Default)]
pub struct DurableLocks {
    locks: std::sync::Mutex<HashMap<String, Arc<DurableLock>>>,
}

impl DurableLocks {
    fn get(&self, name: &str) -> Arc<DurableLock> {
        match self.locks.lock() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Whether a connection holds durable `name` now.
    fn is_open(&self, name: &str) -> bool {
        self.locks
            .lock()
            .ok()
            .and_then(|m| m.get(name).map(|l| l.mutex.try_lock().is_err()))
            .unwrap_or(false)
    }

    /// Takes durable `name` for one connection. A live holder gets [`IN_USE_GRACE`] to start
    /// closing, then this is refused at once (409); a closing one is waited for up to
    /// [`TAKEOVER_WAIT`] while it flushes its last acks.
    async fn take(
        &self,
        name: &str,
    ) -> Result<(OwnedMutexGuard<()>, Arc<DurableLock>), PublishError> {
        let lock = self.get(name);
        let start = tokio::time::Instant::now();
        loop {
            if let Ok(guard) = lock.mutex.clone().try_lock_owned() {
                lock.closing.store(false, Ordering::Release);
                return Ok((guard, lock));
            }
            let waited = start.elapsed();
            let closing = lock.closing.load(Ordering::Acquire);
            if waited >= TAKEOVER_WAIT || (!closing && waited >= IN_USE_GRACE) {
                return Err(PublishError::Conflict(format!(
                    "durable subscription {name:?} is in use by another connection \
                     (one connection at a time; resume it with Last-Event-ID to replace a dropped one)"
                )));
            }
            // Polled: a closing holder lets go within milliseconds of its last ack.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Slack for publishers' clocks when a subscription's start bounds a repair: an event up to
/// this much older is repaired too (at worst delivered once needlessly).
const CLOCK_SLACK_MS: u64 = 60_000;

/// Answers `peer`'s request from this node's store, off the async runtime.
async fn serve_here(
    router: &Router,
    peer: PeerId,
    req: HistoryRequest,
) -> Result<HistoryResponse, PublishError> {
    let store = router.store().clone();
    blocking(move || Ok(member::serve(&store, peer, req, now_ms()))).await
}

/// Sends `req` to `member` (or serves it here when `member` is this node).
async fn ask(
    router: &Router,
    member: PeerId,
    req: HistoryRequest,
) -> Result<HistoryResponse, String> {
    let me = router.net().local_peer();
    if member == me {
        return serve_here(router, me, req).await.map_err(|e| e.to_string());
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, router.net().history(member, req)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

impl Router {
    /// Opens a subscription with history: a durable one (new ones start live unless `since` is
    /// given; returning ones get their unacknowledged backlog) and/or a replay from `since`.
    pub async fn open(&self, src: &str, ask_for: HistoryAsk) -> Result<Opened, PublishError> {
        let filter = Filter::parse(src).map_err(|e| PublishError::BadFilter(e.to_string()))?;
        let root = filter.root().to_string();
        let me = self.net().local_peer();
        let mut durable = None;
        let mut existed = false;
        if let Some(name) = &ask_for.durable {
            let (guard, lock) = self.durable_locks().take(name).await?;
            // This node's own record first: a conflict is refused before any network traffic,
            // and DELETE finds the root here.
            let open = HistoryRequest::DurableOpen {
                name: name.clone(),
                filter: src.to_string(),
                since: ask_for.since,
            };
            match serve_here(self, me, open.clone()).await? {
                HistoryResponse::Conflict(m) => return Err(PublishError::Conflict(m)),
                HistoryResponse::Ok { existed: e } => existed |= e,
                HistoryResponse::Refused(m) => return Err(PublishError::Unavailable(m)),
                _ => {}
            }
            durable = Some((
                DurableHandle {
                    name: name.clone(),
                    root: root.clone(),
                    _guard: guard,
                    lock,
                },
                open,
            ));
        }
        // Live first: from here on, whatever is routed reaches `sub`'s queue.
        let sub = self.subscribe(src).await?;
        let set = self.net().rendezvous_set(&root);
        let mut members = set.clone();
        if let Some((handle, open)) = &durable {
            let answers = futures::future::join_all(
                set.iter()
                    .filter(|m| **m != me)
                    .map(|m| async move { (*m, ask(self, *m, open.clone()).await) }),
            )
            .await;
            members = set.iter().copied().filter(|m| *m == me).collect();
            for (m, a) in answers {
                match a {
                    Ok(HistoryResponse::Conflict(msg)) => return Err(PublishError::Conflict(msg)),
                    Ok(HistoryResponse::Ok { existed: e }) => {
                        existed |= e;
                        members.push(m);
                    }
                    Ok(other) => {
                        tracing::warn!(member = %m, answer = ?other, durable = %handle.name, "durable not opened on member")
                    }
                    Err(e) => {
                        tracing::debug!(member = %m, error = %e, "durable not opened on member")
                    }
                }
            }
            let need = rendezvous::majority(set.len().max(1));
            if members.len() < need {
                return Err(PublishError::Unavailable(format!(
                    "only {} of {} rendezvous members hold durable subscription {:?}; {need} needed",
                    members.len(),
                    set.len(),
                    handle.name
                )));
            }
        }
        let wants_history = ask_for.since.is_some() || existed;
        let backlog = if wants_history {
            let durable_name = durable.as_ref().map(|(h, _)| h.name.clone());
            self.read_history(src, &members, durable_name, ask_for.since)
                .await?
        } else {
            Vec::new()
        };
        tracing::info!(filter = %src, durable = ?ask_for.durable, since = ?ask_for.since, backlog = backlog.len(), "subscription opened with history");
        Ok(Opened {
            sub,
            backlog,
            durable: durable.map(|(h, _)| h),
        })
    }

    /// The stored events matching `src` from `since` (ms), read from a majority of the root's
    /// rendezvous set, oldest first: a replay without a subscription, for a connection that
    /// resumes a durable after events its predecessor sent may not have arrived.
    pub async fn replay(&self, src: &str, since: u64) -> Result<Vec<Backlogged>, PublishError> {
        let filter = Filter::parse(src).map_err(|e| PublishError::BadFilter(e.to_string()))?;
        let set = self.net().rendezvous_set(filter.root());
        self.read_history(src, &set, None, Some(since)).await
    }

    /// Reads the stored matching events from a majority of `members` and merges them.
    async fn read_history(
        &self,
        src: &str,
        members: &[PeerId],
        durable: Option<String>,
        since: Option<u64>,
    ) -> Result<Vec<Backlogged>, PublishError> {
        let reads = futures::future::join_all(members.iter().map(|m| {
            let durable = durable.clone();
            async move { (*m, self.read_member(*m, src, durable, since).await) }
        }))
        .await;
        let mut events: HashMap<Cid, Event> = HashMap::new();
        let mut blocks: HashMap<Cid, Arc<[u8]>> = HashMap::new();
        let mut acked: HashMap<(Vec<u8>, String), u64> = HashMap::new();
        let mut answered = 0;
        for (m, r) in reads {
            match r {
                Ok((evs, acks)) => {
                    answered += 1;
                    for a in acks {
                        let e = acked.entry((a.author.into_vec(), a.topic)).or_default();
                        *e = (*e).max(a.seq);
                    }
                    for (block, ev) in evs {
                        blocks.entry(block.cid).or_insert_with(|| block.data.into());
                        events.entry(block.cid).or_insert(ev);
                    }
                }
                Err(e) => tracing::warn!(member = %m, error = %e, "history not read from member"),
            }
        }
        let need = rendezvous::majority(members.len().max(1)).min(members.len().max(1));
        if answered < need {
            return Err(PublishError::Unavailable(format!(
                "history answered by {answered} of {} rendezvous members; {need} needed",
                members.len()
            )));
        }
        let mut list: Vec<(Cid, Event)> = events
            .into_iter()
            .filter(|(_, e)| {
                e.seq
                    > acked
                        .get(&(e.author.clone(), e.topic.clone()))
                        .copied()
                        .unwrap_or(0)
            })
            .collect();
        order(&mut list);
        if durable.is_some() {
            let filter = Filter::parse(src).map_err(|e| PublishError::BadFilter(e.to_string()))?;
            list = self.backlog_whole(list, &acked, members, &filter).await;
            order(&mut list);
        }
        Ok(list
            .into_iter()
            .map(|(cid, e)| Backlogged {
                cid: cid.to_string().into(),
                json: ipld_json::event_to_json(&cid, &e).to_string().into(),
                stream: Arc::new((e.author.clone(), e.topic.clone(), e.seq)),
                time: e.time,
                block: blocks.remove(&cid),
            })
            .collect())
    }

    /// Every page of one member's answer.
    async fn read_member(
        &self,
        member: PeerId,
        src: &str,
        durable: Option<String>,
        since: Option<u64>,
    ) -> Result<(Vec<(Block, Event)>, Vec<Ack>), String> {
        let mut cursor = 0;
        let mut out = Vec::new();
        loop {
            let req = HistoryRequest::Query {
                filter: src.to_string(),
                durable: durable.clone(),
                since,
                cursor,
                max_events: MAX_PAGE,
            };
            match ask(self, member, req).await? {
                HistoryResponse::Page {
                    events,
                    next,
                    acked,
                } => {
                    // A page is verified as one batch on the crypto pool; one bad block
                    // refuses the member's whole answer, as a single bad block does.
                    let wire = events
                        .into_iter()
                        .map(|(cid, data)| (cid.into_vec(), data.into_vec()))
                        .collect();
                    for checked in crate::crypto::verify_wire_batch(wire).await {
                        out.push(checked?);
                    }
                    match next {
                        Some(n) if n > cursor => cursor = n,
                        _ => return Ok((out, acked)),
                    }
                }
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
    }

    /// How far back to repair `event`'s stream, first seen here after a delivery that names
    /// `named` + 1 as the previous event meant for this node: `(after_seq, since_ms)` for
    /// [`crate::history::fetch::Chain`]. The sender's word reaches back only to `named`, but
    /// earlier deliveries may have been lost too, and a durable subscription acknowledges
    /// cumulatively per stream, so a missed event below an acknowledged one would never come
    /// back from its backlog. Each durable open here whose topic pattern covers the stream
    /// needs it from what it acknowledged of it or, never having acknowledged any, from when it
    /// began (less [`CLOCK_SLACK_MS`]). When the sender could not tell (`unknown`: it lacks part
    /// of the stream itself), every live subscription covering the topic needs it from when it
    /// began too. Otherwise the live subscriptions need it from when the earliest of them began
    /// (no slack: only a lost first delivery makes that walk longer than the sender's word),
    /// not only from `named`: the earlier events may have been lost, or still be on their way
    /// from another member (a publisher that fell over to the next member mid-burst), and once
    /// a later event was handed on they would be dropped as past when they came.
    pub(crate) async fn first_repair_floor(
        &self,
        event: &Event,
        named: u64,
        unknown: bool,
    ) -> (u64, u64) {
        let prefix = format!("{}/", self.net().local_peer());
        let store = self.store().clone();
        let records = match blocking(move || Ok(store.durables_of(&prefix)?)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "durables not read: repair stops at the named event");
                return (named, 0);
            }
        };
        let mut after_seq = named;
        let live = self.local().earliest_start(&event.topic);
        let mut since = live
            .filter(|_| unknown)
            .map(|t| t.saturating_sub(CLOCK_SLACK_MS));
        for (key, rec) in records {
            let name = key.split_once('/').map_or(key.as_str(), |(_, n)| n);
            let covers = Filter::parse(&rec.filter).is_ok_and(|f| f.topic().matches(&event.topic));
            if !covers || !self.durable_locks().is_open(name) {
                continue;
            }
            match rec.acked_seq(&event.author, &event.topic) {
                0 => {
                    let began = rec.since.unwrap_or(rec.created_ms);
                    let t = began.saturating_sub(CLOCK_SLACK_MS);
                    since = Some(since.map_or(t, |s| s.min(t)));
                }
                acked => after_seq = after_seq.min(acked),
            }
        }
        match since {
            // One durable never acknowledged the stream: back to the earliest start (deeper
            // than any acknowledged seq needs; the extra events are duplicates at worst).
            Some(t) => (0, t),
            // A durable acknowledged part of the stream: back to the oldest acknowledged seq.
            None if after_seq < named => (after_seq, 0),
            None => live.map_or((named, 0), |t| (0, t)),
        }
    }

    /// A subscriber's node asks this rendezvous member about a durable subscription or history.
    pub async fn serve_history(&self, peer: PeerId, req: HistoryRequest) -> HistoryResponse {
        if self.net().role() != crate::net::Role::Broker {
            return HistoryResponse::Refused(
                "this node is a peer: it holds no rendezvous duty".into(),
            );
        }
        if let HistoryRequest::Leases { root } = &req {
            return HistoryResponse::Leases(
                self.remote()
                    .leases_of(root)
                    .into_iter()
                    .map(
                        |(peer, id, filter, left, since_ms)| crate::net::history::Lease {
                            peer: serde_bytes::ByteBuf::from(peer.to_bytes()),
                            id,
                            filter,
                            ms_left: left.as_millis() as u64,
                            since_ms,
                        },
                    )
                    .collect(),
            );
        }
        if let HistoryRequest::Tips { root, .. } = &req {
            // Another member syncs this root with us: we may have just joined its set.
            self.sync_state().note_root(root);
        }
        serve_here(self, peer, req)
            .await
            .unwrap_or_else(|e| HistoryResponse::Refused(e.to_string()))
    }

    /// Records acknowledgements of a durable subscription on this node and every member of its
    /// set.
    pub async fn durable_ack(&self, name: &str, root: &str, acks: Vec<Ack>) {
        if acks.is_empty() {
            return;
        }
        let req = HistoryRequest::DurableAck {
            name: name.to_string(),
            acks,
        };
        let targets = self.set_and_self(root);
        let answers =
            futures::future::join_all(targets.iter().map(|m| ask(self, *m, req.clone()))).await;
        for (m, a) in targets.iter().zip(answers) {
            if let Err(e) = a {
                tracing::debug!(member = %m, error = %e, "acks not recorded on member");
            }
        }
    }

    /// Touches every durable of this node that a connection holds open, here and on its set
    /// (an open of the same filter only renews its last use): one that delivers nothing and
    /// gets no acks for longer than `--durable-expiry` is still in use, and must not expire.
    pub async fn touch_open_durables(&self) {
        let store = self.store().clone();
        let mine = format!("{}/", self.net().local_peer());
        let records = match blocking(move || Ok(store.durables()?)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list durables to touch");
                return;
            }
        };
        for (key, rec) in records {
            let Some(name) = key.strip_prefix(&mine) else {
                continue;
            };
            if !self.durable_locks().is_open(name) {
                continue;
            }
            let req = HistoryRequest::DurableOpen {
                name: name.to_string(),
                filter: rec.filter.clone(),
                since: None,
            };
            let targets = self.set_and_self(&rec.root);
            let answers =
                futures::future::join_all(targets.iter().map(|m| ask(self, *m, req.clone()))).await;
            for (m, a) in targets.iter().zip(answers) {
                if let Err(e) = a {
                    tracing::debug!(member = %m, durable = %name, error = %e, "durable not touched on member");
                }
            }
        }
    }

    /// The root's rendezvous set plus this node, which keeps its own record of each durable.
    fn set_and_self(&self, root: &str) -> Vec<PeerId> {
        let me = self.net().local_peer();
        let mut targets = self.net().rendezvous_set(root);
        if !targets.contains(&me) {
            targets.push(me);
        }
        targets
    }

    /// Deletes this node's durable subscription `name` here and on its set.
    pub async fn delete_durable(&self, name: &str) -> Result<(), PublishError> {
        let store = self.store().clone();
        let me = self.net().local_peer();
        let key = member::key(&me, name);
        let rec = blocking(move || Ok(store.durable(&key)?))
            .await?
            .ok_or_else(|| {
                PublishError::NotFound(format!("no durable subscription {name:?} on this node"))
            })?;
        let req = HistoryRequest::DurableDelete {
            name: name.to_string(),
        };
        let targets = self.set_and_self(&rec.root);
        futures::future::join_all(targets.iter().map(|m| ask(self, *m, req.clone()))).await;
        tracing::info!(durable = %name, "durable subscription deleted");
        Ok(())
    }
}

/// Two backlogs as one, each event once (by CID), in the order of [`order`]: by time, each
/// (author, topic) stream in `seq` order.
pub fn merge(a: Vec<Backlogged>, b: Vec<Backlogged>) -> Vec<Backlogged> {
    let mut seen = HashSet::new();
    let mut all: Vec<Backlogged> = a
        .into_iter()
        .chain(b)
        .filter(|x| seen.insert(x.cid.clone()))
        .collect();
    all.sort_by(|x, y| {
        (x.time, &x.stream.0, &x.stream.1, x.stream.2).cmp(&(
            y.time,
            &y.stream.0,
            &y.stream.1,
            y.stream.2,
        ))
    });
    let mut slots: HashMap<(Vec<u8>, String), Vec<usize>> = HashMap::new();
    for (i, x) in all.iter().enumerate() {
        slots
            .entry((x.stream.0.clone(), x.stream.1.clone()))
            .or_default()
            .push(i);
    }
    for idx in slots.into_values() {
        let mut items: Vec<Backlogged> = idx.iter().map(|i| all[*i].clone()).collect();
        items.sort_by_key(|x| x.stream.2);
        for (slot, item) in idx.into_iter().zip(items) {
            all[slot] = item;
        }
    }
    all
}

/// Orders history by time, then makes each (author, topic) stream strictly `seq`-ordered in the
/// slots it occupies (clocks may disagree; seq never does).
fn order(list: &mut [(Cid, Event)]) {
    list.sort_by(|a, b| {
        (a.1.time, &a.1.author, &a.1.topic, a.1.seq).cmp(&(
            b.1.time,
            &b.1.author,
            &b.1.topic,
            b.1.seq,
        ))
    });
    let mut slots: HashMap<(Vec<u8>, String), Vec<usize>> = HashMap::new();
    for (i, (_, e)) in list.iter().enumerate() {
        slots
            .entry((e.author.clone(), e.topic.clone()))
            .or_default()
            .push(i);
    }
    for idx in slots.into_values() {
        let mut items: Vec<(Cid, Event)> = idx.iter().map(|i| list[*i].clone()).collect();
        items.sort_by_key(|(_, e)| e.seq);
        for (slot, item) in idx.into_iter().zip(items) {
            list[slot] = item;
        }
    }
}
