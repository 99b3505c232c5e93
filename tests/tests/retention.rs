//! Retention end to end on running nodes (three brokers, K=3, fast replica sync, a publishing
//! peer, durable subscribers):
//! - `--retain-age`: old events leave the brokers' logs and lose their blocks, but the topic
//!   heads, a broker's own events and a durable's undelivered backlog stay; a broker that was
//!   away, coming back to streams whose old part the others pruned, does not record the pruned
//!   part as a hole to chase every sync round;
//! - `--retain-bytes` alone: the same, with no age to tell a pruned past by (the members report
//!   what they pruned); a broker restarted with the same flags keeps pruning, keeps what it had
//!   not pruned, and fetches nothing it pruned back;
//! - `--durable-expiry`: a durable unused for longer goes on every member, its pinned backlog is
//!   then pruned, and its name starts a new durable; one held open by a connection stays.
//!
//! The tests run one at a time (each runs four nodes; the machine may have two cores).

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tidings_tests::{Api, NodeProcess, Ws, poll};

/// One test at a time: see the module docs.
static SERIAL: Mutex<()> = Mutex::new(());

const RETAIN: &[&str] = &["--retain-age", "3s"];

fn broker(
    dir: &std::path::Path,
    name: &str,
    limits: &[&str],
    bootstrap: Option<&NodeProcess>,
) -> Result<NodeProcess> {
    let addr = bootstrap.map(NodeProcess::p2p_addr).transpose()?;
    let mut args = vec!["--replication", "3", "--sync-interval", "1s"];
    args.extend(limits);
    if let Some(a) = &addr {
        args.extend(["--bootstrap", a.as_str()]);
    }
    NodeProcess::start(&dir.join(name), &args)
}

