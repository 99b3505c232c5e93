//! End-to-end publish → deliver across 3 local nodes: tidings (3 `tidings node` broker processes,
//! HTTP publish on A, SSE subscription on C) beside rust-libp2p gossipsub (3 in-process swarms,
//! TCP + Noise + Yamux on loopback, line A—B—C) carrying the very same event bodies in the same
//! run.
//!
//! `cargo run --release -p tidings-bench --bin e2e -- [--events N] [--latency-events L]
//!  [--rate R] [--publishers P] [--seed S] [--json]`
//!
//! Two scenarios per system:
//! - **throughput**: N events published as fast as the system takes them (tidings: P concurrent
//!   HTTP publishers, each owning its own topics, one request in flight each; gossipsub: the same
//!   P lanes calling A's `publish` in-process, retried while its queues are full); delivered/s
//!   at C from the first publish start to the last delivery.
//! - **latency**: L events at a fixed rate R, one at a time (the next starts only when the
//!   previous publish call returned and its slot came); publish start → delivery at C, same
//!   process, monotonic clock.
//!
//! Lost = events never delivered at C within the grace period; dup = deliveries beyond the first.
//! tidings acknowledges a publish only once a majority of the root's rendezvous set (here all 3
//! brokers) holds the event durably (fsync included); gossipsub keeps nothing.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, PublishError, ValidationMode};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, noise, tcp, yamux};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// Ids at or above this mark are readiness probes, not measured events.
const PROBE_BASE: u64 = 1 << 40;
/// How long after the last publish returned we still wait for missing deliveries.
const GRACE: Duration = Duration::from_secs(10);
/// After everything arrived, how long we keep listening for late duplicates.
const DUP_WINDOW: Duration = Duration::from_millis(300);

