//! Signing and verification off the async reactor, on one pool sized to the cores.
//!
//! ed25519 is the floor of every path that makes or takes events (≈19 µs to sign, ≈31 µs to
//! verify one on this kind of machine): run on the reactor it stalls every connection for that
//! long, and run one block at a time it leaves cores idle. Blocks that arrive together are
//! verified with ed25519 batch verification (a bad signature among them is still found: the
//! batch falls back to checking each one): a few tens of them where they arrived, more as one
//! batch per core on the pool.
//!
//! A block whose CID this process verified (or signed) lately is not verified again: its bytes
//! are hashed against the CID, which proves they are the bytes that verified. On a broker that
//! is both a replica and a subscriber's node, each event arrives twice (replicate, then
//! deliver), and the second signature check was a quarter of the set's crypto.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;
use tidings_ipld_schema::{Block, Cid, Event, verify_batch};
use tokio::sync::oneshot;

/// Blocks below this are verified as one batch on one thread: spreading them costs more than
/// it saves.
const MIN_SPLIT: usize = 32;
/// Fewer blocks than this are verified where they arrived, as one batch on the runtime's
/// worker (about 1 ms for 63). A hand-off to the pool costs two thread wake-ups, and an idle
/// rayon thread yields the CPU again and again before it sleeps: with three nodes on two cores
/// at 5,000 events/s, a threshold of 4 sent most replicate and deliver requests to the pool,
/// whose threads then woke 4,000-5,600 times a second each node for 0.16-0.19 of a core, and
/// every thread of the machine waited longer for a core. Measured in the same script
/// (`compare --systems tidings-3 --scenarios latency --latency-secs 20`, 4 rounds alternating
/// 64 and 4): p50 / p99 19-31 / 46-69 ms against 25-37 / 52-76 ms with 4.
const INLINE_BELOW: usize = 64;
// The test of the inline path needs a batch larger than one thread's share of a spread one.
const _: () = assert!(INLINE_BELOW - 1 > MIN_SPLIT);

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

/// How many verified CIDs are remembered: several seconds of traffic at full rate, a few MB.
const SEEN_CAP: usize = 1 << 16;

/// CIDs of event blocks that passed full verification (or were signed) in this process, oldest
/// first in `order`. Verification is a function of the bytes alone, so one memory serves every
/// node in the process.
#[derive(Default)]
struct Seen {
    set: HashSet<Cid>,
    order: VecDeque<Cid>,
}

fn seen() -> &'static Mutex<Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    SEEN.get_or_init(|| Mutex::new(Seen::default()))
}

/// Records event blocks that verified, or that this process signed (their bytes are the
/// signer's own), so a later copy is checked by its hash alone.
pub fn remember_verified(cids: impl IntoIterator<Item = Cid>) {
    // A poisoned lock only loses the memory: every block is then verified in full.
    let Ok(mut seen) = seen().lock() else { return };
    for cid in cids {
        if seen.set.insert(cid) {
            seen.order.push_back(cid);
        }
    }
    while seen.order.len() > SEEN_CAP {
        if let Some(old) = seen.order.pop_front() {
            seen.set.remove(&old);
        }
    }
}

/// Which of `cids` were verified lately (see [`remember_verified`]).
fn verified_lately(cids: &[Option<Cid>]) -> Vec<bool> {
    match seen().lock() {
        Ok(seen) => cids
            .iter()
            .map(|c| c.as_ref().is_some_and(|c| seen.set.contains(c)))
            .collect(),
        Err(_) => vec![false; cids.len()],
    }
}

