//! Signing and verification off the async reactor, on one pool sized to the cores.
//!
//! ed25519 is the floor of every path that makes or takes events (≈19 µs to sign, ≈31 µs to
//! verify one on this kind of machine): run on the reactor it stalls every connection for that
//! long, and run one block at a time it leaves cores idle. Blocks that arrive together are
//! verified as one batch per core with ed25519 batch verification (a bad signature among them
//! is still found: the batch falls back to checking each one).

use std::sync::OnceLock;

use rayon::prelude::*;
use tidings_ipld_schema::{Block, Cid, Event, verify_batch};
use tokio::sync::oneshot;

/// Blocks below this are verified as one batch on one thread: spreading them costs more than
/// it saves.
const MIN_SPLIT: usize = 32;
/// Fewer blocks than this are verified where they arrived, on the runtime's worker (a few tens
/// of µs each): a hand-off to the pool and back costs more than that on a busy machine.
const INLINE_BELOW: usize = 4;

fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tidings-crypto-{i}"))
            .build()
            .unwrap_or_else(|_| {
                // A pool of one thread is still off the reactor.
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap_or_else(|e| panic!("cannot start a crypto thread: {e}"))
            })
    })
}

/// Runs `f` on the crypto pool and waits for it without blocking the reactor; `None` if it
/// panicked (a bug, reported where it was asked for rather than taking the caller down).
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = oneshot::channel();
    pool().spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.ok()
}

/// Verifies blocks received from the network (CID bytes, block bytes) as signed events, in
/// batches spread over the pool; one result per block, in order. A block fails if its CID does
/// not parse or match, it is not a valid event, or its signature is bad.
pub async fn verify_wire_batch(
    blocks: Vec<(Vec<u8>, Vec<u8>)>,
) -> Vec<Result<(Block, Event), String>> {
    let n = blocks.len();
    if n < INLINE_BELOW {
        return verify_wire_now(blocks);
    }
    run(move || verify_wire_now(blocks))
        .await
        .unwrap_or_else(|| {
            tracing::error!(
                blocks = n,
                "bug: verification panicked; the blocks are refused"
            );
            (0..n)
                .map(|_| Err("verification failed".to_string()))
                .collect()
        })
}

/// [`verify_wire_batch`] on the calling thread.
pub fn verify_wire_now(blocks: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Result<(Block, Event), String>> {
    let parsed: Vec<Result<Block, String>> = blocks
        .into_iter()
        .map(|(cid, data)| {
            Cid::try_from(cid.as_slice())
                .map(|cid| Block { cid, data })
                .map_err(|e| format!("bad CID: {e}"))
        })
        .collect();
    let threads = pool().current_num_threads().max(1);
    let chunk = parsed.len().div_ceil(threads).max(MIN_SPLIT);
    let checked: Vec<Vec<Result<(Block, Event), String>>> = pool().install(|| {
        parsed
            .par_chunks(chunk)
            .map(|part| {
                let ok: Vec<&Block> = part.iter().filter_map(|b| b.as_ref().ok()).collect();
                let mut verdicts =
                    verify_batch(ok.iter().map(|b| (&b.cid, b.data.as_slice()))).into_iter();
                part.iter()
                    .map(|b| match b {
                        Err(e) => Err(e.clone()),
                        Ok(block) => match verdicts.next() {
                            Some(Ok(event)) => Ok((block.clone(), event)),
                            Some(Err(e)) => Err(format!("block {}: {e}", block.cid)),
                            None => Err(format!("block {}: not verified", block.cid)),
                        },
                    })
                    .collect()
            })
            .collect()
    });
    checked.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_ipld_schema::{Ipld, Keypair};

    fn blocks(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let kp = Keypair::ed25519_from_bytes([5; 32]).expect("key");
        (1..=n)
            .map(|seq| {
                let e = Event::sign(&kp, "/c/t", Ipld::Integer(seq.into()), seq, seq, vec![])
                    .expect("sign");
                let b = e.to_block().expect("block");
                (b.cid.to_bytes(), b.data)
            })
            .collect()
    }

    #[test]
    fn a_batch_over_several_threads_keeps_order_and_finds_the_one_forged_block() {
        let mut bs = blocks(200);
        let good = verify_wire_now(bs.clone());
        assert!(good.iter().all(Result::is_ok));
        for (i, r) in good.iter().enumerate() {
            assert_eq!(r.as_ref().map(|(_, e)| e.seq).ok(), Some(i as u64 + 1));
        }
        // Flip a byte of one signature (the block's last bytes) and give it its own CID, so
        // only the signature is wrong.
        let forged = 137;
        let data = &mut bs[forged].1;
        let last = data.len() - 1;
        data[last] ^= 1;
        let cid = tidings_ipld_schema::cid_of(tidings_ipld_schema::DAG_CBOR, data);
        bs[forged].0 = cid.to_bytes();
        bs[3].0 = vec![1, 2, 3];
        let out = verify_wire_now(bs);
        assert_eq!(out.len(), 200);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.is_err(), i == forged || i == 3, "block {i}: {r:?}");
        }
    }
}
