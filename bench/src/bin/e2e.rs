//! End-to-end publish → deliver across 3 local nodes: tidings (3 `tidings node` broker processes,
//! HTTP publish on A, SSE subscription on C) beside rust-libp2p gossipsub (3 in-process swarms,
//! TCP + Noise + Yamux on loopback, line A—B—C) carrying the very same event bodies in the same
//! run. The measurement is the shared harness `compare` uses (`tidings_bench::harness`).
//!
//! `cargo run --release -p tidings-bench --bin e2e -- [--events N] [--latency-events L]
//!  [--rate R] [--publishers P] [--seed S] [--json] [--out DIR]`
//!
//! Two scenarios per system:
//! - **throughput**: N events published as fast as the system takes them from P lanes (tidings:
//!   concurrent HTTP publishers, each owning its own topics, one request in flight each;
//!   gossipsub: the same P lanes calling A's `publish` in-process, retried while its queues are
//!   full); delivered/s at C from the first publish start to the last delivery.
//! - **latency**: L events at a fixed rate R, one at a time; publish start → delivery at C, same
//!   process, monotonic clock.
//!
//! Lost = events never delivered at C within the grace period; dup = deliveries beyond the first.
//! tidings acknowledges a publish only once a majority of the root's rendezvous set (here all 3
//! brokers) holds the event durably (fsync included); gossipsub keeps nothing.
//!
//! Saves the four records in `<DIR>/results/e2e-<date>.jsonl` (DIR: bench/ by default, whose
//! READMEs' figures it then rewrites).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tidings_bench::figures;
use tidings_bench::harness::{Meta, Plan, Publisher, Subscribers, measure};
use tidings_bench::orders::{Order, orders};
use tidings_bench::peers::{Started, gossipsub, tidings};
use tidings_bench::stats::Record;

/// How long after the last publish returned we still wait for missing deliveries.
const GRACE: Duration = Duration::from_secs(10);

struct Args {
    events: usize,
    latency_events: usize,
    rate: f64,
    publishers: usize,
    seed: u64,
    json: bool,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        events: 5000,
        latency_events: 1000,
        rate: 100.0,
        publishers: 4,
        seed: 7,
        json: false,
        out: figures::bench_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => a.json = true,
            "--events" => a.events = it.next().context("--events N")?.parse()?,
            "--latency-events" => {
                a.latency_events = it.next().context("--latency-events L")?.parse()?
            }
            "--rate" => a.rate = it.next().context("--rate R")?.parse()?,
            "--publishers" => a.publishers = it.next().context("--publishers P")?.parse()?,
            "--seed" => a.seed = it.next().context("--seed S")?.parse()?,
            "--out" => a.out = PathBuf::from(it.next().context("--out DIR")?),
            "-h" | "--help" => {
                println!(
                    "usage: e2e [--json] [--events N (5000)] [--latency-events L (1000)] \
                     [--rate R events/s (100)] [--publishers P (4)] [--seed S (7)] [--out DIR]\n\
                     saves DIR/results/e2e-<date>.jsonl (DIR: bench/, whose README figures it \
                     then rewrites)\n\
                     env TIDINGS_BIN: the tidings binary (default: target/release/tidings)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    ensure!(
        a.events > 0 && a.latency_events > 0 && a.rate > 0.0 && a.publishers > 0,
        "all counts and the rate must be positive"
    );
    Ok(a)
}

async fn run<P: Publisher>(
    started: Started<P>,
    subs: Subscribers,
    events: &Arc<Vec<Order>>,
    plan: Plan,
    system: &str,
    scenario: &str,
    seed: u64,
) -> Result<Record> {
    let meta = Meta {
        system: system.into(),
        scenario: scenario.into(),
        run: 1,
        seed,
        acked: system == "tidings",
        servers: started.servers.clone(),
    };
    let r = measure(
        &started.publisher,
        events,
        &plan,
        subs,
        started.handles,
        meta,
    )
    .await;
    drop(started.guard);
    let mut r = r?;
    r.bench = "e2e".into();
    Ok(r)
}

/// One scenario of one system on a fresh network: the 3 nodes, C subscribed to `/stocks/**`.
async fn scenario(
    tidings_system: bool,
    events: &Arc<Vec<Order>>,
    plan: Plan,
    scenario: &str,
    seed: u64,
) -> Result<Record> {
    let mut subs = Subscribers::new(events, 1, false, false, false);
    if tidings_system {
        let work = tempfile::Builder::new().prefix("tidings-e2e").tempdir()?;
        let st = tidings::start(
            3,
            plan.lanes,
            tidings::PublishVia::Http,
            false,
            &mut subs,
            work.path(),
        )
        .await?;
        run(st, subs, events, plan, "tidings", scenario, seed).await
    } else {
        let st = gossipsub::start(&mut subs).await?;
        run(st, subs, events, plan, "gossipsub", scenario, seed).await
    }
}

fn print_table(args: &Args, out: &[Record]) {
    let body_bytes = out.iter().map(|r| r.body_bytes).sum::<f64>() / out.len().max(1) as f64;
    println!(
        "e2e publish → deliver across 3 local nodes (A publishes, C subscribes to /stocks/**)\n\
         events: seeded stock orders, body ≈{body_bytes:.0} B JSON, identical bytes for both systems\n\
         throughput: N={} from {} concurrent publishers (tidings: HTTP requests; gossipsub: in-process calls)\n\
         latency: L={} at {} events/s, one publish at a time, publish start → delivery at C\n",
        args.events, args.publishers, args.latency_events, args.rate
    );
    print!("{}", figures::e2e::table(out));
    println!(
        "\nthroughput-row percentiles are latencies under full load (queueing included).\n\
         Not like for like: a tidings publish returns only after a majority of the rendezvous set\n\
         (2 of 3 brokers) holds the signed event durably (fsync included), and events are kept and\n\
         fetchable; gossipsub acks nothing, stores nothing, and drops when its queues overflow.\n\
         tidings: 3 `tidings node` broker processes, HTTP publish + SSE subscribe; gossipsub: 3\n\
         in-process swarms (TCP+Noise+Yamux, loopback, line A—B—C, signed, strict validation)."
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    // Built (under `cargo run`) before the run starts, so its load average is the measurement's.
    tidings_bench::procs::tidings_bin()?;
    let run = figures::Run::start("e2e");
    let thr = Arc::new(orders(args.seed, 0, args.events));
    let lat = Arc::new(orders(
        args.seed + 1,
        args.events as u64,
        args.latency_events,
    ));
    // No time budget: every event is published (the latency run lasts L / R seconds).
    let unbounded = Duration::from_secs(24 * 3600);
    let mut out = Vec::new();
    let plan = |lanes, rate| Plan {
        lanes,
        rate,
        budget: unbounded,
        grace: GRACE,
        timings: None,
    };
    for tidings_system in [true, false] {
        let name = if tidings_system {
            "tidings"
        } else {
            "gossipsub"
        };
        for (events, plan, sc) in [
            (&thr, plan(args.publishers, None), "throughput"),
            (&lat, plan(1, Some(args.rate)), "latency"),
        ] {
            out.push(
                scenario(tidings_system, events, plan, sc, args.seed)
                    .await
                    .context(name)?,
            );
        }
    }
    if args.json {
        for r in &out {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print_table(&args, &out);
    }
    run.save(&args.out, &out)?;
    Ok(())
}
