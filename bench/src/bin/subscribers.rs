//! One `tidings node`, thousands of SSE subscribers each with its own `price < k` filter: what
//! do they cost the publisher, how fast does the node deliver, how much memory does each take,
//! and does every subscriber get exactly its events, once, in order?
//!
//! Two phases in one run, each on a fresh node: `baseline` (one subscriber that takes every
//! event) and `subscribers` (`--subscribers`, 10,000 by default); the same seeded events are
//! published in both. See `--help` and bench/README.md. Writes
//! `<out>/results/subscribers-<date>.jsonl` and the section of `<out>/README.md` between the
//! `subscribers:begin` / `subscribers:end` markers; exits with status 2 if any subscriber did not
//! get exactly what it must.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use tidings_bench::harness::Publisher;
use tidings_bench::machine::{self as host, now_utc};
use tidings_bench::orders::{Order, PROBE_BASE, body_id, orders};
use tidings_bench::peers::tidings::{Cluster, HttpPublisher, http_client};
use tidings_bench::plot::thousands;
use tidings_bench::stats::percentile;
use tidings_bench::subscribers::{
    Exactness, MAX_CENTS, Phase, RunInfo, filter_text, matches_per_event, report, thresholds,
};

const HELP: &str = "\
usage: subscribers [--quick] [--subscribers N (10000)] [--events E (200)] [--lanes L (1)]
                   [--seed S (7)] [--grace S (120)] [--out DIR (bench/)] [--report FILE.jsonl]

One tidings node; N SSE subscribers, subscriber i filtering `/stocks/** where price < k_i` with
the k_i spread evenly over 0.01-100.00 (seeded shuffle), so an event of price p reaches a known
number of them (with 10,000: those with k > p, 10,000 - 100p). E seeded stock orders are
published from L lanes (one publish awaiting its acknowledgement in each), first to a fresh node
with one subscriber taking every event (the baseline), then to a fresh node with the N.
Measures publish latency (call -> acknowledgement), deliveries/s, the node's resident memory per
subscriber, and checks that every subscriber got exactly the events `price < k` selects
(computed from the generated prices, not by the node's matcher), each once, in order per topic.

  --subscribers N  subscribers in the measured phase (the open-files limit must allow N + 256)
  --events E       events published per phase
  --lanes L        publishes in flight (lane l owns the topics with index % L = l)
  --grace S        how long to wait for the deliveries after the last acknowledgement
  --quick          1,000 subscribers, 50 events, 20 s grace, output under
                   /tmp/tidings-subscribers-quick unless --out is given
  --out DIR        writes DIR/results/subscribers-<date>.jsonl and the section between the
                   subscribers:begin/end markers of DIR/README.md (created if missing)
  --report F       only regenerate that section from the results file F
env: TIDINGS_BIN (default: built by cargo into the same target dir, or next to this binary)
exit status: 2 if any subscriber did not get exactly its events";

/// Subscriptions being opened at once.
const OPENING: usize = 64;
/// Unmeasured publishes (on a topic no filter covers) before the node's memory is read.
const WARMUP: usize = 20;
/// After everything expected arrived, how long we keep listening for late duplicates.
const DUP_WINDOW: Duration = Duration::from_millis(300);
/// Open files beyond one per subscriber (the node's store, libp2p, the publisher's pool).
const SPARE_FILES: u64 = 256;

struct Args {
    subscribers: usize,
    events: usize,
    lanes: usize,
    seed: u64,
    grace: f64,
    out_dir: PathBuf,
    report_only: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        subscribers: 10_000,
        events: 200,
        lanes: 1,
        seed: 7,
        grace: 120.0,
        out_dir: Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
        report_only: None,
    };
    let (mut quick, mut given) = (false, Vec::new());
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => quick = true,
            "--subscribers" => a.subscribers = val("--subscribers")?.parse()?,
            "--events" => a.events = val("--events")?.parse()?,
            "--lanes" => a.lanes = val("--lanes")?.parse()?,
            "--seed" => a.seed = val("--seed")?.parse()?,
            "--grace" => a.grace = val("--grace")?.parse()?,
            "--out" => a.out_dir = PathBuf::from(val("--out")?),
            "--report" => a.report_only = Some(PathBuf::from(val("--report")?)),
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
        given.push(arg);
    }
    if quick {
        let set = |f: &str| given.iter().any(|g| g == f);
        if !set("--subscribers") {
            a.subscribers = 1_000;
        }
        if !set("--events") {
            a.events = 50;
        }
        if !set("--grace") {
            a.grace = 20.0;
        }
        if !set("--out") {
            a.out_dir = std::env::temp_dir().join("tidings-subscribers-quick");
        }
    }
    ensure!(
        a.subscribers > 0 && a.events > 0 && a.lanes > 0 && a.grace > 0.0,
        "--subscribers, --events, --lanes and --grace must be positive"
    );
    ensure!(
        (a.events as u64) < PROBE_BASE,
        "--events must be below {PROBE_BASE}"
    );
    Ok(a)
}

