//! Event-block throughput beside its baselines, measured in the same run.
//!
//! `cargo run --release -p tidings-bench --bin blocks [-- --json] [--events N] [--reps R] [--out DIR]`
//!
//! Measures, over the same seeded ≈200-byte stock-order bodies:
//! - build: JSON -> IPLD, canonical DAG-CBOR encode, sha2-256 CID, ed25519 sign (`Event::sign_block`);
//! - verify: hash check, strict decode, re-encode check, ed25519 verify (`verify`);
//! - batch verify: the same checks with one ed25519 batch verification per 256 blocks
//!   (`verify_batch`, as a node verifies blocks that arrive together), on one core and split
//!   over every core;
//! - baselines over the very same block bytes: raw SHA-256 (the limit to approach for hashing),
//!   and raw ed25519 sign / verify of the signing bytes (the floor set by the signature): sign
//!   with aws-lc-rs as the node signs (`Signer`), and with ed25519-dalek beside it; and
//!   ed25519-dalek's `verify_batch` over the same signatures and batches (no decoding), beside
//!   the merged-key batch (`batch::verify_all`) that `verify_batch` uses, over the same.
//!
//! Every figure is the median of R repetitions. Saves them in `<DIR>/results/blocks-<date>.jsonl`
//! (DIR: bench/ by default, whose READMEs' figures it then rewrites).

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tidings_bench::figures::{self, blocks::Record};
use tidings_ipld_schema::json::json_to_ipld;
use tidings_ipld_schema::{Block, Event, Keypair, Signer, batch, verify, verify_batch};

/// SplitMix64: a tiny seeded generator, so the workload is identical run to run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A stock order like the seeds' example, about 200 bytes of JSON.
fn stock_order(rng: &mut SplitMix, i: u64) -> (String, Value) {
    const EXCHANGES: [&str; 4] = ["Euronext Lisboa", "Euronext Paris", "NYSE", "Xetra"];
    const SYMBOLS: [&str; 6] = ["CTT", "EDP", "GALP", "BCP", "NOS", "SON"];
    const ORDERS: [&str; 2] = ["buy", "sell"];
    let exchange = rng.pick(&EXCHANGES);
    let symbol = rng.pick(&SYMBOLS);
    let topic = format!(
        "/stocks/{}/{symbol}",
        exchange.split(' ').next_back().unwrap_or("x")
    );
    let body = json!({
        "exchange": exchange,
        "symbol": symbol,
        "order": rng.pick(&ORDERS),
        "number": (1 + rng.below(500)).to_string(),
        "price": (rng.below(100_000) as f64) / 100.0,
        "currency": "EUR",
        "type": "limit",
        "trader": format!("trader-{:04}", rng.below(10_000)),
        "order_id": format!("ord-{i:010}"),
        "valid_until": 1_763_700_000_000u64 + rng.below(86_400_000),
    });
    (topic, body)
}

