//! History (docs/protocols.md) with real node processes: fetch of a long stream from another node, gap
//! repair after dropped deliveries, replay with no gap or duplicate at the seam, and durable
//! subscriptions that get what they missed.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tidings_tests::{NodeProcess, Ws, poll, signed_stream_car, tidings_bin};

/// Events in the fetched stream (the figure: a 100k-event stream).
fn fetch_events() -> u64 {
    std::env::var("TIDINGS_FETCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
fn fetch_pulls_and_verifies_a_long_stream_from_another_node() -> Result<()> {
    let n = fetch_events();
    let dir = tempfile::tempdir()?;
    let a = NodeProcess::start(&dir.path().join("a"), &[])?;
    let (car, cids) = signed_stream_car(7, "/docs/history", n)?;
    let (status, v) = a.api().post_bytes("/v1/car", car)?;
    ensure!(status == 200, "import: {status} {v}");
    let b = NodeProcess::start(&dir.path().join("b"), &["--bootstrap", &a.p2p_addr()?])?;
    poll(Duration::from_secs(20), || {
        (b.status().ok()?["peers"].as_u64()? >= 1).then_some(())
    })
    .context("b never connected to a")?;
    let head = cids.last().context("empty stream")?;
    let (s, _) = b.api().get_json(&format!("/v1/events/{head}"))?;
    ensure!(s == 404, "b must not hold the stream before the fetch");

    let out = Command::new(tidings_bin())
        .args(["fetch", head, "--json", "--api", &b.api])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "tidings fetch failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout).context("summary JSON")?;
    eprintln!("fetch summary: {summary}");
    ensure!(summary["complete"] == true, "{summary}");
    ensure!(summary["blocks"].as_u64() == Some(n), "{summary}");
    ensure!(summary["verified"].as_u64() == Some(n), "{summary}");
    ensure!(summary["new_blocks"].as_u64() == Some(n), "{summary}");
    ensure!(summary["missing"].as_array().is_some_and(|m| m.is_empty()));
    // Every event is now on b, the first and the last readable, and the store counts them.
    ensure!(b.api().event(&cids[0])?["seq"] == 1);
    ensure!(b.api().event(head)?["seq"].as_u64() == Some(n));
    ensure!(b.status()?["store"]["blocks"].as_u64() == Some(n));

    // Fetching again is a no-op: everything is held.
    let again = Command::new(tidings_bin())
        .args(["fetch", head, "--api", &b.api])
        .output()?;
    let text = String::from_utf8_lossy(&again.stdout);
    ensure!(again.status.success(), "{text}");
    ensure!(
        text.contains("fetched 0 blocks") && text.contains(&format!("{n} held already")),
        "{text}"
    );

    // A CID nobody has: incomplete, exit 1, and the summary says what is missing.
    let (_, other) = signed_stream_car(8, "/docs/elsewhere", 1)?;
    let missing = Command::new(tidings_bin())
        .args(["fetch", &other[0], "--api", &b.api])
        .output()?;
    ensure!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    ensure!(err.contains("history incomplete"), "{err}");
    Ok(())
}

#[test]
fn dropped_deliveries_are_repaired_from_the_dag_in_order() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // b loses every delivery of an event whose seq is a multiple of 5, as if the network ate it.
    let (a, b) = broker_and_lossy_peer(dir.path(), ("TIDINGS_TEST_DROP_DELIVERIES_SEQ_MOD", "5"))?;
    // A third do not match the filter at all.
    sse_gets_in_order(&a, &b, "/gap", 1..=203, 3, "gap subscriber")?;
    let metrics = reqwest::blocking::get(format!("{}/metrics", b.api))?.text()?;
    let repaired = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tidings_events_repaired_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .context("metric")?;
    // 27 matching events had seq divisible by 5 (and 13 more non-matching ones were fetched too).
    ensure!(
        repaired >= 27,
        "only {repaired} events repaired:\n{metrics}"
    );
    ensure!(b.log().contains("gap repaired"), "b's log should say so");
    Ok(())
}

#[test]
fn a_durable_whose_first_deliveries_of_a_stream_were_lost_gets_them_repaired() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // b loses the deliveries of seq 1-9: the first it gets names seq 9 as the previous event
    // meant for it, and nothing of the stream was seen before.
    let (a, b) =
        broker_and_lossy_peer(dir.path(), ("TIDINGS_TEST_DROP_DELIVERIES_SEQ_BELOW", "10"))?;
    let mut ws = ws_connect(&b.api, "/first/** where keep = true", "f1")?;
    wait_lease(&a)?;
    let want = publish_range(&a.api(), "/first/x", 1..=30, 4)?;
    // Acknowledgements are cumulative per stream: an event missed below an acknowledged one
    // would never come back from the backlog, so the repair must reach back to seq 1.
    let got = ws_take(&mut ws, want.len())?;
    same_order(&got, &want, "durable subscriber")?;
    ws_until_sentinel(&mut ws, &a.api(), "/first/x")?;
    ensure!(b.log().contains("gap repaired"), "b's log should say so");
    Ok(())
}