/// Raises the soft open-files limit to the hard one (the node, started afterwards, inherits
/// it); fails if that is still below `need`.
fn raise_nofile(need: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0,
            "getrlimit: {}",
            std::io::Error::last_os_error()
        );
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            ensure!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0,
                "setrlimit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let have = lim.rlim_cur;
    ensure!(
        have >= need,
        "{need} open files needed (one per subscriber, in this process and in the node) but the \
         limit is {have}: raise the hard limit (`ulimit -Hn`, /etc/security/limits.conf) or use \
         fewer --subscribers"
    );
    Ok(have)
}

/// Fails early if loopback has too few ephemeral ports for `n` connections at once.
fn check_ports(n: usize) -> Result<()> {
    let range = host::read_trim("/proc/sys/net/ipv4/ip_local_port_range");
    let mut it = range
        .split_whitespace()
        .filter_map(|x| x.parse::<usize>().ok());
    if let (Some(lo), Some(hi)) = (it.next(), it.next()) {
        ensure!(
            hi.saturating_sub(lo) > n + 1_000,
            "ip_local_port_range {lo}-{hi} is too small for {n} subscriber connections"
        );
    }
    Ok(())
}

/// What one subscriber received.
struct Received {
    /// Event ids in arrival order (probes and warm-up events excluded).
    ids: Vec<u64>,
    last: Option<Instant>,
    /// The node ended the stream (`event: error`, or the connection closed) before we stopped.
    closed: bool,
}

/// Reads one SSE stream until `stop`, recording every event's id; `total` counts deliveries
/// over all subscribers.
async fn read_sse(
    mut resp: reqwest::Response,
    total: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut r = Received {
        ids: Vec::new(),
        last: None,
        closed: false,
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.changed() => break,
            c = resp.chunk() => c,
        };
        let Ok(Some(chunk)) = chunk else {
            r.closed = true;
            break;
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + nl];
            if let Some(data) = line.strip_prefix(b"data:") {
                if let Some(id) = body_id(data) {
                    r.ids.push(id);
                    r.last = Some(now);
                    total.fetch_add(1, Ordering::Relaxed);
                }
            } else if let Some(ev) = line.strip_prefix(b"event:")
                && ev.trim_ascii() == b"error"
            {
                r.closed = true;
            }
            start += nl + 1;
        }
        buf.drain(..start);
    }
    r
}

/// What the publishing lanes did.
struct Published {
    /// Per event: acknowledged.
    ok: Vec<bool>,
    /// Call → acknowledgement of each acknowledged publish, µs, sorted.
    latency_us: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    t0: Instant,
    end: Instant,
}

