//! The web console (`GET /`) in a real headless Chromium, driven through the DevTools
//! protocol against real node processes: every view loads without a console error, a publish
//! reaches the live view (the latency is measured and printed), a bad filter shows its error at
//! the right position, a two-writer stream with a merge is drawn with the right numbers of
//! events, links and heads, history is fetched with progress, and a node started with
//! `--token` shows nothing until the token is given.
//!
//! Screenshots of each view go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tidings_ipld_schema::{Event, Keypair, car, json as ipld_json};
use tidings_tests::cdp::Browser;
use tidings_tests::{NodeProcess, poll, signed_stream_car};

const WAIT: Duration = Duration::from_secs(20);

fn shots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A JS string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Sets an input's value as typing would and submits its form.
fn submit(b: &mut Browser, input: &str, value: &str, form: &str) -> Result<()> {
    b.eval(&format!(
        "document.getElementById({}).value = {}; document.getElementById({}).requestSubmit(); true",
        js(input),
        js(value),
        js(form)
    ))?;
    Ok(())
}

fn go(b: &mut Browser, hash: &str, ready: &str) -> Result<()> {
    b.eval(&format!(
        "delete document.body.dataset.ready; location.hash = {}; true",
        js(hash)
    ))?;
    b.wait_for(
        &format!("document.body.dataset.ready === {}", js(ready)),
        WAIT,
    )?;
    Ok(())
}

/// Subscribes the live view to `filter` and waits until the node has accepted it.
fn live(b: &mut Browser, filter: &str) -> Result<()> {
    b.eval("document.getElementById('live-state').textContent = ''")?;
    submit(b, "filter", filter, "live-form")?;
    b.wait_for(
        "document.getElementById('live-state').textContent === 'subscribed'",
        WAIT,
    )
    .with_context(|| format!("subscribing to {filter}"))?;
    Ok(())
}

/// CIDs in the live table, newest first.
fn live_cids(b: &mut Browser) -> Result<Vec<String>> {
    let v =
        b.eval("[...document.querySelectorAll('#live-events tbody tr')].map(r => r.dataset.cid)")?;
    Ok(serde_json::from_value(v)?)
}

