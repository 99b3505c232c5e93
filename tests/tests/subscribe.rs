//! Subscriptions on a real node process: WebSocket, SSE and `tidings sub` subscribers with
//! filters in all three syntaxes receive exactly the events the oracle expects, once
//! each, in publish order; disconnecting removes their entries.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tidings_tests::oracle::Filter;
use tidings_tests::workloads::subscribe::{FILTERS, events};
use tidings_tests::{NodeProcess, collect, line_channel, poll, sse_subscribe, tidings_bin};

#[test]
fn websocket_sse_and_cli_subscribers_get_exactly_the_matching_events() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let filters: Vec<Filter> = FILTERS
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<Result<_, _>>()?;

    // One WebSocket and one SSE subscriber per filter, and `tidings sub` for two of them.
    let mut feeds: Vec<(String, usize, mpsc::Receiver<String>)> = Vec::new();
    let mut sockets = Vec::new();
    let mut children = Vec::new();
    for (fi, f) in FILTERS.iter().enumerate() {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/subscribe", node.api),
            &[("filter", f)],
        )?;
        let ws_url = url.as_str().replacen("http://", "ws://", 1);
        let (mut ws, _) = tungstenite::connect(ws_url.as_str()).context("websocket connect")?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            sockets.push(s.try_clone()?);
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(msg) = ws.read() {
                if let tungstenite::Message::Text(t) = msg {
                    let cid = serde_json::from_str::<Value>(t.as_str())
                        .ok()
                        .and_then(|v| v["cid"].as_str().map(str::to_string));
                    if let Some(cid) = cid {
                        let _ =
                            ws.send(tungstenite::Message::text(json!({"ack": cid}).to_string()));
                    }
                    if tx.send(t.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        feeds.push((format!("websocket {f}"), fi, rx));

        let (stream, rx) = sse_subscribe(&url)?;
        sockets.push(stream);
        feeds.push((format!("sse {f}"), fi, rx));

        if fi < 2 {
            let mut child = Command::new(tidings_bin())
                .args(["sub", f, "--api", &node.api])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let rx = line_channel(child.stdout.take().context("stdout")?);
            feeds.push((format!("tidings sub {f}"), fi, rx));
            children.push(child);
        }
    }
    let api = node.api();
    let total = feeds.len() as u64;
    poll(Duration::from_secs(30), || {
        let (_, s) = api.get_json("/v1/status").ok()?;
        (s["subscriptions"].as_u64() == Some(total)).then_some(())
    })
    .context("subscriptions never all registered")?;

    // Publish, and compute what each filter must receive with the oracle.
    let evs = events(0x5eed_0003, 400);
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); FILTERS.len()];
    // A last event per filter that it certainly matches: whatever a subscriber received beyond
    // its expected set would show up before it.
    let closers = [
        (
            "/stocks/Euronext/CTT",
            json!({"exchange": "Euronext Lisboa", "order": "buy", "number": 100, "price": 5.55, "symbol": "ZZZ"}),
        ),
        ("/fruits/citrus/lime", json!({"closer": true})),
        (
            "/stocks/nyse/A",
            json!({"number": 999, "order": "sell", "price": 1, "symbol": "A"}),
        ),
    ];
    let all = evs.iter().map(|(t, b)| (t.as_str(), b));
    for (topic, body) in all.chain(closers.iter().map(|(t, b)| (*t, b))) {
        let (status, v) = api.publish(topic, body)?;
        ensure!(status == 200, "publish {topic}: {status} {v}");
        let cid = v["cid"].as_str().context("cid")?.to_string();
        for (fi, f) in filters.iter().enumerate() {
            if f.matches(topic, body) {
                expected[fi].push(cid.clone());
            }
        }
    }
    for (fi, e) in expected.iter().enumerate() {
        ensure!(
            e.len() >= 5,
            "filter {} matches only {} events: the test data is too thin",
            FILTERS[fi],
            e.len()
        );
    }

    for (who, fi, rx) in &feeds {
        let got = collect(rx, expected[*fi].len(), who)?;
        if got != expected[*fi] {
            let extra: Vec<_> = got.iter().filter(|c| !expected[*fi].contains(c)).collect();
            let missing: Vec<_> = expected[*fi].iter().filter(|c| !got.contains(c)).collect();
            bail!(
                "{who}: wrong deliveries: extra {extra:?}, missing {missing:?} (or out of order)"
            );
        }
    }
    eprintln!(
        "subscribe test: {} events, {} subscribers, expected per filter {:?}",
        evs.len() + closers.len(),
        feeds.len(),
        expected.iter().map(Vec::len).collect::<Vec<_>>()
    );

    // Disconnecting cleans up every entry.
    drop(feeds);
    for s in &sockets {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    poll(Duration::from_secs(30), || {
        let (_, s) = api.get_json("/v1/status").ok()?;
        (s["subscriptions"].as_u64() == Some(0)).then_some(())
    })
    .context("subscriptions not cleaned up after disconnect")?;
    Ok(())
}

/// Subscribers opened for the memory test.
const MANY: usize = 1_000;

/// An SSE subscriber costs its node little memory: 1,000 of them, each with its own filter,
/// add under 36 KiB each to the node's resident memory (about 29 KB measured; 46 KB when
/// every connection held its own copy of the API's route table, which serving a bare axum
/// `Router` builds per connection).
#[test]
fn a_thousand_sse_subscribers_cost_their_node_under_36_kib_each() -> Result<()> {
    // Both ends of every connection are open files of this machine's user.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        ensure!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0);
        // Two descriptors per subscriber here (the socket and its reader's), one in the node.
        let want = (3 * MANY + 256) as libc::rlim_t;
        ensure!(
            lim.rlim_max >= want,
            "needs {want} open files, the hard limit is {}",
            lim.rlim_max
        );
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            ensure!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0);
        }
    }
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    // Each through the suite's raw-socket SSE client: a 200, chunked, then a reader thread.
    let open = |k: usize| {
        let filter = format!("/stocks/** where price < {}.{:02}", k / 100, k % 100);
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/subscribe", node.api),
            [("filter", &filter)],
        )?;
        sse_subscribe(&url).with_context(|| format!("subscribing {filter:?}"))
    };
    let rss = || -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("VmRSS")?;
        Ok(kb * 1024)
    };
    // A few first, so what every connection shares (buffers, pools) is already there.
    let warm = (0..20)
        .map(|k| open(10_000 + k))
        .collect::<Result<Vec<_>>>()?;
    let before = rss()?;
    let subs = (0..MANY).map(&open).collect::<Result<Vec<_>>>()?;
    let live = (warm.len() + subs.len()) as u64;
    poll(Duration::from_secs(30), || {
        (node.status().ok()?["subscriptions"].as_u64()? == live).then_some(())
    })
    .context("the node never reported every subscription")?;
    let per = rss()?.saturating_sub(before) / MANY as u64;
    eprintln!("{MANY} SSE subscribers: {per} B of node memory each");
    ensure!(
        per < 36 * 1024,
        "{MANY} SSE subscribers cost the node {per} B each, over 36 KiB"
    );
    Ok(())
}
