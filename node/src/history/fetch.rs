//! The requester side of `/tidings/fetch/1`: asks the right peers for missing history, verifies
//! every block (CID, and signature for events) before keeping it, and says what is still missing.
//!
//! Pipeline per request: the stream is read in order, blocks go out in batches to be verified on
//! the blocking pool (ed25519 batch verification, several batches at once), and come back in
//! order to be checked against what was asked for and stored. A peer that sends a bad block, or
//! a block nobody asked for, is disconnected and penalised, and the fetch goes on elsewhere.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures::io::BufReader;
use libp2p::PeerId;
use serde::Serialize;
use serde_bytes::ByteBuf;
use tidings_ipld_schema::{Block, Cid, Error as SchemaError, Event, topic, verify_batch};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod ipfs;

use crate::net::batch::Batch;
use crate::net::codec;
use crate::net::fetch::{self, FetchRequest, Frame};
use crate::net::{Network, Role};
use crate::store::{CidSet, Store, StoreError};

/// Blocks verified together (one ed25519 batch, one store transaction).
const BATCH: usize = 1024;
/// Batches being verified at once while the stream keeps coming (8 kept both cores busier than
/// 4 did: 1.5-3% more blocks/s in the backfill bench).
const IN_FLIGHT: usize = 8;

/// What to fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Where to start (these blocks and everything they link to).
    pub want: Vec<Cid>,
    /// Where to stop: blocks already held by the caller, not fetched nor walked past.
    pub until: Vec<Cid>,
    /// Peers to ask before the usual ones (e.g. the node that delivered the event that revealed
    /// a gap).
    pub prefer: Vec<PeerId>,
    /// Verify without storing (benchmarks).
    pub verify_only: bool,
    /// One request per block, the way per-entry protocols (bitswap, OrbitDB) work: the
    /// benchmarks' baseline, not for real use.
    pub per_block: bool,
    /// Follow only one author's chain on one topic (gap repair): see [`Chain`].
    pub chain: Option<Chain>,
    /// Most blocks per request (0: the responder's limit).
    pub max_blocks: u64,
}

/// One (author, topic) stream, followed through each event's first `prev` link (where tidings
/// puts the author's previous event) down to `after_seq`, and no further back than `since_ms`.
/// Other links that arrive are accepted (they were linked, so not unsolicited) but not chased.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Author key bytes (protobuf).
    pub author: Vec<u8>,
    /// Topic.
    pub topic: String,
    /// Stop below this seq: the last one held.
    pub after_seq: u64,
    /// Stop at the first event older than this (publisher's clock, ms since epoch; 0: no
    /// floor): a stream first seen here is repaired back to when its subscriptions began.
    pub since_ms: u64,
    /// This node keeps the whole stream (a rendezvous member): a hole the fetch leaves (it
    /// stops early, or the node dies mid-way) is recorded and replica sync fills it.
    pub whole: bool,
}

/// Progress of a running fetch.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Progress {
    /// Blocks received and verified so far.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Expected total when it can be guessed (a single-author chain: the head's `seq`).
    pub estimate: Option<u64>,
}

/// What a fetch did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FetchSummary {
    /// Blocks received over the network (each verified).
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blocks that passed verification: signature and CID for events, CID for other blocks.
    pub verified: u64,
    /// Received blocks that were new to the store.
    pub new_blocks: u64,
    /// Wanted blocks that were already held before the fetch.
    pub held: u64,
    /// Wall time.
    pub seconds: f64,
    /// Peers that sent blocks, in the order asked.
    pub sources: Vec<String>,
    /// Blocks that came from the node's IPFS backend (asked when no peer had them), each
    /// verified like a peer's.
    pub ipfs_blocks: u64,
    /// CIDs still missing (nobody asked had them): empty when complete.
    pub missing: Vec<String>,
    /// Whether everything reachable from `want` (down to `until`) is now held.
    pub complete: bool,
    /// Peers penalised for bad blocks during this fetch.
    pub refused_peers: Vec<String>,
}

/// Why a fetch could not run.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task was lost (shutdown).
    #[error("fetch task failed: {0}")]
    Task(String),
}

/// How one request to one peer ended.
#[derive(Debug)]
enum RoundError {
    /// The peer could not be reached, was busy, or the stream broke: try another.
    Net(String),
    /// The peer sent something bad: penalise it.
    BadPeer(String),
    /// Our own store failed: stop.
    Store(FetchError),
}

