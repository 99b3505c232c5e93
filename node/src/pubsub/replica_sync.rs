//! Replica sync (anti-entropy) between the members of a rendezvous set.
//!
//! Publishing stores an event on a majority of the set, so a member that was down, cut off by a
//! partition, or new to the set lacks some of it; and a partition can let each side accept
//! events the other never saw. Every `sync_interval` each broker asks the other members of
//! each of its sets for the tips of the root's (author, topic) streams and its durable
//! subscription records, pulls every stream it is behind on (one chain fetch per stream, each
//! block verified), and takes in the records it lacks. The topic's primary also routes what it
//! pulled, so subscribers get events that were accepted on the other side of a partition.
//!
//! Events that arrive (by publish, replication or a sync fetch) above a hole in their author's
//! chain leave a record of the hole in the store, in the same transaction; each round fetches
//! the recorded holes until they close, so every member ends with whole streams even when a
//! fetch was cut short or the node was killed before filling them.
//!
//! A primary acknowledges an event once a majority holds it, then delivers it: one killed in
//! between leaves an acknowledged event that reached no subscriber, and nothing later in its
//! stream may come to reveal the gap. So a broker that has become a topic's primary since the
//! last round (the old one left the set, or this node started) routes the newest event of each
//! of the topic's streams again; a subscriber's node that lacks it, or events before it,
//! repairs from there, and one that has it drops it as a duplicate.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tidings_ipld_schema::{Block, Cid, Event, topic};

use crate::age::now_ms;
use crate::history::{self, Chain};
use crate::metrics::Metrics;
use crate::net::Role;
use crate::net::history::{HistoryRequest, HistoryResponse, Tip};
use crate::net::rendezvous;
use crate::pubsub::error::blocking;
use crate::pubsub::router::Router;
use crate::pubsub::tips::ask_tips;
use crate::store::{ChainHole, DurableRecord, StreamTip};

/// How long a member may take to answer a sync request.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Holes fetched per round at most; the rest wait for the next.
const HOLES_PER_ROUND: usize = 256;
/// A hole no member could fill is asked for again every round this many times (a member that
/// holds it may just be restarting or cut off)...
const HOLE_FREE_RETRIES: u32 = 6;
/// ...then after this, doubling per failure...
const HOLE_RETRY_FIRST: Duration = Duration::from_secs(10);
/// ...up to this: its only copy may be on a node that is gone for good.
const HOLE_RETRY_MAX: Duration = Duration::from_secs(300);

/// How long a broker waits for the other members' leases before its first routing of a root.
const LEASES_TIMEOUT: Duration = Duration::from_secs(2);
/// A stream tip older than this (by its publisher's clock) is not routed again when this node
/// takes over its topic: the primary that acknowledged it had long enough to deliver it, or the
/// subscriber's repair caught it when a later event came.
const TAKEOVER_WINDOW_MS: u64 = 10 * 60_000;

/// One member's `Tips` answer: stream tips and durable records (key, DAG-CBOR).
type TipsAnswer = (Vec<Tip>, Vec<(String, serde_bytes::ByteBuf)>);
/// (author key bytes, topic).
type StreamId = (Vec<u8>, String);

/// Roots waiting for the next sync round.
#[derive(Default)]
pub struct SyncState {
    /// Roots another member asked about: this node may have just joined their set.
    roots: Mutex<BTreeSet<String>>,
    /// Roots whose leases this node took from the rest of the set since it started.
    leases_taken: Mutex<BTreeSet<String>>,
    /// Holes that could not be filled, waiting before they are asked for again.
    retry: Mutex<HoleRetry>,
    /// Each root's rendezvous set as of the last round: a topic whose primary this node has
    /// become since then is taken over (see the module docs).
    sets: Mutex<HashMap<String, Vec<PeerId>>>,
    /// The other members of this node's sets as of the last round: one that (re)appears may
    /// hold what nobody could give before, so the holes' backoff starts again.
    members: Mutex<BTreeSet<PeerId>>,
}

/// Backoff per hole (by its missing CID), so holes nobody can fill neither cost a fetch every
/// round nor fill the round's listing while fillable ones wait behind them.
#[derive(Debug, Default)]
struct HoleRetry {
    /// Missing CID → (not before, failures so far).
    waits: HashMap<Cid, (Instant, u32)>,
}