async fn publish(p: &HttpPublisher, events: &Arc<Vec<Order>>, lanes: usize) -> Result<Published> {
    let mut per_lane: Vec<Vec<usize>> = vec![Vec::new(); lanes];
    for (i, o) in events.iter().enumerate() {
        per_lane[o.topic_index % lanes].push(i);
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for lane in per_lane.into_iter().filter(|l| !l.is_empty()) {
        let (p, events) = (p.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(lane.len());
            for i in lane {
                let s = Instant::now();
                let r = p.publish(&events[i]).await;
                out.push((i, s.elapsed(), r.map_err(|e| format!("{e:#}"))));
            }
            out
        }));
    }
    let mut res = Published {
        ok: vec![false; events.len()],
        latency_us: Vec::with_capacity(events.len()),
        errors: 0,
        first_error: None,
        t0,
        end: t0,
    };
    for t in tasks {
        for (i, took, r) in t.await? {
            match r {
                Ok(()) => {
                    res.ok[i] = true;
                    res.latency_us.push(took.as_secs_f64() * 1e6);
                }
                Err(e) => {
                    res.errors += 1;
                    res.first_error.get_or_insert(e);
                }
            }
        }
    }
    res.end = Instant::now();
    res.latency_us.sort_by(f64::total_cmp);
    Ok(res)
}