#[test]
fn console_views_live_latency_filters_and_publish() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("a"), &[])?;
    let api = node.api();
    let peer = node.status()?["peer_id"]
        .as_str()
        .context("peer id")?
        .to_string();
    // The page's files, as served: all of them, each confined to this node by its CSP.
    let mut served = 0;
    for path in [
        "/",
        "/console/app.js",
        "/console/dag.js",
        "/console/style.css",
    ] {
        let r = reqwest::blocking::get(format!("{}{path}", node.api))?;
        ensure!(r.status() == 200, "{path}: {}", r.status());
        let csp = r.headers().get("content-security-policy").cloned();
        ensure!(
            csp.is_some_and(|v| v.to_str().is_ok_and(|v| v.contains("connect-src 'self'"))),
            "{path}: no CSP"
        );
        served += r.bytes()?.len();
    }
    eprintln!("console: {served} bytes of embedded assets");
    let mut b = Browser::start()?;
    b.navigate(&format!("{}/", node.api))?;

    // Node view: the status facts and, after two samples, the rate chart.
    b.wait_for("document.body.dataset.ready === 'node'", WAIT)?;
    let shown = b.eval("document.getElementById('node-facts').textContent")?;
    ensure!(shown.as_str().is_some_and(|s| s.contains(&peer)), "{shown}");
    // Three samples of the counters (a second apart) draw both lines; the warm-up publish
    // moves the "in" line.
    api.publish("/console/warmup", &json!({"n": 0}))?;
    b.wait_for(
        "[...document.querySelectorAll('#rates polyline')].filter(p => p.points.numberOfItems >= 3).length === 2",
        WAIT,
    )?;
    b.screenshot(&shots().join("node.png"))?;

    // Live view: publish through the API and time until the row is on the screen.
    go(&mut b, "live", "live")?;
    live(&mut b, "/console/** where n >= 1")?;
    let mut latencies = Vec::new();
    for n in 1..=20 {
        let t0 = now_ms();
        let (s, v) = api.publish("/console/live", &json!({"n": n, "price": n * 10}))?;
        ensure!(s == 200, "publish {s} {v}");
        let cid = v["cid"].as_str().context("cid")?;
        let shown = b.wait_for(
            &format!(
                "document.querySelector('#live-events tr[data-cid=\"{cid}\"]')?.dataset.shown"
            ),
            WAIT,
        )?;
        let shown: f64 = shown.as_str().context("shown")?.parse()?;
        latencies.push(shown - t0);
    }
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "console: publish → live view, 20 events: p50 {:.1} ms, max {:.1} ms",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // The warm-up (n = 0) does not match; the count and the table agree.
    ensure!(b.eval("document.getElementById('live-count').textContent")? == "20");
    ensure!(live_cids(&mut b)?.len() == 20);

    // Pause holds events back, resume shows them, none lost.
    b.eval("document.getElementById('live-pause').click()")?;
    let (_, v) = api.publish("/console/live", &json!({"n": 21}))?;
    let held = v["cid"].as_str().context("cid")?.to_string();
    b.wait_for(
        "document.getElementById('live-held').textContent === '1'",
        WAIT,
    )?;
    ensure!(!live_cids(&mut b)?.contains(&held), "shown while paused");
    b.eval("document.getElementById('live-pause').click()")?;
    ensure!(
        live_cids(&mut b)?.first() == Some(&held),
        "not shown on resume"
    );
    ensure!(b.eval("document.getElementById('live-count').textContent")? == "21");
    b.screenshot(&shots().join("live.png"))?;

    // The JSON and Mongo-style forms select the same events as the text form would.
    for filter in [
        r#"{"topic": "/console/**", "n": ">100", "price": "<2000"}"#,
        r#"{"topic": "/console/**", "n": {"$gt": 100}, "price": {"$lt": 2000}}"#,
    ] {
        live(&mut b, filter)?;
        let mut want = Vec::new();
        for n in [99, 101, 150, 250] {
            let (_, v) = api.publish("/console/json", &json!({"n": n, "price": n * 10}))?;
            if n > 100 && n * 10 < 2000 {
                want.push(v["cid"].as_str().context("cid")?.to_string());
            }
        }
        // A last matching event: once it is shown, everything before it has been decided.
        let (_, v) = api.publish("/console/json", &json!({"n": 101, "price": 1}))?;
        let last = v["cid"].as_str().context("cid")?.to_string();
        want.push(last.clone());
        b.wait_for(
            &format!("!!document.querySelector('#live-events tr[data-cid=\"{last}\"]')"),
            WAIT,
        )?;
        let mut got = live_cids(&mut b)?;
        got.reverse();
        ensure!(got == want, "{filter}: got {got:?}, want {want:?}");
    }

    // A bad filter: the node's error, with a caret at the byte the parser stopped at.
    for bad in [
        "/stocks/** where price 10",
        r#"{"topic": "/x", "n": {"$gt": }}"#,
    ] {
        let want = tidings_matcher::Filter::parse(bad)
            .err()
            .context("filter should not parse")?
            .pos;
        b.eval("document.getElementById('filter-error').hidden = true")?;
        submit(&mut b, "filter", bad, "live-form")?;
        let pos = b.wait_for(
            "!document.getElementById('filter-error').hidden && document.getElementById('filter-error').dataset.position",
            WAIT,
        )?;
        ensure!(
            pos.as_str().and_then(|p| p.parse::<usize>().ok()) == Some(want),
            "{bad}: shown at {pos}, parser says {want}"
        );
        let text = b.eval("document.getElementById('filter-error').textContent")?;
        let text = text.as_str().unwrap_or_default();
        let caret = text.lines().nth(2).unwrap_or_default();
        ensure!(caret.len() == want + 1 && caret.ends_with('^'), "{text}");
        ensure!(text.lines().nth(1) == Some(bad), "{text}");
    }
    b.screenshot(&shots().join("live-filter-error.png"))?;

    // Publish view.
    go(&mut b, "publish", "publish")?;
    b.eval("document.getElementById('pub-body').value = '{\"from\": \"the console\", \"n\": 7}'")?;
    submit(&mut b, "pub-topic", "/console/published", "publish-form")?;
    let cid = b.wait_for(
        "document.getElementById('publish-result').dataset.cid",
        WAIT,
    )?;
    let ev = api.event(cid.as_str().context("cid")?)?;
    ensure!(ev["body"] == json!({"from": "the console", "n": 7}), "{ev}");
    ensure!(ev["topic"] == "/console/published");
    b.screenshot(&shots().join("publish.png"))?;

    let errors = b.console_errors()?;
    // The bad filters' 400s are logged by the browser as failed loads: expected, nothing else.
    let unexpected: Vec<_> = errors
        .iter()
        .filter(|e| !(e.contains("status of 400") && e.contains("/v1/subscribe")))
        .collect();
    ensure!(unexpected.is_empty(), "console errors: {unexpected:#?}");
    Ok(())
}