struct Args {
    events: usize,
    latency_events: usize,
    rate: f64,
    publishers: usize,
    seed: u64,
    json: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        events: 5000,
        latency_events: 1000,
        rate: 100.0,
        publishers: 4,
        seed: 7,
        json: false,
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
            "-h" | "--help" => {
                println!(
                    "usage: e2e [--json] [--events N (5000)] [--latency-events L (1000)] \
                     [--rate R events/s (100)] [--publishers P (4)] [--seed S (7)]\n\
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

// ---------------------------------------------------------------------------------------------
// Events

/// One seeded stock order: its topic and its JSON body (the bytes both systems carry).
#[derive(Clone)]
struct Order {
    topic: String,
    body: String,
}

const EXCHANGES: [(&str, &str, [&str; 4]); 4] = [
    ("euronext", "Euronext Lisboa", ["CTT", "EDP", "GALP", "NOS"]),
    (
        "nyse",
        "New York Stock Exchange",
        ["IBM", "KO", "GE", "JPM"],
    ),
    (
        "nasdaq",
        "Nasdaq Global Select",
        ["AAPL", "MSFT", "NVDA", "AMZN"],
    ),
    (
        "lse",
        "London Stock Exchange",
        ["BP", "HSBA", "ULVR", "AZN"],
    ),
];

/// `count` orders with ids `first..first+count`; ≈200-byte bodies, unique by `id`.
fn orders(rng: &mut StdRng, first: u64, count: usize) -> Vec<Order> {
    (0..count as u64)
        .map(|k| {
            let (ex, name, syms) = EXCHANGES[rng.random_range(0..EXCHANGES.len())];
            let sym = syms[rng.random_range(0..syms.len())];
            let body = json!({
                "id": first + k,
                "exchange": name,
                "symbol": sym,
                "order": if rng.random_bool(0.5) { "buy" } else { "sell" },
                "number": rng.random_range(1..1000),
                "price": rng.random_range(100..100_000) as f64 / 100.0,
                "type": "limit",
                "tif": "GTC",
                "currency": if ex == "euronext" { "EUR" } else if ex == "lse" { "GBP" } else { "USD" },
                "account": format!("ACC-{:08}", rng.random_range(0..100_000_000u32)),
                "ts_ns": 1_763_700_000_000_000_000u64 + (first + k) * 1_000_000 + rng.random_range(0..1_000_000u64),
            });
            Order {
                topic: format!("/stocks/{ex}/{sym}"),
                body: body.to_string(),
            }
        })
        .collect()
}

/// The `id` of a body as JSON text.
fn body_id(body: &Value) -> Option<u64> {
    body.get("id")?.as_u64()
}

/// A delivery at C: the event id and when it arrived.
type Delivery = (u64, Instant);

// ---------------------------------------------------------------------------------------------
// Measurement

/// What one scenario of one system measured.
struct Outcome {
    system: &'static str,
    scenario: &'static str,
    events: usize,
    /// Deliveries per second (throughput) or the offered rate (latency).
    delivered_per_s: f64,
    /// Publish calls returned per second over the publishing phase.
    published_per_s: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    lost: usize,
    dup: usize,
    wall_s: f64,
}

/// Collects the deliveries of ids `first..first+n` from `rx` until all arrived (plus a short
/// window for duplicates) or `GRACE` after `done` fires (publishing finished). Returns arrival
/// times and per-id counts.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    first: u64,
    n: usize,
    mut done: oneshot::Receiver<()>,
) -> (Vec<Option<Instant>>, Vec<u32>) {
    let mut at = vec![None; n];
    let mut count = vec![0u32; n];
    let mut have = 0usize;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut done_open = true;
    loop {
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            d = rx.recv() => {
                let Some((id, t)) = d else { break };
                if id < first || id >= first + n as u64 {
                    continue;
                }
                let i = (id - first) as usize;
                count[i] += 1;
                if at[i].is_none() {
                    at[i] = Some(t);
                    have += 1;
                    if have == n {
                        deadline = Some(tokio::time::Instant::now() + DUP_WINDOW);
                    }
                }
            }
            r = &mut done, if done_open => {
                done_open = false;
                let _ = r;
                if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + GRACE);
                }
            }
            _ = wait => break,
        }
    }
    (at, count)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    system: &'static str,
    scenario: &'static str,
    starts: &[Instant],
    published_end: Instant,
    at: &[Option<Instant>],
    count: &[u32],
    offered_rate: Option<f64>,
) -> Outcome {
    let n = starts.len();
    let t0 = starts.iter().min().copied().unwrap_or_else(Instant::now);
    let mut lat: Vec<f64> = starts
        .iter()
        .zip(at)
        .filter_map(|(s, a)| a.map(|a| a.saturating_duration_since(*s).as_secs_f64() * 1e6))
        .collect();
    lat.sort_by(f64::total_cmp);
    let delivered = lat.len();
    let last = at.iter().flatten().max().copied().unwrap_or(t0);
    let span = last.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    let pub_span = published_end
        .saturating_duration_since(t0)
        .as_secs_f64()
        .max(1e-9);
    Outcome {
        system,
        scenario,
        events: n,
        delivered_per_s: offered_rate.unwrap_or(delivered as f64 / span),
        published_per_s: n as f64 / pub_span,
        p50_us: percentile(&lat, 50.0),
        p90_us: percentile(&lat, 90.0),
        p99_us: percentile(&lat, 99.0),
        lost: n - delivered,
        dup: count.iter().map(|c| c.saturating_sub(1) as usize).sum(),
        wall_s: span,
    }
}

/// Publishes one event (returns when the system's publish call returned).
trait Publisher: Clone + Send + Sync + 'static {
    fn publish(&self, o: &Order) -> impl std::future::Future<Output = Result<()>> + Send;
}

