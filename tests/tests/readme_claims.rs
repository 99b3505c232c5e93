//! Claims of the README and docs/ that no other test exercised: `--help` of every command,
//! a positive `GET /v1/car` export and `GET /v1/blocks/{cid}`, `since` given as an age, a
//! durable subscription over SSE, and hostile bodies to `POST /v1/fetch`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use tidings_ipld_schema::{Event, block::parse_cid, car::read_car};
use tidings_tests::{NodeProcess, collect_until, signed_stream_car, sse_subscribe, tidings};

#[test]
fn every_command_has_a_help_that_says_what_it_does() -> Result<()> {
    let (ok, top, err) = tidings(&["--help"])?;
    ensure!(ok, "tidings --help: {err}");
    let commands: Vec<(String, String)> = top
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .context("no Commands section")?
        .lines()
        .filter_map(|l| {
            let (name, what) = l.trim().split_once(char::is_whitespace)?;
            Some((name.to_string(), what.trim().to_string()))
        })
        .filter(|(name, _)| name != "help")
        .collect();
    let names: BTreeSet<&str> = commands.iter().map(|(n, _)| n.as_str()).collect();
    for must in [
        "node",
        "devnet",
        "pub",
        "sub",
        "unsub-durable",
        "get",
        "fetch",
        "heads",
        "export",
        "import",
        "status",
    ] {
        ensure!(names.contains(must), "`tidings --help` lists no {must}");
    }
    for (name, what) in &commands {
        let (ok, help, err) = tidings(&[name, "--help"])?;
        ensure!(ok, "tidings {name} --help failed: {err}");
        // The summary the command list shows opens its own help, then its usage and options.
        let first = what.split(". ").next().unwrap_or(what);
        ensure!(
            help.starts_with(first),
            "tidings {name} --help does not open with {first:?}:\n{help}"
        );
        ensure!(
            help.contains(&format!("Usage: tidings {name}")),
            "tidings {name} --help: no usage line:\n{help}"
        );
        ensure!(
            help.contains("Options:") && help.contains("-h, --help"),
            "tidings {name} --help: no options:\n{help}"
        );
        // Long help (`--help`) says more than the one line of the list.
        ensure!(
            help.lines().count() > 6,
            "tidings {name} --help is a stub:\n{help}"
        );
    }
    Ok(())
}

#[test]
fn car_export_and_raw_blocks_give_back_the_signed_stream() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let api = node.api();
    let mut cids = Vec::new();
    for i in 0..5 {
        let (s, v) = api.publish("/claims/car", &json!({"i": i}))?;
        ensure!(s == 200, "publish: {s} {v}");
        cids.push(v["cid"].as_str().context("cid")?.to_string());
    }
    // GET /v1/blocks/{cid}: the exact block, whose hash is the CID and which decodes to the
    // event the JSON route shows.
    for (i, cid) in cids.iter().enumerate() {
        let r = api
            .request(reqwest::Method::GET, &format!("/v1/blocks/{cid}"))
            .send()?;
        ensure!(r.status() == 200, "GET /v1/blocks/{cid}: {}", r.status());
        let bytes = r.bytes()?.to_vec();
        tidings_ipld_schema::Block::check(&parse_cid(cid)?, &bytes)
            .with_context(|| format!("block {cid} does not hash to its CID"))?;
        let event = Event::decode(&bytes)?;
        event.verify_signature()?;
        ensure!(
            event.topic == "/claims/car" && event.seq == i as u64 + 1,
            "block {cid}: {} seq {}",
            event.topic,
            event.seq
        );
    }
    // GET /v1/car: a CAR v1 whose root is the head and which holds every block of the stream.
    let r = api
        .request(reqwest::Method::GET, "/v1/car?topic=%2Fclaims%2Fcar")
        .send()?;
    ensure!(r.status() == 200, "GET /v1/car: {}", r.status());
    let car = read_car(&r.bytes()?)?;
    ensure!(
        car.roots == vec![parse_cid(&cids[4])?],
        "CAR roots {:?}, want the head",
        car.roots
    );
    let held: BTreeSet<String> = car.blocks.iter().map(|(c, _)| c.to_string()).collect();
    let want: BTreeSet<String> = cids.iter().cloned().collect();
    ensure!(held == want, "CAR blocks {held:?}, want {want:?}");
    // And it imports into another node whole.
    let other = NodeProcess::start(&dir.path().join("o"), &[])?;
    let bytes = api
        .request(reqwest::Method::GET, "/v1/car?topic=%2Fclaims%2Fcar")
        .send()?
        .bytes()?
        .to_vec();
    let (s, v) = other.api().post_bytes("/v1/car", bytes)?;
    ensure!(s == 200, "import: {s} {v}");
    ensure!(
        other.api().heads("/claims/car")? == vec![cids[4].clone()],
        "imported heads"
    );
    Ok(())
}

