//! From the JSON lines of a compare run to `bench/RESULTS.md` and its SVG plots: medians over
//! runs for rates and latencies, totals for lost / duplicated / unwanted deliveries.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::plot::{hbar_log, thousands};
use crate::stats::{Record, median};

/// The machine the run was on: the first JSON line of a run (`bench` = `compare-machine`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub bench: String,
    pub date: String,
    pub command: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory: String,
    pub loadavg_at_start: String,
    pub nats_server: String,
    pub mosquitto: String,
    pub tidings_commit: String,
    pub runs: u32,
    pub seed: u64,
    pub budget_s: f64,
    /// The latency scenario's publishing budget; 0 in files from before it had its own (it was
    /// `budget_s` then).
    #[serde(default)]
    pub latency_budget_s: f64,
    pub max_events: usize,
    pub window: usize,
    pub latency_rate: f64,
    pub sustained_rate: f64,
    pub fanout: usize,
    #[serde(default)]
    pub tidings_lanes: usize,
    /// How tidings published (`http`, or `stream`: the WebSocket publish stream); files from
    /// before the stream existed published over HTTP.
    #[serde(default = "http")]
    pub tidings_publish: String,
}

fn http() -> String {
    "http".into()
}

/// Scenario keys in table order, with their headings.
pub const SCENARIOS: [(&str, &str); 7] = [
    ("throughput", "Throughput 1→1"),
    ("fanout", "Fan-out 1→N on a wildcard"),
    ("latency", "Latency at the offered rate"),
    (
        "latency-sustained",
        "Latency at a rate every system sustains",
    ),
    (
        "filter",
        "Content filter `price < 10 and order = \"buy\"` (≈5% of events)",
    ),
    (
        "persist-1",
        "Acknowledged (persisted) publish, 1 outstanding",
    ),
    (
        "persist-window",
        "Acknowledged (persisted) publish, W outstanding",
    ),
];

/// Table order of the systems.
pub const SYSTEMS: [&str; 8] = [
    "nats",
    "jetstream",
    "jetstream-sync",
    "mqtt-qos0",
    "mqtt-qos1",
    "gossipsub",
    "tidings-1",
    "tidings-3",
];

/// (label, scenario, the figure of a cell) for the ratio tables.
type Metric = (&'static str, &'static str, fn(&Cell) -> f64);

/// Medians and totals of one (system, scenario) over its runs.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub runs: usize,
    pub failed: usize,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub bytes_per_useful: f64,
    /// Median over runs of the server processes' CPU time per published event, µs (NaN where
    /// not measured).
    pub server_cpu_us: f64,
    /// Median over runs of the server processes' CPU time over the run's wall time: how many
    /// cores the servers kept busy.
    pub server_cores: f64,
    pub published: usize,
    pub expected: usize,
    pub lost: usize,
    pub dup: usize,
    pub unwanted: usize,
    pub publish_errors: usize,
    pub lanes: usize,
    pub subscribers: usize,
    pub offered_rate: Option<f64>,
    pub errors: Vec<String>,
}

/// Parses the JSON lines: the machine line (if any) and the records.
pub fn parse(text: &str) -> Result<(Option<Machine>, Vec<Record>)> {
    let mut machine = None;
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", n + 1))?;
        if v["bench"] == "compare-machine" {
            machine = Some(serde_json::from_value(v).with_context(|| format!("line {}", n + 1))?);
        } else if v["bench"] == "compare" {
            records.push(serde_json::from_value(v).with_context(|| format!("line {}", n + 1))?);
        }
    }
    Ok((machine, records))
}