/// Throughput: `lanes` concurrent publishers, lane `l` owning the topics with
/// `topic_index % lanes == l`, one call in flight each.
async fn run_throughput<P: Publisher>(
    system: &'static str,
    p: &P,
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    evs: &[Order],
    first: u64,
    lanes: usize,
) -> Result<Outcome> {
    let n = evs.len();
    let topics: Vec<String> = {
        let mut t: Vec<String> = evs.iter().map(|o| o.topic.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let mut per_lane: Vec<Vec<(usize, Order)>> = vec![Vec::new(); lanes];
    for (i, o) in evs.iter().enumerate() {
        let ti = topics.binary_search(&o.topic).unwrap_or(0);
        per_lane[ti % lanes].push((i, o.clone()));
    }
    let (done_tx, done_rx) = oneshot::channel();
    let publishing = async {
        let mut tasks = Vec::new();
        for lane in per_lane {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                let mut starts = Vec::with_capacity(lane.len());
                for (i, o) in lane {
                    let s = Instant::now();
                    p.publish(&o).await?;
                    starts.push((i, s));
                }
                anyhow::Ok(starts)
            }));
        }
        let mut starts = vec![Instant::now(); n];
        for t in tasks {
            for (i, s) in t.await?? {
                starts[i] = s;
            }
        }
        let end = Instant::now();
        let _ = done_tx.send(());
        anyhow::Ok((starts, end))
    };
    let (published, (at, count)) = tokio::join!(publishing, collect(rx, first, n, done_rx));
    let (starts, end) = published?;
    Ok(outcome(
        system,
        "throughput",
        &starts,
        end,
        &at,
        &count,
        None,
    ))
}

/// Latency: one publish at a time, started every `1/rate` s (later if the previous one was slow).
async fn run_latency<P: Publisher>(
    system: &'static str,
    p: &P,
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    evs: &[Order],
    first: u64,
    rate: f64,
) -> Result<Outcome> {
    let n = evs.len();
    let (done_tx, done_rx) = oneshot::channel();
    let publishing = async {
        let period = Duration::from_secs_f64(1.0 / rate);
        let t0 = tokio::time::Instant::now();
        let mut starts = Vec::with_capacity(n);
        for (k, o) in evs.iter().enumerate() {
            tokio::time::sleep_until(t0 + period * k as u32).await;
            starts.push(Instant::now());
            p.publish(o).await?;
        }
        let end = Instant::now();
        let _ = done_tx.send(());
        anyhow::Ok((starts, end))
    };
    let (published, (at, count)) = tokio::join!(publishing, collect(rx, first, n, done_rx));
    let (starts, end) = published?;
    let mut o = outcome(system, "latency", &starts, end, &at, &count, None);
    // The achieved publish rate is what the latency was measured at; delivered/s is the same
    // order (everything delivered while publishing at that rate).
    o.delivered_per_s = (n - o.lost) as f64 / o.wall_s;
    Ok(o)
}

/// Sends probe events until one arrives at the subscriber (the path is live), within `timeout`.
async fn await_probe<P: Publisher>(
    p: &P,
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut k = 0u64;
    while Instant::now() < deadline {
        let probe = Order {
            topic: "/stocks/probe/READY".into(),
            body: json!({"id": PROBE_BASE + k, "probe": true}).to_string(),
        };
        k += 1;
        // A publish may fail while the network is still forming; keep probing.
        let _ = p.publish(&probe).await;
        let until = Instant::now() + Duration::from_millis(250);
        while let Ok(Some((id, _))) =
            tokio::time::timeout(until.saturating_duration_since(Instant::now()), rx.recv()).await
        {
            if id >= PROBE_BASE {
                // Drain any other probes still in flight, then go.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
                {
                }
                return Ok(());
            }
        }
    }
    bail!("no probe event reached the subscriber within {timeout:?}")
}

// ---------------------------------------------------------------------------------------------
// tidings: three broker processes