#[test]
fn a_live_subscriber_whose_first_deliveries_of_a_stream_were_lost_gets_them_repaired() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    // b loses the deliveries of seq 1-9 (as when a batch is given up, or when they are still on
    // their way from another member while a later event arrives): the first it gets names seq 9
    // as the previous event meant for it, and nothing of the stream was seen before. Its live
    // subscriber began before seq 1, so it is owed the stream from there, not from seq 9.
    let (a, b) =
        broker_and_lossy_peer(dir.path(), ("TIDINGS_TEST_DROP_DELIVERIES_SEQ_BELOW", "10"))?;
    sse_gets_in_order(&a, &b, "/firstlive", 1..=30, 4, "live subscriber")?;
    ensure!(b.log().contains("gap repaired"), "b's log should say so");
    Ok(())
}

/// Three brokers (K = 3) and a peer-role node, all knowing every broker.
fn three_brokers_and_a_peer(dir: &std::path::Path) -> Result<Vec<NodeProcess>> {
    let b0 = NodeProcess::start(&dir.join("b0"), &["--replication", "3"])?;
    let boot = b0.p2p_addr()?;
    let mut nodes = vec![b0];
    for i in 1..3 {
        nodes.push(NodeProcess::start(
            &dir.join(format!("b{i}")),
            &["--replication", "3", "--bootstrap", &boot],
        )?);
    }
    nodes.push(NodeProcess::start(
        &dir.join("peer"),
        &["--replication", "3", "--bootstrap", &boot, "--role", "peer"],
    )?);
    for n in &nodes {
        poll(Duration::from_secs(60), || {
            (n.status().ok()?["brokers"].as_u64()? == 3).then_some(())
        })
        .with_context(|| format!("{} never learnt all 3 brokers", n.api))?;
    }
    Ok(nodes)
}

fn ws_connect(api: &str, filter: &str, durable: &str) -> Result<Ws> {
    tidings_tests::ws_durable(api, filter, durable, Duration::from_secs(60))
}

/// How long a subscriber waits for what it expects. The socket's read timeout alone would never
/// end the wait: the node pings every 15 s, and each ping is something read.
const WAIT: Duration = Duration::from_secs(60);

/// Reads `n` events, acknowledging each; returns their CIDs.
fn ws_take(ws: &mut Ws, n: usize) -> Result<Vec<String>> {
    let deadline = std::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        ensure!(
            std::time::Instant::now() < deadline,
            "got {} of {n} events within {WAIT:?}",
            got.len()
        );
        let msg = ws
            .read()
            .with_context(|| format!("got {} of {n} events", got.len()))?;
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str())?;
            let cid = v["cid"].as_str().context("cid")?.to_string();
            ws.send(tungstenite::Message::text(
                serde_json::json!({ "ack": cid }).to_string(),
            ))?;
            got.push(cid);
        }
    }
    Ok(got)
}

