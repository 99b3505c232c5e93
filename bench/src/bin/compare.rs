//! tidings beside the systems users would pick instead, on this machine, in one run:
//! nats-server core, NATS JetStream (file), mosquitto QoS 0 and QoS 1 (persistence on),
//! rust-libp2p gossipsub, and tidings as one broker and as three.
//!
//! `bench/compare.sh` installs the servers and runs this; see `--help` and bench/README.md.
//! Every (system, scenario, run) is one JSON line in `<out>/results/compare-<date>.jsonl`;
//! `<out>/RESULTS.md` and the plots in `<out>/results/` are generated from that file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tidings_bench::harness::{Meta, Plan, Publisher, Subscribers, measure};
use tidings_bench::machine::{self as host, first_line, now_utc};
use tidings_bench::orders::{Order, TOPICS, orders};
use tidings_bench::peers::tidings::PublishVia;
use tidings_bench::peers::{Started, System, gossipsub, mqtt, nats, tidings};
use tidings_bench::plot::thousands;
use tidings_bench::report::{self, Machine};
use tidings_bench::stats::Record;

struct Args {
    quick: bool,
    runs: u32,
    secs: f64,
    /// The publishing budget of the `latency` scenario (the offered rate): longer than the
    /// others', so that a backlog which grows shows in its figures.
    latency_secs: f64,
    max_events: usize,
    window: usize,
    rate: f64,
    sustained_rate: f64,
    fanout: usize,
    tidings_lanes: usize,
    tidings_publish: PublishVia,
    seed: u64,
    grace: f64,
    systems: Vec<System>,
    scenarios: Vec<String>,
    out_dir: PathBuf,
    report_only: Option<PathBuf>,
    timings: Option<PathBuf>,
    /// `--timeline`: a timings file to print as a timeline, instead of measuring.
    timeline: Option<PathBuf>,
    /// `--every`: the timeline's interval, in seconds.
    every_s: f64,
}

const SCENARIOS: [&str; 7] = [
    "throughput",
    "fanout",
    "latency",
    "latency-sustained",
    "filter",
    "persist-1",
    "persist-window",
];

const HELP: &str = "\
usage: compare [--quick] [--runs N (3)] [--secs S (4)] [--latency-secs S (30)]
               [--max-events N (200000)]
               [--window W (256)] [--tidings-lanes L (256)] [--tidings-publish stream|http]
               [--rate R (5000)]
               [--sustained-rate R (200)] [--fanout K (10)]
               [--seed S (7)] [--grace S (10)] [--systems a,b,..] [--scenarios x,y,..]
               [--out DIR (bench/)] [--report FILE.jsonl] [--timings FILE.jsonl]
       compare --timeline FILE.jsonl [--every S (0.25)]

  --secs S     publishing budget of each measurement (it also ends at --max-events)
  --latency-secs S  the same for the latency scenario (--rate offered): long enough that a
               system falling behind the rate shows it (over 4 s, a backlog that grows by a
               few hundred events a second still looks like a sustained rate)
  --window W   publishes in flight for the acknowledging peers (JetStream, QoS 1) in every
               scenario, and for every acknowledging system, tidings included, in persist-window
  --tidings-lanes L  publishes in flight for tidings in the scenarios other than persist-*
               (throughput, fanout, latency, filter); 256 like the peers' window, since group
               commit amortises more the more are in flight (before it, 16 was best)
  --tidings-publish V  how tidings publishes: `stream` (default; the WebSocket publish stream,
               every lane's publish in flight on one connection, as the NATS and MQTT clients
               pipeline theirs) or `http` (one POST /v1/publish per event, a connection per lane)
  --quick      smoke test: 1 run, 1 s (latency too) and at most 20000 events per measurement,
               3 s grace;
               output to /tmp/tidings-compare-quick unless --out is given
  --report F   only regenerate DIR/RESULTS.md and the plots from F
  --timings F  also append every published event's timings to F, one JSON line each:
               system, scenario, run, id, at_s (publish start after the first), publish_us
               (the call, to its ack where there is one), delivery_us (per subscriber)
  --timeline F only print F (written by --timings) as a timeline: for every S seconds of
               each run, the events published, their delivery p50 / p99 / largest and their
               publish call's p50 / p99, in ms (a tail from a few bursts shows as a few lines)
