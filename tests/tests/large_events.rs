//! Large events through every path that carries events between nodes, with real processes: a
//! burst of 900 KB and 200 KB events mixed with small ones must reach every subscriber (on a
//! peer-role node paused during the burst, and on brokers; WebSocket, SSE and `tidings sub`),
//! a durable subscriber's backlog, a replay with `since`, a broker restarted after missing the
//! burst (replica sync), `tidings fetch` and a CAR export/import; nothing lost, nobody
//! penalised (no `misbehaved` line in any log).
//!
//! Before messages were filled up to a byte budget, a deliver request (up to 256 events) or a
//! backlog page (up to 4,096) of such events was over the 16 MiB every peer refuses: the
//! paused node cut its broker off for ten minutes, and the backlog and the replay never came.
//!
//! Each test prints `large_events: RESULT path=… events=… bytes=… secs=… lost=…` per path.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tidings_tests::{Api, NodeProcess, line_channel, poll, sse_subscribe, tidings_bin};

/// Near the 1 MiB block limit.
const BIG: usize = 900_000;
/// The size.
const MID: usize = 200_000;
/// How long a path may take to bring every event.
const DEADLINE: Duration = Duration::from_secs(45);

/// One test at a time: each moves a few hundred MB between processes on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// A burst: `big` events of [`BIG`] bytes, `mid` of [`MID`] and `small` ones, shuffled
/// (seeded), published by 8 concurrent clients, event `i` to `targets[i % len]` (one topic per
/// publishing node, so each topic is one stream).
struct Burst {
    big: usize,
    mid: usize,
    small: usize,
    seed: u64,
}

/// An acknowledged publish.
#[derive(Debug, Clone)]
struct Published {
    cid: String,
    topic: String,
    seq: u64,
    bytes: usize,
}

impl Burst {
    fn publish(&self, targets: &[(Api, &str)]) -> Result<Vec<Published>> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut sizes: Vec<usize> = std::iter::repeat_n(BIG, self.big)
            .chain(std::iter::repeat_n(MID, self.mid))
            .chain((0..self.small).map(|_| rng.random_range(10..500)))
            .collect();
        for i in (1..sizes.len()).rev() {
            sizes.swap(i, rng.random_range(0..=i));
        }
        let sizes = Arc::new(sizes);
        let targets: Arc<Vec<(Api, String)>> = Arc::new(
            targets
                .iter()
                .map(|(a, t)| (a.clone(), t.to_string()))
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let out = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let (sizes, targets, next, out) =
                    (sizes.clone(), targets.clone(), next.clone(), out.clone());
                std::thread::spawn(move || -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&size) = sizes.get(i) else {
                            return Ok(());
                        };
                        let (api, topic) = &targets[i % targets.len()];
                        let body = json!({"i": i, "burst": true, "pad": "x".repeat(size)});
                        let (s, v) = api.publish(topic, &body)?;
                        ensure!(s == 200, "publish {i} ({size} bytes): {s} {v}");
                        let p = Published {
                            cid: v["cid"].as_str().context("cid")?.to_string(),
                            topic: topic.clone(),
                            seq: v["seq"].as_u64().context("seq")?,
                            bytes: size,
                        };
                        out.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(p);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join()
                .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
        }
        let out = out.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
        ensure!(out.len() == sizes.len());
        Ok(out)
    }
}

/// What one path brought, for the RESULT line.
struct Figures {
    path: String,
    events: usize,
    bytes: usize,
    secs: f64,
    lost: usize,
}

/// Runs each path's check, prints its figures, and fails at the end with every path that did
/// (so a broken build shows all of them, not just the first).
#[derive(Default)]
struct Report {
    failed: Vec<String>,
}

impl Report {
    fn record(&mut self, r: Result<Figures>) {
        match r {
            Ok(f) => {
                eprintln!(
                    "large_events: RESULT path={} events={} bytes={} secs={:.2} lost={}",
                    f.path, f.events, f.bytes, f.secs, f.lost
                );
                if f.lost > 0 {
                    self.failed
                        .push(format!("{}: {} events lost", f.path, f.lost));
                }
            }
            Err(e) => {
                eprintln!("large_events: FAILED {e:#}");
                self.failed.push(format!("{e:#}"));
            }
        }
    }

    /// Also fails if any node logged a penalty, a panic or a message built over the limit.
    fn finish(mut self, nodes: &mut [&mut NodeProcess]) -> Result<()> {
        for n in nodes {
            if let Some(status) = n.exited() {
                self.failed
                    .push(format!("{}: node exited: {status}", n.data.display()));
            }
            let log = n.log();
            for bad in ["misbehaved", "panicked", "over the limit peers enforce"] {
                if let Some(line) = log.lines().find(|l| l.contains(bad)) {
                    self.failed
                        .push(format!("{}: log has {bad:?}: {line}", n.data.display()));
                }
            }
        }
        if !self.failed.is_empty() {
            bail!("{}", self.failed.join("\n"));
        }
        Ok(())
    }
}