/// Publishes a sentinel (matching `keep = true`) on `topic`, the stream the subscriber follows,
/// and reads until it arrives: any other event before it is an extra or a duplicate, and a
/// read error (a closed or timed-out socket) is a failure, not silence.
fn ws_until_sentinel(ws: &mut Ws, api: &tidings_tests::Api, topic: &str) -> Result<()> {
    let sentinel = sentinel(api, topic)?;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        ensure!(
            std::time::Instant::now() < deadline,
            "no sentinel within {WAIT:?}"
        );
        let msg = ws.read().context("waiting for the sentinel")?;
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str())?;
            ensure!(
                v["cid"].as_str() == Some(sentinel.as_str()),
                "an extra or duplicate event before the sentinel: {t}"
            );
            return Ok(());
        }
    }
}

/// An SSE subscriber on `b` to `{root}/** where keep = true` gets exactly the kept events that
/// `a` publishes to `{root}/x` (seq `range`, every `skip_every`-th not kept), in order: its own
/// stream, seq = i, then a sentinel on the same stream, so nothing but those may come before it.
fn sse_gets_in_order(
    a: &NodeProcess,
    b: &NodeProcess,
    root: &str,
    range: std::ops::RangeInclusive<u64>,
    skip_every: u64,
    who: &str,
) -> Result<()> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", b.api),
        &[("filter", format!("{root}/** where keep = true"))],
    )?;
    let (_sock, rx) = tidings_tests::sse_subscribe(&url)?;
    wait_lease(a)?;
    let topic = format!("{root}/x");
    let want = publish_range(&a.api(), &topic, range, skip_every)?;
    let end = sentinel(&a.api(), &topic)?;
    let got = tidings_tests::collect_until(&rx, &[end], who)?;
    same_order(&got, &want, who)
}

/// Publishes `{"keep": true, "sentinel": true}` to `topic`; its CID.
fn sentinel(api: &tidings_tests::Api, topic: &str) -> Result<String> {
    let (s, v) = api.publish(topic, &serde_json::json!({"keep": true, "sentinel": true}))?;
    ensure!(s == 200, "publish sentinel: {s} {v}");
    Ok(v["cid"].as_str().context("cid")?.to_string())
}

/// Publishes `{"i": i, "keep": i % skip_every != 0}` for each `i` in `range` to `topic` (the
/// publishing node's own stream: seq = i); returns the CIDs of the kept ones.
fn publish_range(
    api: &tidings_tests::Api,
    topic: &str,
    range: std::ops::RangeInclusive<u64>,
    skip_every: u64,
) -> Result<Vec<String>> {
    let mut want = Vec::new();
    for i in range {
        let keep = i % skip_every != 0;
        let (s, v) = api.publish(topic, &serde_json::json!({"i": i, "keep": keep}))?;
        ensure!(s == 200, "publish {i}: {s} {v}");
        ensure!(
            v["seq"].as_u64() == Some(i),
            "publish {i}: seq {}",
            v["seq"]
        );
        if keep {
            want.push(v["cid"].as_str().context("cid")?.to_string());
        }
    }
    Ok(want)
}

/// A broker `a` and a peer-role node `b` bootstrapped from it, with a test-only delivery fault.
fn broker_and_lossy_peer(
    dir: &std::path::Path,
    fault: (&str, &str),
) -> Result<(NodeProcess, NodeProcess)> {
    let a = NodeProcess::start(&dir.join("a"), &[])?;
    let b = NodeProcess::start_with_env(
        &dir.join("b"),
        &["--role", "peer", "--bootstrap", &a.p2p_addr()?],
        &[fault],
    )?;
    poll(Duration::from_secs(20), || {
        (b.status().ok()?["brokers"].as_u64()? >= 1).then_some(())
    })
    .context("b never learnt of a broker")?;
    Ok((a, b))
}