/// (system, scenario) → cell.
pub fn aggregate(records: &[Record]) -> BTreeMap<(String, String), Cell> {
    let mut groups: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.system.clone(), r.scenario.clone()))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|(k, rs)| {
            let ok: Vec<&&Record> = rs.iter().filter(|r| r.error.is_none()).collect();
            let med = |f: fn(&Record) -> f64| median(ok.iter().map(|r| f(r)));
            let cell = Cell {
                runs: rs.len(),
                failed: rs.len() - ok.len(),
                published_per_s: med(|r| r.published_per_s),
                delivered_per_s: med(|r| r.delivered_per_s),
                p50_us: med(|r| r.p50_us),
                p90_us: med(|r| r.p90_us),
                p99_us: med(|r| r.p99_us),
                bytes_per_useful: med(|r| r.bytes_per_useful.unwrap_or(f64::NAN)),
                server_cpu_us: med(|r| match r.server_cpu_s {
                    Some(c) if r.published > 0 => c * 1e6 / r.published as f64,
                    _ => f64::NAN,
                }),
                server_cores: med(|r| match r.server_cpu_s {
                    Some(c) if r.wall_s > 0.0 => c / r.wall_s,
                    _ => f64::NAN,
                }),
                published: ok.iter().map(|r| r.published).sum(),
                expected: ok.iter().map(|r| r.expected).sum(),
                lost: ok.iter().map(|r| r.lost).sum(),
                dup: ok.iter().map(|r| r.dup).sum(),
                unwanted: ok.iter().map(|r| r.unwanted).sum(),
                publish_errors: ok.iter().map(|r| r.publish_errors).sum(),
                lanes: rs.first().map_or(0, |r| r.lanes),
                subscribers: rs.first().map_or(0, |r| r.subscribers),
                offered_rate: rs.first().and_then(|r| r.offered_rate),
                errors: rs.iter().filter_map(|r| r.error.clone()).collect(),
            };
            (k, cell)
        })
        .collect()
}

fn systems_in(cells: &BTreeMap<(String, String), Cell>) -> Vec<String> {
    let mut v: Vec<String> = SYSTEMS
        .iter()
        .filter(|s| cells.keys().any(|(sys, _)| sys == *s))
        .map(|s| s.to_string())
        .collect();
    for (sys, _) in cells.keys() {
        if !v.contains(sys) {
            v.push(sys.clone());
        }
    }
    v
}

fn us(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 10_000.0 {
        format!("{} ms", thousands(v / 1000.0))
    } else {
        format!("{} µs", thousands(v))
    }
}

/// Cores kept busy, to two decimals; `–` where not measured.
fn cores(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".into()
    }
}

fn loss(c: &Cell) -> String {
    format!("{} / {}", thousands(c.lost as f64), thousands(c.dup as f64))
}

