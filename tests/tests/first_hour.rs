//! What a new user meets in the first hour, with real node processes: `tidings sub` resuming
//! across node restarts, CORS, `Last-Event-ID`, `since` ages, the durable 409, `pub --file`,
//! one `--api` form, the metrics, and the clearer messages.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tidings_tests::{
    Api, NodeProcess, SseFrame, line_channel, poll, sse_frames, tidings, tidings_bin,
};

/// A `tidings sub` child with its stdout lines and its stderr (to a file, read on demand).
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::path::PathBuf,
}

impl Sub {
    fn start(args: &[&str], stderr: std::path::PathBuf) -> Result<Sub> {
        let mut child = Command::new(tidings_bin())
            .arg("sub")
            .args(args)
            .env_remove("TIDINGS_API")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let lines = line_channel(child.stdout.take().context("stdout")?);
        let sub = Sub {
            child,
            lines,
            stderr,
        };
        poll(Duration::from_secs(30), || {
            sub.err().contains("subscribed:").then_some(())
        })
        .with_context(|| format!("tidings sub never subscribed: {}", sub.err()))?;
        Ok(sub)
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process: what happens meanwhile happens while
    /// it cannot read, so it must be caught up by the resume, not by live delivery.
    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) on our own child, which has not been reaped.
        ensure!(unsafe { libc::kill(pid, sig) } == 0, "kill({pid}, {sig})");
        Ok(())
    }

    fn err(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Reads events until one whose body has `"marker": true`; returns the bodies' `n` before
    /// it, in order.
    fn until_marker(&self) -> Result<Vec<u64>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).with_context(|| {
                format!(
                    "no marker after {} events; stderr: {}",
                    got.len(),
                    self.err()
                )
            })?;
            let v: Value = serde_json::from_str(&line)?;
            if v["body"]["marker"] == json!(true) {
                return Ok(got);
            }
            got.push(v["body"]["n"].as_u64().context("n")?);
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of a node's API.
fn port_of(node: &NodeProcess) -> Result<u16> {
    reqwest::Url::parse(&node.api)?
        .port()
        .context("API URL without a port")
}

/// Publishes `{"n": n}` for each `n`, on `topic`; the `n` acknowledged.
fn publish_ns(api: &Api, topic: &str, ns: std::ops::Range<u64>) -> Result<Vec<u64>> {
    let mut acked = Vec::new();
    for n in ns {
        let (s, v) = api.publish(topic, &json!({ "n": n }))?;
        ensure!(s == 200, "publish {n}: {s} {v}");
        acked.push(n);
    }
    Ok(acked)
}

/// Exactly `want`, in order: nothing lost, nothing repeated.
fn exactly(got: &[u64], want: &[u64], who: &str) -> Result<()> {
    let unique: HashSet<_> = got.iter().collect();
    ensure!(
        unique.len() == got.len(),
        "{who}: {} events repeated: {got:?}",
        got.len() - unique.len()
    );
    ensure!(got == want, "{who}: got {got:?}, want {want:?}");
    Ok(())
}

#[test]
fn a_plain_tidings_sub_resumes_across_a_node_restart_with_nothing_lost_or_repeated() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let mut node = NodeProcess::start(&data, &[])?;
    let port = port_of(&node)?;
    // The client is given HOST:PORT, the node's own form of the address.
    let addr = format!("127.0.0.1:{port}");
    let sub = Sub::start(&["/r/**", "--api", &addr], dir.path().join("sub.err"))?;
    let mut once = Sub::start(
        &["/r/**", "--api", &addr, "--no-reconnect"],
        dir.path().join("once.err"),
    )?;

    let mut want = publish_ns(&node.api(), "/r/x", 0..25)?;
    // The subscriber is frozen while the node is killed, restarted, and published to: the
    // events it did not print before, and those published while it was away, come from the
    // replay it resumes with (those printed already must not come twice).
    sub.signal(libc::SIGSTOP)?;
    node.kill();
    // Without reconnection, the end of the connection is the end of the command.
    let status = poll(Duration::from_secs(30), || {
        once.child.try_wait().ok().flatten()
    })
    .context("tidings sub --no-reconnect outlived its connection")?;
    ensure!(
        !status.success() && once.err().contains("connection lost"),
        "--no-reconnect: {status}, {}",
        once.err()
    );
    let node = NodeProcess::start_with_api(&data, &addr, None, &[])?;
    want.extend(publish_ns(&node.api(), "/r/x", 25..40)?);
    sub.signal(libc::SIGCONT)?;
    want.extend(publish_ns(&node.api(), "/r/x", 40..50)?);
    let (s, v) = node.api().publish("/r/x", &json!({ "marker": true }))?;
    ensure!(s == 200, "marker: {s} {v}");
    let got = sub.until_marker()?;
    exactly(&got, &want, "tidings sub across a restart")?;
    let err = sub.err();
    ensure!(
        err.contains("connection lost")
            && err.contains("reconnected: resuming with the events since"),
        "tidings sub did not say it reconnected:\n{err}"
    );
    Ok(())
}