/// What checking one received block found.
enum Checked {
    Event(Box<Event>),
    /// A block that is not an event (linked from a body): its CID matches, that is all a
    /// content-addressed block can prove.
    Plain,
    Bad(String),
}

/// State carried across requests of one fetch.
struct Ctx {
    store: Arc<Store>,
    until: CidSet,
    /// Every CID asked for or linked from a received event: anything else is unsolicited.
    linked: CidSet,
    /// What this fetch needs: all of `linked`, or only the chain's links.
    expected: CidSet,
    chain: Option<Chain>,
    max_blocks: u64,
    received: CidSet,
    verify_only: bool,
    summary: FetchSummary,
    progress: watch::Sender<Progress>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FetchError::Task(e.to_string()))?
        .map_err(FetchError::from)
}

/// Fetches what is missing of the DAG from `opts.want` down to `opts.until`, from the best
/// peers first, and reports on it. Incomplete is not an error: the summary lists what is missing.
pub async fn fetch(
    net: &Network,
    store: &Arc<Store>,
    opts: FetchOptions,
    progress: watch::Sender<Progress>,
) -> Result<FetchSummary, FetchError> {
    let started = Instant::now();
    let until: CidSet = opts.until.iter().copied().collect();
    // What is held locally needs no request: start from the edge of local history.
    let (want, until_c, s, chain) = (
        opts.want.clone(),
        until.clone(),
        store.clone(),
        opts.chain.clone(),
    );
    let (local, hint) = blocking(move || {
        let hint = match want.first() {
            Some(c) => s.get_block(c)?.and_then(|d| Event::decode(&d).ok()),
            None => None,
        };
        Ok((local_frontier(&s, &want, &until_c, chain.as_ref())?, hint))
    })
    .await?;
    let (mut need, held) = local;
    let mut ctx = Ctx {
        store: store.clone(),
        expected: need.iter().copied().collect(),
        linked: need.iter().copied().collect(),
        chain: opts.chain.clone(),
        max_blocks: opts.max_blocks,
        until,
        received: CidSet::default(),
        verify_only: opts.verify_only,
        summary: FetchSummary {
            held,
            ..FetchSummary::default()
        },
        progress,
    };
    let estimate = hint.as_ref().map(|e| e.seq);
    ctx.progress.send_modify(|p| p.estimate = estimate);
    let me = net.local_peer();
    for peer in sources(net, &opts.prefer, hint.as_ref()) {
        if need.is_empty() {
            break;
        }
        if peer == me || net.is_penalised(&peer) {
            continue;
        }
        // The same peer again while it makes progress (a limit stopped it, or its answer
        // revealed more links), then the next one for whatever it lacked.
        loop {
            let before = ctx.summary.blocks;
            let round = if opts.per_block {
                per_block_round(net, peer, &need, &mut ctx).await
            } else {
                stream_round(net, peer, &need, &mut ctx).await
            };
            let got = ctx.summary.blocks - before;
            if got > 0 && !ctx.summary.sources.contains(&peer.to_string()) {
                ctx.summary.sources.push(peer.to_string());
            }
            match round {
                Ok(()) => {}
                Err(RoundError::Store(e)) => return Err(e),
                Err(RoundError::BadPeer(why)) => {
                    net.penalise(peer, &why).await;
                    ctx.summary.refused_peers.push(peer.to_string());
                }
                Err(RoundError::Net(why)) => {
                    tracing::debug!(%peer, reason = %why, "fetch source failed");
                }
            }
            need = still_needed(&ctx).await?;
            if got == 0 || need.is_empty() || net.is_penalised(&peer) {
                break;
            }
        }
    }
    // What no tidings peer had: the IPFS backend, unless it failed moments ago.
    if !need.is_empty()
        && !opts.per_block
        && let Some(backend) = net.ipfs()
        && backend.worth_asking()
    {
        need = ipfs::fetch_from(&backend, need, &mut ctx).await?;
    }
    ctx.summary.complete = need.is_empty();
    ctx.summary.missing = need.iter().map(|c| c.to_string()).collect();
    ctx.summary.seconds = started.elapsed().as_secs_f64();
    Ok(ctx.summary)
}