/// Reads `feed` until every event of `want` came; fails on an event it should not get, a
/// duplicate, or a stream's `seq` going back. Counts what did not come by `deadline` as lost.
fn check_feed(
    path: &str,
    feed: &mpsc::Receiver<String>,
    want: &[Published],
    started: Instant,
    deadline: Instant,
) -> Result<Figures> {
    let wanted: HashMap<&str, &Published> = want.iter().map(|p| (p.cid.as_str(), p)).collect();
    let mut got = HashSet::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = feed.recv_timeout(left) else {
            break;
        };
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{path}: not an event: {:.200}", line))?;
        let (cid, topic, seq) = (
            v["cid"].as_str().context("cid")?,
            v["topic"].as_str().context("topic")?.to_string(),
            v["seq"].as_u64().context("seq")?,
        );
        ensure!(wanted.contains_key(cid), "{path}: unexpected event {cid}");
        ensure!(got.insert(cid.to_string()), "{path}: {cid} came twice");
        let last = last_seq.entry(topic.clone()).or_insert(0);
        ensure!(
            seq > *last,
            "{path}: {topic} seq {seq} after {last}: out of order"
        );
        *last = seq;
    }
    Ok(Figures {
        path: path.to_string(),
        events: got.len(),
        bytes: want
            .iter()
            .filter(|p| got.contains(&p.cid))
            .map(|p| p.bytes)
            .sum(),
        secs: started.elapsed().as_secs_f64(),
        lost: want.len() - got.len(),
    })
}