#[test]
fn a_durable_tidings_sub_found_through_its_data_dir_follows_a_restarted_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let mut node = NodeProcess::start(&data, &[])?;
    let data_arg = data.to_str().context("path")?;
    let sub = Sub::start(
        &["--durable", "follow", "/d/**", "--data", data_arg],
        dir.path().join("sub.err"),
    )?;
    let mut want = publish_ns(&node.api(), "/d/x", 0..20)?;
    // Frozen while the node is away and back: what it missed comes from the durable's backlog.
    sub.signal(libc::SIGSTOP)?;
    node.kill();
    // Back on another port: the client reads the new one from DIR/api.addr.
    let node = NodeProcess::start(&data, &[])?;
    want.extend(publish_ns(&node.api(), "/d/x", 20..30)?);
    sub.signal(libc::SIGCONT)?;
    want.extend(publish_ns(&node.api(), "/d/x", 30..40)?);
    let (s, v) = node.api().publish("/d/x", &json!({ "marker": true }))?;
    ensure!(s == 200, "marker: {s} {v}");
    let got = sub.until_marker()?;
    exactly(&got, &want, "durable tidings sub across a restart")?;
    ensure!(
        sub.err().contains("reconnected: resuming durable follow"),
        "{}",
        sub.err()
    );
    Ok(())
}

#[test]
fn cors_is_off_by_default_and_answers_preflights_for_the_origins_given() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let http = reqwest::blocking::Client::new();
    let preflight = |api: &str, origin: &str| -> Result<reqwest::blocking::Response> {
        Ok(http
            .request(reqwest::Method::OPTIONS, format!("{api}/v1/publish"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()?)
    };
    let allowed = |r: &reqwest::blocking::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };

    let plain = NodeProcess::start(&dir.path().join("plain"), &[])?;
    let r = preflight(&plain.api, "https://app.example")?;
    ensure!(
        allowed(&r).is_none(),
        "CORS on by default: {:?}",
        r.headers()
    );

    // With a token too: browsers send preflights without credentials.
    let node = NodeProcess::start_with_api(
        &dir.path().join("cors"),
        "127.0.0.1:0",
        Some("s3cret"),
        &["--cors-origin", "https://app.example"],
    )?;
    let r = preflight(&node.api, "https://app.example")?;
    ensure!(r.status().is_success(), "preflight answered {}", r.status());
    ensure!(allowed(&r).as_deref() == Some("https://app.example"));
    let methods = r
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(methods.contains("POST"), "allowed methods {methods}");
    let r = http
        .get(format!("{}/v1/status", node.api))
        .header("origin", "https://app.example")
        .bearer_auth("s3cret")
        .send()?;
    ensure!(r.status() == 200 && allowed(&r).as_deref() == Some("https://app.example"));
    // Another origin gets no grant.
    let r = preflight(&node.api, "https://evil.example")?;
    ensure!(
        allowed(&r).is_none(),
        "evil origin allowed: {:?}",
        r.headers()
    );

    // A bad origin is refused at start.
    let (ok, _, err) = tidings(&[
        "node",
        "--data",
        dir.path().join("bad").to_str().context("path")?,
        "--api",
        "127.0.0.1:0",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--cors-origin",
        "app.example/x",
    ])?;
    ensure!(!ok && err.contains("is not an origin"), "{err}");
    Ok(())
}

/// Collects SSE events until the one whose body is the marker; their `n`, and the frames.
fn sse_until_marker(rx: &mpsc::Receiver<SseFrame>) -> Result<(Vec<u64>, Vec<SseFrame>)> {
    let mut ns = Vec::new();
    let mut frames = Vec::new();
    loop {
        let f = rx
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("no marker after {ns:?}"))?;
        ensure!(f.event.is_empty(), "stream ended: {f:?}");
        let v: Value = serde_json::from_str(&f.data)?;
        if v["body"]["marker"] == json!(true) {
            return Ok((ns, frames));
        }
        ns.push(v["body"]["n"].as_u64().context("n")?);
        frames.push(f);
    }
}