systems:   nats jetstream jetstream-sync mqtt-qos0 mqtt-qos1 gossipsub tidings-1 tidings-3
scenarios: throughput fanout latency latency-sustained filter persist-1 persist-window
env: TIDINGS_BIN, NATS_SERVER, MOSQUITTO (binaries; default: built / on PATH or /usr/sbin;
     bench/compare.sh sets NATS_SERVER to the nats-server it installs, needed for jetstream-sync)";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        runs: 3,
        secs: 4.0,
        latency_secs: 30.0,
        max_events: 200_000,
        window: 256,
        rate: 5000.0,
        sustained_rate: 200.0,
        fanout: 10,
        tidings_lanes: 256,
        tidings_publish: PublishVia::Stream,
        seed: 7,
        grace: 10.0,
        systems: System::ALL.to_vec(),
        scenarios: SCENARIOS.iter().map(|s| s.to_string()).collect(),
        out_dir: Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
        report_only: None,
        timings: None,
        timeline: None,
        every_s: 0.25,
    };
    let mut out_given = false;
    let mut it = std::env::args().skip(1);
    let mut explicit = Vec::new();
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--runs" => a.runs = val("--runs")?.parse()?,
            "--secs" => a.secs = val("--secs")?.parse()?,
            "--latency-secs" => a.latency_secs = val("--latency-secs")?.parse()?,
            "--max-events" => a.max_events = val("--max-events")?.parse()?,
            "--window" => a.window = val("--window")?.parse()?,
            "--rate" => a.rate = val("--rate")?.parse()?,
            "--sustained-rate" => a.sustained_rate = val("--sustained-rate")?.parse()?,
            "--fanout" => a.fanout = val("--fanout")?.parse()?,
            "--tidings-lanes" => a.tidings_lanes = val("--tidings-lanes")?.parse()?,
            "--tidings-publish" => {
                let v = val("--tidings-publish")?;
                a.tidings_publish = PublishVia::from_name(&v)
                    .with_context(|| format!("--tidings-publish takes stream or http, not {v}"))?
            }
            "--seed" => a.seed = val("--seed")?.parse()?,
            "--grace" => a.grace = val("--grace")?.parse()?,
            "--systems" => {
                a.systems = val("--systems")?
                    .split(',')
                    .map(|s| System::from_name(s).with_context(|| format!("unknown system {s}")))
                    .collect::<Result<_>>()?
            }
            "--scenarios" => {
                a.scenarios = val("--scenarios")?.split(',').map(str::to_string).collect();
                for s in &a.scenarios {
                    ensure!(SCENARIOS.contains(&s.as_str()), "unknown scenario {s}");
                }
            }
            "--out" => {
                a.out_dir = PathBuf::from(val("--out")?);
                out_given = true;
            }
            "--report" => a.report_only = Some(PathBuf::from(val("--report")?)),
            "--timings" => a.timings = Some(PathBuf::from(val("--timings")?)),
            "--timeline" => a.timeline = Some(PathBuf::from(val("--timeline")?)),
            "--every" => {
                a.every_s = val("--every")?.parse()?;
                ensure!(
                    a.every_s > 0.0 && a.every_s.is_finite(),
                    "--every takes a positive number of seconds, not {}",
                    a.every_s
                );
            }
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
        explicit.push(arg);
    }
    ensure!(
        a.timeline.is_some() || !explicit.iter().any(|e| e == "--every"),
        "--every goes with --timeline FILE (a file written by --timings)"
    );
    if a.quick {
        // Quick defaults, unless given explicitly.
        let given = |f: &str| explicit.iter().any(|e| e == f);
        if !given("--runs") {
            a.runs = 1;
        }
        if !given("--secs") {
            a.secs = 1.0;
        }
        if !given("--latency-secs") {
            a.latency_secs = a.secs;
        }
        if !given("--max-events") {
            a.max_events = 20_000;
        }
        if !given("--grace") {
            a.grace = 3.0;
        }
        if !out_given {
            a.out_dir = std::env::temp_dir().join("tidings-compare-quick");
        }
    }
    ensure!(
        a.runs > 0
            && a.secs > 0.0
            && a.latency_secs > 0.0
            && a.max_events > 0
            && a.window > 0
            && a.rate > 0.0
            && a.sustained_rate > 0.0
            && a.fanout > 0
            && a.tidings_lanes > 0,
        "counts, times and rates must be positive"
    );
    Ok(a)
}

