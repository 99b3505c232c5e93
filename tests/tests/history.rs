//! History (DESIGN §5) with real node processes: fetch of a long stream from another node, gap
//! repair after dropped deliveries, replay with no gap or duplicate at the seam, and durable
//! subscriptions that get what they missed.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tidings_tests::{NodeProcess, poll, signed_stream_car, tidings_bin};

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
    let a = NodeProcess::start(&dir.path().join("a"), &[])?;
    // b loses every delivery of an event whose seq is a multiple of 5, as if the network ate it.
    let b = NodeProcess::start_with_env(
        &dir.path().join("b"),
        &["--role", "peer", "--bootstrap", &a.p2p_addr()?],
        &[("TIDINGS_TEST_DROP_DELIVERIES_SEQ_MOD", "5")],
    )?;
    poll(Duration::from_secs(20), || {
        (b.status().ok()?["brokers"].as_u64()? >= 1).then_some(())
    })
    .context("b never learnt of a broker")?;
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", b.api),
        &[("filter", "/gap/** where keep = true")],
    )?;
    let (_sock, rx) = tidings_tests::sse_subscribe(&url)?;
    poll(Duration::from_secs(20), || {
        (a.status().ok()?["leases"].as_u64()? >= 1).then_some(())
    })
    .context("the lease never reached a")?;
    // a publishes: its own stream, seq = i. A third do not match the filter at all.
    let mut want = Vec::new();
    for i in 1..=203u64 {
        let keep = i % 3 != 0;
        let (s, v) = a
            .api()
            .publish("/gap/x", &serde_json::json!({"i": i, "keep": keep}))?;
        ensure!(s == 200, "publish {i}: {s} {v}");
        ensure!(v["seq"].as_u64() == Some(i));
        if keep {
            want.push(v["cid"].as_str().context("cid")?.to_string());
        }
    }
    let got = tidings_tests::collect(&rx, want.len(), "gap subscriber")?;
    ensure!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "an event beyond the expected ones arrived"
    );
    ensure!(
        got == want,
        "got {} events, want {}; first difference at {:?}",
        got.len(),
        want.len(),
        got.iter().zip(&want).position(|(g, w)| g != w)
    );
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