#[test]
fn an_sse_client_resuming_with_last_event_id_loses_nothing_and_repeats_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("node"), &[])?;
    let api = node.api();
    // Plain (opened with since=0, as an EventSource URL would keep it) and durable.
    for (topic, durable) in [("/le/plain", None), ("/le/durable", Some("browser"))] {
        let filter = format!("{topic} where n exists or marker = true");
        let mut q = vec![("filter", filter.as_str()), ("since", "0")];
        if let Some(d) = durable {
            q.retain(|(k, _)| *k != "since");
            q.push(("durable", d));
        }
        let url = reqwest::Url::parse_with_params(&format!("{}/v1/subscribe", node.api), &q)?;
        let (socket, rx) = sse_frames(&url, &[])?;
        let first = publish_ns(&api, topic, 0..10)?;
        // The client reads four, then its connection drops with the rest unread.
        let mut read = Vec::new();
        for _ in 0..4 {
            read.push(rx.recv_timeout(Duration::from_secs(30))?);
        }
        socket.shutdown(std::net::Shutdown::Both)?;
        drop(rx);
        let away = publish_ns(&api, topic, 10..15)?;
        let last = read.last().context("read")?.id.clone();
        let (_socket, rx) = sse_frames(&url, &[("Last-Event-ID", &last)])?;
        let live = publish_ns(&api, topic, 15..20)?;
        let (s, v) = api.publish(topic, &json!({ "marker": true }))?;
        ensure!(s == 200, "{s} {v}");
        let (got, _) = sse_until_marker(&rx)?;
        let want: Vec<u64> = first[4..]
            .iter()
            .chain(&away)
            .chain(&live)
            .copied()
            .collect();
        exactly(&got, &want, &format!("{topic} resumed"))?;
    }
    // An event this node never saw cannot be resumed after (plain): a clear 404.
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", node.api),
        &[("filter", "/le/**")],
    )?;
    let unknown = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let e = sse_frames(&url, &[("Last-Event-ID", unknown)])
        .err()
        .context("unknown Last-Event-ID accepted")?;
    ensure!(e.to_string().contains("404"), "{e}");
    let e = sse_frames(&url, &[("Last-Event-ID", "not-a-cid")])
        .err()
        .context("bad Last-Event-ID accepted")?;
    ensure!(e.to_string().contains("400"), "{e}");
    Ok(())
}

#[test]
fn since_takes_ages_as_the_cli_does() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("node"), &[])?;
    let api = node.api();
    publish_ns(&api, "/age/x", 0..3)?;
    let (s, v) = api.publish("/age/x", &json!({ "marker": true }))?;
    ensure!(s == 200, "{s} {v}");
    for since in ["15m", "2h", "0"] {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/subscribe", node.api),
            &[("filter", "/age/**"), ("since", since)],
        )?;
        let (_s, rx) = sse_frames(&url, &[])?;
        let (got, _) = sse_until_marker(&rx)?;
        ensure!(got == [0, 1, 2], "since={since}: {got:?}");
    }
    let (code, v) = api.get_json("/v1/subscribe?filter=/age/**&since=soon")?;
    ensure!(
        code == 400 && v["error"].as_str().unwrap_or_default().contains("15m"),
        "{code} {v}"
    );
    Ok(())
}

#[test]
fn a_second_connection_to_a_durable_in_use_gets_409_at_once_and_a_reconnection_does_not()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("node"), &[])?;
    let mut first =
        tidings_tests::ws_durable(&node.api, "/busy/**", "one", Duration::from_secs(30))?;
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", node.api),
        &[("filter", "/busy/**"), ("durable", "one")],
    )?;
    let started = Instant::now();
    let e = sse_frames(&url, &[])
        .err()
        .context("a second connection was let in")?;
    let took = started.elapsed();
    ensure!(e.to_string().contains("409"), "{e}");
    ensure!(
        e.to_string().contains("in use by another connection"),
        "{e}"
    );
    ensure!(took < Duration::from_secs(2), "the 409 took {took:?}");

    // A client that closes and comes straight back is waited for, not refused.
    first.close(None)?;
    let _ = first.read();
    let mut again =
        tidings_tests::ws_durable(&node.api, "/busy/**", "one", Duration::from_secs(30))?;
    again.close(None)?;
    Ok(())
}

/// The value of one series in `/metrics` text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