/// How one scenario is run for one system.
struct Shape {
    subscribers: usize,
    filtered: bool,
    lanes: usize,
    rate: Option<f64>,
    /// Its publishing budget.
    secs: f64,
}

fn shape(a: &Args, scenario: &str, sys: System) -> Option<Shape> {
    // Acknowledging systems need publishes in flight to show their throughput; one lane per
    // topic at most (tidings orders per (author, topic)).
    let window = a.window.min(TOPICS);
    let lanes = if sys.filters_content() {
        a.tidings_lanes.min(TOPICS)
    } else if sys.acked() {
        window
    } else {
        1
    };
    let s = |subscribers, filtered, lanes, rate| {
        Some(Shape {
            subscribers,
            filtered,
            lanes,
            rate,
            secs: a.secs,
        })
    };
    match scenario {
        "throughput" => s(1, false, lanes, None),
        "fanout" => s(a.fanout, false, lanes, None),
        "latency" => s(1, false, lanes, Some(a.rate)).map(|sh| Shape {
            secs: a.latency_secs,
            ..sh
        }),
        "latency-sustained" => s(1, false, lanes, Some(a.sustained_rate)),
        "filter" => s(1, true, lanes, None),
        "persist-1" if sys.acked() => s(1, false, 1, None),
        "persist-window" if sys.acked() => s(1, false, window, None),
        _ => None,
    }
}

async fn run_with<P: Publisher>(
    started: Started<P>,
    events: &Arc<Vec<Order>>,
    plan: &Plan,
    subs: Subscribers,
    mut meta: Meta,
) -> Result<Record> {
    let Started {
        publisher,
        handles,
        guard,
        servers,
    } = started;
    meta.servers = servers;
    let r = measure(&publisher, events, plan, subs, handles, meta).await;
    drop(publisher);
    drop(guard);
    r
}

async fn run_cell(
    a: &Args,
    sys: System,
    scenario: &str,
    sh: &Shape,
    run: u32,
    events: &Arc<Vec<Order>>,
) -> Result<Record> {
    let work = tempfile::Builder::new()
        .prefix(&format!("compare-{}-", sys.name()))
        .tempdir()?;
    let mut subs = Subscribers::new(
        events,
        sh.subscribers,
        sh.filtered,
        !sys.filters_content(),
        sh.filtered,
    );
    let plan = Plan {
        lanes: sh.lanes,
        rate: sh.rate,
        budget: Duration::from_secs_f64(sh.secs),
        grace: Duration::from_secs_f64(a.grace),
        timings: a.timings.clone(),
    };
    let meta = Meta {
        system: sys.name().into(),
        scenario: scenario.into(),
        run,
        seed: a.seed,
        acked: sys.acked(),
        servers: Vec::new(),
    };
    let w = work.path();
    match sys {
        System::Nats | System::JetStream | System::JetStreamSync => {
            let mode = match sys {
                System::Nats => nats::Mode::Core,
                System::JetStream => nats::Mode::JetStream,
                _ => nats::Mode::JetStreamSync,
            };
            let st = nats::start(mode, &mut subs, w).await?;
            run_with(st, events, &plan, subs, meta).await
        }
        System::MqttQos0 | System::MqttQos1 => {
            let st = mqtt::start(sys == System::MqttQos1, sh.lanes, &mut subs, w).await?;
            run_with(st, events, &plan, subs, meta).await
        }
        System::Gossipsub => {
            let st = gossipsub::start(&mut subs).await?;
            run_with(st, events, &plan, subs, meta).await
        }
        System::Tidings1 | System::Tidings3 => {
            let n = if sys == System::Tidings1 { 1 } else { 3 };
            let st =
                tidings::start(n, sh.lanes, a.tidings_publish, sh.filtered, &mut subs, w).await?;
            run_with(st, events, &plan, subs, meta).await
        }
    }
}

