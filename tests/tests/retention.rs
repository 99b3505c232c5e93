//! Retention end to end on running nodes: three brokers (K=3) with `--retain-age 3s` and fast
//! replica sync, a publishing peer, and a durable subscriber. Old events leave the brokers'
//! logs and lose their blocks, but the topic heads, a broker's own events and a durable's
//! undelivered backlog stay; and a broker that was away, coming back to streams whose old part
//! the others pruned, does not record the pruned part as a hole to chase every sync round.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tidings_tests::{Api, NodeProcess, Ws, poll};

const RETAIN: &[&str] = &[
    "--replication",
    "3",
    "--retain-age",
    "3s",
    "--sync-interval",
    "1s",
];

fn broker(
    dir: &std::path::Path,
    name: &str,
    bootstrap: Option<&NodeProcess>,
) -> Result<NodeProcess> {
    let addr = bootstrap.map(NodeProcess::p2p_addr).transpose()?;
    let mut args = RETAIN.to_vec();
    if let Some(a) = &addr {
        args.extend(["--bootstrap", a.as_str()]);
    }
    NodeProcess::start(&dir.join(name), &args)
}

/// The status code of `GET /v1/events/{cid}` on `api`.
fn event_status(api: &Api, cid: &str) -> Result<u16> {
    Ok(api.get_json(&format!("/v1/events/{cid}"))?.0)
}

/// Publishes `n` events to `topic` on `api`; returns their CIDs, oldest first.
fn publish(api: &Api, topic: &str, n: u64) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..n {
        let (s, v) = api.publish(topic, &json!({"i": i}))?;
        ensure!(s == 200, "publish {topic} #{i}: {s} {v}");
        out.push(v["cid"].as_str().context("cid")?.to_string());
    }
    Ok(out)
}

fn metric(node: &NodeProcess, name: &str) -> Result<u64> {
    let text = reqwest::blocking::get(format!("{}/metrics", node.api().base()))?.text()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no metric {name}"))
}

/// Reads `n` events from a durable WebSocket, acknowledging each; their CIDs.
fn ws_take(ws: &mut Ws, n: usize) -> Result<Vec<String>> {
    let mut got = Vec::new();
    while got.len() < n {
        let msg = ws
            .read()
            .with_context(|| format!("got {} of {n} events", got.len()))?;
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str())?;
            let cid = v["cid"].as_str().context("cid")?.to_string();
            ws.send(tungstenite::Message::text(
                json!({ "ack": cid }).to_string(),
            ))?;
            got.push(cid);
        }
    }
    Ok(got)
}

#[test]
fn retention_keeps_heads_own_events_and_durable_backlogs_and_sync_chases_no_pruned_hole()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = broker(dir.path(), "a", None)?;
    let b = broker(dir.path(), "b", Some(&a))?;
    let mut c = broker(dir.path(), "c", Some(&a))?;
    let p = NodeProcess::start(
        &dir.path().join("p"),
        &["--role", "peer", "--bootstrap", &a.p2p_addr()?],
    )?;
    poll(Duration::from_secs(30), || {
        (p.status().ok()?["brokers"].as_u64()? >= 3).then_some(())
    })
    .context("p never learnt of the three brokers")?;
    for n in [&a, &b, &c] {
        poll(Duration::from_secs(30), || {
            (n.status().ok()?["brokers"].as_u64()? >= 2).then_some(())
        })
        .context("a broker never learnt of the others")?;
    }

    // A durable subscriber on /kept/**, live (it got a first event), then away.
    let mut ws = tidings_tests::ws_durable(&a.api, "/kept/**", "pin", Duration::from_millis(200))?;
    let live = poll(Duration::from_secs(20), || {
        let (s, v) = p.api().publish("/kept/x", &json!({"probe": true})).ok()?;
        let cid = (s == 200).then(|| v["cid"].as_str().map(str::to_string))??;
        while let Ok(msg) = ws.read() {
            if let tungstenite::Message::Text(t) = msg
                && t.contains(&cid)
            {
                ws.send(tungstenite::Message::text(
                    json!({ "ack": cid }).to_string(),
                ))
                .ok()?;
                return Some(cid);
            }
        }
        None
    });
    ensure!(live.is_some(), "the durable subscription never went live");
    ws.close(None)?;
    drop(ws);
    let backlog = publish(&p.api(), "/kept/x", 10)?;

    // C goes away; the stream /gone/x (by the peer) and a's own /gone/own are published.
    c.stop_with(libc::SIGTERM, Duration::from_secs(20))?;
    let gone = publish(&p.api(), "/gone/x", 20)?;
    let own = publish(&a.api(), "/gone/own", 3)?;

    // Retention (every 10 s) removes /gone/x's old events from a and b, blocks included.
    poll(Duration::from_secs(60), || {
        for n in [&a, &b] {
            for cid in &gone[..19] {
                if event_status(&n.api(), cid).ok()? != 404 {
                    return None;
                }
            }
        }
        Some(())
    })
    .context("a and b never pruned /gone/x's old events")?;
    for (n, name) in [(&a, "a"), (&b, "b")] {
        let api = n.api();
        ensure!(
            event_status(&api, &gone[19])? == 200,
            "{name} lost the head of /gone/x"
        );
        ensure!(
            api.heads("/gone/x")? == vec![gone[19].clone()],
            "{name}: heads of /gone/x"
        );
        for cid in &backlog {
            ensure!(
                event_status(&api, cid)? == 200,
                "{name} pruned the durable's undelivered backlog"
            );
        }
    }
    for cid in &own {
        ensure!(
            event_status(&a.api(), cid)? == 200,
            "a pruned its own event"
        );
    }
    poll(Duration::from_secs(30), || {
        (event_status(&b.api(), &own[0]).ok()? == 404).then_some(())
    })
    .context("b never pruned a's old events (not its own)")?;
    for cid in &gone {
        ensure!(
            event_status(&p.api(), cid)? == 200,
            "the publisher lost its own event"
        );
    }

    // C returns (an OS-chosen API port again) and syncs: it takes the head of /gone/x, whose
    // past the others pruned. That past is not a hole to fetch from them round after round.
    let mut c = broker(dir.path(), "c", Some(&a))?;
    poll(Duration::from_secs(30), || {
        (event_status(&c.api(), &gone[19]).ok()? == 200).then_some(())
    })
    .context("c never synced the head of /gone/x")?;
    let settled = poll(Duration::from_secs(30), || {
        let pruned = metric(&c, "tidings_replica_sync_holes_pruned_total").unwrap_or(0);
        let misses = metric(&c, "tidings_replica_sync_hole_misses_total").ok()?;
        (pruned + misses > 0).then_some((pruned, misses))
    })
    .context("c neither chased nor dropped the pruned past of /gone/x")?;
    ensure!(
        settled.1 == 0,
        "c chases the pruned past of /gone/x as a hole (pruned {}, misses {}):\n{}",
        settled.0,
        settled.1,
        c.log()
    );

    // The durable subscriber comes back to its whole backlog, in order.
    let mut ws = tidings_tests::ws_durable(&a.api, "/kept/**", "pin", Duration::from_secs(30))?;
    let got = ws_take(&mut ws, backlog.len())?;
    // Acknowledgements are cumulative per stream: the probe acknowledged covers the earlier ones.
    ensure!(
        got == backlog,
        "durable backlog after retention: got {got:?}, want {backlog:?}"
    );
    c.stop_with(libc::SIGTERM, Duration::from_secs(20))?;
    Ok(())
}