/// A block whose CID verified lately: the bytes must hash to the CID (then they are the bytes
/// that verified), and decode as the event they were.
fn check_known(block: &Block) -> Result<Event, String> {
    Block::check(&block.cid, &block.data).map_err(|e| format!("block {}: {e}", block.cid))?;
    Event::decode_stored(&block.data).ok_or_else(|| format!("block {}: not an event", block.cid))
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
        return verify_wire_here(blocks);
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

/// A block as it came off the wire: its CID bytes parsed.
fn wire_block(cid: &[u8], data: Vec<u8>) -> Result<Block, String> {
    Cid::try_from(cid)
        .map(|cid| Block { cid, data })
        .map_err(|e| format!("bad CID: {e}"))
}

/// Verifies one part of a batch as one ed25519 batch; blocks whose CID verified lately are
/// checked by their hash.
fn check_part(part: &[(Result<Block, String>, bool)]) -> Vec<Result<(Block, Event), String>> {
    let ok: Vec<&Block> = part
        .iter()
        .filter_map(|(b, known)| b.as_ref().ok().filter(|_| !known))
        .collect();
    let mut verdicts = verify_batch(ok.iter().map(|b| (&b.cid, b.data.as_slice()))).into_iter();
    part.iter()
        .map(|(b, known)| match b {
            Err(e) => Err(e.clone()),
            Ok(block) if *known => check_known(block).map(|e| (block.clone(), e)),
            Ok(block) => match verdicts.next() {
                Some(Ok(event)) => Ok((block.clone(), event)),
                Some(Err(e)) => Err(format!("block {}: {e}", block.cid)),
                None => Err(format!("block {}: not verified", block.cid)),
            },
        })
        .collect()
}

/// [`verify_wire_batch`] on the calling thread; a batch too large for one thread is spread
/// over the pool, and this thread waits for it.
pub fn verify_wire_now(blocks: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Result<(Block, Event), String>> {
    verify_wire(blocks, true)
}

/// [`verify_wire_batch`] as one batch on the calling thread, whatever its size: never waits
/// for the pool (for a reactor thread, with a batch small enough not to stall it).
fn verify_wire_here(blocks: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Result<(Block, Event), String>> {
    verify_wire(blocks, false)
}

/// Parses, checks known blocks by their hash and verifies the rest; `spread` lets a large
/// batch go over the pool's threads.
fn verify_wire(
    blocks: Vec<(Vec<u8>, Vec<u8>)>,
    spread: bool,
) -> Vec<Result<(Block, Event), String>> {
    let parsed: Vec<Result<Block, String>> = blocks
        .into_iter()
        .map(|(cid, data)| wire_block(&cid, data))
        .collect();
    let cids: Vec<Option<Cid>> = parsed
        .iter()
        .map(|b| b.as_ref().ok().map(|b| b.cid))
        .collect();
    let known = verified_lately(&cids);
    let threads = pool().current_num_threads().max(1);
    let chunk = parsed.len().div_ceil(threads).max(MIN_SPLIT);
    let items: Vec<(Result<Block, String>, bool)> = parsed.into_iter().zip(known).collect();
    let out: Vec<Result<(Block, Event), String>> = if !spread || items.len() <= chunk {
        // One batch: checked right here. `install` from outside the pool would hand it to a
        // pool thread and block this one until it is done, two thread switches for nothing.
        check_part(&items)
    } else {
        let checked: Vec<Vec<Result<(Block, Event), String>>> =
            pool().install(|| items.par_chunks(chunk).map(check_part).collect());
        checked.into_iter().flatten().collect()
    };
    remember_verified(
        out.iter()
            .filter_map(|r| r.as_ref().ok().map(|(b, _)| b.cid)),
    );
    out
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

    /// Flips a byte of the block's signature (its last bytes) and gives it its own CID, so
    /// only the signature is wrong.
    fn forge(block: &mut (Vec<u8>, Vec<u8>)) {
        let last = block.1.len() - 1;
        block.1[last] ^= 1;
        block.0 = tidings_ipld_schema::cid_of(tidings_ipld_schema::DAG_CBOR, &block.1).to_bytes();
    }

    #[test]
    fn a_batch_over_several_threads_keeps_order_and_finds_the_one_forged_block() {
        let mut bs = blocks(200);
        let good = verify_wire_now(bs.clone());
        assert!(good.iter().all(Result::is_ok));
        for (i, r) in good.iter().enumerate() {
            assert_eq!(r.as_ref().map(|(_, e)| e.seq).ok(), Some(i as u64 + 1));
        }
        let forged = 137;
        forge(&mut bs[forged]);
        bs[3].0 = vec![1, 2, 3];
        let out = verify_wire_now(bs);
        assert_eq!(out.len(), 200);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.is_err(), i == forged || i == 3, "block {i}: {r:?}");
        }
    }

    #[test]
    fn a_small_batch_is_verified_on_the_calling_thread_even_while_the_pool_is_busy() {
        // Hold every pool thread, then verify a few blocks: they must not wait for the pool
        // (before, they were handed to it and the caller blocked until a thread was free).
        let threads = pool().current_num_threads();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(Mutex::new(release_rx));
        for _ in 0..threads {
            let started = started_tx.clone();
            let release = release_rx.clone();
            pool().spawn(move || {
                let _ = started.send(());
                if let Ok(r) = release.lock() {
                    let _ = r.recv();
                }
            });
        }
        // Only one held thread can take the lock and wait; the others wait on the lock, which
        // holds them just the same.
        for _ in 0..threads {
            started_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("pool threads start");
        }
        // The largest batch verified where it arrived: more than one pool thread's share
        // (MIN_SPLIT, see the assertion by INLINE_BELOW), which verify_wire_now would spread
        // over the held pool.
        let mut bs = blocks(INLINE_BELOW as u64 - 1);
        // One forged among them is still found.
        forge(&mut bs[40]);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build();
            let out = rt.map(|rt| rt.block_on(verify_wire_batch(bs)));
            let _ = done_tx.send(out);
        });
        let out = done_rx.recv_timeout(std::time::Duration::from_secs(10));
        for _ in 0..threads {
            let _ = release_tx.send(());
        }
        let out = out
            .expect("a small batch waited for the busy pool")
            .expect("runtime");
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.is_err(), i == 40, "block {i}: {r:?}");
        }
    }

    #[test]
    fn a_block_verified_before_is_taken_by_its_hash_and_only_with_the_same_bytes() {
        let kp = Keypair::ed25519_from_bytes([9; 32]).expect("key");
        let made: Vec<(Vec<u8>, Vec<u8>)> = (1..=40)
            .map(|seq| {
                let e = Event::sign(&kp, "/c/seen", Ipld::Integer(seq.into()), seq, seq, vec![])
                    .expect("sign");
                let b = e.to_block().expect("block");
                (b.cid.to_bytes(), b.data)
            })
            .collect();
        assert!(verify_wire_now(made.clone()).iter().all(Result::is_ok));
        let cids: Vec<Option<Cid>> = made
            .iter()
            .map(|(c, _)| Cid::try_from(c.as_slice()).ok())
            .collect();
        assert!(verified_lately(&cids).iter().all(|k| *k));
        // Again, now known: the same events come back.
        let again = verify_wire_now(made.clone());
        for (r, seq) in again.iter().zip(1u64..) {
            assert_eq!(r.as_ref().map(|(_, e)| e.seq).ok(), Some(seq));
        }
        // A known CID with other bytes (another verified event's): refused, in a batch and
        // alone, and the good blocks beside it are kept.
        let mut swapped = made.clone();
        swapped[7].1 = made[8].1.clone();
        let out = verify_wire_now(swapped);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.is_err(), i == 7, "block {i}: {r:?}");
        }
        let alone = |cid: &[u8], data: &[u8]| verify_wire_now(vec![(cid.to_vec(), data.to_vec())]);
        assert!(alone(&made[7].0, &made[8].1)[0].is_err());
        assert!(alone(&made[7].0, &made[7].1)[0].is_ok());
        // A forged signature under its own CID was never verified: checked in full, refused.
        let mut forged = made[3].1.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let cid = tidings_ipld_schema::cid_of(tidings_ipld_schema::DAG_CBOR, &forged);
        assert!(alone(&cid.to_bytes(), &forged)[0].is_err());
    }
}
