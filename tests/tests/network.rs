//! Real node processes on loopback forming a network: brokers and a peer, subscriptions on
//! different nodes in all three filter syntaxes, events published from every node. Each
//! subscriber must get exactly the events the oracle expects, once each, in `seq` order
//! per (author, topic); roots spread over brokers; killing a node never stops the others.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tidings_tests::oracle::Filter;
use tidings_tests::workloads::network::{FILTERS, ROOTS, body};
use tidings_tests::{NodeProcess, poll, sse_subscribe};

/// Starts `brokers` brokers and `peers` peer-role nodes joined through the first broker, and
/// waits until every node knows every broker.
fn network(
    dir: &std::path::Path,
    brokers: usize,
    peers: usize,
    k: usize,
) -> Result<Vec<NodeProcess>> {
    let k = k.to_string();
    let first = NodeProcess::start(&dir.join("b0"), &["--replication", &k])?;
    let boot = first.p2p_addr()?;
    let mut nodes = vec![first];
    for i in 1..brokers {
        nodes.push(NodeProcess::start(
            &dir.join(format!("b{i}")),
            &["--replication", &k, "--bootstrap", &boot],
        )?);
    }
    for i in 0..peers {
        nodes.push(NodeProcess::start(
            &dir.join(format!("p{i}")),
            &["--replication", &k, "--bootstrap", &boot, "--role", "peer"],
        )?);
    }
    for n in &nodes {
        poll(Duration::from_secs(60), || {
            (n.status().ok()?["brokers"].as_u64()? == brokers as u64).then_some(())
        })
        .with_context(|| {
            format!(
                "{} never learned all {brokers} brokers: {:?}",
                n.api,
                n.status().ok()
            )
        })?;
    }
    Ok(nodes)
}