impl HoleRetry {
    /// The holes not to ask for at `now`.
    fn waiting(&self, now: Instant) -> HashSet<Cid> {
        self.waits
            .iter()
            .filter(|(_, (due, _))| *due > now)
            .map(|(c, _)| *c)
            .collect()
    }

    /// A fetch for `missing` brought nothing: after the free retries, wait twice as long as
    /// last time.
    fn failed(&mut self, missing: Cid, now: Instant) {
        let failures = self.waits.get(&missing).map_or(0, |(_, f)| *f) + 1;
        let wait = match failures.checked_sub(HOLE_FREE_RETRIES + 1) {
            None => Duration::ZERO,
            Some(n) => HOLE_RETRY_FIRST
                .saturating_mul(1 << n.min(16))
                .min(HOLE_RETRY_MAX),
        };
        self.waits.insert(missing, (now + wait, failures));
    }

    /// `missing` arrived (or the hole moved down): forget its backoff.
    fn filled(&mut self, missing: &Cid) {
        self.waits.remove(missing);
    }

    /// A member (re)appeared: every hole is asked for again from the next round on, with its
    /// free retries. Without this a hole whose only holder was restarting or cut off for more
    /// than the free retries waited up to minutes after the holder was back (the chaos run's
    /// brokers did not converge within a minute: one lacked 15 events another had fetched).
    fn member_back(&mut self) {
        self.waits.clear();
    }
}

impl SyncState {
    /// Remembers that `root` has a set this node may belong to.
    pub fn note_root(&self, root: &str) {
        if let Ok(mut r) = self.roots.lock()
            && !r.contains(root)
        {
            r.insert(root.to_string());
        }
    }
}

/// What one attempt at a hole came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoleFill {
    /// Blocks came (the hole closed, or moved down to what is still missing).
    Fetched,
    /// Something else filled it first.
    Closed,
    /// Nobody had it, or the fetch failed.
    Nothing,
}

/// What one round did, for the log.
#[derive(Debug, Default)]
struct Round {
    pulled: u64,
    routed: u64,
    durables: u64,
    holes: u64,
    /// Hole fetches nobody could answer.
    misses: u64,
    /// Holes dropped as older than retention.
    pruned: u64,
    taken_over: u64,
}

impl Router {
    /// Before this node first routes events of `root` since it started (or joined the set), it
    /// takes the subscription leases the other members hold: a restarted or new broker would
    /// otherwise act as primary knowing no subscriber until each renews its lease, and the
    /// events it acknowledged meanwhile would reach nobody live.
    pub(crate) async fn take_leases(&self, root: &str, set: &[PeerId]) {
        if self
            .sync_state()
            .leases_taken
            .lock()
            .is_ok_and(|t| t.contains(root))
        {
            return;
        }
        let me = self.net().local_peer();
        let asks = set.iter().filter(|m| **m != me).map(|m| {
            let ask = HistoryRequest::Leases {
                root: root.to_string(),
            };
            tokio::time::timeout(LEASES_TIMEOUT, self.net().history(*m, ask))
        });
        let mut answered = 1; // this node
        let mut adopted = 0;
        for answer in futures::future::join_all(asks).await {
            let Ok(Ok(HistoryResponse::Leases(leases))) = answer else {
                continue;
            };
            answered += 1;
            for l in leases {
                let Ok(peer) = PeerId::from_bytes(&l.peer) else {
                    continue;
                };
                if peer == me {
                    continue;
                }
                let left = Duration::from_millis(l.ms_left.min(3_600_000));
                if self
                    .remote()
                    .adopt(peer, l.id, &l.filter, left, l.since_ms)
                    .is_ok()
                {
                    adopted += 1;
                }
            }
        }
        // Asked again next time unless a majority of the set answered.
        if answered >= rendezvous::majority(set.len().max(1)) {
            if let Ok(mut t) = self.sync_state().leases_taken.lock() {
                t.insert(root.to_string());
            }
            tracing::info!(%root, adopted, "took the set's subscription leases before routing");
        }
    }