/// Waits until a subscription's lease has reached `a`.
fn wait_lease(a: &NodeProcess) -> Result<()> {
    poll(Duration::from_secs(20), || {
        (a.status().ok()?["leases"].as_u64()? >= 1).then_some(())
    })
    .context("the lease never reached a")
}

/// Checks `got` is exactly `want`, in order.
fn same_order(got: &[String], want: &[String], who: &str) -> Result<()> {
    ensure!(
        got == want,
        "{who}: got {} events, want {}; first difference at {:?}",
        got.len(),
        want.len(),
        got.iter().zip(want).position(|(g, w)| g != w)
    );
    Ok(())
}

#[test]
fn a_durable_subscriber_gets_what_it_missed_in_order_then_live_events() -> Result<()> {
    let _heavy = tidings_tests::one_heavy_test_at_a_time();
    let dir = tempfile::tempdir()?;
    let nodes = three_brokers_and_a_peer(dir.path())?;
    let (publisher, sub_node) = (nodes[1].api(), &nodes[3]);
    let filter = "/dur/** where keep = true";

    let mut ws = ws_connect(&sub_node.api, filter, "d1")?;
    let want = publish_range(&publisher, "/dur/x", 1..=20, 4)?;
    ensure!(ws_take(&mut ws, want.len())? == want, "first live events");
    ws.close(None)?;
    let _ = ws.read(); // the close handshake

    // Away: 500 events, 375 of them matching.
    let missed = publish_range(&publisher, "/dur/x", 21..=520, 4)?;
    let mut ws = ws_connect(&sub_node.api, filter, "d1")?;
    let got = ws_take(&mut ws, missed.len())?;
    same_order(&got, &missed, "backlog")?;
    let live = publish_range(&publisher, "/dur/x", 521..=540, 4)?;
    ensure!(
        ws_take(&mut ws, live.len())? == live,
        "live events after the backlog"
    );
    ws_until_sentinel(&mut ws, &publisher, "/dur/x")?;
    ws.close(None)?;
    let _ = ws.read();

    // Same name, another filter: 409. Delete: 204, then 404.
    let other = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", sub_node.api),
        &[("filter", "/dur/**"), ("durable", "d1")],
    )?;
    let http = reqwest::blocking::Client::new();
    let r = http
        .get(other)
        .header("accept", "text/event-stream")
        .send()?;
    ensure!(r.status().as_u16() == 409, "another filter: {}", r.status());
    let del = format!("{}/v1/durable/d1", sub_node.api);
    ensure!(http.delete(&del).send()?.status().as_u16() == 204);
    ensure!(http.delete(&del).send()?.status().as_u16() == 404);
    Ok(())
}

#[test]
fn a_replay_during_a_steady_publish_stream_has_no_gap_and_no_duplicate() -> Result<()> {
    let _heavy = tidings_tests::one_heavy_test_at_a_time();
    let dir = tempfile::tempdir()?;
    let nodes = three_brokers_and_a_peer(dir.path())?;
    let publisher = nodes[1].api();
    let total = 600u64;
    let published = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = {
        let published = published.clone();
        std::thread::spawn(move || -> Result<()> {
            for i in 1..=total {
                let (s, v) = publisher.publish("/rep/x", &serde_json::json!({ "i": i }))?;
                ensure!(s == 200, "publish {i}: {s} {v}");
                let cid = v["cid"].as_str().context("cid")?.to_string();
                published
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .push(cid);
            }
            Ok(())
        })
    };
    poll(Duration::from_secs(120), || {
        (published.lock().ok()?.len() >= 200).then_some(())
    })
    .context("publisher too slow")?;
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", nodes[3].api),
        &[("filter", "/rep/**"), ("since", "0")],
    )?;
    let (_sock, rx) = tidings_tests::sse_subscribe(&url)?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    let want = published
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .clone();
    let end = sentinel(&nodes[1].api(), "/rep/x")?;
    let got = tidings_tests::collect_until(&rx, &[end], "replay")?;
    same_order(&got, &want, "replay")?;
    Ok(())
}
