//! History backfill: a long stream fetched and verified from one peer by `/tidings/fetch/1`
//! (one request, blocks streamed), beside the same blocks fetched one request per block over the
//! same connection (the per-entry style of OrbitDB and bitswap), in the same run.
//!
//! `cargo run --release -p tidings-bench --bin backfill [-- --events N] [--reps R] [--baseline N]
//! [--json] [--quick] [--out DIR]`
//!
//! Two real nodes (in this process, talking libp2p over loopback TCP): `a` holds the stream
//! (imported as a CAR), `b` fetches it through its HTTP API. Figures are the node's own timing
//! of the fetch (first request to last block verified). Modes:
//! - `stream, verify`: every block checked (CID, and ed25519 signature in batches), not stored;
//! - `per-block, verify`: the same, one request and round trip per block (the baseline; over the
//!   first `--baseline` blocks of the stream, as it is slow);
//! - `stream, verify+store`: what `tidings fetch` does: verified and stored (run last, once).
//!
//! Saves the three rows in `<DIR>/results/backfill-<date>.jsonl` (DIR: bench/ by default, whose
//! READMEs' figures it then rewrites; `--quick`: a directory under the system's temp dir).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tidings_bench::figures::{
    self,
    backfill::{PER_BLOCK, Row, STORED, STREAM},
};
use tidings_ipld_schema::{Event, Keypair, car, json::json_to_ipld};
use tidings_node::net::{NetConfig, Role};
use tidings_node::{Node, NodeConfig};

struct Args {
    events: u64,
    reps: usize,
    baseline: u64,
    json: bool,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        events: 100_000,
        reps: 3,
        baseline: 20_000,
        json: false,
        out: figures::bench_dir(),
    };
    let mut out_given = false;
    let mut quick = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--events" => a.events = num("--events")?,
            "--reps" => a.reps = num("--reps")? as usize,
            "--baseline" => a.baseline = num("--baseline")?,
            "--json" => a.json = true,
            "--quick" => {
                a.events = 10_000;
                a.reps = 1;
                a.baseline = 2_000;
                quick = true;
            }
            "--out" => {
                a.out = PathBuf::from(it.next().context("--out needs a directory")?);
                out_given = true;
            }
            "-h" | "--help" => {
                println!(
                    "backfill [--events N (100000)] [--reps R (3)] [--baseline N (20000)] [--json] \
                     [--quick] [--out DIR]\n\
                     saves DIR/results/backfill-<date>.jsonl (DIR: bench/, whose README figures it \
                     then rewrites; with --quick, tidings-backfill-quick in the temp dir)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; try --help"),
        }
    }
    ensure!(
        a.events >= 2 && a.reps >= 1,
        "need --events >= 2 and --reps >= 1"
    );
    a.baseline = a.baseline.clamp(1, a.events);
    if quick && !out_given {
        a.out = std::env::temp_dir().join("tidings-backfill-quick");
    }
    Ok(a)
}

/// A seeded single-author stream of stock orders (~200-byte bodies), as a CAR with the head
/// as root. Returns the CAR, the head, and the CID `baseline` events below the head.
fn stream(n: u64, baseline: u64) -> Result<(Vec<u8>, String, String, f64)> {
    let key = Keypair::ed25519_from_bytes([42; 32])?;
    let mut blocks = Vec::with_capacity(n as usize);
    let mut prev = vec![];
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut bytes = 0usize;
    for seq in 1..=n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let symbol = ["CTT", "EDP", "GALP", "BCP"][(x % 4) as usize];
        let body = json!({
            "exchange": "Euronext Lisboa", "symbol": symbol,
            "order": if x.is_multiple_of(2) { "buy" } else { "sell" }, "number": x % 1000,
            "price": (x % 20_000) as f64 / 100.0, "account": format!("acct-{:08}", x % 100_000_000),
        });
        let (_, block) = Event::sign_block(
            &key,
            "/stocks/euronext/CTT",
            json_to_ipld(&body)?,
            seq,
            1_763_700_000_000 + seq,
            prev,
        )?;
        bytes += block.data.len();
        prev = vec![block.cid];
        blocks.push(block);
    }
    let head = blocks.last().context("empty")?.cid;
    let stop = blocks[(n - baseline.min(n)) as usize].cid;
    let mut out = Vec::new();
    car::write_car(
        &mut out,
        &[head],
        blocks.into_iter().rev().map(|b| (b.cid, b.data)),
    )?;
    Ok((
        out,
        head.to_string(),
        stop.to_string(),
        bytes as f64 / n as f64,
    ))
}