#[test]
fn metrics_count_a_known_sequence_of_publishes_refusals_and_deliveries() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let token = "t0ken";
    let node =
        NodeProcess::start_with_api(&dir.path().join("node"), "127.0.0.1:0", Some(token), &[])?;
    let api = node.api().with_token(token);
    let mut ws = {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/subscribe", node.api.replace("http://", "ws://")),
            &[("filter", "/m/** where keep = true")],
        )?;
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(url.as_str())?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (ws, _) = tungstenite::connect(req)?;
        ws
    };
    // Five publishes, three of them matching the subscriber.
    for i in 0..5 {
        let (s, v) = api.publish("/m/x", &json!({ "i": i, "keep": i % 2 == 0 }))?;
        ensure!(s == 200, "{s} {v}");
    }
    let mut got = 0;
    while got < 3 {
        if let tungstenite::Message::Text(_) = ws.read()? {
            got += 1;
        }
    }
    // Six refusals, each for another reason.
    let post = |body: Vec<u8>, with_token: bool| -> Result<u16> {
        let mut r = reqwest::blocking::Client::new()
            .post(format!("{}/v1/publish", node.api))
            .header("content-type", "application/json")
            .body(body);
        if with_token {
            r = r.bearer_auth(token);
        }
        Ok(r.send()?.status().as_u16())
    };
    let big = json!({"topic": "/m/x", "body": {"blob": "x".repeat(1_100_000)}}).to_string();
    let refusals: [(&str, Vec<u8>, bool, u16); 6] = [
        ("not JSON", b"{nope".to_vec(), true, 400),
        (
            "unknown field",
            br#"{"topic": "/m/x", "body": 1, "x": 2}"#.to_vec(),
            true,
            400,
        ),
        (
            "bad topic",
            br#"{"topic": "m/x", "body": 1}"#.to_vec(),
            true,
            400,
        ),
        ("no topic", br#"{"body": 1}"#.to_vec(), true, 400),
        ("too large", big.into_bytes(), true, 413),
        (
            "no token",
            br#"{"topic": "/m/x", "body": 1}"#.to_vec(),
            false,
            401,
        ),
    ];
    for (what, body, with_token, want) in refusals {
        let got = post(body, with_token)?;
        ensure!(got == want, "{what}: {got}, want {want}");
    }
    let (s, text) = {
        let r = api.request(reqwest::Method::GET, "/metrics").send()?;
        (r.status().as_u16(), r.text()?)
    };
    ensure!(s == 200, "/metrics: {s}");
    let want: BTreeMap<&str, f64> = [
        ("tidings_published_events_total", 5.0),
        ("tidings_publish_failures_total", 6.0),
        ("tidings_publish_ack_seconds_count", 5.0),
        // Alone, the node is its own primary: both parts of each acknowledgement happen here.
        ("tidings_publish_commit_seconds_count", 5.0),
        ("tidings_primary_store_seconds_count", 5.0),
        ("tidings_deliveries_total{to=\"local\"}", 3.0),
        ("tidings_match_deliver_seconds_count", 3.0),
        ("tidings_delivery_drops_total{reason=\"too_slow\"}", 0.0),
        (
            "tidings_subscribers{transport=\"websocket\",kind=\"live\"}",
            1.0,
        ),
        ("tidings_subscribers{transport=\"sse\",kind=\"live\"}", 0.0),
        ("tidings_subscription_leases", 1.0),
        ("tidings_rendezvous_roots", 1.0),
        ("tidings_brokers", 1.0),
        ("tidings_peers", 0.0),
        ("tidings_store_blocks", 5.0),
    ]
    .into_iter()
    .collect();
    for (name, v) in want {
        ensure!(
            series(&text, name) == Some(v),
            "{name} = {:?}, want {v}\n{text}",
            series(&text, name)
        );
    }
    ensure!(series(&text, "tidings_store_bytes").is_some_and(|b| b > 0.0));
    // Five publishes went through the store's writer; however they were grouped, each commit
    // carried at least one write and all five were carried.
    let commits = series(&text, "tidings_store_commits_total").unwrap_or(0.0);
    let ops = series(&text, "tidings_store_commit_operations_total").unwrap_or(0.0);
    ensure!(
        commits >= 1.0 && ops >= 5.0 && ops >= commits,
        "commits {commits}, operations {ops}\n{text}"
    );
    // Checkpoints are durable commits of the writer that emptied its log: never more of them.
    ensure!(
        series(&text, "tidings_store_checkpoints_total").is_some_and(|c| c <= commits),
        "checkpoints\n{text}"
    );
    ensure!(series(&text, "tidings_publish_ack_seconds_bucket{le=\"+Inf\"}") == Some(5.0));
    ws.close(None)?;
    // The subscriber is counted until it is gone.
    let gone = poll(Duration::from_secs(10), || {
        let t = api
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .ok()?
            .text()
            .ok()?;
        (series(
            &t,
            "tidings_subscribers{transport=\"websocket\",kind=\"live\"}",
        ) == Some(0.0))
        .then_some(())
    });
    ensure!(gone.is_some(), "the closed subscriber is still counted");
    Ok(())
}

