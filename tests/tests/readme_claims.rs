//! Claims of the README and docs/ that no other test exercised: `--help` of every command,
//! a positive `GET /v1/car` export and `GET /v1/blocks/{cid}`, and `since` given as an age.

use std::collections::BTreeSet;

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