/// One phase on a fresh node: subscribers with thresholds `ks` (cents), the events published,
/// the deliveries checked.
async fn run_phase(
    a: &Args,
    name: &str,
    filters: &str,
    ks: &[u32],
    events: &Arc<Vec<Order>>,
) -> Result<Phase> {
    let http = http_client(a.lanes)?;
    let cluster = Cluster::start(&http, 1, None).await?;
    let node = &cluster.nodes[0];
    let pid = node.pid();
    let publisher = HttpPublisher {
        http: http.clone(),
        url: format!("{}/v1/publish", node.api).into(),
    };
    // Warm the publish path and the connection pool on a topic no subscriber's filter covers,
    // so the memory read next is the idle node's and the first measured publish is not a
    // cold start.
    for j in 0..WARMUP {
        let o = Order {
            id: PROBE_BASE + j as u64,
            topic: "/warmup/w".into(),
            topic_index: 0,
            body: json!({ "warmup": j }).to_string(),
            useful: false,
            price_cents: 0,
        };
        publisher.publish(&o).await.context("warm-up publish")?;
    }
    let rss = |f: &str| host::proc_status_bytes(pid, f).unwrap_or(0);
    let rss_before = rss("VmRSS");

    eprintln!(
        "{name}: opening {} subscription(s)…",
        thousands(ks.len() as f64)
    );
    let sub_http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(0)
        .build()?;
    let total = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let opened_at = Instant::now();
    let readers: Vec<Result<(usize, JoinHandle<Received>)>> =
        futures::stream::iter(ks.iter().copied().enumerate())
            .map(|(i, k)| {
                let (http, total, stop) = (sub_http.clone(), total.clone(), stop.clone());
                let filter = filter_text(k);
                let url = reqwest::Url::parse_with_params(
                    &format!("{}/v1/subscribe", node.api),
                    [("filter", &filter)],
                );
                async move {
                    let url = url.with_context(|| format!("{} is no URL", node.api))?;
                    // Answered once the node has registered the subscription: nothing
                    // published afterwards can miss it.
                    let resp = http
                        .get(url)
                        .header("accept", "text/event-stream")
                        .send()
                        .await
                        .with_context(|| format!("subscribing {filter:?}"))?;
                    let status = resp.status();
                    if !status.is_success() {
                        bail!(
                            "subscribing {filter:?}: {status} {}",
                            resp.text().await.unwrap_or_default()
                        );
                    }
                    Ok((i, tokio::spawn(read_sse(resp, total, stop))))
                }
            })
            .buffer_unordered(OPENING)
            .collect()
            .await;
    let mut handles: Vec<Option<JoinHandle<Received>>> = (0..ks.len()).map(|_| None).collect();
    for r in readers {
        let (i, h) = r?;
        handles[i] = Some(h);
    }
    let subscribe_s = opened_at.elapsed().as_secs_f64();
    let live = node.status(&http).await?["subscriptions"]
        .as_u64()
        .unwrap_or(0);
    ensure!(
        live == ks.len() as u64,
        "the node reports {live} subscriptions, {} were opened",
        ks.len()
    );
    let rss_subscribed = rss("VmRSS");
    eprintln!(
        "{name}: {} open in {subscribe_s:.1} s; node RSS {:.1} → {:.1} MiB; publishing {} events…",
        thousands(ks.len() as f64),
        rss_before as f64 / 1048576.0,
        rss_subscribed as f64 / 1048576.0,
        thousands(events.len() as f64)
    );

    let cpu = || {
        (
            host::cpu_seconds(Some(pid)).unwrap_or(f64::NAN),
            host::cpu_seconds(None).unwrap_or(f64::NAN),
        )
    };
    let (node_cpu0, bench_cpu0) = cpu();
    let published = publish(&publisher, events, a.lanes).await?;
    if let Some(e) = &published.first_error {
        eprintln!("{name}: {} publishes failed, first: {e}", published.errors);
    }
    let expected: u64 = ks
        .iter()
        .map(|k| {
            events
                .iter()
                .zip(&published.ok)
                .filter(|(o, ok)| **ok && o.price_cents < *k)
                .count() as u64
        })
        .sum();
    let grace_end = published.end + Duration::from_secs_f64(a.grace);
    while total.load(Ordering::Relaxed) < expected && Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (node_cpu1, bench_cpu1) = cpu();
    tokio::time::sleep(DUP_WINDOW).await;
    let _ = stop_tx.send(true);
    let mut exactness = Exactness::default();
    let mut last = published.t0;
    for (h, k) in handles.into_iter().zip(ks) {
        let r = h.context("a subscriber was never opened")?.await?;
        if let Some(t) = r.last {
            last = last.max(t);
        }
        exactness.check(events, &published.ok, *k, &r.ids, r.closed);
    }
    let rss_after = rss("VmRSS");
    let rss_peak = rss("VmHWM");
    drop(cluster);

    let matches: Vec<usize> = matches_per_event(events, ks)
        .into_iter()
        .zip(&published.ok)
        .filter_map(|(m, ok)| ok.then_some(m))
        .collect();
    let span = last.saturating_duration_since(published.t0).as_secs_f64();
    let pub_span = published
        .end
        .saturating_duration_since(published.t0)
        .as_secs_f64()
        .max(1e-9);
    let lat = &published.latency_us;
    Ok(Phase {
        bench: "subscribers".into(),
        phase: name.into(),
        subscribers: ks.len(),
        filters: filters.into(),
        published: lat.len(),
        publish_errors: published.errors,
        lanes: a.lanes,
        publish_p50_us: percentile(lat, 50.0),
        publish_p90_us: percentile(lat, 90.0),
        publish_p99_us: percentile(lat, 99.0),
        publish_max_us: lat.last().copied().unwrap_or(f64::NAN),
        published_per_s: lat.len() as f64 / pub_span,
        matches_min: matches.iter().copied().min().unwrap_or(0),
        matches_mean: matches.iter().sum::<usize>() as f64 / matches.len().max(1) as f64,
        matches_max: matches.iter().copied().max().unwrap_or(0),
        deliveries_per_s: exactness.delivered as f64 / span.max(1e-9),
        deliver_span_s: span,
        exactness,
        subscribe_s,
        rss_before,
        rss_subscribed,
        rss_after,
        rss_peak,
        rss_per_subscriber: rss_subscribed.saturating_sub(rss_before) as f64 / ks.len() as f64,
        node_cpu_s: node_cpu1 - node_cpu0,
        bench_cpu_s: bench_cpu1 - bench_cpu0,
        error: None,
    })
}