    /// Runs replica sync every `every` until the node stops (brokers only).
    pub async fn sync_replicas(self: Arc<Self>, every: Duration) {
        if self.net().role() != Role::Broker {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let r = self.sync_round().await;
            let m = self.metrics();
            Metrics::add(&m.sync_events, r.pulled);
            Metrics::add(&m.sync_holes, r.holes);
            Metrics::add(&m.sync_hole_misses, r.misses);
            Metrics::add(&m.sync_holes_pruned, r.pruned);
            Metrics::add(&m.sync_durables, r.durables);
            Metrics::add(&m.sync_rounds, 1);
            if r.pulled + r.durables + r.holes + r.taken_over > 0 {
                tracing::info!(
                    pulled = r.pulled,
                    routed = r.routed,
                    durables = r.durables,
                    holes = r.holes,
                    taken_over = r.taken_over,
                    "replica sync: caught up with the other members"
                );
            }
        }
    }

    async fn sync_round(&self) -> Round {
        let mut round = Round::default();
        let me = self.net().local_peer();
        let mut roots: BTreeSet<String> = self.remote().roots();
        if let Ok(r) = self.sync_state().roots.lock() {
            roots.extend(r.iter().cloned());
        }
        let store = self.store().clone();
        match blocking(move || {
            let mut r = store.roots()?;
            r.extend(store.durables()?.into_iter().map(|(_, d)| d.root));
            Ok(r)
        })
        .await
        {
            Ok(r) => roots.extend(r),
            Err(e) => tracing::warn!(error = %e, "replica sync: cannot list roots"),
        }
        let mut mine = BTreeSet::new();
        let mut members = BTreeSet::new();
        for root in roots {
            let set = self.net().rendezvous_set(&root);
            if !set.contains(&me) {
                continue;
            }
            members.extend(set.iter().copied().filter(|m| *m != me));
            let mut answers = Vec::new();
            for member in set.iter().filter(|m| **m != me) {
                match ask_tips(self.net(), *member, &root, ASK_TIMEOUT).await {
                    Ok(answer) => answers.push((*member, answer)),
                    Err(e) => {
                        tracing::debug!(%member, %root, error = %e, "replica sync: no tips from member")
                    }
                }
            }
            let pruned = self.note_pruned(&answers).await;
            for (member, (streams, durables)) in answers {
                self.sync_with(&root, &set, member, streams, durables, &pruned, &mut round)
                    .await;
            }
            round.taken_over += self.route_taken_over(&root, &set).await;
            mine.insert(root);
        }
        let back = match self.sync_state().members.lock() {
            Ok(mut last) => {
                let back = members.iter().any(|m| !last.contains(m));
                *last = members;
                back
            }
            Err(_) => false,
        };
        if back && let Ok(mut r) = self.sync_state().retry.lock() {
            r.member_back();
        }
        // Only the streams of this node's sets are kept whole; holes in backoff wait.
        let store = self.store().clone();
        let waiting = self
            .sync_state()
            .retry
            .lock()
            .map(|r| r.waiting(Instant::now()))
            .unwrap_or_default();
        let listed = blocking(move || {
            Ok(store.holes(HOLES_PER_ROUND, |root, missing| {
                mine.contains(root) && !waiting.contains(missing)
            })?)
        });
        let holes = match listed.await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "replica sync: cannot list holes");
                Vec::new()
            }
        };
        let retain_age = self.history_config().retain_age;
        for hole in holes {
            let missing = hole.missing;
            // What is missing is older than the event above it. Past this node's retention it
            // would be removed here at once, and the members (which prune alike) have removed
            // it: asking them again every round would find nothing, for ever.
            // Or it is in the stream's pruned past (retention here, or on every member that
            // holds the stream, by whatever limit): gone by design, not a hole.
            let too_old = retain_age
                .is_some_and(|age| now_ms().saturating_sub(hole.time) > age.as_millis() as u64);
            if too_old || hole.seq.saturating_sub(1) <= hole.pruned {
                let store = self.store().clone();
                match blocking(move || Ok(store.drop_hole(&missing)?)).await {
                    Ok(_) => {
                        tracing::debug!(topic = %hole.topic, seq = hole.seq, "replica sync: hole older than retention dropped");
                        round.pruned += 1;
                    }
                    Err(e) => tracing::warn!(error = %e, "replica sync: cannot drop a hole"),
                }
                continue;
            }
            let outcome = self.fill_hole(hole).await;
            if let Ok(mut r) = self.sync_state().retry.lock() {
                match outcome {
                    HoleFill::Nothing => r.failed(missing, Instant::now()),
                    HoleFill::Fetched | HoleFill::Closed => r.filled(&missing),
                }
            }
            match outcome {
                HoleFill::Fetched => round.holes += 1,
                HoleFill::Nothing => round.misses += 1,
                HoleFill::Closed => {}
            }
        }
        round
    }

    /// The pruned past of each stream the members listed: the lowest any of them reports (a
    /// member that still holds the stream's old events has not pruned them, and is asked for
    /// them), raised in the store where higher (the store's own applies too: no hole is
    /// recorded at or below it). Returns the members' lowest per (author, topic).
    async fn note_pruned(&self, answers: &[(PeerId, TipsAnswer)]) -> HashMap<StreamId, u64> {
        let mut lowest: HashMap<StreamId, u64> = HashMap::new();
        for (_, (streams, _)) in answers {
            for tip in streams {
                let key = (tip.author.to_vec(), tip.topic.clone());
                let cur = lowest.entry(key).or_insert(tip.pruned);
                *cur = (*cur).min(tip.pruned);
            }
        }
        lowest.retain(|_, p| *p > 0);
        if lowest.is_empty() {
            return lowest;
        }
        let store = self.store().clone();
        let floors: Vec<(Vec<u8>, String, u64)> = lowest
            .iter()
            .map(|((a, t), p)| (a.clone(), t.clone(), *p))
            .collect();
        if let Err(e) = blocking(move || Ok(store.note_pruned(&floors)?)).await {
            tracing::warn!(error = %e, "replica sync: cannot record the members' pruned past");
        }
        lowest
    }

    /// One member's tips and durables for `root`; `pruned` is what the set pruned per stream.
    #[allow(clippy::too_many_arguments)]
    async fn sync_with(
        &self,
        root: &str,
        set: &[PeerId],
        member: PeerId,
        streams: Vec<Tip>,
        durables: Vec<(String, serde_bytes::ByteBuf)>,
        pruned: &HashMap<StreamId, u64>,
        round: &mut Round,
    ) {
        for tip in streams {
            let floor = pruned
                .get(&(tip.author.to_vec(), tip.topic.clone()))
                .copied()
                .unwrap_or(0);
            let (pulled, routed) = self.pull_stream(set, member, tip, floor).await;
            round.pulled += pulled;
            round.routed += routed;
        }
        for (key, bytes) in durables {
            let Ok(rec) = serde_ipld_dagcbor::from_slice::<DurableRecord>(&bytes) else {
                tracing::warn!(%member, %key, "replica sync: undecodable durable record");
                continue;
            };
            if rec.root != root {
                continue;
            }
            let store = self.store().clone();
            let expiry = self.history_config().durable_expiry.as_millis() as u64;
            let merged = blocking(move || {
                Ok(history::durable::merge_synced(
                    &store,
                    &key,
                    rec,
                    now_ms(),
                    expiry,
                )?)
            });
            match merged.await {
                Ok(true) => round.durables += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "replica sync: cannot store a durable record"),
            }
        }
    }

    /// Pulls the part of one stream this node lacks from `member`; routes it if this node is
    /// the topic's primary. Returns (events pulled, events routed).
    async fn pull_stream(
        &self,
        set: &[PeerId],
        member: PeerId,
        tip: Tip,
        pruned: u64,
    ) -> (u64, u64) {
        let Ok(tip_cid) = Cid::try_from(tip.cid.as_slice()) else {
            return (0, 0);
        };
        if topic::validate(&tip.topic).is_err() {
            return (0, 0);
        }
        let store = self.store().clone();
        let (author, t) = (tip.author.to_vec(), tip.topic.clone());
        let ours = match blocking(move || Ok(store.last_seq(&author, &t)?)).await {
            Ok(o) => o,
            Err(_) => return (0, 0),
        };
        let after_seq = ours.map_or(0, |(s, _)| s);
        if tip.seq <= after_seq {
            return (0, 0);
        }
        // Nothing at or below the set's pruned past is asked for: it is gone.
        let after_seq = after_seq.max(pruned.min(tip.seq - 1));
        let chain = Chain {
            author: tip.author.to_vec(),
            topic: tip.topic.clone(),
            after_seq,
            since_ms: 0,
            whole: true,
        };
        let fetched = history::fetch_chain(
            self.net(),
            self.store(),
            tip_cid,
            ours.map(|(_, c)| c),
            vec![member],
            chain.clone(),
            tip.seq - after_seq,
        )
        .await;
        match fetched {
            Ok(s) if !s.complete => {
                tracing::debug!(%member, topic = %tip.topic, missing = s.missing.len(), "replica sync: stream only partly pulled")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%member, error = %e, "replica sync: fetch failed");
                return (0, 0);
            }
        }
        let store = self.store().clone();
        let pulled = blocking(move || {
            let Some(data) = store.get_block(&tip_cid)? else {
                return Ok(Vec::new());
            };
            let Some(head) = Event::decode_stored(&data) else {
                return Ok(Vec::new());
            };
            let mut out = history::chain_back(&store, &head, &chain)?;
            out.push((Block { cid: tip_cid, data }, head));
            Ok(out)
        })
        .await
        .unwrap_or_default();
        let n = pulled.len() as u64;
        let me = self.net().local_peer();
        let primary = rendezvous::publish_order(set, &tip.topic).first() == Some(&me);
        if primary {
            self.take_leases(topic::root_segment(&tip.topic), set).await;
            // Oldest first, so each subscriber gets the stream in order.
            for (block, event) in &pulled {
                self.route(block, event).await;
            }
        }
        (n, if primary { n } else { 0 })
    }

    /// Routes again the tip of every stream of `root` whose topic this node has become the
    /// primary of since the last round under `set` (every topic it is primary of, the first
    /// time it sees the root since it started); returns how many. See the module docs.
    async fn route_taken_over(&self, root: &str, set: &[PeerId]) -> u64 {
        let before = match self.sync_state().sets.lock() {
            Ok(mut s) => s.insert(root.to_string(), set.to_vec()),
            Err(_) => return 0,
        };
        if before.as_deref() == Some(set) {
            return 0;
        }
        let me = self.net().local_peer();
        let primary_in =
            |s: &[PeerId], t: &str| rendezvous::publish_order(s, t).first() == Some(&me);
        let store = self.store().clone();
        let r = root.to_string();
        let tips = match blocking(move || Ok(store.stream_tips(&r)?)).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%root, error = %e, "cannot list stream tips to take over");
                return 0;
            }
        };
        let taken: Vec<StreamTip> = tips
            .into_iter()
            .filter(|t| {
                primary_in(set, &t.topic)
                    && !before.as_deref().is_some_and(|b| primary_in(b, &t.topic))
            })
            .collect();
        if taken.is_empty() {
            return 0;
        }
        self.take_leases(root, set).await;
        let store = self.store().clone();
        let floor = now_ms().saturating_sub(TAKEOVER_WINDOW_MS);
        let recent = blocking(move || {
            let mut out = Vec::new();
            for tip in taken {
                if let Some(data) = store.get_block(&tip.cid)?
                    && let Some(event) = Event::decode_stored(&data)
                    && event.time >= floor
                {
                    out.push((Block { cid: tip.cid, data }, event));
                }
            }
            Ok(out)
        })
        .await
        .unwrap_or_default();
        for (block, event) in &recent {
            self.route(block, event).await;
        }
        if !recent.is_empty() {
            tracing::info!(%root, streams = recent.len(), first_round = before.is_none(), "primary of more topics: routed their streams' newest events again, in case the last primary acknowledged and never delivered them");
        }
        recent.len() as u64
    }

    /// Fetches the events missing below `hole.above` in its author's chain. What is still
    /// missing stays recorded for the next round.
    async fn fill_hole(&self, hole: ChainHole) -> HoleFill {
        let store = self.store().clone();
        let missing = hole.missing;
        // A tip pull, a later replica or a repair may have filled it since it was listed.
        if blocking(move || Ok(store.has_block(&missing)?))
            .await
            .unwrap_or(true)
        {
            return HoleFill::Closed;
        }
        let after_seq = hole.below.map_or(0, |(s, _)| s).max(hole.pruned);
        let me = self.net().local_peer();
        let set: Vec<PeerId> = self
            .net()
            .rendezvous_set(topic::root_segment(&hole.topic))
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        let chain = Chain {
            author: hole.author.clone(),
            topic: hole.topic.clone(),
            after_seq,
            since_ms: 0,
            whole: true,
        };
        let fetched = history::fetch_chain(
            self.net(),
            self.store(),
            hole.above,
            hole.below.map(|(_, c)| c),
            set,
            chain,
            hole.seq - after_seq,
        )
        .await;
        match fetched {
            Ok(s) if s.new_blocks > 0 => {
                tracing::info!(topic = %hole.topic, seq = hole.seq, below = after_seq, complete = s.complete, new = s.new_blocks, "replica sync: hole in a stream fetched");
                HoleFill::Fetched
            }
            Ok(s) => {
                tracing::debug!(topic = %hole.topic, seq = hole.seq, below = after_seq, missing = s.missing.len(), "replica sync: no member could fill a hole yet; retried later");
                HoleFill::Nothing
            }
            Err(e) => {
                tracing::debug!(topic = %hole.topic, error = %e, "replica sync: hole fetch failed; retried later");
                HoleFill::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_ipld_schema::{Ipld, Keypair};

    fn cid(n: i128) -> Cid {
        let kp = Keypair::ed25519_from_bytes([9; 32]).expect("key");
        let e = Event::sign(&kp, "/t/r", Ipld::Integer(n), 1, 1, vec![]).expect("sign");
        e.to_block().expect("block").cid
    }

    #[test]
    fn a_hole_nobody_fills_waits_longer_each_time_up_to_the_cap_and_a_fill_clears_it() {
        let (a, b) = (cid(1), cid(2));
        let mut t0 = Instant::now();
        let mut r = HoleRetry::default();
        assert!(r.waiting(t0).is_empty());
        // The first failures are retried at once (next round).
        for _ in 0..HOLE_FREE_RETRIES {
            r.failed(a, t0);
            assert!(r.waiting(t0).is_empty());
            t0 += Duration::from_secs(5);
        }
        r.failed(a, t0);
        assert_eq!(r.waiting(t0), HashSet::from([a]));
        // Due again after the first wait, not before.
        assert!(
            r.waiting(t0 + HOLE_RETRY_FIRST - Duration::from_millis(1))
                .contains(&a)
        );
        assert!(r.waiting(t0 + HOLE_RETRY_FIRST).is_empty());
        // Each failure doubles the wait.
        let t1 = t0 + HOLE_RETRY_FIRST;
        r.failed(a, t1);
        assert!(r.waiting(t1 + HOLE_RETRY_FIRST).contains(&a));
        assert!(r.waiting(t1 + HOLE_RETRY_FIRST * 2).is_empty());
        // The wait grows to the cap and no further, however often it fails.
        let mut last = t1;
        for _ in 0..40 {
            last += HOLE_RETRY_MAX;
            r.failed(a, last);
        }
        assert!(
            r.waiting(last + HOLE_RETRY_MAX - Duration::from_millis(1))
                .contains(&a)
        );
        assert!(r.waiting(last + HOLE_RETRY_MAX).is_empty());
        let t = last + HOLE_RETRY_MAX;
        // Each hole has its own backoff; a fill clears it.
        for _ in 0..=HOLE_FREE_RETRIES {
            r.failed(b, t);
        }
        assert_eq!(r.waiting(t), HashSet::from([b]));
        r.filled(&b);
        assert!(r.waiting(t).is_empty());
        // A member back: every hole in backoff is asked for at once, with its free retries.
        for _ in 0..=HOLE_FREE_RETRIES + 3 {
            r.failed(a, t);
            r.failed(b, t);
        }
        assert_eq!(r.waiting(t), HashSet::from([a, b]));
        r.member_back();
        assert!(r.waiting(t).is_empty());
        r.failed(a, t);
        assert!(r.waiting(t).is_empty());
    }
}
