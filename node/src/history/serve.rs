//! The responder side of `/tidings/fetch/1`: walks the local DAG and streams blocks.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use serde_bytes::ByteBuf;
use tidings_ipld_schema::Cid;
use tokio::sync::{Semaphore, mpsc};

use crate::net::fetch::{self, FetchEnd};
use crate::net::{Network, codec};
use crate::store::{CidSet, Store};

/// Fetches served at once; more are answered "busy" so a flood cannot exhaust the node.
const MAX_CONCURRENT: usize = 16;
/// Most blocks one request gets, whatever it asks for.
pub const MAX_BLOCKS: u64 = 1_000_000;
/// Most bytes one request gets, whatever it asks for.
pub const MAX_BYTES: u64 = 1 << 30;
/// How long a requester may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames are written in chunks of about this size.
const CHUNK: usize = 64 * 1024;

/// Serves inbound fetch streams until the network stops.
pub async fn serve(net: Network, store: Arc<Store>) {
    let Some(mut incoming) = net.accept_fetch() else {
        tracing::error!("fetch protocol already being served");
        return;
    };
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    while let Some((peer, stream)) = incoming.next().await {
        if net.is_penalised(&peer) {
            tracing::debug!(%peer, "fetch from a penalised peer refused");
            continue;
        }
        let permit = slots.clone().try_acquire_owned().ok();
        let store = store.clone();
        tokio::spawn(async move {
            let busy = permit.is_none();
            if let Err(e) = serve_one(peer, stream, store, busy).await {
                tracing::debug!(%peer, error = %e, "fetch stream ended early");
            }
            drop(permit);
        });
    }
}

async fn serve_one(
    peer: PeerId,
    mut stream: Stream,
    store: Arc<Store>,
    busy: bool,
) -> Result<(), fetch::WireError> {
    let req = match tokio::time::timeout(REQUEST_TIMEOUT, fetch::read_request(&mut stream)).await {
        Ok(Ok(req)) => req,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "refused a malformed fetch request");
            return finish(&mut stream, error_end(e.to_string())).await;
        }
        Err(_) => {
            tracing::debug!(%peer, "fetch request timed out");
            return finish(&mut stream, error_end("request timed out".into())).await;
        }
    };
    if busy {
        return finish(&mut stream, error_end("busy: too many fetches".into())).await;
    }
    let parse = |list: &[ByteBuf]| -> Result<Vec<Cid>, String> {
        list.iter()
            .map(|b| Cid::try_from(b.as_slice()).map_err(|e| format!("bad CID: {e}")))
            .collect()
    };
    let (want, have) = match (parse(&req.want), parse(&req.have)) {
        (Ok(w), Ok(h)) => (w, h.into_iter().collect::<CidSet>()),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(%peer, error = %e, "refused a fetch request");
            return finish(&mut stream, error_end(e)).await;
        }
    };
    let max_blocks = limit(req.max_blocks, MAX_BLOCKS);
    let max_bytes = limit(req.max_bytes, MAX_BYTES);
    tracing::debug!(%peer, want = want.len(), have = have.len(), max_blocks, "serving a fetch");
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let walker = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        let walked = store.walk(&want, &have, max_blocks, max_bytes, |cid, data| {
            let cid = cid.to_bytes();
            // Stored blocks were checked (1 MiB) on the way in; a frame the requester would
            // refuse, and penalise us for, is never sent.
            let frame = fetch::block_frame_len(&cid, data);
            if cid.len() > usize::from(u8::MAX)
                || codec::check_encoded(fetch::PROTOCOL.as_ref(), frame, fetch::MAX_FRAME).is_err()
            {
                return true;
            }
            fetch::push_block(&mut buf, &cid, data);
            if buf.len() >= CHUNK {
                let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 1024));
                // A closed channel: the requester went away; stop walking.
                return tx.blocking_send(chunk).is_ok();
            }
            true
        });
        if !buf.is_empty() {
            let _ = tx.blocking_send(buf);
        }
        walked
    });
    while let Some(chunk) = rx.recv().await {
        stream.write_all(&chunk).await?;
    }
    let end = match walker.await {
        Ok(Ok(w)) => FetchEnd {
            blocks: w.sent,
            // Capped like requests; the requester works out anything further from the links.
            more: w
                .more
                .iter()
                .take(fetch::MAX_LISTED)
                .map(|c| ByteBuf::from(c.to_bytes()))
                .collect(),
            missing: w
                .missing
                .iter()
                .take(fetch::MAX_LISTED)
                .map(|c| ByteBuf::from(c.to_bytes()))
                .collect(),
            error: None,
        },
        Ok(Err(e)) => error_end(format!("store: {e}")),
        Err(e) => error_end(format!("walk failed: {e}")),
    };
    finish(&mut stream, end).await
}

fn limit(asked: u64, max: u64) -> u64 {
    if asked == 0 { max } else { asked.min(max) }
}

fn error_end(error: String) -> FetchEnd {
    FetchEnd {
        error: Some(error),
        ..FetchEnd::default()
    }
}

async fn finish(stream: &mut Stream, end: FetchEnd) -> Result<(), fetch::WireError> {
    fetch::write_all(stream, &fetch::end_frame(&end)).await?;
    stream.close().await?;
    Ok(())
}