/// Signs an event of `key` and returns its block.
fn sign(
    key: &Keypair,
    topic: &str,
    seq: u64,
    time: u64,
    prev: Vec<tidings_ipld_schema::Cid>,
) -> Result<tidings_ipld_schema::Block> {
    let body = ipld_json::json_to_ipld(&json!({"seq": seq}))?;
    Ok(Event::sign_block(key, topic, body, seq, time, prev)?.1)
}

#[test]
fn streams_view_draws_two_writers_with_a_fork_and_a_merge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("a"), &[])?;
    let api = node.api();
    // a1 ← a2 ← a3, a1 ← b1 ← b2, and a3 merges b1: forks at a1 and b1, heads a3 and b2.
    let topic = "/console/dag";
    let a = Keypair::ed25519_from_bytes([1; 32])?;
    let bk = Keypair::ed25519_from_bytes([2; 32])?;
    let t = 1_763_700_000_000;
    let a1 = sign(&a, topic, 1, t, vec![])?;
    let a2 = sign(&a, topic, 2, t + 10, vec![a1.cid])?;
    let b1 = sign(&bk, topic, 1, t + 20, vec![a1.cid])?;
    let a3 = sign(&a, topic, 3, t + 30, vec![a2.cid, b1.cid])?;
    let b2 = sign(&bk, topic, 2, t + 40, vec![b1.cid])?;
    let blocks = [a1, a2, b1, a3, b2];
    let roots = [blocks[3].cid, blocks[4].cid];
    let mut bytes = Vec::new();
    car::write_car(
        &mut bytes,
        &roots,
        blocks.iter().map(|b| (b.cid, b.data.clone())),
    )?;
    let (s, v) = api.post_bytes("/v1/car", bytes)?;
    ensure!(s == 200, "import {s} {v}");
    // A second topic, so the list has more than one row.
    let (car2, _) = signed_stream_car(3, "/console/other", 3)?;
    api.post_bytes("/v1/car", car2)?;

    let mut b = Browser::start()?;
    b.navigate(&format!("{}/#streams", node.api))?;
    b.wait_for("document.body.dataset.ready === 'streams'", WAIT)?;
    let rows = b.eval(
        "[...document.querySelectorAll('#topics tbody tr')].map(r => [...r.cells].slice(0, 4).map(c => c.textContent))",
    )?;
    ensure!(
        rows == json!([
            ["/console/dag", "5", "2", "2"],
            ["/console/other", "3", "1", "1"]
        ]),
        "{rows}"
    );
    b.eval("document.querySelector('#topics tr[data-topic=\"/console/dag\"]').click()")?;
    b.wait_for(
        "document.querySelectorAll('#dag-box circle.event').length === 5",
        WAIT,
    )?;
    let counts = b.eval(
        "['circle.event', 'path.edge', 'circle.head', 'circle.merge', 'circle.fork', 'path.edge.cross', 'circle.unverified']
           .map(s => document.querySelectorAll('#dag-box ' + s).length)",
    )?;
    // 5 events; 5 links (a2→a1, b1→a1, a3→a2, a3→b1, b2→b1), 2 of them across lanes; heads
    // a3 and b2; one merge (a3); forks at a1 and b1; all verified.
    ensure!(counts == json!([5, 5, 2, 1, 2, 2, 0]), "{counts}");
    // Clicking the merge shows its CID, author, seq, time, body and that it verified.
    b.eval(
        "document.querySelector('#dag-box circle.merge').dispatchEvent(new MouseEvent('click'))",
    )?;
    let detail = b.wait_for("document.getElementById('event-json')?.textContent", WAIT)?;
    let detail: Value = serde_json::from_str(detail.as_str().unwrap_or_default())?;
    ensure!(detail["cid"] == roots[0].to_string(), "{detail}");
    ensure!(detail["seq"] == 3 && detail["verified"] == true, "{detail}");
    ensure!(detail["body"] == json!({"seq": 3}), "{detail}");
    ensure!(
        detail["prev"].as_array().map(Vec::len) == Some(2),
        "{detail}"
    );
    b.screenshot(&shots().join("streams.png"))?;
    let errors = b.console_errors()?;
    ensure!(errors.is_empty(), "console errors: {errors:#?}");
    Ok(())
}