struct Args {
    json: bool,
    events: usize,
    reps: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        json: false,
        events: 10_000,
        reps: 5,
        out: figures::bench_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => args.json = true,
            "--events" => args.events = it.next().context("--events N")?.parse()?,
            "--reps" => args.reps = it.next().context("--reps R")?.parse()?,
            "--out" => args.out = PathBuf::from(it.next().context("--out DIR")?),
            "-h" | "--help" => {
                println!(
                    "usage: blocks [--json] [--events N (10000)] [--reps R (5)] [--out DIR]\n\
                     saves DIR/results/blocks-<date>.jsonl (DIR: bench/, whose README figures \
                     it then rewrites)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    ensure!(
        args.events > 0 && args.reps > 0,
        "--events and --reps must be positive"
    );
    Ok(args)
}

/// Blocks per ed25519 batch verification (a node verifies a message in one batch per core,
/// a replicate or deliver message holding up to 1,024 or 256 events).
const BATCH: usize = 256;

/// Runs `f` `reps` times and returns the median duration.
fn median(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let run = figures::Run::start("blocks");
    let n = args.events;
    let keypair = Keypair::ed25519_from_bytes([42u8; 32])?;
    let public = keypair.public();
    let signer = Signer::new(&keypair)?;
    let mut rng = SplitMix(0x7469_6469_6e67_7321);
    let inputs: Vec<(String, Value)> = (0..n as u64).map(|i| stock_order(&mut rng, i)).collect();
    let body_bytes: usize = inputs
        .iter()
        .map(|(_, b)| serde_json::to_vec(b).map(|v| v.len()).unwrap_or(0))
        .sum();

    // 1. build + encode + hash + sign.
    let mut blocks: Vec<Block> = Vec::new();
    let build = median(args.reps, || {
        blocks.clear();
        for (i, (topic, body)) in inputs.iter().enumerate() {
            let ipld = json_to_ipld(body)?;
            let (_, block) = Event::sign_block_with(
                &signer,
                topic,
                ipld,
                i as u64 + 1,
                1_763_700_000_000,
                vec![],
            )?;
            blocks.push(block);
        }
        Ok(())
    })?;
    let block_bytes: usize = blocks.iter().map(|b| b.data.len()).sum();

    // 2. decode + verify.
    let mut signing: Vec<Vec<u8>> = Vec::with_capacity(n);
    let check = median(args.reps, || {
        for b in &blocks {
            black_box(verify(&b.cid, &b.data)?);
        }
        Ok(())
    })?;
    for b in &blocks {
        signing.push(Event::decode(&b.data)?.signing_bytes()?);
    }

    // 2b. decode + batch verify, on one core and on every core (contiguous parts, each verified
    // in batches), as a node verifies a replicate, deliver or fetch message.
    let batch_of = |part: &[Block]| -> Result<()> {
        for chunk in part.chunks(BATCH) {
            for r in verify_batch(chunk.iter().map(|b| (&b.cid, b.data.as_slice()))) {
                black_box(r?);
            }
        }
        Ok(())
    };
    let batch_one = median(args.reps, || batch_of(&blocks))?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let batch_all = median(args.reps, || {
        std::thread::scope(|s| {
            let parts: Vec<_> = blocks
                .chunks(blocks.len().div_ceil(cores))
                .map(|part| s.spawn(move || batch_of(part)))
                .collect();
            for p in parts {
                p.join()
                    .map_err(|_| anyhow::anyhow!("a verifying thread panicked"))??;
            }
            Ok(())
        })
    })?;

    // Baseline: raw SHA-256 over the same block bytes. One pass is milliseconds, so repeat
    // the pass to get a measurable interval and report per pass.
    let passes = 20;
    let sha = median(args.reps, || {
        for _ in 0..passes {
            for b in &blocks {
                black_box(Sha256::digest(black_box(&b.data)));
            }
        }
        Ok(())
    })? / passes;

    // Baseline: raw ed25519 over the same signing bytes.
    let mut sigs: Vec<Vec<u8>> = Vec::with_capacity(n);
    let ed_sign = median(args.reps, || {
        sigs.clear();
        for m in &signing {
            sigs.push(signer.sign(m));
        }
        Ok(())
    })?;
    let dalek_sign = median(args.reps, || {
        for m in &signing {
            black_box(keypair.sign(m)?);
        }
        Ok(())
    })?;
    let ed_verify = median(args.reps, || {
        for (m, s) in signing.iter().zip(&sigs) {
            ensure!(public.verify(m, s), "baseline signature failed");
        }
        Ok(())
    })?;
    // Baseline: ed25519-dalek's own batch verification of the same signatures, in the same
    // batches, without decoding (what `verify_batch` used before it merged each key's terms).
    let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(
        &public
            .clone()
            .try_into_ed25519()
            .context("the bench key is ed25519")?
            .to_bytes(),
    )?;
    let dalek_sigs: Vec<ed25519_dalek::Signature> = sigs
        .iter()
        .map(|s| ed25519_dalek::Signature::from_slice(s))
        .collect::<Result<_, _>>()?;
    // The same signatures and batches through the merged-key batch `verify_batch` uses.
    let merged_batch = median(args.reps, || {
        for (ms, ss) in signing.chunks(BATCH).zip(dalek_sigs.chunks(BATCH)) {
            let items: Vec<batch::Item<'_>> = ms
                .iter()
                .zip(ss)
                .map(|(m, s)| batch::Item {
                    msg: m,
                    sig: *s,
                    key: dalek_key,
                })
                .collect();
            ensure!(batch::verify_all(&items), "merged batch failed");
        }
        Ok(())
    })?;
    let dalek_batch = median(args.reps, || {
        for (ms, ss) in signing.chunks(BATCH).zip(dalek_sigs.chunks(BATCH)) {
            let msgs: Vec<&[u8]> = ms.iter().map(|m| m.as_slice()).collect();
            let keys = vec![dalek_key; ms.len()];
            ed25519_dalek::verify_batch(&msgs, ss, &keys).context("baseline batch failed")?;
        }
        Ok(())
    })?;

    let mb = |bytes: usize, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let r = Record {
        bench: "blocks".into(),
        events: n,
        reps: args.reps,
        avg_body_json_bytes: body_bytes as f64 / n as f64,
        avg_block_bytes: block_bytes as f64 / n as f64,
        build_encode_hash_sign_events_per_s: per_sec(n, build),
        decode_verify_events_per_s: per_sec(n, check),
        decode_batch_verify_events_per_s: per_sec(n, batch_one),
        decode_batch_verify_all_cores_events_per_s: per_sec(n, batch_all),
        cores,
        baseline_sha256_blocks_per_s: per_sec(n, sha),
        baseline_sha256_mb_per_s: mb(block_bytes, sha),
        baseline_ed25519_sign_per_s: per_sec(n, ed_sign),
        baseline_ed25519_dalek_sign_per_s: per_sec(n, dalek_sign),
        baseline_ed25519_verify_per_s: per_sec(n, ed_verify),
        batch_verify_signatures_per_s: per_sec(n, merged_batch),
        baseline_ed25519_dalek_batch_verify_per_s: per_sec(n, dalek_batch),
        curve_backend: batch::curve_backend().into(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", figures::blocks::text(&r));
    }
    run.save(&args.out, &[r])?;
    Ok(())
}