fn run(brokers: usize, peers: usize, k: usize, seed: u64, events: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nodes = network(dir.path(), brokers, peers, k)?;
    let filters: Vec<Filter> = FILTERS
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<Result<_, _>>()?;

    // Every filter is subscribed on two different nodes (the peer included).
    let mut subs: Vec<(usize, usize, std::net::TcpStream, mpsc::Receiver<String>)> = Vec::new();
    for (fi, f) in FILTERS.iter().enumerate() {
        for n in [fi % nodes.len(), (fi + 1 + nodes.len() / 2) % nodes.len()] {
            let url = reqwest::Url::parse_with_params(
                &format!("{}/v1/subscribe", nodes[n].api),
                &[("filter", f)],
            )?;
            let (stream, rx) = sse_subscribe(&url)?;
            subs.push((fi, n, stream, rx));
        }
    }
    // Each subscription is leased on every member of its root's set.
    let want_leases = subs.len() * k.min(brokers);
    poll(Duration::from_secs(30), || {
        let total: u64 = nodes
            .iter()
            .filter_map(|n| n.status().ok()?["leases"].as_u64())
            .sum();
        (total == want_leases as u64).then_some(())
    })
    .context("leases never all placed")?;

    // Publish from every node, round robin; remember what the oracle expects.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut published: Vec<(String, String, u64, Value, String)> = Vec::new(); // cid, topic, seq, body, author node
    for i in 0..events {
        let root = ROOTS[rng.random_range(0..ROOTS.len())];
        let (topic, b) = body(&mut rng, root, i);
        let n = &nodes[i % nodes.len()];
        let (status, v) = n.api().publish(&topic, &b)?;
        ensure!(
            status == 200,
            "publish on {} of {topic}: {status} {v}",
            n.api
        );
        let copies = v["copies"].as_u64().unwrap_or(0) as usize;
        ensure!(
            copies > k.min(brokers) / 2,
            "{topic}: only {copies} copies acknowledged"
        );
        published.push((
            v["cid"].as_str().context("cid")?.to_string(),
            topic,
            v["seq"].as_u64().context("seq")?,
            b,
            n.api.clone(),
        ));
    }

    // Sentinels: from every node, an event matching each filter, on topics the workload used
    // (so on streams a subscriber follows). A subscriber stops at the last of the sentinels its
    // filter matches: an extra or duplicate delivery of the workload has come before then.
    let mut sentinels: Vec<(String, &str, Value)> = Vec::new();
    for n in &nodes {
        for (topic, b) in [
            ("/stocks/x/A", json!({"order": "buy", "price": 1.0})),
            ("/stocks/x/A", json!({"order": "sell", "number": 99})),
            ("/fruits/apple", json!({"ripe": true})),
            ("/docs/d0/p0", json!({})),
            ("/news/t0", json!({"score": 95})),
            ("/chat/room1", json!({"msg": "end"})),
        ] {
            let mut b = b;
            b["sentinel"] = json!(true);
            let (status, v) = n.api().publish(topic, &b)?;
            ensure!(status == 200, "sentinel on {}: {status} {v}", n.api);
            sentinels.push((v["cid"].as_str().context("cid")?.to_string(), topic, b));
        }
    }

    for (fi, n, _, rx) in &subs {
        let expected: Vec<&(String, String, u64, Value, String)> = published
            .iter()
            .filter(|(_, t, _, b, _)| filters[*fi].matches(t, b))
            .collect();
        ensure!(
            !expected.is_empty(),
            "filter {} matched nothing: thin test data",
            FILTERS[*fi]
        );
        let ends: Vec<String> = sentinels
            .iter()
            .filter(|(_, t, b)| filters[*fi].matches(t, b))
            .map(|(c, _, _)| c.clone())
            .collect();
        ensure!(
            ends.len() >= nodes.len(),
            "{}: its own sentinels do not match it",
            FILTERS[*fi]
        );
        let got =
            tidings_tests::collect_until(rx, &ends, &format!("{} on node {n}", FILTERS[*fi]))?;
        let got_set: BTreeSet<&String> = got.iter().collect();
        ensure!(
            got_set.len() == got.len(),
            "{}: duplicates delivered",
            FILTERS[*fi]
        );
        let want_set: BTreeSet<&String> = expected.iter().map(|e| &e.0).collect();
        if got_set != want_set {
            bail!(
                "{} on node {n}: extra {:?}, missing {:?}",
                FILTERS[*fi],
                got_set.difference(&want_set).collect::<Vec<_>>(),
                want_set.difference(&got_set).collect::<Vec<_>>()
            );
        }
        // seq order per (author, topic).
        let info: HashMap<&String, (&String, u64, &String)> = published
            .iter()
            .map(|(c, t, s, _, a)| (c, (t, *s, a)))
            .collect();
        let mut last: HashMap<(&String, &String), u64> = HashMap::new();
        for c in &got {
            let (t, s, a) = info[c];
            if let Some(prev) = last.insert((a, t), s) {
                ensure!(s > prev, "{}: seq {s} after {prev} on {t}", FILTERS[*fi]);
            }
        }
    }

    // Roots spread over brokers: not every root has the same rendezvous members.
    let mut sets: BTreeSet<Vec<usize>> = BTreeSet::new();
    for root in ROOTS {
        let members: Vec<usize> = (0..brokers)
            .filter(|b| {
                nodes[*b].status().ok().is_some_and(|s| {
                    s["rendezvous"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|x| x == root))
                })
            })
            .collect();
        sets.insert(members);
    }
    if k < brokers {
        ensure!(
            sets.len() > 1,
            "every root has the same rendezvous set: {sets:?}"
        );
    }

    // Killing a broker stops no other node, and publishing resumes on the rest.
    let mut nodes = nodes;
    let mut victim = nodes.remove(1);
    victim.kill();
    for n in &nodes {
        ensure!(
            n.status().is_ok(),
            "{} stopped answering after a kill",
            n.api
        );
    }
    for root in ROOTS {
        let topic = format!("/{root}/after-kill");
        poll(Duration::from_secs(60), || {
            let (status, _) = nodes[0].api().publish(&topic, &json!({"x": 1})).ok()?;
            (status == 200).then_some(())
        })
        .with_context(|| format!("publishing to {topic} never resumed after a broker died"))?;
    }
    eprintln!(
        "network test: {brokers} brokers + {peers} peers, K={k}: {} events, {} subscriptions, {} distinct rendezvous sets",
        published.len(),
        subs.len(),
        sets.len()
    );
    Ok(())
}

#[test]
fn three_nodes_two_brokers_and_a_peer() -> Result<()> {
    run(2, 1, 3, 0x3_0de5, 200)
}

#[test]
fn five_nodes_four_brokers_and_a_peer_k2() -> Result<()> {
    run(4, 1, 2, 0x5_0de5, 300)
}