/// A WebSocket subscription (durable if named) whose events (text frames, each acknowledged)
/// arrive on a channel; the socket to shut down.
fn ws_feed(
    api: &str,
    filter: &str,
    durable: Option<&str>,
) -> Result<(std::net::TcpStream, mpsc::Receiver<String>)> {
    let mut q = vec![("filter", filter)];
    q.extend(durable.map(|d| ("durable", d)));
    let url = reqwest::Url::parse_with_params(&format!("{api}/v1/subscribe"), &q)?;
    let ws_url = url.as_str().replacen("http://", "ws://", 1);
    let (mut ws, _) = tungstenite::connect(ws_url.as_str()).context("websocket connect")?;
    let sock = match ws.get_mut() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s.try_clone()?,
        _ => bail!("not a plain socket"),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(msg) = ws.read() {
            if let tungstenite::Message::Text(t) = msg {
                let cid = serde_json::from_str::<Value>(t.as_str())
                    .ok()
                    .and_then(|v| v["cid"].as_str().map(str::to_string));
                if let Some(cid) = cid {
                    let _ = ws.send(tungstenite::Message::text(json!({"ack": cid}).to_string()));
                }
                if tx.send(t.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    Ok((sock, rx))
}

fn sse_feed(
    api: &str,
    params: &[(&str, &str)],
) -> Result<(std::net::TcpStream, mpsc::Receiver<String>)> {
    let url = reqwest::Url::parse_with_params(&format!("{api}/v1/subscribe"), params)?;
    sse_subscribe(&url)
}

/// `tidings sub FILTER` against `api`, its stdout lines on a channel.
fn cli_feed(api: &str, filter: &str) -> Result<(Child, mpsc::Receiver<String>)> {
    let mut child = Command::new(tidings_bin())
        .args(["sub", filter, "--api", api])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let rx = line_channel(child.stdout.take().context("stdout")?);
    Ok((child, rx))
}

fn start_broker(dir: &std::path::Path, name: &str, boot: Option<&str>) -> Result<NodeProcess> {
    let mut args = vec!["--replication", "3"];
    args.extend(boot.map(|b| ["--bootstrap", b]).iter().flatten());
    NodeProcess::start(&dir.join(name), &args)
}

fn start_peer(dir: &std::path::Path, name: &str, boot: &str) -> Result<NodeProcess> {
    NodeProcess::start(
        &dir.join(name),
        &["--replication", "3", "--role", "peer", "--bootstrap", boot],
    )
}

fn wait_brokers(nodes: &[&NodeProcess], n: u64) -> Result<()> {
    for node in nodes {
        poll(Duration::from_secs(60), || {
            (node.status().ok()?["brokers"].as_u64()? == n).then_some(())
        })
        .with_context(|| format!("{} never learnt all {n} brokers", node.api))?;
    }
    Ok(())
}

fn stat(node: &NodeProcess, key: &str) -> Option<u64> {
    node.status().ok()?[key].as_u64()
}

fn blocks(node: &NodeProcess) -> Option<u64> {
    node.status().ok()?["store"]["blocks"].as_u64()
}

fn of_topic<'a>(all: &'a [Published], topic: &str) -> Vec<&'a Published> {
    let mut v: Vec<&Published> = all.iter().filter(|p| p.topic == topic).collect();
    v.sort_by_key(|p| p.seq);
    v
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The reproducer: a subscriber's peer-role node is paused (SIGSTOP) while a burst of
/// large events is published to the brokers, so their queues for it back up, then resumed.
/// Every subscriber (WebSocket, SSE and `tidings sub` on the paused node; WebSocket and SSE on
/// the brokers) must get every event, in order per stream, and no node may penalise another.
#[test]
fn a_burst_of_large_events_reaches_a_paused_peer_node_and_the_brokers() -> Result<()> {
    let _heavy = tidings_tests::one_heavy_test_at_a_time();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let mut b0 = start_broker(dir.path(), "b0", None)?;
    let boot = b0.p2p_addr()?;
    let mut b1 = start_broker(dir.path(), "b1", Some(&boot))?;
    let mut p = start_peer(dir.path(), "p", &boot)?;
    wait_brokers(&[&b0, &b1, &p], 2)?;

    let mut feeds = Vec::new();
    let mut sockets = Vec::new();
    let (s, rx) = ws_feed(&p.api, "/big/**", None)?;
    sockets.push(s);
    feeds.push(("peer websocket", rx));
    let (s, rx) = sse_feed(&p.api, &[("filter", "/big/** where burst = true")])?;
    sockets.push(s);
    feeds.push(("peer sse", rx));
    let (mut cli, rx) = cli_feed(&p.api, "/big/**")?;
    feeds.push(("peer tidings sub", rx));
    let (s, rx) = ws_feed(&b1.api, "/big/**", None)?;
    sockets.push(s);
    feeds.push(("broker websocket", rx));
    let (s, rx) = sse_feed(&b1.api, &[("filter", "/big/**")])?;
    sockets.push(s);
    feeds.push(("broker sse", rx));
    let (s, rx) = sse_feed(&b0.api, &[("filter", "/big/**")])?;
    sockets.push(s);
    feeds.push(("other broker sse", rx));
    // Every subscription leased on both brokers.
    for b in [&b0, &b1] {
        poll(Duration::from_secs(30), || {
            (stat(b, "leases")? >= feeds.len() as u64).then_some(())
        })
        .with_context(|| format!("leases never all reached {}", b.api))?;
    }

    p.signal(libc::SIGSTOP)?;
    let started = Instant::now();
    let burst = Burst {
        big: 20,
        mid: 30,
        small: 50,
        seed: 0x1a26e,
    }
    .publish(&[(b0.api(), "/big/a"), (b1.api(), "/big/b")]);
    p.signal(libc::SIGCONT)?;
    let published = burst?;
    let total: usize = published.iter().map(|p| p.bytes).sum();
    eprintln!(
        "large_events: burst of {} events ({total} bytes of bodies) acknowledged in {:.2} s while the peer node was paused",
        published.len(),
        started.elapsed().as_secs_f64()
    );

    let mut report = Report::default();
    let deadline = Instant::now() + DEADLINE;
    for (path, rx) in &feeds {
        report.record(check_feed(path, rx, &published, started, deadline));
    }
    let _ = cli.kill();
    let _ = cli.wait();
    for s in sockets {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    report.finish(&mut [&mut b0, &mut b1, &mut p])
}

/// The paths that read stored events: a durable subscriber away during a burst of large
/// events and back (backlog pages), a replay with `since`, a broker killed before the burst
/// and restarted (replica sync: tips, then chain fetches), `tidings fetch` from a new node, and
/// a CAR export imported into it.
#[test]
fn large_events_in_backlogs_replays_replica_sync_fetch_and_car() -> Result<()> {
    let _heavy = tidings_tests::one_heavy_test_at_a_time();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let mut b0 = start_broker(dir.path(), "b0", None)?;
    let boot = b0.p2p_addr()?;
    let mut b1 = start_broker(dir.path(), "b1", Some(&boot))?;
    let mut b2 = start_broker(dir.path(), "b2", Some(&boot))?;
    let mut p = start_peer(dir.path(), "p", &boot)?;
    wait_brokers(&[&b0, &b1, &b2, &p], 3)?;

    // The durable subscriber opens its subscription, then goes away.
    let (s, _) = ws_feed(&p.api, "/big/**", Some("away"))?;
    let _ = s.shutdown(std::net::Shutdown::Both);
    poll(Duration::from_secs(20), || {
        (stat(&p, "subscriptions")? == 0).then_some(())
    })
    .context("the durable subscriber never left")?;
    // A broker misses the burst.
    b2.kill();

    let since = now_ms();
    let published = Burst {
        big: 20,
        mid: 20,
        small: 40,
        seed: 0x1a26f,
    }
    .publish(&[(b0.api(), "/big/a"), (b1.api(), "/big/b")])?;
    let total: usize = published.iter().map(|p| p.bytes).sum();
    eprintln!(
        "large_events: burst of {} events ({total} bytes of bodies) while a broker was down and the durable subscriber away",
        published.len()
    );
    let mut report = Report::default();

    // Back: the backlog, in pages, then live.
    let started = Instant::now();
    report.record((|| {
        let (s, rx) = ws_feed(&p.api, "/big/**", Some("away")).context("durable backlog")?;
        let f = check_feed(
            "durable backlog",
            &rx,
            &published,
            started,
            started + DEADLINE,
        );
        let _ = s.shutdown(std::net::Shutdown::Both);
        f
    })());

    let started = Instant::now();
    let since_s = since.to_string();
    report.record((|| {
        let params = [
            ("filter", "/big/** where burst = true"),
            ("since", &since_s),
        ];
        let (s, rx) = sse_feed(&p.api, &params).context("replay since")?;
        let f = check_feed("replay since", &rx, &published, started, started + DEADLINE);
        let _ = s.shutdown(std::net::Shutdown::Both);
        f
    })());

    // The broker comes back and catches up with the other members.
    let started = Instant::now();
    b2 = start_broker(dir.path(), "b2", Some(&boot))?;
    report.record((|| {
        let want = blocks(&b0).context("b0 block count")?;
        let synced = poll(DEADLINE, || {
            let heads_equal = ["/big/a", "/big/b"]
                .iter()
                .all(|t| b2.api().heads(t).ok() == b0.api().heads(t).ok());
            (heads_equal && blocks(&b2)? == want).then_some(())
        });
        // b2 held nothing before the burst: what it holds now is what it pulled of it.
        let held = blocks(&b2).unwrap_or(0) as usize;
        Ok(Figures {
            path: "replica sync after a restart".into(),
            events: held,
            bytes: total,
            secs: started.elapsed().as_secs_f64(),
            lost: if synced.is_some() {
                0
            } else {
                published.len().saturating_sub(held).max(1)
            },
        })
    })());

    // A new node fetches one stream from the network, and imports the other from a CAR file.
    let mut f = start_peer(dir.path(), "f", &boot)?;
    wait_brokers(&[&f], 3)?;
    let a = of_topic(&published, "/big/a");
    let started = Instant::now();
    report.record((|| {
        let head = &a.last().context("no /big/a events")?.cid;
        let out = Command::new(tidings_bin())
            .args(["fetch", head, "--json", "--api", &f.api])
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "tidings fetch failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_str(&stdout).context("summary JSON")?;
        ensure!(summary["complete"] == true, "{summary}");
        let verified = summary["verified"].as_u64().unwrap_or(0) as usize;
        for e in &a {
            let r = f
                .api()
                .request(reqwest::Method::GET, &format!("/v1/blocks/{}", e.cid))
                .send()?;
            ensure!(r.status() == 200, "the fetched stream lacks {}", e.cid);
        }
        Ok(Figures {
            path: "tidings fetch".into(),
            events: verified,
            bytes: a.iter().map(|e| e.bytes).sum(),
            secs: started.elapsed().as_secs_f64(),
            lost: a.len().saturating_sub(verified),
        })
    })());

    let b = of_topic(&published, "/big/b");
    let started = Instant::now();
    report.record((|| {
        let car = b1
            .api()
            .request(reqwest::Method::GET, "/v1/car")
            .query(&[("topic", "/big/b")])
            .send()?
            .bytes()?
            .to_vec();
        let car_bytes = car.len();
        let (s, v) = f.api().post_bytes("/v1/car", car)?;
        ensure!(s == 200, "import: {s} {v}");
        let events = v["events"].as_u64().unwrap_or(0) as usize;
        ensure!(
            f.api().heads("/big/b")? == b1.api().heads("/big/b")?,
            "heads differ after the import"
        );
        Ok(Figures {
            path: "CAR export/import".into(),
            events,
            bytes: car_bytes,
            secs: started.elapsed().as_secs_f64(),
            lost: b.len().saturating_sub(events),
        })
    })());

    report.finish(&mut [&mut b0, &mut b1, &mut b2, &mut p, &mut f])
}