/// The Markdown page. `jsonl_name` is the results file it was made from; plots are linked as
/// `results/<name>.svg`.
pub fn markdown(machine: Option<&Machine>, records: &[Record], jsonl_name: &str) -> String {
    let cells = aggregate(records);
    let systems = systems_in(&cells);
    let get = |sys: &str, sc: &str| cells.get(&(sys.to_string(), sc.to_string()));
    let runs = records.iter().map(|r| r.run).max().unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# tidings beside NATS, JetStream, mosquitto and gossipsub\n"
    );
    let _ = writeln!(
        s,
        "Generated by `bench/compare.sh` from [`results/{jsonl_name}`](results/{jsonl_name}) \
         (one JSON line per system, scenario and run). Do not edit by hand: run the command again.\n"
    );
    let (window, fanout, rate, srate) = machine
        .map(|m| (m.window, m.fanout, m.latency_rate, m.sustained_rate))
        .unwrap_or((256, 10, 5000.0, 200.0));
    if let Some(m) = machine {
        let _ = writeln!(s, "## Machine and run\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        for (k, v) in [
            ("date (UTC)", m.date.clone()),
            ("command", format!("`{}`", m.command)),
            ("CPU", m.cpu.clone()),
            ("cores", m.cores.to_string()),
            ("kernel", m.kernel.clone()),
            ("memory", m.memory.clone()),
            ("load average at start", m.loadavg_at_start.clone()),
            ("nats-server", m.nats_server.clone()),
            ("mosquitto", m.mosquitto.clone()),
            ("tidings commit", m.tidings_commit.clone()),
            (
                "tidings publishes",
                match m.tidings_publish.as_str() {
                    "stream" => "over its WebSocket publish stream (`GET /v1/publish`): every lane's publish in flight on one connection, each answered on acknowledgement".to_string(),
                    _ => "one `POST /v1/publish` per event, a keep-alive connection per lane".to_string(),
                },
            ),
            (
                "runs",
                format!(
                    "{} (figures are medians over runs; lost/dup are totals over runs)",
                    m.runs
                ),
            ),
            (
                "per measurement",
                format!(
                    "at most {} events or {} s of publishing{}, seed {}",
                    thousands(m.max_events as f64),
                    m.budget_s,
                    match latency_budget(m) {
                        l if l == m.budget_s => String::new(),
                        l => format!(" ({l} s at the offered rate of the latency scenario)"),
                    },
                    m.seed
                ),
            ),
        ] {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "Everything ran on loopback on this one machine, in the same run, the systems taking \
         turns per scenario. Events: seeded stock orders of ≈{} bytes of JSON on \
         `/stocks/{{exchange}}/{{symbol}}` (256 topics; NATS subject `stocks.x.y`, MQTT topic \
         `stocks/x/y`), the same bytes for every system. Lost = published (publish call returned \
         without error) but never delivered within the grace period; dup = deliveries beyond the \
         first of the same event to the same subscriber.\n",
        thousands(median(records.iter().map(|r| r.body_bytes)))
    );

    // Headline table.
    let _ = writeln!(s, "## Summary\n");
    let _ = writeln!(
        s,
        "| system | 1→1 delivered/s | 1→{fanout} deliveries/s | p50 / p99 at {} /s offered (reached /s) | p50 / p99 at {} /s | filter: bytes received per useful event | acked publish/s, 1 / {window} outstanding | lost / dup (all scenarios, all runs) |",
        thousands(rate),
        thousands(srate)
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for sys in &systems {
        let rate_of =
            |sc: &str| get(sys, sc).map_or("–".into(), |c| thousands(c.delivered_per_s));
        let lat = |sc: &str, reached: bool| {
            get(sys, sc).map_or("–".into(), |c| {
                if reached {
                    format!(
                        "{} / {} ({})",
                        us(c.p50_us),
                        us(c.p99_us),
                        thousands(c.published_per_s)
                    )
                } else {
                    format!("{} / {}", us(c.p50_us), us(c.p99_us))
                }
            })
        };
        let bytes = get(sys, "filter").map_or("–".into(), |c| thousands(c.bytes_per_useful));
        let acked = match (get(sys, "persist-1"), get(sys, "persist-window")) {
            (Some(a), Some(b)) => format!(
                "{} / {}",
                thousands(a.published_per_s),
                thousands(b.published_per_s)
            ),
            _ => "– (no ack)".into(),
        };
        let (lost, dup, expected) = cells
            .iter()
            .filter(|((x, _), _)| x == sys)
            .fold((0, 0, 0), |(l, d, e), (_, c)| {
                (l + c.lost, d + c.dup, e + c.expected)
            });
        let _ = writeln!(
            s,
            "| {sys} | {} | {} | {} | {} | {bytes} | {acked} | {} / {} of {} |",
            rate_of("throughput"),
            rate_of("fanout"),
            lat("latency", true),
            lat("latency-sustained", false),
            thousands(lost as f64),
            thousands(dup as f64),
            thousands(expected as f64)
        );
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "![throughput per system](results/throughput.svg)\n\n![latency per system](results/latency.svg)\n\n![bytes per useful event](results/filter.svg)\n"
    );

    // Ratios of tidings to each peer.
    for t in ["tidings-3", "tidings-1"] {
        if !systems.iter().any(|x| x == t) {
            continue;
        }
        let peers: Vec<&String> = systems
            .iter()
            .filter(|x| !x.starts_with("tidings"))
            .collect();
        if peers.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "### {t} ÷ each peer (above 1 means {t} is higher: better for rates, worse for latency and bytes)\n"
        );
        let _ = write!(s, "| metric |");
        for p in &peers {
            let _ = write!(s, " {p} |");
        }
        let _ = write!(s, "\n|---|");
        for _ in &peers {
            let _ = write!(s, "---:|");
        }
        s.push('\n');
        let metrics: [Metric; 6] = [
            ("1→1 delivered/s", "throughput", |c| c.delivered_per_s),
            ("fan-out deliveries/s", "fanout", |c| c.delivered_per_s),
            (
                "p50 latency at the sustained rate",
                "latency-sustained",
                |c| c.p50_us,
            ),
            (
                "p99 latency at the sustained rate",
                "latency-sustained",
                |c| c.p99_us,
            ),
            ("bytes per useful event (filter)", "filter", |c| {
                c.bytes_per_useful
            }),
            ("acked publish/s, W outstanding", "persist-window", |c| {
                c.published_per_s
            }),
        ];
        for (label, sc, f) in metrics {
            let _ = write!(s, "| {label} |");
            for p in &peers {
                let cell = match (get(t, sc), get(p, sc)) {
                    (Some(a), Some(b)) if f(b) > 0.0 && f(a).is_finite() && f(b).is_finite() => {
                        ratio(f(a) / f(b))
                    }
                    _ => "–".into(),
                };
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
        s.push('\n');
    }

    // Per scenario.
    let _ = writeln!(s, "## Per scenario\n");
    for (sc, title) in SCENARIOS {
        if !cells.keys().any(|(_, x)| x == sc) {
            continue;
        }
        let _ = writeln!(s, "### {title}\n");
        let secs = machine.map_or((0.0, 0.0), |m| (m.budget_s, latency_budget(m)));
        let _ = writeln!(
            s,
            "{}\n",
            scenario_note(sc, window, fanout, rate, srate, secs)
        );
        let _ = writeln!(
            s,
            "| system | subs | lanes | published/s | delivered/s | p50 | p90 | p99 | lost / dup | unwanted | bytes/useful | server CPU / event | server cores | publish errors | runs |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for sys in &systems {
            let Some(c) = get(sys, sc) else { continue };
            let _ = writeln!(
                s,
                "| {sys} | {} | {} | {} | {} | {} | {} | {} | {} of {} | {} | {} | {} | {} | {} | {}{} |",
                c.subscribers,
                c.lanes,
                thousands(c.published_per_s),
                thousands(c.delivered_per_s),
                us(c.p50_us),
                us(c.p90_us),
                us(c.p99_us),
                loss(c),
                thousands(c.expected as f64),
                thousands(c.unwanted as f64),
                if c.bytes_per_useful.is_finite() {
                    thousands(c.bytes_per_useful)
                } else {
                    "–".into()
                },
                us(c.server_cpu_us),
                cores(c.server_cores),
                thousands(c.publish_errors as f64),
                c.runs,
                if c.failed > 0 {
                    format!(" ({} failed: {})", c.failed, c.errors.join("; "))
                } else {
                    String::new()
                }
            );
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "## What the systems promise (not like for like, on purpose)\n"
    );
    s.push_str(&semantics(machine));
    let _ = runs;
    s
}

fn ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{}×", thousands(r))
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.4}×")
    }
}

