//! Primary failover with real node processes: subscribers on the broker that becomes a topic's
//! primary, and on a peer-role node, get every acknowledged event, in order, once, when the old
//! primary is SIGKILLed after acknowledging an event and before its delivery arrived.
//!
//! Three brokers A, B, C (K = 3) and a peer P. The topic's publish order names them: B is its
//! primary, C the next: when B dies, C routes the topic itself and hands events to its own
//! subscribers. (Which orders a set of three can take depends on the peer ids, so the names are
//! given after start: B, C, A in the first topic's order, and the second topic has the same.)
//! A, C and P run with the test-only fault `TIDINGS_TEST_DROP_DELIVERIES_SEQ_MOD=3` (and `_ONCE=1`):
//! the first delivery of every event whose seq is a multiple of 3 is lost on the way, the way B's
//! dying would lose it. Each has a subscriber: P (a peer), A (a broker of the set) and C (the next primary).
//!
//! 1. A gap revealed by a later event: seq 1–3 through A (B primary; C and P lose 3), SIGKILL B,
//!    seq 4–5 through A (C primary). Every subscriber gets 1–5 in order: C repairs seq 3 from its
//!    own store (B replicated it there before acknowledging), A and P from C.
//! 2. A lost tail nothing later reveals: seq 1–3 on a second topic, SIGKILL B, nothing more
//!    published. C, the new primary, routes the newest event of each stream it took over again,
//!    so every subscriber gets seq 3.
//!
//! Both failed before the fix (C delivered [1, 2, 4, 5] and logged "gap in stream left
//! unrepaired"; nobody ever delivered the tail).

use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use libp2p::PeerId;
use serde_json::{Value, json};
use tidings_node::net::rendezvous;
use tidings_tests::{NodeProcess, poll, sse_subscribe, ws_durable};

const FAULT: [(&str, &str); 2] = [
    ("TIDINGS_TEST_DROP_DELIVERIES_SEQ_MOD", "3"),
    ("TIDINGS_TEST_DROP_DELIVERIES_ONCE", "1"),
];
const FILTER: &str = "/orders/**";
/// How long an event may take to arrive: covers noticing B is gone (a replica-sync round of 1 s
/// fails to reach it) and the takeover in the round after.
const ARRIVAL: Duration = Duration::from_secs(30);

/// What a subscriber printed: (topic, seq, cid).
type Got = (String, u64, String);

#[test]
fn subscribers_on_the_new_primary_and_on_a_peer_get_what_the_killed_primary_acknowledged()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let result = run(dir.path());
    if result.is_err() {
        // The nodes' own account of what they routed, dropped and repaired.
        for entry in std::fs::read_dir(dir.path())?.flatten() {
            let log = std::fs::read_to_string(entry.path().join("node.log")).unwrap_or_default();
            eprintln!("--- {}", entry.path().display());
            for line in log.lines().filter(|l| !l.contains("DEBUG")) {
                eprintln!("{line}");
            }
        }
    }
    result
}