#[test]
fn since_as_an_age_replays_what_is_that_recent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let api = node.api();
    // A stream signed in November 2025 (imported), and three events published now.
    let (car, old) = signed_stream_car(7, "/claims/since", 3)?;
    let (s, v) = api.post_bytes("/v1/car", car)?;
    ensure!(s == 200, "import: {s} {v}");
    let mut new = Vec::new();
    for i in 0..3 {
        let (s, v) = api.publish("/claims/since", &json!({"i": i}))?;
        ensure!(s == 200, "publish: {s} {v}");
        new.push(v["cid"].as_str().context("cid")?.to_string());
    }
    let sub = |since: &str| {
        reqwest::Url::parse_with_params(
            &format!("{}/v1/subscribe", node.api),
            &[("filter", "/claims/**"), ("since", since)],
        )
    };
    let all: BTreeSet<String> = old.iter().chain(&new).cloned().collect();
    let recent: BTreeSet<String> = new.iter().cloned().collect();
    let mut subs = Vec::new();
    for (since, want) in [
        ("0", &all),
        ("1h", &recent),
        ("7d", &recent),
        ("3650d", &all),
        ("90s", &recent),
    ] {
        subs.push((since, want, sse_subscribe(&sub(since)?)?));
    }
    // A live sentinel after the replay: each stops there, with exactly what its age covers.
    let (s, v) = api.publish("/claims/since", &json!({"sentinel": true}))?;
    ensure!(s == 200, "sentinel: {s} {v}");
    let end = v["cid"].as_str().context("cid")?.to_string();
    for (since, want, (_sock, rx)) in &subs {
        let got = collect_until(rx, std::slice::from_ref(&end), &format!("since={since}"))?;
        let set: BTreeSet<String> = got.iter().cloned().collect();
        ensure!(
            set.len() == got.len() && &set == *want,
            "since={since}: got {got:?}, want {want:?}"
        );
    }
    // A bad age is a 400 naming `since`.
    let r = reqwest::blocking::get(sub("5 parsecs")?)?;
    ensure!(r.status() == 400, "bad since: {}", r.status());
    ensure!(r.text()?.contains("since"), "the error should name since");
    Ok(())
}