/// Fetches one (author, topic) chain from the event `want` down to `chain.after_seq` (and no
/// further than `until`), asking `prefer` first. `expected` is how many events of the chain
/// are missing; the request leaves room for other writers' events interleaved in the walk.
/// Gap repair, replica sync and hole filling all walk a chain this way.
pub async fn fetch_chain(
    net: &Network,
    store: &Arc<Store>,
    want: Cid,
    until: Option<Cid>,
    prefer: Vec<PeerId>,
    chain: Chain,
    expected: u64,
) -> Result<FetchSummary, FetchError> {
    let opts = FetchOptions {
        want: vec![want],
        until: until.into_iter().collect(),
        prefer,
        chain: Some(chain),
        max_blocks: expected.saturating_mul(4).saturating_add(64),
        ..FetchOptions::default()
    };
    let (tx, _rx) = watch::channel(Progress::default());
    fetch(net, store, opts, tx).await
}

/// Walks what is held locally from `want`; returns the CIDs where local history ends (the
/// first blocks to fetch) and how many blocks were held already.
fn local_frontier(
    store: &Store,
    want: &[Cid],
    until: &CidSet,
    chain: Option<&Chain>,
) -> Result<(Vec<Cid>, u64), StoreError> {
    let Some(chain) = chain else {
        let mut held = 0;
        let walked = store.walk(want, until, u64::MAX, u64::MAX, |_, _| {
            held += 1;
            true
        })?;
        return Ok((walked.missing, held));
    };
    let mut need = Vec::new();
    let mut held = 0;
    for start in want {
        let mut cur = Some(*start);
        while let Some(cid) = cur.take() {
            if until.contains(&cid) {
                break;
            }
            let Some(data) = store.get_block(&cid)? else {
                need.push(cid);
                break;
            };
            held += 1;
            cur = Event::decode(&data)
                .ok()
                .and_then(|e| chain_link(chain, &e));
        }
    }
    Ok((need, held))
}

/// The link to follow from `event` on `chain`, if it is on the chain and not yet at its end.
pub(crate) fn chain_link(chain: &Chain, event: &Event) -> Option<Cid> {
    (event.author == chain.author
        && event.topic == chain.topic
        && event.seq > chain.after_seq + 1
        && event.time >= chain.since_ms)
        .then(|| event.prev.first().copied())
        .flatten()
}

/// Who to ask, best first: `prefer`, the root's rendezvous set, the author, then every
/// connected node (brokers first).
fn sources(net: &Network, prefer: &[PeerId], hint: Option<&Event>) -> Vec<PeerId> {
    let mut out: Vec<PeerId> = prefer.to_vec();
    if let Some(event) = hint {
        out.extend(net.rendezvous_set(topic::root_segment(&event.topic)));
        if let Ok(author) = event.author_peer_id() {
            out.push(author);
        }
    }
    let dir = net.directory();
    let (brokers, others): (Vec<PeerId>, Vec<PeerId>) =
        dir.connected.iter().partition(|p| dir.brokers.contains(p));
    out.extend(brokers);
    out.extend(others);
    if net.role() == Role::Peer {
        out.extend(dir.brokers.iter().copied());
    }
    let mut seen = HashSet::new();
    out.retain(|p| seen.insert(*p));
    out
}

/// What is still to fetch: expected, not received, not where we stop, not held already.
async fn still_needed(ctx: &Ctx) -> Result<Vec<Cid>, FetchError> {
    let open: Vec<Cid> = ctx
        .expected
        .iter()
        .filter(|c| !ctx.received.contains(c) && !ctx.until.contains(c))
        .copied()
        .collect();
    let store = ctx.store.clone();
    blocking(move || {
        let mut need = Vec::new();
        for c in open {
            if !store.has_block(&c)? {
                need.push(c);
            }
        }
        need.sort();
        Ok(need)
    })
    .await
}

fn request(want: &[Cid], until: &CidSet, max_blocks: u64) -> FetchRequest {
    // Each list up to its share of the responder's request limit (and count): what does not fit
    // is asked for in a later round (`want`) or walked past (`have`: at worst, blocks held).
    let list = |cids: &mut dyn Iterator<Item = &Cid>| {
        let mut b = Batch::new(fetch::LIST_BUDGET);
        b.fill(
            || cids.next().map(|c| ByteBuf::from(c.to_bytes())),
            |c| fetch::listed_size(c),
        );
        b.into_items()
    };
    FetchRequest {
        want: list(&mut want.iter()),
        have: list(&mut until.iter()),
        max_blocks,
        max_bytes: 0,
    }
}