fn run(dir: &std::path::Path) -> Result<()> {
    let args = ["--replication", "3", "--sync-interval", "1s"];
    let n0 = NodeProcess::start_with_env(&dir.join("n0"), &args, &FAULT)?;
    let boot = n0.p2p_addr()?;
    let with_boot = |role: &'static str| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--bootstrap".into(),
            boot.clone(),
            "--role".into(),
            role.into(),
        ]);
        v
    };
    let broker_args = with_boot("broker");
    let broker_args: Vec<&str> = broker_args.iter().map(String::as_str).collect();
    let mut brokers = vec![n0];
    for i in 1..3 {
        let data = dir.join(format!("n{i}"));
        brokers.push(NodeProcess::start_with_env(&data, &broker_args, &FAULT)?);
    }
    let p_args = with_boot("peer");
    let p_args: Vec<&str> = p_args.iter().map(String::as_str).collect();
    let p = NodeProcess::start_with_env(&dir.join("p"), &p_args, &FAULT)?;
    for n in brokers.iter().chain([&p]) {
        wait_brokers(n, 3)?;
    }
    let mut ids = Vec::new();
    for n in &brokers {
        let s = n.status()?;
        ids.push(PeerId::from_str(s["peer_id"].as_str().context("peer_id")?)?);
    }
    let first = "/orders/gap".to_string();
    let order = rendezvous::publish_order(&ids, &first);
    let second = (0..10_000)
        .map(|i| format!("/orders/tail{i}"))
        .find(|t| rendezvous::publish_order(&ids, t) == order)
        .context("no second topic with the first one's publish order")?;
    let place = |o: usize| ids.iter().position(|i| *i == order[o]).context("order");
    let (ib, ic, ia) = (place(0)?, place(1)?, place(2)?);
    let b_data = brokers[ib].data.clone();
    let mut b = brokers.remove(ib);
    let b_listen = b_listen_addr(&b)?;
    // `brokers` now holds A and C only.
    let (a, c) = if ia < ic {
        let c = brokers.remove(1);
        (brokers.remove(0), c)
    } else {
        let a = brokers.remove(1);
        (a, brokers.remove(0))
    };

    // A durable subscriber on C that acknowledges every event, and plain ones on A and P.
    let on_c = durable_reader(&c.api, "orders")?;
    let (_sock_a, on_a) = sse(&a)?;
    let (_sock_p, on_p) = sse(&p)?;
    for n in [&a, &b, &c] {
        poll(Duration::from_secs(20), || {
            (n.status().ok()?["leases"].as_u64()? >= 3).then_some(())
        })
        .with_context(|| format!("the 3 leases never reached {}", n.api))?;
    }

    // 1. B acknowledges seq 1-3 and dies; C and P lost seq 3 on the way.
    let mut want = publish(&a, &first, 1..=3)?;
    expect(&on_c, &want[..2], "C's durable subscriber, before the kill")?;
    expect_sse(&on_a, &want[..2], "A's subscriber, before the kill")?;
    expect_sse(&on_p, &want[..2], "P's subscriber, before the kill")?;
    lost_on_the_way(&[&a, &c, &p], &want[2])?;
    // A stored its events before handing them to B, so B counted A's copies and replicated
    // to C alone: C stored all three, A none.
    poll(Duration::from_secs(20), || {
        (c.api().metric("tidings_replicas_stored_total")? >= 3).then_some(())
    })
    .context("B's replicas never reached C")?;
    ensure!(
        a.api().metric("tidings_replicas_stored_total") == Some(0),
        "B sent the author's node A its own events back: A stored {:?} replicas",
        a.api().metric("tidings_replicas_stored_total")
    );
    // B's deliveries of A's own events find them already held: taken without a store write.
    let held = a.api().metric("tidings_deliveries_already_held_total");
    ensure!(
        held.is_some_and(|n| n >= 2),
        "A wrote again the events it delivered to itself through B: {held:?} already held"
    );
    b.kill();
    want.extend(publish(&a, &first, 4..=5)?);
    expect(
        &on_c,
        &want[2..],
        "C's durable subscriber, after C took over",
    )?;
    expect_sse(&on_a, &want[2..], "A's subscriber, after C took over")?;
    expect_sse(&on_p, &want[2..], "P's subscriber, after C took over")?;
    ensure!(
        !c.log().contains("gap in stream left unrepaired"),
        "C left a gap unrepaired:\n{}",
        c.log()
    );

    // 2. B back, primary again; it acknowledges seq 1-3 of another topic and dies. Nothing
    // else is published there: only the new primary can bring seq 3.
    let mut b_args: Vec<&str> = broker_args.clone();
    b_args.extend(["--listen", b_listen.as_str()]);
    b = NodeProcess::start_with_env(&b_data, &b_args, &FAULT)?;
    for n in [&a, &b, &c, &p] {
        wait_brokers(n, 3)?;
    }
    poll(Duration::from_secs(30), || {
        (b.status().ok()?["leases"].as_u64()? >= 3).then_some(())
    })
    .context("the leases never reached the restarted B")?;
    let tail = publish(&a, &second, 1..=3)?;
    expect(&on_c, &tail[..2], "C's durable subscriber, second topic")?;
    expect_sse(&on_a, &tail[..2], "A's subscriber, second topic")?;
    expect_sse(&on_p, &tail[..2], "P's subscriber, second topic")?;
    lost_on_the_way(&[&a, &c, &p], &tail[2])?;
    b.kill();
    expect(&on_c, &tail[2..], "C's durable subscriber, the lost tail")?;
    expect_sse(&on_a, &tail[2..], "A's subscriber, the lost tail")?;
    expect_sse(&on_p, &tail[2..], "P's subscriber, the lost tail")?;

    // Nothing was delivered twice or out of turn (B's restart made it route the first topic's
    // newest event again): a sentinel published last, on a topic of its own, arrives next.
    let sentinel = publish_one(&a, "/orders/sentinel", json!({"sentinel": true}))?;
    let one = std::slice::from_ref(&sentinel);
    expect(&on_c, one, "C's durable subscriber, sentinel")?;
    expect_sse(&on_a, one, "A's subscriber, sentinel")?;
    expect_sse(&on_p, one, "P's subscriber, sentinel")?;
    Ok(())
}