#[test]
fn a_durable_subscription_over_sse_gets_what_it_missed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let api = node.api();
    let url = reqwest::Url::parse_with_params(
        &format!("{}/v1/subscribe", node.api),
        &[("filter", "/sd/**"), ("durable", "sse-d")],
    )?;
    let (sock, rx) = sse_subscribe(&url)?;
    // Live: publish until one arrives (the subscription takes effect a moment after its answer).
    let live = tidings_tests::poll(Duration::from_secs(20), || {
        let (s, v) = api.publish("/sd/x", &json!({"live": true})).ok()?;
        let cid = (s == 200).then(|| v["cid"].as_str().map(str::to_string))??;
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains(&cid) {
                return Some(());
            }
        }
        None
    });
    ensure!(live.is_some(), "nothing arrived on the durable SSE stream");
    // While it is held, the name is taken.
    let r = reqwest::blocking::get(url.clone())?;
    ensure!(r.status() == 409, "a second connection: {}", r.status());
    drop(r);
    // Away: the node has seen the connection go before the events are published.
    sock.shutdown(std::net::Shutdown::Both)?;
    tidings_tests::poll(Duration::from_secs(20), || {
        (node.status().ok()?["subscriptions"].as_u64()? == 0).then_some(())
    })
    .context("the node never saw the SSE connection close")?;
    let mut missed = Vec::new();
    for i in 0..5 {
        let (s, v) = api.publish("/sd/x", &json!({"i": i}))?;
        ensure!(s == 200, "publish: {s} {v}");
        missed.push(v["cid"].as_str().context("cid")?.to_string());
    }
    // Back over SSE with the same name: what it missed, in order, then live (the sentinel).
    let (_sock, rx) = sse_subscribe(&url)?;
    let (s, v) = api.publish("/sd/x", &json!({"sentinel": true}))?;
    ensure!(s == 200, "sentinel: {s} {v}");
    let end = v["cid"].as_str().context("cid")?.to_string();
    let got = collect_until(&rx, &[end], "durable over SSE")?;
    ensure!(got == missed, "got {got:?}, want what it missed {missed:?}");
    Ok(())
}

#[test]
fn hostile_bodies_to_fetch_are_refused_and_the_node_carries_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n"), &[])?;
    let api = node.api();
    let (s, v) = api.publish("/hf/x", &json!({"n": 1}))?;
    ensure!(s == 200, "publish: {s} {v}");
    let cid = v["cid"].as_str().context("cid")?.to_string();
    // Just over the 2 MiB a request body may have (far over, the node answers 413 and closes
    // while the client is still sending, and the client sees a reset instead of the answer).
    let long_until =
        json!({"cid": cid, "until": vec![cid.clone(); (2 << 20) / (cid.len() + 3) + 50]})
            .to_string();
    ensure!(long_until.len() > 2 << 20 && long_until.len() < (2 << 20) + 20_000);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("empty", vec![], &[400]),
        ("not JSON", b"{cid: nope".to_vec(), &[400]),
        ("no cid", br#"{"until": []}"#.to_vec(), &[400]),
        ("cid not a string", br#"{"cid": 5}"#.to_vec(), &[400]),
        (
            "not a CID",
            br#"{"cid": "bafy-not-a-cid"}"#.to_vec(),
            &[400],
        ),
        (
            "bad until",
            format!(r#"{{"cid": "{cid}", "until": ["x"]}}"#).into_bytes(),
            &[400],
        ),
        (
            "until not a list",
            format!(r#"{{"cid": "{cid}", "until": "{cid}"}}"#).into_bytes(),
            &[400],
        ),
        (
            "unknown field",
            format!(r#"{{"cid": "{cid}", "x": 1}}"#).into_bytes(),
            &[400],
        ),
        ("deep nesting", deep.into_bytes(), &[400]),
        ("too large", long_until.into_bytes(), &[413, 400]),
        ("binary", vec![0xff, 0x00, 0xfe, 0x81], &[400]),
    ];
    for (what, body, want) in cases {
        let r = api
            .request(reqwest::Method::POST, "/v1/fetch")
            .header("content-type", "application/json")
            .body(body)
            .send()?;
        let code = r.status().as_u16();
        let text = r.text()?;
        ensure!(want.contains(&code), "{what}: {code} {text}");
        ensure!(
            text.contains("error"),
            "{what}: the refusal should say why: {text}"
        );
    }
    ensure!(node.status().is_ok(), "the node stopped answering");
    // And a good one still works: the event is held already.
    let r = api
        .request(reqwest::Method::POST, "/v1/fetch")
        .body(json!({ "cid": cid }).to_string())
        .send()?;
    ensure!(r.status() == 200, "a good fetch: {}", r.status());
    ensure!(
        r.text()?.contains("\"complete\":true"),
        "a fetch of a held event is complete"
    );
    Ok(())
}
