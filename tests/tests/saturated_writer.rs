//! A saturated store writer commits through the write-ahead log (`node/src/store/writer.rs`),
//! as it does at any load: with hundreds of publishes in flight on many topics, each batch is
//! one sequential fsync of the log, and a checkpoint (a durable redb commit that empties the
//! log) follows every time the log has grown to its limit. A `kill -9` after several of them
//! must lose no acknowledged event: the restarted node replays the log and holds every one, at
//! its place in a gap-free chain, and goes on after it without a conflict.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::future::join_all;
use serde_json::json;
use tidings_node::client::Client;
use tidings_tests::{NodeProcess, chain};

/// Topics the burst spreads over: each is a stream of its own, so the writer gets many
/// publishes at once, as a stock feed's many tickers give it.
const TOPICS: usize = 64;
/// Events sent (all in flight, in windows the stream takes); the kill comes well before the end.
const EVENTS: u64 = 60_000;
/// Checkpoints the writer must have made in the burst before the kill: the kill then cuts a
/// log that began at a checkpoint made under load (`tidings_store_checkpoints_total`).
const CHECKPOINTS: u64 = 5;

fn topic(k: u64) -> String {
    format!("/saturate/t{}", k % TOPICS as u64)
}

#[test]
fn kill_9_while_the_writer_is_saturated_loses_no_acknowledged_event() -> Result<()> {
    let _heavy = tidings_tests::one_heavy_test_at_a_time();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("n");
    let mut node = NodeProcess::start(&data, &[])?;
    let metrics = node.api();
    let api = node.api.clone();
    let rt = tokio::runtime::Runtime::new()?;
    let (tx, rx) = std::sync::mpsc::channel::<(String, u64, String)>();
    let sender = rt.spawn(async move {
        let stream = Client::new(&api, None).publish_stream().await?;
        let mut pending = Vec::new();
        for k in 0..EVENTS {
            let t = topic(k);
            let Ok(answer) = stream.send(&t, &json!({ "k": k }).to_string()).await else {
                break;
            };
            let tx = tx.clone();
            pending.push(async move {
                if let Ok(v) = answer.await
                    && let (Some(seq), Some(cid)) = (v["seq"].as_u64(), v["cid"].as_str())
                {
                    let _ = tx.send((t, seq, cid.to_string()));
                }
            });
            // Keep a few hundred in flight, not all 60,000: the node's queue stays what a
            // busy publisher gives it.
            if pending.len() >= 512 {
                join_all(pending.drain(..256)).await;
            }
        }
        join_all(pending).await;
        anyhow::Ok(())
    });

    // Wait until the writer has made several checkpoints in the burst, then let more be
    // acknowledged on the log.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked: Vec<(String, u64, String)> = Vec::new();
    let mut checkpointed_at = None;
    let mut checkpoints = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => acked.push(a),
            Err(_) => bail!("{} acknowledged, then none for 30 s", acked.len()),
        }
        if checkpointed_at.is_none() && acked.len().is_multiple_of(500) {
            checkpoints = metrics
                .metric("tidings_store_checkpoints_total")
                .unwrap_or(0);
            if checkpoints >= CHECKPOINTS {
                checkpointed_at = Some(acked.len());
            }
        }
        if let Some(at) = checkpointed_at
            && acked.len() >= at + 2_000
        {
            break;
        }
        ensure!(
            Instant::now() < deadline && acked.len() < EVENTS as usize - 1_000,
            "the writer made {checkpoints} checkpoints, not {CHECKPOINTS} ({} acknowledged in the burst); log:\n{}",
            acked.len(),
            node.log()
        );
    }
    node.kill();
    let _ = rt.block_on(sender);
    acked.extend(rx.try_iter());
    eprintln!(
        "{CHECKPOINTS} checkpoints after {} acknowledged; killed with {} acknowledged",
        checkpointed_at.unwrap_or(0),
        acked.len()
    );

    let node = NodeProcess::start(&data, &[])?;
    // The kill cut a writer that was on the log: the restart had records to replay (else this
    // test would show nothing about the log).
    ensure!(
        node.log().contains("replayed the write-ahead log"),
        "the restarted node replayed no write-ahead log; log:\n{}",
        node.log()
    );
    let api = node.api();
    let mut by_topic: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for (t, seq, cid) in acked {
        by_topic.entry(t).or_default().push((seq, cid));
    }
    for (t, events) in &by_topic {
        let c = chain(&api, t).with_context(|| t.clone())?;
        // chain() lists the newest first: seq s sits at index len - s.
        for (seq, cid) in events {
            let at = c.len().checked_sub(*seq as usize);
            ensure!(
                at.and_then(|i| c.get(i)) == Some(cid),
                "{t}: acknowledged seq {seq} ({cid}) is not at its place in the chain of {}",
                c.len()
            );
        }
        let (status, v) = api.publish(t, &json!({ "after": "restart" }))?;
        ensure!(status == 200, "{t}: publish after restart: {status} {v}");
        ensure!(
            v["seq"].as_u64() == Some(c.len() as u64 + 1),
            "{t}: resumed at {} after a chain of {}",
            v["seq"],
            c.len()
        );
    }
    Ok(())
}