/// The latency scenario's publishing budget in seconds (`budget_s` in files from before it had
/// its own).
fn latency_budget(m: &Machine) -> f64 {
    if m.latency_budget_s > 0.0 {
        m.latency_budget_s
    } else {
        m.budget_s
    }
}

/// What a scenario measures, for the paragraph under its heading; `(secs, lsecs)` are the
/// publishing budgets of every scenario and of the latency scenario (0: unknown).
fn scenario_note(
    sc: &str,
    window: usize,
    fanout: usize,
    rate: f64,
    srate: f64,
    (secs, lsecs): (f64, f64),
) -> String {
    match sc {
        "throughput" => format!(
            "One publisher, one subscriber on the wildcard (`stocks.>`, `stocks/#`, `/stocks/**`). Publishing as fast as each system takes it: systems without acknowledgements publish from one lane (the client buffers); acknowledging peers (JetStream, QoS 1) from {window} lanes, one publish awaiting its ack in each; tidings from the number of lanes in the table (`--tidings-lanes`; persist-window shows it at {window} as well). Each lane owns its topics (tidings orders events per author and topic). delivered/s = deliveries ÷ (first publish → last delivery). Latencies on this row are under full load, queueing included."
        ),
        "fanout" => format!(
            "As throughput, with {fanout} subscribers on the wildcard, each its own connection (tidings-3: spread over the 3 nodes; gossipsub: {fanout} subscriber swarms dialing the publisher's). delivered/s counts every subscriber's deliveries."
        ),
        "latency" => format!(
            "Publishing paced at {} events/s{} (event k due at k/rate); latency = delivery − start of that event's publish call. A system that cannot keep up publishes as fast as it can instead: **published/s shows the rate it reached**, and its latency is at that rate, under saturation.{}",
            thousands(rate),
            if lsecs > 0.0 {
                format!(" for {lsecs} s")
            } else {
                String::new()
            },
            if lsecs > secs && secs > 0.0 {
                format!(" It publishes longer than the other scenarios ({secs} s) so that falling behind shows: a backlog that grows by a hundred events a second is a few hundred events after {secs} s, thousands after {lsecs}.")
            } else {
                String::new()
            }
        ),
        "latency-sustained" => format!(
            "As above at {} events/s, a rate every system here sustains, so the latencies compare like for like.",
            thousands(srate)
        ),
        "filter" => "The subscriber wants `price < 10 and order = \"buy\"` (≈5% of events). tidings evaluates it in the network (`/stocks/** where price < 10 and order = \"buy\"`); the peers cannot filter on content, so their subscriber takes every event and parses and tests each body itself. bytes/useful = bytes the subscriber's TCP connection received (counted by a loopback proxy, protocol framing included) ÷ useful events delivered; delivered/s counts useful events only. unwanted = deliveries that fail the filter (must be 0 for tidings).".into(),
        "persist-1" => "Publish-with-acknowledgement, one publish in flight, one subscriber verifying delivery. Only the systems that acknowledge publishes.".into(),
        "persist-window" => format!(
            "As above with {window} publishes in flight for every system, tidings included."
        ),
        _ => String::new(),
    }
}