fn summary(p: &Phase) -> String {
    if let Some(e) = &p.error {
        return format!("{}: FAILED: {e}", p.phase);
    }
    let x = &p.exactness;
    format!(
        "{:<11} {:>6} subs  publish p50 {:>8} µs p99 {:>8} µs  {:>7} acked/s  {} of {} delivered, {:>9} deliveries/s in {:.2} s  {}  RSS/sub {} B  CPU node {:.1} s bench {:.1} s",
        p.phase,
        thousands(p.subscribers as f64),
        thousands(p.publish_p50_us),
        thousands(p.publish_p99_us),
        thousands(p.published_per_s),
        thousands(x.delivered as f64),
        thousands(x.expected as f64),
        thousands(p.deliveries_per_s),
        p.deliver_span_s,
        if x.exact() {
            "EXACT".to_string()
        } else {
            format!(
                "NOT EXACT (missing {}, dup {}, unwanted {}, out of order {}, cut off {})",
                x.missing, x.dup, x.unwanted, x.out_of_order, x.closed
            )
        },
        if p.subscribers > 1 {
            thousands(p.rss_per_subscriber)
        } else {
            "–".into()
        },
        p.node_cpu_s,
        p.bench_cpu_s
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = parse_args()?;
    let readme = a.out_dir.join("README.md");
    if let Some(jsonl) = &a.report_only {
        report(&readme, jsonl)?;
        println!("wrote the subscribers section of {}", readme.display());
        return Ok(());
    }
    let nofile = raise_nofile(a.subscribers as u64 + SPARE_FILES)?;
    check_ports(a.subscribers)?;
    tidings_bench::procs::tidings_bin()?;

    let results = a.out_dir.join("results");
    std::fs::create_dir_all(&results)?;
    let (date, stamp) = now_utc();
    let jsonl = results.join(format!("subscribers-{stamp}.jsonl"));
    let run = RunInfo {
        bench: "subscribers-run".into(),
        date,
        command: host::command("subscribers"),
        cpu: host::cpu_model(),
        cores: host::cores(),
        kernel: host::kernel(),
        memory: host::memory(),
        loadavg_at_start: host::loadavg(),
        tidings_commit: host::tidings_commit(),
        seed: a.seed,
        events: a.events,
        lanes: a.lanes,
        subscribers: a.subscribers,
        nofile,
    };
    let mut out = std::fs::File::create(&jsonl)?;
    writeln!(out, "{}", serde_json::to_string(&run)?)?;

    let events = Arc::new(orders(a.seed, 0, a.events));
    let phases = [
        (
            "baseline",
            "price < 100.01 (every event)".to_string(),
            vec![MAX_CENTS + 1],
        ),
        (
            "subscribers",
            format!(
                "price < k, k = 0.01 … 100.00 spread evenly over {} subscribers (seed {})",
                thousands(a.subscribers as f64),
                a.seed
            ),
            thresholds(a.subscribers, a.seed),
        ),
    ];
    let mut all_exact = true;
    for (name, filters, ks) in phases {
        let limit = Duration::from_secs_f64(600.0 + a.grace);
        let p = match tokio::time::timeout(limit, run_phase(&a, name, &filters, &ks, &events)).await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => failed(&a, name, &filters, ks.len(), format!("{e:#}")),
            Err(_) => failed(
                &a,
                name,
                &filters,
                ks.len(),
                format!("timed out after {limit:?}"),
            ),
        };
        all_exact &= p.error.is_none() && p.exactness.exact();
        println!("{}", summary(&p));
        writeln!(out, "{}", serde_json::to_string(&p)?)?;
        out.flush()?;
    }
    drop(out);
    report(&readme, &jsonl)?;
    println!(
        "results: {}\nreport:  {}",
        jsonl.display(),
        readme.display()
    );
    if !all_exact {
        eprintln!("NOT EXACT: a subscriber did not get exactly its events (see above)");
        std::process::exit(2);
    }
    Ok(())
}

fn failed(a: &Args, name: &str, filters: &str, subscribers: usize, error: String) -> Phase {
    Phase {
        bench: "subscribers".into(),
        phase: name.into(),
        subscribers,
        filters: filters.into(),
        lanes: a.lanes,
        publish_p50_us: f64::NAN,
        publish_p90_us: f64::NAN,
        publish_p99_us: f64::NAN,
        publish_max_us: f64::NAN,
        error: Some(error),
        ..Default::default()
    }
}