/// The `tidings` binary: `$TIDINGS_BIN`, else `tidings` next to this executable
/// (`target/<profile>/`). Under `cargo run` (`$CARGO` set) it is built first, into the same
/// target dir and profile, so it is never missing or stale.
fn tidings_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDINGS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().context("executable has no directory")?;
    let bin = profile_dir.join(format!("tidings{}", std::env::consts::EXE_SUFFIX));
    if let (Some(cargo), Some(target_dir), Some(profile)) = (
        std::env::var_os("CARGO"),
        profile_dir.parent(),
        profile_dir.file_name().and_then(|p| p.to_str()),
    ) {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "tidings-node", "--bin", "tidings"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        eprintln!("e2e: building the tidings binary ({profile})…");
        let status = cmd.status().context("running cargo build for tidings")?;
        ensure!(
            status.success(),
            "cargo build -p tidings-node failed: {status}"
        );
    }
    ensure!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p tidings-node` or set TIDINGS_BIN",
        bin.display()
    );
    Ok(bin)
}

/// A `tidings node` child process; killed (and reaped) on drop.
struct Node {
    child: Child,
    api: String,
    data: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    async fn start(
        http: &reqwest::Client,
        bin: &Path,
        data: &Path,
        boot: Option<&str>,
    ) -> Result<Node> {
        std::fs::create_dir_all(data)?;
        let log = std::fs::File::create(data.join("node.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("node").arg("--data").arg(data).args([
            "--api",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ]);
        if let Some(b) = boot {
            cmd.args(["--bootstrap", b]);
        }
        let child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut node = Node {
            child,
            api: String::new(),
            data: data.to_path_buf(),
        };
        let addr_file = data.join("api.addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "tidings node exited with {status} during start:\n{}",
                    node.log()
                );
            }
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                let api = a.trim().to_string();
                if !api.is_empty()
                    && http
                        .get(format!("{api}/v1/status"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                {
                    node.api = api;
                    return Ok(node);
                }
            }
            if Instant::now() > deadline {
                bail!("tidings node did not answer within 30 s:\n{}", node.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("node.log")).unwrap_or_default()
    }

    async fn status(&self, http: &reqwest::Client) -> Result<Value> {
        let r = http.get(format!("{}/v1/status", self.api)).send().await?;
        ensure!(r.status().is_success(), "status answered {}", r.status());
        Ok(r.json().await?)
    }
}

/// Polls `f` every 20 ms until it yields `Some`, or fails after `timeout`.
async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The three nodes, then their temp dir (fields drop in order: processes die first).
struct Tidings {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct HttpPublisher {
    http: reqwest::Client,
    url: Arc<str>,
}

impl Publisher for HttpPublisher {
    async fn publish(&self, o: &Order) -> Result<()> {
        // The body goes in as the very same JSON bytes gossipsub carries.
        let req = format!(r#"{{"topic":{},"body":{}}}"#, json!(o.topic), o.body);
        let r = self
            .http
            .post(&*self.url)
            .header("content-type", "application/json")
            .body(req)
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            bail!(
                "publish {}: {status} {}",
                o.topic,
                r.text().await.unwrap_or_default()
            );
        }
        // Consume the ack so the connection is reused.
        r.bytes().await?;
        Ok(())
    }
}

/// Reads the SSE stream of `url` and forwards `(body.id, arrival)` for every event.
async fn sse_reader(
    http: reqwest::Client,
    url: String,
    tx: mpsc::UnboundedSender<Delivery>,
) -> Result<()> {
    let mut r = http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    ensure!(r.status().is_success(), "subscribe: {}", r.status());
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let ev: Value = serde_json::from_slice(data.trim_ascii())
                .with_context(|| format!("bad SSE data {}", String::from_utf8_lossy(data)))?;
            if let Some(id) = body_id(&ev["body"]) {
                let _ = tx.send((id, now));
            }
        }
    }
    Ok(())
}

async fn tidings_start(http: &reqwest::Client) -> Result<Tidings> {
    let bin = tidings_bin()?;
    let dir = tempfile::Builder::new().prefix("tidings-e2e").tempdir()?;
    let mut t = Tidings {
        nodes: Vec::new(),
        _dir: dir,
    };
    let root = t._dir.path().to_path_buf();
    t.nodes
        .push(Node::start(http, &bin, &root.join("a"), None).await?);
    let boot = t.nodes[0].status(http).await?["listen"][0]
        .as_str()
        .context("node A reports no listen address")?
        .to_string();
    for name in ["b", "c"] {
        t.nodes
            .push(Node::start(http, &bin, &root.join(name), Some(&boot)).await?);
    }
    for n in &t.nodes {
        poll_until(Duration::from_secs(60), "all 3 brokers known", || async {
            (n.status(http).await.ok()?["brokers"].as_u64()? == 3).then_some(())
        })
        .await
        .with_context(|| n.log())?;
    }
    Ok(t)
}

async fn tidings_bench(
    args: &Args,
    thr: &[Order],
    lat: &[Order],
    thr_first: u64,
    lat_first: u64,
) -> Result<Vec<Outcome>> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()?;
    let t = tidings_start(&http).await?;
    let (a, c) = (&t.nodes[0], &t.nodes[2]);

    // Subscribe on C, wait for the leases on every rendezvous member, then for a probe.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sub_url = format!("{}/v1/subscribe?filter=%2Fstocks%2F**", c.api);
    let reader = tokio::spawn(sse_reader(http.clone(), sub_url, tx));
    let nodes = &t.nodes;
    poll_until(
        Duration::from_secs(30),
        "the subscription's leases",
        || async {
            let mut total = 0;
            for n in nodes {
                total += n.status(&http).await.ok()?["leases"].as_u64()?;
            }
            (total >= 3).then_some(())
        },
    )
    .await?;
    let p = HttpPublisher {
        http: http.clone(),
        url: format!("{}/v1/publish", a.api).into(),
    };
    await_probe(&p, &mut rx, Duration::from_secs(30)).await?;

    let thr_out = run_throughput("tidings", &p, &mut rx, thr, thr_first, args.publishers).await?;
    let lat_out = run_latency("tidings", &p, &mut rx, lat, lat_first, args.rate).await?;
    reader.abort();
    drop(t);
    Ok(vec![thr_out, lat_out])
}

// ---------------------------------------------------------------------------------------------
// gossipsub: three in-process swarms in a line A—B—C

enum Cmd {
    Publish(Vec<u8>, oneshot::Sender<Result<()>>),
    MeshPeers(oneshot::Sender<usize>),
}

#[derive(Clone)]
struct GossipPublisher {
    cmd: mpsc::UnboundedSender<Cmd>,
}

impl Publisher for GossipPublisher {
    async fn publish(&self, o: &Order) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Publish(o.body.as_bytes().to_vec(), tx))
            .ok()
            .context("gossipsub node A is gone")?;
        rx.await.context("gossipsub node A is gone")?
    }
}

fn gossip_swarm() -> Result<Swarm<gossipsub::Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let cfg = gossipsub::ConfigBuilder::default()
                .validation_mode(ValidationMode::Strict)
                // Message id = hash of the data: the same body twice is a duplicate.
                .message_id_fn(|m| gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec()))
                .mesh_n_low(1)
                .mesh_n(2)
                .mesh_n_high(2)
                .mesh_outbound_min(0)
                .gossip_lazy(2)
                .heartbeat_interval(Duration::from_millis(200))
                .build()?;
            Ok(gossipsub::Behaviour::new(
                MessageAuthenticity::Signed(key.clone()),
                cfg,
            )?)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Runs one swarm: listens, dials `dial`, subscribes, serves commands, forwards deliveries.
async fn gossip_node(
    mut swarm: Swarm<gossipsub::Behaviour>,
    topic: IdentTopic,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    deliver: Option<mpsc::UnboundedSender<Delivery>>,
    listening: oneshot::Sender<Multiaddr>,
) {
    let mut listening = Some(listening);
    let th = topic.hash();
    let mut pending: VecDeque<(Vec<u8>, oneshot::Sender<Result<()>>)> = VecDeque::new();
    let mut retry = tokio::time::interval(Duration::from_millis(1));
    loop {
        // Publish what is queued; stop at the first full queue and retry shortly.
        while let Some((data, ack)) = pending.pop_front() {
            match swarm.behaviour_mut().publish(topic.clone(), data.clone()) {
                Ok(_) => {
                    let _ = ack.send(Ok(()));
                }
                Err(PublishError::AllQueuesFull(_)) => {
                    pending.push_front((data, ack));
                    break;
                }
                Err(e) => {
                    let _ = ack.send(Err(anyhow::anyhow!("gossipsub publish: {e}")));
                }
            }
        }
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => {
                    if let Some(l) = listening.take() {
                        let _ = l.send(address);
                    }
                }
                SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) => {
                    let now = Instant::now();
                    if let Some(d) = &deliver
                        && let Ok(v) = serde_json::from_slice::<Value>(&message.data)
                        && let Some(id) = body_id(&v)
                    {
                        let _ = d.send((id, now));
                    }
                }
                _ => {}
            },
            c = cmds.recv() => match c {
                Some(Cmd::Publish(data, ack)) => pending.push_back((data, ack)),
                Some(Cmd::MeshPeers(tx)) => {
                    let _ = tx.send(swarm.behaviour().mesh_peers(&th).count());
                }
                None => return,
            },
            _ = retry.tick(), if !pending.is_empty() => {}
        }
    }
}

/// Aborts the swarm tasks on drop.
struct Gossip {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cmds: Vec<mpsc::UnboundedSender<Cmd>>,
}

impl Drop for Gossip {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn gossip_start() -> Result<(Gossip, mpsc::UnboundedReceiver<Delivery>)> {
    let topic = IdentTopic::new("/stocks");
    let (dtx, drx) = mpsc::unbounded_channel();
    let mut g = Gossip {
        tasks: Vec::new(),
        cmds: Vec::new(),
    };
    let mut addrs: Vec<(PeerId, Multiaddr)> = Vec::new();
    for i in 0..3 {
        let mut swarm = gossip_swarm()?;
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        swarm.behaviour_mut().subscribe(&topic)?;
        // Line: B dials A, C dials B.
        if i > 0 {
            let (peer, addr) = &addrs[i - 1];
            swarm.dial(addr.clone().with(libp2p::multiaddr::Protocol::P2p(*peer)))?;
        }
        let peer = *swarm.local_peer_id();
        let (ctx, crx) = mpsc::unbounded_channel();
        let (ltx, lrx) = oneshot::channel();
        let deliver = (i == 2).then(|| dtx.clone());
        g.tasks.push(tokio::spawn(gossip_node(
            swarm,
            topic.clone(),
            crx,
            deliver,
            ltx,
        )));
        g.cmds.push(ctx);
        let addr = tokio::time::timeout(Duration::from_secs(10), lrx)
            .await
            .context("gossipsub swarm never listened")??;
        addrs.push((peer, addr));
    }
    // Wait for the mesh: A and C each graft B, B grafts both.
    let want = [1usize, 2, 1];
    let cmds = g.cmds.clone();
    poll_until(Duration::from_secs(30), "the gossipsub mesh", || {
        let cmds = cmds.clone();
        async move {
            for (c, w) in cmds.iter().zip(want) {
                let (tx, rx) = oneshot::channel();
                c.send(Cmd::MeshPeers(tx)).ok()?;
                if rx.await.ok()? < w {
                    return None;
                }
            }
            Some(())
        }
    })
    .await?;
    Ok((g, drx))
}

async fn gossip_bench(
    args: &Args,
    thr: &[Order],
    lat: &[Order],
    thr_first: u64,
    lat_first: u64,
) -> Result<Vec<Outcome>> {
    let (g, mut rx) = gossip_start().await?;
    let p = GossipPublisher {
        cmd: g.cmds[0].clone(),
    };
    await_probe(&p, &mut rx, Duration::from_secs(30)).await?;
    // Throughput: the same lanes as tidings, each handing A its next event once `publish`
    // returned (in-process, no HTTP).
    let thr_out = run_throughput("gossipsub", &p, &mut rx, thr, thr_first, args.publishers).await?;
    let lat_out = run_latency("gossipsub", &p, &mut rx, lat, lat_first, args.rate).await?;
    drop(g);
    Ok(vec![thr_out, lat_out])
}

// ---------------------------------------------------------------------------------------------

fn print_table(args: &Args, body_bytes: f64, out: &[Outcome]) {
    println!(
        "e2e publish → deliver across 3 local nodes (A publishes, C subscribes to /stocks/**)\n\
         events: seeded stock orders, body ≈{body_bytes:.0} B JSON, identical bytes for both systems\n\
         throughput: N={} from {} concurrent publishers (tidings: HTTP requests; gossipsub: in-process calls)\n\
         latency: L={} at {} events/s, one publish at a time, publish start → delivery at C\n",
        args.events, args.publishers, args.latency_events, args.rate
    );
    println!(
        "{:<10} {:<11} {:>6} {:>12} {:>12} {:>10} {:>10} {:>10} {:>5} {:>5}",
        "system",
        "scenario",
        "events",
        "delivered/s",
        "published/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "lost",
        "dup"
    );
    for o in out {
        println!(
            "{:<10} {:<11} {:>6} {:>12.0} {:>12.0} {:>10.0} {:>10.0} {:>10.0} {:>5} {:>5}",
            o.system,
            o.scenario,
            o.events,
            o.delivered_per_s,
            o.published_per_s,
            o.p50_us,
            o.p90_us,
            o.p99_us,
            o.lost,
            o.dup
        );
    }
    let find = |s: &str, sc: &str| out.iter().find(|o| o.system == s && o.scenario == sc);
    if let (Some(t), Some(g)) = (
        find("tidings", "throughput"),
        find("gossipsub", "throughput"),
    ) {
        println!(
            "\nthroughput tidings/gossipsub: {:.2}× delivered/s",
            t.delivered_per_s / g.delivered_per_s
        );
    }
    if let (Some(t), Some(g)) = (find("tidings", "latency"), find("gossipsub", "latency")) {
        println!(
            "latency tidings/gossipsub: p50 {:.1}×, p99 {:.1}×",
            t.p50_us / g.p50_us,
            t.p99_us / g.p99_us
        );
    }
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
    let mut rng = StdRng::seed_from_u64(args.seed);
    let thr_first = 0u64;
    let lat_first = args.events as u64;
    let thr = orders(&mut rng, thr_first, args.events);
    let lat = orders(&mut rng, lat_first, args.latency_events);
    let body_bytes = thr.iter().chain(&lat).map(|o| o.body.len()).sum::<usize>() as f64
        / (thr.len() + lat.len()) as f64;

    let mut out = tidings_bench(&args, &thr, &lat, thr_first, lat_first)
        .await
        .context("tidings")?;
    out.extend(
        gossip_bench(&args, &thr, &lat, thr_first, lat_first)
            .await
            .context("gossipsub")?,
    );

    if args.json {
        for o in &out {
            println!(
                "{}",
                json!({
                    "bench": "e2e",
                    "system": o.system,
                    "scenario": o.scenario,
                    "events": o.events,
                    "body_bytes": body_bytes.round(),
                    "delivered_per_s": o.delivered_per_s.round(),
                    "published_per_s": o.published_per_s.round(),
                    "p50_us": o.p50_us.round(),
                    "p90_us": o.p90_us.round(),
                    "p99_us": o.p99_us.round(),
                    "lost": o.lost,
                    "dup": o.dup,
                    "rate": if o.scenario == "latency" { Some(args.rate) } else { None },
                    "durable_ack": o.system == "tidings",
                })
            );
        }
    } else {
        print_table(&args, body_bytes, &out);
    }
    Ok(())
}