/// What each system's acknowledgement and delivery mean. JetStream's default sync depends on
/// the nats-server version the run used (from the machine line).
fn semantics(machine: Option<&Machine>) -> String {
    let version = machine.map_or("", |m| m.nats_server.as_str());
    let modern = crate::peers::nats::parse_version(version)
        .is_some_and(|(a, b, _)| (a, b) >= crate::peers::nats::SYNC_ALWAYS_SINCE);
    let default_sync = if modern {
        "it fsyncs the file store every `sync_interval`, 2 minutes by default, not per message, \
         so an acknowledged message can be lost to a power cut or kernel crash"
    } else {
        "this nats-server (before 2.10) has no `sync_interval` and does not fsync per message"
    };
    let ran = if version.is_empty() {
        String::new()
    } else {
        format!(" ({version})")
    };
    format!(
        "\
- **nats**: core publish/subscribe{ran}; nothing acknowledged or stored; a subscriber that falls \
  behind is cut off as a slow consumer and loses messages.
- **jetstream**: a file-stored stream (`stocks.>`), the server's default sync; a publish returns \
  once the server acknowledged it, after writing it to its file store (the page cache): \
  {default_sync}; subscribers read through JetStream ordered consumers.
- **jetstream-sync**: the same with `sync_interval: always` in the server's configuration (the \
  driver checks that `/varz` reports `sync_always: true`): the server fsyncs each write to the \
  stream before it acknowledges, the same durability promise as tidings-1 (one process, fsync \
  before the ack; tidings-3 adds replication to a majority of three, which no NATS row here has).
- **mqtt-qos0 / mqtt-qos1**: mosquitto; QoS 1 publishes return on PUBACK; persistence on for QoS 1, \
  but mosquitto writes its database only at shutdown and every 30 minutes, not before PUBACK; a \
  persistent QoS 1 session queues at most 1,000 messages, then drops.
- **gossipsub**: rust-libp2p 0.57 swarms in the bench process (TCP + Noise + Yamux, signed, strict \
  validation); nothing acknowledged or stored; queues drop when full.
- **tidings-1 / tidings-3**: `tidings node` processes; a publish (a frame on the WebSocket publish \
  stream, or an HTTP request: the run table says which) is answered only once a majority of the root's rendezvous set (1 of 1, 2 of 3) holds the signed event \
  durably (redb commit with fsync; commits are grouped, so one fsync may cover many events, each \
  answered only after it); events stay stored and fetchable by CID; subscriptions (SSE here) are \
  matched in the network, content filters included.
"
    )
}

/// Writes `RESULTS.md` into `bench_dir` and the plots into `bench_dir/results/`.
pub fn write(bench_dir: &Path, jsonl: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    let (machine, records) = parse(&text)?;
    let name = jsonl
        .file_name()
        .and_then(|n| n.to_str())
        .context("results file name")?;
    std::fs::write(
        bench_dir.join("RESULTS.md"),
        markdown(machine.as_ref(), &records, name),
    )?;
    let results = bench_dir.join("results");
    std::fs::create_dir_all(&results)?;
    for (file, svg) in plots(machine.as_ref(), &records) {
        std::fs::write(results.join(file), svg)?;
    }
    Ok(())
}