#[test]
fn fetch_view_pulls_history_from_another_node_with_progress() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = NodeProcess::start(&dir.path().join("a"), &[])?;
    let n = 3000;
    let (car, cids) = signed_stream_car(9, "/console/history", n)?;
    let (s, v) = a.api().post_bytes("/v1/car", car)?;
    ensure!(s == 200, "import {s} {v}");
    let bnode = NodeProcess::start(&dir.path().join("b"), &["--bootstrap", &a.p2p_addr()?])?;
    poll(WAIT, || {
        (bnode.status().ok()?["peers"].as_u64()? >= 1).then_some(())
    })
    .context("b never connected to a")?;
    let head = cids.last().context("empty")?;

    let mut b = Browser::start()?;
    b.navigate(&format!("{}/#fetch", bnode.api))?;
    b.wait_for("document.body.dataset.ready === 'fetch'", WAIT)?;
    submit(&mut b, "fetch-cid", head, "fetch-form")?;
    b.wait_for(
        "document.getElementById('fetch-result').dataset.done === 'true'",
        Duration::from_secs(120),
    )?;
    let (value, max) = (
        b.eval("document.getElementById('fetch-progress').value")?,
        b.eval("document.getElementById('fetch-progress').max")?,
    );
    ensure!(value == max, "bar at {value} of {max}");
    let text = b.eval("document.getElementById('fetch-result').textContent")?;
    let summary: Value = serde_json::from_str(
        text.as_str()
            .and_then(|t| t.strip_prefix("done: "))
            .unwrap_or_default(),
    )?;
    ensure!(
        summary["verified"] == n && summary["complete"] == true,
        "{summary}"
    );
    let updates = b.eval("document.getElementById('fetch-result').dataset.updates")?;
    eprintln!("console: fetched {n} events, {updates} progress updates shown");
    ensure!(bnode.api().event(head)?["seq"] == n);
    b.screenshot(&shots().join("fetch.png"))?;
    let errors = b.console_errors()?;
    ensure!(errors.is_empty(), "console errors: {errors:#?}");
    Ok(())
}

#[test]
fn token_protected_console_shows_nothing_without_the_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let token = "s3cret-console-token";
    let node = NodeProcess::start_with_api(&dir.path().join("a"), "127.0.0.1:0", Some(token), &[])?;
    let peer = node.api().with_token(token).get_json("/v1/status")?.1["peer_id"]
        .as_str()
        .context("peer id")?
        .to_string();
    let mut b = Browser::start()?;
    b.navigate(&format!("{}/", node.api))?;
    b.wait_for("!document.getElementById('token-form').hidden", WAIT)?;
    let visible =
        b.eval("[...document.querySelectorAll('main > section')].filter(s => !s.hidden).length")?;
    ensure!(visible == 0, "{visible} views shown without a token");
    let html = b.eval("document.body.innerText")?;
    ensure!(
        !html.as_str().unwrap_or_default().contains(&peer),
        "peer id shown without a token"
    );
    b.screenshot(&shots().join("token.png"))?;

    submit(&mut b, "token", "wrong", "token-form")?;
    b.wait_for(
        "document.getElementById('token-error').textContent.includes('refused')",
        WAIT,
    )?;
    ensure!(
        !b.eval("document.body.innerText")?
            .as_str()
            .unwrap_or_default()
            .contains(&peer)
    );

    submit(&mut b, "token", token, "token-form")?;
    b.wait_for("document.body.dataset.ready === 'node'", WAIT)?;
    let facts = b.eval("document.getElementById('node-facts').textContent")?;
    ensure!(facts.as_str().is_some_and(|s| s.contains(&peer)), "{facts}");
    // The page's own requests were the only 401s; nothing else went wrong.
    let errors = b.console_errors()?;
    let unexpected: Vec<_> = errors
        .iter()
        .filter(|e| !e.contains("status of 401"))
        .collect();
    ensure!(unexpected.is_empty(), "console errors: {unexpected:#?}");
    Ok(())
}