fn machine(a: &Args, date: String) -> Machine {
    let bin = |name: &str, env: &str| {
        tidings_bench::procs::find_binary(name, env)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| name.to_string())
    };
    let mosq = first_line(&bin("mosquitto", "MOSQUITTO"), &["-h"]);
    Machine {
        bench: "compare-machine".into(),
        date,
        command: host::command("compare"),
        cpu: host::cpu_model(),
        cores: host::cores(),
        kernel: host::kernel(),
        memory: host::memory(),
        loadavg_at_start: host::loadavg(),
        nats_server: first_line(&bin("nats-server", "NATS_SERVER"), &["--version"]),
        mosquitto: mosq,
        tidings_commit: host::tidings_commit(),
        runs: a.runs,
        seed: a.seed,
        budget_s: a.secs,
        latency_budget_s: a.latency_secs,
        max_events: a.max_events,
        window: a.window.min(TOPICS),
        latency_rate: a.rate,
        sustained_rate: a.sustained_rate,
        fanout: a.fanout,
        tidings_lanes: a.tidings_lanes.min(TOPICS),
        tidings_publish: a.tidings_publish.name().into(),
    }
}

fn summary(r: &Record) -> String {
    if let Some(e) = &r.error {
        return format!("FAILED: {e}");
    }
    let mut s = format!(
        "published {} ({}/s), delivered {}/s, p50 {} µs p99 {} µs, lost {} dup {}",
        thousands(r.published as f64),
        thousands(r.published_per_s),
        thousands(r.delivered_per_s),
        thousands(r.p50_us),
        thousands(r.p99_us),
        r.lost,
        r.dup
    );
    if r.unwanted > 0 {
        s += &format!(" unwanted {}", r.unwanted);
    }
    if let Some(b) = r.bytes_per_useful {
        s += &format!(", {} B per useful event", thousands(b));
    }
    s
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = parse_args()?;
    if let Some(file) = &a.timeline {
        let lines = tidings_bench::timeline::read(file)?;
        print!(
            "{}",
            tidings_bench::timeline::render(&tidings_bench::timeline::intervals(&lines, a.every_s))
        );
        return Ok(());
    }
    if let Some(jsonl) = &a.report_only {
        report::write(&a.out_dir, jsonl)?;
        println!("wrote {}", a.out_dir.join("RESULTS.md").display());
        readme_headline(&a, jsonl)?;
        return Ok(());
    }
    // Fail early, before minutes of measuring, if a server is missing.
    for sys in &a.systems {
        match sys {
            System::Nats | System::JetStream => {
                nats::server_for(nats::Mode::Core)?;
            }
            System::JetStreamSync => {
                nats::server_for(nats::Mode::JetStreamSync)?;
            }
            System::MqttQos0 | System::MqttQos1 => {
                tidings_bench::procs::find_binary("mosquitto", "MOSQUITTO")?;
            }
            System::Tidings1 | System::Tidings3 => {
                tidings_bench::procs::tidings_bin()?;
            }
            System::Gossipsub => {}
        }
    }
    let results = a.out_dir.join("results");
    std::fs::create_dir_all(&results)?;
    let (date, stamp) = now_utc();
    let jsonl = results.join(format!("compare-{stamp}.jsonl"));
    let mut out = std::fs::File::create(&jsonl)?;
    let m = machine(&a, date);
    writeln!(out, "{}", serde_json::to_string(&m)?)?;
    eprintln!(
        "compare: {} runs × {} scenarios × {} systems on {} ({} cores), load {}",
        a.runs,
        a.scenarios.len(),
        a.systems.len(),
        m.cpu,
        m.cores,
        m.loadavg_at_start
    );

    let events = Arc::new(orders(a.seed, 0, a.max_events));
    for run in 1..=a.runs {
        for scenario in &a.scenarios {
            for &sys in &a.systems {
                let Some(sh) = shape(&a, scenario, sys) else {
                    continue;
                };
                // Bounded: start-up, the publishing budget, the grace period, and slack.
                let limit = Duration::from_secs_f64(sh.secs + a.grace + 180.0);
                let r = match tokio::time::timeout(
                    limit,
                    run_cell(&a, sys, scenario, &sh, run, &events),
                )
                .await
                {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => failed(&a, sys, scenario, &sh, run, format!("{e:#}")),
                    Err(_) => failed(
                        &a,
                        sys,
                        scenario,
                        &sh,
                        run,
                        format!("timed out after {limit:?}"),
                    ),
                };
                eprintln!(
                    "run {run} {scenario:<17} {:<10} {}",
                    sys.name(),
                    summary(&r)
                );
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
                out.flush()?;
            }
        }
    }
    drop(out);
    report::write(&a.out_dir, &jsonl)?;
    readme_headline(&a, &jsonl)?;
    println!(
        "results: {}\nreport:  {}",
        jsonl.display(),
        a.out_dir.join("RESULTS.md").display()
    );
    Ok(())
}