/// Three brokers with `limits` (a first, the others joining through it) and a peer `p`, once
/// each knows the brokers.
fn set(
    dir: &std::path::Path,
    limits: &[&str],
) -> Result<(NodeProcess, NodeProcess, NodeProcess, NodeProcess)> {
    let a = broker(dir, "a", limits, None)?;
    let b = broker(dir, "b", limits, Some(&a))?;
    let c = broker(dir, "c", limits, Some(&a))?;
    let p = NodeProcess::start(
        &dir.join("p"),
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
    Ok((a, b, c, p))
}

/// Opens durable `name` on `filter` at `node` and waits until it is live: an event `p`
/// publishes to `topic` reaches it (acknowledged). Returns the connection.
fn durable_live(
    node: &NodeProcess,
    p: &NodeProcess,
    filter: &str,
    name: &str,
    topic: &str,
) -> Result<Ws> {
    let mut ws = tidings_tests::ws_durable(&node.api, filter, name, Duration::from_millis(200))?;
    let live = poll(Duration::from_secs(20), || {
        let (s, v) = p.api().publish(topic, &json!({"probe": true})).ok()?;
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
    ensure!(live.is_some(), "durable {name} never went live");
    Ok(ws)
}

/// Lets `n` finish `rounds` more replica sync rounds, then fails if any of its hole fetches
/// found nothing: a pruned past chased as a hole is asked for every round (6 times before any
/// backoff) and answered by nobody.
fn no_hole_chased(n: &NodeProcess, name: &str, rounds: u64) -> Result<()> {
    let rounds_total = "tidings_replica_sync_rounds_total";
    let api = n.api();
    let metric = |m: &str| api.metric(m).with_context(|| format!("no metric {m}"));
    let r0 = metric(rounds_total)?;
    poll(Duration::from_secs(30), || {
        (api.metric(rounds_total)? >= r0 + rounds).then_some(())
    })
    .with_context(|| format!("{name} ran no {rounds} sync rounds"))?;
    let misses = metric("tidings_replica_sync_hole_misses_total")?;
    ensure!(
        misses == 0,
        "{name} chases a pruned past as a hole ({misses} fetches found nothing):\n{}",
        n.log()
    );
    Ok(())
}

/// Events of `cids` that `n` holds (`GET /v1/events/{cid}` is 200).
fn held(n: &NodeProcess, cids: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for cid in cids {
        if event_status(&n.api(), cid)? == 200 {
            out.push(cid.clone());
        }
    }
    Ok(out)
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
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let (a, b, mut c, p) = set(dir.path(), RETAIN)?;

    // A durable subscriber on /kept/**, live (it got a first event), then away.
    let mut ws = durable_live(&a, &p, "/kept/**", "pin", "/kept/x")?;
    ws.close(None)?;
    drop(ws);
    let backlog = publish(&p.api(), "/kept/x", 10)?;

    // C goes away; the stream /gone/x (by the peer) and a's own /gone/own are published.
    c.stop_with(libc::SIGTERM, Duration::from_secs(20))?;
    let gone = publish(&p.api(), "/gone/x", 20)?;
    let own = publish(&a.api(), "/gone/own", 3)?;

    // Retention removes /gone/x's old events from a and b, blocks included.
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
    let mut c = broker(dir.path(), "c", RETAIN, Some(&a))?;
    poll(Duration::from_secs(30), || {
        (event_status(&c.api(), &gone[19]).ok()? == 200).then_some(())
    })
    .context("c never synced the head of /gone/x")?;
    no_hole_chased(&c, "c", 3)?;

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

/// About 5 events of a root's log fit in this (an event block is about 200 bytes).
const BYTES: &[&str] = &["--retain-bytes", "1K"];

#[test]
fn retain_bytes_alone_prunes_without_holes_to_chase_and_a_restart_keeps_the_limit() -> Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let (a, mut b, mut c, p) = set(dir.path(), BYTES)?;

    let mut ws = durable_live(&a, &p, "/kept/**", "pin", "/kept/x")?;
    ws.close(None)?;
    drop(ws);
    let backlog = publish(&p.api(), "/kept/x", 10)?;

    // C away; the peer publishes 20 events to /gone/x, far more than 1K; a three of its own.
    c.stop_with(libc::SIGTERM, Duration::from_secs(20))?;
    let gone = publish(&p.api(), "/gone/x", 20)?;
    let own = publish(&a.api(), "/gone/own", 3)?;

    // The byte limit removes the oldest half (at least) of /gone/x from a and b.
    poll(Duration::from_secs(60), || {
        for n in [&a, &b] {
            if !held(n, &gone[..10]).ok()?.is_empty() {
                return None;
            }
        }
        Some(())
    })
    .context("a and b never pruned /gone/x's oldest events by --retain-bytes")?;
    for (n, name) in [(&a, "a"), (&b, "b")] {
        ensure!(
            event_status(&n.api(), &gone[19])? == 200,
            "{name} lost the head of /gone/x"
        );
        ensure!(
            held(n, &backlog)? == backlog,
            "{name} pruned the durable's undelivered backlog"
        );
    }
    ensure!(held(&a, &own)? == own, "a pruned its own events");

    // C returns and syncs /gone/x: it takes what the others still hold, and chases nothing of
    // what they pruned.
    let mut kept = held(&a, &gone)?;
    kept.extend(held(&b, &gone)?);
    let mut c = broker(dir.path(), "c", BYTES, Some(&a))?;
    poll(Duration::from_secs(30), || {
        (event_status(&c.api(), &gone[19]).ok()? == 200).then_some(())
    })
    .context("c never synced the head of /gone/x")?;
    no_hole_chased(&c, "c", 3)?;
    ensure!(
        held(&c, &gone[..10])?.is_empty(),
        "c fetched what a and b pruned"
    );

    // B restarts with the same flags: what it pruned stays pruned (no sync round fetches it
    // back), what it had kept is still there, and it goes on pruning.
    let before = held(&b, &gone)?;
    ensure!(
        before.len() < gone.len() && before.contains(&gone[19]),
        "b holds {} of /gone/x",
        before.len()
    );
    b.stop_with(libc::SIGTERM, Duration::from_secs(20))?;
    let b = broker(dir.path(), "b", BYTES, Some(&a))?;
    poll(Duration::from_secs(30), || {
        (b.status().ok()?["brokers"].as_u64()? >= 2).then_some(())
    })
    .context("b never rejoined the set")?;
    no_hole_chased(&b, "b", 3)?;
    ensure!(
        held(&b, &gone)? == before,
        "b's /gone/x changed across its restart"
    );
    ensure!(
        held(&b, &backlog)? == backlog,
        "b lost the durable's backlog across its restart"
    );
    let more = publish(&p.api(), "/more/x", 20)?;
    poll(Duration::from_secs(60), || {
        held(&b, &more[..10]).ok()?.is_empty().then_some(())
    })
    .context("b restarted does not prune by --retain-bytes")?;
    ensure!(
        event_status(&b.api(), &more[19])? == 200,
        "b lost the head of /more/x"
    );
    no_hole_chased(&c, "c", 2)?;
    ensure!(
        held(&c, &gone)?.iter().all(|cid| kept.contains(cid)),
        "c holds events of /gone/x that a and b had pruned"
    );

    // The durable subscriber comes back to its whole backlog, in order.
    let mut ws = tidings_tests::ws_durable(&a.api, "/kept/**", "pin", Duration::from_secs(30))?;
    let got = ws_take(&mut ws, backlog.len())?;
    ensure!(
        got == backlog,
        "durable backlog after retention: got {got:?}, want {backlog:?}"
    );
    c.stop_with(libc::SIGTERM, Duration::from_secs(20))?;
    Ok(())
}

/// Durables expire after 3 s unused; events older than 3 s go unless a durable pins them.
const EXPIRY: &[&str] = &["--durable-expiry", "3s", "--retain-age", "3s"];

/// How many of `n`'s log lines say durable `name` expired.
fn expired_lines(n: &NodeProcess, name: &str) -> usize {
    let suffix = format!("/{name}");
    n.log()
        .lines()
        .filter(|l| l.contains("durable subscription expired") && l.contains(&suffix))
        .count()
}

/// Reads text frames from `ws` until one contains `sentinel`; the CIDs read before it.
fn ws_until(ws: &mut Ws, sentinel: &str) -> Result<Vec<String>> {
    let mut before = Vec::new();
    loop {
        let msg = ws
            .read()
            .with_context(|| format!("no {sentinel} after {} events", before.len()))?;
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str())?;
            let cid = v["cid"].as_str().context("cid")?.to_string();
            ws.send(tungstenite::Message::text(
                json!({ "ack": cid }).to_string(),
            ))?;
            if cid == sentinel {
                return Ok(before);
            }
            before.push(cid);
        }
    }
}

#[test]
fn an_unused_durable_expires_on_every_member_and_its_backlog_goes_but_one_in_use_stays()
-> Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let (a, b, c, p) = set(dir.path(), EXPIRY)?;

    // "idle" goes live on /kept/**, then away with a backlog; "busy" stays connected to
    // /busy/** and gets nothing (no delivery, no ack) for far longer than the expiry.
    let mut idle = durable_live(&a, &p, "/kept/**", "idle", "/kept/x")?;
    let mut busy = durable_live(&a, &p, "/busy/**", "busy", "/busy/x")?;
    idle.close(None)?;
    drop(idle);
    let backlog = publish(&p.api(), "/kept/x", 10)?;

    // Every member deletes "idle" (none takes it back from another by replica sync), and
    // retention then removes its backlog, which nothing pins any more (but the head).
    poll(Duration::from_secs(60), || {
        for n in [&a, &b, &c] {
            if held(n, &backlog).ok()? != backlog[9..] {
                return None;
            }
        }
        Some(())
    })
    .context("the expired durable's backlog was never pruned on every member")?;
    for (n, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        ensure!(
            expired_lines(n, "idle") >= 1,
            "{name} never expired durable idle:\n{}",
            n.log()
        );
    }

    // "busy", open all along, expired nowhere; it receives live events, and once away it
    // keeps a backlog: its record is the old one.
    for (n, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        ensure!(
            expired_lines(n, "busy") == 0,
            "{name} expired durable busy while a connection held it open:\n{}",
            n.log()
        );
    }
    let (s, v) = p.api().publish("/busy/x", &json!({"live": true}))?;
    ensure!(s == 200, "publish /busy/x: {s} {v}");
    let live = v["cid"].as_str().context("cid")?.to_string();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = busy.get_mut() {
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
    }
    ensure!(
        ws_until(&mut busy, &live)?.is_empty(),
        "busy got events before the live one"
    );
    busy.close(None)?;
    drop(busy);
    let away = publish(&p.api(), "/busy/x", 2)?;
    let mut busy = tidings_tests::ws_durable(&a.api, "/busy/**", "busy", Duration::from_secs(30))?;
    let got = ws_take(&mut busy, away.len())?;
    ensure!(got == away, "busy's backlog: got {got:?}, want {away:?}");
    drop(busy);

    // "idle" under its name again is a new durable: it starts live, without the old backlog
    // (sentinels until one arrives: the new subscription reaches the set within moments).
    let mut idle =
        tidings_tests::ws_durable(&a.api, "/kept/**", "idle", Duration::from_millis(200))?;
    let mut sentinels = Vec::new();
    let mut others = Vec::new();
    let arrived = poll(Duration::from_secs(20), || {
        let (s, v) = p
            .api()
            .publish("/kept/x", &json!({"sentinel": true}))
            .ok()?;
        sentinels.push((s == 200).then(|| v["cid"].as_str().map(str::to_string))??);
        while let Ok(msg) = idle.read() {
            if let tungstenite::Message::Text(t) = msg {
                let v: Value = serde_json::from_str(t.as_str()).ok()?;
                let cid = v["cid"].as_str()?.to_string();
                if sentinels.contains(&cid) {
                    return Some(());
                }
                others.push(cid);
            }
        }
        None
    });
    ensure!(arrived.is_some(), "the new durable idle never went live");
    ensure!(
        others.is_empty(),
        "the new durable idle got {} events before its first sentinel (the old backlog?)",
        others.len()
    );
    Ok(())
}