/// The three charts: throughput, latency, filter bytes.
pub fn plots(machine: Option<&Machine>, records: &[Record]) -> Vec<(&'static str, String)> {
    let cells = aggregate(records);
    let systems = systems_in(&cells);
    let (window, fanout, rate, srate) = machine
        .map(|m| (m.window, m.fanout, m.latency_rate, m.sustained_rate))
        .unwrap_or((256, 10, 5000.0, 200.0));
    let val = |sys: &str, sc: &str, f: fn(&Cell) -> f64| {
        cells
            .get(&(sys.to_string(), sc.to_string()))
            .map(f)
            .filter(|v| v.is_finite())
    };
    let thr_series = [
        "1→1 delivered/s".to_string(),
        format!("1→{fanout} deliveries/s"),
        format!("acked publish/s, {window} outstanding"),
    ];
    let thr: Vec<Vec<Option<f64>>> = systems
        .iter()
        .map(|s| {
            vec![
                val(s, "throughput", |c| c.delivered_per_s),
                val(s, "fanout", |c| c.delivered_per_s),
                val(s, "persist-window", |c| c.published_per_s),
            ]
        })
        .collect();
    let lat_series = [
        format!("p50 at {} /s offered", thousands(rate)),
        format!("p99 at {} /s offered", thousands(rate)),
        format!("p50 at {} /s", thousands(srate)),
        format!("p99 at {} /s", thousands(srate)),
    ];
    let lat: Vec<Vec<Option<f64>>> = systems
        .iter()
        .map(|s| {
            vec![
                val(s, "latency", |c| c.p50_us),
                val(s, "latency", |c| c.p99_us),
                val(s, "latency-sustained", |c| c.p50_us),
                val(s, "latency-sustained", |c| c.p99_us),
            ]
        })
        .collect();
    let filt: Vec<Vec<Option<f64>>> = systems
        .iter()
        .map(|s| vec![val(s, "filter", |c| c.bytes_per_useful)])
        .collect();
    let thr_names: Vec<&str> = thr_series.iter().map(String::as_str).collect();
    let lat_names: Vec<&str> = lat_series.iter().map(String::as_str).collect();
    vec![
        (
            "throughput.svg",
            hbar_log(
                "Throughput (medians; higher is better)",
                "events/s",
                &systems,
                &thr_names,
                &thr,
            ),
        ),
        (
            "latency.svg",
            hbar_log(
                "Publish → delivery latency (medians; lower is better)",
                "µs",
                &systems,
                &lat_names,
                &lat,
            ),
        ),
        (
            "filter.svg",
            hbar_log(
                "Content filter: bytes received per useful event (lower is better)",
                "bytes",
                &systems,
                &["bytes per useful event"],
                &filt,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, scenario: &str, run: u32, rate: f64, lost: usize) -> Record {
        Record {
            bench: "compare".into(),
            system: system.into(),
            scenario: scenario.into(),
            run,
            published: 100,
            expected: 100,
            delivered: 100 - lost,
            lost,
            delivered_per_s: rate,
            published_per_s: rate,
            p50_us: rate / 10.0,
            p90_us: rate / 5.0,
            p99_us: rate / 2.0,
            bytes_per_useful: (scenario == "filter").then_some(rate),
            // 100 events in 2 s of wall time: µs per event = cpu × 10,000, cores = cpu ÷ 2.
            server_cpu_s: (system != "gossipsub").then_some(rate / 100.0),
            wall_s: 2.0,
            ..Default::default()
        }
    }

    #[test]
    fn medians_totals_and_a_page_from_json_lines() -> Result<()> {
        let machine = Machine {
            bench: "compare-machine".into(),
            runs: 3,
            window: 256,
            fanout: 10,
            latency_rate: 5000.0,
            sustained_rate: 200.0,
            ..Default::default()
        };
        let mut lines = vec![serde_json::to_string(&machine)?];
        for (run, r) in [(1, 10.0), (2, 30.0), (3, 20.0)] {
            for sc in ["throughput", "filter", "persist-1", "persist-window"] {
                lines.push(serde_json::to_string(&rec("tidings-3", sc, run, r, 1))?);
            }
            lines.push(serde_json::to_string(&rec(
                "nats",
                "throughput",
                run,
                r * 1000.0,
                0,
            ))?);
            lines.push(serde_json::to_string(&rec(
                "nats",
                "filter",
                run,
                r * 20.0,
                0,
            ))?);
        }
        let mut failed = rec("nats", "throughput", 4, 0.0, 0);
        failed.error = Some("server gone".into());
        lines.push(serde_json::to_string(&failed)?);
        let (m, recs) = parse(&lines.join("\n"))?;
        assert_eq!(m.as_ref(), Some(&machine));
        let cells = aggregate(&recs);
        let t = &cells[&("tidings-3".to_string(), "throughput".to_string())];
        assert_eq!((t.delivered_per_s, t.lost, t.runs), (20.0, 3, 3));
        let n = &cells[&("nats".to_string(), "throughput".to_string())];
        assert_eq!((n.delivered_per_s, n.runs, n.failed), (20_000.0, 4, 1));

        let page = markdown(m.as_ref(), &recs, "x.jsonl");
        assert!(page.contains("| tidings-3 | 20 |"), "{page}");
        // The servers' CPU: tidings-3 throughput's median run used 0.2 s for 100 events in
        // 2 s, 2,000 µs an event on 0.10 cores; a system without it shows `–`.
        assert!(page.contains("| 2,000 µs | 0.10 | 0 | 3 |"), "{page}");
        let mut gossip = rec("gossipsub", "throughput", 1, 5.0, 0);
        gossip.server_cpu_s = None;
        let no_cpu = markdown(None, &[gossip], "g.jsonl");
        assert!(no_cpu.contains("| – | – | 0 | 1 |"), "{no_cpu}");
        assert!(page.contains("| nats | 20,000 |"));
        // tidings-3 ÷ nats: 20 / 20,000 delivered/s, 20 / 400 bytes per useful event.
        assert!(page.contains("| 1→1 delivered/s | 0.0010× |"), "{page}");
        assert!(page.contains("| bytes per useful event (filter) | 0.0500× |"));
        assert!(page.contains("1 failed: server gone"));
        assert!(page.contains("3 / 0 of 300"));
        // What JetStream's default sync means depends on the server the run used.
        assert!(page.contains("**jetstream-sync**: the same with `sync_interval: always`"));
        let mut old = machine.clone();
        old.nats_server = "nats-server: v2.9.10".into();
        assert!(markdown(Some(&old), &recs, "x").contains("before 2.10) has no `sync_interval`"));
        let mut new = machine.clone();
        new.nats_server = "nats-server: v2.15.1".into();
        assert!(markdown(Some(&new), &recs, "x").contains("2 minutes by default"));
        let plots = plots(m.as_ref(), &recs);
        assert_eq!(plots.len(), 3);
        assert!(plots.iter().all(|(_, svg)| svg.contains("tidings-3")));
        Ok(())
    }

    /// The page says how long the latency scenario published: its own budget, or (files from
    /// before it had one) the common one.
    #[test]
    fn the_page_says_how_long_the_latency_scenario_ran() {
        let machine = Machine {
            bench: "compare-machine".into(),
            runs: 1,
            budget_s: 4.0,
            latency_budget_s: 30.0,
            latency_rate: 5000.0,
            max_events: 200_000,
            ..Default::default()
        };
        let recs = [rec("tidings-1", "latency", 1, 5000.0, 0)];
        let page = markdown(Some(&machine), &recs, "x.jsonl");
        assert!(page.contains("paced at 5,000 events/s for 30 s"), "{page}");
        assert!(
            page.contains("longer than the other scenarios (4 s)"),
            "{page}"
        );
        assert!(
            page.contains(
                "or 4 s of publishing (30 s at the offered rate of the latency scenario)"
            ),
            "{page}"
        );
        let old = Machine {
            latency_budget_s: 0.0,
            ..machine
        };
        let page = markdown(Some(&old), &recs, "x.jsonl");
        assert!(page.contains("paced at 5,000 events/s for 4 s"), "{page}");
        assert!(!page.contains("longer than the other scenarios"), "{page}");
    }
}