/// A request as written on the stream, checked against the responder's limit.
fn encode(req: &FetchRequest) -> Result<Vec<u8>, RoundError> {
    let bytes = fetch::encode_request(req).map_err(|e| RoundError::Net(e.to_string()))?;
    codec::check_encoded(
        fetch::PROTOCOL.as_ref(),
        bytes.len().saturating_sub(4),
        fetch::MAX_REQUEST,
    )
    .map_err(|e| RoundError::Net(e.to_string()))?;
    Ok(bytes)
}

/// One request answered by a stream of blocks.
async fn stream_round(
    net: &Network,
    peer: PeerId,
    want: &[Cid],
    ctx: &mut Ctx,
) -> Result<(), RoundError> {
    let stream = net
        .open_fetch(peer)
        .await
        .map_err(|e| RoundError::Net(e.to_string()))?;
    let mut stream = BufReader::with_capacity(256 * 1024, stream);
    let req = encode(&request(want, &ctx.until, ctx.max_blocks))?;
    fetch::write_all(&mut stream, &req)
        .await
        .map_err(|e| RoundError::Net(e.to_string()))?;
    let (tx, mut rx) = mpsc::channel::<JoinHandle<Vec<(Block, Checked)>>>(IN_FLIGHT);
    let reader = async move {
        let mut buf = Vec::new();
        let mut batch = Vec::with_capacity(BATCH);
        let end = loop {
            match fetch::read_frame(&mut stream, &mut buf).await {
                Ok(Frame::Block(cid, data)) => {
                    batch.push((cid, data));
                    if batch.len() == BATCH {
                        let b = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        if tx
                            .send(tokio::task::spawn_blocking(|| check(b)))
                            .await
                            .is_err()
                        {
                            break Ok(None); // the storer stopped: it says why
                        }
                    }
                }
                Ok(Frame::End(end)) => break Ok(Some(end)),
                Err(fetch::WireError::Malformed(m)) => break Err(RoundError::BadPeer(m)),
                Err(e) => break Err(RoundError::Net(e.to_string())),
            }
        };
        if !batch.is_empty() {
            let _ = tx.send(tokio::task::spawn_blocking(|| check(batch))).await;
        }
        end
    };
    let storer = async {
        while let Some(handle) = rx.recv().await {
            let checked = handle
                .await
                .map_err(|e| RoundError::Store(FetchError::Task(e.to_string())))?;
            take(ctx, checked).await?;
        }
        Ok::<(), RoundError>(())
    };
    let (end, stored) = tokio::join!(reader, storer);
    stored?;
    match end? {
        Some(end) => match end.error {
            Some(e) => Err(RoundError::Net(format!("peer answered: {e}"))),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// The baseline: one request and one round trip per block, walking `prev` as blocks arrive.
async fn per_block_round(
    net: &Network,
    peer: PeerId,
    want: &[Cid],
    ctx: &mut Ctx,
) -> Result<(), RoundError> {
    let mut queue: VecDeque<Cid> = want.iter().copied().collect();
    let mut pending = Vec::with_capacity(BATCH);
    while let Some(cid) = queue.pop_front() {
        if ctx.received.contains(&cid) || ctx.until.contains(&cid) {
            continue;
        }
        let stream = net
            .open_fetch(peer)
            .await
            .map_err(|e| RoundError::Net(e.to_string()))?;
        let mut stream = BufReader::new(stream);
        let req = encode(&request(&[cid], &ctx.until, 1))?;
        fetch::write_all(&mut stream, &req)
            .await
            .map_err(|e| RoundError::Net(e.to_string()))?;
        let mut buf = Vec::new();
        loop {
            match fetch::read_frame(&mut stream, &mut buf).await {
                Ok(Frame::Block(c, data)) => {
                    let checked = check(vec![(c, data)]);
                    for (_, c) in &checked {
                        if let Checked::Event(e) = c {
                            queue.extend(e.prev.iter().copied().chain(e.body_links()));
                        }
                    }
                    pending.extend(checked);
                }
                Ok(Frame::End(_)) => break,
                Err(fetch::WireError::Malformed(m)) => return Err(RoundError::BadPeer(m)),
                Err(e) => return Err(RoundError::Net(e.to_string())),
            }
        }
        if pending.len() >= BATCH {
            take(ctx, std::mem::take(&mut pending)).await?;
        }
    }
    take(ctx, pending).await
}

/// Verifies a batch: CID and signature for events, CID for other blocks.
fn check(blocks: Vec<(Cid, Vec<u8>)>) -> Vec<(Block, Checked)> {
    let results = verify_batch(blocks.iter().map(|(c, d)| (c, d.as_slice())));
    blocks
        .into_iter()
        .zip(results)
        .map(|((cid, data), r)| {
            let checked = match r {
                Ok(event) => Checked::Event(Box::new(event)),
                // Shaped like an event but not a valid one: forged or corrupt.
                Err(
                    e @ (SchemaError::BadSignature
                    | SchemaError::BadAuthor(_)
                    | SchemaError::BadVersion(_)
                    | SchemaError::BadTopic(_)
                    | SchemaError::BadSeq),
                ) => Checked::Bad(format!("block {cid}: {e}")),
                Err(_) => match Block::check(&cid, &data) {
                    Ok(()) => Checked::Plain,
                    Err(e) => Checked::Bad(format!("block {cid}: {e}")),
                },
            };
            (Block { cid, data }, checked)
        })
        .collect()
}

/// Takes verified blocks in stream order: refuses unsolicited ones, learns their links, stores.
async fn take(ctx: &mut Ctx, checked: Vec<(Block, Checked)>) -> Result<(), RoundError> {
    let mut events = Vec::new();
    let mut plain = Vec::new();
    let mut bad = None;
    for (block, c) in checked {
        if ctx.received.contains(&block.cid) {
            continue; // sent twice: harmless
        }
        if let Checked::Bad(why) = &c {
            bad = Some(why.clone());
            break;
        }
        if !ctx.linked.contains(&block.cid) {
            bad = Some(format!("sent block {} that nothing asked for", block.cid));
            break;
        }
        ctx.received.insert(block.cid);
        ctx.summary.blocks += 1;
        ctx.summary.verified += 1;
        ctx.summary.bytes += block.data.len() as u64;
        match c {
            Checked::Event(event) => {
                for link in event.prev.iter().chain(event.body_links().iter()) {
                    if !ctx.until.contains(link) {
                        ctx.linked.insert(*link);
                        if ctx.chain.is_none() {
                            ctx.expected.insert(*link);
                        }
                    }
                }
                if let Some(link) = ctx.chain.as_ref().and_then(|c| chain_link(c, &event))
                    && !ctx.until.contains(&link)
                {
                    ctx.expected.insert(link);
                }
                events.push((block, *event));
            }
            _ => plain.push(block),
        }
    }
    let (blocks, bytes) = (ctx.summary.blocks, ctx.summary.bytes);
    ctx.progress.send_modify(|p| {
        p.blocks = blocks;
        p.bytes = bytes;
    });
    // What verified is kept even when a later block of the batch is bad.
    if !ctx.verify_only && (!events.is_empty() || !plain.is_empty()) {
        let whole = ctx.chain.as_ref().is_some_and(|c| c.whole);
        let summary = ctx
            .store
            .insert_grouped(events, plain, move |_| whole)
            .await
            .map_err(|e| RoundError::Store(FetchError::from(e)))?;
        ctx.summary.new_blocks += summary.new_blocks;
    }
    match bad {
        Some(why) => Err(RoundError::BadPeer(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_ipld_schema::{Ipld, Keypair};

    fn chain(n: u64) -> Vec<Block> {
        let kp = Keypair::ed25519_from_bytes([3; 32]).expect("key");
        let mut prev = vec![];
        (1..=n)
            .map(|seq| {
                let (_, b) = Event::sign_block(
                    &kp,
                    "/f/x",
                    Ipld::Integer(seq as i128),
                    seq,
                    seq,
                    prev.clone(),
                )
                .expect("sign");
                prev = vec![b.cid];
                b
            })
            .collect()
    }

    /// 16k CIDs in each list were over the responder's 1 MiB request limit: the lists are
    /// now cut to what fits, and the request is accepted.
    #[test]
    fn a_request_with_long_cid_lists_stays_under_the_responder_limit() {
        let cids: Vec<Cid> = (0..2 * fetch::MAX_LISTED as u32)
            .map(|i| tidings_ipld_schema::cid_of(tidings_ipld_schema::RAW, &i.to_be_bytes()))
            .collect();
        let (want, until) = cids.split_at(fetch::MAX_LISTED);
        let until: CidSet = until.iter().copied().collect();
        let req = request(want, &until, 0);
        let bytes = encode(&req).expect("within the limit");
        assert!(bytes.len() - 4 <= fetch::MAX_REQUEST, "{}", bytes.len());
        assert!(req.want.len() > 10_000 && req.have.len() > 10_000);
        assert_eq!(
            req.want,
            want[..req.want.len()]
                .iter()
                .map(|c| ByteBuf::from(c.to_bytes()))
                .collect::<Vec<_>>(),
            "the first wants, in order"
        );
        assert!(fetch::decode_request(&bytes[4..]).is_ok());
    }

    fn ctx(store: Arc<Store>, want: Cid) -> Ctx {
        Ctx {
            store,
            until: CidSet::default(),
            linked: [want].into_iter().collect(),
            expected: [want].into_iter().collect(),
            chain: None,
            max_blocks: 0,
            received: CidSet::default(),
            verify_only: false,
            summary: FetchSummary::default(),
            progress: watch::channel(Progress::default()).0,
        }
    }

    #[test]
    fn a_chain_walk_stops_at_its_seq_or_at_its_time_floor_whichever_comes_first() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        let blocks = chain(8);
        let events: Vec<(Block, Event)> = blocks
            .iter()
            .map(|b| (b.clone(), Event::decode(&b.data).expect("decode")))
            .collect();
        store.insert_events(&events, &[]).expect("insert");
        let head = &events[7].1;
        let walk = |after_seq, since_ms| {
            let c = Chain {
                author: head.author.clone(),
                topic: head.topic.clone(),
                after_seq,
                since_ms,
                whole: false,
            };
            crate::history::chain_back(&store, head, &c)
                .expect("walk")
                .iter()
                .map(|(_, e)| e.seq)
                .collect::<Vec<_>>()
        };
        // In `chain`, an event's time is its seq.
        assert_eq!(walk(0, 0), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(walk(5, 0), vec![6, 7]);
        assert_eq!(walk(0, 4), vec![4, 5, 6, 7]);
        assert_eq!(walk(5, 3), vec![6, 7]);
        assert_eq!(walk(2, 6), vec![6, 7]);
        // An event below the floor is the last one fetched: its link is not followed.
        let c = Chain {
            author: head.author.clone(),
            topic: head.topic.clone(),
            after_seq: 0,
            since_ms: 5,
            whole: false,
        };
        assert_eq!(chain_link(&c, &events[4].1), Some(blocks[3].cid));
        assert_eq!(chain_link(&c, &events[3].1), None);
    }

    #[tokio::test]
    async fn good_blocks_are_stored_and_bad_or_unsolicited_ones_refuse_the_peer() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).expect("store"));
        let blocks = chain(4);
        let head = blocks[3].cid;
        // Newest first, as a responder sends them: all good.
        let mut c = ctx(store.clone(), head);
        let batch = blocks
            .iter()
            .rev()
            .map(|b| (b.cid, b.data.clone()))
            .collect();
        take(&mut c, check(batch)).await.expect("good blocks");
        assert_eq!((c.summary.blocks, c.summary.new_blocks), (4, 4));
        assert!(store.has_block(&blocks[0].cid).expect("has"));

        // A block nobody linked: refused, and nothing of it stored.
        let other = chain(5);
        let mut c = ctx(store.clone(), head);
        let r = take(&mut c, check(vec![(other[4].cid, other[4].data.clone())])).await;
        assert!(
            matches!(r, Err(RoundError::BadPeer(ref m)) if m.contains("nothing asked for")),
            "{r:?}"
        );
        assert!(!store.has_block(&other[4].cid).expect("has"));

        // A forged event under the wanted CID's links: its signature fails.
        let mut forged = Event::decode(&other[3].data).expect("decode");
        forged.body = Ipld::Integer(99);
        let forged = forged.to_block().expect("block");
        let mut c = ctx(store.clone(), forged.cid);
        let r = take(&mut c, check(vec![(forged.cid, forged.data.clone())])).await;
        assert!(
            matches!(r, Err(RoundError::BadPeer(ref m)) if m.contains("signature")),
            "{r:?}"
        );
        assert!(!store.has_block(&forged.cid).expect("has"));

        // Bytes that do not hash to the CID sent with them.
        let mut c = ctx(store.clone(), other[2].cid);
        let r = take(&mut c, check(vec![(other[2].cid, other[1].data.clone())])).await;
        assert!(matches!(r, Err(RoundError::BadPeer(_))), "{r:?}");
    }
}
