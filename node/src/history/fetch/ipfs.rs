//! IPFS as the last source of history: what no tidings peer could give is asked of the node's
//! IPFS backend (`block/get`, and `dag/export` for a whole DAG), and every block it sends goes
//! through the same checks and storing as a peer's ([`check`], [`take`]). A block that fails
//! them is refused (nothing of it stored), logged, and IPFS is not asked again in this fetch.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tidings_ipld_schema::Cid;

use super::{BATCH, Ctx, FetchError, RoundError, check, still_needed, take};
use crate::ipfs::{Ipfs, RpcError};

/// How long IPFS may look for one block before it counts as not there.
const GET_WAIT: Duration = Duration::from_secs(3);
/// `block/get` requests in flight at once.
const GETS_IN_FLIGHT: usize = 16;

/// What `block/get` answered for one CID.
type GetAnswer = Result<Option<Vec<u8>>, RpcError>;

/// How asking IPFS ended.
enum Outcome {
    /// Keep going.
    Ok,
    /// IPFS failed or sent a bad block: stop asking it.
    Stop,
}

/// Asks IPFS for `need` and everything it leads to; returns what is still missing.
pub(super) async fn fetch_from(
    ipfs: &Ipfs,
    mut need: Vec<Cid>,
    ctx: &mut Ctx,
) -> Result<Vec<Cid>, FetchError> {
    // A whole DAG (no chain to follow, no stop) comes faster in one export than block by block.
    let whole = ctx.chain.is_none() && ctx.until.is_empty();
    let mut absent: HashSet<Cid> = HashSet::new();
    let mut exported: HashSet<Cid> = HashSet::new();
    while !need.is_empty() {
        let asked: Vec<Cid> = need.iter().take(BATCH).copied().collect();
        let before = ctx.summary.blocks;
        if let Outcome::Stop = get_round(ipfs, &asked, &mut absent, ctx).await? {
            break;
        }
        if whole {
            // The first blocks found start an export each: the rest of their DAG in one answer.
            let found: Vec<Cid> = asked
                .iter()
                .filter(|c| ctx.received.contains(c) && exported.insert(**c))
                .copied()
                .collect();
            let mut stop = false;
            for root in found {
                if let Outcome::Stop = export_round(ipfs, &root, ctx).await? {
                    stop = true;
                    break;
                }
            }
            if stop {
                break;
            }
        }
        need = still_needed(ctx).await?;
        need.retain(|c| !absent.contains(c));
        if ctx.summary.blocks == before {
            break;
        }
    }
    let mut left = still_needed(ctx).await?;
    left.sort();
    Ok(left)
}

/// One `block/get` per CID of `asked` (several in flight), checked and stored in order.
async fn get_round(
    ipfs: &Ipfs,
    asked: &[Cid],
    absent: &mut HashSet<Cid>,
    ctx: &mut Ctx,
) -> Result<Outcome, FetchError> {
    let answers: Vec<(Cid, GetAnswer)> = futures::stream::iter(asked.iter().copied())
        .map(|cid| async move { (cid, ipfs.rpc().block_get(&cid, GET_WAIT).await) })
        .buffered(GETS_IN_FLIGHT)
        .collect()
        .await;
    let mut got = Vec::new();
    let mut failed = None;
    for (cid, answer) in answers {
        match answer {
            Ok(Some(data)) => got.push((cid, data)),
            Ok(None) => {
                absent.insert(cid);
            }
            Err(e) => failed = Some(e),
        }
    }
    if !got.is_empty() {
        ipfs.note_ok();
    }
    let outcome = store(ipfs, got, ctx).await?;
    if let Some(e) = failed {
        ipfs.note_error(&e);
        tracing::debug!(error = %e, "history from IPFS: block/get failed");
        return Ok(Outcome::Stop);
    }
    Ok(outcome)
}

/// The DAG under `root` from one `dag/export`, checked and stored a batch at a time. A cut
/// export is not a failure: what came stands, and `block/get` goes on from there.
async fn export_round(ipfs: &Ipfs, root: &Cid, ctx: &mut Ctx) -> Result<Outcome, FetchError> {
    let mut export = match ipfs.rpc().dag_export(root).await {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(error = %e, %root, "history from IPFS: dag/export failed");
            return Ok(Outcome::Ok);
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        match export.next().await {
            Some(Ok(block)) => {
                // Already taken (the root itself, or from a peer): not sent twice to the checks.
                if !ctx.received.contains(&block.0) {
                    batch.push(block);
                }
                if batch.len() == BATCH
                    && let Outcome::Stop = store(ipfs, std::mem::take(&mut batch), ctx).await?
                {
                    return Ok(Outcome::Stop);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, %root, "history from IPFS: dag/export ended early");
                break;
            }
            None => break,
        }
    }
    store(ipfs, batch, ctx).await
}

/// Verifies and stores what IPFS sent, as a peer's blocks are; a bad block refuses IPFS.
async fn store(
    ipfs: &Ipfs,
    blocks: Vec<(Cid, Vec<u8>)>,
    ctx: &mut Ctx,
) -> Result<Outcome, FetchError> {
    if blocks.is_empty() {
        return Ok(Outcome::Ok);
    }
    // Whatever of them is stored came from IPFS: the mirror need not put it back.
    ipfs.note_held(blocks.iter().map(|(cid, _)| *cid));
    let checked = tokio::task::spawn_blocking(move || check(blocks))
        .await
        .map_err(|e| FetchError::Task(e.to_string()))?;
    let before = ctx.summary.blocks;
    let taken = take(ctx, checked).await;
    let got = ctx.summary.blocks - before;
    ctx.summary.ipfs_blocks += got;
    ipfs.counters.fetched.fetch_add(got, Ordering::Relaxed);
    match taken {
        Ok(()) => Ok(Outcome::Ok),
        Err(RoundError::Store(e)) => Err(e),
        Err(RoundError::BadPeer(why)) | Err(RoundError::Net(why)) => {
            ipfs.counters.refused.fetch_add(1, Ordering::Relaxed);
            ipfs.note_error(&RpcError::Garbage(format!(
                "a block that fails verification: {why}"
            )));
            tracing::warn!(
                ipfs = %ipfs.rpc().base(),
                reason = %why,
                "IPFS sent a block that fails verification: refused, nothing of it stored; not asking IPFS again in this fetch"
            );
            Ok(Outcome::Stop)
        }
    }
}