/// The repository README's headline comparison, regenerated from `jsonl` when the page was
/// written into the repository's `bench/` (not for a `--quick` run or another `--out`), and only
/// from a run of every system (a partial run would drop rows from the headline).
fn readme_headline(a: &Args, jsonl: &Path) -> Result<()> {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    if a.out_dir != bench || a.systems.len() != System::ALL.len() {
        return Ok(());
    }
    let readme = bench.join("../README.md");
    tidings_bench::headline::write(&readme, jsonl)?;
    println!("wrote the headline figures into {}", readme.display());
    Ok(())
}

fn failed(a: &Args, sys: System, scenario: &str, sh: &Shape, run: u32, error: String) -> Record {
    Record {
        bench: "compare".into(),
        system: sys.name().into(),
        scenario: scenario.into(),
        run,
        seed: a.seed,
        subscribers: sh.subscribers,
        lanes: sh.lanes,
        offered_rate: sh.rate,
        acked: sys.acked(),
        p50_us: f64::NAN,
        p90_us: f64::NAN,
        p99_us: f64::NAN,
        max_us: f64::NAN,
        error: Some(error),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        Args {
            quick: false,
            runs: 1,
            secs: 1.0,
            latency_secs: 30.0,
            max_events: 10,
            window: 256,
            rate: 1.0,
            sustained_rate: 1.0,
            fanout: 10,
            tidings_lanes: 256,
            tidings_publish: PublishVia::Stream,
            seed: 7,
            grace: 1.0,
            systems: System::ALL.to_vec(),
            scenarios: Vec::new(),
            out_dir: PathBuf::new(),
            report_only: None,
            timings: None,
            timeline: None,
            every_s: 0.25,
        }
    }

    #[test]
    fn every_acknowledging_system_runs_persist_window_at_the_window() {
        let a = args();
        for sys in System::ALL {
            assert!(
                HELP.contains(sys.name()),
                "{} missing from --help",
                sys.name()
            );
            assert_eq!(System::from_name(sys.name()), Some(sys));
            let pw = shape(&a, "persist-window", sys);
            assert_eq!(pw.is_some(), sys.acked(), "{sys:?}");
            if let Some(pw) = pw {
                assert_eq!(pw.lanes, 256, "{sys:?}");
            }
        }
        assert!(System::JetStreamSync.acked() && System::JetStreamSync.nats());
        let lanes = |sys| shape(&a, "throughput", sys).map(|s| s.lanes);
        assert_eq!(lanes(System::Tidings1), Some(256));
        assert_eq!(lanes(System::JetStreamSync), Some(256));
        assert_eq!(lanes(System::Nats), Some(1));
    }

    /// The latency scenario runs for its own budget, long enough that a backlog shows; every
    /// other scenario for `--secs`.
    #[test]
    fn only_the_latency_scenario_runs_for_the_latency_budget() {
        let a = args();
        for sc in SCENARIOS {
            let Some(sh) = shape(&a, sc, System::Tidings3) else {
                continue;
            };
            let want = if sc == "latency" { 30.0 } else { 1.0 };
            assert_eq!(sh.secs, want, "{sc}");
        }
    }
}