async fn start(dir: &std::path::Path, bootstrap: Vec<libp2p::Multiaddr>) -> Result<Node> {
    Ok(Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        api: "127.0.0.1:0".parse()?,
        token: None,
        cors_origins: Vec::new(),
        net: NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap,
            role: Role::Broker,
            replication: 1,
            request_rate: tidings_node::net::limits::DEFAULT_RATE,
        },
        history: Default::default(),
        ipfs_api: None,
    })
    .await?)
}

/// Runs one fetch on `api` and returns the node's summary.
async fn fetch(http: &reqwest::Client, api: &str, body: Value) -> Result<Value> {
    let text = http
        .post(format!("{api}/v1/fetch"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)?;
        if let Some(done) = v.get("done") {
            return Ok(done.clone());
        }
        if let Some(e) = v.get("error") {
            bail!("fetch failed: {e}");
        }
    }
    bail!("no summary in the answer")
}

struct Figure {
    mode: &'static str,
    blocks: u64,
    seconds: f64,
    bytes: u64,
}

impl Figure {
    fn rate(&self) -> f64 {
        self.blocks as f64 / self.seconds
    }
}

fn median(mut xs: Vec<Figure>) -> Figure {
    xs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mid = xs.len() / 2;
    xs.swap_remove(mid)
}

async fn run(http: &reqwest::Client, api: &str, mode: &'static str, body: Value) -> Result<Figure> {
    let s = fetch(http, api, body).await?;
    ensure!(s["complete"] == true, "{mode}: incomplete fetch: {s}");
    let blocks = s["blocks"].as_u64().context("blocks")?;
    ensure!(
        s["verified"].as_u64() == Some(blocks),
        "{mode}: not every block verified: {s}"
    );
    Ok(Figure {
        mode,
        blocks,
        seconds: s["seconds"].as_f64().context("seconds")?,
        bytes: s["bytes"].as_u64().context("bytes")?,
    })
}

// The nodes run in this process: with the `tidings` binary's allocator and huge-page setting,
// so the figures are the binary's (glibc's malloc was a tenth of the fetch's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    tidings_node::process::disable_transparent_huge_pages();
    let args = parse_args()?;
    let run_info = figures::Run::start("backfill");
    let t = Instant::now();
    let (car_bytes, head, stop, avg) = stream(args.events, args.baseline)?;
    eprintln!(
        "signed {} events ({avg:.0} bytes per block) in {:.1} s",
        args.events,
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let a = start(&dir.path().join("a"), vec![]).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()?;
    let a_api = format!("http://{}", a.api_addr());
    let imported: Value = http
        .post(format!("{a_api}/v1/car"))
        .body(car_bytes)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        imported["events"].as_u64() == Some(args.events),
        "import: {imported}"
    );
    let status: Value = http
        .get(format!("{a_api}/v1/status"))
        .send()
        .await?
        .json()
        .await?;
    let a_addr: libp2p::Multiaddr = status["listen"][0]
        .as_str()
        .context("a's listen address")?
        .parse()?;
    let b = start(&dir.path().join("b"), vec![a_addr]).await?;
    let b_api = format!("http://{}", b.api_addr());
    // The fetch asks connected nodes: wait until b has dialled a.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st: Value = http
            .get(format!("{b_api}/v1/status"))
            .send()
            .await?
            .json()
            .await?;
        if st["peers"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        ensure!(Instant::now() < deadline, "b never connected to a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut stream_runs = Vec::new();
    let mut per_block_runs = Vec::new();
    for rep in 0..args.reps {
        let f = run(
            &http,
            &b_api,
            STREAM,
            json!({"cid": head, "verify_only": true}),
        )
        .await?;
        eprintln!("rep {rep}: stream {:.0} blocks/s", f.rate());
        stream_runs.push(f);
        let f = run(
            &http,
            &b_api,
            PER_BLOCK,
            json!({"cid": head, "until": [stop], "verify_only": true, "per_block": true}),
        )
        .await?;
        eprintln!("rep {rep}: per-block {:.0} blocks/s", f.rate());
        per_block_runs.push(f);
    }
    let stored = run(&http, &b_api, STORED, json!({"cid": head})).await?;
    let stream = median(stream_runs);
    let per_block = median(per_block_runs);
    let rows: Vec<Row> = [&stream, &per_block, &stored]
        .into_iter()
        .map(|f| Row {
            bench: "backfill".into(),
            mode: f.mode.into(),
            events: args.events,
            avg_block_bytes: avg,
            blocks: f.blocks,
            seconds: f.seconds,
            blocks_per_s: f.rate(),
            mb_per_s: f.bytes as f64 / f.seconds / 1e6,
            reps: args.reps,
        })
        .collect();
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", figures::backfill::text(&rows));
    }
    run_info.save(&args.out, &rows)?;
    b.shutdown().await?;
    a.shutdown().await?;
    Ok(())
}