#[test]
fn pub_takes_a_large_pretty_printed_file_and_json_lines() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("node"), &[])?;
    // 300 KiB of pretty-printed JSON: over the 128 KiB a single shell argument may hold.
    let doc = json!({
        "title": "report",
        "rows": (0..3000).map(|i| json!({"i": i, "name": format!("row {i:05}"), "ok": i % 3 == 0, "v": i as f64 / 8.0})).collect::<Vec<_>>(),
    });
    let file = dir.path().join("body.json");
    std::fs::write(&file, serde_json::to_string_pretty(&doc)?)?;
    ensure!(std::fs::metadata(&file)?.len() > 200 * 1024);
    let (ok, out, err) = tidings(&[
        "pub",
        "/docs/report",
        "--file",
        file.to_str().context("path")?,
        "--api",
        &node.api,
    ])?;
    ensure!(ok, "pub --file: {err}");
    let cid = out.trim();
    ensure!(
        node.api().event(cid)?["body"] == doc,
        "the body came back different"
    );

    // --jsonl from stdin, and from a file; `-` as before.
    let lines = "{\"n\": 1}\n\n{\"n\": 2}\n";
    let jsonl = dir.path().join("events.jsonl");
    std::fs::write(&jsonl, lines)?;
    let mut cids = Vec::new();
    for args in [
        vec!["pub", "/docs/lines", "--jsonl", "--api", &node.api],
        vec!["pub", "/docs/lines", "-", "--api", &node.api],
        vec![
            "pub",
            "/docs/lines",
            "--jsonl",
            "--file",
            jsonl.to_str().context("path")?,
            "--api",
            &node.api,
        ],
    ] {
        let mut child = Command::new(tidings_bin())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(lines.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Vec<String> = String::from_utf8(out.stdout)?
            .lines()
            .map(str::to_string)
            .collect();
        ensure!(printed.len() == 2, "{args:?} printed {printed:?}");
        cids.extend(printed);
    }
    let ns: Vec<Value> = cids
        .iter()
        .map(|c| Ok(node.api().event(c)?["body"]["n"].clone()))
        .collect::<Result<_>>()?;
    ensure!(
        ns == [json!(1), json!(2), json!(1), json!(2), json!(1), json!(2)],
        "{ns:?}"
    );

    // `tidings pub --jsonl --file` of `lines` on `topic`: (succeeded, stdout, stderr).
    let pub_lines = |topic: &str, lines: &str| -> Result<(bool, String, String)> {
        std::fs::write(&jsonl, lines)?;
        tidings(&[
            "pub",
            topic,
            "--jsonl",
            "--file",
            jsonl.to_str().context("path")?,
            "--api",
            &node.api,
        ])
    };

    // A bad line stops there and says which.
    let (ok, out, err) = pub_lines("/docs/lines", "{\"n\": 3}\n{nope\n{\"n\": 4}\n")?;
    ensure!(
        !ok && out.lines().count() == 1 && err.contains("line 2"),
        "{out} {err}"
    );

    // Many lines go in flight together and come out in order: one CID per line, the author's
    // events numbered in line order.
    let many: String = (1..=1000).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let (ok, out, err) = pub_lines("/docs/many", &many)?;
    ensure!(ok, "pub --jsonl of 1,000 lines: {err}");
    let printed: Vec<&str> = out.lines().collect();
    ensure!(printed.len() == 1000, "printed {} CIDs", printed.len());
    let mut last_seq = None;
    for (i, cid) in printed.iter().enumerate() {
        let ev = node.api().event(cid)?;
        ensure!(
            ev["body"]["n"] == json!(i + 1),
            "line {} printed {ev}",
            i + 1
        );
        let seq = ev["seq"].as_u64().context("seq")?;
        ensure!(
            last_seq.is_none_or(|l: u64| seq == l + 1),
            "line {}: seq {seq} after {last_seq:?}",
            i + 1
        );
        last_seq = Some(seq);
    }

    // A line the node refuses (too large) stops the reading and says which; a line already
    // sent after it was published anyway, and the error says so.
    let huge = format!("{{\"text\": \"{}\"}}", "x".repeat(1_100_000));
    let (ok, out, err) = pub_lines(
        "/docs/refused",
        &format!("{{\"n\": 5}}\n{huge}\n{{\"n\": 6}}\n"),
    )?;
    ensure!(!ok && err.contains("line 2"), "{out} {err}");
    let printed: Vec<&str> = out.lines().collect();
    ensure!(
        node.api().event(printed.first().context("line 1's CID")?)?["body"]["n"] == json!(5),
        "{out}"
    );
    match printed.len() {
        1 => ensure!(!err.contains("later line"), "{err}"),
        2 => {
            ensure!(err.contains("1 later line(s)"), "{err}");
            ensure!(
                node.api().event(printed[1])?["body"]["n"] == json!(6),
                "{out}"
            );
        }
        n => bail!("{n} CIDs printed for 2 publishable lines: {out}"),
    }
    Ok(())
}