/// A plain SSE subscriber to [`FILTER`] on `n`.
fn sse(n: &NodeProcess) -> Result<(std::net::TcpStream, mpsc::Receiver<String>)> {
    let url =
        reqwest::Url::parse_with_params(&format!("{}/v1/subscribe", n.api), &[("filter", FILTER)])?;
    sse_subscribe(&url)
}

/// Waits until B's delivery of `event` reached each of `nodes` and was dropped by the fault: so
/// B is killed with that delivery lost, not merely late.
fn lost_on_the_way(nodes: &[&NodeProcess], event: &Got) -> Result<()> {
    for n in nodes {
        poll(ARRIVAL, || {
            n.log()
                .lines()
                .any(|l| l.contains("delivery dropped on arrival") && l.contains(&event.2))
                .then_some(())
        })
        .with_context(|| {
            format!(
                "{} never got (and dropped) seq {} of {}",
                n.api, event.1, event.0
            )
        })?;
    }
    Ok(())
}

/// Waits until `n` knows `count` brokers.
fn wait_brokers(n: &NodeProcess, count: u64) -> Result<()> {
    poll(Duration::from_secs(60), || {
        (n.status().ok()?["brokers"].as_u64()? == count).then_some(())
    })
    .with_context(|| format!("{} never learnt {count} brokers", n.api))
}

/// B's libp2p listen address without its `/p2p/` part, to restart it on the same port.
fn b_listen_addr(b: &NodeProcess) -> Result<String> {
    let l = b.p2p_addr()?;
    Ok(l.split("/p2p/").next().unwrap_or(&l).to_string())
}

/// Publishes `{"i": i}` for each `i` to `topic` through `node`; the (topic, seq, cid) of each.
fn publish(
    node: &NodeProcess,
    topic: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Vec<Got>> {
    range
        .map(|i| publish_one(node, topic, json!({ "i": i })))
        .collect()
}

fn publish_one(node: &NodeProcess, topic: &str, body: Value) -> Result<Got> {
    let (s, v) = node.api().publish(topic, &body)?;
    ensure!(s == 200, "publish {body} to {topic}: {s} {v}");
    Ok((
        topic.to_string(),
        v["seq"].as_u64().context("seq")?,
        v["cid"].as_str().context("cid")?.to_string(),
    ))
}

/// A durable WebSocket subscriber on `api` that acknowledges each event; what it gets.
fn durable_reader(api: &str, name: &str) -> Result<mpsc::Receiver<Got>> {
    let mut ws = ws_durable(api, FILTER, name, Duration::from_secs(120))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(msg) = ws.read() {
            let tungstenite::Message::Text(t) = msg else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                return;
            };
            let cid = v["cid"].as_str().unwrap_or_default().to_string();
            let ack = json!({ "ack": cid }).to_string();
            let got = (
                v["topic"].as_str().unwrap_or_default().to_string(),
                v["seq"].as_u64().unwrap_or(0),
                cid,
            );
            if tx.send(got).is_err() || ws.send(tungstenite::Message::text(ack)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// The next events from `rx` must be exactly `want`, in order.
fn expect(rx: &mpsc::Receiver<Got>, want: &[Got], who: &str) -> Result<()> {
    let deadline = Instant::now() + ARRIVAL;
    for w in want {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = rx
            .recv_timeout(left)
            .with_context(|| format!("{who}: waited for seq {} of {}", w.1, w.0))?;
        if got != *w {
            bail!(
                "{who}: got seq {} of {} where seq {} of {} was due",
                got.1,
                got.0,
                w.1,
                w.0
            );
        }
    }
    Ok(())
}

/// [`expect`] for an SSE subscriber's `data:` lines.
fn expect_sse(rx: &mpsc::Receiver<String>, want: &[Got], who: &str) -> Result<()> {
    let deadline = Instant::now() + ARRIVAL;
    for w in want {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .with_context(|| format!("{who}: waited for seq {} of {}", w.1, w.0))?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("{who}: {line}"))?;
        let got = (
            v["topic"].as_str().unwrap_or_default().to_string(),
            v["seq"].as_u64().unwrap_or(0),
            v["cid"].as_str().unwrap_or_default().to_string(),
        );
        if got != *w {
            bail!(
                "{who}: got seq {} of {} where seq {} of {} was due",
                got.1,
                got.0,
                w.1,
                w.0
            );
        }
    }
    Ok(())
}
