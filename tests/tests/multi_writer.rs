//! Two writers on one topic, on different nodes (real processes): the topic's heads fork, a
//! later event from a writer that has seen both links both (`prev` with two parents), every
//! node ends with that one head, and a fetch from a third node walks both branches.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tidings_tests::{Api, NodeProcess, poll};

const TOPIC: &str = "/mw/doc";

fn publish(api: &Api, body: Value) -> Result<(String, Vec<String>)> {
    let (s, v) = api.publish(TOPIC, &body)?;
    ensure!(s == 200, "publish: {s} {v}");
    let cid = v["cid"].as_str().context("cid")?.to_string();
    let ev = api.event(&cid)?;
    let prev = ev["prev"]
        .as_array()
        .context("prev")?
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    Ok((cid, prev))
}

/// `POST /v1/fetch` of `cid` on `api`; the `done` summary.
fn fetch(api: &Api, cid: &str) -> Result<Value> {
    let text = api
        .request(reqwest::Method::POST, "/v1/fetch")
        .body(json!({ "cid": cid }).to_string())
        .send()?
        .text()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("done").cloned())
        .with_context(|| format!("fetch {cid}: no summary in {text}"))
}

fn heads(api: &Api) -> Result<BTreeSet<String>> {
    Ok(api.heads(TOPIC)?.into_iter().collect())
}

#[test]
fn two_writers_fork_a_topic_and_a_later_event_joins_the_branches_everywhere() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = NodeProcess::start(&dir.path().join("a"), &["--replication", "2"])?;
    let boot = a.p2p_addr()?;
    let b = NodeProcess::start(
        &dir.path().join("b"),
        &["--replication", "2", "--bootstrap", &boot],
    )?;
    let peer = |name: &str| {
        NodeProcess::start(
            &dir.path().join(name),
            &["--replication", "2", "--role", "peer", "--bootstrap", &boot],
        )
    };
    let (w1, w2, third) = (peer("w1")?, peer("w2")?, peer("third")?);
    for n in [&a, &b, &w1, &w2, &third] {
        poll(Duration::from_secs(30), || {
            (n.status().ok()?["brokers"].as_u64()? == 2).then_some(())
        })
        .context("a node never learnt both brokers")?;
    }

    // Each writer publishes knowing nothing of the other: two branches.
    let (x1, p) = publish(&w1.api(), json!({"by": "w1", "n": 1}))?;
    ensure!(p.is_empty(), "the first event links nothing: {p:?}");
    let (y1, p) = publish(&w2.api(), json!({"by": "w2", "n": 1}))?;
    ensure!(p.is_empty(), "w2 knew nothing of w1's event: {p:?}");
    let fork: BTreeSet<String> = [x1.clone(), y1.clone()].into();
    for (n, name) in [(&a, "a"), (&b, "b")] {
        poll(Duration::from_secs(20), || {
            (heads(&n.api()).ok()? == fork).then_some(())
        })
        .with_context(|| {
            format!(
                "{name}'s heads never showed the fork: {:?}",
                heads(&n.api())
            )
        })?;
    }

    // w1 learns of w2's branch (a fetch), and its next event links both.
    let done = fetch(&w1.api(), &y1)?;
    ensure!(done["complete"] == json!(true), "fetch of y1: {done}");
    ensure!(heads(&w1.api())? == fork, "w1 holds both branches");
    let (x2, p) = publish(&w1.api(), json!({"by": "w1", "n": 2}))?;
    let parents: BTreeSet<String> = p.iter().cloned().collect();
    ensure!(
        p.len() == 2 && parents == fork,
        "the joining event's prev is {p:?}, want both heads"
    );
    ensure!(
        p[0] == x1,
        "its author's own previous event comes first: {p:?}"
    );

    // Every node ends with the one head: the brokers by replication, the other writer and the
    // third node by fetching it (which walks both branches).
    let one: BTreeSet<String> = [x2.clone()].into();
    for (n, name) in [(&a, "a"), (&b, "b"), (&w1, "w1")] {
        poll(Duration::from_secs(20), || {
            (heads(&n.api()).ok()? == one).then_some(())
        })
        .with_context(|| format!("{name} never came to one head: {:?}", heads(&n.api())))?;
    }
    let done = fetch(&w2.api(), &x2)?;
    ensure!(done["complete"] == json!(true), "w2's fetch: {done}");
    ensure!(
        heads(&w2.api())? == one,
        "w2's heads: {:?}",
        heads(&w2.api())
    );
    let done = fetch(&third.api(), &x2)?;
    ensure!(
        done["complete"] == json!(true) && done["new_blocks"] == json!(3),
        "the third node's fetch must walk both branches (3 new blocks): {done}"
    );
    for cid in [&x1, &y1, &x2] {
        let (s, _) = third.api().get_json(&format!("/v1/events/{cid}"))?;
        ensure!(s == 200, "the third node lacks {cid}");
    }
    ensure!(heads(&third.api())? == one, "the third node's heads");
    Ok(())
}