#[test]
fn clients_take_either_api_form_or_a_data_dir_and_say_clearly_what_is_missing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let node = NodeProcess::start(&data, &[])?;
    let port = port_of(&node)?;
    let data_arg = data.to_str().context("path")?;
    for api in [
        vec!["--api".to_string(), format!("127.0.0.1:{port}")],
        vec!["--api".to_string(), format!("http://127.0.0.1:{port}/")],
        vec!["--data".to_string(), data_arg.to_string()],
    ] {
        let mut args = vec!["status"];
        args.extend(api.iter().map(String::as_str));
        let (ok, out, err) = tidings(&args)?;
        ensure!(ok, "status {api:?}: {err}");
        ensure!(
            out.starts_with("peer id ") && out.contains("\nstore "),
            "{out}"
        );
    }
    let out = Command::new(tidings_bin())
        .args(["status", "--json"])
        .env("TIDINGS_API", format!("127.0.0.1:{port}"))
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["api"] == json!(node.api), "{v}");

    // A bad address says what it wants.
    let (ok, _, err) = tidings(&["status", "--api", "127.0.0.1"])?;
    ensure!(!ok && err.contains("HOST:PORT"), "{err}");

    // get of an event not held points at fetch; heads and export of an unknown topic say so.
    let missing = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let (ok, _, err) = tidings(&["get", missing, "--api", &node.api])?;
    ensure!(
        !ok && err.contains(&format!("tidings fetch {missing}")),
        "{err}"
    );
    for cmd in ["heads", "export"] {
        let (ok, out, err) = tidings(&[cmd, "/nobody/here", "--api", &node.api])?;
        ensure!(
            !ok && out.is_empty() && err.contains("no events of /nobody/here on this node"),
            "{cmd}: {out} {err}"
        );
    }

    // A bad filter over the API: the message points at the position.
    let (code, v) = node
        .api()
        .get_json("/v1/subscribe?filter=%2Fa%20where%20price%2010")?;
    let msg = v["error"].as_str().unwrap_or_default();
    ensure!(
        code == 400 && msg.ends_with(&format!("\n  /a where price 10\n  {}^", " ".repeat(15))),
        "{code} {msg:?}"
    );
    // The 404 of an unknown endpoint points into the repository's docs, not elsewhere.
    let (code, v) = node.api().get_json("/v2/nothing")?;
    ensure!(
        code == 404
            && v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("docs/api.md")
    );
    // Logs in a file carry no colour codes.
    ensure!(!node.log().contains('\u{1b}'), "ANSI escapes in the log");
    Ok(())
}

#[test]
fn a_started_node_prints_the_api_flag_its_clients_need() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(tidings_bin())
        .args([
            "node",
            "--api",
            "http://127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data",
        ])
        .arg(dir.path().join("node"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let lines = line_channel(child.stdout.take().context("stdout")?);
    let first = lines.recv_timeout(Duration::from_secs(30))?;
    let hint = lines.recv_timeout(Duration::from_secs(30))?;
    let _ = child.kill();
    let _ = child.wait();
    let api = first.rsplit(' ').next().context("API")?;
    ensure!(
        api.starts_with("http://127.0.0.1:") && !api.ends_with(":0"),
        "{first}"
    );
    ensure!(hint.contains(&format!("--api {api} ")), "{hint}");
    if hint.contains("--api http://127.0.0.1:7700") {
        bail!("hint names the default port: {hint}");
    }
    Ok(())
}
