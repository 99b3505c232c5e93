//! Crash test: a node is killed with SIGKILL at random moments while clients publish. After each
//! restart every acknowledged event must be retrievable, each topic's stream must be one
//! unbroken chain (seq 1..n, each linking the previous), heads and seqs consistent, and the store
//! must open cleanly.
//!
//! Seeded: `TIDINGS_TEST_SEED` (default fixed) picks the kill moments; `TIDINGS_CRASH_ROUNDS`
//! (default 8) how many kills.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tidings_tests::{Api, NodeProcess, chain, poll};

const TOPICS: [&str; 3] = ["/crash/a", "/crash/b", "/crash/c/deep"];

/// An acknowledged publish.
#[derive(Clone, Debug)]
struct Acked {
    topic: &'static str,
    seq: u64,
    cid: String,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn sigkill_during_publish_loses_no_acknowledged_event() -> Result<()> {
    let seed = env_u64("TIDINGS_TEST_SEED", 0x7d1d_5eed);
    let rounds = env_u64("TIDINGS_CRASH_ROUNDS", 8);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut kills = 0;

    for round in 0..rounds {
        let mut node = NodeProcess::start(&data, &[])
            .with_context(|| format!("round {round}: restart after kill (seed {seed:#x})"))?;
        check(
            &node.api(),
            &acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        )
        .with_context(|| {
            format!(
                "round {round}: after restart (seed {seed:#x})\n{}",
                node.log()
            )
        })?;

        // Two publishers on the same topics, so seq assignment races are exercised too.
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..2u64 {
            let (api, stop, acked, failures) =
                (node.api(), stop.clone(), acked.clone(), failures.clone());
            let mut wrng = StdRng::seed_from_u64(seed ^ (round << 8) ^ w);
            workers.push(std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let topic = TOPICS[wrng.random_range(0..TOPICS.len())];
                    let body = json!({"worker": w, "round": round, "i": i, "price": wrng.random_range(1.0..20.0)});
                    i += 1;
                    // A request the kill cut (no answer) promises nothing. An answer is the
                    // node's word: a 200 must carry the CID and seq, and anything else (a 5xx
                    // from a store in trouble, a 4xx for a valid event) is a failure.
                    let Ok((status, v)) = api.publish(topic, &body) else {
                        continue;
                    };
                    match (status, v["cid"].as_str(), v["seq"].as_u64()) {
                        (200, Some(cid), Some(seq)) => {
                            if let Ok(mut a) = acked.lock() {
                                a.push(Acked { topic, seq, cid: cid.to_string() });
                            }
                        }
                        _ => {
                            if let Ok(mut f) = failures.lock() {
                                f.push(format!("round {round}: publish to {topic}: {status} {v}"));
                            }
                        }
                    }
                }
            }));
        }
        // The kill lands at a random moment once publishing is under way.
        let before = acked.lock().map(|a| a.len()).unwrap_or(0);
        let target = before + rng.random_range(1..200usize);
        poll(Duration::from_secs(30), || {
            (acked.lock().map(|a| a.len()).unwrap_or(0) >= target).then_some(())
        })
        .context("publishers made no progress")?;
        std::thread::sleep(Duration::from_micros(rng.random_range(0..5_000)));
        node.kill();
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.join();
        }
        let failed = failures
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        ensure!(
            failed.is_empty(),
            "the node answered publishes with failures (seed {seed:#x}):\n{}\n{}",
            failed.join("\n"),
            node.log()
        );
    }

    let node = NodeProcess::start(&data, &[])?;
    let all = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    check(&node.api(), &all).with_context(|| format!("final check (seed {seed:#x})"))?;
    // Publishing resumes right after the last stored seq.
    let (status, v) = node
        .api()
        .publish(TOPICS[0], &json!({"after": "crashes"}))?;
    ensure!(status == 200, "publish after restart: {status} {v}");
    let last = chain(&node.api(), TOPICS[0])?.len() as u64;
    ensure!(
        v["seq"].as_u64() == Some(last),
        "resumed seq {} but chain has {last}",
        v["seq"]
    );
    eprintln!(
        "crash test: {kills} SIGKILLs, {} acknowledged events, all present",
        all.len()
    );
    Ok(())
}

/// Every acknowledged event is present and in its topic's unbroken chain; counts agree.
fn check(api: &Api, acked: &[Acked]) -> Result<()> {
    let mut by_topic: BTreeMap<&str, Vec<&Acked>> = BTreeMap::new();
    for a in acked {
        by_topic.entry(a.topic).or_default().push(a);
    }
    let mut total = 0u64;
    for topic in TOPICS {
        let c = chain(api, topic)?;
        total += c.len() as u64;
        let in_chain: HashSet<&String> = c.iter().collect();
        let n = c.len() as u64;
        for a in by_topic.get(topic).into_iter().flatten() {
            ensure!(
                in_chain.contains(&a.cid),
                "acknowledged {} (seq {}) of {topic} is lost",
                a.cid,
                a.seq
            );
            ensure!(
                a.seq <= n,
                "acknowledged seq {} beyond the chain's {n}",
                a.seq
            );
            let e = api.event(&a.cid)?;
            ensure!(e["seq"].as_u64() == Some(a.seq), "{}: seq changed", a.cid);
        }
    }
    let (s, status) = api.get_json("/v1/status")?;
    ensure!(s == 200, "status {s}");
    ensure!(
        status["store"]["blocks"].as_u64() == Some(total),
        "store counts {} blocks but the chains hold {total}",
        status["store"]["blocks"]
    );
    Ok(())
}
